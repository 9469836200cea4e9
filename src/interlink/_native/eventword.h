/* eventword.h - cross-process Event, Condition and Barrier words over
 * caller-supplied shared memory (plain C11, no Python.h).
 *
 * See docs/design/sync-events.md for the protocols and the crash analysis.
 *
 * ---- il_event ---------------------------------------------------------------
 *   word (u32, the futex word)   bit 0 SET, bits 1..31 generation: bumped by
 *                                every set() that finds the flag clear, so a
 *                                waiter that saw generation g returns True
 *                                even if clear() ran before it woke.
 *   sleepers                     waiters (about to be) asleep: set() makes a
 *                                wake syscall only when it is non-zero.
 *   slp[slot]                    the same, per attach slot (seg.h): a dead
 *                                process's sleepers are taken out of
 *                                `sleepers` by il_event_recover_sleepers.
 *
 * ---- il_cond ----------------------------------------------------------------
 *   A table of waiter entries.  An entry's `word` packs the waiter's process
 *   identity (proc.h, bits 0..59) with its state (bits 60..63: CLAIMING,
 *   WAITING, NOTIFIED), so every transition - notify, cancel on timeout,
 *   reclaim of a dead waiter's entry - is one CAS on one word.  A waiter
 *   registers (while holding the user's lock), releases the lock, sleeps on
 *   the entry's private futex word in bounded slices and re-checks its state
 *   after each slice.  notify(n) (under the user's lock) marks the n oldest
 *   live WAITING entries NOTIFIED (FIFO by ticket); entries of dead waiters
 *   are freed and skipped, so they never swallow a notification.  A notifier
 *   dying half-way leaves entries NOTIFIED or WAITING, both consistent: a
 *   NOTIFIED waiter sees it at its next slice even if the wake never came.
 *
 * ---- il_barrier -------------------------------------------------------------
 *   word (u64)     bits 0..15 count (parties arrived in this generation),
 *                  bit 16 BROKEN, bits 32..63 generation
 *   entries        one per waiting thread: identity, tid, and `gs` =
 *                  generation << 8 | state (WAITING / BROKEN), so that a
 *                  reset can tell each waiter of the reset generation that it
 *                  was broken, after the generation has moved on.
 *   seq, sleepers  futex word bumped at every state change; wake only if
 *                  someone sleeps.  Each sleeper also flags its entry
 *                  (`sleeping`), so freeing a dead waiter's entry takes its
 *                  sleeper out of `sleepers`.
 *   A party registers its entry (WAITING, generation g) before the arrival
 *   CAS (g, c) -> (g, c+1); the last arrival (c+1 == parties) runs the action
 *   and completes with (g, parties) -> (g+1, 0).  Waiters check the entries
 *   every IL_BARRIER_CHECK_NS: an entry of the current generation whose
 *   process is dead breaks the barrier.
 */
#ifndef IL_EVENTWORD_H
#define IL_EVENTWORD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "il_common.h"
#include "seg.h"

/* The barrier is broken (threading.BrokenBarrierError). */
#define IL_BROKEN 33

#define IL_EVENT_MAGIC 0x544E5645u   /* "EVNT" */
#define IL_COND_MAGIC 0x444E4F43u    /* "COND" */
#define IL_BARRIER_MAGIC 0x52524142u /* "BARR" */

#define IL_COND_ENTRIES 128u
#define IL_BARRIER_ENTRIES 128u
#define IL_BARRIER_MAX_PARTIES IL_BARRIER_ENTRIES
#define IL_BARRIER_CHECK_NS (100LL * 1000 * 1000) /* dead-party scan period */

/* ---- il_event ------------------------------------------------------------ */

typedef struct il_event {
    _Alignas(64) _Atomic uint32_t word;
    _Atomic uint32_t sleepers;
    uint32_t magic;
    uint32_t unused;
    _Atomic uint64_t sets, wakes; /* statistics */
    _Alignas(64) _Atomic uint32_t slp[IL_SEG_SLOTS]; /* sleepers per attach slot */
} il_event;

void il_event_init(il_event *e);
int il_event_validate(const il_event *e);
int il_event_is_set(const il_event *e);
/* The word to pass to il_event_wait_slice (read once when the wait begins). */
uint32_t il_event_snapshot(const il_event *e);
/* 1 if set, or set (then maybe cleared) since `snap` was taken. */
int il_event_signalled(const il_event *e, uint32_t snap);
/* Set the flag and wake every sleeper (a syscall only if one sleeps). */
void il_event_set(il_event *e);
void il_event_clear(il_event *e);
/* IL_OK (signalled), IL_TIMEOUT (slice elapsed), IL_EINTR, IL_BUSY (woken,
 * not signalled); IL_INVALID for a bad slot.  `slot`: the caller's attach
 * slot, which its sleep is counted against. */
int il_event_wait_slice(il_event *e, uint32_t slot, uint32_t snap, int64_t slice_ns);
/* Take the sleepers of attach slots whose process is dead (or that were
 * freed) out of the sleepers count (liveness checks, only for slots that have
 * sleepers).  Returns how many were taken out. */
uint32_t il_event_recover_sleepers(il_event *e, il_seg_header *hdr);
/* Sleepers: all (what set() reads) and those of one slot.  A slot with
 * sleepers must not be freed. */
uint32_t il_event_sleepers(const il_event *e);
uint32_t il_event_slot_sleepers(const il_event *e, uint32_t slot);

/* ---- il_cond ------------------------------------------------------------- */

#define IL_COND_CLAIMING 1u
#define IL_COND_WAITING 2u
#define IL_COND_NOTIFIED 3u
#define IL_COND_STATE_SHIFT 60

typedef struct il_cond_entry {
    _Atomic uint64_t word;     /* ident | state << 60, 0 = free */
    _Atomic uint64_t ticket;   /* arrival order (FIFO notify) */
    _Atomic uint32_t tid;
    _Atomic uint32_t futex;    /* bumped by the notifier */
    _Atomic uint32_t sleeping; /* the waiter is (about to be) asleep on futex */
    uint32_t unused;
} il_cond_entry;

typedef struct il_cond {
    _Alignas(64) _Atomic uint64_t next_ticket;
    uint32_t magic;
    uint32_t nentries;
    _Atomic uint64_t notified, wakes, reclaimed; /* statistics */
    _Alignas(64) il_cond_entry q[IL_COND_ENTRIES];
} il_cond;

void il_cond_init(il_cond *c);
int il_cond_validate(const il_cond *c);
/* Register a waiter (the caller holds the user's lock): IL_OK and *entry, or
 * IL_NOSLOT when every entry belongs to a live waiter. */
int il_cond_register(il_cond *c, uint64_t ident, uint32_t tid, uint32_t *entry);
/* IL_OK (notified), IL_BUSY (woken / not yet), IL_TIMEOUT (slice elapsed),
 * IL_EINTR. */
int il_cond_wait_slice(il_cond *c, uint32_t entry, uint64_t ident, int64_t slice_ns);
/* End the wait (notified, timeout or exception): frees the entry.  Returns 1
 * if the waiter was notified (a notify that raced with a timeout counts), 0
 * otherwise. */
int il_cond_leave(il_cond *c, uint32_t entry, uint64_t ident);
/* Notify up to n (n < 0: all) live waiters, oldest first; entries of dead
 * processes are freed on the way (self_ident is known alive: no /proc read).
 * Returns how many were notified. */
uint32_t il_cond_notify(il_cond *c, int64_t n, uint64_t self_ident);
uint32_t il_cond_waiters(const il_cond *c);
/* Free the entries of dead processes; returns how many. */
uint32_t il_cond_reclaim(il_cond *c, uint64_t self_ident);

/* ---- il_barrier ---------------------------------------------------------- */

#define IL_BARRIER_BROKEN_BIT (UINT64_C(1) << 16)
#define IL_BARRIER_COUNT_MASK UINT64_C(0xFFFF)
#define IL_BARRIER_WAITING 1u
#define IL_BARRIER_MARKED 2u /* broken by a reset of its generation */

typedef struct il_barrier_entry {
    _Atomic uint64_t ident; /* 0 = free */
    _Atomic uint64_t gs;    /* generation << 8 | state */
    _Atomic uint32_t tid;
    _Atomic uint32_t sleeping; /* 1 while its thread is counted in sleepers */
} il_barrier_entry;

typedef struct il_barrier {
    _Alignas(64) _Atomic uint64_t word;
    _Atomic uint32_t seq;
    _Atomic uint32_t sleepers;
    uint32_t magic;
    uint32_t parties;
    _Atomic uint64_t completed, broken_count, wakes; /* statistics */
    _Alignas(64) il_barrier_entry q[IL_BARRIER_ENTRIES];
} il_barrier;

/* A thread's wait (process-local). */
typedef struct il_barrier_waiter {
    il_barrier *b;
    uint64_t ident;
    int32_t entry;  /* -1: none */
    uint32_t gen;   /* generation arrived in */
    uint32_t index; /* arrival index */
    int last;       /* this arrival completed the count */
} il_barrier_waiter;

int il_barrier_init(il_barrier *b, uint32_t parties);
int il_barrier_validate(const il_barrier *b);
/* Claim an entry: IL_OK or IL_NOSLOT. */
int il_barrier_enter(il_barrier_waiter *w, il_barrier *b, uint64_t ident, uint32_t tid);
/* Count this party in: IL_OK (w->index, w->gen, w->last), IL_BROKEN, or
 * IL_BUSY (the count is full: the last party is running the action; wait for
 * the next generation with il_barrier_sleep and try again). */
int il_barrier_arrive(il_barrier_waiter *w);
/* The snapshot to pass to il_barrier_sleep. */
uint32_t il_barrier_seq(const il_barrier *b);
/* Sleep while seq == snap, at most slice_ns: IL_OK, IL_TIMEOUT, IL_EINTR
 * (IL_INVALID without an entry).  The sleep is flagged in w's entry. */
int il_barrier_sleep(il_barrier_waiter *w, uint32_t snap, int64_t slice_ns);
/* Threads counted asleep (what a state change reads to decide on a wake). */
uint32_t il_barrier_sleepers(const il_barrier *b);
/* Where an arrived waiter stands: IL_OK (its generation completed),
 * IL_BROKEN, IL_BUSY (still waiting). */
int il_barrier_status(il_barrier_waiter *w);
/* Last party: (g, parties) -> (g+1, 0), waking everyone.  IL_OK, or IL_BROKEN
 * when the generation is broken, or when a party counted in it has died (then
 * this call breaks it: a generation never completes with a dead party that
 * died before this check).  Reads /proc once per other waiting party. */
int il_barrier_complete(il_barrier_waiter *w);
/* Break the barrier (abort(), a timeout, an exception in the action) if it is
 * still in generation gen (gen < 0: whatever the generation). */
void il_barrier_break(il_barrier *b, int64_t gen);
/* Scan for dead parties of the current generation; breaks the barrier and
 * returns 1 if one was found; frees dead entries (taking a dead sleeper out
 * of the sleepers count first). */
int il_barrier_check(il_barrier *b, uint64_t self_ident);
/* reset(): waiters of the current generation get IL_BROKEN, the barrier is
 * empty and unbroken again. */
void il_barrier_reset(il_barrier *b);
void il_barrier_leave(il_barrier_waiter *w);
uint32_t il_barrier_n_waiting(const il_barrier *b);
int il_barrier_broken(const il_barrier *b);

#endif
