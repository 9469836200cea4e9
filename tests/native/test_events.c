/* test_events.c - Event, Condition and Barrier words (eventword.c): the
 * protocols, and kill -9 of a party/waiter at the points that matter. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "check.h"
#include "eventword.h"
#include "il_common.h"
#include "proc.h"
#include "seg.h"

#define MS 1000000LL

typedef struct ev_shared {
    il_seg_header hdr; /* attach slots (the event's sleepers are counted per slot) */
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
    m->hdr.nslots = IL_SEG_SLOTS;
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

static uint32_t attach(ev_shared *m)
{
    uint32_t slot = 0;
    CHECK_EQ(il_seg_attach(&m->hdr, il_ident_self(), 0, &slot), IL_OK);
    return slot;
}

static void test_event_protocol(void)
{
    ev_shared *m = shared_new(1);
    il_event *e = &m->ev;
    CHECK_EQ(il_event_is_set(e), 0);
    uint32_t snap = il_event_snapshot(e);
    CHECK_EQ(il_event_wait_slice(e, IL_SEG_SLOTS, snap, 1 * MS), IL_INVALID);
    CHECK_EQ(il_event_wait_slice(e, 0, snap, 1 * MS), IL_TIMEOUT);
    CHECK_EQ(il_event_sleepers(e), 0);
    il_event_set(e);
    CHECK_EQ(il_event_is_set(e), 1);
    il_event_clear(e);
    /* set-then-clear still signals a waiter that saw the old generation */
    CHECK_EQ(il_event_signalled(e, snap), 1);
    CHECK_EQ(il_event_wait_slice(e, 0, snap, 1 * MS), IL_OK);
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
            il_event_wait_slice(&m->ev, 1, snap, 20 * MS);
    }
    wait_ready(m);
    t_sleep_ms(5);
    kill_reap(pid);
    uint32_t snap = il_event_snapshot(&m->ev);
    il_event_set(&m->ev);
    CHECK_EQ(il_event_wait_slice(&m->ev, 0, snap, 1 * MS), IL_OK);
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
            il_barrier_sleep(&w, il_barrier_seq(&m->bar), 20 * MS);
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

/* ---- sleepers killed asleep ---------------------------------------------- */

typedef struct sleep_arg {
    ev_shared *m;
    uint32_t slot;
    int64_t slice;
    int rc;
} sleep_arg;

static void *event_sleeper(void *p)
{
    sleep_arg *a = p;
    uint32_t snap = a->m->ev.word & ~1u; /* not set */
    do
        a->rc = il_event_wait_slice(&a->m->ev, a->slot, snap, a->slice);
    while (a->rc != IL_OK);
    return NULL;
}

static void wait_count(_Atomic uint32_t *c, uint32_t n)
{
    int64_t deadline = t_now_ns() + 5000 * MS;
    while (atomic_load(c) != n) {
        CHECK(t_now_ns() < deadline);
        t_sleep_ms(1);
    }
}

/* Event waiters killed asleep stay counted in `sleepers` (every set() would
 * make a wake syscall for them) until il_event_recover_sleepers takes
 * exactly their slots' counts out; a live sleeper is still woken by set(). */
static void test_event_sleeper_killed_asleep(void)
{
    ev_shared *m = shared_new(1);
    uint32_t me = attach(m);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork_child();
        if (kids[i] == 0) {
            sleep_arg a = {m, attach(m), 5000 * MS, -1};
            pthread_t th[2];
            for (int k = 0; k < 2; k++)
                if (pthread_create(&th[k], NULL, event_sleeper, &a) != 0)
                    _exit(2);
            for (;;)
                pause();
        }
    }
    wait_count(&m->ev.sleepers, 4);
    CHECK_EQ(il_event_recover_sleepers(&m->ev, &m->hdr), 0); /* all alive */
    sleep_arg live = {m, me, 4000 * MS, -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, event_sleeper, &live) == 0);
    wait_count(&m->ev.sleepers, 5);
    for (int i = 0; i < 2; i++)
        kill_reap(kids[i]);
    CHECK_EQ(il_event_sleepers(&m->ev), 5); /* the leak, until recovery */
    CHECK_EQ(il_event_recover_sleepers(&m->ev, &m->hdr), 4);
    CHECK_EQ(il_event_sleepers(&m->ev), 1);
    CHECK_EQ(il_event_slot_sleepers(&m->ev, me), 1);
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        if (i != me)
            CHECK_EQ(il_event_slot_sleepers(&m->ev, i), 0);
    CHECK_EQ(il_event_recover_sleepers(&m->ev, &m->hdr), 0); /* nothing twice */
    int64_t t0 = t_now_ns();
    il_event_set(&m->ev);
    pthread_join(th, NULL);
    CHECK_EQ(live.rc, IL_OK);
    CHECK(t_now_ns() - t0 < 2000 * MS); /* woken, not the end of its 4 s slice */
    CHECK_EQ(il_event_sleepers(&m->ev), 0);
    CHECK_EQ(m->ev.wakes, 1);
    il_event_clear(&m->ev);
    il_event_set(&m->ev);
    CHECK_EQ(m->ev.wakes, 1); /* nobody asleep: no syscall */
    munmap(m, sizeof *m);
}

static void *barrier_sleeper(void *p)
{
    sleep_arg *a = p;
    il_barrier_waiter w;
    CHECK_EQ(il_barrier_enter(&w, &a->m->bar, il_ident_self(), tid()), IL_OK);
    CHECK_EQ(il_barrier_arrive(&w), IL_OK);
    for (;;) {
        uint32_t snap = il_barrier_seq(&a->m->bar);
        a->rc = il_barrier_status(&w);
        if (a->rc != IL_BUSY)
            break;
        il_barrier_sleep(&w, snap, a->slice);
    }
    il_barrier_leave(&w);
    return NULL;
}

/* A barrier party killed asleep: the scan that frees its entry (and breaks
 * the barrier) takes its sleeper out of `sleepers`; the live party asleep
 * is woken by the break. */
static void test_barrier_sleeper_killed_asleep(void)
{
    ev_shared *m = shared_new(3);
    pid_t pid = fork_child();
    if (pid == 0) {
        sleep_arg a = {m, 0, 5000 * MS, -1};
        barrier_sleeper(&a);
        _exit(3);
    }
    wait_count(&m->bar.sleepers, 1);
    sleep_arg live = {m, 0, 4000 * MS, -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, barrier_sleeper, &live) == 0);
    wait_count(&m->bar.sleepers, 2);
    kill_reap(pid);
    CHECK_EQ(il_barrier_sleepers(&m->bar), 2); /* the leak, until the scan */
    int64_t t0 = t_now_ns();
    CHECK_EQ(il_barrier_check(&m->bar, il_ident_self()), 1);
    pthread_join(th, NULL);
    CHECK_EQ(live.rc, IL_BROKEN);
    CHECK(t_now_ns() - t0 < 2000 * MS);
    CHECK_EQ(il_barrier_sleepers(&m->bar), 0);
    CHECK_EQ(il_barrier_check(&m->bar, il_ident_self()), 0);
    CHECK_EQ(il_barrier_sleepers(&m->bar), 0);
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
        {"event_sleeper_killed_asleep", test_event_sleeper_killed_asleep, 0},
        {"barrier_sleeper_killed_asleep", test_barrier_sleeper_killed_asleep, 0},
    };
    return RUN_TESTS("test_events", tests, argc, argv);
}
