/* handle_lock.h - the thread lock of a glue handle: one thread at a time in
 * a handle's publish side, or in one subscription's receive side.
 *
 * Taken and released only with the GIL held (free-threaded builds are not
 * supported), so the uncontended path is two plain stores: no atomic
 * read-modify-write and no clock read (PyThread_acquire_lock computes a
 * deadline from the monotonic clock even for a non-blocking try, which cost
 * ~10 % of a 64-byte Topic receive).  A thread that finds it held counts
 * itself a waiter, releases the GIL and sleeps on the word in slices of
 * slice_ns, running PyErr_CheckSignals() between them (Ctrl-C interrupts);
 * the holder, releasing, wakes one waiter.  No wake-up is lost: the waiter
 * registers under the GIL before it sleeps, and the futex compares the word
 * atomically (a release between the two makes the sleep return at once).
 * The holder may release the GIL while it holds the lock (it waits in
 * shared memory): that is what the lock is for. */
#ifndef IL_HANDLE_LOCK_H
#define IL_HANDLE_LOCK_H

#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>

#include "futex.h"

typedef struct il_hlock {
    _Atomic uint32_t held; /* 0 free, 1 held; the futex word */
    uint32_t waiters;      /* threads asleep (or about to be) on it; under the GIL */
} il_hlock;

/* Take the lock (GIL held).  0, or -1 with an exception (a signal handler
 * raised while waiting). */
static inline int il_hlock_hold(il_hlock *l, int64_t slice_ns)
{
    if (atomic_load_explicit(&l->held, memory_order_relaxed) == 0) {
        atomic_store_explicit(&l->held, 1, memory_order_relaxed);
        return 0;
    }
    l->waiters++;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        il_futex_wait(&l->held, 1, slice_ns);
        Py_END_ALLOW_THREADS
        if (atomic_load_explicit(&l->held, memory_order_relaxed) == 0) {
            l->waiters--;
            atomic_store_explicit(&l->held, 1, memory_order_relaxed);
            return 0;
        }
        if (PyErr_CheckSignals() < 0) {
            l->waiters--;
            return -1;
        }
    }
}

/* Release the lock (GIL held, by the thread that holds it). */
static inline void il_hlock_release(il_hlock *l)
{
    atomic_store_explicit(&l->held, 0, memory_order_release);
    if (l->waiters != 0)
        il_futex_wake(&l->held, 1);
}

#endif
