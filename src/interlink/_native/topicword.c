/* topicword.c - publish/subscribe rings (see topicword.h, docs/design/topic.md). */
#include "topicword.h"

#include <limits.h>
#include <string.h>

#include "futex.h"
#include "il_common.h"
#include "proc.h"

#define CTRL_BYTES 256u
#define PUB_BYTES 128u
#define PAGE 4096u

typedef struct rec_hdr {
    uint32_t len;
    uint32_t flags;
    uint64_t seq;
} rec_hdr;

_Static_assert(sizeof(rec_hdr) == IL_TOPIC_REC_HDR, "record header is 16 bytes");

static inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static inline uint64_t rec_size(uint64_t len) { return IL_TOPIC_REC_HDR + round_up(len, 16); }

static inline il_topic_sub_hdr *sub_hdr(const il_topic *t, uint32_t s)
{
    return (il_topic_sub_hdr *)(t->subs + (uint64_t)s * t->sub_stride);
}

static inline _Atomic uint64_t *sub_cursor(const il_topic *t, uint32_t s, uint32_t p)
{
    return (_Atomic uint64_t *)(t->subs + (uint64_t)s * t->sub_stride + sizeof(il_topic_sub_hdr)) +
           p;
}

static inline uint8_t *ring_at(const il_topic *t, uint32_t p, uint64_t pos)
{
    return (uint8_t *)t->rings + (uint64_t)p * t->cap + (pos & (t->cap - 1));
}

static inline void read_hdr(const il_topic *t, uint32_t p, uint64_t pos, rec_hdr *h)
{
    memcpy(h, ring_at(t, p, pos), sizeof *h);
}

/* A header read from a stable position: is it a record that fits? */
static inline int hdr_ok(const il_topic *t, uint64_t pos, uint64_t head, const rec_hdr *h)
{
    if (h->len > t->cap - IL_TOPIC_REC_HDR || (h->flags & ~IL_TOPIC_REC_PAD) != 0)
        return 0;
    uint64_t size = rec_size(h->len);
    return (pos & (t->cap - 1)) + size <= t->cap && size <= head - pos;
}

/* ======================================================================= */
/* geometry                                                                */
/* ======================================================================= */

static uint64_t sub_stride_for(uint32_t npub)
{
    return round_up(sizeof(il_topic_sub_hdr) + 8u * (uint64_t)npub, 64);
}

static uint64_t meta_bytes(uint32_t npub, uint32_t nsub)
{
    return round_up(CTRL_BYTES + (uint64_t)PUB_BYTES * npub + sub_stride_for(npub) * nsub, PAGE);
}

uint64_t il_topic_size_for(uint32_t npub, uint32_t nsub, uint64_t ring_bytes, uint64_t *ring_out)
{
    if (npub < 1 || npub > IL_TOPIC_MAX_PUB || nsub < 1 || nsub > IL_TOPIC_MAX_SUB ||
        ring_bytes > IL_TOPIC_MAX_RING)
        return 0;
    uint64_t ring = IL_TOPIC_MIN_RING;
    while (ring < ring_bytes)
        ring <<= 1;
    if (ring_out)
        *ring_out = ring;
    return meta_bytes(npub, nsub) + ring * npub;
}

static void fill(il_topic *t, void *mem, uint32_t npub, uint32_t nsub, uint64_t ring,
                 uint32_t policy)
{
    t->c = (il_topic_ctrl *)mem;
    t->pubs = (il_topic_pub *)((char *)mem + CTRL_BYTES);
    t->subs = (char *)mem + CTRL_BYTES + (uint64_t)PUB_BYTES * npub;
    t->rings = (char *)mem + meta_bytes(npub, nsub);
    t->npub = npub;
    t->nsub = nsub;
    t->policy = policy;
    t->cap = ring;
    t->sub_stride = sub_stride_for(npub);
}

int il_topic_init(il_topic *t, void *mem, uint64_t len, uint32_t npub, uint32_t nsub,
                  uint64_t ring_bytes, uint32_t policy)
{
    uint64_t ring = 0;
    uint64_t total = il_topic_size_for(npub, nsub, ring_bytes, &ring);
    if (mem == NULL || total == 0 || total > len || policy > IL_TOPIC_BLOCK)
        return IL_INVALID;
    memset(mem, 0, meta_bytes(npub, nsub));
    il_topic_ctrl *c = (il_topic_ctrl *)mem;
    c->version = IL_TOPIC_VERSION;
    c->policy = policy;
    c->npub = npub;
    c->nsub = nsub;
    c->ring_bytes = ring;
    c->total = total;
    fill(t, mem, npub, nsub, ring, policy);
    atomic_store_explicit(&c->magic, IL_TOPIC_MAGIC, memory_order_release);
    return IL_OK;
}

int il_topic_attach(il_topic *t, void *mem, uint64_t len)
{
    if (mem == NULL || len < CTRL_BYTES)
        return IL_CORRUPT;
    il_topic_ctrl *c = (il_topic_ctrl *)mem;
    uint64_t magic = atomic_load_explicit(&c->magic, memory_order_acquire);
    if (magic == 0)
        return IL_INFLIGHT;
    if (magic != IL_TOPIC_MAGIC || c->version != IL_TOPIC_VERSION || c->policy > IL_TOPIC_BLOCK)
        return IL_CORRUPT;
    uint32_t npub = c->npub, nsub = c->nsub;
    uint64_t ring_bytes = c->ring_bytes, ring = 0;
    uint64_t total = il_topic_size_for(npub, nsub, ring_bytes, &ring);
    if (total == 0 || ring != ring_bytes || total != c->total || total > len)
        return IL_CORRUPT;
    fill(t, mem, npub, nsub, ring, c->policy);
    return IL_OK;
}

/* ======================================================================= */
/* publishers                                                              */
/* ======================================================================= */

static void raise_hwm(il_topic_ctrl *c, uint32_t n)
{
    uint32_t h = atomic_load_explicit(&c->pub_hwm, memory_order_acquire);
    while (h < n &&
           !atomic_compare_exchange_weak_explicit(&c->pub_hwm, &h, n, memory_order_seq_cst,
                                                  memory_order_acquire)) {
    }
}

/* Adopt slot p's ring: its head, tail and the next sequence number, found by
 * walking the records (a writer killed between its next_seq and head stores
 * leaves next_seq one ahead of the last visible record). */
static int adopt(il_topic_writer *w)
{
    il_topic *t = w->t;
    il_topic_pub *pb = &t->pubs[w->slot];
    uint64_t head = atomic_load_explicit(&pb->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&pb->tail, memory_order_acquire);
    uint64_t seq = atomic_load_explicit(&pb->next_seq, memory_order_acquire);
    if (tail > head || head - tail > t->cap || (head & 15u) || (tail & 15u))
        return IL_CORRUPT;
    uint64_t pos = tail;
    int found = 0;
    uint64_t last = 0;
    while (pos < head) {
        rec_hdr h;
        read_hdr(t, w->slot, pos, &h);
        if (!hdr_ok(t, pos, head, &h))
            return IL_CORRUPT;
        if (!(h.flags & IL_TOPIC_REC_PAD)) {
            last = h.seq;
            found = 1;
        }
        pos += rec_size(h.len);
    }
    if (found)
        seq = last + 1;
    atomic_store_explicit(&pb->next_seq, seq, memory_order_relaxed);
    w->head = head;
    w->tail = tail;
    w->seq = seq;
    w->minc = 0;
    return IL_OK;
}

int il_topic_pub_claim(il_topic *t, il_topic_writer *w, uint64_t ident)
{
    memset(w, 0, sizeof *w);
    w->t = t;
    w->ident = ident;
    uint32_t got = UINT32_MAX;
    for (uint32_t s = 0; s < t->npub && got == UINT32_MAX; s++) {
        uint64_t o = 0;
        if (atomic_compare_exchange_strong_explicit(&t->pubs[s].owner, &o, ident,
                                                    memory_order_seq_cst, memory_order_relaxed))
            got = s;
    }
    for (uint32_t s = 0; s < t->npub && got == UINT32_MAX; s++) {
        uint64_t o = atomic_load_explicit(&t->pubs[s].owner, memory_order_acquire);
        if (o != 0 && !il_ident_alive(il_ident_bare(o)) &&
            atomic_compare_exchange_strong_explicit(&t->pubs[s].owner, &o, ident,
                                                    memory_order_seq_cst, memory_order_relaxed))
            got = s;
    }
    if (got == UINT32_MAX)
        return IL_NOSLOT;
    w->slot = got;
    raise_hwm(t->c, got + 1);
    int rc = adopt(w);
    if (rc != IL_OK) {
        uint64_t mine = ident;
        atomic_compare_exchange_strong_explicit(&t->pubs[got].owner, &mine, 0,
                                                memory_order_seq_cst, memory_order_relaxed);
    }
    return rc;
}

void il_topic_pub_release(il_topic_writer *w)
{
    uint64_t mine = w->ident;
    atomic_compare_exchange_strong_explicit(&w->t->pubs[w->slot].owner, &mine, 0,
                                            memory_order_seq_cst, memory_order_relaxed);
}

/* BLOCK: the lowest cursor of the subscribers on this ring (w->tail when one
 * is joining or has a cursor behind tail: nothing may be overwritten). */
static uint64_t min_cursor(il_topic_writer *w, uint64_t tail)
{
    il_topic *t = w->t;
    uint64_t m = w->head;
    for (uint32_t s = 0; s < t->nsub; s++) {
        uint64_t o = atomic_load_explicit(&sub_hdr(t, s)->owner, memory_order_seq_cst);
        if (o == 0)
            continue;
        if (o & IL_TOPIC_JOINING)
            return tail;
        uint64_t cur = atomic_load_explicit(sub_cursor(t, s, w->slot), memory_order_seq_cst);
        if (cur > w->head)
            continue; /* garbage: cannot block us */
        if (cur < m)
            m = cur;
    }
    return m;
}

/* Move tail until `size` more bytes fit after head.  IL_OK, IL_FULL (BLOCK),
 * IL_CORRUPT. */
static int make_room(il_topic_writer *w, uint64_t size)
{
    il_topic *t = w->t;
    il_topic_pub *pb = &t->pubs[w->slot];
    uint64_t tail = w->tail;
    int rc = IL_OK;
    while (w->head + size - tail > t->cap) {
        rec_hdr h;
        read_hdr(t, w->slot, tail, &h);
        if (!hdr_ok(t, tail, w->head, &h)) {
            rc = IL_CORRUPT;
            break;
        }
        uint64_t nt = tail + rec_size(h.len);
        if (t->policy == IL_TOPIC_BLOCK && nt > w->minc) {
            w->minc = min_cursor(w, tail);
            if (nt > w->minc) {
                rc = IL_FULL;
                break;
            }
        }
        tail = nt;
    }
    if (tail != w->tail) {
        /* Readers validate their copies against tail: it must be visible
         * before any byte of the old records changes. */
        atomic_store_explicit(&pb->tail, tail, memory_order_seq_cst);
        atomic_thread_fence(memory_order_release);
        w->tail = tail;
    }
    return rc;
}

int il_topic_pub_reserve(il_topic_writer *w, uint64_t len, uint8_t **ptr)
{
    il_topic *t = w->t;
    if (len > il_topic_max_payload(t))
        return IL_TOOBIG;
    uint64_t size = rec_size(len);
    uint64_t off = w->head & (t->cap - 1);
    if (off + size > t->cap) {
        uint64_t pad = t->cap - off;
        int rc = make_room(w, pad);
        if (rc != IL_OK)
            return rc;
        rec_hdr h = {(uint32_t)(pad - IL_TOPIC_REC_HDR), IL_TOPIC_REC_PAD, 0};
        memcpy(ring_at(t, w->slot, w->head), &h, sizeof h);
        w->head += pad;
        atomic_store_explicit(&t->pubs[w->slot].head, w->head, memory_order_release);
    }
    int rc = make_room(w, size);
    if (rc != IL_OK)
        return rc;
    *ptr = ring_at(t, w->slot, w->head) + IL_TOPIC_REC_HDR;
    return IL_OK;
}

void il_topic_pub_commit(il_topic_writer *w, uint64_t len)
{
    il_topic *t = w->t;
    il_topic_pub *pb = &t->pubs[w->slot];
    rec_hdr h = {(uint32_t)len, 0, w->seq};
    memcpy(ring_at(t, w->slot, w->head), &h, sizeof h);
    w->seq++;
    w->head += rec_size(len);
    atomic_store_explicit(&pb->next_seq, w->seq, memory_order_relaxed);
    atomic_store_explicit(&pb->head, w->head, memory_order_release);
    /* Dekker with il_topic_sub_wait: head store, full fence, armed load.
     * One wake per arming, not one per message: a subscriber that was woken
     * but has not run yet is not woken again (it drains everything once it
     * runs), so a publisher ahead of sleeping subscribers makes no syscall
     * per message.  The exchange elects one waker among publishers. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&t->c->data_armed, memory_order_relaxed) != 0 &&
        atomic_exchange_explicit(&t->c->data_armed, 0, memory_order_seq_cst) != 0) {
        atomic_fetch_add_explicit(&t->c->data_seq, 1, memory_order_seq_cst);
        il_futex_wake(&t->c->data_seq, INT_MAX);
    }
}

int il_topic_pub_reserve_wait(il_topic_writer *w, uint64_t len, uint8_t **ptr, int64_t slice_ns)
{
    int rc = il_topic_pub_reserve(w, len, ptr);
    if (rc != IL_FULL)
        return rc;
    il_topic_ctrl *c = w->t->c;
    atomic_fetch_add_explicit(&c->space_sleepers, 1, memory_order_seq_cst);
    uint32_t snap = atomic_load_explicit(&c->space_seq, memory_order_seq_cst);
    w->minc = 0; /* rescan after registering */
    rc = il_topic_pub_reserve(w, len, ptr);
    if (rc == IL_FULL && slice_ns > 0) {
        if (il_futex_wait(&c->space_seq, snap, slice_ns) == IL_EINTR)
            rc = IL_EINTR;
    }
    atomic_fetch_sub_explicit(&c->space_sleepers, 1, memory_order_seq_cst);
    return rc;
}

static void wake_space(il_topic *t)
{
    atomic_fetch_add_explicit(&t->c->space_seq, 1, memory_order_seq_cst);
    il_futex_wake(&t->c->space_seq, INT_MAX);
}

uint32_t il_topic_reap_subs(il_topic *t)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < t->nsub; s++) {
        _Atomic uint64_t *ow = &sub_hdr(t, s)->owner;
        uint64_t o = atomic_load_explicit(ow, memory_order_acquire);
        if (o == 0 || il_ident_alive(il_ident_bare(o)))
            continue;
        if (atomic_compare_exchange_strong_explicit(ow, &o, 0, memory_order_seq_cst,
                                                    memory_order_relaxed))
            n++;
    }
    if (n) {
        atomic_fetch_add_explicit(&t->c->reaped, n, memory_order_relaxed);
        wake_space(t);
    }
    return n;
}

/* ======================================================================= */
/* subscribers                                                             */
/* ======================================================================= */

static uint32_t claim_sub(il_topic *t, uint64_t ident)
{
    uint64_t want = ident | IL_TOPIC_JOINING;
    for (uint32_t s = 0; s < t->nsub; s++) {
        uint64_t o = 0;
        if (atomic_compare_exchange_strong_explicit(&sub_hdr(t, s)->owner, &o, want,
                                                    memory_order_seq_cst, memory_order_relaxed))
            return s;
    }
    for (uint32_t s = 0; s < t->nsub; s++) {
        _Atomic uint64_t *ow = &sub_hdr(t, s)->owner;
        uint64_t o = atomic_load_explicit(ow, memory_order_acquire);
        if (o != 0 && !il_ident_alive(il_ident_bare(o)) &&
            atomic_compare_exchange_strong_explicit(ow, &o, want, memory_order_seq_cst,
                                                    memory_order_relaxed))
            return s;
    }
    return UINT32_MAX;
}

/* Where a new reader starts on ring p: head, or the record `history`
 * messages before it.  *expect: the next sequence number, or UINT64_MAX when
 * starting inside the history (the first record read sets it). */
static int start_of(il_topic *t, uint32_t p, uint64_t history, uint64_t *start, uint64_t *expect)
{
    il_topic_pub *pb = &t->pubs[p];
    for (int attempt = 0; attempt < 16; attempt++) {
        uint64_t tail = atomic_load_explicit(&pb->tail, memory_order_acquire);
        uint64_t head = atomic_load_explicit(&pb->head, memory_order_acquire);
        uint64_t ns = atomic_load_explicit(&pb->next_seq, memory_order_acquire);
        if (tail > head || head - tail > t->cap) {
            if (t->policy == IL_TOPIC_BLOCK && attempt > 0)
                return IL_CORRUPT;
            continue; /* the writer moved on between the loads */
        }
        if ((head & 15u) || (tail & 15u))
            return IL_CORRUPT;
        *start = head;
        *expect = ns;
        if (history == 0 || head == tail)
            return IL_OK;
        uint64_t want = ns > history ? ns - history : 0;
        uint64_t pos = tail;
        int lapped = 0;
        while (pos < head) {
            rec_hdr h;
            read_hdr(t, p, pos, &h);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&pb->tail, memory_order_relaxed) > pos) {
                lapped = 1; /* overwritten while we looked: start over */
                break;
            }
            if (!hdr_ok(t, pos, head, &h))
                return IL_CORRUPT;
            if (!(h.flags & IL_TOPIC_REC_PAD) && h.seq >= want) {
                *start = pos;
                *expect = UINT64_MAX;
                return IL_OK;
            }
            pos += rec_size(h.len);
        }
        if (!lapped)
            return IL_OK; /* no record recent enough: start at head */
    }
    /* A writer lapping us on every attempt: start at head. */
    *start = atomic_load_explicit(&pb->head, memory_order_acquire);
    *expect = atomic_load_explicit(&pb->next_seq, memory_order_acquire);
    return IL_OK;
}

int il_topic_sub_join(il_topic *t, il_topic_reader *r, uint64_t ident, uint64_t history)
{
    memset(r, 0, sizeof *r);
    r->t = t;
    r->ident = ident;
    uint32_t s = claim_sub(t, ident);
    if (s == UINT32_MAX)
        return IL_NOSLOT;
    r->slot = s;
    il_topic_sub_hdr *sh = sub_hdr(t, s);
    atomic_store_explicit(&sh->lost, 0, memory_order_relaxed);
    atomic_store_explicit(&sh->received, 0, memory_order_relaxed);
    for (uint32_t p = 0; p < t->npub; p++) {
        int rc = start_of(t, p, history, &r->pos[p], &r->expect[p]);
        if (rc != IL_OK) {
            atomic_store_explicit(&sh->owner, 0, memory_order_seq_cst);
            return rc;
        }
        atomic_store_explicit(sub_cursor(t, s, p), r->pos[p], memory_order_seq_cst);
        r->shared[p] = r->pos[p];
    }
    atomic_store_explicit(&sh->owner, ident, memory_order_seq_cst);
    /* A publisher that scanned the table before our claim may have moved one
     * tail past a history start meanwhile: start at the tail then. */
    for (uint32_t p = 0; p < t->npub; p++) {
        uint64_t tail = atomic_load_explicit(&t->pubs[p].tail, memory_order_seq_cst);
        if (tail > r->pos[p]) {
            r->pos[p] = tail;
            r->shared[p] = tail;
            r->expect[p] = UINT64_MAX;
            atomic_store_explicit(sub_cursor(t, s, p), tail, memory_order_seq_cst);
        }
        /* A publisher that scanned before our claim may still move one tail
         * over records up to its head of then: no views below today's head. */
        r->view_from[p] = atomic_load_explicit(&t->pubs[p].head, memory_order_seq_cst);
    }
    return IL_OK;
}

void il_topic_sub_leave(il_topic_reader *r)
{
    il_topic *t = r->t;
    uint64_t mine = r->ident;
    atomic_compare_exchange_strong_explicit(&sub_hdr(t, r->slot)->owner, &mine, 0,
                                            memory_order_seq_cst, memory_order_relaxed);
    if (t->policy == IL_TOPIC_BLOCK &&
        atomic_load_explicit(&t->c->space_sleepers, memory_order_seq_cst) != 0)
        wake_space(t);
}

/* Publish this reader's cursor on ring p: its read position, or its oldest
 * held record.  Under BLOCK the store is lazy: only when the cursor crosses a
 * 1/64 of the ring, catches up with head, or `force` (a release, a reader
 * about to sleep) -- publishers read cursors only when the ring is full, and
 * a stale cursor only makes them more careful.  Saves a contended store and
 * the publishers' rescans per message. */
static void publish_cursor(il_topic_reader *r, uint32_t p, int force)
{
    il_topic *t = r->t;
    uint64_t cur = r->nheld[p] ? r->held[p][0] : r->pos[p];
    uint64_t old = r->shared[p];
    if (cur == old)
        return;
    if (t->policy == IL_TOPIC_BLOCK) {
        uint64_t head = atomic_load_explicit(&t->pubs[p].head, memory_order_relaxed);
        if (!force && cur != head && ((old ^ cur) & ~((t->cap >> 6) - 1)) == 0)
            return;
        r->shared[p] = cur;
        /* Dekker with il_topic_pub_reserve_wait: cursor store, sleeper load.
         * A blocked publisher is woken when this cursor crosses an eighth of
         * the ring or catches up with head -- not after every record: one
         * wake per batch instead of a futex call per message (a publisher
         * that needs room waits for the slowest subscriber, and that one
         * crosses a boundary or drains the ring; slices bound the rest). */
        atomic_store_explicit(sub_cursor(t, r->slot, p), cur, memory_order_seq_cst);
        if (force || cur == head || ((old ^ cur) & ~((t->cap >> 3) - 1)) != 0) {
            if (atomic_load_explicit(&t->c->space_sleepers, memory_order_seq_cst) != 0)
                wake_space(t);
        }
    } else {
        r->shared[p] = cur;
        atomic_store_explicit(sub_cursor(t, r->slot, p), cur, memory_order_relaxed);
    }
}

static void advance(il_topic_reader *r, uint32_t p, uint64_t np)
{
    r->pos[p] = np;
    publish_cursor(r, p, 0);
}

int il_topic_sub_peek(il_topic_reader *r, il_topic_rec *m)
{
    il_topic *t = r->t;
    uint32_t hwm = atomic_load_explicit(&t->c->pub_hwm, memory_order_acquire);
    if (hwm > t->npub)
        return IL_CORRUPT;
    for (uint32_t i = 0; i < hwm; i++) {
        uint32_t p = (r->rr + i) % hwm;
        il_topic_pub *pb = &t->pubs[p];
        for (int guard = 0; guard < 1000000; guard++) {
            uint64_t pos = r->pos[p];
            /* The head seen last time, while we are behind it: the publisher's
             * line is read once per batch, not once per record (it writes
             * that line on every commit). */
            uint64_t head = r->seen[p];
            if (pos >= head) {
                head = atomic_load_explicit(&pb->head, memory_order_acquire);
                if (pos == head)
                    break;
                if (head < pos || (head & 15u))
                    return IL_CORRUPT;
            }
            /* Under BLOCK no publisher moves tail past a live subscriber's
             * cursor once it has joined (view_from, see il_topic_sub_join):
             * no tail checks there.  Below view_from, and under DROP, every
             * read is validated against tail. */
            int checked = t->policy != IL_TOPIC_BLOCK || pos < r->view_from[p];
            uint64_t tail = checked ? atomic_load_explicit(&pb->tail, memory_order_acquire) : 0;
            if (pos < tail) {
                /* tail never passes head; our head may be older than tail */
                if (tail > head)
                    head = atomic_load_explicit(&pb->head, memory_order_acquire);
                if (tail > head || (tail & 15u))
                    return IL_CORRUPT;
                advance(r, p, tail); /* lapped: the sequence numbers count the loss */
                continue;
            }
            if (head - pos > t->cap)
                return IL_CORRUPT;
            r->seen[p] = head; /* validated */
            rec_hdr h;
            read_hdr(t, p, pos, &h);
            atomic_thread_fence(memory_order_acquire);
            if (checked && atomic_load_explicit(&pb->tail, memory_order_relaxed) > pos)
                continue; /* overwritten while read */
            if (!hdr_ok(t, pos, head, &h))
                return IL_CORRUPT;
            uint64_t size = rec_size(h.len);
            if (h.flags & IL_TOPIC_REC_PAD) {
                advance(r, p, pos + size);
                continue;
            }
            m->ring = p;
            m->len = h.len;
            m->pos = pos;
            m->size = size;
            m->seq = h.seq;
            m->ptr = ring_at(t, p, pos) + IL_TOPIC_REC_HDR;
            r->rr = (p + 1) % hwm;
            return IL_OK;
        }
    }
    return IL_EMPTY;
}

static int take(il_topic_reader *r, const il_topic_rec *m, int hold)
{
    il_topic *t = r->t;
    uint32_t p = m->ring;
    if (t->policy != IL_TOPIC_BLOCK || m->pos < r->view_from[p]) { /* see peek */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&t->pubs[p].tail, memory_order_relaxed) > m->pos)
            return IL_TOPIC_LAPPED; /* the next peek jumps to tail */
    }
    uint64_t ex = r->expect[p];
    if (ex != UINT64_MAX && m->seq > ex) {
        r->lost += m->seq - ex;
        atomic_store_explicit(&sub_hdr(t, r->slot)->lost, r->lost, memory_order_relaxed);
    }
    r->expect[p] = m->seq + 1;
    r->received++;
    if (hold)
        r->held[p][r->nheld[p]++] = m->pos; /* positions grow: the list stays sorted */
    advance(r, p, m->pos + m->size);
    return IL_OK;
}

int il_topic_sub_consume(il_topic_reader *r, const il_topic_rec *m) { return take(r, m, 0); }

int il_topic_sub_can_hold(const il_topic_reader *r, const il_topic_rec *m)
{
    return r->t->policy == IL_TOPIC_BLOCK && m->ring < r->t->npub &&
           m->pos >= r->view_from[m->ring] && r->nheld[m->ring] < IL_TOPIC_HOLD_MAX;
}

int il_topic_sub_consume_hold(il_topic_reader *r, const il_topic_rec *m)
{
    return take(r, m, il_topic_sub_can_hold(r, m));
}

void il_topic_sub_release(il_topic_reader *r, uint32_t ring, uint64_t pos)
{
    if (ring >= r->t->npub)
        return;
    uint32_t n = r->nheld[ring];
    for (uint32_t i = 0; i < n; i++) {
        if (r->held[ring][i] == pos) {
            memmove(&r->held[ring][i], &r->held[ring][i + 1], (n - i - 1) * sizeof(uint64_t));
            r->nheld[ring] = n - 1;
            publish_cursor(r, ring, 1);
            return;
        }
    }
}

int il_topic_sub_ready(const il_topic_reader *r)
{
    il_topic *t = r->t;
    uint32_t hwm = atomic_load_explicit(&t->c->pub_hwm, memory_order_acquire);
    if (hwm > t->npub)
        hwm = t->npub;
    for (uint32_t p = 0; p < hwm; p++)
        if (atomic_load_explicit(&t->pubs[p].head, memory_order_acquire) != r->pos[p])
            return 1;
    return 0;
}

int il_topic_sub_wait(il_topic_reader *r, int64_t slice_ns)
{
    il_topic_ctrl *c = r->t->c;
    uint32_t hwm = atomic_load_explicit(&c->pub_hwm, memory_order_acquire);
    for (uint32_t p = 0; p < hwm && p < r->t->npub; p++)
        publish_cursor(r, p, 1); /* exact cursors while we sleep */
    /* Arm, then snapshot the futex word, then re-check (Dekker with
     * il_topic_pub_commit).  A publisher that disarmed before our arming
     * store bumps data_seq after its exchange: either our snapshot sees the
     * bump (its head store precedes it: the re-check finds the record) or
     * the wait returns at once.  The flag is left set on the way out (a
     * timed-out sleeper costs the next commit one spare wake). */
    atomic_store_explicit(&c->data_armed, 1, memory_order_seq_cst);
    uint32_t snap = atomic_load_explicit(&c->data_seq, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    int rc = IL_OK;
    if (!il_topic_sub_ready(r))
        rc = slice_ns > 0 ? il_futex_wait(&c->data_seq, snap, slice_ns) : IL_TIMEOUT;
    return rc;
}

void il_topic_counts(const il_topic *t, uint32_t *pubs, uint32_t *subs)
{
    uint32_t np = 0, ns = 0;
    for (uint32_t p = 0; p < t->npub; p++) {
        uint64_t o = atomic_load_explicit(&t->pubs[p].owner, memory_order_acquire);
        if (o && il_ident_alive(il_ident_bare(o)))
            np++;
    }
    for (uint32_t s = 0; s < t->nsub; s++) {
        uint64_t o = atomic_load_explicit(&sub_hdr(t, s)->owner, memory_order_acquire);
        if (o && il_ident_alive(il_ident_bare(o)))
            ns++;
    }
    *pubs = np;
    *subs = ns;
}
