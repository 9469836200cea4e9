/* futex.h - process-shared futex wait/wake with bounded timeouts. */
#ifndef IL_FUTEX_H
#define IL_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>

/* Sleep while *addr == expected, at most timeout_ns (>= 0).  Returns IL_OK when
 * woken or when *addr no longer held `expected`, IL_TIMEOUT, or IL_EINTR when a
 * signal arrived (the caller runs its handlers and decides whether to retry). */
int il_futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t timeout_ns);

/* Wake up to n sleepers on addr; returns how many were woken (>= 0). */
int il_futex_wake(_Atomic uint32_t *addr, int n);

#endif
