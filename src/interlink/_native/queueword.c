/* queueword.c - the native core of interlink.Queue (queueword.h,
 * docs/design/queue-core.md). */
#include "queueword.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "futex.h"
#include "proc.h"

#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release
#define SC memory_order_seq_cst

#define MAX_ARENA (UINT64_C(1) << 40)
#define J_COMMIT 1u

/* ======================================================================== */
/* small helpers                                                            */
/* ======================================================================== */

static inline unsigned sw_state(uint64_t sw) { return (unsigned)(sw >> IL_Q_STATE_SHIFT); }
static inline uint64_t sw_owner(uint64_t sw) { return sw & IL_Q_OWNER_MASK; }
static inline uint64_t sw_make(unsigned st, uint64_t owner)
{
    return ((uint64_t)st << IL_Q_STATE_SHIFT) | (owner & IL_Q_OWNER_MASK);
}

static inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

/* Extent of a payload of len bytes (len <= arena size, checked by callers). */
static inline uint64_t ext_of(uint64_t len)
{
    return len == 0 ? IL_Q_ALIGN : round_up(len, IL_Q_ALIGN);
}

static inline uint64_t ld64(_Atomic uint64_t *p) { return atomic_load_explicit(p, RLX); }
static inline uint32_t ld32(_Atomic uint32_t *p) { return atomic_load_explicit(p, RLX); }
static inline void st64(_Atomic uint64_t *p, uint64_t v) { atomic_store_explicit(p, v, RLX); }
static inline void st32(_Atomic uint32_t *p, uint32_t v) { atomic_store_explicit(p, v, RLX); }
static inline void bump(_Atomic uint64_t *p) { atomic_fetch_add_explicit(p, 1, RLX); }

/* An entry's extent is inside the arena. */
static inline int extent_ok(const il_qh *h, const il_q_entry *e)
{
    uint64_t off = e->off, len = e->len;
    if (len > h->arena_bytes || off > h->arena_bytes || off % IL_Q_ALIGN != 0)
        return 0;
    return ext_of(len) <= h->arena_bytes - off;
}

/* Wake-ups decided under the mutex, issued after it is released. */
typedef struct wakes {
    int get;  /* how many consumers to wake */
    int put;  /* how many producers to wake (INT_MAX: all) */
    int join; /* wake all joiners */
} wakes;

/* ======================================================================== */
/* geometry                                                                 */
/* ======================================================================== */

typedef struct geom {
    uint64_t entries_off, heap_off, free_off, arena_off, total;
} geom;

static int geometry(uint32_t n, uint64_t arena_bytes, geom *g)
{
    if (n == 0 || n > IL_Q_MAX_ENTRIES || arena_bytes == 0 || arena_bytes > MAX_ARENA)
        return IL_INVALID;
    g->entries_off = round_up(sizeof(il_q), 64);
    g->heap_off = g->entries_off + (uint64_t)n * sizeof(il_q_entry);
    g->free_off = g->heap_off + (uint64_t)n * sizeof(il_q_node);
    g->arena_off = round_up(g->free_off + (uint64_t)n * sizeof(uint32_t), IL_Q_ARENA_ALIGN);
    g->total = g->arena_off + round_up(arena_bytes, IL_Q_ALIGN);
    return IL_OK;
}

uint64_t il_q_size_for(uint32_t nentries, uint64_t arena_bytes)
{
    geom g;
    return geometry(nentries, arena_bytes, &g) == IL_OK ? g.total : 0;
}

static void fill_handle(il_qh *h, il_q *q, const geom *g)
{
    uint8_t *base = (uint8_t *)q;
    h->q = q;
    h->ent = (il_q_entry *)(base + g->entries_off);
    h->heap = (il_q_node *)(base + g->heap_off);
    h->stk = (uint32_t *)(base + g->free_off);
    h->arena = base + g->arena_off;
    h->n = q->nentries;
    h->maxsize = q->maxsize;
    h->flags = q->flags;
    h->unused = 0;
    h->arena_bytes = round_up(q->arena_bytes, IL_Q_ALIGN);
}

int il_q_init(il_qh *h, void *mem, uint64_t size, uint32_t nentries, uint64_t arena_bytes,
              uint32_t maxsize, uint32_t flags)
{
    geom g;
    if (mem == NULL || ((uintptr_t)mem % 64) != 0 || geometry(nentries, arena_bytes, &g) != IL_OK)
        return IL_INVALID;
    if (size < g.total || maxsize > nentries || (flags & ~IL_Q_DURABLE) != 0)
        return IL_INVALID;
    il_q *q = (il_q *)mem;
    memset(mem, 0, g.arena_off); /* control block, entries, heap, free stack */
    q->version = IL_Q_VERSION;
    q->flags = flags;
    q->nentries = nentries;
    q->maxsize = maxsize ? maxsize : nentries;
    q->arena_bytes = round_up(arena_bytes, IL_Q_ALIGN);
    q->total_size = g.total;
    q->entries_off = g.entries_off;
    q->heap_off = g.heap_off;
    q->free_off = g.free_off;
    q->arena_off = g.arena_off;
    fill_handle(h, q, &g);
    for (uint32_t k = 0; k < nentries; k++)
        h->stk[k] = nentries - 1 - k; /* entry 0 on top */
    st32(&q->free_len, nentries);
    st32(&q->cursor, IL_Q_NONE);
    st64(&q->next_seq, 1);
    atomic_store_explicit(&q->last_scan_ns, 0, RLX);
    atomic_thread_fence(REL);
    /* the magic last: an opener that sees it sees a formatted queue */
    atomic_store_explicit(&q->magic, IL_Q_MAGIC, REL);
    return IL_OK;
}

int il_q_attach(il_qh *h, void *mem, uint64_t size)
{
    if (mem == NULL || ((uintptr_t)mem % 64) != 0 || size < sizeof(il_q))
        return IL_CORRUPT;
    il_q *q = (il_q *)mem;
    uint32_t magic = atomic_load_explicit(&q->magic, ACQ);
    if (magic == 0)
        return IL_INFLIGHT;
    if (magic != IL_Q_MAGIC || q->version != IL_Q_VERSION)
        return IL_CORRUPT;
    geom g;
    if (geometry(q->nentries, q->arena_bytes, &g) != IL_OK)
        return IL_CORRUPT;
    if (q->arena_bytes % IL_Q_ALIGN != 0 || q->total_size != g.total || g.total > size ||
        q->entries_off != g.entries_off || q->heap_off != g.heap_off ||
        q->free_off != g.free_off || q->arena_off != g.arena_off || q->maxsize == 0 ||
        q->maxsize > q->nentries || (q->flags & ~IL_Q_DURABLE) != 0)
        return IL_CORRUPT;
    fill_handle(h, q, &g);
    return IL_OK;
}

void *il_q_payload(il_qh *h, const il_q_msg *m)
{
    if (m->len > h->arena_bytes || m->off > h->arena_bytes || m->off % IL_Q_ALIGN != 0 ||
        ext_of(m->len) > h->arena_bytes - m->off)
        return NULL;
    return h->arena + m->off;
}

/* ======================================================================== */
/* the mutex                                                                */
/* ======================================================================== */

/* The futex word is the half of the 64-bit lock word that holds the
 * CONTENDED bit (bit 63): any release changes it (to 0). */
static _Atomic uint32_t *lock_futex(il_q *q)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (_Atomic uint32_t *)((uint8_t *)&q->lock + 4);
#else
    return (_Atomic uint32_t *)(void *)&q->lock;
#endif
}

static int q_repair_locked(il_qh *h, uint64_t dead);

/* Take the mutex.  Barging: a releaser does not hand the lock to a sleeper,
 * whoever comes first takes it (no convoys when a woken waiter is not
 * scheduled).  Sleepers mark the word CONTENDED so that the releaser knows to
 * wake one; a woken waiter takes the lock with the mark kept (others may
 * still sleep), the classic three-state futex mutex with the owner's
 * identity instead of "1". */
static int qm_lock(il_qh *h, uint64_t ident, int64_t budget, uint64_t *dead)
{
    il_q *q = h->q;
    uint64_t cur = 0;
    if (atomic_compare_exchange_strong_explicit(&q->lock, &cur, ident, ACQ, RLX))
        return IL_OK;
    for (int i = 0; i < IL_Q_SPIN; i++) {
        il_cpu_relax();
        cur = atomic_load_explicit(&q->lock, RLX);
        if (cur == 0 &&
            atomic_compare_exchange_weak_explicit(&q->lock, &cur, ident, ACQ, RLX))
            return IL_OK;
    }
    if (budget == 0)
        return IL_BUSY;
    bump(&q->lock_contended);
    int64_t deadline = budget < 0 ? INT64_MAX : il_now_ns() + budget;
    const uint64_t mine = ident | IL_Q_LOCK_CONTENDED;
    for (;;) {
        cur = atomic_load_explicit(&q->lock, RLX);
        if (cur == 0) {
            if (atomic_compare_exchange_strong_explicit(&q->lock, &cur, mine, ACQ, RLX))
                return IL_OK;
            continue;
        }
        if (!(cur & IL_Q_LOCK_CONTENDED)) {
            if (!atomic_compare_exchange_strong_explicit(&q->lock, &cur,
                                                         cur | IL_Q_LOCK_CONTENDED, RLX, RLX))
                continue;
            cur |= IL_Q_LOCK_CONTENDED;
        }
        int64_t now = il_now_ns();
        if (now >= deadline)
            return IL_BUSY;
        int64_t slice = IL_Q_LOCK_SLICE_NS;
        if (deadline - now < slice)
            slice = deadline - now;
        uint32_t expect = (uint32_t)(cur >> 32); /* the half lock_futex names */
        int rc = il_futex_wait(lock_futex(q), expect, slice);
        if (rc == IL_EINTR)
            return IL_EINTR;
        if (rc == IL_TIMEOUT) {
            /* The holder kept the lock for a whole slice: is it alive? */
            uint64_t w = atomic_load_explicit(&q->lock, ACQ);
            uint64_t owner = w & IL_Q_OWNER_MASK;
            if (w != 0 && !il_ident_alive(owner) &&
                atomic_compare_exchange_strong_explicit(&q->lock, &w, mine, ACQ, RLX)) {
                *dead = owner;
                return IL_Q_OWNERDIED;
            }
        }
    }
}

int il_q_lock(il_qh *h, uint64_t ident, int64_t budget_ns)
{
    if (ident == 0 || (ident & ~IL_Q_OWNER_MASK) != 0)
        return IL_INVALID;
    uint64_t dead = 0;
    int rc = qm_lock(h, ident, budget_ns, &dead);
    if (rc != IL_Q_OWNERDIED)
        return rc;
    bump(&h->q->owner_died);
    if (q_repair_locked(h, dead) != IL_OK) {
        atomic_store_explicit(&h->q->broken, 1, RLX);
        il_q_unlock(h);
        return IL_CORRUPT;
    }
    return IL_Q_OWNERDIED;
}

void il_q_unlock(il_qh *h)
{
    il_q *q = h->q;
    uint64_t old = atomic_exchange_explicit(&q->lock, 0, SC);
    if (old & IL_Q_LOCK_CONTENDED) {
        il_futex_wake(lock_futex(q), 1);
        bump(&q->lock_wakes);
    }
}

/* Lock for an operation: IL_OK (held, queue usable) or an error status. */
static int q_enter(il_qh *h, uint64_t ident, int64_t lock_ns)
{
    int rc = il_q_lock(h, ident, lock_ns);
    if (rc == IL_Q_OWNERDIED)
        rc = IL_OK;
    if (rc != IL_OK)
        return rc;
    if (atomic_load_explicit(&h->q->broken, RLX)) {
        il_q_unlock(h);
        return IL_CORRUPT;
    }
    return IL_OK;
}

/* ======================================================================== */
/* waiting                                                                  */
/* ======================================================================== */

static int anyone_waits(il_q *q, int kind)
{
    il_q_waitq *wq = &q->wq[kind];
    return atomic_load_explicit(&wq->mask, SC) != 0 ||
           atomic_load_explicit(&wq->overflow, SC) != 0;
}

/* Wake n waiters of `kind` after a change made under the mutex (and
 * released).
 *
 * Single wakes (n == 1) go through the `pending` flag: the first sets it and
 * makes the syscall; later ones skip theirs while it stays set, i.e. until a
 * waiter re-arms (wait_rearm: a new snapshot, then the flag cleared, then an
 * attempt before it sleeps).  Without it a producer running ahead of a woken
 * consumer that has not been scheduled yet pays a futex_wake per message.
 * Why nothing is lost: a waker W that skips read 1 after its change; take P,
 * the last waker that set the flag before W read it; no re-arm falls between
 * P's set and W's read.  A waiter S that re-armed after W's read attempts
 * after W's change and sees it.  One that re-armed before P's set took its
 * snapshot before P's seq bump, so its sleep returns at once or is woken by
 * P; if P's futex_wake went to another waiter, that one re-arms after W's
 * read and attempts (or, leaving unsatisfied, passes the wake on).  A woken
 * waiter that dies before re-arming leaves the flag set: the others' sleeps
 * are bounded slices, and they clear it when theirs ends. */
static void wake_kind(il_q *q, int kind, int n)
{
    if (n <= 0 || !anyone_waits(q, kind))
        return;
    /* an awake consumer is polling: it will take the message, no syscall */
    if (atomic_load_explicit(&q->wq[kind].spin_mask, SC) != 0)
        return;
    il_q_waitq *wq = &q->wq[kind];
    if (n == 1 && (atomic_load_explicit(&wq->pending, SC) != 0 ||
                   atomic_exchange_explicit(&wq->pending, 1, SC) != 0))
        return; /* a wake is on its way to a waiter that has not re-armed yet */
    atomic_fetch_add_explicit(&wq->seq, 1, SC);
    il_futex_wake(&wq->seq, n);
    bump(&q->wakes);
}

/* Called after the mutex is released (the unlock is the seq_cst store that
 * pairs with a waiter's seq_cst registration, see il_q_wait_begin). */
static void do_wakes(il_qh *h, const wakes *wk)
{
    if (wk->get)
        wake_kind(h->q, IL_Q_WAIT_GET, wk->get);
    if (wk->put)
        wake_kind(h->q, IL_Q_WAIT_PUT, wk->put);
    if (wk->join)
        wake_kind(h->q, IL_Q_WAIT_JOIN, INT_MAX);
}

/* End an operation: a CORRUPT status found under the mutex marks the queue
 * broken (every later operation fails fast until il_q_repair succeeds). */
static int leave(il_qh *h, int rc, const wakes *wk)
{
    wakes w = *wk;
    if (rc == IL_CORRUPT)
        atomic_store_explicit(&h->q->broken, 1, RLX);
    /* Producers waiting for a maxsize slot or an entry can each use any one
     * that frees: wake as many as freed.  One waiting for arena space may
     * need more than what freed, so then wake them all. */
    if (w.put > 0 && ld32(&h->q->arena_starved)) {
        st32(&h->q->arena_starved, 0);
        w.put = INT_MAX;
    }
    il_q_unlock(h);
    do_wakes(h, &w);
    return rc;
}

/* Take a new futex snapshot, then clear the wake-pending flag (in that
 * order: see wake_kind); the caller attempts again before it sleeps. */
static void wait_rearm(il_q_waiter *w)
{
    il_q_waitq *wq = &w->h->q->wq[w->kind];
    w->snap = atomic_load_explicit(&wq->seq, SC);
    if (atomic_load_explicit(&wq->pending, SC) != 0)
        atomic_store_explicit(&wq->pending, 0, SC);
}

void il_q_wait_begin(il_q_waiter *w, il_qh *h, uint64_t ident, int kind)
{
    il_q *q = h->q;
    w->h = h;
    w->ident = ident;
    w->kind = kind;
    w->slot = -1;
    uint64_t word = sw_make((unsigned)kind, ident);
    uint32_t start = (uint32_t)getpid() % IL_Q_WAITSLOTS;
    for (uint32_t k = 0; k < IL_Q_WAITSLOTS; k++) {
        uint32_t i = (start + k) % IL_Q_WAITSLOTS;
        uint64_t z = 0;
        if (atomic_load_explicit(&q->waitslot[i], RLX) == 0 &&
            atomic_compare_exchange_strong_explicit(&q->waitslot[i], &z, word, SC, RLX)) {
            w->slot = (int32_t)i;
            atomic_fetch_or_explicit(&q->wq[kind].mask, UINT64_C(1) << i, SC);
            break;
        }
    }
    if (w->slot < 0)
        atomic_fetch_add_explicit(&q->wq[kind].overflow, 1, SC);
    /* Dekker with the wakers: registration (seq_cst RMW) before reading seq
     * and before the attempt; a waker changes the state, releases the mutex
     * (seq_cst) and then reads the mask (seq_cst).  Either the waker sees us
     * registered, or our attempt sees its change. */
    wait_rearm(w);
}

int il_q_wait_sleep(il_q_waiter *w, int64_t slice_ns)
{
    il_q *q = w->h->q;
    int rc = il_futex_wait(&q->wq[w->kind].seq, w->snap, slice_ns);
    wait_rearm(w);
    return rc;
}

void il_q_wait_spinning(il_q_waiter *w, int on)
{
    il_q *q = w->h->q;
    if (w->slot >= 0) {
        uint64_t bit = UINT64_C(1) << (uint32_t)w->slot;
        if (on)
            atomic_fetch_or_explicit(&q->wq[w->kind].spin_mask, bit, SC);
        else
            atomic_fetch_and_explicit(&q->wq[w->kind].spin_mask, ~bit, SC);
    }
    /* Dekker with wake_kind: a producer that saw us spinning skipped its
     * wake, but then its commit precedes our next attempt. */
    wait_rearm(w);
}

void il_q_wait_end(il_q_waiter *w, int satisfied)
{
    il_q *q = w->h->q;
    if (w->slot >= 0) {
        uint32_t i = (uint32_t)w->slot;
        atomic_fetch_and_explicit(&q->wq[w->kind].spin_mask, ~(UINT64_C(1) << i), SC);
        atomic_fetch_and_explicit(&q->wq[w->kind].mask, ~(UINT64_C(1) << i), SC);
        atomic_store_explicit(&q->waitslot[i], 0, SC);
        w->slot = -1;
    } else {
        atomic_fetch_sub_explicit(&q->wq[w->kind].overflow, 1, SC);
    }
    /* We may have been woken for something we did not take (timeout,
     * signal): a wake pending for us must not suppress the next one, and a
     * consumer passes the wake on. */
    if (!satisfied) {
        wait_rearm(w);
        if (w->kind == IL_Q_WAIT_GET && ld32(&q->n_ready) > 0)
            wake_kind(q, IL_Q_WAIT_GET, 1);
    }
}

/* ======================================================================== */
/* derived data: the heap                                                   */
/* ======================================================================== */

static inline int node_before(const il_q_node *a, const il_q_node *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->seq < b->seq);
}

static void sift_down(il_q_node *hp, uint32_t len, uint32_t i)
{
    il_q_node x = hp[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= len)
            break;
        if (c + 1 < len && node_before(&hp[c + 1], &hp[c]))
            c++;
        if (!node_before(&hp[c], &x))
            break;
        hp[i] = hp[c];
        i = c;
    }
    hp[i] = x;
}

/* Put x at the root of a heap of len nodes whose root was removed (pop):
 * move the hole down to a leaf along the better children (one comparison
 * per level), then sift x up from there.  x is the former last node, which
 * in FIFO use is the newest and belongs near the bottom: about half the
 * comparisons of a plain sift-down. */
static void heap_fill_root(il_q_node *hp, uint32_t len, il_q_node x)
{
    uint32_t i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= len)
            break;
        if (c + 1 < len && node_before(&hp[c + 1], &hp[c]))
            c++;
        hp[i] = hp[c];
        i = c;
    }
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!node_before(&x, &hp[p]))
            break;
        hp[i] = hp[p];
        i = p;
    }
    hp[i] = x;
}

static int heap_push(il_qh *h, uint32_t e)
{
    il_q *q = h->q;
    uint32_t len = ld32(&q->heap_len);
    if (len >= h->n)
        return IL_CORRUPT;
    il_q_node x = {h->ent[e].prio, e, h->ent[e].seq};
    il_q_node *hp = h->heap;
    uint32_t i = len;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!node_before(&x, &hp[p]))
            break;
        hp[i] = hp[p];
        i = p;
    }
    hp[i] = x;
    st32(&q->heap_len, len + 1);
    return IL_OK;
}

/* Pop the best READY entry: IL_OK and *e, IL_EMPTY, IL_CORRUPT. */
static int heap_pop(il_qh *h, uint32_t *e)
{
    il_q *q = h->q;
    uint32_t len = ld32(&q->heap_len);
    if (len == 0)
        return IL_EMPTY;
    if (len > h->n)
        return IL_CORRUPT;
    il_q_node top = h->heap[0];
    if (top.entry >= h->n)
        return IL_CORRUPT;
    il_q_entry *en = &h->ent[top.entry];
    if (sw_state(atomic_load_explicit(&en->sw, RLX)) != IL_Q_READY || en->seq != top.seq ||
        en->prio != top.prio)
        return IL_CORRUPT;
    len--;
    if (len > 0)
        heap_fill_root(h->heap, len, h->heap[len]);
    st32(&q->heap_len, len);
    *e = top.entry;
    return IL_OK;
}

/* ======================================================================== */
/* derived data: the arena (next fit over an address-ordered ring)          */
/* ======================================================================== */

/* Find room for `size` bytes and link entry e into the ring there.  The ring
 * holds every live extent in address order; the gaps between neighbours are
 * the free space.  Start at the cursor (the last allocation) and walk at most
 * once around: in FIFO use the gap after the newest extent is the one that
 * the oldest frees, so the walk ends at its first step (a ring buffer); a
 * record that stays (a low priority, an unacked message) is stepped over
 * instead of blocking the arena.  IL_OK and *off, IL_FULL, IL_CORRUPT. */
static int arena_alloc(il_qh *h, uint32_t e, uint64_t size, uint64_t *off)
{
    il_q *q = h->q;
    il_q_entry *E = h->ent;
    const uint64_t A = h->arena_bytes;
    uint32_t live = ld32(&q->n_live);
    if (live == 0) {
        *off = 0;
        E[e].prev = E[e].next = e;
        st32(&q->cursor, e);
        st32(&q->n_live, 1);
        return IL_OK;
    }
    if (live > h->n)
        return IL_CORRUPT;
    uint32_t c = ld32(&q->cursor);
    for (uint32_t step = 0; step < live; step++) {
        if (c >= h->n || !extent_ok(h, &E[c]))
            return IL_CORRUPT;
        uint32_t nx = E[c].next;
        if (nx >= h->n || !extent_ok(h, &E[nx]))
            return IL_CORRUPT;
        uint64_t cend = E[c].off + ext_of(E[c].len);
        int found = 0;
        if (E[nx].off <= E[c].off) {
            /* c is the last extent by address: room at the end, then at 0 */
            if (A - cend >= size) {
                *off = cend;
                found = 1;
            } else if (E[nx].off >= size) {
                *off = 0;
                found = 1;
            }
        } else {
            if (E[nx].off < cend)
                return IL_CORRUPT; /* overlapping extents */
            if (E[nx].off - cend >= size) {
                *off = cend;
                found = 1;
            }
        }
        if (found) {
            E[e].prev = c;
            E[e].next = nx;
            E[c].next = e;
            E[nx].prev = e;
            st32(&q->cursor, e);
            st32(&q->n_live, live + 1);
            return IL_OK;
        }
        c = nx;
    }
    return IL_FULL;
}

static int arena_unlink(il_qh *h, uint32_t e)
{
    il_q *q = h->q;
    il_q_entry *E = h->ent;
    uint32_t live = ld32(&q->n_live);
    if (live == 0 || live > h->n)
        return IL_CORRUPT;
    if (live == 1) {
        st32(&q->n_live, 0);
        st32(&q->cursor, IL_Q_NONE);
        return IL_OK;
    }
    uint32_t p = E[e].prev, nx = E[e].next;
    if (p >= h->n || nx >= h->n || E[p].next != e || E[nx].prev != e)
        return IL_CORRUPT;
    E[p].next = nx;
    E[nx].prev = p;
    if (ld32(&q->cursor) == e)
        st32(&q->cursor, p);
    st32(&q->n_live, live - 1);
    return IL_OK;
}

/* ======================================================================== */
/* transitions (all under the mutex; the sw store is the commit point)       */
/* ======================================================================== */

/* Any live state -> FREE: the entry and its extent go back. */
static int free_entry(il_qh *h, uint32_t e, unsigned from)
{
    il_q *q = h->q;
    il_q_entry *en = &h->ent[e];
    atomic_store_explicit(&en->sw, 0, REL);
    int rc = arena_unlink(h, e);
    if (rc != IL_OK)
        return rc;
    uint32_t fl = ld32(&q->free_len);
    if (fl >= h->n)
        return IL_CORRUPT;
    h->stk[fl] = e;
    st32(&q->free_len, fl + 1);
    st64(&q->arena_used, ld64(&q->arena_used) - ext_of(en->len));
    if (from == IL_Q_WRITING)
        st32(&q->n_writing, ld32(&q->n_writing) - 1);
    else if (from == IL_Q_TAKEN)
        st32(&q->n_taken, ld32(&q->n_taken) - 1);
    return IL_OK;
}

static int reserve_locked(il_qh *h, uint64_t ident, uint64_t len, int32_t prio, uint32_t tag,
                          il_q_msg *m)
{
    il_q *q = h->q;
    if (ld32(&q->n_ready) + ld32(&q->n_writing) >= h->maxsize)
        return IL_FULL;
    uint32_t fl = ld32(&q->free_len);
    if (fl == 0)
        return IL_FULL;
    if (fl > h->n)
        return IL_CORRUPT;
    uint32_t e = h->stk[fl - 1];
    if (e >= h->n || atomic_load_explicit(&h->ent[e].sw, RLX) != 0)
        return IL_CORRUPT;
    uint64_t size = ext_of(len), off = 0;
    int rc = arena_alloc(h, e, size, &off);
    if (rc == IL_FULL)
        st32(&q->arena_starved, 1);
    if (rc != IL_OK)
        return rc;
    il_q_entry *en = &h->ent[e];
    en->off = off;
    en->len = len;
    en->prio = prio;
    en->tag = tag;
    en->deliveries = 0;
    en->seq = 0;
    atomic_store_explicit(&en->sw, sw_make(IL_Q_WRITING, ident), REL);
    st32(&q->free_len, fl - 1);
    st32(&q->n_writing, ld32(&q->n_writing) + 1);
    st64(&q->arena_used, ld64(&q->arena_used) + size);
    m->entry = e;
    m->deliveries = 0;
    m->prio = prio;
    m->tag = tag;
    m->seq = 0;
    m->off = off;
    m->len = len;
    m->copied = 0;
    return IL_OK;
}

static int commit_locked(il_qh *h, uint64_t ident, uint32_t e)
{
    il_q *q = h->q;
    if (e >= h->n)
        return IL_INVALID;
    il_q_entry *en = &h->ent[e];
    if (atomic_load_explicit(&en->sw, RLX) != sw_make(IL_Q_WRITING, ident))
        return IL_INVALID;
    uint64_t seq = ld64(&q->next_seq);
    uint64_t unf = ld64(&q->unfinished);
    /* journal: unfinished must move with the entry's state (not derivable) */
    st32(&q->j_entry, e);
    st64(&q->j_seq, seq);
    st64(&q->j_unfinished, unf);
    atomic_store_explicit(&q->j_op, J_COMMIT, REL);
    en->seq = seq;
    atomic_store_explicit(&en->sw, sw_make(IL_Q_READY, 0), REL); /* commit point */
    st64(&q->next_seq, seq + 1);
    st32(&q->n_writing, ld32(&q->n_writing) - 1);
    st32(&q->n_ready, ld32(&q->n_ready) + 1);
    int rc = heap_push(h, e);
    atomic_store_explicit(&q->unfinished, unf + 1, REL);
    atomic_store_explicit(&q->j_op, 0, REL);
    bump(&q->puts);
    return rc;
}

static int take_locked(il_qh *h, uint64_t ident, il_q_msg *m)
{
    il_q *q = h->q;
    uint32_t e;
    int rc = heap_pop(h, &e);
    if (rc != IL_OK)
        return rc;
    il_q_entry *en = &h->ent[e];
    if (!extent_ok(h, en))
        return IL_CORRUPT;
    uint32_t d = en->deliveries + 1;
    en->deliveries = d;
    atomic_store_explicit(&en->sw, sw_make(IL_Q_TAKEN, ident), REL);
    st32(&q->n_ready, ld32(&q->n_ready) - 1);
    st32(&q->n_taken, ld32(&q->n_taken) + 1);
    m->entry = e;
    m->deliveries = d;
    m->prio = en->prio;
    m->tag = en->tag;
    m->seq = en->seq;
    m->off = en->off;
    m->len = en->len;
    m->copied = 0;
    bump(&q->gets);
    return IL_OK;
}

/* The entry m names is TAKEN by ident with m's seq. */
static int held_by(il_qh *h, uint64_t ident, const il_q_msg *m)
{
    if (m->entry >= h->n)
        return 0;
    il_q_entry *en = &h->ent[m->entry];
    return atomic_load_explicit(&en->sw, RLX) == sw_make(IL_Q_TAKEN, ident) &&
           en->seq == m->seq;
}

static int nack_locked(il_qh *h, uint32_t e)
{
    il_q *q = h->q;
    atomic_store_explicit(&h->ent[e].sw, sw_make(IL_Q_READY, 0), REL);
    st32(&q->n_taken, ld32(&q->n_taken) - 1);
    st32(&q->n_ready, ld32(&q->n_ready) + 1);
    return heap_push(h, e);
}

/* An entry whose owner is dead (sw as observed): fix it per state. */
static int recover_entry(il_qh *h, uint32_t e, uint64_t sw, il_q_recovered *r, wakes *wk)
{
    il_q *q = h->q;
    if (sw_state(sw) == IL_Q_WRITING) {
        r->abandoned++;
        bump(&q->abandoned);
        wk->put++;
        return free_entry(h, e, IL_Q_WRITING);
    }
    if (sw_state(sw) == IL_Q_TAKEN) {
        if (h->flags & IL_Q_DURABLE) {
            r->redelivered++;
            bump(&q->redelivered);
            wk->get++;
            return nack_locked(h, e);
        }
        r->dropped++;
        bump(&q->dropped);
        wk->put++;
        return free_entry(h, e, IL_Q_TAKEN);
    }
    return IL_OK;
}

/* ======================================================================== */
/* repair                                                                   */
/* ======================================================================== */

static int node_cmp_seq(const void *a, const void *b)
{
    uint64_t x = ((const il_q_node *)a)->seq, y = ((const il_q_node *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Rebuild every piece of derived data from the entry table. */
static int q_rebuild(il_qh *h)
{
    il_q *q = h->q;
    il_q_entry *E = h->ent;
    const uint32_t n = h->n;
    uint32_t nr = 0, nw = 0, nt = 0, nl = 0, nf = 0;
    uint64_t maxseq = 0, used = 0;
    il_q_node *scratch = h->heap; /* the heap is rebuilt last */
    for (uint32_t i = 0; i < n; i++) {
        uint64_t sw = atomic_load_explicit(&E[i].sw, ACQ);
        unsigned st = sw_state(sw);
        if (st > IL_Q_TAKEN)
            return IL_CORRUPT;
        if (st == IL_Q_FREE) {
            if (sw != 0)
                return IL_CORRUPT;
            continue;
        }
        if (!extent_ok(h, &E[i]) || (st == IL_Q_READY) != (sw_owner(sw) == 0))
            return IL_CORRUPT;
        if (st == IL_Q_WRITING)
            nw++;
        else {
            if (st == IL_Q_READY)
                nr++;
            else
                nt++;
            if (E[i].seq > maxseq)
                maxseq = E[i].seq;
        }
        used += ext_of(E[i].len);
        scratch[nl].entry = i;
        scratch[nl].seq = E[i].off;
        scratch[nl].prio = 0;
        nl++;
    }
    qsort(scratch, nl, sizeof *scratch, node_cmp_seq);
    for (uint32_t k = 0; k < nl; k++) {
        uint32_t e = scratch[k].entry, nx = scratch[(k + 1) % nl].entry;
        if (k + 1 < nl && E[e].off + ext_of(E[e].len) > E[nx].off)
            return IL_CORRUPT; /* overlapping extents */
        E[e].next = nx;
        E[nx].prev = e;
    }
    st32(&q->n_live, nl);
    st32(&q->cursor, nl ? scratch[nl - 1].entry : IL_Q_NONE);
    for (uint32_t i = n; i-- > 0;)
        if (atomic_load_explicit(&E[i].sw, RLX) == 0)
            h->stk[nf++] = i;
    st32(&q->free_len, nf);
    uint32_t hl = 0;
    for (uint32_t i = 0; i < n; i++)
        if (sw_state(atomic_load_explicit(&E[i].sw, RLX)) == IL_Q_READY) {
            h->heap[hl].prio = E[i].prio;
            h->heap[hl].entry = i;
            h->heap[hl].seq = E[i].seq;
            hl++;
        }
    for (uint32_t i = hl / 2; i-- > 0;)
        sift_down(h->heap, hl, i);
    st32(&q->heap_len, hl);
    st32(&q->n_ready, nr);
    st32(&q->n_writing, nw);
    st32(&q->n_taken, nt);
    st64(&q->arena_used, used);
    if (ld64(&q->next_seq) <= maxseq)
        st64(&q->next_seq, maxseq + 1);
    return IL_OK;
}

/* Settle the journal of a commit the dead holder was making. */
static void journal_roll(il_qh *h)
{
    il_q *q = h->q;
    if (atomic_load_explicit(&q->j_op, ACQ) != J_COMMIT)
        return;
    uint32_t e = ld32(&q->j_entry);
    uint64_t unf = ld64(&q->j_unfinished);
    int done = 0;
    if (e < h->n) {
        uint64_t sw = atomic_load_explicit(&h->ent[e].sw, ACQ);
        done = sw_state(sw) == IL_Q_READY && h->ent[e].seq == ld64(&q->j_seq);
    }
    st64(&q->unfinished, done ? unf + 1 : unf);
    atomic_store_explicit(&q->j_op, 0, REL);
}

/* The previous holder (identity `dead`) died inside a critical section. */
static int q_repair_locked(il_qh *h, uint64_t dead)
{
    journal_roll(h);
    int rc = q_rebuild(h);
    if (rc != IL_OK)
        return rc;
    il_q_recovered r = {0, 0, 0, 0};
    wakes wk = {0, 0, 0};
    for (uint32_t i = 0; i < h->n && rc == IL_OK; i++) {
        uint64_t sw = atomic_load_explicit(&h->ent[i].sw, RLX);
        unsigned st = sw_state(sw);
        if ((st == IL_Q_WRITING || st == IL_Q_TAKEN) && sw_owner(sw) == dead)
            rc = recover_entry(h, i, sw, &r, &wk);
    }
    /* wakes: the waiters' slices cover them (we hold the mutex here) */
    return rc;
}

int il_q_repair(il_qh *h, uint64_t ident, int64_t lock_ns)
{
    int rc = il_q_lock(h, ident, lock_ns);
    if (rc == IL_Q_OWNERDIED)
        rc = IL_OK;
    if (rc != IL_OK)
        return rc;
    journal_roll(h);
    rc = q_rebuild(h);
    atomic_store_explicit(&h->q->broken, rc == IL_OK ? 0u : 1u, RLX);
    wakes wk = {INT_MAX, INT_MAX, 0};
    il_q_unlock(h);
    do_wakes(h, &wk);
    return rc;
}

/* ======================================================================== */
/* producer                                                                 */
/* ======================================================================== */

int il_q_reserve(il_qh *h, uint64_t ident, uint64_t len, int32_t prio, uint32_t tag,
                 int64_t lock_ns, il_q_msg *m)
{
    if (len > h->arena_bytes)
        return IL_TOOBIG;
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    rc = reserve_locked(h, ident, len, prio, tag, m);
    wakes wk = {0, 0, 0};
    return leave(h, rc, &wk);
}

int il_q_commit(il_qh *h, uint64_t ident, const il_q_msg *m, int64_t lock_ns)
{
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    rc = commit_locked(h, ident, m->entry);
    wakes wk = {rc == IL_OK, 0, 0};
    return leave(h, rc, &wk);
}

int il_q_abort(il_qh *h, uint64_t ident, const il_q_msg *m, int64_t lock_ns)
{
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    if (m->entry >= h->n ||
        atomic_load_explicit(&h->ent[m->entry].sw, RLX) != sw_make(IL_Q_WRITING, ident))
        rc = IL_INVALID;
    else
        rc = free_entry(h, m->entry, IL_Q_WRITING);
    wakes wk = {0, rc == IL_OK, 0};
    return leave(h, rc, &wk);
}

int il_q_put(il_qh *h, uint64_t ident, const void *data, uint64_t len, int32_t prio,
             uint32_t tag, int64_t lock_ns)
{
    il_q_item it = {data, len, prio, tag};
    uint32_t done = 0;
    return il_q_put_many(h, ident, &it, 1, lock_ns, &done);
}

int il_q_put_many(il_qh *h, uint64_t ident, const il_q_item *items, uint32_t n,
                  int64_t lock_ns, uint32_t *done)
{
    *done = 0;
    uint32_t i = 0;
    int rc = IL_OK;
    while (i < n && rc == IL_OK) {
        if (items[i].len > h->arena_bytes)
            return IL_TOOBIG;
        if (items[i].len > IL_Q_INLINE_COPY) {
            /* large: reserve, copy outside the mutex, commit */
            il_q_msg m;
            rc = il_q_reserve(h, ident, items[i].len, items[i].prio, items[i].tag, lock_ns, &m);
            if (rc != IL_OK)
                break;
            if (items[i].len)
                memcpy(h->arena + m.off, items[i].data, items[i].len);
            /* The reservation must not be left behind by a busy mutex: wait
             * for it (held for microseconds by live holders; a dead one is
             * taken over).  Callers that must stay interruptible use
             * reserve/commit themselves. */
            do
                rc = il_q_commit(h, ident, &m, -1);
            while (rc == IL_EINTR);
            if (rc != IL_OK)
                break;
            *done = ++i;
            continue;
        }
        /* a run of small ones, copied under the mutex (bounded bytes per hold) */
        rc = q_enter(h, ident, lock_ns);
        if (rc != IL_OK)
            break;
        uint64_t bytes = 0;
        wakes wk = {0, 0, 0};
        while (i < n && items[i].len <= IL_Q_INLINE_COPY && bytes < 16 * IL_Q_INLINE_COPY) {
            il_q_msg m;
            rc = reserve_locked(h, ident, items[i].len, items[i].prio, items[i].tag, &m);
            if (rc != IL_OK)
                break;
            if (items[i].len)
                memcpy(h->arena + m.off, items[i].data, items[i].len);
            rc = commit_locked(h, ident, m.entry);
            if (rc != IL_OK)
                break;
            bytes += items[i].len + 64;
            wk.get++;
            *done = ++i;
        }
        leave(h, rc, &wk);
    }
    return rc;
}

/* ======================================================================== */
/* consumer                                                                 */
/* ======================================================================== */

int il_q_take(il_qh *h, uint64_t ident, void *buf, uint64_t buflen, int64_t lock_ns,
              il_q_msg *m)
{
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    rc = take_locked(h, ident, m);
    wakes wk = {0, 0, 0};
    if (rc == IL_OK && buf != NULL && m->len <= buflen && m->len <= IL_Q_INLINE_COPY) {
        if (m->len)
            memcpy(buf, h->arena + m->off, m->len);
        rc = free_entry(h, m->entry, IL_Q_TAKEN);
        m->copied = 1;
        bump(&h->q->acks);
    }
    if (rc == IL_OK) {
        wk.put = 1; /* a maxsize slot (and arena room when copied) */
        /* wakes skipped while a spinner was about: more READY and a sleeper
         * -> wake one (wake_kind checks both), so work spreads out */
        if (ld32(&h->q->n_ready) > 0)
            wk.get = 1;
    }
    return leave(h, rc, &wk);
}

int il_q_take_many(il_qh *h, uint64_t ident, il_q_msg *ms, uint32_t n, int64_t lock_ns,
                   uint32_t *got)
{
    *got = 0;
    if (n == 0)
        return IL_INVALID;
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    uint32_t k = 0;
    while (k < n) {
        rc = take_locked(h, ident, &ms[k]);
        if (rc != IL_OK)
            break;
        k++;
    }
    if (k > 0 && rc == IL_EMPTY)
        rc = IL_OK;
    *got = k;
    wakes wk = {k > 0 && ld32(&h->q->n_ready) > 0, (int)k, 0};
    return leave(h, rc, &wk);
}

int il_q_release_many(il_qh *h, uint64_t ident, const il_q_msg *ms, uint32_t n,
                      int64_t lock_ns)
{
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    int bad = 0;
    uint32_t freed = 0;
    for (uint32_t k = 0; k < n && rc == IL_OK; k++) {
        if (ms[k].copied)
            continue;
        if (!held_by(h, ident, &ms[k])) {
            bad = 1;
            continue;
        }
        rc = free_entry(h, ms[k].entry, IL_Q_TAKEN);
        freed++;
        bump(&h->q->acks);
    }
    wakes wk = {0, (int)freed, 0};
    leave(h, rc, &wk);
    return rc != IL_OK ? rc : bad ? IL_INVALID : IL_OK;
}

int il_q_release(il_qh *h, uint64_t ident, const il_q_msg *m, int64_t lock_ns)
{
    return il_q_release_many(h, ident, m, 1, lock_ns);
}

int il_q_nack(il_qh *h, uint64_t ident, const il_q_msg *m, int64_t lock_ns)
{
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    if (m->copied || !held_by(h, ident, m))
        rc = IL_INVALID;
    else {
        rc = nack_locked(h, m->entry);
        bump(&h->q->nacks);
    }
    wakes wk = {rc == IL_OK, 0, 0};
    return leave(h, rc, &wk);
}

int il_q_task_done(il_qh *h, uint64_t ident, uint64_t n, int64_t lock_ns)
{
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    wakes wk = {0, 0, 0};
    uint64_t unf = ld64(&h->q->unfinished);
    if (n > unf)
        rc = IL_INVALID;
    else {
        atomic_store_explicit(&h->q->unfinished, unf - n, REL); /* one store */
        wk.join = unf - n == 0;
    }
    return leave(h, rc, &wk);
}

/* ======================================================================== */
/* recovery                                                                 */
/* ======================================================================== */

int il_q_recover_due(il_qh *h, int64_t interval_ns)
{
    int64_t now = il_now_ns();
    int64_t last = atomic_load_explicit(&h->q->last_scan_ns, RLX);
    if (now - last < interval_ns)
        return 0;
    return atomic_compare_exchange_strong_explicit(&h->q->last_scan_ns, &last, now, RLX, RLX);
}

#define LIVE_CACHE 32

typedef struct live_cache {
    uint64_t id[LIVE_CACHE];
    int alive[LIVE_CACHE];
    int n;
    uint64_t me;
} live_cache;

/* 1 alive, 0 dead; -1 when the cache is full (treat as alive for now). */
static int cached_alive(live_cache *c, uint64_t ident)
{
    if (ident == c->me)
        return 1;
    for (int i = 0; i < c->n; i++)
        if (c->id[i] == ident)
            return c->alive[i];
    if (c->n == LIVE_CACHE)
        return -1;
    int a = il_ident_alive(ident);
    c->id[c->n] = ident;
    c->alive[c->n] = a;
    c->n++;
    return a;
}

static int is_cached_dead(const live_cache *c, uint64_t ident)
{
    for (int i = 0; i < c->n; i++)
        if (c->id[i] == ident)
            return !c->alive[i];
    return 0;
}

/* Remove the registration in waitslot i if its process is dead. */
static int clear_dead_waitslot(il_q *q, uint32_t i, live_cache *c, uint64_t me)
{
    uint64_t v = atomic_load_explicit(&q->waitslot[i], ACQ);
    if (v == 0 || cached_alive(c, sw_owner(v)) != 0)
        return 0;
    /* Take the slot over (so that no new waiter can claim it and get its bit
     * cleared by us), clear the bit in every mask, then free it.  A recoverer
     * dying here leaves a tombstone with its own identity: the next one
     * finishes the job. */
    uint64_t tomb = sw_make(IL_Q_WAITSLOT_TOMB, me);
    if (!atomic_compare_exchange_strong_explicit(&q->waitslot[i], &v, tomb, SC, RLX))
        return 0;
    for (int k = 0; k < 3; k++) {
        atomic_fetch_and_explicit(&q->wq[k].spin_mask, ~(UINT64_C(1) << i), SC);
        atomic_fetch_and_explicit(&q->wq[k].mask, ~(UINT64_C(1) << i), SC);
        /* it may have died woken and not re-armed: let the next wake through */
        atomic_store_explicit(&q->wq[k].pending, 0, SC);
    }
    atomic_store_explicit(&q->waitslot[i], 0, SC);
    return 1;
}

int il_q_recover_dead(il_qh *h, uint64_t ident, int64_t lock_ns, il_q_recovered *out)
{
    il_q_recovered r = {0, 0, 0, 0};
    if (out)
        *out = r;
    if (ident == 0)
        return IL_INVALID;
    il_q *q = h->q;
    live_cache c;
    c.n = 0;
    c.me = ident;
    for (uint32_t i = 0; i < IL_Q_WAITSLOTS; i++)
        r.waiters += (uint32_t)clear_dead_waitslot(q, i, &c, ident);
    /* phase 1: liveness checks without the mutex.  Nothing WRITING or
     * TAKEN (the common idle case): nothing can be owned by the dead, skip
     * the scan of the table (the counters are read racily; a holder that
     * dies keeps its entry counted, so it is never skipped for long). */
    int any = 0;
    if (ld32(&q->n_writing) == 0 && ld32(&q->n_taken) == 0) {
        if (out)
            *out = r;
        return IL_OK;
    }
    for (uint32_t i = 0; i < h->n; i++) {
        uint64_t sw = atomic_load_explicit(&h->ent[i].sw, ACQ);
        unsigned st = sw_state(sw);
        if (st != IL_Q_WRITING && st != IL_Q_TAKEN)
            continue;
        if (cached_alive(&c, sw_owner(sw)) == 0)
            any = 1;
    }
    if (!any) {
        if (out)
            *out = r;
        return IL_OK;
    }
    /* phase 2: fix entries still owned by a process found dead (death is
     * permanent, so the sw word observed now still means "dead owner") */
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    wakes wk = {0, 0, 0};
    for (uint32_t i = 0; i < h->n && rc == IL_OK; i++) {
        uint64_t sw = atomic_load_explicit(&h->ent[i].sw, RLX);
        unsigned st = sw_state(sw);
        if ((st == IL_Q_WRITING || st == IL_Q_TAKEN) && is_cached_dead(&c, sw_owner(sw)))
            rc = recover_entry(h, i, sw, &r, &wk);
    }
    leave(h, rc, &wk);
    if (out)
        *out = r;
    return rc;
}

/* ======================================================================== */
/* consistency check                                                        */
/* ======================================================================== */

static int check_locked(il_qh *h)
{
    il_q *q = h->q;
    il_q_entry *E = h->ent;
    const uint32_t n = h->n;
    uint8_t *seen = calloc(n, 1);
    if (seen == NULL)
        return IL_INVALID;
    int rc = IL_CORRUPT;
    uint32_t cnt[4] = {0, 0, 0, 0};
    uint64_t used = 0, maxseq = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t sw = atomic_load_explicit(&E[i].sw, RLX);
        unsigned st = sw_state(sw);
        if (st > IL_Q_TAKEN || (st == IL_Q_FREE && sw != 0) ||
            (st == IL_Q_READY && sw_owner(sw) != 0) ||
            ((st == IL_Q_WRITING || st == IL_Q_TAKEN) && sw_owner(sw) == 0))
            goto out;
        cnt[st]++;
        if (st != IL_Q_FREE) {
            if (!extent_ok(h, &E[i]))
                goto out;
            used += ext_of(E[i].len);
            if (st != IL_Q_WRITING && E[i].seq > maxseq)
                maxseq = E[i].seq;
        }
    }
    if (cnt[IL_Q_READY] != ld32(&q->n_ready) || cnt[IL_Q_WRITING] != ld32(&q->n_writing) ||
        cnt[IL_Q_TAKEN] != ld32(&q->n_taken) || cnt[IL_Q_FREE] != ld32(&q->free_len) ||
        n - cnt[IL_Q_FREE] != ld32(&q->n_live) || used != ld64(&q->arena_used) ||
        cnt[IL_Q_READY] != ld32(&q->heap_len) || maxseq >= ld64(&q->next_seq))
        goto out;
    /* free stack: distinct FREE entries */
    for (uint32_t k = 0; k < cnt[IL_Q_FREE]; k++) {
        uint32_t e = h->stk[k];
        if (e >= n || seen[e] || atomic_load_explicit(&E[e].sw, RLX) != 0)
            goto out;
        seen[e] = 1;
    }
    /* heap: distinct READY entries with their keys, heap-ordered */
    memset(seen, 0, n);
    for (uint32_t k = 0; k < cnt[IL_Q_READY]; k++) {
        il_q_node *x = &h->heap[k];
        if (x->entry >= n || seen[x->entry] ||
            sw_state(atomic_load_explicit(&E[x->entry].sw, RLX)) != IL_Q_READY ||
            E[x->entry].seq != x->seq || E[x->entry].prio != x->prio)
            goto out;
        if (k > 0 && node_before(x, &h->heap[(k - 1) / 2]))
            goto out;
        seen[x->entry] = 1;
    }
    /* extent ring: every live entry once, in address order, no overlap */
    uint32_t live = ld32(&q->n_live);
    memset(seen, 0, n);
    if (live == 0) {
        if (ld32(&q->cursor) != IL_Q_NONE)
            goto out;
    } else {
        uint32_t c = ld32(&q->cursor), wraps = 0;
        for (uint32_t k = 0; k < live; k++) {
            if (c >= n || seen[c] || atomic_load_explicit(&E[c].sw, RLX) == 0)
                goto out;
            seen[c] = 1;
            uint32_t nx = E[c].next;
            if (nx >= n || E[nx].prev != c)
                goto out;
            if (E[nx].off <= E[c].off)
                wraps++;
            else if (E[c].off + ext_of(E[c].len) > E[nx].off)
                goto out;
            c = nx;
        }
        if (c != ld32(&q->cursor) || wraps != 1)
            goto out;
    }
    rc = IL_OK;
out:
    free(seen);
    return rc;
}

int il_q_check(il_qh *h, uint64_t ident, int64_t lock_ns)
{
    int rc = q_enter(h, ident, lock_ns);
    if (rc != IL_OK)
        return rc;
    rc = check_locked(h);
    il_q_unlock(h);
    return rc;
}

/* ======================================================================== */
/* durability                                                               */
/* ======================================================================== */

int il_q_read_boot_id(uint64_t out[2])
{
    char buf[64];
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return IL_INVALID;
    ssize_t got;
    do {
        got = read(fd, buf, sizeof buf - 1);
    } while (got < 0 && errno == EINTR);
    close(fd);
    if (got <= 0)
        return IL_INVALID;
    uint64_t v[2] = {0, 0};
    int digits = 0;
    for (ssize_t i = 0; i < got && digits < 32; i++) {
        char ch = buf[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            d = (unsigned)(ch - 'A' + 10);
        else
            continue;
        v[digits / 16] = (v[digits / 16] << 4) | d;
        digits++;
    }
    if (digits != 32)
        return IL_INVALID;
    out[0] = v[0];
    out[1] = v[1];
    return IL_OK;
}

int il_q_same_boot(const il_qh *h, const uint64_t boot[2])
{
    return h->q->boot_id[0] == boot[0] && h->q->boot_id[1] == boot[1];
}

void il_q_set_boot(il_qh *h, const uint64_t boot[2])
{
    h->q->boot_id[0] = boot[0];
    h->q->boot_id[1] = boot[1];
    atomic_thread_fence(REL);
}

int il_q_reboot_recover(il_qh *h, const uint64_t boot[2], il_q_recovered *out)
{
    il_q *q = h->q;
    il_q_recovered r = {0, 0, 0, 0};
    /* Nobody of this boot uses the queue (caller's guarantee): every
     * recorded owner and waiter belongs to the previous boot. */
    atomic_store_explicit(&q->lock, 0, RLX);
    for (uint32_t i = 0; i < IL_Q_WAITSLOTS; i++)
        atomic_store_explicit(&q->waitslot[i], 0, RLX);
    for (int k = 0; k < 3; k++) {
        atomic_store_explicit(&q->wq[k].mask, 0, RLX);
        atomic_store_explicit(&q->wq[k].spin_mask, 0, RLX);
        atomic_store_explicit(&q->wq[k].overflow, 0, RLX);
        atomic_store_explicit(&q->wq[k].pending, 0, RLX);
    }
    journal_roll(h);
    int bad = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        uint64_t sw = atomic_load_explicit(&h->ent[i].sw, RLX);
        unsigned st = sw_state(sw);
        if (st == IL_Q_WRITING) {
            atomic_store_explicit(&h->ent[i].sw, 0, RLX);
            r.abandoned++;
        } else if (st == IL_Q_TAKEN) {
            if (h->flags & IL_Q_DURABLE) {
                atomic_store_explicit(&h->ent[i].sw, sw_make(IL_Q_READY, 0), RLX);
                r.redelivered++;
            } else {
                atomic_store_explicit(&h->ent[i].sw, 0, RLX);
                r.dropped++;
            }
        } else if (st == IL_Q_READY && sw_owner(sw) != 0) {
            bad = 1;
        }
    }
    int rc = bad ? IL_CORRUPT : q_rebuild(h);
    atomic_store_explicit(&q->broken, rc == IL_OK ? 0u : 1u, RLX);
    if (rc == IL_OK)
        il_q_set_boot(h, boot);
    atomic_thread_fence(SC);
    if (out)
        *out = r;
    return rc;
}

/* ======================================================================== */
/* observation                                                              */
/* ======================================================================== */

void il_q_read_stats(const il_qh *h, il_q_stats *st)
{
    il_q *q = h->q;
    st->ready = ld32(&q->n_ready);
    st->writing = ld32(&q->n_writing);
    st->taken = ld32(&q->n_taken);
    st->free_entries = ld32(&q->free_len);
    st->nentries = h->n;
    st->maxsize = h->maxsize;
    st->unfinished = ld64(&q->unfinished);
    st->arena_bytes = h->arena_bytes;
    st->arena_used = ld64(&q->arena_used);
    st->puts = ld64(&q->puts);
    st->gets = ld64(&q->gets);
    st->acks = ld64(&q->acks);
    st->nacks = ld64(&q->nacks);
    st->redelivered = ld64(&q->redelivered);
    st->dropped = ld64(&q->dropped);
    st->abandoned = ld64(&q->abandoned);
    st->owner_died = ld64(&q->owner_died);
    st->wakes = ld64(&q->wakes);
    st->lock_wakes = ld64(&q->lock_wakes);
    st->lock_contended = ld64(&q->lock_contended);
}
