/* proc.c - process identities and liveness (Linux /proc). */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static _Atomic uint64_t g_self_ident;
static _Atomic uint64_t g_fork_gen;
static atomic_flag g_atfork_installed = ATOMIC_FLAG_INIT;
static _Atomic int g_atfork_done;

static void il_after_fork_child(void)
{
    atomic_store_explicit(&g_self_ident, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_fork_gen, 1, memory_order_relaxed);
}

static void il_install_atfork(void)
{
    if (atomic_load_explicit(&g_atfork_done, memory_order_acquire))
        return;
    if (!atomic_flag_test_and_set_explicit(&g_atfork_installed, memory_order_acq_rel))
        pthread_atfork(NULL, NULL, il_after_fork_child);
    atomic_store_explicit(&g_atfork_done, 1, memory_order_release);
}

uint64_t il_fork_generation(void)
{
    il_install_atfork();
    return atomic_load_explicit(&g_fork_gen, memory_order_relaxed);
}

uint64_t il_ident_make(uint32_t pid, uint64_t start_ticks)
{
    uint64_t start = start_ticks & ((UINT64_C(1) << IL_IDENT_START_BITS) - 1);
    return ((uint64_t)pid & ((UINT64_C(1) << IL_IDENT_PID_BITS) - 1)) |
           (start << IL_IDENT_PID_BITS);
}

/* Parse /proc/<pid>/stat: the command name may hold spaces and parentheses,
 * so fields are counted from the last ')'. */
static int il_read_stat(uint32_t pid, char *state, uint64_t *start_ticks)
{
    char path[64];
    char buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n;
    do {
        n = read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -1;
    p += 2; /* now at field 3 (state) */
    *state = *p;
    /* advance to field 22: 19 more spaces */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return -1;
        p++;
    }
    uint64_t v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
        digits++;
    }
    if (digits == 0)
        return -1;
    *start_ticks = v;
    return 0;
}

int il_proc_start_ticks(uint32_t pid, uint64_t *start_ticks)
{
    char state = '?';
    if (il_read_stat(pid, &state, start_ticks) != 0)
        return -1;
    if (state == 'Z' || state == 'X' || state == 'x')
        return -1;
    return 0;
}

uint64_t il_ident_self(void)
{
    il_install_atfork();
    uint64_t id = atomic_load_explicit(&g_self_ident, memory_order_relaxed);
    if (id != 0)
        return id;
    uint64_t start = 0;
    uint32_t pid = (uint32_t)getpid();
    if (il_proc_start_ticks(pid, &start) != 0)
        return 0;
    id = il_ident_make(pid, start);
    atomic_store_explicit(&g_self_ident, id, memory_order_relaxed);
    return id;
}

int il_ident_alive(uint64_t ident)
{
    ident = il_ident_bare(ident);
    if (ident == 0)
        return 0;
    uint32_t pid = il_ident_pid(ident);
    if (pid == 0)
        return 0;
    if (ident == il_ident_self())
        return 1;
    int eperm = 0;
    if (kill((pid_t)pid, 0) != 0) {
        if (errno == ESRCH)
            return 0;
        eperm = errno == EPERM;
    }
    char state = '?';
    uint64_t start = 0;
    if (il_read_stat(pid, &state, &start) != 0)
        /* The process exists (kill did not say ESRCH) but /proc hides it
         * (hidepid): it is alive as far as we can tell. */
        return eperm ? 1 : 0;
    if (state == 'Z' || state == 'X' || state == 'x')
        return 0;
    return il_ident_make(pid, start) == ident;
}
