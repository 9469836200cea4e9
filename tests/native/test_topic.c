/* test_topic.c - the topic core (topicword.c): order per publisher, the
 * block policy (publishers wait for the slowest subscriber), the drop policy
 * (a lapped subscriber's lost count is exact), history, wrap-around pads,
 * bounded waits and wake-ups, corrupted shared memory, forked processes on a
 * MAP_SHARED mapping, a publisher killed in the middle of a record, a
 * publisher killed between its next_seq and head stores, and a subscriber
 * killed with SIGKILL under the block policy (it leaves the wait set). */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "check.h"
#include "il_common.h"
#include "proc.h"
#include "topicword.h"

#define MS 1000000LL

typedef struct tt {
    il_topic t;
    void *mem;
    uint64_t size;
} tt;

static tt tt_new(uint32_t npub, uint32_t nsub, uint64_t ring, uint32_t policy)
{
    tt x;
    x.size = il_topic_size_for(npub, nsub, ring, NULL);
    CHECK(x.size > 0);
    x.mem = mmap(NULL, x.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(x.mem != MAP_FAILED);
    memset(x.mem, 0xA5, x.size);
    CHECK_EQ(il_topic_init(&x.t, x.mem, x.size, npub, nsub, ring, policy), IL_OK);
    il_topic again;
    CHECK_EQ(il_topic_attach(&again, x.mem, x.size), IL_OK);
    CHECK(again.cap == x.t.cap && again.rings == x.t.rings && again.subs == x.t.subs);
    return x;
}

static void tt_free(tt *x) { munmap(x->mem, x->size); }

static uint64_t me(void)
{
    uint64_t id = il_ident_self();
    CHECK(id != 0);
    return id;
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

static int wait_exit(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        CHECK(errno == EINTR);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

/* Payload: publisher, counter, length, then bytes depending on all three. */
typedef struct phdr {
    uint32_t pub, counter, len, pad;
} phdr;

static uint8_t pat(const phdr *p, uint64_t i)
{
    return (uint8_t)(p->pub * 131u + p->counter * 7u + (uint32_t)i * 13u);
}

static void fill_msg(uint8_t *buf, uint32_t pub, uint32_t counter, uint32_t len)
{
    phdr p = {pub, counter, len, 0};
    memcpy(buf, &p, sizeof p);
    for (uint32_t i = sizeof p; i < len; i++)
        buf[i] = pat(&p, i);
}

static phdr check_msg(const uint8_t *buf, uint64_t len)
{
    CHECK(len >= sizeof(phdr));
    phdr p;
    memcpy(&p, buf, sizeof p);
    CHECK_EQ(p.len, len);
    for (uint32_t i = sizeof p; i < len; i++)
        if (buf[i] != pat(&p, i)) {
            fprintf(stderr, "payload mismatch at %u (pub %u counter %u)\n", i, p.pub, p.counter);
            CHECK(0);
        }
    return p;
}

/* Publish one message, waiting (bounded slices) while the ring is full. */
static int publish(il_topic_writer *w, uint32_t pub, uint32_t counter, uint32_t len,
                   int64_t timeout_ns)
{
    if (len < sizeof(phdr))
        len = sizeof(phdr);
    int64_t deadline = il_now_ns() + timeout_ns;
    uint8_t *ptr = NULL;
    for (;;) {
        int rc = il_topic_pub_reserve_wait(w, len, &ptr, 10 * MS);
        if (rc == IL_OK)
            break;
        if (rc != IL_FULL && rc != IL_EINTR)
            return rc;
        if (il_now_ns() >= deadline)
            return IL_TIMEOUT;
    }
    fill_msg(ptr, pub, counter, len);
    il_topic_pub_commit(w, len);
    return IL_OK;
}

/* Receive one message (copied, validated), waiting up to timeout_ns. */
static int receive(il_topic_reader *r, phdr *out, int64_t timeout_ns)
{
    static uint8_t buf[1 << 20];
    int64_t deadline = il_now_ns() + timeout_ns;
    for (;;) {
        il_topic_rec m;
        int rc = il_topic_sub_peek(r, &m);
        if (rc == IL_OK) {
            CHECK(m.len <= sizeof buf);
            memcpy(buf, m.ptr, m.len);
            if (il_topic_sub_consume(r, &m) == IL_TOPIC_LAPPED)
                continue;
            *out = check_msg(buf, m.len);
            return IL_OK;
        }
        if (rc != IL_EMPTY)
            return rc;
        int64_t left = deadline - il_now_ns();
        if (left <= 0)
            return IL_TIMEOUT;
        il_topic_sub_wait(r, left < 20 * MS ? left : 20 * MS);
    }
}

/* An identity of a process that has exited. */
static uint64_t dead_ident(void)
{
    _Atomic uint64_t *slot =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(slot != MAP_FAILED);
    pid_t pid = fork_child();
    if (pid == 0) {
        atomic_store(slot, il_ident_self());
        _exit(0);
    }
    CHECK_EQ(wait_exit(pid), 0);
    uint64_t id = atomic_load(slot);
    munmap((void *)slot, 4096);
    CHECK(id != 0 && !il_ident_alive(id));
    return id;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_geometry(void)
{
    uint64_t ring = 0;
    CHECK(il_topic_size_for(0, 1, 4096, NULL) == 0);
    CHECK(il_topic_size_for(1, 0, 4096, NULL) == 0);
    CHECK(il_topic_size_for(IL_TOPIC_MAX_PUB + 1, 1, 4096, NULL) == 0);
    CHECK(il_topic_size_for(1, 1, IL_TOPIC_MAX_RING + 1, NULL) == 0);
    CHECK(il_topic_size_for(2, 3, 5000, &ring) > 0);
    CHECK_EQ(ring, 8192);
    tt x = tt_new(2, 3, 5000, IL_TOPIC_DROP);
    CHECK_EQ(x.t.cap, 8192);
    il_topic h;
    CHECK_EQ(il_topic_attach(&h, x.mem, x.size - 1), IL_CORRUPT); /* mapping too small */
    il_topic_ctrl *c = (il_topic_ctrl *)x.mem;
    c->npub = 65;
    CHECK_EQ(il_topic_attach(&h, x.mem, x.size), IL_CORRUPT);
    c->npub = 2;
    c->ring_bytes = 8000;
    CHECK_EQ(il_topic_attach(&h, x.mem, x.size), IL_CORRUPT);
    c->ring_bytes = 8192;
    c->policy = 7;
    CHECK_EQ(il_topic_attach(&h, x.mem, x.size), IL_CORRUPT);
    c->policy = IL_TOPIC_DROP;
    atomic_store(&c->magic, 0);
    CHECK_EQ(il_topic_attach(&h, x.mem, x.size), IL_INFLIGHT);
    atomic_store(&c->magic, 12345);
    CHECK_EQ(il_topic_attach(&h, x.mem, x.size), IL_CORRUPT);
    tt_free(&x);
}

/* Block policy, one process: every subscriber gets every message in order,
 * the publisher gets FULL while the slowest has not consumed, TOOBIG. */
static void test_block_order(void)
{
    tt x = tt_new(1, 4, 4096, IL_TOPIC_BLOCK);
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    il_topic_reader a, b;
    CHECK_EQ(il_topic_sub_join(&x.t, &a, me(), 0), IL_OK);
    CHECK_EQ(il_topic_sub_join(&x.t, &b, me(), 0), IL_OK);
    CHECK(a.slot != b.slot);
    uint8_t *ptr;
    CHECK_EQ(il_topic_pub_reserve(&w, 4096, &ptr), IL_TOOBIG);
    uint32_t sent = 0, got_a = 0, got_b = 0;
    for (int round = 0; round < 50; round++) {
        while (il_topic_pub_reserve(&w, 100, &ptr) == IL_OK) {
            fill_msg(ptr, 0, sent++, 100);
            il_topic_pub_commit(&w, 100);
        }
        phdr p;
        /* a drains everything, b only half: the publisher stays bounded by b */
        while (receive(&a, &p, 0) == IL_OK)
            CHECK_EQ(p.counter, got_a++);
        for (int k = 0; k < 10 && receive(&b, &p, 0) == IL_OK; k++)
            CHECK_EQ(p.counter, got_b++);
    }
    CHECK_EQ(got_a, sent);
    phdr p;
    while (receive(&b, &p, 0) == IL_OK)
        CHECK_EQ(p.counter, got_b++);
    CHECK_EQ(got_b, sent);
    CHECK(sent > 300); /* wrapped many times (32 records per lap) */
    CHECK_EQ(a.lost + b.lost, 0);
    il_topic_sub_leave(&b);
    il_topic_sub_leave(&a);
    il_topic_pub_release(&w);
    tt_free(&x);
}

/* Drop policy: a subscriber that never reads is lapped; received + lost is
 * exactly what was published, and what it receives is in order. */
static void test_drop_lost_exact(void)
{
    tt x = tt_new(1, 2, 4096, IL_TOPIC_DROP);
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    il_topic_reader r;
    CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 0), IL_OK);
    uint32_t sent = 0, got = 0;
    int64_t last = -1;
    for (int round = 0; round < 40; round++) {
        uint32_t burst = (uint32_t)t_rand_below(300);
        for (uint32_t k = 0; k < burst; k++) {
            uint32_t len = 16 + (uint32_t)t_rand_below(200);
            CHECK_EQ(publish(&w, 0, sent++, len, 0), IL_OK); /* never waits */
        }
        uint32_t reads = (uint32_t)t_rand_below(100);
        phdr p;
        for (uint32_t k = 0; k < reads && receive(&r, &p, 0) == IL_OK; k++) {
            CHECK((int64_t)p.counter > last);
            last = p.counter;
            got++;
        }
    }
    phdr p;
    while (receive(&r, &p, 0) == IL_OK) {
        CHECK((int64_t)p.counter > last);
        last = p.counter;
        got++;
    }
    CHECK(r.lost > 0);
    CHECK_EQ(got, r.received);
    CHECK_EQ(r.received + r.lost, sent);
    tt_free(&x);
}

static void test_history(void)
{
    tt x = tt_new(2, 4, 8192, IL_TOPIC_DROP);
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    for (uint32_t i = 0; i < 10; i++)
        CHECK_EQ(publish(&w, 0, i, 40, 0), IL_OK);
    il_topic_reader r0, r3, r99;
    CHECK_EQ(il_topic_sub_join(&x.t, &r0, me(), 0), IL_OK);
    CHECK_EQ(il_topic_sub_join(&x.t, &r3, me(), 3), IL_OK);
    CHECK_EQ(il_topic_sub_join(&x.t, &r99, me(), 99), IL_OK);
    phdr p;
    CHECK_EQ(receive(&r0, &p, 0), IL_TIMEOUT);
    for (uint32_t i = 7; i < 10; i++) {
        CHECK_EQ(receive(&r3, &p, 0), IL_OK);
        CHECK_EQ(p.counter, i);
    }
    CHECK_EQ(receive(&r3, &p, 0), IL_TIMEOUT);
    for (uint32_t i = 0; i < 10; i++) {
        CHECK_EQ(receive(&r99, &p, 0), IL_OK);
        CHECK_EQ(p.counter, i);
    }
    /* history after the ring wrapped: only what is still intact */
    for (uint32_t i = 10; i < 2000; i++)
        CHECK_EQ(publish(&w, 0, i, 40, 0), IL_OK);
    il_topic_reader rw;
    CHECK_EQ(il_topic_sub_join(&x.t, &rw, me(), 1000), IL_OK);
    uint32_t n = 0, prev = 0;
    while (receive(&rw, &p, 0) == IL_OK) {
        CHECK(n == 0 || p.counter == prev + 1);
        prev = p.counter;
        n++;
    }
    CHECK(n > 10 && n < 1000);
    CHECK_EQ(prev, 1999);
    CHECK_EQ(rw.lost, 0);
    tt_free(&x);
}

/* Two publishers: order per publisher, nothing lost under BLOCK. */
static void test_two_publishers(void)
{
    tt x = tt_new(2, 2, 4096, IL_TOPIC_BLOCK);
    il_topic_writer w0, w1;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w0, me()), IL_OK);
    CHECK_EQ(il_topic_pub_claim(&x.t, &w1, me()), IL_OK);
    il_topic_writer w2;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w2, me()), IL_NOSLOT);
    il_topic_reader r;
    CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 0), IL_OK);
    uint32_t next[2] = {0, 0}, sent[2] = {0, 0};
    for (int k = 0; k < 5000; k++) {
        int which = (int)t_rand_below(2);
        il_topic_writer *w = which ? &w1 : &w0;
        uint8_t *ptr;
        if (il_topic_pub_reserve(w, 64, &ptr) == IL_OK) {
            fill_msg(ptr, (uint32_t)which, sent[which]++, 64);
            il_topic_pub_commit(w, 64);
        }
        phdr p;
        if (t_rand_below(2) && receive(&r, &p, 0) == IL_OK)
            CHECK_EQ(p.counter, next[p.pub]++);
    }
    phdr p;
    while (receive(&r, &p, 0) == IL_OK)
        CHECK_EQ(p.counter, next[p.pub]++);
    CHECK_EQ(next[0], sent[0]);
    CHECK_EQ(next[1], sent[1]);
    tt_free(&x);
}

/* Corrupted shared memory: statuses, never a crash or an over-read. */
static void test_corrupt(void)
{
    tt x = tt_new(1, 2, 4096, IL_TOPIC_DROP);
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    il_topic_reader r;
    CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 0), IL_OK);
    CHECK_EQ(publish(&w, 0, 0, 64, 0), IL_OK);
    /* a record length beyond the ring */
    uint32_t *len0 = (uint32_t *)x.t.rings;
    uint32_t saved = *len0;
    *len0 = 1u << 30;
    il_topic_rec m;
    CHECK_EQ(il_topic_sub_peek(&r, &m), IL_CORRUPT);
    *len0 = saved;
    CHECK_EQ(il_topic_sub_peek(&r, &m), IL_OK);
    /* the reader re-reads head once it reaches the head it last saw */
    CHECK_EQ(il_topic_sub_consume(&r, &m), IL_OK);
    /* head behind the reader, head not aligned */
    il_topic_pub *pb = &x.t.pubs[0];
    uint64_t head = atomic_load(&pb->head);
    atomic_store(&pb->head, head + 3);
    CHECK_EQ(il_topic_sub_peek(&r, &m), IL_CORRUPT);
    atomic_store(&pb->head, head + (1u << 20));
    CHECK_EQ(il_topic_sub_peek(&r, &m), IL_CORRUPT);
    /* a new publisher adopting a damaged ring */
    atomic_store(&pb->owner, 0);
    atomic_store(&pb->tail, head + 32);
    atomic_store(&pb->head, head);
    il_topic_writer w2;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w2, me()), IL_CORRUPT);
    CHECK_EQ(atomic_load(&pb->owner), 0); /* the slot was given back */
    /* a joiner on a damaged ring */
    il_topic_reader r2;
    atomic_store(&pb->head, 7);
    atomic_store(&pb->tail, 7);
    CHECK_EQ(il_topic_sub_join(&x.t, &r2, me(), 5), IL_CORRUPT);
    /* random scribbles over a working topic: only documented statuses */
    tt y = tt_new(2, 2, 4096, IL_TOPIC_DROP);
    il_topic_writer wy;
    CHECK_EQ(il_topic_pub_claim(&y.t, &wy, me()), IL_OK);
    il_topic_reader ry;
    CHECK_EQ(il_topic_sub_join(&y.t, &ry, me(), 0), IL_OK);
    for (int round = 0; round < 2000; round++) {
        uint8_t *ptr;
        int rc = il_topic_pub_reserve(&wy, 16 + t_rand_below(300), &ptr);
        CHECK(rc == IL_OK || rc == IL_CORRUPT);
        if (rc == IL_OK) {
            memset(ptr, 0x5A, 16);
            il_topic_pub_commit(&wy, 16);
        }
        if (t_rand_below(10) == 0) {
            uint64_t off = t_rand_below(y.size);
            ((uint8_t *)y.mem)[off] = (uint8_t)t_rand();
        }
        rc = il_topic_sub_peek(&ry, &m);
        CHECK(rc == IL_OK || rc == IL_EMPTY || rc == IL_CORRUPT);
        if (rc == IL_OK) {
            CHECK(m.ptr >= (uint8_t *)y.t.rings &&
                  m.ptr + m.len <= (uint8_t *)y.t.rings + y.t.cap * y.t.npub);
            il_topic_sub_consume(&ry, &m);
        }
        if (rc == IL_CORRUPT || t_rand_below(50) == 0) {
            /* re-format (a fresh topic), as a user would after Corrupt */
            CHECK_EQ(il_topic_init(&y.t, y.mem, y.size, 2, 2, 4096, IL_TOPIC_DROP), IL_OK);
            CHECK_EQ(il_topic_pub_claim(&y.t, &wy, me()), IL_OK);
            CHECK_EQ(il_topic_sub_join(&y.t, &ry, me(), 0), IL_OK);
        }
    }
    tt_free(&y);
    tt_free(&x);
}

static void *late_publisher(void *arg)
{
    il_topic_writer *w = arg;
    t_sleep_ms(30);
    CHECK_EQ(publish(w, 0, 42, 32, 0), IL_OK);
    return NULL;
}

/* Waits are bounded; a sleeping subscriber is woken by a commit. */
static void test_wait_wake(void)
{
    tt x = tt_new(1, 1, 4096, IL_TOPIC_BLOCK);
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    il_topic_reader r;
    CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 0), IL_OK);
    int64_t t0 = il_now_ns();
    CHECK_EQ(il_topic_sub_wait(&r, 20 * MS), IL_TIMEOUT);
    CHECK(il_now_ns() - t0 >= 15 * MS);
    /* a full ring: the publisher's wait is bounded too */
    while (publish(&w, 0, 0, 64, 0) == IL_OK) {
    }
    t0 = il_now_ns();
    CHECK_EQ(publish(&w, 0, 0, 64, 30 * MS), IL_TIMEOUT);
    CHECK(il_now_ns() - t0 >= 25 * MS);
    phdr p;
    while (receive(&r, &p, 0) == IL_OK) {
    }
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, late_publisher, &w), 0);
    CHECK_EQ(receive(&r, &p, 5000 * MS), IL_OK);
    CHECK_EQ(p.counter, 42);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(atomic_load(&x.t.c->data_armed), 0); /* the commit that woke us disarmed */
    CHECK_EQ(atomic_load(&x.t.c->space_sleepers), 0);
    tt_free(&x);
}

/* Wake coalescing loses no wake-up: subscriber threads sleep in ONE long
 * il_topic_sub_wait (no slice would hide a lost wake-up) while two publisher
 * threads publish with irregular pauses; every sleep that is not the last
 * must end well before its 10 s slice, and every message arrives. */
enum { WK_SUBS = 4, WK_PUBS = 2, WK_N = 3000 };

typedef struct wk_ctx {
    tt *x;
    _Atomic uint32_t ready;
    _Atomic uint32_t long_sleeps;
    uint32_t id;
} wk_ctx;

typedef struct wk_arg {
    wk_ctx *c;
    uint32_t id;
} wk_arg;

static void *wk_subscriber(void *p)
{
    wk_arg *a = p;
    il_topic_reader *r = calloc(1, sizeof *r);
    CHECK(r != NULL);
    CHECK_EQ(il_topic_sub_join(&a->c->x->t, r, me(), 0), IL_OK);
    atomic_fetch_add(&a->c->ready, 1);
    uint32_t got = 0;
    uint8_t buf[256];
    while (got < WK_PUBS * WK_N) {
        il_topic_rec m;
        int rc = il_topic_sub_peek(r, &m);
        if (rc == IL_OK) {
            CHECK(m.len <= sizeof buf);
            memcpy(buf, m.ptr, m.len);
            CHECK_EQ(il_topic_sub_consume(r, &m), IL_OK);
            check_msg(buf, m.len);
            got++;
            continue;
        }
        CHECK_EQ(rc, IL_EMPTY);
        int64_t t0 = il_now_ns();
        il_topic_sub_wait(r, 10000 * MS);
        if (il_now_ns() - t0 > 3000 * MS)
            atomic_fetch_add(&a->c->long_sleeps, 1);
    }
    il_topic_sub_leave(r);
    free(r);
    return NULL;
}

static void *wk_publisher(void *p)
{
    wk_arg *a = p;
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&a->c->x->t, &w, me()), IL_OK);
    uint32_t seed = 0x9E3779B9u * (a->id + 1);
    for (uint32_t i = 0; i < WK_N; i++) {
        CHECK_EQ(publish(&w, a->id, i, 16 + (i % 64), 20000 * MS), IL_OK);
        seed = seed * 1664525u + 1013904223u;
        if ((seed >> 24) < 16) { /* 1 in 16: a pause long enough to let subscribers sleep */
            struct timespec ts = {0, (long)((seed >> 8) % 200000)};
            nanosleep(&ts, NULL);
        } else if ((seed >> 24) < 64) {
            sched_yield();
        }
    }
    il_topic_pub_release(&w);
    return NULL;
}

static void test_wake_no_loss(void)
{
    tt x = tt_new(WK_PUBS, WK_SUBS, 1 << 16, IL_TOPIC_BLOCK);
    wk_ctx c = {&x, 0, 0, 0};
    pthread_t subs[WK_SUBS], pubs[WK_PUBS];
    wk_arg sa[WK_SUBS], pa[WK_PUBS];
    for (uint32_t s = 0; s < WK_SUBS; s++) {
        sa[s] = (wk_arg){&c, s};
        CHECK_EQ(pthread_create(&subs[s], NULL, wk_subscriber, &sa[s]), 0);
    }
    while (atomic_load(&c.ready) < WK_SUBS)
        t_sleep_ms(1);
    for (uint32_t p = 0; p < WK_PUBS; p++) {
        pa[p] = (wk_arg){&c, p};
        CHECK_EQ(pthread_create(&pubs[p], NULL, wk_publisher, &pa[p]), 0);
    }
    for (uint32_t p = 0; p < WK_PUBS; p++)
        CHECK_EQ(pthread_join(pubs[p], NULL), 0);
    for (uint32_t s = 0; s < WK_SUBS; s++)
        CHECK_EQ(pthread_join(subs[s], NULL), 0);
    CHECK_EQ(atomic_load(&c.long_sleeps), 0);
    tt_free(&x);
}

/* Forked processes: 1 publisher x 4 subscribers, BLOCK: every subscriber gets
 * every message; DROP with one slow subscriber: received + lost exact. */
static void run_procs(uint32_t policy)
{
    enum { NSUB = 4, N = 20000 };
    tt x = tt_new(1, 8, 16384, policy);
    _Atomic uint32_t *ready =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(ready != MAP_FAILED);
    pid_t subs[NSUB];
    for (int s = 0; s < NSUB; s++) {
        subs[s] = fork_child();
        if (subs[s] == 0) {
            il_topic_reader r;
            CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 0), IL_OK);
            atomic_fetch_add(ready, 1);
            int64_t last = -1;
            uint64_t got = 0;
            phdr p;
            for (;;) {
                if (receive(&r, &p, 20000 * MS) != IL_OK)
                    _exit(3);
                if (p.counter == UINT32_MAX)
                    break; /* end marker */
                CHECK((int64_t)p.counter > last);
                if (policy == IL_TOPIC_BLOCK)
                    CHECK_EQ(p.counter, last + 1);
                last = p.counter;
                got++;
                if (s == 0 && policy == IL_TOPIC_DROP && got % 64 == 0)
                    t_sleep_ms(1); /* the slow one */
            }
            CHECK_EQ(got + r.lost, N);
            if (policy == IL_TOPIC_BLOCK)
                CHECK_EQ(r.lost, 0);
            _exit(s == 0 && policy == IL_TOPIC_DROP && r.lost == 0 ? 4 : 0);
        }
    }
    while (atomic_load(ready) < NSUB)
        t_sleep_ms(1);
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    for (uint32_t i = 0; i < N; i++)
        CHECK_EQ(publish(&w, 0, i, 16 + (i % 100), 20000 * MS), IL_OK);
    /* end markers: under DROP publish them slowly enough that nobody is
     * lapped past them (each subscriber needs just one) */
    for (int k = 0; k < 64; k++) {
        CHECK_EQ(publish(&w, 0, UINT32_MAX, 16, 20000 * MS), IL_OK);
        if (policy == IL_TOPIC_DROP)
            t_sleep_ms(2);
    }
    for (int s = 0; s < NSUB; s++)
        CHECK_EQ(wait_exit(subs[s]), 0);
    munmap((void *)ready, 4096);
    tt_free(&x);
}

static void test_procs_block(void) { run_procs(IL_TOPIC_BLOCK); }
static void test_procs_drop(void) { run_procs(IL_TOPIC_DROP); }

/* A publisher killed in the middle of writing a record: nothing of it is
 * visible; the next publisher adopts the ring and the sequence continues
 * (no message counted lost). */
static void test_publisher_killed_mid_record(void)
{
    tt x = tt_new(1, 2, 16384, IL_TOPIC_DROP); /* 100 records fit: nobody lapped */
    il_topic_reader r;
    CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 0), IL_OK);
    pid_t pid = fork_child();
    if (pid == 0) {
        il_topic_writer w;
        CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
        for (uint32_t i = 0; i < 100; i++)
            CHECK_EQ(publish(&w, 0, i, 48, 0), IL_OK);
        uint8_t *ptr;
        CHECK_EQ(il_topic_pub_reserve(&w, 48, &ptr), IL_OK);
        memset(ptr, 0xEE, 20); /* half a record */
        raise(SIGKILL);
    }
    CHECK_EQ(wait_exit(pid), 128 + SIGKILL);
    phdr p;
    uint32_t got = 0;
    while (receive(&r, &p, 0) == IL_OK)
        CHECK_EQ(p.counter, got++);
    CHECK_EQ(got, 100);
    CHECK_EQ(r.lost, 0);
    /* the dead owner's slot is taken over */
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    CHECK_EQ(w.seq, 100);
    CHECK_EQ(publish(&w, 0, 100, 48, 0), IL_OK);
    CHECK_EQ(receive(&r, &p, 0), IL_OK);
    CHECK_EQ(p.counter, 100);
    uint64_t lost_before = r.lost;
    /* killed between its next_seq store and its head store: next_seq is one
     * ahead of the last visible record; the adopter walks the ring */
    atomic_store(&x.t.pubs[0].next_seq, 102);
    atomic_store(&x.t.pubs[0].owner, dead_ident());
    il_topic_writer w2;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w2, me()), IL_OK);
    CHECK_EQ(w2.seq, 101);
    CHECK_EQ(publish(&w2, 0, 101, 48, 0), IL_OK);
    CHECK_EQ(receive(&r, &p, 0), IL_OK);
    CHECK_EQ(p.counter, 101);
    CHECK_EQ(r.lost, lost_before);
    tt_free(&x);
}

/* BLOCK: a subscriber killed with SIGKILL blocks the publisher until it is
 * reaped (a liveness check of the slots), then the publisher proceeds. */
static void test_subscriber_killed_block(void)
{
    tt x = tt_new(1, 4, 4096, IL_TOPIC_BLOCK);
    _Atomic uint32_t *ready =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(ready != MAP_FAILED);
    il_topic_reader live;
    CHECK_EQ(il_topic_sub_join(&x.t, &live, me(), 0), IL_OK);
    pid_t pid = fork_child();
    if (pid == 0) {
        il_topic_reader r;
        CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 0), IL_OK);
        atomic_store(ready, 1);
        for (;;)
            pause();
    }
    while (atomic_load(ready) == 0)
        t_sleep_ms(1);
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    uint32_t sent = 0;
    while (publish(&w, 0, sent, 64, 0) == IL_OK)
        sent++;
    phdr p;
    uint32_t got = 0;
    while (receive(&live, &p, 0) == IL_OK)
        CHECK_EQ(p.counter, got++);
    CHECK_EQ(got, sent);
    CHECK_EQ(publish(&w, 0, sent, 64, 0), IL_TIMEOUT); /* the stopped one blocks */
    CHECK_EQ(il_topic_reap_subs(&x.t), 0);             /* alive: stays */
    kill(pid, SIGKILL);
    CHECK_EQ(wait_exit(pid), 128 + SIGKILL);
    CHECK_EQ(il_topic_reap_subs(&x.t), 1);
    for (uint32_t k = 0; k < 500; k++) {
        CHECK_EQ(publish(&w, 0, sent++, 64, 1000 * MS), IL_OK);
        CHECK_EQ(receive(&live, &p, 0), IL_OK);
        CHECK_EQ(p.counter, got++);
    }
    CHECK_EQ(atomic_load(&x.t.c->reaped), 1);
    munmap((void *)ready, 4096);
    tt_free(&x);
}

/* BLOCK zero-copy: a held record is never overwritten; releasing it (in any
 * order) lets the publisher go on; history records are never held. */
static void test_hold_release(void)
{
    tt x = tt_new(1, 2, 4096, IL_TOPIC_BLOCK);
    il_topic_writer w;
    CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
    CHECK_EQ(publish(&w, 0, 0, 100, 0), IL_OK); /* history */
    il_topic_reader r;
    CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 1), IL_OK);
    il_topic_rec m;
    CHECK_EQ(il_topic_sub_peek(&r, &m), IL_OK);
    CHECK(!il_topic_sub_can_hold(&r, &m)); /* a history record: copy it */
    CHECK_EQ(il_topic_sub_consume(&r, &m), IL_OK);
    CHECK_EQ(publish(&w, 0, 1, 1000, 0), IL_OK);
    CHECK_EQ(publish(&w, 0, 2, 1000, 0), IL_OK);
    il_topic_rec a, b;
    CHECK_EQ(il_topic_sub_peek(&r, &a), IL_OK);
    CHECK(il_topic_sub_can_hold(&r, &a));
    CHECK_EQ(il_topic_sub_consume_hold(&r, &a), IL_OK);
    CHECK_EQ(il_topic_sub_peek(&r, &b), IL_OK);
    CHECK_EQ(il_topic_sub_consume_hold(&r, &b), IL_OK);
    CHECK_EQ(r.nheld[0], 2);
    /* everything read, but both held: the publisher cannot overwrite them */
    uint32_t sent = 3;
    while (publish(&w, 0, sent, 1000, 0) == IL_OK)
        sent++;
    phdr p;
    while (receive(&r, &p, 0) == IL_OK) {
    }
    CHECK_EQ(publish(&w, 0, sent, 1000, 20 * MS), IL_TIMEOUT);
    CHECK_EQ(check_msg(a.ptr, a.len).counter, 1); /* intact */
    CHECK_EQ(check_msg(b.ptr, b.len).counter, 2);
    il_topic_sub_release(&r, 0, b.pos); /* out of order: a still blocks */
    CHECK_EQ(publish(&w, 0, sent, 1000, 20 * MS), IL_TIMEOUT);
    CHECK_EQ(check_msg(a.ptr, a.len).counter, 1);
    il_topic_sub_release(&r, 0, a.pos);
    CHECK_EQ(r.nheld[0], 0);
    CHECK_EQ(publish(&w, 0, sent, 1000, 1000 * MS), IL_OK);
    tt_free(&x);
}

/* Publishers killed with SIGKILL at random points, one after another on the
 * same slot (each successor adopts the dead one's ring): two readers see
 * every committed message exactly once, intact, with consecutive sequence
 * numbers -- nothing torn, nothing lost or invented. */
static void run_publisher_chaos(uint32_t policy)
{
    enum { ROUNDS = 150, READERS = 2 };
    tt x = tt_new(1, 4, 8192, policy);
    _Atomic uint32_t *flags =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(flags != MAP_FAILED);
    _Atomic uint32_t *ready = &flags[0], *stop = &flags[1];
    pid_t readers[READERS];
    for (int k = 0; k < READERS; k++) {
        readers[k] = fork_child();
        if (readers[k] == 0) {
            il_topic_reader r;
            CHECK_EQ(il_topic_sub_join(&x.t, &r, me(), 0), IL_OK);
            atomic_fetch_add(ready, 1);
            uint64_t next = 0, got = 0;
            for (;;) {
                phdr p;
                int rc = receive(&r, &p, 50 * MS);
                if (rc == IL_TIMEOUT) {
                    if (atomic_load(stop))
                        break;
                    continue;
                }
                CHECK_EQ(rc, IL_OK);
                /* the counter is the ring's sequence number (see below) */
                if (policy == IL_TOPIC_BLOCK)
                    CHECK_EQ(p.counter, next);
                else
                    CHECK(p.counter >= next);
                next = p.counter + 1;
                got++;
            }
            CHECK_EQ(got + r.lost, next);
            if (policy == IL_TOPIC_BLOCK)
                CHECK_EQ(r.lost, 0);
            printf("    reader %d: %llu messages from %d killed publishers, %llu lost\n", k,
                   (unsigned long long)next, ROUNDS, (unsigned long long)r.lost);
            fflush(stdout);
            CHECK(next > ROUNDS); /* the publishers did publish between the kills */
            _exit(0);
        }
    }
    while (atomic_load(ready) < READERS)
        t_sleep_ms(1);
    for (int round = 0; round < ROUNDS; round++) {
        pid_t pid = fork_child();
        if (pid == 0) {
            il_topic_writer w;
            CHECK_EQ(il_topic_pub_claim(&x.t, &w, me()), IL_OK);
            for (;;) {
                uint32_t len = 16 + (uint32_t)t_rand_below(2000);
                uint8_t *ptr;
                int rc = il_topic_pub_reserve_wait(&w, len, &ptr, 10 * MS);
                if (rc == IL_FULL || rc == IL_EINTR)
                    continue;
                CHECK_EQ(rc, IL_OK);
                fill_msg(ptr, 0, (uint32_t)w.seq, len);
                il_topic_pub_commit(&w, len);
            }
        }
        struct timespec ts = {0, (long)(t_rand_below(3000) + 100) * 1000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        CHECK_EQ(wait_exit(pid), 128 + SIGKILL);
    }
    atomic_store(stop, 1);
    for (int k = 0; k < READERS; k++)
        CHECK_EQ(wait_exit(readers[k]), 0);
    munmap((void *)flags, 4096);
    tt_free(&x);
}

static void test_publisher_chaos_block(void) { run_publisher_chaos(IL_TOPIC_BLOCK); }
static void test_publisher_chaos_drop(void) { run_publisher_chaos(IL_TOPIC_DROP); }

int main(int argc, char **argv)
{
    static const test_case tests[] = {
        {"geometry", test_geometry, 0},
        {"block_order", test_block_order, 0},
        {"drop_lost_exact", test_drop_lost_exact, 0},
        {"history", test_history, 0},
        {"two_publishers", test_two_publishers, 0},
        {"corrupt", test_corrupt, 0},
        {"wait_wake", test_wait_wake, 0},
        {"wake_no_loss", test_wake_no_loss, 120},
        {"procs_block", test_procs_block, 120},
        {"procs_drop", test_procs_drop, 120},
        {"publisher_killed_mid_record", test_publisher_killed_mid_record, 0},
        {"subscriber_killed_block", test_subscriber_killed_block, 0},
        {"hold_release", test_hold_release, 0},
        {"publisher_chaos_block", test_publisher_chaos_block, 120},
        {"publisher_chaos_drop", test_publisher_chaos_drop, 120},
    };
    return RUN_TESTS("test_topic", tests, argc, argv);
}
