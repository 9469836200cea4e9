/* eventword.c - Event, Condition and Barrier words (see eventword.h and
 * docs/design/sync-events.md). */
#include "eventword.h"

#include <limits.h>
#include <string.h>

#include "futex.h"
#include "proc.h"

#define SC memory_order_seq_cst
#define ACQ memory_order_acquire
#define REL memory_order_release
#define RLX memory_order_relaxed

/* ======================================================================= */
/* il_event                                                                */
/* ======================================================================= */

void il_event_init(il_event *e)
{
    memset(e, 0, sizeof *e);
    e->magic = IL_EVENT_MAGIC;
    atomic_thread_fence(REL);
}

int il_event_validate(const il_event *e)
{
    return e->magic == IL_EVENT_MAGIC ? IL_OK : IL_CORRUPT;
}

int il_event_is_set(const il_event *e) { return (int)(atomic_load_explicit(&e->word, ACQ) & 1u); }

uint32_t il_event_snapshot(const il_event *e) { return atomic_load_explicit(&e->word, ACQ); }

static int event_signalled_word(uint32_t w, uint32_t snap)
{
    return (w & 1u) || ((w >> 1) != (snap >> 1));
}

int il_event_signalled(const il_event *e, uint32_t snap)
{
    return event_signalled_word(atomic_load_explicit(&e->word, ACQ), snap);
}

void il_event_set(il_event *e)
{
    uint32_t w = atomic_load_explicit(&e->word, SC);
    for (;;) {
        if (w & 1u)
            return; /* already set: nobody can be asleep on a set word */
        uint32_t nw = ((((w >> 1) + 1u) & 0x7FFFFFFFu) << 1) | 1u;
        if (atomic_compare_exchange_weak_explicit(&e->word, &w, nw, SC, SC))
            break;
    }
    atomic_fetch_add_explicit(&e->sets, 1, RLX);
    /* Dekker pair with il_event_wait_slice: CAS word, then load sleepers. */
    if (atomic_load_explicit(&e->sleepers, SC) != 0) {
        atomic_fetch_add_explicit(&e->wakes, 1, RLX);
        il_futex_wake(&e->word, INT_MAX);
    }
}

void il_event_clear(il_event *e) { atomic_fetch_and_explicit(&e->word, ~1u, SC); }

/* Sleeper accounting, as il_sem's (docs/design/sync-lockword.md 2.4): enter
 * bumps `sleepers` (seq_cst: the Dekker pair with il_event_set's CAS then
 * load) before slp[slot]; leave drops slp[slot] (never below zero: recovery
 * may have taken it, with our share of `sleepers`) before `sleepers`.  So
 * slp[slot] never exceeds the slot's share of `sleepers`, and taking a dead
 * slot's slp[] out never leaves `sleepers` below the live sleepers. */
static void ev_sleep_enter(_Atomic uint32_t *total, _Atomic uint32_t *mine)
{
    atomic_fetch_add_explicit(total, 1, SC);
    atomic_fetch_add_explicit(mine, 1, SC);
}

static void ev_sleep_leave(_Atomic uint32_t *total, _Atomic uint32_t *mine)
{
    uint32_t c = atomic_load_explicit(mine, RLX);
    while (c != 0) {
        if (atomic_compare_exchange_weak_explicit(mine, &c, c - 1, SC, RLX)) {
            atomic_fetch_sub_explicit(total, 1, SC);
            return;
        }
    }
}

int il_event_wait_slice(il_event *e, uint32_t slot, uint32_t snap, int64_t slice_ns)
{
    if (slot >= IL_SEG_SLOTS)
        return IL_INVALID;
    uint32_t w = atomic_load_explicit(&e->word, ACQ);
    if (event_signalled_word(w, snap))
        return IL_OK;
    ev_sleep_enter(&e->sleepers, &e->slp[slot]);
    w = atomic_load_explicit(&e->word, SC);
    int rc = IL_OK;
    if (!event_signalled_word(w, snap))
        rc = il_futex_wait(&e->word, w, slice_ns);
    ev_sleep_leave(&e->sleepers, &e->slp[slot]);
    if (il_event_signalled(e, snap))
        return IL_OK;
    return rc == IL_OK ? IL_BUSY : rc;
}

uint32_t il_event_recover_sleepers(il_event *e, il_seg_header *hdr)
{
    uint32_t n = 0, nslots = hdr->nslots > IL_SEG_SLOTS ? IL_SEG_SLOTS : hdr->nslots;
    for (uint32_t i = 0; i < nslots; i++) {
        if (atomic_load_explicit(&e->slp[i], RLX) == 0)
            continue;
        /* A dead (or freed) slot's process changes slp[i] no more; a slot
         * with sleepers is never freed, so it cannot have a new owner. */
        uint64_t id = atomic_load_explicit(&hdr->slots[i].ident, ACQ);
        if (id != 0 && il_ident_alive(il_ident_bare(id)))
            continue;
        uint32_t k = atomic_exchange_explicit(&e->slp[i], 0, SC); /* one recoverer wins */
        if (k != 0)
            atomic_fetch_sub_explicit(&e->sleepers, k, SC);
        n += k;
    }
    return n;
}

uint32_t il_event_sleepers(const il_event *e)
{
    return atomic_load_explicit(&((il_event *)e)->sleepers, RLX);
}

uint32_t il_event_slot_sleepers(const il_event *e, uint32_t slot)
{
    if (slot >= IL_SEG_SLOTS)
        return 0;
    return atomic_load_explicit(&((il_event *)e)->slp[slot], ACQ);
}

/* ======================================================================= */
/* il_cond                                                                 */
/* ======================================================================= */

static inline unsigned cond_state(uint64_t w) { return (unsigned)(w >> IL_COND_STATE_SHIFT); }

static inline uint64_t cond_word(uint64_t ident, unsigned state)
{
    return il_ident_bare(ident) | ((uint64_t)state << IL_COND_STATE_SHIFT);
}

static int alive_or_self(uint64_t ident, uint64_t self_ident)
{
    ident = il_ident_bare(ident);
    if (ident == il_ident_bare(self_ident))
        return 1;
    return il_ident_alive(ident);
}

void il_cond_init(il_cond *c)
{
    memset(c, 0, sizeof *c);
    c->magic = IL_COND_MAGIC;
    c->nentries = IL_COND_ENTRIES;
    atomic_thread_fence(REL);
}

int il_cond_validate(const il_cond *c)
{
    return c->magic == IL_COND_MAGIC && c->nentries == IL_COND_ENTRIES ? IL_OK : IL_CORRUPT;
}

int il_cond_register(il_cond *c, uint64_t ident, uint32_t tid, uint32_t *entry)
{
    if (il_ident_bare(ident) == 0)
        return IL_INVALID;
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < IL_COND_ENTRIES; i++) {
            il_cond_entry *q = &c->q[i];
            uint64_t expect = 0;
            if (atomic_load_explicit(&q->word, RLX) != 0)
                continue;
            if (!atomic_compare_exchange_strong_explicit(
                    &q->word, &expect, cond_word(ident, IL_COND_CLAIMING), SC, RLX))
                continue;
            atomic_store_explicit(&q->tid, tid, RLX);
            atomic_store_explicit(&q->sleeping, 0, RLX);
            atomic_store_explicit(&q->ticket, atomic_fetch_add_explicit(&c->next_ticket, 1, SC),
                                  RLX);
            atomic_store_explicit(&q->word, cond_word(ident, IL_COND_WAITING), SC);
            *entry = i;
            return IL_OK;
        }
        if (pass == 0 && il_cond_reclaim(c, ident) == 0)
            break;
    }
    return IL_NOSLOT;
}

static int cond_mine(uint64_t w, uint64_t ident)
{
    return il_ident_bare(w) == il_ident_bare(ident);
}

int il_cond_wait_slice(il_cond *c, uint32_t entry, uint64_t ident, int64_t slice_ns)
{
    if (entry >= IL_COND_ENTRIES)
        return IL_INVALID;
    il_cond_entry *q = &c->q[entry];
    uint32_t f = atomic_load_explicit(&q->futex, SC);
    uint64_t w = atomic_load_explicit(&q->word, SC);
    if (!cond_mine(w, ident))
        return IL_INVALID;
    if (cond_state(w) == IL_COND_NOTIFIED)
        return IL_OK;
    /* Dekker pair with il_cond_notify: store sleeping, then load word. */
    atomic_store_explicit(&q->sleeping, 1, SC);
    w = atomic_load_explicit(&q->word, SC);
    int rc = IL_OK;
    if (cond_state(w) != IL_COND_NOTIFIED)
        rc = il_futex_wait(&q->futex, f, slice_ns);
    atomic_store_explicit(&q->sleeping, 0, RLX);
    w = atomic_load_explicit(&q->word, ACQ);
    if (cond_mine(w, ident) && cond_state(w) == IL_COND_NOTIFIED)
        return IL_OK;
    return rc == IL_OK ? IL_BUSY : rc;
}

int il_cond_leave(il_cond *c, uint32_t entry, uint64_t ident)
{
    if (entry >= IL_COND_ENTRIES)
        return 0;
    il_cond_entry *q = &c->q[entry];
    uint64_t w = atomic_load_explicit(&q->word, SC);
    for (;;) {
        if (!cond_mine(w, ident) || w == 0)
            return 0;
        int notified = cond_state(w) == IL_COND_NOTIFIED;
        if (atomic_compare_exchange_weak_explicit(&q->word, &w, 0, SC, SC))
            return notified;
    }
}

typedef struct {
    uint64_t ticket;
    uint32_t idx;
} cond_cand;

uint32_t il_cond_notify(il_cond *c, int64_t n, uint64_t self_ident)
{
    if (n == 0)
        return 0;
    cond_cand cand[IL_COND_ENTRIES];
    uint32_t nc = 0;
    for (uint32_t i = 0; i < IL_COND_ENTRIES; i++) {
        uint64_t w = atomic_load_explicit(&c->q[i].word, ACQ);
        if (cond_state(w) != IL_COND_WAITING)
            continue;
        uint64_t t = atomic_load_explicit(&c->q[i].ticket, RLX);
        uint32_t j = nc++;
        while (j > 0 && cand[j - 1].ticket > t) { /* insertion sort by ticket */
            cand[j] = cand[j - 1];
            j--;
        }
        cand[j].ticket = t;
        cand[j].idx = i;
    }
    uint32_t done = 0;
    for (uint32_t k = 0; k < nc && (n < 0 || done < (uint64_t)n); k++) {
        il_cond_entry *q = &c->q[cand[k].idx];
        uint64_t w = atomic_load_explicit(&q->word, SC);
        if (cond_state(w) != IL_COND_WAITING)
            continue; /* timed out or left meanwhile */
        if (!alive_or_self(w, self_ident)) {
            /* A dead waiter must not swallow a notification meant for a live one. */
            if (atomic_compare_exchange_strong_explicit(&q->word, &w, 0, SC, RLX))
                atomic_fetch_add_explicit(&c->reclaimed, 1, RLX);
            continue;
        }
        uint64_t nw = (w & IL_IDENT_MASK) | ((uint64_t)IL_COND_NOTIFIED << IL_COND_STATE_SHIFT);
        if (!atomic_compare_exchange_strong_explicit(&q->word, &w, nw, SC, RLX))
            continue; /* the waiter timed out at this very moment: not counted */
        done++;
        atomic_fetch_add_explicit(&q->futex, 1, SC);
        if (atomic_exchange_explicit(&q->sleeping, 0, SC) != 0) {
            atomic_fetch_add_explicit(&c->wakes, 1, RLX);
            il_futex_wake(&q->futex, 1);
        }
    }
    atomic_fetch_add_explicit(&c->notified, done, RLX);
    return done;
}

uint32_t il_cond_waiters(const il_cond *c)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < IL_COND_ENTRIES; i++)
        if (cond_state(atomic_load_explicit(&c->q[i].word, RLX)) == IL_COND_WAITING)
            n++;
    return n;
}

uint32_t il_cond_reclaim(il_cond *c, uint64_t self_ident)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < IL_COND_ENTRIES; i++) {
        il_cond_entry *q = &c->q[i];
        uint64_t w = atomic_load_explicit(&q->word, ACQ);
        if (w == 0 || alive_or_self(w, self_ident))
            continue;
        if (atomic_compare_exchange_strong_explicit(&q->word, &w, 0, SC, RLX)) {
            atomic_fetch_add_explicit(&c->reclaimed, 1, RLX);
            n++;
        }
    }
    return n;
}

/* ======================================================================= */
/* il_barrier                                                              */
/* ======================================================================= */

static inline uint32_t bar_gen(uint64_t w) { return (uint32_t)(w >> 32); }
static inline uint32_t bar_count(uint64_t w) { return (uint32_t)(w & IL_BARRIER_COUNT_MASK); }
static inline uint64_t bar_gs(uint32_t gen, unsigned state) { return ((uint64_t)gen << 8) | state; }

static void bar_signal(il_barrier *b)
{
    atomic_fetch_add_explicit(&b->seq, 1, SC);
    if (atomic_load_explicit(&b->sleepers, SC) != 0) {
        atomic_fetch_add_explicit(&b->wakes, 1, RLX);
        il_futex_wake(&b->seq, INT_MAX);
    }
}

int il_barrier_init(il_barrier *b, uint32_t parties)
{
    if (parties < 1 || parties > IL_BARRIER_MAX_PARTIES)
        return IL_INVALID;
    memset(b, 0, sizeof *b);
    b->magic = IL_BARRIER_MAGIC;
    b->parties = parties;
    atomic_thread_fence(REL);
    return IL_OK;
}

int il_barrier_validate(const il_barrier *b)
{
    if (b->magic != IL_BARRIER_MAGIC || b->parties < 1 || b->parties > IL_BARRIER_MAX_PARTIES)
        return IL_CORRUPT;
    return IL_OK;
}

int il_barrier_enter(il_barrier_waiter *w, il_barrier *b, uint64_t ident, uint32_t tid)
{
    memset(w, 0, sizeof *w);
    w->b = b;
    w->ident = il_ident_bare(ident);
    w->entry = -1;
    if (w->ident == 0)
        return IL_INVALID;
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < IL_BARRIER_ENTRIES; i++) {
            il_barrier_entry *q = &b->q[i];
            uint64_t expect = 0;
            if (atomic_load_explicit(&q->ident, RLX) != 0)
                continue;
            if (!atomic_compare_exchange_strong_explicit(&q->ident, &expect, w->ident, SC, RLX))
                continue;
            atomic_store_explicit(&q->gs, 0, SC);
            atomic_store_explicit(&q->tid, tid, RLX);
            w->entry = (int32_t)i;
            return IL_OK;
        }
        if (pass == 0)
            il_barrier_check(b, ident);
    }
    return IL_NOSLOT;
}

int il_barrier_arrive(il_barrier_waiter *w)
{
    il_barrier *b = w->b;
    il_barrier_entry *q = &b->q[w->entry];
    uint64_t word = atomic_load_explicit(&b->word, SC);
    for (;;) {
        if (word & IL_BARRIER_BROKEN_BIT)
            return IL_BROKEN;
        uint32_t gen = bar_gen(word), count = bar_count(word);
        if (count >= b->parties)
            return IL_BUSY;
        /* Registered (WAITING in gen) before being counted: a death between
         * the two breaks the barrier, never goes unnoticed. */
        atomic_store_explicit(&q->gs, bar_gs(gen, IL_BARRIER_WAITING), SC);
        if (atomic_compare_exchange_weak_explicit(&b->word, &word, word + 1, SC, SC)) {
            w->gen = gen;
            w->index = count;
            w->last = count + 1 == b->parties;
            return IL_OK;
        }
    }
}

uint32_t il_barrier_seq(const il_barrier *b) { return atomic_load_explicit(&b->seq, SC); }

int il_barrier_sleep(il_barrier_waiter *w, uint32_t snap, int64_t slice_ns)
{
    if (w->entry < 0 || (uint32_t)w->entry >= IL_BARRIER_ENTRIES)
        return IL_INVALID;
    il_barrier *b = w->b;
    il_barrier_entry *q = &b->q[w->entry];
    /* As ev_sleep_enter/leave, with the entry's flag (0 or 1: one thread per
     * entry) as the attribution: `sleepers` first in, last out. */
    ev_sleep_enter(&b->sleepers, &q->sleeping);
    int rc = IL_OK;
    if (atomic_load_explicit(&b->seq, SC) == snap)
        rc = il_futex_wait(&b->seq, snap, slice_ns);
    ev_sleep_leave(&b->sleepers, &q->sleeping);
    return rc;
}

uint32_t il_barrier_sleepers(const il_barrier *b)
{
    return atomic_load_explicit(&((il_barrier *)b)->sleepers, RLX);
}

int il_barrier_status(il_barrier_waiter *w)
{
    il_barrier *b = w->b;
    uint64_t word = atomic_load_explicit(&b->word, SC);
    if (bar_gen(word) != w->gen) {
        uint64_t gs = atomic_load_explicit(&b->q[w->entry].gs, SC);
        if (gs == bar_gs(w->gen, IL_BARRIER_MARKED))
            return IL_BROKEN; /* reset() while we waited */
        return IL_OK;
    }
    if (word & IL_BARRIER_BROKEN_BIT)
        return IL_BROKEN;
    return IL_BUSY;
}

/* 1 if a party registered WAITING in generation gen (other than self) belongs
 * to a dead process.  Each other process is checked once (one /proc read),
 * however many of its threads wait. */
static int bar_dead_party(il_barrier *b, uint32_t gen, uint64_t self)
{
    uint64_t want = bar_gs(gen, IL_BARRIER_WAITING);
    uint64_t alive[IL_BARRIER_ENTRIES];
    uint32_t nalive = 0;
    for (uint32_t i = 0; i < IL_BARRIER_ENTRIES; i++) {
        il_barrier_entry *q = &b->q[i];
        uint64_t id = atomic_load_explicit(&q->ident, SC);
        if (id == 0 || id == self)
            continue;
        if (atomic_load_explicit(&q->gs, SC) != want)
            continue;
        int known = 0;
        for (uint32_t k = 0; k < nalive && !known; k++)
            known = alive[k] == id;
        if (known)
            continue;
        if (il_ident_alive(id)) {
            alive[nalive++] = id;
            continue;
        }
        /* Dead, unless the entry changed meanwhile (freed by a scan). */
        if (atomic_load_explicit(&q->ident, SC) == id && atomic_load_explicit(&q->gs, SC) == want)
            return 1;
    }
    return 0;
}

int il_barrier_complete(il_barrier_waiter *w)
{
    il_barrier *b = w->b;
    /* Never release a generation that counted a party which has died since it
     * arrived: break it instead, so that the others learn of the death now
     * rather than passing and then waiting for it in the next generation.
     * (A party dying after this check is not caught: the generation then
     * completes as if it had died just after passing.) */
    if (bar_dead_party(b, w->gen, w->ident)) {
        il_barrier_break(b, w->gen);
        return IL_BROKEN;
    }
    uint64_t expect = ((uint64_t)w->gen << 32) | b->parties;
    uint64_t next = (uint64_t)(uint32_t)(w->gen + 1u) << 32;
    if (!atomic_compare_exchange_strong_explicit(&b->word, &expect, next, SC, SC))
        return IL_BROKEN;
    atomic_fetch_add_explicit(&b->completed, 1, RLX);
    bar_signal(b);
    return IL_OK;
}

void il_barrier_break(il_barrier *b, int64_t gen)
{
    uint64_t word = atomic_load_explicit(&b->word, SC);
    for (;;) {
        if (word & IL_BARRIER_BROKEN_BIT)
            return;
        if (gen >= 0 && bar_gen(word) != (uint32_t)gen)
            return;
        if (atomic_compare_exchange_weak_explicit(&b->word, &word, word | IL_BARRIER_BROKEN_BIT,
                                                  SC, SC))
            break;
    }
    atomic_fetch_add_explicit(&b->broken_count, 1, RLX);
    bar_signal(b);
}

int il_barrier_check(il_barrier *b, uint64_t self_ident)
{
    int broke = 0;
    uint64_t self = il_ident_bare(self_ident);
    for (uint32_t i = 0; i < IL_BARRIER_ENTRIES; i++) {
        il_barrier_entry *q = &b->q[i];
        uint64_t id = atomic_load_explicit(&q->ident, SC);
        if (id == 0 || id == self || il_ident_alive(id))
            continue;
        uint64_t gs = atomic_load_explicit(&q->gs, SC);
        if (atomic_load_explicit(&q->ident, SC) != id)
            continue; /* freed (and maybe re-claimed) meanwhile */
        uint64_t word = atomic_load_explicit(&b->word, SC);
        if ((gs & 0xFFu) == IL_BARRIER_WAITING && (uint32_t)(gs >> 8) == bar_gen(word) &&
            !(word & IL_BARRIER_BROKEN_BIT)) {
            /* A party of the current generation died: break before freeing
             * its entry, so the death cannot go unnoticed. */
            il_barrier_break(b, bar_gen(word));
            broke = 1;
        }
        /* A waiter killed asleep: its sleeper leaves `sleepers` before the
         * entry is freed (exchange: of two scanners, one takes it). */
        if (atomic_exchange_explicit(&q->sleeping, 0, SC) != 0)
            atomic_fetch_sub_explicit(&b->sleepers, 1, SC);
        atomic_compare_exchange_strong_explicit(&q->ident, &id, 0, SC, RLX);
    }
    return broke;
}

void il_barrier_reset(il_barrier *b)
{
    /* 1. Freeze the count: arrivals fail while BROKEN is set. */
    uint64_t word = atomic_load_explicit(&b->word, SC);
    while (!(word & IL_BARRIER_BROKEN_BIT)) {
        if (atomic_compare_exchange_weak_explicit(&b->word, &word, word | IL_BARRIER_BROKEN_BIT,
                                                  SC, SC)) {
            word |= IL_BARRIER_BROKEN_BIT;
            break;
        }
    }
    uint32_t gen = bar_gen(word);
    /* 2. Tell each waiter of this generation that it was broken. */
    for (uint32_t i = 0; i < IL_BARRIER_ENTRIES; i++) {
        uint64_t gs = bar_gs(gen, IL_BARRIER_WAITING);
        atomic_compare_exchange_strong_explicit(&b->q[i].gs, &gs, bar_gs(gen, IL_BARRIER_MARKED),
                                                SC, RLX);
    }
    /* 3. A new, empty, unbroken generation (a concurrent reset may have done it). */
    atomic_compare_exchange_strong_explicit(&b->word, &word,
                                            (uint64_t)(uint32_t)(gen + 1u) << 32, SC, SC);
    bar_signal(b);
}

void il_barrier_leave(il_barrier_waiter *w)
{
    if (w->entry < 0)
        return;
    il_barrier_entry *q = &w->b->q[w->entry];
    atomic_store_explicit(&q->gs, 0, SC);
    uint64_t id = w->ident;
    atomic_compare_exchange_strong_explicit(&q->ident, &id, 0, SC, RLX);
    w->entry = -1;
}

uint32_t il_barrier_n_waiting(const il_barrier *b)
{
    uint64_t word = atomic_load_explicit(&b->word, ACQ);
    return (word & IL_BARRIER_BROKEN_BIT) ? 0 : bar_count(word);
}

int il_barrier_broken(const il_barrier *b)
{
    return (atomic_load_explicit(&b->word, ACQ) & IL_BARRIER_BROKEN_BIT) != 0;
}
