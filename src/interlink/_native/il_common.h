/* il_common.h - status codes and small helpers shared by the native core.
 *
 * Plain C11, no Python.h: every function in this directory except module.c
 * works over caller-supplied memory and returns one of these status codes.
 */
#ifndef IL_COMMON_H
#define IL_COMMON_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

enum il_status {
    IL_OK = 0,
    IL_EMPTY = 1,     /* nothing to read */
    IL_INFLIGHT = 2,  /* the next record is reserved but not yet committed */
    IL_FULL = 3,      /* no room now */
    IL_TIMEOUT = 4,   /* a bounded wait ran out */
    IL_EINTR = 5,     /* a wait was interrupted by a signal */
    IL_CLOSED = 6,    /* the peer side is gone */
    IL_CORRUPT = 7,   /* shared memory failed a consistency check */
    IL_TOOBIG = 8,    /* can never fit */
    IL_BUSY = 9,      /* a single-holder role is held by a live process */
    IL_NOSLOT = 10,   /* the attach table is full of live users */
    IL_INVALID = 11,  /* bad argument from the caller */
};

static inline void il_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static inline int64_t il_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif
