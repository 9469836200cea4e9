/* test_futex.c - il_futex_wait / il_futex_wake: timeouts, wakes across threads
 * and processes, value mismatch, signals. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/time.h>

#include "check.h"
#include "futex.h"
#include "il_common.h"

#define MS 1000000LL

static void test_timeout_returns_in_about_the_time_asked(void)
{
    _Atomic uint32_t word = 7;
    const int64_t asks[] = {1 * MS, 20 * MS, 120 * MS};
    for (size_t i = 0; i < sizeof asks / sizeof asks[0]; i++) {
        int64_t t0 = il_now_ns();
        int rc = il_futex_wait(&word, 7, asks[i]);
        int64_t took = il_now_ns() - t0;
        CHECK_EQ(rc, IL_TIMEOUT);
        CHECK(took >= asks[i] - 1 * MS); /* the kernel never returns early */
        CHECK(took < asks[i] + 500 * MS); /* generous: a loaded CI machine */
    }
    /* Zero and negative timeouts do not sleep. */
    int64_t t0 = il_now_ns();
    CHECK_EQ(il_futex_wait(&word, 7, 0), IL_TIMEOUT);
    CHECK_EQ(il_futex_wait(&word, 7, -5), IL_TIMEOUT);
    CHECK(il_now_ns() - t0 < 200 * MS);
    /* Timeouts of a second or more are split into tv_sec / tv_nsec correctly. */
    t0 = il_now_ns();
    CHECK_EQ(il_futex_wait(&word, 7, 1000 * MS + 50 * MS), IL_TIMEOUT);
    int64_t took = il_now_ns() - t0;
    CHECK(took >= 1049 * MS && took < 1800 * MS);
}

static void test_value_mismatch_returns_at_once(void)
{
    _Atomic uint32_t word = 1;
    int64_t t0 = il_now_ns();
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(il_futex_wait(&word, 2, 5000 * MS), IL_OK);
    CHECK(il_now_ns() - t0 < 500 * MS);
}

static void test_wake_without_waiters_returns_zero(void)
{
    _Atomic uint32_t word = 0;
    CHECK_EQ(il_futex_wake(&word, 1), 0);
    CHECK_EQ(il_futex_wake(&word, 1 << 30), 0);
}

typedef struct {
    _Atomic uint32_t word;
    _Atomic int waiting;
    int rc;
    int64_t took;
} waiter_arg;

static void *waiter_thread(void *p)
{
    waiter_arg *a = p;
    atomic_store(&a->waiting, 1);
    int64_t t0 = il_now_ns();
    int rc;
    do {
        rc = il_futex_wait(&a->word, 0, 5000 * MS);
    } while (rc == IL_OK && atomic_load(&a->word) == 0); /* tolerate spurious wakes */
    a->took = il_now_ns() - t0;
    a->rc = rc;
    return NULL;
}

static void test_wake_from_another_thread(void)
{
    waiter_arg a;
    atomic_init(&a.word, 0);
    atomic_init(&a.waiting, 0);
    a.rc = -1;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, waiter_thread, &a) == 0);
    while (!atomic_load(&a.waiting))
        t_sleep_ms(1);
    t_sleep_ms(50); /* let it reach the kernel */
    atomic_store(&a.word, 1);
    int woken = 0;
    for (int i = 0; i < 100 && woken == 0; i++) {
        woken = il_futex_wake(&a.word, 1);
        if (woken == 0)
            t_sleep_ms(1);
    }
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_EQ(a.rc, IL_OK);
    CHECK(a.took < 4000 * MS); /* woken, not timed out */
    CHECK(woken <= 1);
}

/* One wake for n sleepers on the same word wakes them all. */
typedef struct {
    _Atomic uint32_t *word;
    _Atomic int *ready;
    int rc;
} shared_waiter;

static void *shared_waiter_thread(void *p)
{
    shared_waiter *a = p;
    atomic_fetch_add(a->ready, 1);
    int rc;
    do {
        rc = il_futex_wait(a->word, 0, 5000 * MS);
    } while (rc == IL_OK && atomic_load(a->word) == 0);
    a->rc = rc;
    return NULL;
}

static void test_wake_many_threads(void)
{
    enum { N = 4 };
    _Atomic uint32_t word = 0;
    _Atomic int ready = 0;
    pthread_t th[N];
    shared_waiter w[N];
    for (int i = 0; i < N; i++) {
        w[i].word = &word;
        w[i].ready = &ready;
        w[i].rc = -1;
        CHECK(pthread_create(&th[i], NULL, shared_waiter_thread, &w[i]) == 0);
    }
    while (atomic_load(&ready) < N)
        t_sleep_ms(1);
    t_sleep_ms(100);
    int64_t t0 = il_now_ns();
    atomic_store(&word, 1);
    int woken = il_futex_wake(&word, N);
    for (int i = 0; i < N; i++) {
        CHECK(pthread_join(th[i], NULL) == 0);
        CHECK_EQ(w[i].rc, IL_OK);
    }
    CHECK(woken >= 0 && woken <= N);
    CHECK(il_now_ns() - t0 < 3000 * MS);
}

/* The futex word lives in MAP_SHARED memory: a wake from another process
 * reaches a waiter in this one (no FUTEX_PRIVATE_FLAG). */
static void test_wake_across_processes(void)
{
    _Atomic uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(word != MAP_FAILED);
    atomic_store(&word[0], 0); /* the futex word */
    atomic_store(&word[1], 0); /* child ready flag */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        atomic_store(&word[1], 1);
        int rc;
        do {
            rc = il_futex_wait(&word[0], 0, 5000 * MS);
        } while (rc == IL_OK && atomic_load(&word[0]) == 0);
        _exit(rc);
    }
    while (!atomic_load(&word[1]))
        t_sleep_ms(1);
    t_sleep_ms(50);
    int64_t t0 = il_now_ns();
    atomic_store(&word[0], 1);
    int woken = 0;
    for (int i = 0; i < 1000 && woken == 0; i++) {
        woken = il_futex_wake(&word[0], 1);
        if (woken == 0)
            t_sleep_ms(1);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), IL_OK);
    CHECK(il_now_ns() - t0 < 3000 * MS);
    CHECK_EQ(woken, 1);
    munmap((void *)word, 4096);
}

/* A process-shared wait in the parent, woken by a child process. */
static void test_wake_from_child_process(void)
{
    _Atomic uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(word != MAP_FAILED);
    atomic_store(word, 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_sleep_ms(100);
        atomic_store(word, 1);
        il_futex_wake(word, 1);
        _exit(0);
    }
    int64_t t0 = il_now_ns();
    int rc;
    do {
        rc = il_futex_wait(word, 0, 5000 * MS);
    } while (rc == IL_OK && atomic_load(word) == 0);
    CHECK_EQ(rc, IL_OK);
    CHECK(il_now_ns() - t0 < 3000 * MS);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    munmap((void *)word, 4096);
}

static volatile sig_atomic_t g_alarms;

static void on_alarm(int sig)
{
    (void)sig;
    g_alarms++;
}

/* A signal whose handler was installed without SA_RESTART ends the wait with
 * IL_EINTR, long before the timeout. */
static void test_signal_returns_eintr(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
    struct itimerval it;
    memset(&it, 0, sizeof it);
    it.it_value.tv_usec = 50 * 1000;
    CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
    _Atomic uint32_t word = 0;
    int64_t t0 = il_now_ns();
    int rc = il_futex_wait(&word, 0, 5000 * MS);
    int64_t took = il_now_ns() - t0;
    CHECK_EQ(rc, IL_EINTR);
    CHECK_EQ(g_alarms, 1);
    CHECK(took >= 40 * MS && took < 2000 * MS);
}

int main(int argc, char **argv)
{
    static const test_case tests[] = {
        {"futex_timeout_returns_in_about_the_time_asked",
         test_timeout_returns_in_about_the_time_asked, 0},
        {"futex_value_mismatch_returns_at_once", test_value_mismatch_returns_at_once, 0},
        {"futex_wake_without_waiters_returns_zero", test_wake_without_waiters_returns_zero, 0},
        {"futex_wake_from_another_thread", test_wake_from_another_thread, 0},
        {"futex_wake_many_threads", test_wake_many_threads, 0},
        {"futex_wake_across_processes", test_wake_across_processes, 0},
        {"futex_wake_from_child_process", test_wake_from_child_process, 0},
        {"futex_signal_returns_eintr", test_signal_returns_eintr, 0},
    };
    return RUN_TESTS("test_futex", tests, argc, argv);
}
