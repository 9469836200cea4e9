/* queueword.h - the native core of interlink.Queue: many producers, many
 * consumers, priorities, bounded waits, owner-death recovery and durable
 * (acknowledged) delivery, over caller-supplied memory (no Python.h).
 *
 * See docs/design/queue-core.md for the protocol, the crash analysis and the
 * decisions.  In short:
 *
 *   [il_q control block][entry table: N x 64 B][heap: N x 16 B][free stack: N x 4 B]
 *   [arena: payload bytes, 4096-aligned]
 *
 * The ENTRY TABLE is the source of truth.  Each entry's state and owner live
 * in one 64-bit word `sw` (state << 60 | owner identity), so every state
 * transition is a single store:
 *
 *     FREE --reserve--> WRITING(producer) --commit--> READY --take--> TAKEN(consumer)
 *      ^                   |  abort / producer dead                      |
 *      +-------------------+------------------------ release / ack ------+
 *                          READY <-- nack, or durable consumer dead -----+
 *
 * Everything else - the priority heap, the free-entry stack, the
 * address-ordered ring of live payload extents that the arena allocator walks,
 * the counters - is DERIVED: it is rebuilt from the entry table whenever a
 * process died inside a critical section (the next holder of the queue mutex
 * gets OWNERDIED and repairs before doing anything else).  The one piece of
 * state that is not derivable, the JoinableQueue unfinished-task count, is
 * kept consistent with the entry table by a one-record journal.
 *
 * All mutations happen under the queue mutex (a robust barging mutex: the
 * holder's identity in one word, spin then futex, dead holder taken over with
 * one CAS).  Payload copies of large messages happen outside it: reserve
 * (lock), copy, commit (lock).
 */
#ifndef IL_QUEUEWORD_H
#define IL_QUEUEWORD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "il_common.h"

/* The mutex was taken over from a holder that died; the queue has been
 * repaired.  Only returned by il_q_lock (ops repair and carry on).  Same value
 * as lockword.h's IL_OWNERDIED. */
#define IL_Q_OWNERDIED 32

#define IL_Q_MAGIC 0x45555149u /* "IQUE" */
#define IL_Q_VERSION 1u
#define IL_Q_ALIGN 64u           /* payload extents are 64-byte aligned */
#define IL_Q_ARENA_ALIGN 4096u   /* the arena starts on a page */
#define IL_Q_MAX_ENTRIES (1u << 24)
#define IL_Q_NONE 0xFFFFFFFFu    /* no entry */
#define IL_Q_WAITSLOTS 64u       /* registered waiters (for dead-waiter repair) */
#define IL_Q_INLINE_COPY 4096u   /* payloads up to this are copied under the mutex */
#define IL_Q_SPIN 100            /* pause rounds before sleeping on the mutex */
#define IL_Q_LOCK_SLICE_NS (5LL * 1000 * 1000) /* mutex sleep slice, then owner check */

/* Flags given to il_q_init. */
#define IL_Q_DURABLE 1u /* a dead consumer's TAKEN entries go back to READY */

/* Entry states (top nibble of sw). */
enum il_q_state {
    IL_Q_FREE = 0,
    IL_Q_WRITING = 1,
    IL_Q_READY = 2,
    IL_Q_TAKEN = 3,
};

#define IL_Q_STATE_SHIFT 60
#define IL_Q_LOCK_CONTENDED (UINT64_C(1) << 63) /* someone may sleep on the mutex */
#define IL_Q_WAITSLOT_TOMB 3u /* kind of a waitslot being cleared by a recoverer */
#define IL_Q_OWNER_MASK ((UINT64_C(1) << 60) - 1)

typedef struct il_q_entry {
    _Atomic uint64_t sw;  /* state << 60 | owner identity (0 when FREE or READY) */
    uint64_t seq;         /* commit order (global FIFO); kept by nack/redelivery */
    uint64_t off;         /* payload offset in the arena (multiple of IL_Q_ALIGN) */
    uint64_t len;         /* payload bytes */
    int32_t prio;         /* higher first */
    uint32_t deliveries;  /* times taken (durable: > 1 means redelivered) */
    uint32_t prev, next;  /* address-ordered ring of live extents (derived) */
    uint32_t tag;         /* free for the glue (codec id ...) */
    uint32_t unused;
    uint64_t reserved;
} il_q_entry;

_Static_assert(sizeof(il_q_entry) == 64, "entry is one cache line");

typedef struct il_q_node {
    int32_t prio;
    uint32_t entry;
    uint64_t seq;
} il_q_node;

/* Waiter kinds (il_q_wait_begin). */
enum il_q_wait_kind {
    IL_Q_WAIT_GET = 0,  /* wait for a READY message */
    IL_Q_WAIT_PUT = 1,  /* wait for room (entries, arena, maxsize) */
    IL_Q_WAIT_JOIN = 2, /* wait for unfinished == 0 */
};

typedef struct il_q_waitq {
    _Alignas(64) _Atomic uint32_t seq;  /* futex word, bumped by wakers */
    _Atomic uint32_t overflow;          /* registered waiters without a waitslot */
    _Atomic uint64_t mask;              /* bit i: waitslot i holds a waiter of this kind */
    _Atomic uint64_t spin_mask;         /* bit i: that waiter is spinning (awake, polling) */
    _Atomic uint32_t pending;           /* 1: a single wake is on its way (see wake_kind) */
    uint32_t unused;
} il_q_waitq;

typedef struct il_q {
    /* geometry (written once by il_q_init, validated by il_q_validate) */
    _Alignas(64) _Atomic uint32_t magic; /* stored last by il_q_init */
    uint32_t version;
    uint32_t flags;
    uint32_t nentries;
    uint32_t maxsize;       /* READY + WRITING may not exceed it (0: nentries) */
    uint32_t unused0;
    uint64_t arena_bytes;
    uint64_t total_size;
    uint64_t entries_off, heap_off, free_off, arena_off; /* from the start of il_q */

    /* durability */
    _Alignas(64) uint64_t boot_id[2]; /* /proc/sys/kernel/random/boot_id of the last opener */
    _Atomic uint32_t broken;          /* repair found the entry table inconsistent */

    /* the mutex: 0 free, else the holder's identity | IL_Q_LOCK_CONTENDED */
    _Alignas(64) _Atomic uint64_t lock;

    /* state under the mutex (atomics so that waits and stats read them lock-free) */
    _Alignas(64) _Atomic uint32_t n_ready;
    _Atomic uint32_t n_writing;
    _Atomic uint32_t n_taken;
    _Atomic uint32_t heap_len;
    _Atomic uint32_t free_len;
    _Atomic uint32_t n_live;  /* extents in the address ring = WRITING+READY+TAKEN */
    _Atomic uint32_t cursor;  /* next-fit position: an entry in the ring, or IL_Q_NONE */
    _Atomic uint32_t arena_starved; /* a reserve failed for arena space: free wakes all */
    _Atomic uint64_t next_seq;
    _Atomic uint64_t unfinished; /* JoinableQueue: committed puts minus task_done */
    _Atomic uint64_t arena_used; /* bytes of live extents */
    /* journal of a commit in progress (unfinished is not derivable) */
    _Atomic uint32_t j_op;      /* 0 idle, 1 commit */
    _Atomic uint32_t j_entry;
    _Atomic uint64_t j_seq;
    _Atomic uint64_t j_unfinished;

    il_q_waitq wq[3]; /* GET, PUT, JOIN */

    /* recovery rate limit */
    _Alignas(64) _Atomic int64_t last_scan_ns;

    /* statistics (relaxed, approximate) */
    _Alignas(64) _Atomic uint64_t puts, gets, acks, nacks, redelivered, dropped, abandoned,
        owner_died, wakes, lock_wakes, lock_contended;

    /* registered waiters: identity | kind << 60, 0 free */
    _Alignas(64) _Atomic uint64_t waitslot[IL_Q_WAITSLOTS];
} il_q;

/* A process-local handle: the geometry read once and validated, so that
 * every later access is bounded by local values that shared memory cannot
 * change under us. */
typedef struct il_qh {
    il_q *q;
    il_q_entry *ent;
    il_q_node *heap;
    uint32_t *stk;
    uint8_t *arena;
    uint32_t n;
    uint32_t maxsize;
    uint32_t flags;
    uint32_t unused;
    uint64_t arena_bytes;
} il_qh;

/* A message as seen by a producer (after reserve) or a consumer (after take). */
typedef struct il_q_msg {
    uint32_t entry;
    uint32_t deliveries;
    int32_t prio;
    uint32_t tag;
    uint64_t seq;
    uint64_t off;  /* arena offset */
    uint64_t len;
    int copied;    /* il_q_take with a buffer: payload copied, entry already freed */
} il_q_msg;

/* One item of il_q_put_many. */
typedef struct il_q_item {
    const void *data;
    uint64_t len;
    int32_t prio;
    uint32_t tag;
} il_q_item;

/* ---- geometry ----------------------------------------------------------- */

/* Bytes needed for a queue of nentries entries and an arena of arena_bytes
 * (rounded up to IL_Q_ALIGN); 0 when the arguments are out of range. */
uint64_t il_q_size_for(uint32_t nentries, uint64_t arena_bytes);

/* Format `size` bytes at mem (64-byte aligned, zeroed or garbage; nobody may
 * use it yet).  maxsize 0 means "nentries".  IL_OK or IL_INVALID. */
int il_q_init(il_qh *h, void *mem, uint64_t size, uint32_t nentries, uint64_t arena_bytes,
              uint32_t maxsize, uint32_t flags);

/* Check the geometry of a queue someone else formatted and fill the handle:
 * IL_OK, IL_CORRUPT, or IL_INFLIGHT (magic not stored yet: still formatting).
 * (Entries and derived data are checked by every operation that reads them,
 * and all at once by il_q_check.) */
int il_q_attach(il_qh *h, void *mem, uint64_t size);

/* Pointer to the payload of a message (reserved or taken), or NULL when its
 * offset/length do not fit the arena. */
void *il_q_payload(il_qh *h, const il_q_msg *m);

/* ---- the mutex ---------------------------------------------------------- */

/* Take the queue mutex, waiting at most budget_ns (0: spin only, < 0: no
 * limit).  IL_OK; IL_Q_OWNERDIED (taken over from a dead holder and the queue
 * repaired; IL_CORRUPT instead if the repair failed, then the mutex is not
 * held); IL_BUSY (budget ran out); IL_EINTR (a signal: the caller checks and
 * retries); IL_INVALID (ident 0 or wider than 60 bits).
 * Exposed for tests and il_q_check; the operations below call it themselves. */
int il_q_lock(il_qh *h, uint64_t ident, int64_t budget_ns);
void il_q_unlock(il_qh *h);

/* ---- producer ----------------------------------------------------------- */

/* Reserve an entry and `len` payload bytes: IL_OK and *m (write the payload at
 * il_q_payload, then commit or abort); IL_FULL (maxsize reached, no free entry
 * or no contiguous arena space now: wait IL_Q_WAIT_PUT and retry); IL_TOOBIG
 * (len > arena: can never fit); IL_BUSY/IL_EINTR (mutex, see il_q_lock);
 * IL_CORRUPT; IL_INVALID (ident 0). */
int il_q_reserve(il_qh *h, uint64_t ident, uint64_t len, int32_t prio, uint32_t tag,
                 int64_t lock_ns, il_q_msg *m);

/* Publish a reserved message (WRITING -> READY), waking a sleeping consumer.
 * IL_OK; IL_INVALID when (entry, ident) is not our reservation. */
int il_q_commit(il_qh *h, uint64_t ident, const il_q_msg *m, int64_t lock_ns);

/* Give a reservation back (WRITING -> FREE). */
int il_q_abort(il_qh *h, uint64_t ident, const il_q_msg *m, int64_t lock_ns);

/* reserve + copy + commit; payloads up to IL_Q_INLINE_COPY in one mutex hold.
 * A larger payload is copied outside the mutex; its commit then waits for the
 * mutex without the lock_ns limit (never leaving a reservation behind), so a
 * caller that must stay interruptible uses reserve/commit itself. */
int il_q_put(il_qh *h, uint64_t ident, const void *data, uint64_t len, int32_t prio,
             uint32_t tag, int64_t lock_ns);

/* Put items in order, as many as fit now: IL_OK when all n went in, else the
 * status that stopped it (IL_FULL, IL_TOOBIG, ...) with *done items put. */
int il_q_put_many(il_qh *h, uint64_t ident, const il_q_item *items, uint32_t n,
                  int64_t lock_ns, uint32_t *done);

/* ---- consumer ----------------------------------------------------------- */

/* Take the highest-priority READY message (FIFO within a priority): IL_OK and
 * *m; IL_EMPTY.  If buf is not NULL and the payload fits in buflen bytes and
 * in IL_Q_INLINE_COPY, it is copied there and the entry freed in the same
 * mutex hold (m->copied = 1);
 * otherwise the entry stays TAKEN by ident: read it at il_q_payload (zero
 * copy), then il_q_release (done, or ack) or il_q_nack. */
int il_q_take(il_qh *h, uint64_t ident, void *buf, uint64_t buflen, int64_t lock_ns,
              il_q_msg *m);

/* Take up to n messages in one mutex hold (all stay TAKEN): IL_OK with
 * *got >= 1, or IL_EMPTY. */
int il_q_take_many(il_qh *h, uint64_t ident, il_q_msg *ms, uint32_t n, int64_t lock_ns,
                   uint32_t *got);

/* TAKEN -> FREE (a consumed view, or an ack).  IL_INVALID when the entry is not
 * TAKEN by ident with that seq (double release, or redelivered after the
 * holder was presumed dead - cannot happen while it lives). */
int il_q_release(il_qh *h, uint64_t ident, const il_q_msg *m, int64_t lock_ns);
int il_q_release_many(il_qh *h, uint64_t ident, const il_q_msg *ms, uint32_t n,
                      int64_t lock_ns);

/* TAKEN -> READY at its original place (same priority and seq). */
int il_q_nack(il_qh *h, uint64_t ident, const il_q_msg *m, int64_t lock_ns);

/* JoinableQueue.task_done(): IL_OK, or IL_INVALID when called more times than
 * messages were put (nothing changed). */
int il_q_task_done(il_qh *h, uint64_t ident, uint64_t n, int64_t lock_ns);

/* ---- waiting ------------------------------------------------------------ */

typedef struct il_q_waiter {
    il_qh *h;
    uint64_t ident;
    int kind;
    int32_t slot;   /* waitslot index, -1 none */
    uint32_t snap;  /* futex value seen before the last attempt */
} il_q_waiter;

/* Try first without registering (registered waiters cost the other side a
 * wake syscall); when the attempt fails, register BEFORE the next attempt
 * (begin, spinning(.., 0) and each sleep re-arm the waiter: they take a new
 * futex snapshot and clear the waitq's wake-pending flag, so every sleep is
 * preceded by an attempt made after the re-arm):
 *     rc = attempt();
 *     if (rc == IL_EMPTY/IL_FULL) {
 *         il_q_wait_begin(&w, ...);
 *         for (;;) { rc = attempt(); if (rc != IL_EMPTY/IL_FULL) break;
 *                    rc = il_q_wait_sleep(&w, slice); ...signals/deadline... }
 *         il_q_wait_end(&w, rc == IL_OK);
 *     }
 * il_q_wait_sleep sleeps at most slice_ns unless something changed since the
 * last begin/sleep: IL_OK (woken or changed: retry), IL_TIMEOUT (slice elapsed:
 * retry, and run il_q_recover_dead if il_q_recover_due), IL_EINTR. */
void il_q_wait_begin(il_q_waiter *w, il_qh *h, uint64_t ident, int kind);
int il_q_wait_sleep(il_q_waiter *w, int64_t slice_ns);
/* satisfied: the wait ended with the attempt succeeding.  A GET waiter that
 * leaves unsatisfied (timeout, signal) while messages are READY passes a
 * wake-up on, in case it was the one woken for them. */
void il_q_wait_end(il_q_waiter *w, int satisfied);

/* A registered GET waiter announces that it is awake and polling (on = 1)
 * or about to sleep (on = 0).  While any GET waiter spins, producers make no
 * wake syscall (the spinner will see the message); a consumer that takes a
 * message and leaves others READY wakes a sleeper if nobody spins.  Turning
 * it off re-snapshots the futex word: retry the attempt before sleeping. */
void il_q_wait_spinning(il_q_waiter *w, int on);

/* ---- recovery ----------------------------------------------------------- */

typedef struct il_q_recovered {
    uint32_t abandoned;   /* WRITING entries of dead producers freed */
    uint32_t redelivered; /* durable: TAKEN entries of dead consumers made READY */
    uint32_t dropped;     /* non-durable: TAKEN entries of dead consumers freed */
    uint32_t waiters;     /* registrations of dead waiters removed */
} il_q_recovered;

/* 1 (and the caller should run il_q_recover_dead) when no scan ran in the
 * last interval_ns; claims the scan for this caller. */
int il_q_recover_due(il_qh *h, int64_t interval_ns);

/* Find entries owned by dead processes (liveness checks without the mutex),
 * then fix them under it.  IL_OK (out may be NULL), IL_BUSY/IL_EINTR, IL_CORRUPT. */
int il_q_recover_dead(il_qh *h, uint64_t ident, int64_t lock_ns, il_q_recovered *out);

/* Full consistency check under the mutex: the entry table against the derived
 * data (heap, free stack, extent ring, counters).  IL_OK or IL_CORRUPT. */
int il_q_check(il_qh *h, uint64_t ident, int64_t lock_ns);

/* ---- durability --------------------------------------------------------- */

/* This boot's id (/proc/sys/kernel/random/boot_id as two u64).  IL_OK or
 * IL_INVALID when it cannot be read. */
int il_q_read_boot_id(uint64_t out[2]);

/* 1 if the queue was last opened during boot `boot`. */
int il_q_same_boot(const il_qh *h, const uint64_t boot[2]);

/* After a machine restart every owner recorded in the queue is dead, but their
 * pid + start-time identities may be reused.  Reset the mutex and the waiter
 * registrations, return WRITING entries to FREE and TAKEN ones to READY
 * (durable) or FREE, rebuild all derived data and store `boot`.  The caller
 * must guarantee that no other process uses the queue meanwhile (an exclusive
 * file lock) and that every process checks il_q_same_boot under that lock
 * before its first operation.  IL_OK or IL_CORRUPT. */
int il_q_reboot_recover(il_qh *h, const uint64_t boot[2], il_q_recovered *out);

/* Store `boot` (a freshly formatted queue). */
void il_q_set_boot(il_qh *h, const uint64_t boot[2]);

/* ---- observation -------------------------------------------------------- */

typedef struct il_q_stats {
    uint32_t ready, writing, taken, free_entries, nentries, maxsize;
    uint64_t unfinished, arena_bytes, arena_used;
    uint64_t puts, gets, acks, nacks, redelivered, dropped, abandoned, owner_died, wakes,
        lock_wakes, lock_contended;
} il_q_stats;

/* Lock-free snapshot (counters may be mid-update). */
void il_q_read_stats(const il_qh *h, il_q_stats *st);

static inline uint32_t il_q_qsize(const il_qh *h)
{
    return atomic_load_explicit(&h->q->n_ready, memory_order_relaxed);
}

/* Rebuild all derived data from the entry table under the mutex (for a
 * queue whose derived data failed a check): IL_OK or IL_CORRUPT. */
int il_q_repair(il_qh *h, uint64_t ident, int64_t lock_ns);

#endif
