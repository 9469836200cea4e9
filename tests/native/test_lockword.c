/* test_lockword.c - the robust fair lock and the robust semaphore (lockword.c):
 * protocol checks, mutual exclusion across threads and processes, FIFO order,
 * holders and waiters killed with SIGKILL, a kill -9 chaos run, semaphore
 * bounds and recovery of a dead holder's units (and of a dead update). */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "check.h"
#include "il_common.h"
#include "lockword.h"
#include "proc.h"
#include "seg.h"

#define MS 1000000LL
#define SLICE (5 * MS)

static void *shared_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    memset(p, 0, n);
    return p;
}

static uint32_t my_tid(void) { return (uint32_t)gettid(); }

static int acquired(int rc) { return rc == IL_OK || rc == IL_OWNERDIED; }

static pid_t fork_child(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
    return pid;
}

static int wait_exit(pid_t pid)
{
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void wait_until_waiters(il_lock *l, uint32_t n)
{
    int64_t t0 = il_now_ns();
    while (il_lock_waiters(l) < n) {
        CHECK(il_now_ns() - t0 < 5000 * MS);
        t_sleep_ms(1);
    }
}

/* ---- lock: protocol ------------------------------------------------------ */

static void test_try_release_nonowner(void)
{
    il_lock *l = shared_alloc(sizeof *l);
    il_lock_init(l);
    CHECK_EQ(il_lock_validate(l), IL_OK);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    CHECK(me != 0);
    CHECK_EQ(il_lock_holder(l, NULL, NULL, NULL), 0);
    CHECK_EQ(il_lock_release(l, me, tid), IL_INVALID); /* not held at all */
    CHECK_EQ(il_lock_try(l, 0, tid, 0), IL_INVALID);
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);
    uint64_t hid = 0;
    uint32_t htid = 0, depth = 0;
    CHECK_EQ(il_lock_holder(l, &hid, &htid, &depth), 1);
    CHECK_EQ(hid, me);
    CHECK_EQ(htid, tid);
    CHECK_EQ(depth, 1);
    /* Another thread id (or process) can neither take nor release it. */
    CHECK_EQ(il_lock_try(l, me, tid + 1, 0), IL_BUSY);
    CHECK_EQ(il_lock_try(l, me, tid + 1, 1), IL_BUSY);
    uint64_t before = atomic_load(&l->state);
    CHECK_EQ(il_lock_release(l, me, tid + 1), IL_INVALID);
    CHECK_EQ(il_lock_release(l, me ^ 1, tid), IL_INVALID);
    CHECK_EQ(atomic_load(&l->state), before); /* no state change */
    /* Non-recursive re-acquire by the holder itself: busy (would deadlock). */
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_BUSY);
    CHECK_EQ(il_lock_acquire(l, me, tid, 0, 0, SLICE), IL_TIMEOUT);
    CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    CHECK_EQ(il_lock_release(l, me, tid), IL_INVALID);
    CHECK_EQ(il_lock_holder(l, NULL, NULL, NULL), 0);
    CHECK_EQ(il_lock_waiters(l), 0);
    il_lock_stats st;
    il_lock_read_stats(l, &st);
    CHECK_EQ(st.acquisitions, 1);
    CHECK_EQ(st.contentions, 0);
    /* Every queue entry was given back. */
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++)
        CHECK_EQ(atomic_load(&l->q[i].ident), 0);
    /* Garbage state fails validation. */
    atomic_store(&l->state, ((uint64_t)200 << 40) | (UINT64_C(1) << 32));
    CHECK_EQ(il_lock_validate(l), IL_CORRUPT);
    CHECK_EQ(il_lock_check_owner(l, NULL), -IL_CORRUPT);
    munmap(l, sizeof *l);
}

static void test_recursion_depth(void)
{
    il_lock *l = shared_alloc(sizeof *l);
    il_lock_init(l);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    for (int i = 0; i < 5; i++)
        CHECK_EQ(il_lock_acquire(l, me, tid, 1, 100 * MS, SLICE), IL_OK);
    uint32_t depth = 0;
    CHECK_EQ(il_lock_holder(l, NULL, NULL, &depth), 1);
    CHECK_EQ(depth, 5);
    CHECK_EQ(il_lock_release(l, me, tid + 7), IL_INVALID);
    for (int i = 4; i >= 1; i--) {
        CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
        CHECK_EQ(il_lock_holder(l, NULL, NULL, &depth), 1);
        CHECK_EQ(depth, i);
    }
    CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    CHECK_EQ(il_lock_holder(l, NULL, NULL, NULL), 0);
    il_lock_stats st;
    il_lock_read_stats(l, &st);
    CHECK_EQ(st.acquisitions, 1); /* re-entries are not acquisitions */
    munmap(l, sizeof *l);
}

typedef struct hold_arg {
    il_lock *l;
    _Atomic int stage; /* 1: holds, 2: may release */
    int64_t hold_ms;
} hold_arg;

static void *holder_thread(void *p)
{
    hold_arg *a = p;
    CHECK_EQ(il_lock_acquire(a->l, il_ident_self(), my_tid(), 0, 1000 * MS, SLICE), IL_OK);
    atomic_store(&a->stage, 1);
    while (atomic_load(&a->stage) != 2)
        t_sleep_ms(1);
    CHECK_EQ(il_lock_release(a->l, il_ident_self(), my_tid()), IL_OK);
    return NULL;
}

static void test_timeout(void)
{
    il_lock *l = shared_alloc(sizeof *l);
    il_lock_init(l);
    hold_arg a = {l, 0, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, holder_thread, &a) == 0);
    while (atomic_load(&a.stage) != 1)
        t_sleep_ms(1);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    int64_t t0 = il_now_ns();
    CHECK_EQ(il_lock_acquire(l, me, tid, 0, 0, SLICE), IL_TIMEOUT); /* a pure try */
    CHECK(il_now_ns() - t0 < 2000 * MS);
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_BUSY);
    t0 = il_now_ns();
    CHECK_EQ(il_lock_acquire(l, me, tid, 0, 60 * MS, SLICE), IL_TIMEOUT);
    int64_t took = il_now_ns() - t0;
    CHECK(took >= 59 * MS);
    CHECK(took < 1000 * MS);
    CHECK_EQ(il_lock_waiters(l), 0); /* the timed-out waiter left the queue */
    atomic_store(&a.stage, 2);
    pthread_join(th, NULL);
    /* The abandoned ticket does not block the next acquirer. */
    t0 = il_now_ns();
    CHECK_EQ(il_lock_acquire(l, me, tid, 0, 1000 * MS, SLICE), IL_OK);
    CHECK(il_now_ns() - t0 < 2000 * MS);
    CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    munmap(l, sizeof *l);
}

/* ---- lock: mutual exclusion ---------------------------------------------- */

typedef struct mx_shared {
    il_lock lock;
    uint64_t counter; /* plain: only the lock protects it */
    _Atomic int inside;
    _Atomic int violations;
} mx_shared;

#define MX_ITERS 100000

static void mx_loop(mx_shared *m, int iters)
{
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    for (int i = 0; i < iters; i++) {
        int rc = il_lock_acquire(&m->lock, me, tid, 0, 30000 * MS, SLICE);
        CHECK_EQ(rc, IL_OK);
        if (atomic_fetch_add_explicit(&m->inside, 1, memory_order_relaxed) != 0)
            atomic_fetch_add(&m->violations, 1);
        m->counter++;
        atomic_fetch_sub_explicit(&m->inside, 1, memory_order_relaxed);
        CHECK_EQ(il_lock_release(&m->lock, me, tid), IL_OK);
    }
}

static void *mx_thread(void *p)
{
    mx_loop(p, MX_ITERS);
    return NULL;
}

static void test_mutex_4_threads(void)
{
    mx_shared *m = shared_alloc(sizeof *m);
    il_lock_init(&m->lock);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, mx_thread, m) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(m->counter, 4 * MX_ITERS);
    CHECK_EQ(atomic_load(&m->violations), 0);
    il_lock_stats st;
    il_lock_read_stats(&m->lock, &st);
    CHECK_EQ(st.acquisitions, 4 * MX_ITERS);
    CHECK_EQ(st.owner_died, 0);
    CHECK(st.contentions <= st.acquisitions);
    CHECK_EQ(il_lock_waiters(&m->lock), 0);
    printf("        4 threads: %" PRIu64 " contended, %" PRIu64 " wakes, %" PRIu64 " skips\n",
           st.contentions, st.wakes, st.skipped);
    munmap(m, sizeof *m);
}

static void test_mutex_4_processes(void)
{
    mx_shared *m = shared_alloc(sizeof *m);
    il_lock_init(&m->lock);
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = fork_child();
        if (kids[i] == 0) {
            mx_loop(m, MX_ITERS);
            _exit(0);
        }
    }
    for (int i = 0; i < 4; i++)
        CHECK_EQ(wait_exit(kids[i]), 0);
    CHECK_EQ(m->counter, 4 * MX_ITERS);
    CHECK_EQ(atomic_load(&m->violations), 0);
    il_lock_stats st;
    il_lock_read_stats(&m->lock, &st);
    CHECK_EQ(st.acquisitions, 4 * MX_ITERS);
    printf("        4 processes: %" PRIu64 " contended, %" PRIu64 " wakes, %" PRIu64
           " skips\n",
           st.contentions, st.wakes, st.skipped);
    munmap(m, sizeof *m);
}

/* ---- lock: FIFO --------------------------------------------------------- */

typedef struct fifo_arg {
    il_lock *l;
    int id;
    _Atomic int *next_slot;
    int *order;
} fifo_arg;

static void *fifo_thread(void *p)
{
    fifo_arg *a = p;
    CHECK_EQ(il_lock_acquire(a->l, il_ident_self(), my_tid(), 0, 10000 * MS, SLICE), IL_OK);
    a->order[atomic_fetch_add(a->next_slot, 1)] = a->id;
    t_sleep_ms(2);
    CHECK_EQ(il_lock_release(a->l, il_ident_self(), my_tid()), IL_OK);
    return NULL;
}

static void test_fifo_order(void)
{
    enum { N = 6 };
    il_lock *l = shared_alloc(sizeof *l);
    il_lock_init(l);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    for (int round = 0; round < 3; round++) {
        CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);
        _Atomic int next_slot = 0;
        int order[N];
        fifo_arg args[N];
        pthread_t th[N];
        for (int i = 0; i < N; i++) {
            args[i] = (fifo_arg){l, i, &next_slot, order};
            CHECK(pthread_create(&th[i], NULL, fifo_thread, &args[i]) == 0);
            wait_until_waiters(l, (uint32_t)i + 1); /* queued in a known order */
        }
        /* A newcomer's try may not barge ahead of the queue. */
        CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
        CHECK_EQ(il_lock_try(l, me, tid, 0), IL_BUSY);
        for (int i = 0; i < N; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < N; i++)
            CHECK_EQ(order[i], i);
    }
    munmap(l, sizeof *l);
}

/* A release with nobody asleep makes no futex syscall (counted in `wakes`). */
static void test_no_wake_without_sleepers(void)
{
    il_lock *l = shared_alloc(sizeof *l);
    il_lock_init(l);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    for (int i = 0; i < 10000; i++) {
        CHECK_EQ(il_lock_acquire(l, me, tid, 0, 100 * MS, SLICE), IL_OK);
        CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    }
    il_lock_stats st;
    il_lock_read_stats(l, &st);
    CHECK_EQ(st.wakes, 0);
    CHECK_EQ(st.contentions, 0);
    /* With a sleeper: exactly the hand-off wakes it. */
    hold_arg a = {l, 0, 0};
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, holder_thread, &a) == 0);
    wait_until_waiters(l, 1);
    t_sleep_ms(20); /* past the spin: asleep in the futex */
    CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    while (atomic_load(&a.stage) != 1)
        t_sleep_ms(1);
    il_lock_read_stats(l, &st);
    CHECK_EQ(st.wakes, 1);
    CHECK_EQ(st.contentions, 1);
    atomic_store(&a.stage, 2);
    pthread_join(th, NULL);
    munmap(l, sizeof *l);
}

/* ---- lock: the single-CAS fast path (il_lock_try) ------------------------- */

#define T_ST_HELD (UINT64_C(1) << 32)
#define T_ST_FAST (UINT64_C(1) << 34)

/* A fast-path hold takes no ticket: the turn stays, and a waiter that queues
 * behind it gets exactly that turn (it must not take the fast hold for a
 * skip of its ticket); with a waiter queued, il_lock_try never barges, even
 * in the instant between a release and the waiter's claim. */
static void test_fast_path_no_ticket_no_barging(void)
{
    il_lock *l = shared_alloc(sizeof *l);
    il_lock_init(l);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);
        uint64_t s = atomic_load(&l->state);
        CHECK((s & T_ST_HELD) && (s & T_ST_FAST));
        CHECK_EQ((uint32_t)s, 0u);               /* no ticket used */
        CHECK_EQ(atomic_load(&l->next_ticket), 0u);
        uint64_t hid;
        uint32_t htid, depth;
        CHECK_EQ(il_lock_holder(l, &hid, &htid, &depth), 1);
        CHECK_EQ(hid, il_ident_bare(me));
        CHECK_EQ(htid, tid);
        CHECK_EQ(depth, 1u);
        CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
        CHECK_EQ(atomic_load(&l->state), 0u); /* turn 0, free, nothing else */
    }
    /* A waiter queues behind a fast hold with ticket == turn. */
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);
    hold_arg a = {l, 0, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, holder_thread, &a) == 0);
    wait_until_waiters(l, 1);
    CHECK_EQ(atomic_load(&l->next_ticket), 1u); /* the waiter took ticket 0 */
    CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    /* Turn 0 is the waiter's, held or about to be: never ours. */
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_BUSY);
    while (atomic_load(&a.stage) != 1)
        t_sleep_ms(1);
    uint64_t hid;
    uint32_t htid;
    CHECK_EQ(il_lock_holder(l, &hid, &htid, NULL), 1);
    CHECK_EQ(htid == tid, 0);
    uint64_t s = atomic_load(&l->state);
    CHECK(!(s & T_ST_FAST)); /* claimed with its ticket */
    atomic_store(&a.stage, 2);
    pthread_join(th, NULL);
    CHECK_EQ(atomic_load(&l->state), 1u); /* ticket 0 used up, free */
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);
    CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    il_lock_stats st;
    il_lock_read_stats(l, &st);
    CHECK_EQ(st.acquisitions, 1003u);
    CHECK_EQ(st.contentions, 1u);
    CHECK_EQ(st.skipped, 0u);
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++)
        CHECK_EQ(atomic_load(&l->q[i].ident), 0);
    munmap(l, sizeof *l);
}

/* The identity of a process that has exited (for hand-made dead records). */
static uint64_t exited_ident(void)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork_child();
    if (pid == 0) {
        uint64_t id = il_ident_self();
        CHECK(write(fds[1], &id, sizeof id) == (ssize_t)sizeof id);
        _exit(0);
    }
    uint64_t id = 0;
    CHECK(read(fds[0], &id, sizeof id) == (ssize_t)sizeof id);
    wait_exit(pid);
    close(fds[0]);
    close(fds[1]);
    CHECK(id != 0 && !il_ident_alive(id));
    return id;
}

/* A process killed inside il_lock_try.  The fast path writes its identity
 * into a queue entry (CAS) *before* the one CAS that names that entry in the
 * state word, so there is no instant where the lock is held by nobody known:
 *   (a) killed after claiming the entry, before the state CAS: a dead entry
 *       no state names -- freed by the next check, the lock was never held;
 *   (b) killed after the state CAS, before the bookkeeping (depth, counters):
 *       a dead holder -- recovered, the next acquirer gets IL_OWNERDIED within
 *       one slice, and the turn stays (a fast hold used no ticket). */
static void test_fast_path_killed_in_windows(void)
{
    uint64_t dead = exited_ident();
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    il_lock *l = shared_alloc(sizeof *l);
    /* (a) */
    il_lock_init(l);
    atomic_store(&l->q[5].ident, il_ident_bare(dead));
    atomic_store(&l->q[5].tid, 4242u);
    atomic_store(&l->q[5].ticket, UINT64_C(1) << 33); /* what the fast path writes */
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);      /* never held: no wait */
    CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    CHECK(il_lock_check_owner(l, NULL) >= 1);         /* the dead entry is freed */
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++)
        CHECK_EQ(atomic_load(&l->q[i].ident), 0);
    /* (b), with and without a waiter queued behind the dead fast holder */
    for (int queued = 0; queued < 2; queued++) {
        il_lock_init(l);
        atomic_store(&l->q[9].ident, il_ident_bare(dead));
        atomic_store(&l->q[9].tid, 4243u);
        atomic_store(&l->q[9].ticket, UINT64_C(1) << 33);
        atomic_store(&l->state, T_ST_HELD | T_ST_FAST | (UINT64_C(9) << 40)); /* depth 0 */
        uint64_t hid;
        uint32_t htid;
        CHECK_EQ(il_lock_holder(l, &hid, &htid, NULL), 1);
        CHECK_EQ(htid, 4243u);
        int64_t t0 = il_now_ns();
        int rc;
        if (queued) {
            rc = il_lock_acquire(l, me, tid, 0, 1000 * MS, SLICE); /* queues, ticket 0 */
            CHECK_EQ(atomic_load(&l->next_ticket), 1u);
        } else {
            rc = il_lock_acquire(l, me, tid, 0, 0, SLICE); /* try + one check */
        }
        CHECK_EQ(rc, IL_OWNERDIED);
        CHECK(il_now_ns() - t0 < 500 * MS);
        CHECK_EQ(il_lock_holder(l, &hid, &htid, NULL), 1);
        CHECK_EQ(htid, tid);
        CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
        /* The news is given once; the lock works on. */
        CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);
        CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
        CHECK_EQ(atomic_load(&l->next_ticket), (uint32_t)queued);
        CHECK_EQ((uint32_t)atomic_load(&l->state), (uint32_t)queued);
        il_lock_stats st;
        il_lock_read_stats(l, &st);
        CHECK_EQ(st.owner_died, 1u);
        for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++)
            CHECK_EQ(atomic_load(&l->q[i].ident), 0);
    }
    munmap(l, sizeof *l);
}

/* A real process killed at random points of a tight il_lock_try/release loop
 * (so also inside both windows above, now and then): each time the lock is
 * either free or recovered (IL_OWNERDIED) within one slice, never wedged. */
static void test_fast_path_chaos_kill9(void)
{
    il_lock *l = shared_alloc(sizeof *l);
    il_lock_init(l);
    _Atomic int *go = shared_alloc(sizeof *go);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    int died = 0;
    for (int round = 0; round < 40; round++) {
        atomic_store(go, 0);
        pid_t pid = fork_child();
        if (pid == 0) {
            uint64_t c = il_ident_self();
            uint32_t ct = my_tid();
            atomic_store(go, 1);
            for (;;) {
                if (il_lock_try(l, c, ct, 0) == IL_OK)
                    il_lock_release(l, c, ct);
            }
        }
        while (!atomic_load(go))
            sched_yield();
        t_sleep_ms(1 + round % 3);
        CHECK(kill(pid, SIGKILL) == 0);
        wait_exit(pid);
        int64_t t0 = il_now_ns();
        int rc = il_lock_acquire(l, me, tid, 0, 2000 * MS, SLICE);
        CHECK(acquired(rc));
        CHECK(il_now_ns() - t0 < 1000 * MS);
        died += rc == IL_OWNERDIED;
        CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
        il_lock_check_owner(l, NULL); /* frees an entry claimed by the dead child */
        for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++)
            CHECK_EQ(atomic_load(&l->q[i].ident), 0);
        CHECK_EQ(atomic_load(&l->next_ticket), (uint32_t)atomic_load(&l->state));
    }
    printf("        %d of 40 kills hit a held lock (recovered with IL_OWNERDIED)\n", died);
    munmap((void *)go, sizeof *go);
    munmap(l, sizeof *l);
}

/* ---- lock: owner death ---------------------------------------------------- */

typedef struct death_shared {
    il_lock lock;
    _Atomic int child_holds;
    _Atomic int64_t killed_at;
    _Atomic int64_t got_at[8];
    _Atomic int rcs[8];
    _Atomic int done;
} death_shared;

static pid_t spawn_holder(death_shared *d)
{
    pid_t pid = fork_child();
    if (pid == 0) {
        if (il_lock_acquire(&d->lock, il_ident_self(), my_tid(), 0, 1000 * MS, SLICE) != IL_OK)
            _exit(3);
        atomic_store(&d->child_holds, 1);
        for (;;)
            pause();
    }
    while (!atomic_load(&d->child_holds))
        t_sleep_ms(1);
    return pid;
}

typedef struct dwait_arg {
    death_shared *d;
    int k;
} dwait_arg;

static void *death_waiter(void *p)
{
    dwait_arg *a = p;
    death_shared *d = a->d;
    int rc = il_lock_acquire(&d->lock, il_ident_self(), my_tid(), 0, 5000 * MS, 10 * MS);
    atomic_store(&d->got_at[a->k], il_now_ns());
    atomic_store(&d->rcs[a->k], rc);
    if (acquired(rc)) {
        t_sleep_ms(1);
        CHECK_EQ(il_lock_release(&d->lock, il_ident_self(), my_tid()), IL_OK);
    }
    return NULL;
}

static void test_holder_killed_one_waiter(void)
{
    death_shared *d = shared_alloc(sizeof *d);
    il_lock_init(&d->lock);
    pid_t pid = spawn_holder(d);
    dwait_arg a = {d, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, death_waiter, &a) == 0);
    wait_until_waiters(&d->lock, 1);
    t_sleep_ms(30);
    int64_t killed = il_now_ns();
    CHECK(kill(pid, SIGKILL) == 0);
    pthread_join(th, NULL);
    CHECK_EQ(atomic_load(&d->rcs[0]), IL_OWNERDIED);
    int64_t lat = atomic_load(&d->got_at[0]) - killed;
    printf("        OWNERDIED %.1f ms after the kill\n", (double)lat / 1e6);
    CHECK(lat < 1000 * MS);
    wait_exit(pid);
    /* The lock works afterwards, and the news is given only once. */
    uint64_t me = il_ident_self();
    CHECK_EQ(il_lock_acquire(&d->lock, me, my_tid(), 0, 100 * MS, SLICE), IL_OK);
    CHECK_EQ(il_lock_release(&d->lock, me, my_tid()), IL_OK);
    il_lock_stats st;
    il_lock_read_stats(&d->lock, &st);
    CHECK_EQ(st.owner_died, 1);
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++)
        CHECK_EQ(atomic_load(&d->lock.q[i].ident), 0);
    munmap(d, sizeof *d);
}

static void test_holder_killed_many_waiters(void)
{
    enum { W = 5 };
    for (int round = 0; round < 5; round++) {
        death_shared *d = shared_alloc(sizeof *d);
        il_lock_init(&d->lock);
        pid_t pid = spawn_holder(d);
        dwait_arg a[W];
        pthread_t th[W];
        for (int k = 0; k < W; k++) {
            a[k] = (dwait_arg){d, k};
            CHECK(pthread_create(&th[k], NULL, death_waiter, &a[k]) == 0);
        }
        wait_until_waiters(&d->lock, W);
        t_sleep_ms(15 + (int)t_rand_below(20)); /* their check slices are out of phase */
        int64_t killed = il_now_ns();
        CHECK(kill(pid, SIGKILL) == 0);
        for (int k = 0; k < W; k++)
            pthread_join(th[k], NULL);
        int died = 0;
        int64_t first = INT64_MAX;
        for (int k = 0; k < W; k++) {
            int rc = atomic_load(&d->rcs[k]);
            CHECK(acquired(rc));
            if (rc == IL_OWNERDIED) {
                died++;
                first = atomic_load(&d->got_at[k]);
            }
        }
        CHECK_EQ(died, 1);
        CHECK(first - killed < 1000 * MS);
        wait_exit(pid);
        il_lock_stats st;
        il_lock_read_stats(&d->lock, &st);
        CHECK_EQ(st.owner_died, 1);
        munmap(d, sizeof *d);
    }
}

/* A waiter process killed while queued: the FIFO queue skips it. */
static void test_waiter_killed_is_skipped(void)
{
    death_shared *d = shared_alloc(sizeof *d);
    il_lock_init(&d->lock);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    CHECK_EQ(il_lock_try(&d->lock, me, tid, 0), IL_OK);
    pid_t pid = fork_child();
    if (pid == 0) {
        il_lock_acquire(&d->lock, il_ident_self(), my_tid(), 0, 60000 * MS, SLICE);
        _exit(0);
    }
    wait_until_waiters(&d->lock, 1); /* the child is first in line */
    dwait_arg a = {d, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, death_waiter, &a) == 0);
    wait_until_waiters(&d->lock, 2);
    CHECK(kill(pid, SIGKILL) == 0);
    wait_exit(pid);
    int64_t t0 = il_now_ns();
    CHECK_EQ(il_lock_release(&d->lock, me, tid), IL_OK); /* hands to the dead child */
    pthread_join(th, NULL);
    CHECK_EQ(atomic_load(&d->rcs[0]), IL_OK); /* not OWNERDIED: it held nothing */
    CHECK(atomic_load(&d->got_at[0]) - t0 < 2000 * MS);
    il_lock_stats st;
    il_lock_read_stats(&d->lock, &st);
    CHECK(st.skipped >= 1);
    CHECK_EQ(st.owner_died, 0);
    CHECK_EQ(il_lock_check_owner(&d->lock, NULL) >= 0, 1);
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++)
        CHECK_EQ(atomic_load(&d->lock.q[i].ident), 0); /* the dead entry was freed */
    munmap(d, sizeof *d);
}

/* A live waiter whose turn is passed over (here: forced by a stalled-turn skip)
 * notices and queues again; nobody gets the lock twice. */
static void test_skipped_live_waiter_requeues(void)
{
    il_lock *l = shared_alloc(sizeof *l);
    il_lock_init(l);
    uint64_t me = il_ident_self();
    uint32_t tid = my_tid();
    CHECK_EQ(il_lock_try(l, me, tid, 0), IL_OK);
    il_lock_waiter w;
    il_lock_wait_begin(&w, l, me, tid + 1, 0);
    CHECK_EQ(il_lock_wait_poll(&w), IL_BUSY); /* queued with the next ticket */
    CHECK_EQ(il_lock_release(l, me, tid), IL_OK);
    /* Someone else sees the turn stalled for IL_LOCK_STALL_NS and skips it. */
    il_lock_waiter other;
    il_lock_wait_begin(&other, l, me, tid + 2, 0);
    CHECK_EQ(il_lock_check_owner(l, &other), 0); /* starts the stall clock */
    t_sleep_ms((int)(IL_LOCK_STALL_NS / MS) + 10);
    CHECK_EQ(il_lock_check_owner(l, &other), 1);
    /* The lock is free with nobody else queued; the skipped waiter requeues
     * and gets it. */
    int rc = il_lock_wait_poll(&w);
    CHECK_EQ(rc, IL_OK);
    uint32_t htid = 0;
    CHECK_EQ(il_lock_holder(l, NULL, &htid, NULL), 1);
    CHECK_EQ(htid, tid + 1);
    CHECK_EQ(il_lock_release(l, me, tid + 1), IL_OK);
    munmap(l, sizeof *l);
}

/* ---- lock: chaos ---------------------------------------------------------- */

typedef struct chaos_shared {
    il_lock lock;
    uint64_t a, b;       /* invariant a == b, broken inside the critical section */
    _Atomic int stop;
    _Atomic uint64_t steady_done;
    _Atomic uint64_t ownerdied_seen;
    _Atomic uint64_t repairs;
    _Atomic uint64_t bad_repairs; /* a != b without OWNERDIED */
    _Atomic int64_t max_wait_ns;
} chaos_shared;

static void chaos_section(chaos_shared *c, uint64_t me, uint32_t tid)
{
    int64_t t0 = il_now_ns();
    int rc = il_lock_acquire(&c->lock, me, tid, 0, 20000 * MS, SLICE);
    CHECK(acquired(rc));
    int64_t waited = il_now_ns() - t0;
    if (waited > atomic_load(&c->max_wait_ns))
        atomic_store(&c->max_wait_ns, waited);
    if (rc == IL_OWNERDIED) {
        atomic_fetch_add(&c->ownerdied_seen, 1);
        if (c->a != c->b) {
            c->b = c->a; /* repair */
            atomic_fetch_add(&c->repairs, 1);
        }
    } else if (c->a != c->b) {
        atomic_fetch_add(&c->bad_repairs, 1);
        c->b = c->a;
    }
    c->a++;
    for (volatile int k = 0; k < 200; k++) {
    }
    c->b++;
    CHECK_EQ(il_lock_release(&c->lock, me, tid), IL_OK);
}

static void test_chaos_kill9(void)
{
    chaos_shared *c = shared_alloc(sizeof *c);
    il_lock_init(&c->lock);
    pid_t steady = fork_child();
    if (steady == 0) {
        uint64_t me = il_ident_self();
        uint32_t tid = my_tid();
        while (!atomic_load(&c->stop)) {
            chaos_section(c, me, tid);
            atomic_fetch_add(&c->steady_done, 1);
        }
        _exit(0);
    }
    uint64_t last_steady = 0;
    for (int round = 0; round < 50; round++) {
        pid_t kid = fork_child();
        if (kid == 0) {
            uint64_t me = il_ident_self();
            uint32_t tid = my_tid();
            for (;;)
                chaos_section(c, me, tid);
        }
        t_sleep_ms(1 + (int)t_rand_below(15));
        CHECK(kill(kid, SIGKILL) == 0);
        CHECK_EQ(wait_exit(kid), 128 + SIGKILL);
        if (round % 10 == 9) {
            /* The steady process keeps making progress: nobody is wedged. */
            int64_t t0 = il_now_ns();
            while (atomic_load(&c->steady_done) == last_steady) {
                CHECK(il_now_ns() - t0 < 3000 * MS);
                t_sleep_ms(1);
            }
            last_steady = atomic_load(&c->steady_done);
        }
    }
    atomic_store(&c->stop, 1);
    CHECK_EQ(wait_exit(steady), 0);
    /* Final consistency, as seen by a last acquirer. */
    uint64_t me = il_ident_self();
    int rc = il_lock_acquire(&c->lock, me, my_tid(), 0, 1000 * MS, SLICE);
    CHECK(acquired(rc));
    if (rc == IL_OWNERDIED) {
        atomic_fetch_add(&c->ownerdied_seen, 1);
        if (c->a != c->b) {
            c->b = c->a;
            atomic_fetch_add(&c->repairs, 1);
        }
    }
    CHECK_EQ(c->a, c->b);
    CHECK_EQ(il_lock_release(&c->lock, me, my_tid()), IL_OK);
    il_lock_stats st;
    il_lock_read_stats(&c->lock, &st);
    printf("        50 kills: %" PRIu64 " OWNERDIED, %" PRIu64 " repairs, %" PRIu64
           " sections, %" PRIu64 " skips, max wait %.1f ms\n",
           atomic_load(&c->ownerdied_seen), atomic_load(&c->repairs), c->a, st.skipped,
           (double)atomic_load(&c->max_wait_ns) / 1e6);
    CHECK_EQ(atomic_load(&c->bad_repairs), 0);
    CHECK(atomic_load(&c->repairs) <= atomic_load(&c->ownerdied_seen));
    CHECK(atomic_load(&c->ownerdied_seen) <= 50);
    CHECK_EQ(st.owner_died, atomic_load(&c->ownerdied_seen));
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++) {
        uint64_t id = atomic_load(&c->lock.q[i].ident);
        CHECK(id == 0 || !il_ident_alive(id)); /* only dead leftovers, if any */
    }
    il_lock_check_owner(&c->lock, NULL);
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++)
        CHECK_EQ(atomic_load(&c->lock.q[i].ident), 0);
    munmap(c, sizeof *c);
}

/* ---- semaphore ------------------------------------------------------------ */

typedef struct sem_shared {
    il_seg_header hdr;
    il_sem sem;
    _Atomic int inside;
    _Atomic int max_inside;
    _Atomic int child_ready;
    _Atomic uint64_t dead_ident;
} sem_shared;

static sem_shared *sem_new(uint32_t value, uint32_t max)
{
    sem_shared *m = shared_alloc(sizeof *m);
    m->hdr.nslots = IL_SEG_SLOTS;
    CHECK_EQ(il_sem_init(&m->sem, value, max), IL_OK);
    CHECK_EQ(il_sem_validate(&m->sem), IL_OK);
    return m;
}

static uint32_t sem_attach(sem_shared *m)
{
    uint32_t slot = 0;
    CHECK_EQ(il_seg_attach(&m->hdr, il_ident_self(), 0, &slot), IL_OK);
    return slot;
}

static void test_sem_basic_and_bounded(void)
{
    sem_shared *m = sem_new(2, 2); /* BoundedSemaphore(2) */
    uint32_t me = sem_attach(m);
    CHECK_EQ(il_sem_release(&m->sem, me, 1), IL_INVALID); /* over-release */
    CHECK_EQ(il_sem_value(&m->sem), 2);
    CHECK_EQ(il_sem_try_acquire(&m->sem, me, 3), IL_BUSY);
    CHECK_EQ(il_sem_try_acquire(&m->sem, me, 0), IL_INVALID);
    CHECK_EQ(il_sem_try_acquire(&m->sem, IL_SEG_SLOTS, 1), IL_INVALID);
    CHECK_EQ(il_sem_try_acquire(&m->sem, me, 1), IL_OK);
    CHECK_EQ(il_sem_try_acquire(&m->sem, me, 1), IL_OK);
    CHECK_EQ(il_sem_held(&m->sem, me), 2);
    CHECK_EQ(il_sem_try_acquire(&m->sem, me, 1), IL_BUSY);
    CHECK_EQ(il_sem_acquire(&m->sem, &m->hdr, me, my_tid(), 1, 0, SLICE), IL_TIMEOUT);
    int64_t t0 = il_now_ns();
    CHECK_EQ(il_sem_acquire(&m->sem, &m->hdr, me, my_tid(), 1, 40 * MS, SLICE), IL_TIMEOUT);
    CHECK(il_now_ns() - t0 >= 39 * MS);
    CHECK_EQ(il_sem_release(&m->sem, me, 2), IL_OK);
    CHECK_EQ(il_sem_held(&m->sem, me), 0);
    CHECK_EQ(il_sem_value(&m->sem), 2);
    CHECK_EQ(il_sem_release(&m->sem, me, 1), IL_INVALID);
    CHECK_EQ(il_sem_value(&m->sem), 2);
    il_sem_stats st;
    il_sem_read_stats(&m->sem, &st);
    CHECK_EQ(st.wakes, 0); /* nobody ever slept */
    munmap(m, sizeof *m);

    /* Unbounded: releases beyond the initial value are fine (and are not
     * charged to the releasing slot's held count). */
    m = sem_new(0, UINT32_MAX);
    me = sem_attach(m);
    CHECK_EQ(il_sem_release(&m->sem, me, 5), IL_OK);
    CHECK_EQ(il_sem_value(&m->sem), 5);
    CHECK_EQ(il_sem_held(&m->sem, me), 0);
    munmap(m, sizeof *m);
}

typedef struct sem_wait_arg {
    sem_shared *m;
    uint32_t slot;
    int rc;
} sem_wait_arg;

static void *sem_waiter_thread(void *p)
{
    sem_wait_arg *a = p;
    a->rc = il_sem_acquire(&a->m->sem, &a->m->hdr, a->slot, my_tid(), 1, 10000 * MS, 2000 * MS);
    return NULL;
}

static void test_sem_wakes_sleeper(void)
{
    sem_shared *m = sem_new(0, 10);
    uint32_t me = sem_attach(m);
    sem_wait_arg a = {m, me, -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, sem_waiter_thread, &a) == 0);
    int64_t t0 = il_now_ns();
    while (il_sem_waiters(&m->sem) == 0) {
        CHECK(il_now_ns() - t0 < 2000 * MS);
        t_sleep_ms(1);
    }
    t0 = il_now_ns();
    CHECK_EQ(il_sem_release(&m->sem, me, 1), IL_OK);
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, IL_OK);
    CHECK(il_now_ns() - t0 < 1000 * MS); /* woken, not the end of a 2 s slice */
    il_sem_stats st;
    il_sem_read_stats(&m->sem, &st);
    CHECK(st.wakes >= 1);
    uint64_t wakes = st.wakes;
    CHECK_EQ(il_sem_release(&m->sem, me, 1), IL_OK);
    il_sem_read_stats(&m->sem, &st);
    CHECK_EQ(st.wakes, wakes); /* nobody asleep: no syscall */
    munmap(m, sizeof *m);
}

static void test_sem_bound_4_processes(void)
{
    sem_shared *m = sem_new(2, 2);
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = fork_child();
        if (kids[i] == 0) {
            uint32_t slot = sem_attach(m);
            for (int k = 0; k < 3000; k++) {
                int rc = il_sem_acquire(&m->sem, &m->hdr, slot, my_tid(), 1, 20000 * MS, SLICE);
                if (rc != IL_OK)
                    _exit(2);
                int now = atomic_fetch_add(&m->inside, 1) + 1;
                int mx = atomic_load(&m->max_inside);
                while (now > mx && !atomic_compare_exchange_weak(&m->max_inside, &mx, now)) {
                }
                if (k % 8 == 0) {
                    struct timespec ts = {0, 50000}; /* hold a while: holders overlap */
                    nanosleep(&ts, NULL);
                } else {
                    for (volatile int j = 0; j < 100; j++) {
                    }
                }
                atomic_fetch_sub(&m->inside, 1);
                if (il_sem_release(&m->sem, slot, 1) != IL_OK)
                    _exit(3);
            }
            if (il_sem_held(&m->sem, slot) != 0)
                _exit(4);
            _exit(0);
        }
    }
    for (int i = 0; i < 4; i++)
        CHECK_EQ(wait_exit(kids[i]), 0);
    CHECK(atomic_load(&m->max_inside) <= 2);
    CHECK_EQ(atomic_load(&m->max_inside), 2); /* and the bound was reached */
    CHECK_EQ(il_sem_value(&m->sem), 2);
    munmap(m, sizeof *m);
}

static void test_sem_dead_holder_units_returned(void)
{
    sem_shared *m = sem_new(3, 3);
    pid_t pid = fork_child();
    if (pid == 0) {
        uint32_t slot = sem_attach(m);
        if (il_sem_try_acquire(&m->sem, slot, 2) != IL_OK)
            _exit(2);
        atomic_store(&m->child_ready, 1);
        for (;;)
            pause();
    }
    while (!atomic_load(&m->child_ready))
        t_sleep_ms(1);
    uint32_t me = sem_attach(m);
    CHECK_EQ(il_sem_value(&m->sem), 1);
    CHECK_EQ(il_sem_try_acquire(&m->sem, me, 2), IL_BUSY);
    CHECK_EQ(il_sem_recover_dead(&m->sem, &m->hdr, me), 0); /* holder alive */
    CHECK(kill(pid, SIGKILL) == 0);
    wait_exit(pid);
    /* A blocking acquire of 3 gets the dead holder's 2 back by itself. */
    int64_t t0 = il_now_ns();
    CHECK_EQ(il_sem_acquire(&m->sem, &m->hdr, me, my_tid(), 3, 1000 * MS, 10 * MS), IL_OK);
    CHECK(il_now_ns() - t0 < 2000 * MS);
    CHECK_EQ(il_sem_held(&m->sem, me), 3);
    CHECK_EQ(il_sem_recover_dead(&m->sem, &m->hdr, me), 0); /* nothing twice */
    CHECK_EQ(il_sem_release(&m->sem, me, 3), IL_OK);
    CHECK_EQ(il_sem_value(&m->sem), 3);
    il_sem_stats st;
    il_sem_read_stats(&m->sem, &st);
    CHECK_EQ(st.recovered, 2);
    munmap(m, sizeof *m);
}

/* The identity of a process that has exited (for crafting dead updates). */
static uint64_t dead_ident(sem_shared *m)
{
    pid_t pid = fork_child();
    if (pid == 0) {
        atomic_store(&m->dead_ident, il_ident_self());
        _exit(0);
    }
    CHECK_EQ(wait_exit(pid), 0);
    uint64_t id = atomic_load(&m->dead_ident);
    CHECK(id != 0 && !il_ident_alive(id));
    return id;
}

/* A process killed in the middle of an update, at each step: after taking the
 * marker, after the journal, after storing held[]. Recovery never loses or
 * duplicates a unit. */
static void test_sem_dead_update_rolled_back(void)
{
    for (int step = 0; step < 3; step++) {
        for (int kind = 0; kind < 2; kind++) { /* 0: acquire, 1: release */
            sem_shared *m = sem_new(5, 5);
            uint32_t me = sem_attach(m);
            uint32_t dslot = 0;
            CHECK_EQ(il_seg_attach(&m->hdr, dead_ident(m), 0, &dslot), IL_OK);
            /* The dead slot had legitimately acquired 2 units before. */
            atomic_store(&m->sem.held[dslot], 2);
            atomic_store(&m->sem.word, (uint64_t)3 | ((uint64_t)7 << 40)); /* value 3, epoch 7 */
            /* Replay the dead process's update up to `step`. */
            uint32_t epoch = 8;
            atomic_store(&m->sem.word, (uint64_t)3 | ((uint64_t)(dslot + 1) << 32) |
                                           ((uint64_t)epoch << 40));
            if (step >= 1) {
                atomic_store(&m->sem.j_slot, dslot);
                atomic_store(&m->sem.j_held, 2);
                atomic_store(&m->sem.j_epoch, epoch);
            } else {
                atomic_store(&m->sem.j_epoch, 7); /* an older journal */
                atomic_store(&m->sem.j_slot, dslot);
                atomic_store(&m->sem.j_held, 99);
            }
            if (step >= 2)
                atomic_store(&m->sem.held[dslot], kind == 0 ? 3 : 1);
            /* Everyone else is stuck behind the marker until recovery. */
            CHECK_EQ(il_sem_try_acquire(&m->sem, me, 1), IL_BUSY);
            int64_t back = il_sem_recover_dead(&m->sem, &m->hdr, me);
            CHECK_EQ(back, 2); /* rolled back, then its 2 held units returned */
            CHECK_EQ(il_sem_value(&m->sem), 5);
            CHECK_EQ(il_sem_held(&m->sem, dslot), 0);
            CHECK_EQ(il_sem_recover_dead(&m->sem, &m->hdr, me), 0);
            CHECK_EQ(il_sem_try_acquire(&m->sem, me, 5), IL_OK);
            CHECK_EQ(il_sem_release(&m->sem, me, 5), IL_OK);
            munmap(m, sizeof *m);
        }
    }
}

/* Processes that take and give units are killed at random moments; after
 * recovery the units add up exactly. */
static void test_sem_chaos_kill9(void)
{
    sem_shared *m = sem_new(3, 3);
    uint32_t me = sem_attach(m);
    for (int round = 0; round < 30; round++) {
        pid_t pid = fork_child();
        if (pid == 0) {
            uint32_t slot = sem_attach(m);
            for (;;) {
                uint32_t n = 1 + (uint32_t)(t_rand() % 2);
                if (il_sem_acquire(&m->sem, &m->hdr, slot, my_tid(), n, 1000 * MS, SLICE) ==
                    IL_OK)
                    il_sem_release(&m->sem, slot, n);
            }
        }
        t_sleep_ms(1 + (int)t_rand_below(10));
        CHECK(kill(pid, SIGKILL) == 0);
        wait_exit(pid);
        il_sem_recover_dead(&m->sem, &m->hdr, me);
        CHECK_EQ(il_sem_value(&m->sem), 3);
        uint32_t total = 0;
        for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
            total += il_sem_held(&m->sem, i);
        CHECK_EQ(total, 0);
        il_seg_reclaim_plain(&m->hdr); /* safe now: nothing is held */
    }
    munmap(m, sizeof *m);
}

/* A reclaimer must not free a dead slot while an update in flight (someone
 * else's marker) may still write its held[] count: a recovery giving the
 * slot's units back, or rolling back the slot's own interrupted update, has
 * journaled the slot and may have zeroed held[] already.  If that recoverer
 * dies, the next one restores held[] from the journal: onto the slot's next
 * user if the slot was freed and reused, where recovery (keyed on the slot's
 * liveness) can never give the units back while that user lives.  This
 * replays the window (two dead processes: D held 2 units; R died between
 * zeroing them and publishing the value) and checks that il_sem_names_slot
 * keeps D's slot named until recovery has really given the units back, and
 * that a slot freed then and reused starts with nothing. */
static void test_sem_names_slot_during_dead_recovery(void)
{
    {
        sem_shared *m = sem_new(5, 5);
        uint32_t me = sem_attach(m);
        uint32_t dslot = 0, rslot = 0;
        CHECK_EQ(il_seg_attach(&m->hdr, dead_ident(m), 0, &dslot), IL_OK);
        CHECK_EQ(il_seg_attach(&m->hdr, dead_ident(m), 0, &rslot), IL_OK);
        /* D holds 2 units: value 3. */
        atomic_store(&m->sem.held[dslot], 2);
        uint32_t epoch = 9;
        /* R's marker at `epoch`; the journal names D with held-before 2, and
         * held[D] is already 0: R was giving D's units back, or (the same
         * state) D's release of 2 had journaled and stored held 0 when D died
         * and R took the marker over (same epoch) and died before restoring
         * held[D]. */
        atomic_store(&m->sem.j_slot, dslot);
        atomic_store(&m->sem.j_held, 2);
        atomic_store(&m->sem.j_epoch, epoch);
        atomic_store(&m->sem.held[dslot], 0);
        atomic_store(&m->sem.word, (uint64_t)3 | ((uint64_t)(rslot + 1) << 32) |
                                       ((uint64_t)epoch << 40));
        CHECK(il_sem_names_slot(&m->sem, dslot)); /* the fix: D's slot stays named */
        CHECK(il_sem_names_slot(&m->sem, rslot)); /* the marker's own slot */
        CHECK(!il_sem_names_slot(&m->sem, me));   /* the journal names another slot */
        /* A marker whose journal was not written yet: unknown target, named. */
        atomic_store(&m->sem.j_epoch, epoch - 1);
        CHECK(il_sem_names_slot(&m->sem, me));
        atomic_store(&m->sem.j_epoch, epoch);
        /* Recovery rolls R's update back (held[D] = 2), then gives D's 2
         * units back; only then is D's slot free of the semaphore. */
        CHECK_EQ(il_sem_recover_dead(&m->sem, &m->hdr, me), 2);
        CHECK_EQ(il_sem_value(&m->sem), 5);
        CHECK_EQ(il_sem_held(&m->sem, dslot), 0);
        CHECK(!il_sem_names_slot(&m->sem, dslot));
        CHECK(!il_sem_names_slot(&m->sem, rslot));
        /* Freed and reused now (as sync_reclaim does): the new user holds
         * nothing, and all 5 units can be taken. */
        uint64_t w = atomic_load(&m->hdr.slots[dslot].ident);
        CHECK(atomic_compare_exchange_strong(&m->hdr.slots[dslot].ident, &w, 0));
        uint32_t again = 0;
        CHECK_EQ(il_seg_attach(&m->hdr, il_ident_self(), 0, &again), IL_OK);
        CHECK_EQ(again, dslot);
        CHECK_EQ(il_sem_held(&m->sem, again), 0);
        CHECK_EQ(il_sem_try_acquire(&m->sem, me, 5), IL_OK);
        CHECK_EQ(il_sem_release(&m->sem, me, 5), IL_OK);
        munmap(m, sizeof *m);
    }
}

/* ---- semaphore: sleepers of dead processes -------------------------------- */

typedef struct sem_sleep_arg {
    sem_shared *m;
    uint32_t slot;
    int64_t slice;
    int rc;
} sem_sleep_arg;

static void *sem_sleeper_thread(void *p)
{
    sem_sleep_arg *a = p;
    a->rc = il_sem_acquire(&a->m->sem, &a->m->hdr, a->slot, my_tid(), 1, 20000 * MS, a->slice);
    return NULL;
}

static void wait_sem_sleepers(sem_shared *m, uint32_t n)
{
    int64_t t0 = il_now_ns();
    while (il_sem_waiters(&m->sem) != n) {
        CHECK(il_now_ns() - t0 < 5000 * MS);
        t_sleep_ms(1);
    }
}

/* Waiters killed (SIGKILL) while asleep in the futex wait: their sleepers
 * stay counted until recovery, which takes exactly their slots' counts out;
 * a live sleeper is still woken by the next release (not at the end of its
 * long slice), and once nobody sleeps a release makes no wake syscall. */
static void test_sem_sleeper_killed_asleep(void)
{
    sem_shared *m = sem_new(0, 10);
    uint32_t me = sem_attach(m);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = fork_child();
        if (kids[i] == 0) {
            uint32_t slot = sem_attach(m);
            sem_sleep_arg a = {m, slot, 5000 * MS, -1};
            pthread_t th[2];
            for (int k = 0; k < 2; k++)
                if (pthread_create(&th[k], NULL, sem_sleeper_thread, &a) != 0)
                    _exit(2);
            for (;;)
                pause();
        }
    }
    wait_sem_sleepers(m, 6);
    uint32_t by_slot = 0;
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        by_slot += il_sem_sleepers(&m->sem, i);
    CHECK_EQ(by_slot, 6);
    CHECK_EQ(il_sem_sleepers(&m->sem, me), 0);
    CHECK_EQ(il_sem_recover_dead(&m->sem, &m->hdr, me), 0); /* all alive: no change */
    CHECK_EQ(il_sem_waiters(&m->sem), 6);

    /* One live sleeper of our own, with a slice far longer than the test. */
    sem_sleep_arg live = {m, me, 4000 * MS, -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, sem_sleeper_thread, &live) == 0);
    wait_sem_sleepers(m, 7);

    uint32_t dslot[3];
    for (int i = 0; i < 3; i++) {
        CHECK(kill(kids[i], SIGKILL) == 0);
        wait_exit(kids[i]);
    }
    int nd = 0;
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        if (i != me && il_sem_sleepers(&m->sem, i) != 0)
            dslot[nd++] = i;
    CHECK_EQ(nd, 3);
    CHECK_EQ(il_sem_waiters(&m->sem), 7); /* the leak: nobody has recovered yet */
    for (int i = 0; i < 3; i++)
        CHECK(il_sem_names_slot(&m->sem, dslot[i])); /* must not be freed yet */

    CHECK_EQ(il_sem_recover_dead(&m->sem, &m->hdr, me), 0); /* no units, only sleepers */
    CHECK_EQ(il_sem_waiters(&m->sem), 1);                    /* the live one */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(il_sem_sleepers(&m->sem, dslot[i]), 0);
        CHECK(!il_sem_names_slot(&m->sem, dslot[i]));
    }
    CHECK_EQ(il_sem_recover_dead(&m->sem, &m->hdr, me), 0); /* nothing twice */
    CHECK_EQ(il_sem_waiters(&m->sem), 1);

    int64_t t0 = il_now_ns();
    CHECK_EQ(il_sem_release(&m->sem, me, 1), IL_OK);
    pthread_join(th, NULL);
    CHECK_EQ(live.rc, IL_OK);
    CHECK(il_now_ns() - t0 < 2000 * MS); /* woken, not the end of its 4 s slice */
    CHECK_EQ(il_sem_waiters(&m->sem), 0);
    CHECK_EQ(il_sem_sleepers(&m->sem, me), 0);
    il_sem_stats st;
    il_sem_read_stats(&m->sem, &st);
    uint64_t wakes = st.wakes;
    CHECK_EQ(il_sem_release(&m->sem, me, 1), IL_OK);
    il_sem_read_stats(&m->sem, &st);
    CHECK_EQ(st.wakes, wakes); /* nobody asleep any more: no syscall */
    munmap(m, sizeof *m);
}

/* A live thread whose slot is freed while it sleeps (its handle was closed
 * meanwhile) has its sleeper taken by recovery; when it wakes, neither count
 * goes below zero. */
static void test_sem_sleeper_slot_freed_no_underflow(void)
{
    sem_shared *m = sem_new(0, 10);
    uint32_t me = sem_attach(m);
    uint32_t other = sem_attach(m); /* a second slot of ours, freed below */
    CHECK(other != me);
    sem_sleep_arg a = {m, other, 50 * MS, -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, sem_sleeper_thread, &a) == 0);
    wait_sem_sleepers(m, 1);
    atomic_store(&m->hdr.slots[other].ident, 0); /* detached */
    CHECK_EQ(il_sem_recover_dead(&m->sem, &m->hdr, me), 0);
    CHECK_EQ(il_sem_sleepers(&m->sem, other), 0);
    CHECK_EQ(il_sem_waiters(&m->sem), 0);
    /* It still gets the unit: at the end of a (short) slice at the latest. */
    CHECK_EQ(il_sem_release(&m->sem, me, 1), IL_OK);
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, IL_OK);
    CHECK_EQ(il_sem_waiters(&m->sem), 0);
    CHECK_EQ(il_sem_sleepers(&m->sem, other), 0);
    munmap(m, sizeof *m);
}

int main(int argc, char **argv)
{
    static const test_case tests[] = {
        {"lock_try_release_nonowner", test_try_release_nonowner, 0},
        {"lock_recursion_depth", test_recursion_depth, 0},
        {"lock_timeout", test_timeout, 0},
        {"lock_mutex_4_threads_100k", test_mutex_4_threads, 180},
        {"lock_mutex_4_processes_100k", test_mutex_4_processes, 180},
        {"lock_fifo_order", test_fifo_order, 0},
        {"lock_no_wake_without_sleepers", test_no_wake_without_sleepers, 0},
        {"lock_fast_path_no_ticket_no_barging", test_fast_path_no_ticket_no_barging, 0},
        {"lock_fast_path_killed_in_windows", test_fast_path_killed_in_windows, 0},
        {"lock_fast_path_chaos_kill9", test_fast_path_chaos_kill9, 120},
        {"lock_holder_killed_one_waiter", test_holder_killed_one_waiter, 0},
        {"lock_holder_killed_many_waiters", test_holder_killed_many_waiters, 0},
        {"lock_waiter_killed_is_skipped", test_waiter_killed_is_skipped, 0},
        {"lock_skipped_live_waiter_requeues", test_skipped_live_waiter_requeues, 0},
        {"lock_chaos_kill9_50_rounds", test_chaos_kill9, 120},
        {"sem_basic_and_bounded", test_sem_basic_and_bounded, 0},
        {"sem_wakes_sleeper", test_sem_wakes_sleeper, 0},
        {"sem_bound_4_processes", test_sem_bound_4_processes, 120},
        {"sem_dead_holder_units_returned", test_sem_dead_holder_units_returned, 0},
        {"sem_dead_update_rolled_back", test_sem_dead_update_rolled_back, 0},
        {"sem_chaos_kill9", test_sem_chaos_kill9, 120},
        {"sem_names_slot_during_dead_recovery", test_sem_names_slot_during_dead_recovery, 0},
        {"sem_sleeper_killed_asleep", test_sem_sleeper_killed_asleep, 0},
        {"sem_sleeper_slot_freed_no_underflow", test_sem_sleeper_slot_freed_no_underflow, 0},
    };
    return RUN_TESTS("test_lockword", tests, argc, argv);
}
