/* check.h - a tiny test harness for the native tests (no framework).
 *
 * CHECK(cond) prints file:line and the failed condition, then exits the test
 * with a non-zero status.  Every TEST runs in its own forked child, so a failed
 * CHECK, a sanitizer report or a crash fails that test only, a hung test is
 * killed after its time limit, and the suite goes on with the next one.  The
 * last line printed is exactly "<suite>: N passed, M failed"; the exit status
 * is non-zero when M > 0.
 *
 * Usage:  ./build/native/test_ring [name-substring ...]   (runs matching tests)
 *         IL_TEST_SEED=123 ./build/native/test_ring        (fixes the random seed)
 *         IL_TEST_SKIP=misaligned,4gib make native-test    (skips tests whose name
 *                                                           contains a listed part)
 */
#ifndef IL_TEST_CHECK_H
#define IL_TEST_CHECK_H

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
            fflush(stderr);                                                                   \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

/* CHECK_EQ for integers: also prints both values. */
#define CHECK_EQ(a, b)                                                                        \
    do {                                                                                      \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                       \
        if (check_a_ != check_b_) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,       \
                    __LINE__, #a, #b, check_a_, check_b_);                                    \
            fflush(stderr);                                                                   \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

typedef struct test_case {
    const char *name;
    void (*fn)(void);
    int timeout_s; /* 0: 60 s */
} test_case;

static inline int64_t t_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void t_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* xorshift64*: deterministic per test (seeded from IL_TEST_SEED or the clock). */
static uint64_t t_rng_state = 88172645463325252ULL;

static inline uint64_t t_rand(void)
{
    uint64_t x = t_rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t_rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t t_rand_below(uint64_t n) { return n ? t_rand() % n : 0; }

static int t_matches(const char *name, int argc, char **argv)
{
    if (argc <= 1)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]) != NULL)
            return 1;
    return 0;
}

static int t_skipped(const char *name)
{
    const char *list = getenv("IL_TEST_SKIP");
    if (list == NULL)
        return 0;
    while (*list) {
        size_t len = strcspn(list, ",");
        if (len > 0) {
            char part[128];
            size_t m = len < sizeof part - 1 ? len : sizeof part - 1;
            memcpy(part, list, m);
            part[m] = '\0';
            if (strstr(name, part) != NULL)
                return 1;
        }
        list += len;
        if (*list == ',')
            list++;
    }
    return 0;
}

static int run_tests(const char *suite, const test_case *tests, size_t n, int argc, char **argv)
{
    uint64_t seed = 0;
    const char *env = getenv("IL_TEST_SEED");
    if (env != NULL && *env != '\0')
        seed = strtoull(env, NULL, 10);
    else
        seed = (uint64_t)t_now_ns() ^ ((uint64_t)getpid() << 32);
    if (seed == 0)
        seed = 1;
    printf("%s: seed %" PRIu64 " (set IL_TEST_SEED to repeat)\n", suite, seed);
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        const test_case *t = &tests[i];
        if (!t_matches(t->name, argc, argv))
            continue;
        if (t_skipped(t->name)) {
            printf("  skip  %s (IL_TEST_SKIP)\n", t->name);
            continue;
        }
        int limit = t->timeout_s > 0 ? t->timeout_s : 60;
        fflush(stdout);
        fflush(stderr);
        int64_t t0 = t_now_ns();
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            t_rng_state = seed ^ (0x9E3779B97F4A7C15ULL * (i + 1));
            t->fn();
            fflush(stdout);
            exit(0); /* exit, not _exit: LeakSanitizer checks the test at exit */
        }
        int status = 0, timed_out = 0;
        for (;;) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                break;
            if (w < 0 && errno != EINTR) {
                perror("waitpid");
                return 2;
            }
            if (t_now_ns() - t0 > (int64_t)limit * 1000000000LL) {
                timed_out = 1;
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                break;
            }
            t_sleep_ms(2);
        }
        double secs = (double)(t_now_ns() - t0) / 1e9;
        if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            passed++;
            printf("  ok    %-52s %7.2f s\n", t->name, secs);
        } else {
            failed++;
            if (timed_out)
                printf("  FAIL  %-52s timed out after %d s\n", t->name, limit);
            else if (WIFSIGNALED(status))
                printf("  FAIL  %-52s killed by signal %d\n", t->name, WTERMSIG(status));
            else
                printf("  FAIL  %-52s exit status %d\n", t->name, WEXITSTATUS(status));
        }
    }
    printf("%s: %d passed, %d failed\n", suite, passed, failed);
    fflush(stdout);
    return failed ? 1 : 0;
}

#define RUN_TESTS(suite, tests, argc, argv)                                                   \
    run_tests((suite), (tests), sizeof(tests) / sizeof((tests)[0]), (argc), (argv))

#endif
