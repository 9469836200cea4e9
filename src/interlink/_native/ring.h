/* ring.h - a variable-size message ring for many writers and one reader.
 *
 * Layout after page 0 of the segment (see seg.h):
 *     IL_SEG_HEADER_SIZE            il_ring_ctrl (4096 bytes)
 *     IL_SEG_HEADER_SIZE + 4096     data, `capacity` bytes (a power of two)
 *
 * Positions are absolute byte counts (u64, never reset); the data offset of a
 * position is pos & (capacity - 1).  Records are 16-byte aligned and never
 * straddle the end of the data area: a writer that would cross it first
 * reserves the tail as a pad record.  Each record starts with a 16-byte header
 *     stamp  u64   (pos | state) ^ key      state: RESERVED, COMMITTED, PAD, RELEASED
 *     len    u32   record bytes, header included (a multiple of 16) in every state
 *     meta   u32   writer's slot (bits 0-7), tail padding (8-11: record bytes -
 *                  header - payload), a tag of the writer's identity (12-31)
 * Because the stamp mixes the record's absolute position with a per-segment
 * random key, stale bytes from an earlier lap never read as a valid header.
 *
 * Writer protocol (lock-free, any number of writers):
 *   1. publish intent (pos, len) in its slot's intent entry;
 *   2. CAS write_pos from pos to pos+len (the reservation);
 *   3. header stamp := RESERVED(pos) with its slot index;
 *   4. copy the payload; 5. stamp := COMMITTED(pos) (release);
 *   6. wake the reader if, and only if, it is asleep.
 * A writer killed after step 2 leaves a record the reader cannot consume; when
 * the reader finds the writer dead (identity no longer alive) it turns the
 * reservation into a pad and moves on.  If the writer died between steps 2
 * and 3, its intent entry (written before the CAS) tells the reader the length.
 * A dead writer's slot is not reused while its intent may still be unread.
 *
 * The reader consumes records in order; consumed records may be released in
 * any order (RELEASED stamps), and read_pos, which bounds the writers, moves
 * past every leading released record.
 */
#ifndef IL_RING_H
#define IL_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "seg.h"

#define IL_RING_CTRL_SIZE 4096u
#define IL_RING_DATA_OFFSET (IL_SEG_HEADER_SIZE + IL_RING_CTRL_SIZE)
#define IL_REC_ALIGN 16u
#define IL_REC_HDR 16u
#define IL_RING_MIN_CAPACITY 4096u
#define IL_RING_MAX_CAPACITY (UINT64_C(1) << 40)
#define IL_INTENT_NONE UINT64_MAX

enum il_rec_state { IL_ST_RESERVED = 1, IL_ST_COMMITTED = 2, IL_ST_PAD = 3, IL_ST_RELEASED = 4 };

typedef struct il_intent {
    _Atomic uint64_t pos;
    _Atomic uint32_t len;
    uint32_t unused;
} il_intent;

typedef struct il_ring_ctrl {
    _Alignas(64) _Atomic uint64_t write_pos;
    _Alignas(64) _Atomic uint64_t read_pos;
    _Alignas(64) _Atomic uint32_t reader_sleeping;
    _Atomic uint32_t reader_seq;
    _Alignas(64) _Atomic uint32_t space_wanted;
    _Atomic uint32_t space_seq;
    _Alignas(64) uint64_t capacity;
    uint64_t key;
    _Atomic uint64_t receiver;       /* identity of the receiving process, 0 if none */
    _Atomic uint64_t receiver_token; /* which handle in that process */
    _Atomic uint32_t had_sender;     /* some handle has sent: EOF becomes possible */
    _Atomic uint32_t had_receiver;   /* some receiver attached: senders may see Closed */
    _Atomic uint64_t skipped;        /* records dropped because their writer died */
    _Alignas(64) il_intent intents[IL_SEG_SLOTS];
} il_ring_ctrl;

_Static_assert(sizeof(il_ring_ctrl) <= IL_RING_CTRL_SIZE, "ctrl fits its page");

typedef struct il_record {
    _Atomic uint64_t stamp;
    _Atomic uint32_t len;
    _Atomic uint32_t meta;
} il_record;

/* A process-local view of one ring. */
typedef struct il_ring {
    il_seg_header *hdr;
    il_ring_ctrl *ctrl;
    uint8_t *data;
    uint64_t cap;
    uint64_t mask;
    uint64_t key;
    uint64_t cached_read; /* writer: last read_pos seen */
    uint64_t head;        /* reader: next record to deliver */
    uint64_t rpos;        /* reader: everything before it is released */
    uint64_t published;   /* reader: the read_pos value last stored */
} il_ring;

/* Bytes a segment needs for a ring of `capacity` data bytes. */
uint64_t il_ring_segment_size(uint64_t capacity);

/* Format the ring area of a new segment (capacity: power of two within
 * [IL_RING_MIN_CAPACITY, IL_RING_MAX_CAPACITY]).  key must be the header's. */
int il_ring_format(void *base, uint64_t size, uint64_t capacity, uint64_t key);

/* Bind a view to a formatted segment of `size` bytes; validates the layout. */
int il_ring_bind(il_ring *r, void *base, uint64_t size);

/* Largest payload a single record can carry. */
static inline uint64_t il_ring_max_payload(const il_ring *r)
{
    /* Record and intent lengths are u32: il_rec_size(len) must fit in one. */
    const uint64_t lim = UINT32_MAX - (IL_REC_HDR + IL_REC_ALIGN - 1);
    return r->cap - IL_REC_HDR < lim ? r->cap - IL_REC_HDR : lim;
}

static inline uint64_t il_rec_size(uint64_t len)
{
    return (len + IL_REC_HDR + IL_REC_ALIGN - 1) & ~(uint64_t)(IL_REC_ALIGN - 1);
}

/* ---- writer ---------------------------------------------------------- */

/* Reserve room for a payload of len bytes for the writer in `slot`.  IL_OK
 * with *pos and *payload (len writable bytes), IL_FULL, IL_TOOBIG, IL_CORRUPT. */
int il_ring_reserve(il_ring *r, uint32_t slot, uint64_t len, uint64_t *pos, uint8_t **payload);

/* Commit a reservation made for `reserved` payload bytes, of which the first
 * `len` are the message (len <= reserved; the rest becomes a pad).  Does not
 * wake the reader: call il_ring_notify_reader after one or more commits. */
void il_ring_commit(il_ring *r, uint64_t pos, uint64_t reserved, uint64_t len);

/* Turn a reservation into a pad that the reader skips (an aborted loan). */
void il_ring_abort(il_ring *r, uint64_t pos, uint64_t reserved);

/* Wake the reader if it sleeps (a full fence, then a syscall only if needed). */
void il_ring_notify_reader(il_ring *r);

/* The same, without the fence: only right after il_ring_commit, whose
 * sequentially consistent exchange already orders the commit before the
 * load of the reader's sleeping flag. */
void il_ring_notify_reader_after_commit(il_ring *r);

/* The writer in `slot` has no reservation outstanding (before detaching). */
void il_ring_clear_intent(il_ring *r, uint32_t slot);

/* ---- reader ---------------------------------------------------------- */

/* Start reading at the shared read position (a new receiver). */
void il_ring_reader_start(il_ring *r);

/* Deliver the next committed record: IL_OK with *pos, *payload and *len; IL_EMPTY,
 * IL_INFLIGHT (next record reserved but not committed), IL_CORRUPT. */
int il_ring_peek(il_ring *r, uint64_t *pos, const uint8_t **payload, uint64_t *len);

/* Give back a delivered record (any order); `len` is its payload length.
 * read_pos moves past every leading released record and is published at
 * once, waking writers that wait for room. */
void il_ring_release(il_ring *r, uint64_t pos, uint64_t len);

/* Store read_pos if it moved and wake writers that wait for room. */
void il_ring_reader_flush(il_ring *r);

/* After IL_INFLIGHT: if the writer of the record at the reader's head is dead,
 * turn it into a pad.  IL_OK if progress was made, IL_INFLIGHT if the writer
 * is alive, IL_CORRUPT if the ring is inconsistent. */
int il_ring_resolve_stuck(il_ring *r);

/* True when il_ring_peek at `head` would make progress (read-only check,
 * safe without the reader's lock). */
int il_ring_readable(const il_ring *r, uint64_t head);

/* ---- both ------------------------------------------------------------ */

/* Free attach slots whose holder died and whose intent the reader has passed;
 * clears a dead receiver.  Returns slots freed. */
uint32_t il_ring_reclaim_dead(il_ring *r);

/* Whether any attached handle has the sender role (liveness not checked;
 * lent slots count until they expire). */
int il_ring_has_senders(const il_ring *r);

/* Lend sender standing to processes that will attach later (handles being
 * pickled).  The lender holds one slot with SENDER|PENDING whose aux word is
 * (deadline_ms << 16 | outstanding lends); until every lend is adopted or the
 * deadline (il_boottime_ms clock) passes, it counts as a sender.  *slot and
 * *word are in/out: pass the previous token (word 0 for none) to add to it.
 * IL_OK with the token to give to il_ring_adopt. */
int il_ring_lend(il_ring *r, uint64_t lender, uint64_t deadline_ms, uint32_t *slot,
                 uint64_t *word);

/* Count one lend as arrived (the adopter has attached its own sender slot
 * first).  IL_OK, or IL_INVALID if the lend expired or was reclaimed. */
int il_ring_adopt(il_ring *r, uint32_t slot, uint64_t word);

/* Free bytes right now (for writers deciding whether to wait). */
uint64_t il_ring_free_bytes(const il_ring *r);

/* Sleep until the reader may have something (or timeout). Sets the sleeping
 * flag, re-checks, then waits on the futex; returns IL_OK, IL_TIMEOUT, IL_EINTR. */
int il_ring_wait_readable(il_ring *r, uint64_t head, int64_t timeout_ns);

/* Sleep until `need` bytes may be free (or timeout). */
int il_ring_wait_space(il_ring *r, uint64_t need, int64_t timeout_ns);

/* Wake every waiter of both kinds (close, role changes). */
void il_ring_wake_all(il_ring *r);

#endif
