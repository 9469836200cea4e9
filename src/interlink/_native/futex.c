/* futex.c - process-shared futex wait/wake (Linux). */
#include "futex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "il_common.h"

int il_futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t timeout_ns)
{
    if (timeout_ns < 0)
        timeout_ns = 0;
    struct timespec ts;
    ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
    ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
    /* Not FUTEX_PRIVATE_FLAG: the word lives in memory shared between processes. */
    long rc = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, expected, &ts, NULL, 0);
    if (rc == 0)
        return IL_OK;
    switch (errno) {
    case EAGAIN:
        return IL_OK; /* value had already changed */
    case ETIMEDOUT:
        return IL_TIMEOUT;
    case EINTR:
        return IL_EINTR;
    default:
        return IL_INVALID;
    }
}

int il_futex_wake(_Atomic uint32_t *addr, int n)
{
    long rc = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, n, NULL, NULL, 0);
    return rc < 0 ? 0 : (int)rc;
}
