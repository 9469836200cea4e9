/* rwlockword.h - a robust writer-preferring reader-writer lock word.
 *
 * Plain C11 (no Python.h), over caller-supplied shared memory; see
 * docs/design/sync-rwlock.md.  Writers queue on an embedded il_lock (FIFO,
 * robust, IL_OWNERDIED when a writer dies holding); readers are counted per
 * attach slot (seg.h) in rd[], so the holds of a dead process are found by
 * its slot and dropped.  A reader gets in only while no writer holds the
 * il_lock or queues for it (writer preference); a writer, once it holds the
 * il_lock, waits for rd[] to drain.
 */
#ifndef IL_RWLOCKWORD_H
#define IL_RWLOCKWORD_H

#include <stdatomic.h>
#include <stdint.h>

#include "il_common.h"
#include "lockword.h"
#include "seg.h"

#define IL_RW_MAGIC 0x324C5752u /* "RWL2" (layout 2: reader-wait table) */

/* Readers whose wait has lasted long enough to take part in deadlock
 * detection (docs/design/deadlock.md) each publish one entry here.  A waiting
 * reader can then be told apart from one that has acquired: seq is (wait
 * number << 1) | trying, the wait number unique per wait (rwait_next), and
 * the trying bit set around every acquisition attempt and left set by the
 * successful one until the entry is freed.  So an entry seen twice with the
 * same even seq proves that its thread did not acquire in between. */
#define IL_RW_RWAITS 32u

typedef struct il_rw_rwait {
    _Atomic uint64_t ident; /* the waiting thread's process identity, 0 = free */
    _Atomic uint64_t seq;   /* wait number << 1 | trying; 0 while set up or freed */
    _Atomic uint32_t tid;
    uint32_t unused;
} il_rw_rwait;

typedef struct il_rw {
    il_lock wlock; /* the writers' queue and the write side */
    _Alignas(64) uint32_t magic;
    _Atomic uint32_t rseq;      /* futex word: readers blocked by a writer */
    _Atomic uint32_t rsleepers; /* readers (about to be) asleep on rseq */
    _Atomic uint32_t wseq;      /* futex word: the writer waiting for readers to drain */
    _Atomic uint64_t rwait_next; /* wait numbers of rq[] entries */
    _Atomic uint64_t racq, wacq, rrecovered; /* statistics (approximate) */
    _Alignas(64) _Atomic uint32_t rd[IL_SEG_SLOTS]; /* read holds per attach slot */
    /* readers inside a blocking acquire, per attach slot (statistics, ls);
     * a dead slot's count is dropped by il_rw_recover_readers */
    _Alignas(64) _Atomic uint32_t rwaiting[IL_SEG_SLOTS];
    _Alignas(64) il_rw_rwait rq[IL_RW_RWAITS];
    /* readers asleep on rseq per attach slot: rsleepers (what the wake path
     * reads) attributed, so that il_rw_recover_readers can take a dead
     * slot's sleepers out of rsleepers exactly (sync-rwlock.md) */
    _Alignas(64) _Atomic uint32_t rslp[IL_SEG_SLOTS];
} il_rw;

void il_rw_init(il_rw *rw);
int il_rw_validate(const il_rw *rw);

/* Readers.  try: IL_OK, IL_OWNERDIED (acquired, but a writer died holding
 * the write side and no writer has claimed it since: the data may be half
 * written) or IL_BUSY (a writer holds or waits); never blocks. */
int il_rw_read_try(il_rw *rw, uint32_t slot);
/* One bounded wait: IL_OK or IL_OWNERDIED (acquired, as try), IL_TIMEOUT
 * (slice elapsed), IL_EINTR, IL_BUSY (woken, not acquired).  rq: the caller's reader-wait entry
 * (il_rw_rwait_claim), or -1: each attempt is then bracketed by its trying
 * bit (left set after the successful one). */
int il_rw_read_wait_slice(il_rw *rw, uint32_t slot, int32_t rq, int64_t slice_ns);
/* IL_OK, or IL_INVALID if this slot holds no read side. */
int il_rw_read_release(il_rw *rw, uint32_t slot);

/* Writers take rw->wlock with the il_lock API (try / wait_* / check_owner),
 * then drain: IL_OK once no reader holds, else one bounded wait (IL_TIMEOUT,
 * IL_EINTR, IL_BUSY).  The caller holds wlock throughout. */
int il_rw_write_drain_slice(il_rw *rw, int64_t slice_ns);
int il_rw_readers_gone(il_rw *rw);
/* Release the write side (wlock) and wake blocked readers. */
int il_rw_write_release(il_rw *rw, uint64_t ident, uint32_t tid);
/* The same, keeping a writer's death news for the next acquirers (a writer
 * that got IL_OWNERDIED and gives up before it repaired anything). */
int il_rw_write_release_died(il_rw *rw, uint64_t ident, uint32_t tid);
/* Wake blocked readers (after a queued writer gave up its wait). */
void il_rw_wake_readers(il_rw *rw);

/* Drop the read holds of dead (or freed) attach slots; returns how many.
 * Their sleeping readers leave rsleepers too (rslp[]). */
uint32_t il_rw_recover_readers(il_rw *rw, il_seg_header *hdr, uint32_t my_slot);

/* Reader-wait entries (deadlock detection).  claim: an entry index for
 * (ident, tid) with a new wait number, or -1 when all entries are taken by
 * live processes (entries of dead ones are taken over).  release: free it
 * (only its owner calls this). */
int32_t il_rw_rwait_claim(il_rw *rw, uint64_t ident, uint32_t tid);
void il_rw_rwait_release(il_rw *rw, int32_t rq, uint64_t ident);
/* A consistent read of entry i: 1 and (*ident, *tid, *seq) when in use, 0
 * when free or changing. */
int il_rw_rwait_read(const il_rw *rw, uint32_t i, uint64_t *ident, uint32_t *tid, uint64_t *seq);

/* Readers inside a blocking acquire (sum over slots). */
uint32_t il_rw_waiting_readers(const il_rw *rw);

/* Readers (about to be) asleep on rseq: all (what releasers read) and those
 * attributed to `slot`.  A slot with sleepers must not be freed. */
uint32_t il_rw_rsleepers(const il_rw *rw);
uint32_t il_rw_slot_sleepers(const il_rw *rw, uint32_t slot);

uint32_t il_rw_readers(const il_rw *rw);
uint32_t il_rw_held(const il_rw *rw, uint32_t slot);

#endif
