/* rwlockword.c - robust writer-preferring reader-writer lock (rwlockword.h). */
#include "rwlockword.h"

#include <limits.h>
#include <string.h>

#include "futex.h"
#include "proc.h"

void il_rw_init(il_rw *rw)
{
    memset((void *)rw, 0, sizeof *rw);
    il_lock_init(&rw->wlock);
    rw->magic = IL_RW_MAGIC;
    atomic_thread_fence(memory_order_release);
}

int il_rw_validate(const il_rw *rw)
{
    if (rw->magic != IL_RW_MAGIC)
        return IL_CORRUPT;
    return il_lock_validate(&rw->wlock);
}

/* A writer holds the write side or has a ticket for it. */
static int writer_present(il_rw *rw)
{
    uint64_t s = atomic_load_explicit(&rw->wlock.state, memory_order_seq_cst);
    if ((s >> 32) & 1u)
        return 1;
    uint32_t nt = atomic_load_explicit(&rw->wlock.next_ticket, memory_order_seq_cst);
    return nt != (uint32_t)s;
}

static void wake_writer(il_rw *rw)
{
    /* Only a writer holding wlock ever sleeps on wseq. */
    uint64_t s = atomic_load_explicit(&rw->wlock.state, memory_order_seq_cst);
    if ((s >> 32) & 1u) {
        atomic_fetch_add_explicit(&rw->wseq, 1, memory_order_seq_cst);
        il_futex_wake(&rw->wseq, INT_MAX);
    }
}

void il_rw_wake_readers(il_rw *rw)
{
    if (atomic_load_explicit(&rw->rsleepers, memory_order_seq_cst) != 0) {
        atomic_fetch_add_explicit(&rw->rseq, 1, memory_order_seq_cst);
        il_futex_wake(&rw->rseq, INT_MAX);
    }
}

int il_rw_read_try(il_rw *rw, uint32_t slot)
{
    if (slot >= IL_SEG_SLOTS)
        return IL_INVALID;
    if (writer_present(rw))
        return IL_BUSY;
    /* Dekker pair with the writer: our increment (seq_cst) then its state
     * load, against the writer's claim CAS then its load of rd[]. */
    atomic_fetch_add_explicit(&rw->rd[slot], 1, memory_order_seq_cst);
    if (writer_present(rw)) {
        atomic_fetch_sub_explicit(&rw->rd[slot], 1, memory_order_seq_cst);
        wake_writer(rw);
        return IL_BUSY;
    }
    atomic_fetch_add_explicit(&rw->racq, 1, memory_order_relaxed);
    /* A writer died holding the write side and no writer has claimed it
     * since: the data may be half written, and this reader is told. */
    return il_lock_died_pending(&rw->wlock) ? IL_OWNERDIED : IL_OK;
}

/* An attempt by a reader that may own a reader-wait entry: the trying bit is
 * set (seq_cst) before the attempt and cleared only if it failed, so no
 * acquisition ever happens while the entry shows an even seq. */
static int read_try_marked(il_rw *rw, uint32_t slot, int32_t rq)
{
    if (rq < 0 || (uint32_t)rq >= IL_RW_RWAITS)
        return il_rw_read_try(rw, slot);
    il_rw_rwait *e = &rw->rq[rq];
    uint64_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, s | 1u, memory_order_seq_cst);
    int rc = il_rw_read_try(rw, slot);
    if (rc != IL_OK && rc != IL_OWNERDIED) /* not acquired */
        atomic_store_explicit(&e->seq, s & ~(uint64_t)1u, memory_order_seq_cst);
    return rc;
}

/* Sleeper accounting, as il_sem's (docs/design/sync-lockword.md 2.4): enter
 * bumps rsleepers (seq_cst: the Dekker pair with il_rw_wake_readers) before
 * rslp[slot], leave drops rslp[slot] (never below zero: recovery may have
 * taken it, with our share of rsleepers) before rsleepers.  So rslp[slot]
 * never exceeds the slot's share of rsleepers, and recovery subtracting a
 * dead slot's rslp[] never takes rsleepers below the live sleepers. */
static void rsleep_enter(il_rw *rw, uint32_t slot)
{
    atomic_fetch_add_explicit(&rw->rsleepers, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&rw->rslp[slot], 1, memory_order_seq_cst);
}

static void rsleep_leave(il_rw *rw, uint32_t slot)
{
    uint32_t c = atomic_load_explicit(&rw->rslp[slot], memory_order_relaxed);
    while (c != 0) {
        if (atomic_compare_exchange_weak_explicit(&rw->rslp[slot], &c, c - 1,
                                                  memory_order_seq_cst, memory_order_relaxed)) {
            atomic_fetch_sub_explicit(&rw->rsleepers, 1, memory_order_seq_cst);
            return;
        }
    }
}

int il_rw_read_wait_slice(il_rw *rw, uint32_t slot, int32_t rq, int64_t slice_ns)
{
    if (slot >= IL_SEG_SLOTS)
        return IL_INVALID;
    uint32_t seq = atomic_load_explicit(&rw->rseq, memory_order_seq_cst);
    rsleep_enter(rw, slot);
    int rc = read_try_marked(rw, slot, rq);
    if (rc != IL_BUSY) {
        rsleep_leave(rw, slot);
        return rc;
    }
    int frc = il_futex_wait(&rw->rseq, seq, slice_ns);
    rsleep_leave(rw, slot);
    if (frc == IL_EINTR)
        return IL_EINTR;
    rc = read_try_marked(rw, slot, rq);
    if (rc != IL_BUSY)
        return rc;
    return frc == IL_TIMEOUT ? IL_TIMEOUT : IL_BUSY;
}

int il_rw_read_release(il_rw *rw, uint32_t slot)
{
    if (slot >= IL_SEG_SLOTS)
        return IL_INVALID;
    uint32_t v = atomic_load_explicit(&rw->rd[slot], memory_order_relaxed);
    do {
        if (v == 0)
            return IL_INVALID;
    } while (!atomic_compare_exchange_weak_explicit(&rw->rd[slot], &v, v - 1,
                                                    memory_order_seq_cst, memory_order_relaxed));
    if (v == 1)
        wake_writer(rw);
    return IL_OK;
}

int il_rw_readers_gone(il_rw *rw)
{
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        if (atomic_load_explicit(&rw->rd[i], memory_order_seq_cst) != 0)
            return 0;
    return 1;
}

int il_rw_write_drain_slice(il_rw *rw, int64_t slice_ns)
{
    uint32_t seq = atomic_load_explicit(&rw->wseq, memory_order_seq_cst);
    if (il_rw_readers_gone(rw))
        return IL_OK;
    int frc = il_futex_wait(&rw->wseq, seq, slice_ns);
    if (il_rw_readers_gone(rw))
        return IL_OK;
    if (frc == IL_EINTR)
        return IL_EINTR;
    return frc == IL_TIMEOUT ? IL_TIMEOUT : IL_BUSY;
}

int il_rw_write_release(il_rw *rw, uint64_t ident, uint32_t tid)
{
    int rc = il_lock_release(&rw->wlock, ident, tid);
    if (rc == IL_OK)
        il_rw_wake_readers(rw);
    return rc;
}

int il_rw_write_release_died(il_rw *rw, uint64_t ident, uint32_t tid)
{
    int rc = il_lock_release_died(&rw->wlock, ident, tid);
    if (rc == IL_OK)
        il_rw_wake_readers(rw);
    return rc;
}

uint32_t il_rw_recover_readers(il_rw *rw, il_seg_header *hdr, uint32_t my_slot)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++) {
        if (i == my_slot)
            continue;
        uint32_t v = atomic_load_explicit(&rw->rd[i], memory_order_acquire);
        uint32_t waiting = atomic_load_explicit(&rw->rwaiting[i], memory_order_relaxed);
        uint32_t sleeping = atomic_load_explicit(&rw->rslp[i], memory_order_relaxed);
        if (v == 0 && waiting == 0 && sleeping == 0)
            continue;
        /* A slot whose process is dead (or that was freed) cannot change its
         * count any more (slots with holds are never reused: the glue's
         * reclaim skips them), so taking the count away is safe. */
        uint64_t id = atomic_load_explicit(&hdr->slots[i].ident, memory_order_acquire);
        if (id != 0 && il_ident_alive(il_ident_bare(id)))
            continue;
        if (waiting != 0)
            atomic_store_explicit(&rw->rwaiting[i], 0, memory_order_relaxed);
        if (sleeping != 0) {
            /* exchange: of two recoverers, one takes the count */
            uint32_t k = atomic_exchange_explicit(&rw->rslp[i], 0, memory_order_seq_cst);
            if (k != 0)
                atomic_fetch_sub_explicit(&rw->rsleepers, k, memory_order_seq_cst);
        }
        if (v != 0 && atomic_compare_exchange_strong_explicit(&rw->rd[i], &v, 0,
                                                              memory_order_seq_cst,
                                                              memory_order_relaxed)) {
            n += v;
            atomic_fetch_add_explicit(&rw->rrecovered, v, memory_order_relaxed);
        }
    }
    if (n > 0)
        wake_writer(rw);
    return n;
}

int32_t il_rw_rwait_claim(il_rw *rw, uint64_t ident, uint32_t tid)
{
    uint64_t me = il_ident_bare(ident);
    if (me == 0)
        return -1;
    int32_t got = -1;
    for (int pass = 0; pass < 2 && got < 0; pass++) {
        for (uint32_t i = 0; i < IL_RW_RWAITS; i++) {
            il_rw_rwait *e = &rw->rq[i];
            uint64_t cur = atomic_load_explicit(&e->ident, memory_order_acquire);
            /* first pass: free entries; second: those of dead processes */
            if (pass == 0 ? cur != 0 : (cur == 0 || il_ident_alive(il_ident_bare(cur))))
                continue;
            if (atomic_compare_exchange_strong_explicit(&e->ident, &cur, me, memory_order_acq_rel,
                                                        memory_order_relaxed)) {
                got = (int32_t)i;
                break;
            }
        }
    }
    if (got < 0)
        return -1;
    il_rw_rwait *e = &rw->rq[got];
    atomic_store_explicit(&e->seq, 0, memory_order_seq_cst);
    atomic_store_explicit(&e->tid, tid, memory_order_seq_cst);
    uint64_t n = atomic_fetch_add_explicit(&rw->rwait_next, 1, memory_order_relaxed) + 1;
    atomic_store_explicit(&e->seq, n << 1, memory_order_seq_cst);
    return got;
}

void il_rw_rwait_release(il_rw *rw, int32_t rq, uint64_t ident)
{
    if (rq < 0 || (uint32_t)rq >= IL_RW_RWAITS)
        return;
    il_rw_rwait *e = &rw->rq[rq];
    uint64_t me = il_ident_bare(ident);
    atomic_store_explicit(&e->seq, 0, memory_order_seq_cst);
    atomic_store_explicit(&e->tid, 0, memory_order_relaxed);
    atomic_compare_exchange_strong_explicit(&e->ident, &me, 0, memory_order_release,
                                            memory_order_relaxed);
}

int il_rw_rwait_read(const il_rw *rw, uint32_t i, uint64_t *ident, uint32_t *tid, uint64_t *seq)
{
    if (i >= IL_RW_RWAITS)
        return 0;
    il_rw_rwait *e = &((il_rw *)rw)->rq[i];
    uint64_t s1 = atomic_load_explicit(&e->seq, memory_order_seq_cst);
    if (s1 == 0)
        return 0;
    uint64_t id = atomic_load_explicit(&e->ident, memory_order_seq_cst);
    uint32_t t = atomic_load_explicit(&e->tid, memory_order_seq_cst);
    uint64_t s2 = atomic_load_explicit(&e->seq, memory_order_seq_cst);
    /* A free + claim in between would have passed through seq 0 and a new
     * wait number; only the trying bit may differ. */
    if ((s1 | 1u) != (s2 | 1u) || id == 0)
        return 0;
    *ident = id;
    *tid = t;
    *seq = s2;
    return 1;
}

uint32_t il_rw_waiting_readers(const il_rw *rw)
{
    il_rw *m = (il_rw *)rw;
    uint32_t n = 0;
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        n += atomic_load_explicit(&m->rwaiting[i], memory_order_relaxed);
    return n;
}

uint32_t il_rw_rsleepers(const il_rw *rw)
{
    return atomic_load_explicit(&((il_rw *)rw)->rsleepers, memory_order_relaxed);
}

uint32_t il_rw_slot_sleepers(const il_rw *rw, uint32_t slot)
{
    if (slot >= IL_SEG_SLOTS)
        return 0;
    return atomic_load_explicit(&((il_rw *)rw)->rslp[slot], memory_order_acquire);
}

uint32_t il_rw_readers(const il_rw *rw)
{
    il_rw *m = (il_rw *)rw;
    uint32_t n = 0;
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        n += atomic_load_explicit(&m->rd[i], memory_order_relaxed);
    return n;
}

uint32_t il_rw_held(const il_rw *rw, uint32_t slot)
{
    if (slot >= IL_SEG_SLOTS)
        return 0;
    return atomic_load_explicit(&((il_rw *)rw)->rd[slot], memory_order_acquire);
}
