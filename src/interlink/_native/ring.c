/* ring.c - many-writer, one-reader variable-size message ring (see ring.h). */
#include "ring.h"

#include <limits.h>
#include <string.h>

#include "futex.h"
#include "il_common.h"
#include "proc.h"

#define STATE_MASK UINT64_C(15)

static inline il_record *rec_at(const il_ring *r, uint64_t pos)
{
    return (il_record *)(r->data + (pos & r->mask));
}

static inline uint64_t stamp_of(const il_ring *r, uint64_t pos, unsigned state)
{
    return (pos | state) ^ r->key;
}

static inline uint32_t nslots(const il_ring *r)
{
    uint32_t n = r->hdr->nslots;
    return n > IL_SEG_SLOTS ? IL_SEG_SLOTS : n;
}

/* Record meta: slot index (bits 0..7), the record's tail padding (bits 8..11:
 * record size - header - payload, 0..15, set at commit) and 20 bits of the
 * holder's identity (bits 12..31), so that a slot reused by another process
 * is not taken for the record's writer. */
#define META_SLOT(m) ((m) & 0xFFu)
#define META_TAILPAD(m) (((m) >> 8) & 0xFu)
#define META_TAG(m) ((m) >> 12)

static uint32_t ident_tag(uint64_t word)
{
    return (uint32_t)((il_ident_bare(word) * UINT64_C(0x9E3779B97F4A7C15)) >> 44);
}

static uint32_t writer_tag(const il_ring *r, uint32_t slot)
{
    uint64_t word = atomic_load_explicit(&r->hdr->slots[slot].ident, memory_order_relaxed);
    return slot | (ident_tag(word) << 12);
}

uint64_t il_ring_segment_size(uint64_t capacity)
{
    return (uint64_t)IL_RING_DATA_OFFSET + capacity;
}

static int capacity_ok(uint64_t capacity)
{
    return capacity >= IL_RING_MIN_CAPACITY && capacity <= IL_RING_MAX_CAPACITY &&
           (capacity & (capacity - 1)) == 0;
}

int il_ring_format(void *base, uint64_t size, uint64_t capacity, uint64_t key)
{
    if (!capacity_ok(capacity) || size < il_ring_segment_size(capacity))
        return IL_INVALID;
    il_ring_ctrl *c = (il_ring_ctrl *)((uint8_t *)base + IL_SEG_HEADER_SIZE);
    memset((void *)c, 0, IL_RING_CTRL_SIZE);
    c->capacity = capacity;
    c->key = key;
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        atomic_store_explicit(&c->intents[i].pos, IL_INTENT_NONE, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    return IL_OK;
}

int il_ring_bind(il_ring *r, void *base, uint64_t size)
{
    if (size < IL_RING_DATA_OFFSET)
        return IL_CORRUPT;
    il_seg_header *h = (il_seg_header *)base;
    il_ring_ctrl *c = (il_ring_ctrl *)((uint8_t *)base + IL_SEG_HEADER_SIZE);
    uint64_t cap = c->capacity;
    if (!capacity_ok(cap) || il_ring_segment_size(cap) != size || c->key != h->key ||
        h->nslots == 0 || h->nslots > IL_SEG_SLOTS)
        return IL_CORRUPT;
    r->hdr = h;
    r->ctrl = c;
    r->data = (uint8_t *)base + IL_RING_DATA_OFFSET;
    r->cap = cap;
    r->mask = cap - 1;
    r->key = c->key;
    r->cached_read = atomic_load_explicit(&c->read_pos, memory_order_acquire);
    r->head = r->rpos = r->published = r->cached_read;
    return IL_OK;
}

/* ---- writer ------------------------------------------------------------ */

static void wake_reader_if_sleeping(il_ring_ctrl *c)
{
    if (atomic_load_explicit(&c->reader_sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&c->reader_sleeping, 0, memory_order_seq_cst)) {
        atomic_fetch_add_explicit(&c->reader_seq, 1, memory_order_release);
        il_futex_wake(&c->reader_seq, INT_MAX);
    }
}

void il_ring_notify_reader(il_ring *r)
{
    atomic_thread_fence(memory_order_seq_cst);
    wake_reader_if_sleeping(r->ctrl);
}

int il_ring_reserve(il_ring *r, uint32_t slot, uint64_t len, uint64_t *pos, uint8_t **payload)
{
    if (slot >= nslots(r))
        return IL_INVALID;
    if (len > il_ring_max_payload(r))
        return IL_TOOBIG;
    il_ring_ctrl *c = r->ctrl;
    il_intent *in = &c->intents[slot];
    const uint64_t need = il_rec_size(len);
    uint64_t w = atomic_load_explicit(&c->write_pos, memory_order_relaxed);
    int refreshed = 0;
    for (;;) {
        if ((w & STATE_MASK) != 0)
            return IL_CORRUPT;
        uint64_t tail = r->cap - (w & r->mask);
        int is_pad = need > tail;
        uint64_t take = is_pad ? tail : need;
        if (w - r->cached_read > r->cap || w + take - r->cached_read > r->cap) {
            if (refreshed)
                return IL_FULL;
            /* write_pos first: read_pos loaded after it is at least what it was
             * then, so w - rp <= cap, unless the reader has meanwhile passed w
             * (then w is stale: look again). */
            uint64_t rp;
            int tries = 0;
            for (;;) {
                w = atomic_load_explicit(&c->write_pos, memory_order_acquire);
                rp = atomic_load_explicit(&c->read_pos, memory_order_acquire);
                if (rp <= w || ++tries > 64)
                    break;
            }
            if (w - rp > r->cap || ((rp | w) & STATE_MASK) != 0)
                return IL_CORRUPT;
            r->cached_read = rp;
            refreshed = 1;
            continue;
        }
        atomic_store_explicit(&in->len, (uint32_t)take, memory_order_relaxed);
        atomic_store_explicit(&in->pos, w, memory_order_release);
        if (!atomic_compare_exchange_weak_explicit(&c->write_pos, &w, w + take,
                                                   memory_order_acq_rel, memory_order_acquire)) {
            /* Lost the race: the position is not ours; a dead winner there must
             * not look like a live writer's. */
            atomic_store_explicit(&in->pos, IL_INTENT_NONE, memory_order_release);
            refreshed = 0;
            continue;
        }
        il_record *h = rec_at(r, w);
        atomic_store_explicit(&h->len, (uint32_t)take, memory_order_relaxed);
        atomic_store_explicit(&h->meta, writer_tag(r, slot), memory_order_relaxed);
        if (is_pad) {
            atomic_store_explicit(&h->stamp, stamp_of(r, w, IL_ST_PAD), memory_order_release);
            il_ring_notify_reader(r); /* let it free the pad's bytes */
            w += take;
            refreshed = 0;
            continue;
        }
        atomic_store_explicit(&h->stamp, stamp_of(r, w, IL_ST_RESERVED), memory_order_release);
        *pos = w;
        *payload = (uint8_t *)(h + 1);
        return IL_OK;
    }
}

void il_ring_commit(il_ring *r, uint64_t pos, uint64_t reserved, uint64_t len)
{
    /* A writer may die between any two of these stores; the record stays
     * RESERVED until the stamp, and its len must always be a record size
     * that the reader can skip: the inner pad first, then the shorter size. */
    il_record *h = rec_at(r, pos);
    uint64_t full = il_rec_size(reserved);
    uint64_t used = il_rec_size(len);
    uint32_t meta = atomic_load_explicit(&h->meta, memory_order_relaxed);
    if (used < full) {
        il_record *p = rec_at(r, pos + used);
        atomic_store_explicit(&p->len, (uint32_t)(full - used), memory_order_relaxed);
        atomic_store_explicit(&p->meta, meta & ~(0xFu << 8), memory_order_relaxed);
        atomic_store_explicit(&p->stamp, stamp_of(r, pos + used, IL_ST_PAD),
                              memory_order_release);
        atomic_store_explicit(&h->len, (uint32_t)used, memory_order_release);
    }
    uint32_t tailpad = (uint32_t)(used - IL_REC_HDR - len);
    atomic_store_explicit(&h->meta, (meta & ~(0xFu << 8)) | (tailpad << 8), memory_order_relaxed);
    /* seq_cst exchange: publishes the record (release) and is a full barrier,
     * so il_ring_notify_reader_after_commit needs no fence of its own. */
    atomic_exchange_explicit(&h->stamp, stamp_of(r, pos, IL_ST_COMMITTED), memory_order_seq_cst);
}

void il_ring_notify_reader_after_commit(il_ring *r)
{
    wake_reader_if_sleeping(r->ctrl);
}

void il_ring_abort(il_ring *r, uint64_t pos, uint64_t reserved)
{
    il_record *h = rec_at(r, pos);
    atomic_store_explicit(&h->len, (uint32_t)il_rec_size(reserved), memory_order_relaxed);
    atomic_store_explicit(&h->stamp, stamp_of(r, pos, IL_ST_PAD), memory_order_release);
}

void il_ring_clear_intent(il_ring *r, uint32_t slot)
{
    if (slot < nslots(r))
        atomic_store_explicit(&r->ctrl->intents[slot].pos, IL_INTENT_NONE,
                              memory_order_release);
}

/* ---- reader ------------------------------------------------------------ */

void il_ring_reader_start(il_ring *r)
{
    r->rpos = r->head = r->published =
        atomic_load_explicit(&r->ctrl->read_pos, memory_order_acquire);
}

void il_ring_reader_flush(il_ring *r)
{
    il_ring_ctrl *c = r->ctrl;
    if (r->rpos != r->published) {
        /* A seq_cst exchange orders this store before the flag load below as a
         * fence would, and costs less than store + mfence on x86. */
        r->published = r->rpos;
        atomic_exchange_explicit(&c->read_pos, r->rpos, memory_order_seq_cst);
    } else {
        atomic_thread_fence(memory_order_seq_cst);
    }
    if (atomic_load_explicit(&c->space_wanted, memory_order_relaxed) &&
        atomic_exchange_explicit(&c->space_wanted, 0, memory_order_seq_cst)) {
        atomic_fetch_add_explicit(&c->space_seq, 1, memory_order_release);
        il_futex_wake(&c->space_seq, INT_MAX);
    }
}

static void advance_read(il_ring *r, uint64_t to)
{
    /* Published at once: a writer that starts waiting after this release must
     * see the room, and a receiver that crashes later must not deliver again
     * what it released.  Writers read read_pos only when their cached copy
     * says the ring is full, so the line mostly stays on the reader's core. */
    r->rpos = to;
    il_ring_reader_flush(r);
}

/* Size of a record that the reader may skip (PAD or RELEASED at pos), or 0. */
static uint64_t skippable_size(const il_ring *r, uint64_t pos, uint64_t limit)
{
    il_record *h = rec_at(r, pos);
    uint64_t s = atomic_load_explicit(&h->stamp, memory_order_acquire) ^ r->key;
    if ((s & ~STATE_MASK) != pos)
        return 0;
    uint64_t size = atomic_load_explicit(&h->len, memory_order_relaxed);
    if ((s & STATE_MASK) != IL_ST_PAD && (s & STATE_MASK) != IL_ST_RELEASED)
        return 0;
    uint64_t room = r->cap - (pos & r->mask);
    if (size == 0 || (size & STATE_MASK) != 0 || size > room || size > limit - pos)
        return 0;
    return size;
}

int il_ring_peek(il_ring *r, uint64_t *pos, const uint8_t **payload, uint64_t *len)
{
    for (;;) {
        uint64_t h = r->head;
        uint64_t w = atomic_load_explicit(&r->ctrl->write_pos, memory_order_acquire);
        if (w == h)
            return IL_EMPTY;
        if (w - h > r->cap || ((w | h) & STATE_MASK) != 0)
            return IL_CORRUPT;
        il_record *rec = rec_at(r, h);
        uint64_t s = atomic_load_explicit(&rec->stamp, memory_order_acquire) ^ r->key;
        if ((s & ~STATE_MASK) != h)
            return IL_INFLIGHT; /* reservation made, header not written yet */
        uint64_t n = atomic_load_explicit(&rec->len, memory_order_relaxed);
        uint64_t room = r->cap - (h & r->mask);
        uint64_t size;
        switch ((unsigned)(s & STATE_MASK)) {
        case IL_ST_COMMITTED: {
            /* len is the record size; the payload is shorter by the header and
             * the tail padding kept in meta. */
            uint32_t tailpad = META_TAILPAD(atomic_load_explicit(&rec->meta, memory_order_relaxed));
            size = n;
            if (size < IL_REC_HDR + tailpad || (size & STATE_MASK) != 0 || size > room ||
                size > w - h)
                return IL_CORRUPT;
            *pos = h;
            *payload = (const uint8_t *)(rec + 1);
            *len = size - IL_REC_HDR - tailpad;
            r->head = h + size;
            return IL_OK;
        }
        case IL_ST_PAD:
        case IL_ST_RELEASED:
            size = skippable_size(r, h, w);
            if (size == 0)
                return IL_CORRUPT;
            r->head = h + size;
            if (r->rpos == h)
                advance_read(r, r->head);
            continue;
        case IL_ST_RESERVED:
            return IL_INFLIGHT;
        default:
            return IL_CORRUPT;
        }
    }
}

void il_ring_release(il_ring *r, uint64_t pos, uint64_t len)
{
    if (pos != r->rpos) {
        il_record *h = rec_at(r, pos);
        atomic_store_explicit(&h->stamp, stamp_of(r, pos, IL_ST_RELEASED), memory_order_release);
        return;
    }
    uint64_t p = pos + il_rec_size(len);
    while (p != r->head) {
        uint64_t size = skippable_size(r, p, r->head);
        if (size == 0)
            break;
        p += size;
    }
    advance_read(r, p);
}

int il_ring_readable(const il_ring *r, uint64_t head)
{
    uint64_t w = atomic_load_explicit(&r->ctrl->write_pos, memory_order_acquire);
    if (w == head)
        return 0;
    il_record *rec = rec_at(r, head);
    uint64_t s = atomic_load_explicit(&rec->stamp, memory_order_acquire) ^ r->key;
    if ((s & ~STATE_MASK) != head)
        return 0;
    return (s & STATE_MASK) != IL_ST_RESERVED;
}

static int slot_alive(const il_ring *r, uint32_t slot)
{
    if (slot >= nslots(r))
        return 0;
    uint64_t word = atomic_load_explicit(&r->hdr->slots[slot].ident, memory_order_acquire);
    return word != 0 && il_ident_alive(word);
}

/* Does a record boundary plausibly sit at pos (for telling two dead candidates apart)? */
static int boundary_at(const il_ring *r, uint64_t pos, uint64_t w)
{
    if (pos == w)
        return 1;
    if (pos > w || (pos & STATE_MASK) != 0)
        return 0;
    il_record *h = rec_at(r, pos);
    uint64_t s = atomic_load_explicit(&h->stamp, memory_order_acquire) ^ r->key;
    if ((s & ~STATE_MASK) == pos)
        return 1;
    for (uint32_t i = 0; i < nslots(r); i++)
        if (atomic_load_explicit(&r->ctrl->intents[i].pos, memory_order_acquire) == pos)
            return 1;
    return 0;
}

static void make_pad(il_ring *r, uint64_t pos, uint64_t size)
{
    il_record *h = rec_at(r, pos);
    atomic_store_explicit(&h->len, (uint32_t)size, memory_order_relaxed);
    atomic_store_explicit(&h->stamp, stamp_of(r, pos, IL_ST_PAD), memory_order_release);
    atomic_fetch_add_explicit(&r->ctrl->skipped, 1, memory_order_relaxed);
}

int il_ring_resolve_stuck(il_ring *r)
{
    uint64_t h = r->head;
    uint64_t w = atomic_load_explicit(&r->ctrl->write_pos, memory_order_acquire);
    if (w == h)
        return IL_OK;
    if (w - h > r->cap)
        return IL_CORRUPT;
    uint64_t room = r->cap - (h & r->mask);
    if (w - h < room)
        room = w - h;
    il_record *rec = rec_at(r, h);
    uint64_t s = atomic_load_explicit(&rec->stamp, memory_order_acquire) ^ r->key;
    if ((s & ~STATE_MASK) == h) {
        if ((s & STATE_MASK) != IL_ST_RESERVED)
            return IL_OK;
        uint32_t meta = atomic_load_explicit(&rec->meta, memory_order_relaxed);
        uint32_t slot = META_SLOT(meta);
        uint64_t size = atomic_load_explicit(&rec->len, memory_order_relaxed);
        if (size == 0 || (size & STATE_MASK) != 0 || size > room)
            return IL_CORRUPT;
        if (slot_alive(r, slot) &&
            ident_tag(atomic_load_explicit(&r->hdr->slots[slot].ident, memory_order_acquire)) ==
                META_TAG(meta))
            return IL_INFLIGHT;
        /* The writer is dead; it cannot commit any more, so the record is ours. */
        make_pad(r, h, size);
        return IL_OK;
    }
    /* No header yet: find who reserved h from the intents published before the CAS. */
    enum { MAXC = 8 };
    uint64_t lens[MAXC];
    int ncand = 0;
    for (uint32_t i = 0; i < nslots(r); i++) {
        if (atomic_load_explicit(&r->ctrl->intents[i].pos, memory_order_acquire) != h)
            continue;
        if (slot_alive(r, i))
            return IL_INFLIGHT;
        uint64_t len = atomic_load_explicit(&r->ctrl->intents[i].len, memory_order_relaxed);
        int seen = 0;
        for (int k = 0; k < ncand; k++)
            seen |= lens[k] == len;
        if (!seen && ncand < MAXC)
            lens[ncand++] = len;
    }
    /* A writer may have finished meanwhile: look again before judging. */
    s = atomic_load_explicit(&rec->stamp, memory_order_acquire) ^ r->key;
    if ((s & ~STATE_MASK) == h)
        return IL_OK;
    uint64_t size = 0;
    int chosen = 0;
    for (int k = 0; k < ncand; k++) {
        uint64_t len = lens[k];
        if (len == 0 || (len & STATE_MASK) != 0 || len > room)
            continue;
        if (ncand == 1 || boundary_at(r, h + len, w)) {
            size = len;
            chosen++;
        }
    }
    if (chosen != 1)
        return IL_CORRUPT;
    make_pad(r, h, size);
    return IL_OK;
}

/* ---- both -------------------------------------------------------------- */

static int pending_expired(const il_ring *r, uint32_t i, uint64_t word, uint64_t now_ms);

uint32_t il_ring_reclaim_dead(il_ring *r)
{
    il_ring_ctrl *c = r->ctrl;
    uint32_t freed = 0, stripped = 0;
    uint64_t now_ms = il_boottime_ms();
    for (uint32_t i = 0; i < nslots(r); i++) {
        uint64_t word = atomic_load_explicit(&r->hdr->slots[i].ident, memory_order_acquire);
        if (word == 0)
            continue;
        if (pending_expired(r, i, word, now_ms)) {
            /* Lent, never adopted: it never reserved anything. */
            if (atomic_compare_exchange_strong_explicit(&r->hdr->slots[i].ident, &word, 0,
                                                        memory_order_acq_rel,
                                                        memory_order_relaxed))
                freed++;
            continue;
        }
        if (il_ident_alive(word))
            continue;
        /* Dead: its intent is final.  Load the cursors only now. */
        uint64_t rp = atomic_load_explicit(&c->read_pos, memory_order_acquire);
        uint64_t w = atomic_load_explicit(&c->write_pos, memory_order_acquire);
        uint64_t ip = atomic_load_explicit(&c->intents[i].pos, memory_order_acquire);
        int settled = ip == IL_INTENT_NONE || ip < rp || ip >= w;
        if (!settled) {
            /* Keep the slot (its record may still need attributing) but it
             * sends no more: end-of-stream must not wait for it. */
            if (il_ident_roles(word) & IL_ROLE_SENDER) {
                uint64_t bare = il_ident_bare(word);
                if (atomic_compare_exchange_strong_explicit(&r->hdr->slots[i].ident, &word, bare,
                                                            memory_order_acq_rel,
                                                            memory_order_relaxed))
                    stripped++;
            }
            continue;
        }
        /* Clear the intent first: once the slot is free a new holder's intent
         * must not be wiped. */
        atomic_store_explicit(&c->intents[i].pos, IL_INTENT_NONE, memory_order_release);
        if (atomic_compare_exchange_strong_explicit(&r->hdr->slots[i].ident, &word, 0,
                                                    memory_order_acq_rel, memory_order_relaxed))
            freed++;
    }
    uint64_t rid = atomic_load_explicit(&c->receiver, memory_order_acquire);
    if (rid != 0 && !il_ident_alive(rid) &&
        atomic_compare_exchange_strong_explicit(&c->receiver, &rid, 0, memory_order_acq_rel,
                                                memory_order_relaxed))
        freed++;
    if (freed || stripped)
        il_ring_wake_all(r); /* waiters re-evaluate end-of-stream and room */
    return freed;
}

static int pending_expired(const il_ring *r, uint32_t i, uint64_t word, uint64_t now_ms)
{
    if (!(il_ident_roles(word) & IL_ROLE_PENDING))
        return 0;
    uint64_t aux = atomic_load_explicit(&r->hdr->slots[i].aux, memory_order_relaxed);
    return (aux >> 16) <= now_ms || (aux & 0xffff) == 0;
}

int il_ring_has_senders(const il_ring *r)
{
    uint64_t now_ms = 0;
    for (uint32_t i = 0; i < nslots(r); i++) {
        uint64_t word = atomic_load_explicit(&r->hdr->slots[i].ident, memory_order_acquire);
        if (word == 0 || !(il_ident_roles(word) & IL_ROLE_SENDER))
            continue;
        if (il_ident_roles(word) & IL_ROLE_PENDING) {
            if (now_ms == 0)
                now_ms = il_boottime_ms();
            if (pending_expired(r, i, word, now_ms))
                continue;
        }
        return 1;
    }
    return 0;
}

int il_ring_lend(il_ring *r, uint64_t lender, uint64_t deadline_ms, uint32_t *slot,
                 uint64_t *word)
{
    /* One lent slot per lending handle: a later lend adds to its count. */
    if (*word != 0 && *slot < nslots(r)) {
        il_seg_slot *s = &r->hdr->slots[*slot];
        if (atomic_load_explicit(&s->ident, memory_order_acquire) == *word) {
            uint64_t aux = atomic_load_explicit(&s->aux, memory_order_relaxed);
            while ((aux & 0xffff) != 0 && (aux & 0xffff) < 0xffff &&
                   (aux >> 16) > il_boottime_ms()) {
                uint64_t want = (deadline_ms << 16) | ((aux & 0xffff) + 1);
                if (atomic_compare_exchange_weak_explicit(&s->aux, &aux, want,
                                                          memory_order_acq_rel,
                                                          memory_order_relaxed))
                    return IL_OK;
            }
        }
    }
    uint32_t i;
    int rc = il_seg_attach(r->hdr, lender, IL_ROLE_SENDER | IL_ROLE_PENDING, &i);
    if (rc == IL_NOSLOT) {
        il_ring_reclaim_dead(r);
        rc = il_seg_attach(r->hdr, lender, IL_ROLE_SENDER | IL_ROLE_PENDING, &i);
    }
    if (rc != IL_OK)
        return rc;
    atomic_store_explicit(&r->hdr->slots[i].aux, (deadline_ms << 16) | 1u, memory_order_relaxed);
    atomic_store_explicit(&r->ctrl->intents[i].pos, IL_INTENT_NONE, memory_order_release);
    *slot = i;
    *word = atomic_load_explicit(&r->hdr->slots[i].ident, memory_order_acquire);
    return IL_OK;
}

int il_ring_adopt(il_ring *r, uint32_t slot, uint64_t word)
{
    if (slot >= nslots(r) || !(il_ident_roles(word) & IL_ROLE_PENDING))
        return IL_INVALID;
    il_seg_slot *s = &r->hdr->slots[slot];
    if (atomic_load_explicit(&s->ident, memory_order_acquire) != word)
        return IL_INVALID;
    atomic_store_explicit(&r->ctrl->had_sender, 1, memory_order_release);
    uint64_t aux = atomic_load_explicit(&s->aux, memory_order_relaxed);
    while ((aux & 0xffff) != 0) {
        uint64_t want = aux - 1;
        if (atomic_compare_exchange_weak_explicit(&s->aux, &aux, want, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            if ((want & 0xffff) == 0) {
                uint64_t expected = word;
                atomic_compare_exchange_strong_explicit(&s->ident, &expected, 0,
                                                        memory_order_acq_rel,
                                                        memory_order_relaxed);
            }
            return IL_OK;
        }
    }
    return IL_INVALID;
}

uint64_t il_ring_free_bytes(const il_ring *r)
{
    uint64_t w = atomic_load_explicit(&r->ctrl->write_pos, memory_order_acquire);
    uint64_t rp = atomic_load_explicit(&r->ctrl->read_pos, memory_order_acquire);
    if (rp > w)
        return r->cap; /* the reader passed our look at write_pos: lots of room */
    uint64_t used = w - rp;
    return used > r->cap ? 0 : r->cap - used;
}

int il_ring_wait_readable(il_ring *r, uint64_t head, int64_t timeout_ns)
{
    il_ring_ctrl *c = r->ctrl;
    uint32_t seq = atomic_load_explicit(&c->reader_seq, memory_order_acquire);
    atomic_store_explicit(&c->reader_sleeping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (il_ring_readable(r, head))
        return IL_OK;
    return il_futex_wait(&c->reader_seq, seq, timeout_ns);
}

int il_ring_wait_space(il_ring *r, uint64_t need, int64_t timeout_ns)
{
    il_ring_ctrl *c = r->ctrl;
    uint32_t seq = atomic_load_explicit(&c->space_seq, memory_order_acquire);
    atomic_store_explicit(&c->space_wanted, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (il_ring_free_bytes(r) >= need)
        return IL_OK;
    return il_futex_wait(&c->space_seq, seq, timeout_ns);
}

void il_ring_wake_all(il_ring *r)
{
    il_ring_ctrl *c = r->ctrl;
    atomic_fetch_add_explicit(&c->reader_seq, 1, memory_order_release);
    atomic_fetch_add_explicit(&c->space_seq, 1, memory_order_release);
    il_futex_wake(&c->reader_seq, INT_MAX);
    il_futex_wake(&c->space_seq, INT_MAX);
}
