/* seg.c - segment header publication and the attach table. */
#include "seg.h"

#include <time.h>

#include "il_common.h"
#include "proc.h"

static inline uint32_t nslots_of(const il_seg_header *h)
{
    uint32_t n = h->nslots;
    return n > IL_SEG_SLOTS ? IL_SEG_SLOTS : n;
}

uint64_t il_boottime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void il_seg_publish(il_seg_header *h)
{
    atomic_store_explicit(&h->magic, IL_SEG_MAGIC, memory_order_release);
}

uint64_t il_seg_magic(const il_seg_header *h)
{
    return atomic_load_explicit((_Atomic uint64_t *)&h->magic, memory_order_acquire);
}

int il_seg_attach(il_seg_header *h, uint64_t ident, unsigned roles, uint32_t *slot)
{
    uint64_t word = il_ident_bare(ident) | ((uint64_t)roles << IL_IDENT_ROLE_SHIFT);
    uint32_t n = nslots_of(h);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t expected = 0;
        if (atomic_load_explicit(&h->slots[i].ident, memory_order_relaxed) != 0)
            continue;
        if (atomic_compare_exchange_strong_explicit(&h->slots[i].ident, &expected, word,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            *slot = i;
            return IL_OK;
        }
    }
    return IL_NOSLOT;
}

int il_seg_add_roles(il_seg_header *h, uint32_t slot, uint64_t ident, unsigned roles)
{
    if (slot >= nslots_of(h))
        return IL_INVALID;
    _Atomic uint64_t *p = &h->slots[slot].ident;
    uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);
    for (;;) {
        if (il_ident_bare(cur) != il_ident_bare(ident))
            return IL_INVALID;
        uint64_t want = cur | ((uint64_t)roles << IL_IDENT_ROLE_SHIFT);
        if (want == cur)
            return IL_OK;
        if (atomic_compare_exchange_weak_explicit(p, &cur, want, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return IL_OK;
    }
}

void il_seg_detach(il_seg_header *h, uint32_t slot, uint64_t ident)
{
    if (slot >= nslots_of(h))
        return;
    _Atomic uint64_t *p = &h->slots[slot].ident;
    uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);
    while (cur != 0 && il_ident_bare(cur) == il_ident_bare(ident)) {
        if (atomic_compare_exchange_weak_explicit(p, &cur, 0, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return;
    }
}

uint32_t il_seg_live_users(const il_seg_header *h, uint32_t *dead)
{
    uint32_t live = 0, gone = 0, n = nslots_of(h);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit((_Atomic uint64_t *)&h->slots[i].ident,
                                          memory_order_acquire);
        if (w == 0)
            continue;
        if (il_ident_alive(w))
            live++;
        else
            gone++;
    }
    if (dead)
        *dead = gone;
    return live;
}

uint32_t il_seg_reclaim_plain(il_seg_header *h)
{
    uint32_t freed = 0, n = nslots_of(h);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit(&h->slots[i].ident, memory_order_acquire);
        if (w == 0 || il_ident_alive(w))
            continue;
        if (atomic_compare_exchange_strong_explicit(&h->slots[i].ident, &w, 0,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed))
            freed++;
    }
    return freed;
}
