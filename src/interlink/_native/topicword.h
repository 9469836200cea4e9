/* topicword.h - publish/subscribe over shared memory: one single-writer ring
 * per publisher, many readers with their own cursors (interlink.Topic).
 *
 * Plain C11, no Python.h.  An algorithm over caller-supplied memory that
 * returns il_status codes; docs/design/topic.md explains the choices.
 *
 * Layout of the topic area (it follows the segment header page):
 *
 *     [il_topic_ctrl, 256 B][publisher slots npub x 128 B]
 *     [subscriber slots nsub x sub_stride][page align]
 *     [ring 0][ring 1]...[ring npub-1]     each ring_bytes (a power of two)
 *
 * A publisher slot is owned by one process (identity from proc.h) and its
 * ring has exactly one writer: no reservation CAS.  Records are
 * [len u32 | flags u32 | seq u64][payload, padded to 16]; `head` (release
 * store) is the commit, so a writer killed at any instruction leaves no
 * partial record visible.  `tail` is the oldest intact record; the writer
 * moves it forward (record by record) before it overwrites anything.
 *
 * A subscriber slot holds an identity and one cursor per ring (the position
 * of its next record).  Under IL_TOPIC_BLOCK a publisher moves `tail` only
 * past records every live subscriber has consumed; under IL_TOPIC_DROP it
 * never waits, and a reader validates every copy against `tail` afterwards
 * (seqlock style): a record overwritten while it was copied is detected, the
 * reader jumps to `tail`, and the per-ring message sequence numbers make the
 * lost count exact.
 */
#ifndef IL_TOPICWORD_H
#define IL_TOPICWORD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IL_TOPIC_MAGIC UINT64_C(0x3143504F544C4921) /* "!ILTOPC1" */
#define IL_TOPIC_VERSION 2u
#define IL_TOPIC_DROP 0u
#define IL_TOPIC_BLOCK 1u
#define IL_TOPIC_MAX_PUB 64u
#define IL_TOPIC_MAX_SUB 1024u
#define IL_TOPIC_MIN_RING 4096u
#define IL_TOPIC_MAX_RING (UINT64_C(1) << 36)
#define IL_TOPIC_REC_HDR 16u
#define IL_TOPIC_REC_PAD 1u /* flags: a pad record (no message) at the end of the ring */
/* A subscriber slot's owner word while it is being set up: publishers treat
 * it as "consumed nothing" (under BLOCK they do not move tail). */
#define IL_TOPIC_JOINING (UINT64_C(1) << 60)
/* Records a reader may hold (zero-copy views) per ring at once. */
#define IL_TOPIC_HOLD_MAX 16u
/* Internal status of il_topic_sub_consume: the copy was overwritten. */
#define IL_TOPIC_LAPPED 100

typedef struct il_topic_ctrl {
    _Atomic uint64_t magic; /* stored last, with release, by il_topic_init */
    uint32_t version;
    uint32_t policy;
    uint32_t npub;
    uint32_t nsub;
    uint64_t ring_bytes;
    uint64_t total; /* bytes of the whole area */
    _Atomic uint32_t pub_hwm; /* publisher slots ever used: readers scan [0, hwm) */
    uint32_t reserved0;
    uint8_t pad0[64 - 48];
    _Atomic uint32_t data_seq;   /* futex word: bumped by a publisher that wakes sleepers */
    _Atomic uint32_t data_armed; /* 1: a subscriber went to sleep since the last wake */
    uint8_t pad1[64 - 8];
    _Atomic uint32_t space_seq;      /* bumped by subscribers when space_sleepers != 0 */
    _Atomic uint32_t space_sleepers; /* BLOCK publishers asleep waiting for room */
    uint8_t pad2[64 - 8];
    _Atomic uint64_t published; /* statistics (all rings) */
    _Atomic uint64_t reaped;    /* dead subscribers removed from the wait set */
    uint8_t pad3[64 - 16];
} il_topic_ctrl;

typedef struct il_topic_pub {
    _Atomic uint64_t owner;    /* identity (proc.h) or 0 */
    _Atomic uint64_t head;     /* end of the last committed record (absolute bytes) */
    _Atomic uint64_t tail;     /* oldest intact record */
    _Atomic uint64_t next_seq; /* sequence number of the next message */
    uint8_t pad[128 - 32];
} il_topic_pub;

typedef struct il_topic_sub_hdr {
    _Atomic uint64_t owner;    /* identity, | IL_TOPIC_JOINING while set up, or 0 */
    _Atomic uint64_t lost;     /* statistics, written by the owner */
    _Atomic uint64_t received; /* statistics, written by the owner */
    uint8_t pad[64 - 24];
    /* followed by npub cursors (_Atomic uint64_t) */
} il_topic_sub_hdr;

_Static_assert(sizeof(il_topic_ctrl) == 256, "ctrl is 256 bytes");
_Static_assert(sizeof(il_topic_pub) == 128, "pub slot is 128 bytes");
_Static_assert(sizeof(il_topic_sub_hdr) == 64, "sub header is 64 bytes");

/* Process-local handle: geometry validated once, never re-read. */
typedef struct il_topic {
    il_topic_ctrl *c;
    il_topic_pub *pubs;
    char *subs;
    char *rings;
    uint32_t npub, nsub, policy;
    uint64_t cap, sub_stride;
} il_topic;

/* A publisher: one slot, local copies of its ring's head and tail. */
typedef struct il_topic_writer {
    il_topic *t;
    uint32_t slot;
    uint64_t ident;
    uint64_t head, tail, seq;
    uint64_t minc; /* BLOCK: cached minimum cursor of the subscribers */
} il_topic_writer;

/* A subscriber: its slot and, per ring, its position and the next expected
 * sequence number (UINT64_MAX: not known yet -- the first record sets it). */
typedef struct il_topic_reader {
    il_topic *t;
    uint32_t slot;
    uint64_t ident;
    uint32_t rr; /* round-robin start */
    uint64_t lost, received;
    uint64_t pos[IL_TOPIC_MAX_PUB];
    uint64_t seen[IL_TOPIC_MAX_PUB]; /* head of each ring as last loaded (committed up to it) */
    uint64_t expect[IL_TOPIC_MAX_PUB];
    /* BLOCK zero-copy: records held (views), oldest first; the shared cursor
     * stays at the oldest held record.  Views only from view_from on (not
     * in the history a join may race with a publisher over). */
    uint64_t shared[IL_TOPIC_MAX_PUB];
    uint64_t view_from[IL_TOPIC_MAX_PUB];
    uint32_t nheld[IL_TOPIC_MAX_PUB];
    uint64_t held[IL_TOPIC_MAX_PUB][IL_TOPIC_HOLD_MAX];
} il_topic_reader;

/* One record found by il_topic_sub_peek. */
typedef struct il_topic_rec {
    uint32_t ring;
    uint32_t len;
    uint64_t pos, size, seq;
    const uint8_t *ptr; /* payload (valid until consumed; under DROP verify with consume) */
} il_topic_rec;

/* Bytes of a topic area, 0 for impossible geometry.  ring_bytes is rounded
 * up to a power of two (*ring_out receives it). */
uint64_t il_topic_size_for(uint32_t npub, uint32_t nsub, uint64_t ring_bytes, uint64_t *ring_out);

/* Format a new topic in mem (len bytes, zeroed).  IL_OK or IL_INVALID. */
int il_topic_init(il_topic *t, void *mem, uint64_t len, uint32_t npub, uint32_t nsub,
                  uint64_t ring_bytes, uint32_t policy);

/* Validate the geometry and fill the handle.  IL_OK, IL_INFLIGHT (magic not
 * stored yet) or IL_CORRUPT. */
int il_topic_attach(il_topic *t, void *mem, uint64_t len);

/* Largest payload a record can carry. */
static inline uint64_t il_topic_max_payload(const il_topic *t) { return t->cap - IL_TOPIC_REC_HDR; }

/* ---- publishers ---- */

/* Claim a publisher slot (a free one, else one whose owner died) and adopt
 * its ring.  IL_OK, IL_NOSLOT, IL_CORRUPT. */
int il_topic_pub_claim(il_topic *t, il_topic_writer *w, uint64_t ident);

/* Give the slot back (the ring keeps its records for the subscribers). */
void il_topic_pub_release(il_topic_writer *w);

/* Make room for a payload of len bytes and return where to write it.
 * IL_OK (*ptr), IL_FULL (BLOCK: a live subscriber has not consumed what would
 * be overwritten), IL_TOOBIG, IL_CORRUPT. */
int il_topic_pub_reserve(il_topic_writer *w, uint64_t len, uint8_t **ptr);

/* Commit the reserved record (len <= the reserved length): one release
 * store of head, and a wake-up if a subscriber sleeps. */
void il_topic_pub_commit(il_topic_writer *w, uint64_t len);

/* Like reserve, but when FULL register as a sleeper, retry, and sleep on the
 * space word for at most slice_ns.  IL_OK, IL_FULL (slice elapsed or woken:
 * call again), IL_EINTR, IL_TOOBIG, IL_CORRUPT. */
int il_topic_pub_reserve_wait(il_topic_writer *w, uint64_t len, uint8_t **ptr, int64_t slice_ns);

/* Remove dead subscribers from the table (they leave the wait set).  Checks
 * liveness in /proc of every occupied subscriber slot; returns how many. */
uint32_t il_topic_reap_subs(il_topic *t);

/* ---- subscribers ---- */

/* Claim a subscriber slot and start each ring at its head, or up to
 * `history` messages before it (per ring).  IL_OK, IL_NOSLOT, IL_CORRUPT. */
int il_topic_sub_join(il_topic *t, il_topic_reader *r, uint64_t ident, uint64_t history);

/* Leave the subscriber table (wakes BLOCK publishers). */
void il_topic_sub_leave(il_topic_reader *r);

/* The next record, rings visited round-robin.  IL_OK, IL_EMPTY, IL_CORRUPT. */
int il_topic_sub_peek(il_topic_reader *r, il_topic_rec *m);

/* After copying m's payload: validate the copy (it was not overwritten
 * meanwhile), count messages lost before it, move the cursor past it.
 * IL_OK, or IL_TOPIC_LAPPED (discard the copy, peek again). */
int il_topic_sub_consume(il_topic_reader *r, const il_topic_rec *m);

/* BLOCK only: whether m may be held in place (a zero-copy view) instead of
 * copied: not a history record, and a free hold entry. */
int il_topic_sub_can_hold(const il_topic_reader *r, const il_topic_rec *m);

/* consume, keeping the record in place until il_topic_sub_release: the
 * shared cursor (what publishers wait for) stays at it.  IL_OK or
 * IL_TOPIC_LAPPED.  Only after il_topic_sub_can_hold said yes. */
int il_topic_sub_consume_hold(il_topic_reader *r, const il_topic_rec *m);

/* Release a held record (any order). */
void il_topic_sub_release(il_topic_reader *r, uint32_t ring, uint64_t pos);

/* Whether some ring has a record this reader has not consumed. */
int il_topic_sub_ready(const il_topic_reader *r);

/* Sleep until a publisher commits (or slice_ns elapses).  Registers as a
 * sleeper, re-checks, sleeps.  IL_OK (data, or woken), IL_TIMEOUT, IL_EINTR. */
int il_topic_sub_wait(il_topic_reader *r, int64_t slice_ns);

/* Snapshot for `interlink ls`: live publishers and subscribers. */
void il_topic_counts(const il_topic *t, uint32_t *pubs, uint32_t *subs);

#endif
