/* lockword.h - robust, fair, futex-backed cross-process mutex and a robust
 * counting semaphore over caller-supplied shared memory (no Python.h).
 *
 * See docs/design/sync-lockword.md for the protocols and why a process killed
 * at any instruction wedges nobody.
 *
 * ---- il_lock: a robust ticket lock ------------------------------------------
 *
 *   state (u64)     bits  0..31  turn: the ticket allowed to take the lock
 *                   bit   32     HELD: the waiter holding ticket `turn` has it
 *                   bit   33     DIED: the previous holder died while holding;
 *                                the next claimer takes it and gets IL_OWNERDIED
 *                   bit   34     FAST: held via il_lock_try without a ticket
 *                                (the turn stays when it ends)
 *                   bits 40..47  index of the holder's queue entry (when HELD)
 *   next_ticket     the next ticket to hand out (fetch-add / CAS)
 *   q[IL_LOCK_QUEUE] queue entries, one per thread that waits or holds:
 *                   (ident, ticket, tid) + a private futex word and a sleeping
 *                   flag, so a hand-off wakes exactly the next waiter.
 *
 * A thread takes an entry (CAS ident 0 -> its identity), takes a ticket, and
 * claims the lock with one CAS  (turn, free) -> (turn, HELD, its entry)  when
 * turn equals its ticket.  The release is one CAS (T, HELD, e) -> (T+1, free).
 * Fast path (nobody queued: next_ticket == turn): take an entry, then one CAS
 * (T, free) -> (T, HELD|FAST, e) with no ticket; its release is
 * (T, HELD|FAST, e) -> (T, free), so a waiter that took ticket T meanwhile is
 * next.
 * Waiters whose ticket comes up while they are dead (or stalled past a grace
 * period) are skipped with CAS (T, free) -> (T+1, free); a live waiter that was
 * skipped notices (turn passed its ticket) and takes a new ticket.  A holder
 * that died is detected by il_lock_check_owner (its entry's identity is no
 * longer alive) and recovered with CAS (T, HELD, e) -> (T+1, free, DIED): the
 * single CAS makes recovery race-free, and whoever claims the next turn (and
 * only it) sees DIED and returns IL_OWNERDIED.
 *
 * ---- il_sem: a counting semaphore with per-attach-slot accounting -----------
 *
 *   word (u64)      bits  0..31  value: units available
 *                   bits 32..39  marker: attach slot + 1 of the process that is
 *                                updating the accounting, 0 when idle
 *                   bits 40..63  epoch: bumped by every update (ABA guard)
 *   held[slot]      units each attach slot holds (IL_SEG_SLOTS entries)
 *   journal         (epoch, slot, held before) of the update in progress
 *
 * Every update takes the marker (CAS idle -> marked, value unchanged), writes
 * the journal, stores held[slot], and releases the marker together with the
 * new value in one CAS.  A process dying anywhere in between leaves the marker
 * with its (dead) slot; il_sem_recover_dead takes the marker over and rolls
 * held[] back from the journal (the value was never changed), so no unit is
 * lost or duplicated; then it gives the units of dead slots back.
 */
#ifndef IL_LOCKWORD_H
#define IL_LOCKWORD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "il_common.h"
#include "seg.h"

/* The lock was acquired, but its previous holder died while holding it: the
 * data it protects may need repair.  Distinct from every il_status value. */
#define IL_OWNERDIED 32
_Static_assert(IL_OWNERDIED > IL_INVALID, "IL_OWNERDIED is a new status code");

#define IL_LOCK_MAGIC 0x4B434F4Cu /* "LOCK" */
#define IL_SEM_MAGIC 0x504D4553u  /* "SEMP" */

#define IL_LOCK_QUEUE 64u                       /* entries: concurrent waiters+holder */
#define IL_LOCK_SPIN 128                        /* pause rounds before sleeping, at most */
#define IL_LOCK_SPIN_NS 50000                   /* a waiter's spin before sleeping, at most (ns) */
#define IL_LOCK_SPIN_PROBE_NS 20000             /* spin of every 16th wait, at least (ns) */
#define IL_LOCK_STALL_NS (100LL * 1000 * 1000)  /* a live turn-holder not claiming */
#define IL_SEM_HUNGRY_NS (50LL * 1000 * 1000)   /* a sem waiter posts a reservation */
#define IL_SEM_MAX_N ((UINT32_C(1) << 24) - 1)  /* units per reservation */

/* ---- il_lock ------------------------------------------------------------ */

#define IL_LOCK_TICKET_VALID (UINT64_C(1) << 32)

typedef struct il_lock_entry {
    _Atomic uint64_t ident;    /* owning thread's process identity, 0 = free */
    _Atomic uint64_t ticket;   /* IL_LOCK_TICKET_VALID | ticket; 0 while taking one */
    _Atomic uint32_t tid;      /* owning thread's gettid() */
    _Atomic uint32_t seq;      /* futex word: bumped to wake this entry's thread */
    _Atomic uint32_t sleeping; /* 1 while the thread is (about to be) asleep on seq */
    uint32_t unused;
} il_lock_entry;

typedef struct il_lock {
    _Alignas(64) _Atomic uint64_t state;
    _Atomic uint32_t next_ticket;
    _Atomic uint32_t depth;       /* recursion depth, written by the holder only */
    uint32_t magic;
    uint32_t nentries;            /* IL_LOCK_QUEUE */
    _Atomic uint32_t overflow;     /* waiters that found no free queue entry */
    _Atomic uint32_t overflow_seq; /* futex word they sleep on */
    _Atomic uint32_t spin;         /* adaptive spin: ns a waiter spins before sleeping
                                    * (a hint: relaxed stores, races harmless) */
    _Atomic uint32_t hint;         /* entry of the latest ticket taker: where the
                                    * hand-off scan starts (a hint, as spin) */
    /* statistics */
    _Alignas(64) _Atomic uint64_t acquisitions; /* successful claims (not re-entries) */
    _Atomic uint64_t contentions;  /* acquisitions that had to wait */
    _Atomic uint64_t owner_died;   /* IL_OWNERDIED returned */
    _Atomic uint64_t skipped;      /* turns skipped (dead, gone or stalled waiter) */
    _Atomic uint64_t wakes;        /* futex wake syscalls made */
    _Alignas(64) il_lock_entry q[IL_LOCK_QUEUE];
} il_lock;

/* A thread's wait in progress (process-local memory, e.g. on the C stack). */
typedef struct il_lock_waiter {
    il_lock *l;
    uint64_t ident;
    uint32_t tid;
    int32_t entry;     /* queue entry index, -1 none */
    uint32_t ticket;
    int has_ticket;
    int recursive;
    int contended;     /* set once the wait had to sleep or queue behind others */
    int in_overflow;
    uint32_t stall_turn;   /* for il_lock_check_owner: the turn seen stalled ... */
    int64_t stall_since;   /* ... since this time (0: not yet seen) */
} il_lock_waiter;

/* Format a lock in zeroed or garbage memory (no process may use it yet). */
void il_lock_init(il_lock *l);

/* IL_OK if l looks like a formatted lock, IL_CORRUPT otherwise. */
int il_lock_validate(const il_lock *l);

/* Whether the last holder died holding and nobody has claimed the lock since
 * (the DIED bit, which the next claimer takes with IL_OWNERDIED). */
static inline int il_lock_died_pending(il_lock *l)
{
    return (int)((atomic_load_explicit(&l->state, memory_order_seq_cst) >> 33) & 1u);
}

/* Fast path, no syscalls, never waits: IL_OK (or IL_OWNERDIED) when the lock
 * was free with nobody queued and is now held by (ident, tid); with recursive
 * set and the lock already held by (ident, tid), the depth grows and IL_OK is
 * returned.  IL_BUSY otherwise, IL_INVALID for a zero identity. */
int il_lock_try(il_lock *l, uint64_t ident, uint32_t tid, int recursive);

/* The slow path, in three parts so that the caller can release the GIL around
 * il_lock_wait_slice only:
 *   il_lock_wait_begin   local setup, touches no shared memory;
 *   il_lock_wait_poll    queue up if not yet queued and take the lock if it is
 *                        our turn: IL_OK / IL_OWNERDIED (acquired) or IL_BUSY.
 *                        No syscalls.
 *   il_lock_wait_slice   bounded spin, then sleep at most slice_ns; takes the
 *                        lock when woken for our turn.  IL_OK / IL_OWNERDIED
 *                        (acquired), IL_BUSY (woken, not our turn yet),
 *                        IL_TIMEOUT (the slice elapsed), IL_EINTR (a signal).
 *   il_lock_wait_cancel  give up (timeout, exception): leave the queue, passing
 *                        our turn on if it has come.
 * After each IL_TIMEOUT slice the caller runs il_lock_check_owner(l, w). */
void il_lock_wait_begin(il_lock_waiter *w, il_lock *l, uint64_t ident, uint32_t tid,
                        int recursive);
int il_lock_wait_poll(il_lock_waiter *w);
int il_lock_wait_slice(il_lock_waiter *w, int64_t slice_ns);
void il_lock_wait_cancel(il_lock_waiter *w);

/* Repairs (syscalls: liveness checks in /proc): a dead holder is recovered
 * (the next claimer gets IL_OWNERDIED); a turn whose waiter is dead or gone is
 * skipped, and with w given, also one whose live waiter has not claimed for
 * IL_LOCK_STALL_NS; entries of dead processes are freed.  Returns the number of
 * repairs made (0: nothing to do), or -IL_CORRUPT. */
int il_lock_check_owner(il_lock *l, il_lock_waiter *w);

/* Convenience for C callers: try, then wait in slices (check_owner after each
 * elapsed slice) until acquired or timeout_ns passes (< 0: no limit; 0: a pure
 * try, plus one check_owner).  IL_OK, IL_OWNERDIED, IL_TIMEOUT, IL_INVALID.
 * Signals interrupting a slice are ignored (the wait goes on). */
int il_lock_acquire(il_lock *l, uint64_t ident, uint32_t tid, int recursive, int64_t timeout_ns,
                    int64_t slice_ns);

/* Release one level: IL_OK, or IL_INVALID when (ident, tid) does not hold the
 * lock (nothing is changed then).  Wakes the next waiter only if it sleeps.
 * Called by the holding thread itself (its process is alive). */
int il_lock_release(il_lock *l, uint64_t ident, uint32_t tid);

/* As il_lock_release (last level), but the lock stays marked DIED: the next
 * claimer gets IL_OWNERDIED.  For a holder that got IL_OWNERDIED and gives
 * the lock up before it repaired anything (the news is not lost). */
int il_lock_release_died(il_lock *l, uint64_t ident, uint32_t tid);

/* Release one level on behalf of whoever holds the lock (threading.Lock lets
 * any thread release; the holder may even be dead): IL_OK, or IL_INVALID when
 * it is not held (or changed hands meanwhile). */
int il_lock_release_holder(il_lock *l);

/* The holder: 1 and (*ident, *tid, *depth) when held, 0 when free. */
int il_lock_holder(const il_lock *l, uint64_t *ident, uint32_t *tid, uint32_t *depth);

/* Threads queued or waiting (not counting the holder); approximate while the
 * lock changes hands. */
uint32_t il_lock_waiters(const il_lock *l);

typedef struct il_lock_stats {
    uint64_t acquisitions, contentions, owner_died, skipped, wakes;
} il_lock_stats;

void il_lock_read_stats(const il_lock *l, il_lock_stats *st);

/* ---- il_sem ------------------------------------------------------------- */

typedef struct il_sem {
    _Alignas(64) _Atomic uint64_t word; /* value | marker << 32 | epoch << 40 */
    uint32_t magic;
    uint32_t max;                      /* release beyond it is IL_INVALID */
    _Atomic uint32_t seq;              /* futex word of sleeping acquirers */
    _Atomic uint32_t sleepers;
    _Atomic uint64_t reserve;          /* hungry waiter: slot+1 | tid << 8 | n << 32 */
    _Alignas(64) _Atomic uint32_t j_epoch; /* journal of the update in progress */
    _Atomic uint32_t j_slot;
    _Atomic uint32_t j_held;
    _Atomic uint32_t spin;             /* adaptive spin hint, ns (as il_lock.spin) */
    _Atomic uint64_t acquisitions, contentions, recovered, wakes;
    _Alignas(64) _Atomic uint32_t held[IL_SEG_SLOTS];
    /* Sleepers per attach slot: `sleepers` above is what the wake path reads
     * (one load), slp[] attributes it, so that il_sem_recover_dead can take a
     * dead slot's sleepers out of `sleepers` exactly (sync-lockword.md 2.4). */
    _Alignas(64) _Atomic uint32_t slp[IL_SEG_SLOTS];
} il_sem;

typedef struct il_sem_waiter {
    il_sem *s;
    uint32_t slot;
    uint32_t tid;
    uint32_t n;
    int64_t since;   /* when the wait began */
    int reserved;    /* this waiter posted the reservation */
} il_sem_waiter;

/* Format: `value` units available, releases may raise it up to `max`
 * (BoundedSemaphore: max = value; Semaphore: max = UINT32_MAX). */
int il_sem_init(il_sem *s, uint32_t value, uint32_t max);
int il_sem_validate(const il_sem *s);

/* Take n units for attach slot `slot` without sleeping: IL_OK, IL_BUSY (not
 * enough units, or the accounting is being updated by another process for
 * longer than a short spin: call il_sem_recover_dead if that lasts),
 * IL_INVALID (bad slot or n). */
int il_sem_try_acquire(il_sem *s, uint32_t slot, uint32_t n);

/* Give n units back: IL_OK, IL_INVALID when value + n would exceed max
 * (nothing changed), IL_BUSY as above.  The slot's held count drops by
 * min(n, held): units released by a slot that did not acquire them are not
 * charged to it. */
int il_sem_release(il_sem *s, uint32_t slot, uint32_t n);

/* Blocking acquire in slices, as for the lock.  wait_slice returns IL_OK
 * (acquired), IL_BUSY (woken, try again), IL_TIMEOUT (slice elapsed: call
 * il_sem_recover_dead), IL_EINTR.  A sleeping waiter is counted in
 * `sleepers` and in slp[slot]; a dead slot's count is removed by recovery.
 * A waiter that has waited IL_SEM_HUNGRY_NS posts the (single) reservation: while it stands, other acquirers leave its
 * n units alone.  wait_cancel withdraws the reservation. */
void il_sem_wait_begin(il_sem_waiter *w, il_sem *s, uint32_t slot, uint32_t tid, uint32_t n);
int il_sem_wait_slice(il_sem_waiter *w, int64_t slice_ns);
void il_sem_wait_cancel(il_sem_waiter *w);

/* Recovery (liveness checks): finishes an update whose process died (rolls it
 * back from the journal), returns the units of attach slots whose process is
 * dead (or that were detached), drops a dead slot's reservation.  my_slot is
 * the caller's own attach slot.  Also takes the sleepers of dead slots out of
 * the sleepers count.  Returns the number of units given back
 * (>= 0), or -IL_BUSY / -IL_CORRUPT. */
int64_t il_sem_recover_dead(il_sem *s, il_seg_header *hdr, uint32_t my_slot);

/* Convenience loop (tests, C callers): IL_OK, IL_TIMEOUT, IL_INVALID. */
int il_sem_acquire(il_sem *s, il_seg_header *hdr, uint32_t slot, uint32_t tid, uint32_t n,
                   int64_t timeout_ns, int64_t slice_ns);

uint32_t il_sem_value(const il_sem *s);
uint32_t il_sem_waiters(const il_sem *s);
uint32_t il_sem_held(const il_sem *s, uint32_t slot);
/* Sleepers attributed to `slot` (slp[slot]). */
uint32_t il_sem_sleepers(const il_sem *s, uint32_t slot);
/* Non-zero if `slot` still has units, sleepers, the update marker or the
 * reservation: such a slot must not be freed (its next user would inherit them and
 * recovery, which keys on the slot's liveness, could never undo them). */
int il_sem_names_slot(const il_sem *s, uint32_t slot);

typedef struct il_sem_stats {
    uint64_t acquisitions, contentions, recovered, wakes;
} il_sem_stats;

void il_sem_read_stats(const il_sem *s, il_sem_stats *st);

#endif
