/* test_events.c - Event, Condition and Barrier words (eventword.c): the
 * protocols, and kill -9 of a party/waiter at the points that matter. */
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "check.h"
#include "eventword.h"
#include "il_common.h"
#include "proc.h"

#define MS 1000000LL

typedef struct ev_shared {
    il_event ev;
    il_cond cond;
    il_barrier bar;
    _Atomic int ready;
} ev_shared;

static ev_shared *shared_new(uint32_t parties)
{
    ev_shared *m = mmap(NULL, sizeof(ev_shared), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    memset((void *)m, 0, sizeof *m);
    il_event_init(&m->ev);
    il_cond_init(&m->cond);
    CHECK_EQ(il_barrier_init(&m->bar, parties), IL_OK);
    CHECK_EQ(il_event_validate(&m->ev), IL_OK);
    CHECK_EQ(il_cond_validate(&m->cond), IL_OK);
    CHECK_EQ(il_barrier_validate(&m->bar), IL_OK);
    return m;
}

static pid_t fork_child(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    return pid;
}

static void wait_ready(ev_shared *m)
{
    int64_t deadline = t_now_ns() + 10000 * MS;
    while (!atomic_load(&m->ready)) {
        CHECK(t_now_ns() < deadline);
        t_sleep_ms(1);
    }
}

static void kill_reap(pid_t pid)
{
    int st = 0;
    CHECK_EQ(kill(pid, SIGKILL), 0);
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

static uint32_t tid(void) { return (uint32_t)gettid(); }

static void test_event_protocol(void)
{
    ev_shared *m = shared_new(1);
    il_event *e = &m->ev;
    CHECK_EQ(il_event_is_set(e), 0);
    uint32_t snap = il_event_snapshot(e);
    CHECK_EQ(il_event_wait_slice(e, snap, 1 * MS), IL_TIMEOUT);
    il_event_set(e);
    CHECK_EQ(il_event_is_set(e), 1);
    il_event_clear(e);
    /* set-then-clear still signals a waiter that saw the old generation */
    CHECK_EQ(il_event_signalled(e, snap), 1);
    CHECK_EQ(il_event_wait_slice(e, snap, 1 * MS), IL_OK);
    snap = il_event_snapshot(e);
    CHECK_EQ(il_event_signalled(e, snap), 0);
    munmap(m, sizeof *m);
}

/* A waiter killed asleep leaves `sleepers` too high; set() still works and a
 * new waiter still sees it. */
static void test_event_dead_sleeper(void)
{
    ev_shared *m = shared_new(1);
    pid_t pid = fork_child();
    if (pid == 0) {
        uint32_t snap = il_event_snapshot(&m->ev);
        atomic_store(&m->ready, 1);
        for (;;)
            il_event_wait_slice(&m->ev, snap, 20 * MS);
    }
    wait_ready(m);
    t_sleep_ms(5);
    kill_reap(pid);
    uint32_t snap = il_event_snapshot(&m->ev);
    il_event_set(&m->ev);
    CHECK_EQ(il_event_wait_slice(&m->ev, snap, 1 * MS), IL_OK);
    CHECK_EQ(il_event_is_set(&m->ev), 1);
    munmap(m, sizeof *m);
}

/* notify(1) skips (and frees) the entry of a waiter that died asleep: the
 * live waiter behind it is the one notified. */
static void test_cond_dead_waiter_skipped(void)
{
    ev_shared *m = shared_new(1);
    pid_t pid = fork_child();
    if (pid == 0) {
        uint32_t entry;
        CHECK_EQ(il_cond_register(&m->cond, il_ident_self(), tid(), &entry), IL_OK);
        atomic_store(&m->ready, 1);
        for (;;)
            il_cond_wait_slice(&m->cond, entry, il_ident_self(), 20 * MS);
    }
    wait_ready(m);
    kill_reap(pid);
    uint64_t me = il_ident_self();
    uint32_t entry;
    CHECK_EQ(il_cond_register(&m->cond, me, tid(), &entry), IL_OK); /* behind the dead one */
    CHECK_EQ(il_cond_waiters(&m->cond), 2);
    CHECK_EQ(il_cond_notify(&m->cond, 1, me), 1);
    CHECK_EQ(il_cond_wait_slice(&m->cond, entry, me, 1 * MS), IL_OK);
    CHECK_EQ(il_cond_leave(&m->cond, entry, me), 1);
    CHECK_EQ(il_cond_waiters(&m->cond), 0); /* the dead entry was freed on the way */
    munmap(m, sizeof *m);
}

/* Arrive in a child (not last) and stay asleep there. */
static pid_t party_child(ev_shared *m)
{
    pid_t pid = fork_child();
    if (pid == 0) {
        il_barrier_waiter w;
        CHECK_EQ(il_barrier_enter(&w, &m->bar, il_ident_self(), tid()), IL_OK);
        CHECK_EQ(il_barrier_arrive(&w), IL_OK);
        CHECK_EQ(w.last, 0);
        atomic_store(&m->ready, 1);
        for (;;)
            il_barrier_sleep(&m->bar, il_barrier_seq(&m->bar), 20 * MS);
    }
    wait_ready(m);
    return pid;
}

/* Regression (chaos test of issue 3): a party that arrived and then died must
 * not be counted into a completed generation.  The last arrival used to
 * complete it; it now breaks it, before any dead-party scan ran. */
static void test_barrier_dead_counted_party_breaks(void)
{
    ev_shared *m = shared_new(2);
    pid_t pid = party_child(m);
    CHECK_EQ(il_barrier_n_waiting(&m->bar), 1);
    kill_reap(pid);
    il_barrier_waiter w;
    CHECK_EQ(il_barrier_enter(&w, &m->bar, il_ident_self(), tid()), IL_OK);
    CHECK_EQ(il_barrier_arrive(&w), IL_OK);
    CHECK_EQ(w.last, 1);
    CHECK_EQ(il_barrier_complete(&w), IL_BROKEN);
    CHECK_EQ(il_barrier_broken(&m->bar), 1);
    il_barrier_leave(&w);
    /* reset: fresh parties pass again */
    il_barrier_reset(&m->bar);
    CHECK_EQ(il_barrier_broken(&m->bar), 0);
    CHECK_EQ(il_barrier_n_waiting(&m->bar), 0);
    atomic_store(&m->ready, 0);
    pid = party_child(m);
    CHECK_EQ(il_barrier_enter(&w, &m->bar, il_ident_self(), tid()), IL_OK);
    CHECK_EQ(il_barrier_arrive(&w), IL_OK);
    CHECK_EQ(w.last, 1);
    CHECK_EQ(il_barrier_complete(&w), IL_OK);
    il_barrier_leave(&w);
    kill_reap(pid);
    munmap(m, sizeof *m);
}

/* The periodic scan breaks a generation a dead party was counted in (the
 * others still to arrive would wait for ever otherwise). */
static void test_barrier_scan_breaks(void)
{
    ev_shared *m = shared_new(3);
    pid_t pid = party_child(m);
    kill_reap(pid);
    CHECK_EQ(il_barrier_broken(&m->bar), 0);
    CHECK_EQ(il_barrier_check(&m->bar, il_ident_self()), 1);
    CHECK_EQ(il_barrier_broken(&m->bar), 1);
    il_barrier_waiter w;
    CHECK_EQ(il_barrier_enter(&w, &m->bar, il_ident_self(), tid()), IL_OK);
    CHECK_EQ(il_barrier_arrive(&w), IL_BROKEN);
    il_barrier_leave(&w);
    munmap(m, sizeof *m);
}

int main(int argc, char **argv)
{
    static const test_case tests[] = {
        {"event_protocol", test_event_protocol, 0},
        {"event_dead_sleeper", test_event_dead_sleeper, 0},
        {"cond_dead_waiter_skipped", test_cond_dead_waiter_skipped, 0},
        {"barrier_dead_counted_party_breaks", test_barrier_dead_counted_party_breaks, 0},
        {"barrier_scan_breaks", test_barrier_scan_breaks, 0},
    };
    return RUN_TESTS("test_events", tests, argc, argv);
}
