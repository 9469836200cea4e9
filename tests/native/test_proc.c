/* test_proc.c - process identities, liveness, fork generation, and the
 * segment attach table that is built on them (seg.c). */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "check.h"
#include "il_common.h"
#include "proc.h"
#include "seg.h"

/* Fork a child that runs until its pipe closes; returns its pid, *wfd the pipe. */
static pid_t spawn_blocked_child(int *wfd)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[1]);
        char c;
        while (read(fds[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    close(fds[0]);
    *wfd = fds[1];
    return pid;
}

static uint64_t ident_of(pid_t pid)
{
    uint64_t start = 0;
    CHECK(il_proc_start_ticks((uint32_t)pid, &start) == 0);
    return il_ident_make((uint32_t)pid, start);
}

/* Read field 3 (state) of /proc/<pid>/stat. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

static void test_ident_self_is_stable(void)
{
    uint64_t a = il_ident_self();
    CHECK(a != 0);
    for (int i = 0; i < 100; i++)
        CHECK(il_ident_self() == a);
    CHECK_EQ(il_ident_pid(a), getpid());
    CHECK(il_ident_bare(a) == a);            /* no role bits */
    CHECK(il_ident_roles(a) == 0);
    CHECK(ident_of(getpid()) == a);          /* same as computed from /proc */
    uint64_t start = 0;
    CHECK(il_proc_start_ticks((uint32_t)getpid(), &start) == 0);
    CHECK(il_ident_make((uint32_t)getpid(), start) == a);
}

static void test_ident_make_layout(void)
{
    uint64_t id = il_ident_make(12345, 678);
    CHECK_EQ(il_ident_pid(id), 12345);
    CHECK(id >> IL_IDENT_PID_BITS == 678);
    /* start time is kept modulo 2^38 and never spills into the role bits */
    uint64_t big = il_ident_make((1u << 22) - 1, UINT64_MAX);
    CHECK(il_ident_roles(big) == 0);
    CHECK_EQ(il_ident_pid(big), (1u << 22) - 1);
    /* pid bits beyond 22 are dropped, not mixed into the start time */
    CHECK(il_ident_make((1u << 22) | 5u, 1) == il_ident_make(5, 1));
    /* role bits ride in the top nibble and are ignored by bare/pid */
    uint64_t w = id | ((uint64_t)IL_ROLE_SENDER << IL_IDENT_ROLE_SHIFT);
    CHECK(il_ident_bare(w) == id);
    CHECK(il_ident_roles(w) == IL_ROLE_SENDER);
    CHECK_EQ(il_ident_pid(w), 12345);
}

static void test_alive_self_with_and_without_roles(void)
{
    uint64_t me = il_ident_self();
    CHECK(il_ident_alive(me) == 1);
    CHECK(il_ident_alive(me | ((uint64_t)0xF << IL_IDENT_ROLE_SHIFT)) == 1);
    CHECK(il_ident_alive(0) == 0);
    CHECK(il_ident_alive((uint64_t)IL_ROLE_SENDER << IL_IDENT_ROLE_SHIFT) == 0);
    /* pid 0 with a start time is not a process */
    CHECK(il_ident_alive(il_ident_make(0, 1234)) == 0);
}

static void test_alive_false_for_forged_start_time(void)
{
    uint64_t me = il_ident_self();
    uint64_t start = me >> IL_IDENT_PID_BITS;
    uint32_t pid = il_ident_pid(me);
    CHECK(il_ident_alive(il_ident_make(pid, start + 1)) == 0);
    CHECK(il_ident_alive(il_ident_make(pid, start - 1)) == 0);
    CHECK(il_ident_alive(il_ident_make(pid, 0)) == 0 || start == 0);
    /* the parent process is alive with its own start time, not with ours */
    pid_t ppid = getppid();
    CHECK(il_ident_alive(ident_of(ppid)) == 1);
    CHECK(il_ident_alive(il_ident_make((uint32_t)ppid, start + 12345)) == 0);
}

static void test_alive_false_for_reaped_child(void)
{
    int wfd;
    pid_t pid = spawn_blocked_child(&wfd);
    uint64_t id = ident_of(pid);
    CHECK(il_ident_alive(id) == 1);
    close(wfd);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(il_ident_alive(id) == 0);
    uint64_t start;
    CHECK(il_proc_start_ticks((uint32_t)pid, &start) == -1);
}

static void test_alive_false_for_zombie_child(void)
{
    int wfd;
    pid_t pid = spawn_blocked_child(&wfd);
    uint64_t id = ident_of(pid);
    CHECK(il_ident_alive(id) == 1);
    close(wfd);
    /* Wait for the exit without reaping: the child stays a zombie. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    CHECK(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) == 0);
    CHECK_EQ(si.si_pid, pid);
    CHECK(proc_state(pid) == 'Z');
    CHECK(kill(pid, 0) == 0); /* the pid still exists... */
    CHECK(il_ident_alive(id) == 0); /* ...but a zombie counts as dead */
    uint64_t start;
    CHECK(il_proc_start_ticks((uint32_t)pid, &start) == -1);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(il_ident_alive(id) == 0);
}

static void test_alive_true_for_stopped_child(void)
{
    int wfd;
    pid_t pid = spawn_blocked_child(&wfd);
    uint64_t id = ident_of(pid);
    CHECK(kill(pid, SIGSTOP) == 0);
    int status;
    CHECK(waitpid(pid, &status, WUNTRACED) == pid && WIFSTOPPED(status));
    CHECK(il_ident_alive(id) == 1); /* stopped is not dead */
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(il_ident_alive(id) == 0);
}

static void test_fork_generation_and_ident_in_child(void)
{
    uint64_t parent_id = il_ident_self();
    uint64_t gen = il_fork_generation();
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        uint64_t out[3] = {il_fork_generation(), il_ident_self(), 0};
        /* a grandchild increments it once more */
        int gfds[2];
        if (pipe(gfds) != 0)
            _exit(3);
        pid_t g = fork();
        if (g == 0) {
            uint64_t gg = il_fork_generation();
            if (write(gfds[1], &gg, sizeof gg) != (ssize_t)sizeof gg)
                _exit(4);
            _exit(0);
        }
        if (read(gfds[0], &out[2], sizeof out[2]) != (ssize_t)sizeof out[2])
            _exit(5);
        waitpid(g, NULL, 0);
        if (write(fds[1], out, sizeof out) != (ssize_t)sizeof out)
            _exit(6);
        _exit(0);
    }
    close(fds[1]);
    uint64_t in[3] = {0, 0, 0};
    CHECK(read(fds[0], in, sizeof in) == (ssize_t)sizeof in);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(in[0] == gen + 1);
    CHECK(in[2] == gen + 2);
    CHECK(in[1] != 0 && in[1] != parent_id);   /* recomputed after fork */
    CHECK_EQ(il_ident_pid(in[1]), pid);
    CHECK(il_fork_generation() == gen);         /* unchanged in the parent */
    CHECK(il_ident_self() == parent_id);
    CHECK(il_ident_alive(in[1]) == 0);          /* the child has been reaped */
}

/* The first call after fork in a child that never called il_* before the
 * fork must still see its own identity, not a cached parent identity. */
static void test_ident_self_first_call_in_child(void)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        uint64_t id = il_ident_self();
        ssize_t n = write(fds[1], &id, sizeof id);
        _exit(n == (ssize_t)sizeof id ? 0 : 1);
    }
    uint64_t id = 0;
    CHECK(read(fds[0], &id, sizeof id) == (ssize_t)sizeof id);
    CHECK(waitpid(pid, NULL, 0) == pid);
    CHECK_EQ(il_ident_pid(id), pid);
}

/* /proc/<pid>/stat puts the command name in parentheses; a name that holds
 * ") " and digits must not shift the fields. */
static void test_start_ticks_with_hostile_comm(void)
{
    uint64_t before = 0, after = 0;
    CHECK(il_proc_start_ticks((uint32_t)getpid(), &before) == 0);
    CHECK(prctl(PR_SET_NAME, "x) R 1 2 3 (y)", 0, 0, 0) == 0);
    CHECK(il_proc_start_ticks((uint32_t)getpid(), &after) == 0);
    CHECK(before == after);
    CHECK(prctl(PR_SET_NAME, ") ) ) ) ) ) )", 0, 0, 0) == 0);
    CHECK(il_proc_start_ticks((uint32_t)getpid(), &after) == 0);
    CHECK(before == after);
    uint64_t none;
    CHECK(il_proc_start_ticks(0, &none) == -1);
    CHECK(il_proc_start_ticks((1u << 22) + 7, &none) == -1); /* beyond pid_max */
}

/* ---- the attach table (seg.c) ------------------------------------------ */

static il_seg_header *new_header(void)
{
    il_seg_header *h = mmap(NULL, IL_SEG_HEADER_SIZE, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(h != MAP_FAILED);
    h->layout = IL_SEG_LAYOUT;
    h->kind = IL_KIND_CHANNEL;
    h->nslots = IL_SEG_SLOTS;
    CHECK(il_seg_magic(h) == 0);
    il_seg_publish(h);
    CHECK(il_seg_magic(h) == IL_SEG_MAGIC);
    return h;
}

/* The identity of a child that has exited and been reaped. */
static uint64_t dead_ident(void)
{
    int wfd;
    pid_t pid = spawn_blocked_child(&wfd);
    uint64_t id = ident_of(pid);
    close(wfd);
    CHECK(waitpid(pid, NULL, 0) == pid);
    CHECK(il_ident_alive(id) == 0);
    return id;
}

static void test_seg_attach_detach_roles(void)
{
    il_seg_header *h = new_header();
    uint64_t me = il_ident_self();
    uint32_t a = 99, b = 99;
    CHECK_EQ(il_seg_attach(h, me, 0, &a), IL_OK);
    CHECK_EQ(il_seg_attach(h, me, IL_ROLE_SENDER, &b), IL_OK);
    CHECK(a != b);
    CHECK(il_ident_roles(atomic_load(&h->slots[b].ident)) == IL_ROLE_SENDER);
    CHECK_EQ(il_seg_add_roles(h, a, me, IL_ROLE_SENDER), IL_OK);
    CHECK(il_ident_roles(atomic_load(&h->slots[a].ident)) == IL_ROLE_SENDER);
    CHECK_EQ(il_seg_add_roles(h, a, me, IL_ROLE_SENDER), IL_OK); /* idempotent */
    CHECK_EQ(il_seg_add_roles(h, a, me + 1, 1), IL_INVALID);       /* not ours */
    CHECK_EQ(il_seg_add_roles(h, IL_SEG_SLOTS, me, 1), IL_INVALID); /* out of range */
    uint32_t dead = 77;
    CHECK_EQ(il_seg_live_users(h, &dead), 2);
    CHECK_EQ(dead, 0);
    il_seg_detach(h, a, me + 1); /* someone else's detach: no effect */
    CHECK(atomic_load(&h->slots[a].ident) != 0);
    il_seg_detach(h, a, me);
    CHECK(atomic_load(&h->slots[a].ident) == 0);
    il_seg_detach(h, IL_SEG_SLOTS + 5, me); /* out of range: ignored */
    CHECK_EQ(il_seg_live_users(h, NULL), 1);
    munmap(h, IL_SEG_HEADER_SIZE);
}

static void test_seg_full_table_and_reclaim_dead(void)
{
    il_seg_header *h = new_header();
    uint64_t me = il_ident_self();
    uint64_t ghost = dead_ident();
    uint32_t slot;
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++) {
        CHECK_EQ(il_seg_attach(h, i % 2 ? me : ghost, 0, &slot), IL_OK);
        CHECK_EQ(slot, i);
    }
    CHECK_EQ(il_seg_attach(h, me, 0, &slot), IL_NOSLOT);
    uint32_t dead = 0;
    CHECK_EQ(il_seg_live_users(h, &dead), IL_SEG_SLOTS / 2);
    CHECK_EQ(dead, IL_SEG_SLOTS / 2);
    CHECK_EQ(il_seg_reclaim_plain(h), IL_SEG_SLOTS / 2);
    CHECK_EQ(il_seg_reclaim_plain(h), 0);
    CHECK_EQ(il_seg_live_users(h, &dead), IL_SEG_SLOTS / 2);
    CHECK_EQ(dead, 0);
    CHECK_EQ(il_seg_attach(h, me, 0, &slot), IL_OK);
    CHECK_EQ(slot, 0);
    /* a scribbled slot count is clamped, never read past the table */
    h->nslots = 100000;
    CHECK_EQ(il_seg_live_users(h, &dead), IL_SEG_SLOTS / 2 + 1);
    h->nslots = 0;
    CHECK_EQ(il_seg_attach(h, me, 0, &slot), IL_NOSLOT);
    munmap(h, IL_SEG_HEADER_SIZE);
}

/* Many threads attaching at once never share a slot. */
static il_seg_header *g_h;
static _Atomic uint32_t g_owner[IL_SEG_SLOTS];

static void *attach_thread(void *arg)
{
    uint32_t tid = (uint32_t)(uintptr_t)arg;
    uint64_t me = il_ident_self();
    for (int round = 0; round < 2000; round++) {
        uint32_t slot;
        if (il_seg_attach(g_h, me, 0, &slot) != IL_OK)
            continue;
        uint32_t expected = 0;
        if (!atomic_compare_exchange_strong(&g_owner[slot], &expected, tid))
            abort(); /* two holders of one slot */
        atomic_store(&g_owner[slot], 0);
        il_seg_detach(g_h, slot, me);
    }
    return NULL;
}

static void test_seg_concurrent_attach(void)
{
    g_h = new_header();
    pthread_t th[4];
    for (uintptr_t i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, attach_thread, (void *)(i + 1)) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(pthread_join(th[i], NULL) == 0);
    CHECK_EQ(il_seg_live_users(g_h, NULL), 0);
}

int main(int argc, char **argv)
{
    static const test_case tests[] = {
        {"ident_self_is_stable", test_ident_self_is_stable, 0},
        {"ident_make_layout", test_ident_make_layout, 0},
        {"alive_self_with_and_without_roles", test_alive_self_with_and_without_roles, 0},
        {"alive_false_for_forged_start_time", test_alive_false_for_forged_start_time, 0},
        {"alive_false_for_reaped_child", test_alive_false_for_reaped_child, 0},
        {"alive_false_for_zombie_child", test_alive_false_for_zombie_child, 0},
        {"alive_true_for_stopped_child", test_alive_true_for_stopped_child, 0},
        {"fork_generation_and_ident_in_child", test_fork_generation_and_ident_in_child, 0},
        {"ident_self_first_call_in_child", test_ident_self_first_call_in_child, 0},
        {"start_ticks_with_hostile_comm", test_start_ticks_with_hostile_comm, 0},
        {"seg_attach_detach_roles", test_seg_attach_detach_roles, 0},
        {"seg_full_table_and_reclaim_dead", test_seg_full_table_and_reclaim_dead, 0},
        {"seg_concurrent_attach", test_seg_concurrent_attach, 0},
    };
    return RUN_TESTS("test_proc", tests, argc, argv);
}
