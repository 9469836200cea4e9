/* lockword.c - robust fair mutex and robust counting semaphore (lockword.h). */
#include "lockword.h"

#include <limits.h>
#include <sched.h>
#include <string.h>

#include "futex.h"
#include "proc.h"

/* ======================================================================== */
/* il_lock                                                                  */
/* ======================================================================== */

#define ST_HELD (UINT64_C(1) << 32)
#define ST_DIED (UINT64_C(1) << 33)
#define ST_FAST (UINT64_C(1) << 34) /* held without a ticket (il_lock_try) */
#define ST_IDX_SHIFT 40

/* The ticket field of an entry that holds the lock without a ticket (fast
 * path): not IL_LOCK_TICKET_VALID, not 0 ("taking one"). */
#define ENTRY_FASTHOLD (UINT64_C(1) << 33)

static inline uint32_t st_turn(uint64_t s) { return (uint32_t)s; }
static inline int st_held(uint64_t s) { return (s & ST_HELD) != 0; }
static inline int st_died(uint64_t s) { return (s & ST_DIED) != 0; }
static inline int st_fast(uint64_t s) { return (s & ST_FAST) != 0; }
static inline uint32_t st_idx(uint64_t s) { return (uint32_t)(s >> ST_IDX_SHIFT) & 0xFFu; }

static inline uint64_t st_free(uint32_t turn, int died)
{
    return (uint64_t)turn | (died ? ST_DIED : 0);
}

static inline uint64_t st_heldby(uint32_t turn, uint32_t idx)
{
    return (uint64_t)turn | ST_HELD | ((uint64_t)idx << ST_IDX_SHIFT);
}

/* The turn after the hold in s ends (release or recovery): a ticket holder
 * used up ticket `turn`; a fast-path holder took none, so the turn stays. */
static inline uint32_t st_next_turn(uint64_t s) { return st_turn(s) + (st_fast(s) ? 0u : 1u); }

/* t comes before u in ticket order (wrap-around safe). */
static inline int ticket_before(uint32_t t, uint32_t u) { return (int32_t)(t - u) < 0; }

static inline uint64_t valid_ticket(uint32_t t) { return IL_LOCK_TICKET_VALID | t; }

void il_lock_init(il_lock *l)
{
    memset((void *)l, 0, sizeof *l);
    l->magic = IL_LOCK_MAGIC;
    l->nentries = IL_LOCK_QUEUE;
    atomic_thread_fence(memory_order_release);
}

int il_lock_validate(const il_lock *l)
{
    if (l->magic != IL_LOCK_MAGIC || l->nentries != IL_LOCK_QUEUE)
        return IL_CORRUPT;
    uint64_t s = atomic_load_explicit((_Atomic uint64_t *)&l->state, memory_order_acquire);
    if (st_held(s) && st_idx(s) >= IL_LOCK_QUEUE)
        return IL_CORRUPT;
    return IL_OK;
}

/* The holder's entry, or NULL if the state names no valid one. */
static inline il_lock_entry *holder_entry(il_lock *l, uint64_t s)
{
    if (!st_held(s) || st_idx(s) >= IL_LOCK_QUEUE)
        return NULL;
    return &l->q[st_idx(s)];
}

static inline int holder_is(il_lock *l, uint64_t s, uint64_t ident, uint32_t tid)
{
    il_lock_entry *e = holder_entry(l, s);
    return e != NULL && atomic_load_explicit(&e->ident, memory_order_acquire) == ident &&
           atomic_load_explicit(&e->tid, memory_order_relaxed) == tid;
}

/* Claim a free queue entry for (ident, tid); its ticket reads 0 ("taking one").
 * The search starts at a per-thread spot so that a thread tends to reuse the
 * same (cache-warm) entry and threads rarely collide. */
static int32_t entry_claim(il_lock *l, uint64_t ident, uint32_t tid)
{
    uint32_t start = (tid * UINT32_C(0x9E3779B1)) >> 26; /* 6 bits: 0..63 */
    for (uint32_t k = 0; k < IL_LOCK_QUEUE; k++) {
        uint32_t i = (start + k) & (IL_LOCK_QUEUE - 1);
        il_lock_entry *e = &l->q[i];
        if (atomic_load_explicit(&e->ident, memory_order_relaxed) != 0)
            continue;
        uint64_t expected = 0;
        if (atomic_compare_exchange_strong_explicit(&e->ident, &expected, ident,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed)) {
            atomic_store_explicit(&e->tid, tid, memory_order_relaxed);
            atomic_store_explicit(&e->sleeping, 0, memory_order_relaxed);
            atomic_store_explicit(&e->ticket, 0, memory_order_seq_cst);
            return (int32_t)i;
        }
    }
    return -1;
}

/* Free an entry we own (or one whose owner is known dead: then ident must
 * still be `ident`). */
static void entry_free(il_lock_entry *e, uint64_t ident)
{
    uint64_t cur = atomic_load_explicit(&e->ident, memory_order_relaxed);
    if (cur != ident)
        return;
    atomic_store_explicit(&e->ticket, 0, memory_order_relaxed);
    atomic_compare_exchange_strong_explicit(&e->ident, &cur, 0, memory_order_seq_cst,
                                            memory_order_relaxed);
}

static void wake_entry(il_lock *l, il_lock_entry *e)
{
    if (atomic_load_explicit(&e->sleeping, memory_order_seq_cst) &&
        atomic_exchange_explicit(&e->sleeping, 0, memory_order_seq_cst)) {
        atomic_fetch_add_explicit(&e->seq, 1, memory_order_release);
        il_futex_wake(&e->seq, INT_MAX);
        atomic_fetch_add_explicit(&l->wakes, 1, memory_order_relaxed);
    }
}

/* The turn just moved to `turn` (by a release, skip or recovery, a seq_cst
 * RMW): wake the waiter of that ticket if it sleeps.  No syscall and no scan
 * when nobody has taken a ticket beyond the new turn. */
static void hand_off_slow(il_lock *l, uint32_t turn, uint32_t next)
{
    if (next != turn) {
        /* Start where the latest ticket taker sits: with one waiter (the
         * common hand-off) the first entry looked at is the right one, and
         * the scan does not pull the whole queue into this CPU's cache. */
        uint64_t want = valid_ticket(turn);
        uint32_t start = atomic_load_explicit(&l->hint, memory_order_relaxed);
        for (uint32_t k = 0; k < IL_LOCK_QUEUE; k++) {
            il_lock_entry *e = &l->q[(start + k) & (IL_LOCK_QUEUE - 1)];
            if (atomic_load_explicit(&e->ticket, memory_order_seq_cst) == want &&
                atomic_load_explicit(&e->ident, memory_order_relaxed) != 0) {
                wake_entry(l, e);
                break;
            }
        }
    }
    if (atomic_load_explicit(&l->overflow, memory_order_seq_cst) != 0) {
        atomic_fetch_add_explicit(&l->overflow_seq, 1, memory_order_release);
        il_futex_wake(&l->overflow_seq, INT_MAX);
        atomic_fetch_add_explicit(&l->wakes, 1, memory_order_relaxed);
    }
}

static inline void hand_off(il_lock *l, uint32_t turn)
{
    uint32_t next = atomic_load_explicit(&l->next_ticket, memory_order_seq_cst);
    if (next != turn || atomic_load_explicit(&l->overflow, memory_order_seq_cst) != 0)
        hand_off_slow(l, turn, next);
}

/* Bookkeeping by the new holder (it alone writes these while it holds). */
static inline int claimed(il_lock *l, int died, int contended)
{
    atomic_store_explicit(&l->depth, 1, memory_order_relaxed);
    uint64_t a = atomic_load_explicit(&l->acquisitions, memory_order_relaxed);
    atomic_store_explicit(&l->acquisitions, a + 1, memory_order_relaxed);
    if (contended) {
        uint64_t c = atomic_load_explicit(&l->contentions, memory_order_relaxed);
        atomic_store_explicit(&l->contentions, c + 1, memory_order_relaxed);
    }
    if (died) {
        uint64_t d = atomic_load_explicit(&l->owner_died, memory_order_relaxed);
        atomic_store_explicit(&l->owner_died, d + 1, memory_order_relaxed);
        return IL_OWNERDIED;
    }
    return IL_OK;
}

static int reenter(il_lock *l)
{
    uint32_t d = atomic_load_explicit(&l->depth, memory_order_relaxed);
    if (d == UINT32_MAX)
        return IL_INVALID;
    atomic_store_explicit(&l->depth, d + 1, memory_order_relaxed);
    return IL_OK;
}

/* Claim a free queue entry as the record of a fast-path hold: one CAS on
 * ident, then plain stores (the state CAS that names the entry publishes
 * them).  Starts at the thread's own spot, as entry_claim. */
static inline int32_t entry_claim_fast(il_lock *l, uint64_t ident, uint32_t tid)
{
    uint32_t start = (tid * UINT32_C(0x9E3779B1)) >> 26;
    for (uint32_t k = 0; k < IL_LOCK_QUEUE; k++) {
        uint32_t i = (start + k) & (IL_LOCK_QUEUE - 1);
        il_lock_entry *e = &l->q[i];
        uint64_t expected = 0;
        if (atomic_load_explicit(&e->ident, memory_order_relaxed) != 0 ||
            !atomic_compare_exchange_strong_explicit(&e->ident, &expected, ident,
                                                     memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        atomic_store_explicit(&e->tid, tid, memory_order_relaxed);
        atomic_store_explicit(&e->sleeping, 0, memory_order_relaxed);
        atomic_store_explicit(&e->ticket, ENTRY_FASTHOLD, memory_order_relaxed);
        return (int32_t)i;
    }
    return -1;
}

/* Give back an entry that no state word names (a fast claim that lost). */
static inline void entry_unclaim(il_lock_entry *e)
{
    atomic_store_explicit(&e->ticket, 0, memory_order_relaxed);
    atomic_store_explicit(&e->ident, 0, memory_order_release);
}

int il_lock_try(il_lock *l, uint64_t ident, uint32_t tid, int recursive)
{
    ident = il_ident_bare(ident);
    if (ident == 0)
        return IL_INVALID;
    uint64_t s = atomic_load_explicit(&l->state, memory_order_acquire);
    if (st_held(s)) {
        if (recursive && holder_is(l, s, ident, tid))
            return reenter(l);
        return IL_BUSY;
    }
    /* Nobody holds a ticket beyond the turn: nobody queued (FIFO, no barging
     * past a waiter whose ticket was taken before we looked). */
    uint32_t t = st_turn(s);
    if (atomic_load_explicit(&l->next_ticket, memory_order_seq_cst) != t)
        return IL_BUSY;
    int32_t idx = entry_claim_fast(l, ident, tid);
    if (idx < 0)
        return IL_BUSY;
    /* One CAS takes the lock without a ticket: (t, free) -> (t, HELD|FAST, idx).
     * The turn stays t, so a waiter that took ticket t meanwhile is next. */
    uint64_t want = st_heldby(t, (uint32_t)idx) | ST_FAST;
    if (atomic_compare_exchange_strong_explicit(&l->state, &s, want, memory_order_seq_cst,
                                                memory_order_relaxed))
        return claimed(l, st_died(s), 0);
    entry_unclaim(&l->q[idx]); /* never named by the state: nobody else looks at it */
    return IL_BUSY;
}

void il_lock_wait_begin(il_lock_waiter *w, il_lock *l, uint64_t ident, uint32_t tid,
                        int recursive)
{
    memset(w, 0, sizeof *w);
    w->l = l;
    w->ident = il_ident_bare(ident);
    w->tid = tid;
    w->entry = -1;
    w->recursive = recursive;
}

static void take_ticket(il_lock_waiter *w)
{
    il_lock_entry *e = &w->l->q[w->entry];
    /* "taking a ticket" first, so that nobody skips the ticket we are about
     * to get while we have not yet published it. */
    atomic_store_explicit(&e->ticket, 0, memory_order_seq_cst);
    uint32_t t = atomic_fetch_add_explicit(&w->l->next_ticket, 1, memory_order_seq_cst);
    atomic_store_explicit(&e->ticket, valid_ticket(t), memory_order_seq_cst);
    w->ticket = t;
    w->has_ticket = 1;
    atomic_store_explicit(&w->l->hint, (uint32_t)w->entry, memory_order_relaxed);
}

int il_lock_wait_poll(il_lock_waiter *w)
{
    il_lock *l = w->l;
    if (w->ident == 0)
        return IL_INVALID;
    uint64_t s = atomic_load_explicit(&l->state, memory_order_acquire);
    if (w->recursive && st_held(s) && holder_is(l, s, w->ident, w->tid)) {
        il_lock_wait_cancel(w);
        return reenter(l);
    }
    if (w->entry < 0) {
        w->entry = entry_claim(l, w->ident, w->tid);
        if (w->entry < 0) {
            w->contended = 1;
            return IL_BUSY; /* queue full: wait a slice without a place */
        }
        w->has_ticket = 0;
    }
    if (!w->has_ticket) {
        take_ticket(w);
        s = atomic_load_explicit(&l->state, memory_order_seq_cst);
    }
    for (int round = 0; round < 4; round++) {
        uint32_t turn = st_turn(s);
        if (!st_held(s) && turn == w->ticket) {
            if (atomic_compare_exchange_strong_explicit(
                    &l->state, &s, st_heldby(turn, (uint32_t)w->entry), memory_order_seq_cst,
                    memory_order_seq_cst)) {
                w->entry = -1; /* the entry now belongs to the lock (holder record) */
                w->has_ticket = 0;
                return claimed(l, st_died(s), w->contended);
            }
            continue; /* s reloaded by the failed CAS */
        }
        if (ticket_before(w->ticket, turn) ||
            (turn == w->ticket && st_held(s) && !st_fast(s))) {
            /* Our turn passed without us (skipped as dead or stalled): queue again. */
            take_ticket(w);
            s = atomic_load_explicit(&l->state, memory_order_seq_cst);
            continue;
        }
        break;
    }
    w->contended = 1;
    return IL_BUSY;
}

static int is_acquired(int rc) { return rc == IL_OK || rc == IL_OWNERDIED; }

/* Adaptive spin (docs/design/sync-lockword.md §1 "Adaptive spin"): how long a
 * waiter spins before sleeping, from a per-object hint in shared memory (ns,
 * relaxed stores: a lost update only changes how long someone spins). */
static int64_t spin_limit(uint32_t avg, int probe)
{
    int64_t limit = avg;
    if (probe && limit < IL_LOCK_SPIN_PROBE_NS)
        limit = IL_LOCK_SPIN_PROBE_NS;
    return limit > IL_LOCK_SPIN_NS ? IL_LOCK_SPIN_NS : limit;
}

/* Record a spin's outcome: `took` ns to succeed, or -1 if it failed.  The
 * hint doubles while spins pay (at least twice what the last one took) and
 * halves while they do not, down to 0. */
static void spin_adapt(_Atomic uint32_t *hint, uint32_t avg, int64_t took)
{
    int64_t next;
    if (took >= 0) {
        next = 2 * (int64_t)avg;
        if (next < 2 * took)
            next = 2 * took;
        if (next < IL_LOCK_SPIN_PROBE_NS)
            next = IL_LOCK_SPIN_PROBE_NS;
        if (next > IL_LOCK_SPIN_NS)
            next = IL_LOCK_SPIN_NS;
    } else {
        next = avg / 2 < 500 ? 0 : avg / 2;
    }
    if ((uint32_t)next != avg)
        atomic_store_explicit(hint, (uint32_t)next, memory_order_relaxed);
}

/* Spin for at most limit_ns watching *watch; on every change call attempt(ctx)
 * (its status in *rc).  Returns the ns it took to get a status other than
 * IL_BUSY, or -1 if the time ran out.  (No sched_yield: under load it gives
 * the CPU to unrelated work for a whole time slice; measured worse.) */
static int64_t spin_for(const _Atomic uint64_t *watch, int64_t limit_ns, int (*attempt)(void *),
                        void *ctx, int *rc)
{
    const int64_t t0 = il_now_ns();
    const int64_t end = t0 + limit_ns;
    int64_t now = t0;
    uint64_t v0 = atomic_load_explicit(watch, memory_order_relaxed);
    while (now < end) {
        for (int i = 0; i < 16; i++) {
            il_cpu_relax();
            if (atomic_load_explicit(watch, memory_order_relaxed) != v0) {
                *rc = attempt(ctx);
                if (*rc != IL_BUSY)
                    return il_now_ns() - t0;
                v0 = atomic_load_explicit(watch, memory_order_relaxed);
            }
        }
        now = il_now_ns();
    }
    return -1;
}

static int lock_attempt(void *w) { return il_lock_wait_poll((il_lock_waiter *)w); }

int il_lock_wait_slice(il_lock_waiter *w, int64_t slice_ns)
{
    il_lock *l = w->l;
    int rc = il_lock_wait_poll(w);
    if (rc != IL_BUSY)
        return rc;
    w->contended = 1;
    /* Bounded, adaptive, time-based spin (docs/design/sync-lockword.md §1
     * "Adaptive spin"): a hand-off that comes within the spin costs no
     * sleep and no wake-up -- on a VM, waking a halted vCPU is most of a
     * sleeping hand-off.  A spin that does not end in the lock is pure loss,
     * so the per-lock hint `spin` (ns) doubles while spins pay and halves
     * while they do not, between 0 and IL_LOCK_SPIN_NS; every 16th ticket
     * spins at least IL_LOCK_SPIN_PROBE_NS so that a lock whose spins would
     * pay again is noticed.  Only the next waiter in line spins: the others
     * cannot get the lock before it, and their spins would take the CPU the
     * holder and the next waiter need (2 cores). */
    uint64_t s0 = atomic_load_explicit(&l->state, memory_order_relaxed);
    uint32_t next_turn = st_held(s0) ? st_next_turn(s0) : st_turn(s0);
    if (w->has_ticket && w->ticket == next_turn) {
        uint32_t avg = atomic_load_explicit(&l->spin, memory_order_relaxed);
        int64_t limit = spin_limit(avg, (w->ticket & 15u) == 0);
        int64_t took = limit > 0 ? spin_for(&l->state, limit, lock_attempt, w, &rc) : -1;
        spin_adapt(&l->spin, avg, took);
        if (took >= 0)
            return rc;
    }
    int frc;
    if (w->entry < 0) {
        /* No queue entry free: sleep on the overflow word, retry afterwards. */
        uint32_t seq = atomic_load_explicit(&l->overflow_seq, memory_order_acquire);
        atomic_fetch_add_explicit(&l->overflow, 1, memory_order_seq_cst);
        frc = il_futex_wait(&l->overflow_seq, seq, slice_ns);
        atomic_fetch_sub_explicit(&l->overflow, 1, memory_order_relaxed);
    } else {
        il_lock_entry *e = &l->q[w->entry];
        uint32_t seq = atomic_load_explicit(&e->seq, memory_order_acquire);
        atomic_store_explicit(&e->sleeping, 1, memory_order_seq_cst);
        rc = il_lock_wait_poll(w); /* re-check after announcing the sleep */
        if (rc != IL_BUSY) {
            atomic_store_explicit(&e->sleeping, 0, memory_order_relaxed);
            return rc;
        }
        frc = il_futex_wait(&e->seq, seq, slice_ns);
        atomic_store_explicit(&e->sleeping, 0, memory_order_relaxed);
    }
    if (frc == IL_EINTR)
        return IL_EINTR;
    rc = il_lock_wait_poll(w);
    if (rc != IL_BUSY)
        return rc;
    return frc == IL_TIMEOUT ? IL_TIMEOUT : IL_BUSY;
}

void il_lock_wait_cancel(il_lock_waiter *w)
{
    il_lock *l = w->l;
    if (w->entry < 0)
        return;
    il_lock_entry *e = &l->q[w->entry];
    entry_free(e, w->ident);
    w->entry = -1;
    if (w->has_ticket) {
        /* If our turn came meanwhile, pass it on (keeping DIED for the next). */
        uint64_t s = atomic_load_explicit(&l->state, memory_order_seq_cst);
        if (!st_held(s) && st_turn(s) == w->ticket) {
            uint64_t want = st_free(w->ticket + 1, st_died(s));
            if (atomic_compare_exchange_strong_explicit(&l->state, &s, want,
                                                        memory_order_seq_cst,
                                                        memory_order_relaxed))
                hand_off(l, w->ticket + 1);
        }
        w->has_ticket = 0;
    }
}

/* Liveness answers cached for one check (several entries of one process). */
typedef struct alive_cache {
    uint64_t id[8];
    int alive[8];
    int n;
} alive_cache;

static int alive_cached(alive_cache *c, uint64_t ident)
{
    for (int i = 0; i < c->n; i++)
        if (c->id[i] == ident)
            return c->alive[i];
    int a = il_ident_alive(ident);
    if (c->n < 8) {
        c->id[c->n] = ident;
        c->alive[c->n] = a;
        c->n++;
    }
    return a;
}

static int skip_turn(il_lock *l, uint64_t s)
{
    uint32_t turn = st_turn(s);
    if (atomic_compare_exchange_strong_explicit(&l->state, &s, st_free(turn + 1, st_died(s)),
                                                memory_order_seq_cst, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&l->skipped, 1, memory_order_relaxed);
        hand_off(l, turn + 1);
        return 1;
    }
    return 0;
}

int il_lock_check_owner(il_lock *l, il_lock_waiter *w)
{
    if (il_lock_validate(l) != IL_OK)
        return -IL_CORRUPT;
    alive_cache cache;
    cache.n = 0;
    int repairs = 0;
    uint64_t s = atomic_load_explicit(&l->state, memory_order_seq_cst);
    if (st_held(s)) {
        /* 1. A dead holder: recover with one CAS; the next claimer learns DIED. */
        il_lock_entry *e = holder_entry(l, s);
        if (e == NULL)
            return -IL_CORRUPT;
        uint64_t id = atomic_load_explicit(&e->ident, memory_order_acquire);
        if (id == 0 || !alive_cached(&cache, id)) {
            uint32_t turn = st_next_turn(s);
            if (atomic_compare_exchange_strong_explicit(&l->state, &s, st_free(turn, 1),
                                                        memory_order_seq_cst,
                                                        memory_order_relaxed)) {
                atomic_store_explicit(&l->depth, 0, memory_order_relaxed);
                if (id != 0)
                    entry_free(e, id);
                hand_off(l, turn);
                repairs++;
            }
            s = atomic_load_explicit(&l->state, memory_order_seq_cst);
        }
    }
    /* 2. The turn is free but nobody takes it: skip dead, gone or stalled
     *    waiters (several rounds: a run of dead waiters is skipped at once). */
    for (int round = 0; round < (int)IL_LOCK_QUEUE + 1 && !st_held(s); round++) {
        uint32_t turn = st_turn(s);
        /* next_ticket after state: if it is past turn, ticket `turn` was taken
         * before we look at the entries, which then show it (or "taking"). */
        uint32_t next = atomic_load_explicit(&l->next_ticket, memory_order_seq_cst);
        if (next == turn || ticket_before(next, turn))
            break; /* the lock is free and nobody waits */
        int found_live = 0, found_dead = 0, taking_live = 0;
        for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++) {
            il_lock_entry *e = &l->q[i];
            uint64_t id = atomic_load_explicit(&e->ident, memory_order_seq_cst);
            if (id == 0)
                continue;
            uint64_t tk = atomic_load_explicit(&e->ticket, memory_order_seq_cst);
            if (tk == valid_ticket(turn)) {
                if (alive_cached(&cache, id))
                    found_live = 1;
                else
                    found_dead = 1;
            } else if (tk == 0 && alive_cached(&cache, id)) {
                taking_live = 1;
            }
        }
        int skip = 0;
        if (found_live || (!found_dead && taking_live)) {
            /* A live waiter has (or may have) the turn: skip it only when it
             * has not claimed for IL_LOCK_STALL_NS, as seen by this waiter. */
            if (w != NULL && !(w->has_ticket && w->ticket == turn)) {
                int64_t now = il_now_ns();
                if (w->stall_since == 0 || w->stall_turn != turn) {
                    w->stall_turn = turn;
                    w->stall_since = now;
                } else if (now - w->stall_since >= IL_LOCK_STALL_NS) {
                    skip = 1;
                    w->stall_since = 0;
                }
            }
        } else {
            skip = 1; /* dead, or abandoned (no entry holds the ticket) */
        }
        if (!skip || !skip_turn(l, s))
            break;
        repairs++;
        s = atomic_load_explicit(&l->state, memory_order_seq_cst);
    }
    /* 3. Entries of dead processes that are not the holder's: free them. */
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++) {
        il_lock_entry *e = &l->q[i];
        uint64_t id = atomic_load_explicit(&e->ident, memory_order_seq_cst);
        if (id == 0 || alive_cached(&cache, id))
            continue;
        /* Dead before this load of state: it cannot become the holder later. */
        uint64_t s2 = atomic_load_explicit(&l->state, memory_order_seq_cst);
        if (st_held(s2) && st_idx(s2) == i)
            continue; /* a dead holder: step 1 of the next check */
        entry_free(e, id);
        repairs++;
    }
    return repairs;
}

int il_lock_acquire(il_lock *l, uint64_t ident, uint32_t tid, int recursive, int64_t timeout_ns,
                    int64_t slice_ns)
{
    int rc = il_lock_try(l, ident, tid, recursive);
    if (rc != IL_BUSY)
        return rc;
    if (timeout_ns == 0) {
        if (il_lock_check_owner(l, NULL) > 0) {
            rc = il_lock_try(l, ident, tid, recursive);
            if (rc != IL_BUSY)
                return rc;
        }
        return IL_TIMEOUT;
    }
    if (slice_ns <= 0)
        slice_ns = 10 * 1000 * 1000;
    int64_t now = il_now_ns();
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : now + timeout_ns;
    int64_t last_check = now;
    il_lock_waiter w;
    il_lock_wait_begin(&w, l, ident, tid, recursive);
    for (;;) {
        rc = il_lock_wait_poll(&w);
        if (rc != IL_BUSY)
            return rc;
        now = il_now_ns();
        if (now >= deadline) {
            il_lock_wait_cancel(&w);
            return IL_TIMEOUT;
        }
        int64_t slice = deadline - now < slice_ns ? deadline - now : slice_ns;
        rc = il_lock_wait_slice(&w, slice);
        if (is_acquired(rc) || rc == IL_INVALID)
            return rc;
        now = il_now_ns();
        if (rc == IL_TIMEOUT || now - last_check >= slice_ns) {
            il_lock_check_owner(l, &w);
            last_check = now;
        }
    }
}

static int release_level(il_lock *l, uint64_t ident, uint32_t tid, int self, int died)
{
    ident = il_ident_bare(ident);
    uint64_t s = atomic_load_explicit(&l->state, memory_order_acquire);
    if (ident == 0 || !holder_is(l, s, ident, tid))
        return IL_INVALID;
    uint32_t d = atomic_load_explicit(&l->depth, memory_order_relaxed);
    if (d > 1) {
        atomic_store_explicit(&l->depth, d - 1, memory_order_relaxed);
        return IL_OK;
    }
    il_lock_entry *e = holder_entry(l, s);
    uint32_t turn = st_next_turn(s);
    atomic_store_explicit(&l->depth, 0, memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&l->state, &s, st_free(turn, died),
                                                 memory_order_seq_cst, memory_order_relaxed)) {
        atomic_store_explicit(&l->depth, d, memory_order_relaxed);
        return IL_INVALID; /* recovered from under us: we were taken for dead */
    }
    if (self) {
        /* Our own entry: nobody else frees the entry of a live process, so
         * plain stores do (no locked instruction on the uncontended path). */
        atomic_store_explicit(&e->ticket, 0, memory_order_relaxed);
        atomic_store_explicit(&e->ident, 0, memory_order_release);
    } else {
        entry_free(e, ident); /* the holder may be dead: race check_owner fairly */
    }
    hand_off(l, turn);
    return IL_OK;
}

int il_lock_release(il_lock *l, uint64_t ident, uint32_t tid)
{
    return release_level(l, ident, tid, 1, 0);
}

int il_lock_release_died(il_lock *l, uint64_t ident, uint32_t tid)
{
    return release_level(l, ident, tid, 1, 1);
}

int il_lock_release_holder(il_lock *l)
{
    uint64_t s = atomic_load_explicit(&l->state, memory_order_acquire);
    il_lock_entry *e = holder_entry(l, s);
    if (e == NULL)
        return IL_INVALID;
    uint64_t ident = atomic_load_explicit(&e->ident, memory_order_acquire);
    uint32_t tid = atomic_load_explicit(&e->tid, memory_order_relaxed);
    if (ident == 0)
        return IL_INVALID;
    return release_level(l, ident, tid, 0, 0);
}

int il_lock_holder(const il_lock *l, uint64_t *ident, uint32_t *tid, uint32_t *depth)
{
    il_lock *m = (il_lock *)l;
    uint64_t s = atomic_load_explicit(&m->state, memory_order_acquire);
    il_lock_entry *e = holder_entry(m, s);
    if (e == NULL)
        return 0;
    if (ident)
        *ident = atomic_load_explicit(&e->ident, memory_order_acquire);
    if (tid)
        *tid = atomic_load_explicit(&e->tid, memory_order_relaxed);
    if (depth)
        *depth = atomic_load_explicit(&m->depth, memory_order_relaxed);
    return 1;
}

uint32_t il_lock_waiters(const il_lock *l)
{
    il_lock *m = (il_lock *)l;
    uint64_t s = atomic_load_explicit(&m->state, memory_order_acquire);
    uint32_t turn = st_turn(s), n = 0;
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++) {
        il_lock_entry *e = &m->q[i];
        if (atomic_load_explicit(&e->ident, memory_order_acquire) == 0)
            continue;
        if (st_held(s) && st_idx(s) == i)
            continue;
        uint64_t tk = atomic_load_explicit(&e->ticket, memory_order_acquire);
        if (tk == 0 || ((tk & IL_LOCK_TICKET_VALID) && !ticket_before((uint32_t)tk, turn)))
            n++;
    }
    return n + atomic_load_explicit(&m->overflow, memory_order_relaxed);
}

void il_lock_read_stats(const il_lock *l, il_lock_stats *st)
{
    il_lock *m = (il_lock *)l;
    st->acquisitions = atomic_load_explicit(&m->acquisitions, memory_order_relaxed);
    st->contentions = atomic_load_explicit(&m->contentions, memory_order_relaxed);
    st->owner_died = atomic_load_explicit(&m->owner_died, memory_order_relaxed);
    st->skipped = atomic_load_explicit(&m->skipped, memory_order_relaxed);
    st->wakes = atomic_load_explicit(&m->wakes, memory_order_relaxed);
}

/* ======================================================================== */
/* il_sem                                                                   */
/* ======================================================================== */

#define W_VALUE(w) ((uint32_t)(w))
#define W_MARK(w) ((uint32_t)((w) >> 32) & 0xFFu)
#define W_EPOCH(w) ((uint32_t)((w) >> 40))
#define EPOCH_MASK 0xFFFFFFu

static inline uint64_t w_make(uint32_t value, uint32_t mark, uint32_t epoch)
{
    return (uint64_t)value | ((uint64_t)(mark & 0xFFu) << 32) |
           ((uint64_t)(epoch & EPOCH_MASK) << 40);
}

#define RES_SLOT(r) ((uint32_t)((r) & 0xFFu))         /* slot + 1, 0: none */
#define RES_TID(r) ((uint32_t)((r) >> 8) & 0xFFFFFFu) /* low 24 bits of the tid */
#define RES_N(r) ((uint32_t)((r) >> 32))

static inline uint64_t res_make(uint32_t slot, uint32_t tid, uint32_t n)
{
    return (uint64_t)((slot + 1) & 0xFFu) | ((uint64_t)(tid & 0xFFFFFFu) << 8) |
           ((uint64_t)n << 32);
}


int il_sem_init(il_sem *s, uint32_t value, uint32_t max)
{
    if (value > max)
        return IL_INVALID;
    memset((void *)s, 0, sizeof *s);
    s->magic = IL_SEM_MAGIC;
    s->max = max;
    atomic_store_explicit(&s->word, w_make(value, 0, 0), memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    return IL_OK;
}

int il_sem_validate(const il_sem *s)
{
    if (s->magic != IL_SEM_MAGIC)
        return IL_CORRUPT;
    uint64_t w = atomic_load_explicit((_Atomic uint64_t *)&s->word, memory_order_acquire);
    if (W_VALUE(w) > s->max || W_MARK(w) > IL_SEG_SLOTS)
        return IL_CORRUPT;
    return IL_OK;
}

static void sem_wake(il_sem *s)
{
    if (atomic_load_explicit(&s->sleepers, memory_order_seq_cst) != 0) {
        atomic_fetch_add_explicit(&s->seq, 1, memory_order_release);
        il_futex_wake(&s->seq, INT_MAX);
        atomic_fetch_add_explicit(&s->wakes, 1, memory_order_relaxed);
    }
}

/* Take the update marker for `me`, with the value still satisfying `ok`.
 * The marker is held for a few instructions only; if another process keeps
 * it longer than a short spin and a few yields, IL_BUSY (it may be dead:
 * il_sem_recover_dead).  On IL_OK *w0 is the marked word we installed. */
enum { OP_ACQ, OP_REL, OP_NONE };

typedef struct sem_op {
    int kind;
    uint32_t n;
    uint64_t my_res; /* our reservation word, 0 if none */
} sem_op;

static int sem_value_ok(il_sem *s, uint32_t v, const sem_op *op)
{
    if (op->kind == OP_ACQ) {
        uint64_t r = atomic_load_explicit(&s->reserve, memory_order_acquire);
        uint64_t need = op->n;
        if (r != 0 && r != op->my_res)
            need += RES_N(r); /* leave the reserved units alone */
        return v >= need ? IL_OK : IL_BUSY;
    }
    if (op->kind == OP_REL)
        return (uint64_t)v + op->n <= s->max ? IL_OK : IL_INVALID;
    return IL_OK;
}

static int sem_mark(il_sem *s, uint32_t me, const sem_op *op, uint64_t *w0)
{
    int spins = 0, yields = 0;
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    for (;;) {
        if (W_MARK(w) != 0) {
            if (++spins < IL_LOCK_SPIN) {
                il_cpu_relax();
            } else if (++yields < 16) {
                sched_yield();
            } else {
                return IL_BUSY;
            }
            w = atomic_load_explicit(&s->word, memory_order_acquire);
            continue;
        }
        int rc = sem_value_ok(s, W_VALUE(w), op);
        if (rc != IL_OK)
            return rc;
        uint64_t marked = w_make(W_VALUE(w), me + 1, W_EPOCH(w) + 1);
        if (atomic_compare_exchange_weak_explicit(&s->word, &w, marked, memory_order_seq_cst,
                                                  memory_order_acquire)) {
            *w0 = marked;
            return IL_OK;
        }
    }
}

/* Journal the update of held[slot] (from `before`) under marker epoch. */
static void sem_journal(il_sem *s, uint32_t epoch, uint32_t slot, uint32_t before)
{
    /* j_slot is release too: il_sem_names_slot, reading a j_slot of a later
     * update, must then see that update's marker in its second word load. */
    atomic_store_explicit(&s->j_slot, slot, memory_order_release);
    atomic_store_explicit(&s->j_held, before, memory_order_relaxed);
    atomic_store_explicit(&s->j_epoch, epoch, memory_order_release);
}

/* Release the marker, publishing the new value.  IL_CORRUPT if someone took
 * the marker over (they believed us dead). */
static int sem_unmark(il_sem *s, uint64_t marked, uint32_t value)
{
    uint64_t idle = w_make(value, 0, W_EPOCH(marked));
    if (!atomic_compare_exchange_strong_explicit(&s->word, &marked, idle, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return IL_CORRUPT;
    return IL_OK;
}

static int sem_update(il_sem *s, uint32_t slot, const sem_op *op)
{
    if (slot >= IL_SEG_SLOTS || op->n == 0 || op->n > IL_SEM_MAX_N)
        return IL_INVALID;
    uint64_t m;
    int rc = sem_mark(s, slot, op, &m);
    if (rc != IL_OK)
        return rc;
    /* Exclusive now: the value in m is current and held[] is ours to change. */
    uint32_t v = W_VALUE(m);
    uint32_t h = atomic_load_explicit(&s->held[slot], memory_order_relaxed);
    uint32_t nh, nv;
    if (op->kind == OP_ACQ) {
        nh = h + op->n;
        nv = v - op->n;
    } else {
        nh = h - (op->n < h ? op->n : h);
        nv = v + op->n;
    }
    sem_journal(s, W_EPOCH(m), slot, h);
    atomic_store_explicit(&s->held[slot], nh, memory_order_release);
    return sem_unmark(s, m, nv);
}

int il_sem_try_acquire(il_sem *s, uint32_t slot, uint32_t n)
{
    sem_op op = {OP_ACQ, n, 0};
    int rc = sem_update(s, slot, &op);
    if (rc == IL_OK) {
        /* Statistics are approximate (not journaled). */
        atomic_fetch_add_explicit(&s->acquisitions, 1, memory_order_relaxed);
    }
    return rc;
}

int il_sem_release(il_sem *s, uint32_t slot, uint32_t n)
{
    sem_op op = {OP_REL, n, 0};
    int rc = sem_update(s, slot, &op);
    if (rc == IL_OK)
        sem_wake(s);
    return rc;
}

void il_sem_wait_begin(il_sem_waiter *w, il_sem *s, uint32_t slot, uint32_t tid, uint32_t n)
{
    memset(w, 0, sizeof *w);
    w->s = s;
    w->slot = slot;
    w->tid = tid;
    w->n = n;
    w->since = il_now_ns();
}

static int sem_waiter_try(il_sem_waiter *w)
{
    il_sem *s = w->s;
    sem_op op = {OP_ACQ, w->n, w->reserved ? res_make(w->slot, w->tid, w->n) : 0};
    int rc = sem_update(s, w->slot, &op);
    if (rc == IL_OK) {
        atomic_fetch_add_explicit(&s->acquisitions, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->contentions, 1, memory_order_relaxed);
        il_sem_wait_cancel(w); /* drop our reservation */
    }
    return rc;
}

/* Sleeper accounting (docs/design/sync-lockword.md 2.4).  `sleepers` is what
 * releasers read (one seq_cst load, the Dekker pair with the waiter's
 * seq_cst increment followed by its re-try); slp[slot] attributes it.  The
 * order keeps slp[slot] <= the slot's share of `sleepers` at every instant:
 * enter bumps `sleepers` first, leave drops slp[slot] first.  So recovery,
 * taking a dead slot's slp[] (exchange to 0) out of `sleepers`, never removes
 * more than that slot put in: `sleepers` never drops below the live
 * sleepers, and no wake-up is lost.  A process killed between the two
 * RMWs (a few instructions, never while asleep) leaves `sleepers` one too
 * high: extra wake syscalls, never a lost wake.  Leave never takes slp[]
 * below zero: if recovery took our unit (our slot was judged dead: freed
 * while we slept), it also took our share of `sleepers`. */
static void sem_sleep_enter(il_sem *s, uint32_t slot)
{
    atomic_fetch_add_explicit(&s->sleepers, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&s->slp[slot], 1, memory_order_seq_cst);
}

static void sem_sleep_leave(il_sem *s, uint32_t slot)
{
    uint32_t c = atomic_load_explicit(&s->slp[slot], memory_order_relaxed);
    while (c != 0) {
        if (atomic_compare_exchange_weak_explicit(&s->slp[slot], &c, c - 1,
                                                  memory_order_seq_cst, memory_order_relaxed)) {
            atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_seq_cst);
            return;
        }
    }
}

static int sem_attempt(void *w) { return sem_waiter_try((il_sem_waiter *)w); }

int il_sem_wait_slice(il_sem_waiter *w, int64_t slice_ns)
{
    il_sem *s = w->s;
    int rc = sem_waiter_try(w);
    if (rc != IL_BUSY)
        return rc;
    if (!w->reserved && il_now_ns() - w->since >= IL_SEM_HUNGRY_NS) {
        uint64_t none = 0;
        uint64_t mine = res_make(w->slot, w->tid, w->n);
        if (atomic_compare_exchange_strong_explicit(&s->reserve, &none, mine,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed)) {
            w->reserved = 1;
            rc = sem_waiter_try(w);
            if (rc != IL_BUSY)
                return rc;
        }
    }
    /* Adaptive spin, as il_lock's: a release within it costs no sleep and no
     * wake-up.  Watches the value word; a change is worth a try. */
    uint32_t avg = atomic_load_explicit(&s->spin, memory_order_relaxed);
    uint64_t probe = atomic_load_explicit(&s->contentions, memory_order_relaxed);
    int64_t limit = spin_limit(avg, (probe & 15u) == 0);
    if (limit > 0) {
        int64_t took = spin_for(&s->word, limit, sem_attempt, w, &rc);
        spin_adapt(&s->spin, avg, took);
        if (took >= 0)
            return rc;
    }
    uint32_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    sem_sleep_enter(s, w->slot);
    rc = sem_waiter_try(w);
    if (rc != IL_BUSY) {
        sem_sleep_leave(s, w->slot);
        return rc;
    }
    int frc = il_futex_wait(&s->seq, seq, slice_ns);
    sem_sleep_leave(s, w->slot);
    if (frc == IL_EINTR)
        return IL_EINTR;
    rc = sem_waiter_try(w);
    if (rc != IL_BUSY)
        return rc;
    return frc == IL_TIMEOUT ? IL_TIMEOUT : IL_BUSY;
}

void il_sem_wait_cancel(il_sem_waiter *w)
{
    if (!w->reserved)
        return;
    uint64_t mine = res_make(w->slot, w->tid, w->n);
    if (atomic_compare_exchange_strong_explicit(&w->s->reserve, &mine, 0, memory_order_seq_cst,
                                                memory_order_relaxed))
        sem_wake(w->s); /* others may have left units for us */
    w->reserved = 0;
}

static int slot_dead(il_seg_header *hdr, uint32_t slot, alive_cache *cache)
{
    uint64_t id = atomic_load_explicit(&hdr->slots[slot].ident, memory_order_acquire);
    return id == 0 || !alive_cached(cache, il_ident_bare(id));
}

int64_t il_sem_recover_dead(il_sem *s, il_seg_header *hdr, uint32_t my_slot)
{
    if (my_slot >= IL_SEG_SLOTS)
        return -IL_INVALID;
    if (il_sem_validate(s) != IL_OK)
        return -IL_CORRUPT;
    uint32_t nslots = hdr->nslots > IL_SEG_SLOTS ? IL_SEG_SLOTS : hdr->nslots;
    alive_cache cache;
    cache.n = 0;
    int64_t given = 0;

    /* 1. A marker left by a dead process: take it over (same epoch, so a
     *    stale taker's CAS fails) and roll its update back from the journal.
     *    The value was never changed (it changes only when the marker is
     *    released), so restoring held[] undoes the update entirely. */
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    if (W_MARK(w) != 0) {
        uint32_t owner = W_MARK(w) - 1;
        if (owner >= IL_SEG_SLOTS)
            return -IL_CORRUPT;
        if (owner != my_slot && slot_dead(hdr, owner, &cache)) {
            uint64_t taken = w_make(W_VALUE(w), my_slot + 1, W_EPOCH(w));
            if (atomic_compare_exchange_strong_explicit(&s->word, &w, taken,
                                                        memory_order_seq_cst,
                                                        memory_order_relaxed)) {
                if (atomic_load_explicit(&s->j_epoch, memory_order_acquire) == W_EPOCH(w)) {
                    uint32_t js = atomic_load_explicit(&s->j_slot, memory_order_relaxed);
                    uint32_t jh = atomic_load_explicit(&s->j_held, memory_order_relaxed);
                    if (js < IL_SEG_SLOTS)
                        atomic_store_explicit(&s->held[js], jh, memory_order_release);
                }
                if (sem_unmark(s, taken, W_VALUE(w)) != IL_OK)
                    return -IL_CORRUPT;
            }
        }
    }
    /* 2. Units held by dead (or detached) slots go back, one journaled update
     *    per slot, charged to that slot; their sleepers leave `sleepers`
     *    (exchange: of two recoverers, one takes the count). */
    for (uint32_t i = 0; i < nslots; i++) {
        if (i == my_slot)
            continue;
        if (atomic_load_explicit(&s->held[i], memory_order_acquire) == 0 &&
            atomic_load_explicit(&s->slp[i], memory_order_relaxed) == 0)
            continue;
        if (!slot_dead(hdr, i, &cache))
            continue;
        uint32_t k = atomic_exchange_explicit(&s->slp[i], 0, memory_order_seq_cst);
        if (k != 0)
            atomic_fetch_sub_explicit(&s->sleepers, k, memory_order_seq_cst);
        if (atomic_load_explicit(&s->held[i], memory_order_acquire) == 0)
            continue;
        sem_op op = {OP_NONE, 0, 0};
        uint64_t m;
        int rc = sem_mark(s, my_slot, &op, &m);
        if (rc != IL_OK)
            return given > 0 ? given : -rc;
        uint32_t h = atomic_load_explicit(&s->held[i], memory_order_relaxed);
        uint32_t v = W_VALUE(m);
        uint32_t back = h;
        if ((uint64_t)v + back > s->max)
            back = s->max - v; /* cannot happen in a consistent semaphore */
        sem_journal(s, W_EPOCH(m), i, h);
        atomic_store_explicit(&s->held[i], 0, memory_order_release);
        if (sem_unmark(s, m, v + back) != IL_OK)
            return -IL_CORRUPT;
        given += back;
        atomic_fetch_add_explicit(&s->recovered, back, memory_order_relaxed);
    }
    /* 3. A reservation posted by a dead slot. */
    uint64_t r = atomic_load_explicit(&s->reserve, memory_order_acquire);
    if (r != 0 && RES_SLOT(r) >= 1 && RES_SLOT(r) <= IL_SEG_SLOTS &&
        slot_dead(hdr, RES_SLOT(r) - 1, &cache)) {
        if (atomic_compare_exchange_strong_explicit(&s->reserve, &r, 0, memory_order_seq_cst,
                                                    memory_order_relaxed) &&
            given == 0)
            sem_wake(s);
    }
    if (given > 0)
        sem_wake(s);
    return given;
}

int il_sem_acquire(il_sem *s, il_seg_header *hdr, uint32_t slot, uint32_t tid, uint32_t n,
                   int64_t timeout_ns, int64_t slice_ns)
{
    int rc = il_sem_try_acquire(s, slot, n);
    if (rc != IL_BUSY)
        return rc;
    if (timeout_ns == 0) {
        if (il_sem_recover_dead(s, hdr, slot) > 0 && il_sem_try_acquire(s, slot, n) == IL_OK)
            return IL_OK;
        return IL_TIMEOUT;
    }
    if (slice_ns <= 0)
        slice_ns = 10 * 1000 * 1000;
    int64_t now = il_now_ns();
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : now + timeout_ns;
    il_sem_waiter w;
    il_sem_wait_begin(&w, s, slot, tid, n);
    for (;;) {
        now = il_now_ns();
        if (now >= deadline) {
            il_sem_wait_cancel(&w);
            return IL_TIMEOUT;
        }
        int64_t slice = deadline - now < slice_ns ? deadline - now : slice_ns;
        rc = il_sem_wait_slice(&w, slice);
        if (rc == IL_OK || rc == IL_INVALID || rc == IL_CORRUPT) {
            il_sem_wait_cancel(&w);
            return rc;
        }
        if (rc == IL_TIMEOUT)
            il_sem_recover_dead(s, hdr, slot);
    }
}

uint32_t il_sem_value(const il_sem *s)
{
    return W_VALUE(atomic_load_explicit((_Atomic uint64_t *)&s->word, memory_order_acquire));
}

uint32_t il_sem_waiters(const il_sem *s)
{
    return atomic_load_explicit((_Atomic uint32_t *)&s->sleepers, memory_order_relaxed);
}

/* Called for a slot whose process is dead (it changes nothing any more), by
 * a reclaimer deciding whether the slot may be freed.  Besides the slot's own
 * units, marker and reservation, an update in flight by someone else may be
 * about to write held[slot]: a recovery that took a dead marker over and is
 * rolling back an update of `slot` (the journal names it), or one giving the
 * slot's units back (journal names it, held[] already zeroed: if that
 * recoverer dies, the next rolls held[] back up).  Reading held[slot] == 0 in
 * such a window and freeing the slot would leave the units charged to the
 * slot's next user, never to be recovered while it lives.  So: with a marker
 * set, the journal of the marker's epoch must be complete and name another
 * slot; and the word must not change while we look (no update began or ended
 * in between, so held[slot] was stable).  Any doubt answers 1 (named): the
 * slot is only freed later. */
int il_sem_names_slot(const il_sem *s, uint32_t slot)
{
    il_sem *m = (il_sem *)s;
    if (slot >= IL_SEG_SLOTS)
        return 0;
    uint64_t w = atomic_load_explicit(&m->word, memory_order_seq_cst);
    if (W_MARK(w) == slot + 1)
        return 1;
    if (W_MARK(w) != 0) {
        /* j_epoch is stored last (release) by the marker's owner; a taker
         * keeps the epoch and the journal. */
        if (atomic_load_explicit(&m->j_epoch, memory_order_acquire) != W_EPOCH(w) ||
            atomic_load_explicit(&m->j_slot, memory_order_acquire) == slot)
            return 1;
    }
    uint64_t r = atomic_load_explicit(&m->reserve, memory_order_seq_cst);
    if (RES_SLOT(r) == slot + 1)
        return 1;
    if (atomic_load_explicit(&m->held[slot], memory_order_seq_cst) != 0 ||
        atomic_load_explicit(&m->slp[slot], memory_order_seq_cst) != 0)
        return 1;
    return atomic_load_explicit(&m->word, memory_order_seq_cst) != w;
}

uint32_t il_sem_sleepers(const il_sem *s, uint32_t slot)
{
    if (slot >= IL_SEG_SLOTS)
        return 0;
    return atomic_load_explicit((_Atomic uint32_t *)&s->slp[slot], memory_order_acquire);
}

uint32_t il_sem_held(const il_sem *s, uint32_t slot)
{
    if (slot >= IL_SEG_SLOTS)
        return 0;
    return atomic_load_explicit((_Atomic uint32_t *)&s->held[slot], memory_order_acquire);
}

void il_sem_read_stats(const il_sem *s, il_sem_stats *st)
{
    il_sem *m = (il_sem *)s;
    st->acquisitions = atomic_load_explicit(&m->acquisitions, memory_order_relaxed);
    st->contentions = atomic_load_explicit(&m->contentions, memory_order_relaxed);
    st->recovered = atomic_load_explicit(&m->recovered, memory_order_relaxed);
    st->wakes = atomic_load_explicit(&m->wakes, memory_order_relaxed);
}
