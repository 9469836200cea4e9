/* seg.h - the header every named interlink object starts with.
 *
 * Page 0 of every segment (4096 bytes):
 *     0   magic        "INTRLNK\x01" as a little-endian u64; stored last, with
 *                      release, when the creator has finished formatting
 *     8   layout       layout version of this header and the kind's area
 *     12  kind         IL_KIND_*
 *     16  creator_uid, 20 creator_pid, 24 mode, 28 nslots
 *     32  total_size   bytes of the whole segment (checked against the file)
 *     40  created_ns   CLOCK_REALTIME at creation
 *     48  key          random, per segment
 *     56  kind_size    bytes of the kind's area that follows page 0
 *     128 slots        attach table: IL_SEG_SLOTS x 16 bytes
 * The kind's own area starts at IL_SEG_HEADER_SIZE.
 */
#ifndef IL_SEG_H
#define IL_SEG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IL_SEG_MAGIC UINT64_C(0x014B4E4C52544E49) /* "INTRLNK\x01" */
#define IL_SEG_LAYOUT 1u
#define IL_SEG_HEADER_SIZE 4096u
#define IL_SEG_SLOTS 128u
#define IL_SEG_SLOTS_OFFSET 128u
/* IL_KIND_QUEUE only: 64 bytes after the attach table (written by _queue.py
 * before the magic is published, never changed afterwards). */
#define IL_SEG_QUEUE_DESC 3072u
/* IL_KIND_TOPIC only: the codec descriptor, same place and rules (_topic.py). */
#define IL_SEG_TOPIC_DESC 3072u

enum il_kind {
    IL_KIND_CHANNEL = 1,
    IL_KIND_LOCK = 2,               /* il_lock, non-recursive (interlink.Lock) */
    IL_KIND_RLOCK = 3,              /* il_lock, recursive (interlink.RLock) */
    IL_KIND_SEMAPHORE = 4,          /* il_sem, unbounded (interlink.Semaphore) */
    IL_KIND_BOUNDED_SEMAPHORE = 5,  /* il_sem, bounded (interlink.BoundedSemaphore) */
    IL_KIND_EVENT = 6,              /* il_event (interlink.Event, eventword.h) */
    IL_KIND_CONDITION = 7,          /* il_cond (interlink.Condition) */
    IL_KIND_BARRIER = 8,            /* il_barrier (interlink.Barrier) */
    IL_KIND_RWLOCK = 9,             /* il_rw (interlink.RWLock, rwlockword.h) */
    IL_KIND_QUEUE = 10,             /* il_q (interlink.Queue family, queueword.h); its codec
                                       descriptor lives at IL_SEG_QUEUE_DESC of page 0 */
    IL_KIND_TOPIC = 11,             /* il_topic (interlink.Topic, topicword.h); codec
                                       descriptor at IL_SEG_TOPIC_DESC of page 0 */
};

/* Role bits kept in the top nibble of a slot's identity word. */
#define IL_ROLE_SENDER 1u  /* may send: keeps the receiver from seeing end-of-stream */
#define IL_ROLE_PENDING 2u /* lent to a process that has not attached yet; aux holds
                              the CLOCK_BOOTTIME millisecond after which it expires */
#define IL_ROLE_LENT 4u    /* adopted from a lent slot, has not sent yet */

typedef struct il_seg_slot {
    _Atomic uint64_t ident; /* il_ident | roles << 60, or 0 when free */
    _Atomic uint64_t aux;   /* free for the kind */
} il_seg_slot;

typedef struct il_seg_header {
    _Atomic uint64_t magic;
    uint32_t layout;
    uint32_t kind;
    uint32_t creator_uid;
    uint32_t creator_pid;
    uint32_t mode;
    uint32_t nslots;
    uint64_t total_size;
    uint64_t created_ns;
    uint64_t key;
    uint64_t kind_size;
    uint8_t reserved[IL_SEG_SLOTS_OFFSET - 64];
    il_seg_slot slots[IL_SEG_SLOTS];
} il_seg_header;

_Static_assert(offsetof(il_seg_header, slots) == IL_SEG_SLOTS_OFFSET, "slot table offset");
_Static_assert(sizeof(il_seg_header) <= IL_SEG_HEADER_SIZE, "header fits page 0");

/* Publish a fully formatted header (release store of the magic). */
void il_seg_publish(il_seg_header *h);

/* The magic, read with acquire: 0 while the creator is still formatting. */
uint64_t il_seg_magic(const il_seg_header *h);

/* Claim a free slot for ident with the given role bits.  IL_OK and *slot, or
 * IL_NOSLOT when every slot is taken (reclaim dead ones, then retry). */
int il_seg_attach(il_seg_header *h, uint64_t ident, unsigned roles, uint32_t *slot);

/* Add role bits to a slot this process holds.  IL_INVALID if not ours. */
int il_seg_add_roles(il_seg_header *h, uint32_t slot, uint64_t ident, unsigned roles);

/* Free a slot this process holds (no effect if it is not ours any more). */
void il_seg_detach(il_seg_header *h, uint32_t slot, uint64_t ident);

/* Count slots whose holder is alive; *dead receives the count of dead ones. */
uint32_t il_seg_live_users(const il_seg_header *h, uint32_t *dead);

/* CLOCK_BOOTTIME in milliseconds: comparable between processes. */
uint64_t il_boottime_ms(void);

/* Free every slot whose holder is dead, without kind-specific checks (for
 * kinds that keep no per-slot state in their own area). Returns how many. */
uint32_t il_seg_reclaim_plain(il_seg_header *h);

#endif
