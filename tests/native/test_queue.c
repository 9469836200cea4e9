/* test_queue.c - the queue core (queueword.c): order (FIFO, priorities),
 * statuses (full, empty, too big), the arena allocator under random sizes and
 * random release order, corrupted shared memory, bounded waits, threads and
 * forked processes on a MAP_SHARED mapping, processes killed with SIGKILL at
 * random points (non-durable: nothing committed lost except what a dead
 * consumer held, nothing duplicated; durable: at-least-once), a mutex holder
 * dying half-way through a commit, and recovery after a machine restart. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "check.h"
#include "il_common.h"
#include "proc.h"
#include "queueword.h"

#define MS 1000000LL
#define FOREVER (-1LL)

/* ---- helpers ------------------------------------------------------------- */

typedef struct tq {
    il_qh h;
    void *mem;
    uint64_t size;
    int shared;
} tq;

static tq tq_new(uint32_t n, uint64_t arena, uint32_t maxsize, uint32_t flags, int shared)
{
    tq t;
    t.size = il_q_size_for(n, arena);
    CHECK(t.size > 0);
    t.shared = shared;
    if (shared) {
        t.mem = mmap(NULL, t.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(t.mem != MAP_FAILED);
    } else {
        /* exactly `size` bytes so that ASan sees any access past the end */
        t.mem = aligned_alloc(4096, (t.size + 4095) & ~(uint64_t)4095);
        CHECK(t.mem != NULL);
    }
    memset(t.mem, 0xA5, t.size); /* garbage must not survive formatting */
    CHECK_EQ(il_q_init(&t.h, t.mem, t.size, n, arena, maxsize, flags), IL_OK);
    il_qh again;
    CHECK_EQ(il_q_attach(&again, t.mem, t.size), IL_OK);
    CHECK(again.n == n && again.ent == t.h.ent && again.arena == t.h.arena);
    return t;
}

static void tq_free(tq *t)
{
    if (t->shared)
        munmap(t->mem, t->size);
    else
        free(t->mem);
}

static uint64_t me(void)
{
    uint64_t id = il_ident_self();
    CHECK(id != 0);
    return id;
}

/* Payload: a 16-byte header (producer, counter, prio, len) then bytes that
 * depend on all of it, so a mixed-up or torn payload is detected. */
typedef struct phdr {
    uint32_t producer, counter;
    int32_t prio;
    uint32_t len;
} phdr;

static uint8_t pat(const phdr *p, uint64_t i)
{
    return (uint8_t)(p->producer * 131u + p->counter * 7u + (uint32_t)i * 13u + (uint32_t)p->prio);
}

static uint32_t make_msg(uint8_t *buf, uint32_t producer, uint32_t counter, int32_t prio,
                         uint32_t len)
{
    if (len < sizeof(phdr))
        len = sizeof(phdr);
    phdr p = {producer, counter, prio, len};
    memcpy(buf, &p, sizeof p);
    for (uint32_t i = sizeof p; i < len; i++)
        buf[i] = pat(&p, i);
    return len;
}

/* Checks the payload and returns its header. */
static phdr check_msg(const uint8_t *buf, uint64_t len)
{
    CHECK(len >= sizeof(phdr));
    phdr p;
    memcpy(&p, buf, sizeof p);
    CHECK_EQ(p.len, len);
    for (uint32_t i = sizeof p; i < len; i++)
        if (buf[i] != pat(&p, i)) {
            fprintf(stderr, "payload mismatch at %u (producer %u counter %u)\n", i, p.producer,
                    p.counter);
            CHECK(0);
        }
    return p;
}

static int put_msg(il_qh *h, uint32_t producer, uint32_t counter, int32_t prio, uint32_t len)
{
    uint8_t buf[1 << 16];
    CHECK(len <= sizeof buf);
    len = make_msg(buf, producer, counter, prio, len);
    return il_q_put(h, me(), buf, len, prio, 0, FOREVER);
}

/* take + copy + free in one call */
static int get_msg(il_qh *h, phdr *out)
{
    uint8_t buf[1 << 16];
    il_q_msg m;
    int rc = il_q_take(h, me(), buf, sizeof buf, FOREVER, &m);
    if (rc != IL_OK)
        return rc;
    CHECK_EQ(m.copied, m.len <= IL_Q_INLINE_COPY);
    if (m.copied) {
        *out = check_msg(buf, m.len);
    } else { /* a large one stays TAKEN: read in place, then release */
        *out = check_msg(il_q_payload(h, &m), m.len);
        CHECK_EQ(il_q_release(h, me(), &m, FOREVER), IL_OK);
    }
    CHECK_EQ(out->prio, m.prio);
    return IL_OK;
}

static void check_ok(il_qh *h) { CHECK_EQ(il_q_check(h, me(), FOREVER), IL_OK); }

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
    while (waitpid(pid, &st, 0) < 0)
        CHECK(errno == EINTR);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

/* A blocking get/put built from the public wait protocol. */
static int get_blocking(il_qh *h, phdr *out, int64_t timeout_ns)
{
    int rc = get_msg(h, out); /* fast path: no registration */
    if (rc != IL_EMPTY)
        return rc;
    il_q_waiter w;
    il_q_wait_begin(&w, h, me(), IL_Q_WAIT_GET);
    int64_t deadline = il_now_ns() + timeout_ns;
    for (;;) {
        rc = get_msg(h, out);
        if (rc != IL_EMPTY)
            break;
        int64_t left = deadline - il_now_ns();
        if (left <= 0) {
            rc = IL_TIMEOUT;
            break;
        }
        il_q_wait_sleep(&w, left < 20 * MS ? left : 20 * MS);
    }
    il_q_wait_end(&w, rc == IL_OK);
    return rc;
}

static int put_blocking(il_qh *h, uint32_t producer, uint32_t counter, int32_t prio,
                        uint32_t len, int64_t timeout_ns)
{
    int rc = put_msg(h, producer, counter, prio, len); /* fast path: no registration */
    if (rc != IL_FULL)
        return rc;
    il_q_waiter w;
    il_q_wait_begin(&w, h, me(), IL_Q_WAIT_PUT);
    int64_t deadline = il_now_ns() + timeout_ns;
    for (;;) {
        rc = put_msg(h, producer, counter, prio, len);
        if (rc != IL_FULL)
            break;
        int64_t left = deadline - il_now_ns();
        if (left <= 0) {
            rc = IL_TIMEOUT;
            break;
        }
        if (il_q_wait_sleep(&w, left < 20 * MS ? left : 20 * MS) == IL_TIMEOUT &&
            il_q_recover_due(h, 20 * MS))
            il_q_recover_dead(h, me(), FOREVER, NULL);
    }
    il_q_wait_end(&w, rc == IL_OK);
    return rc;
}

/* ---- geometry, attach, init arguments ------------------------------------- */

static void test_geometry(void)
{
    CHECK_EQ(il_q_size_for(0, 4096), 0);
    CHECK_EQ(il_q_size_for(4, 0), 0);
    CHECK_EQ(il_q_size_for(IL_Q_MAX_ENTRIES + 1, 4096), 0);
    uint64_t sz = il_q_size_for(16, 1000);
    CHECK(sz >= 16 * 64 + 1024);
    tq t = tq_new(16, 1000, 0, 0, 0);
    CHECK_EQ(t.h.maxsize, 16);
    CHECK_EQ(t.h.arena_bytes, 1024); /* rounded to IL_Q_ALIGN */
    CHECK_EQ(((uintptr_t)t.h.arena) % IL_Q_ARENA_ALIGN, 0);
    check_ok(&t.h);
    il_qh h;
    CHECK_EQ(il_q_init(&h, t.mem, t.size - 1, 16, 1000, 0, 0), IL_INVALID);
    CHECK_EQ(il_q_init(&h, t.mem, t.size, 16, 1000, 17, 0), IL_INVALID); /* maxsize > n */
    CHECK_EQ(il_q_init(&h, t.mem, t.size, 16, 1000, 0, 0x80), IL_INVALID);
    CHECK_EQ(il_q_init(&h, (uint8_t *)t.mem + 8, t.size - 8, 1, 64, 0, 0), IL_INVALID);
    /* attach rejects every geometry field that does not add up */
    CHECK_EQ(il_q_attach(&h, t.mem, t.size - 1), IL_CORRUPT);
    il_q *q = t.h.q;
    uint64_t saved;
#define BREAK(field, val)                                                                     \
    do {                                                                                      \
        saved = (uint64_t)q->field;                                                           \
        q->field = (val);                                                                     \
        CHECK_EQ(il_q_attach(&h, t.mem, t.size), IL_CORRUPT);                                 \
        q->field = saved;                                                                     \
        CHECK_EQ(il_q_attach(&h, t.mem, t.size), IL_OK);                                      \
    } while (0)
    BREAK(version, 2);
    BREAK(nentries, 17);
    BREAK(nentries, 0);
    BREAK(arena_bytes, 1 << 20);
    BREAK(arena_bytes, 1000);
    BREAK(total_size, 1);
    BREAK(entries_off, 0);
    BREAK(heap_off, q->heap_off + 64);
    BREAK(free_off, 0);
    BREAK(arena_off, 4096 * 1000);
    BREAK(maxsize, 0);
    BREAK(maxsize, 17);
    BREAK(flags, 6);
#undef BREAK
    atomic_store(&q->magic, 0);
    CHECK_EQ(il_q_attach(&h, t.mem, t.size), IL_INFLIGHT);
    atomic_store(&q->magic, 0x12345678);
    CHECK_EQ(il_q_attach(&h, t.mem, t.size), IL_CORRUPT);
    tq_free(&t);
}

/* ---- order --------------------------------------------------------------- */

static void test_fifo(void)
{
    tq t = tq_new(64, 1 << 16, 0, 0, 0);
    phdr p;
    CHECK_EQ(get_msg(&t.h, &p), IL_EMPTY);
    for (uint32_t round = 0; round < 50; round++) {
        uint32_t k = 1 + (uint32_t)t_rand_below(64);
        for (uint32_t i = 0; i < k; i++)
            CHECK_EQ(put_msg(&t.h, 1, round * 100 + i, 0, 16 + (uint32_t)t_rand_below(900)),
                     IL_OK);
        CHECK_EQ(il_q_qsize(&t.h), k);
        for (uint32_t i = 0; i < k; i++) {
            CHECK_EQ(get_msg(&t.h, &p), IL_OK);
            CHECK_EQ(p.counter, round * 100 + i);
        }
        CHECK_EQ(get_msg(&t.h, &p), IL_EMPTY);
        check_ok(&t.h);
    }
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.ready, 0);
    CHECK_EQ(st.arena_used, 0);
    CHECK_EQ(st.free_entries, 64);
    CHECK(st.puts == st.gets && st.puts > 0);
    tq_free(&t);
}

static void test_priority(void)
{
    tq t = tq_new(512, 1 << 18, 0, 0, 0);
    /* random priorities (including negatives and extremes), FIFO ties */
    static const int32_t prios[] = {0, 1, -1, 5, 31999, INT32_MIN, INT32_MAX, 2};
    uint32_t total = 500;
    for (uint32_t i = 0; i < total; i++) {
        int32_t pr = prios[t_rand_below(8)];
        CHECK_EQ(put_msg(&t.h, 0, i, pr, 16 + (uint32_t)t_rand_below(100)), IL_OK);
        if (t_rand_below(5) == 0) { /* interleave some gets */
            phdr p;
            CHECK_EQ(get_msg(&t.h, &p), IL_OK);
        }
    }
    check_ok(&t.h);
    phdr prev, p;
    int first = 1;
    while (get_msg(&t.h, &p) == IL_OK) {
        if (!first) {
            CHECK(prev.prio >= p.prio);
            if (prev.prio == p.prio)
                CHECK(prev.counter < p.counter);
        }
        prev = p;
        first = 0;
    }
    check_ok(&t.h);
    tq_free(&t);
}

/* ---- statuses ------------------------------------------------------------ */

/* Every get against a model: the READY message with the highest priority,
 * and the oldest among those, whatever the interleaving (heap pops refill
 * the root bottom-up). */
static void test_heap_model(void)
{
    enum { N = 300 };
    tq t = tq_new(N, 1 << 18, 0, 0, 0);
    int32_t mprio[N];
    uint32_t mcount[N];
    uint32_t live = 0, counter = 0;
    for (int round = 0; round < 20000; round++) {
        int do_put = live == 0 || (live < N && t_rand_below(100) < 55);
        if (do_put) {
            int32_t pr = (int32_t)t_rand_below(5) - 2;
            if (t_rand_below(50) == 0)
                pr = t_rand_below(2) ? INT32_MAX : INT32_MIN;
            CHECK_EQ(put_msg(&t.h, 0, counter, pr, 16), IL_OK);
            mprio[live] = pr;
            mcount[live] = counter++;
            live++;
        } else {
            uint32_t best = 0;
            for (uint32_t k = 1; k < live; k++)
                if (mprio[k] > mprio[best] ||
                    (mprio[k] == mprio[best] && mcount[k] < mcount[best]))
                    best = k;
            phdr p;
            CHECK_EQ(get_msg(&t.h, &p), IL_OK);
            CHECK_EQ(p.prio, mprio[best]);
            CHECK_EQ(p.counter, mcount[best]);
            mprio[best] = mprio[live - 1];
            mcount[best] = mcount[live - 1];
            live--;
        }
        if (round % 1000 == 0)
            check_ok(&t.h);
    }
    check_ok(&t.h);
    tq_free(&t);
}

static void test_full_and_toobig(void)
{
    /* maxsize */
    tq t = tq_new(8, 4096, 3, 0, 0);
    for (uint32_t i = 0; i < 3; i++)
        CHECK_EQ(put_msg(&t.h, 0, i, 0, 16), IL_OK);
    CHECK_EQ(put_msg(&t.h, 0, 3, 0, 16), IL_FULL);
    /* a held (TAKEN) message no longer counts against maxsize ... */
    il_q_msg m;
    CHECK_EQ(il_q_take(&t.h, me(), NULL, 0, FOREVER, &m), IL_OK);
    CHECK_EQ(put_msg(&t.h, 0, 3, 0, 16), IL_OK);
    CHECK_EQ(put_msg(&t.h, 0, 4, 0, 16), IL_FULL);
    CHECK_EQ(il_q_release(&t.h, me(), &m, FOREVER), IL_OK);
    CHECK_EQ(il_q_release(&t.h, me(), &m, FOREVER), IL_INVALID); /* double release */
    check_ok(&t.h);
    tq_free(&t);

    /* entries: TAKEN messages hold entries */
    t = tq_new(4, 1 << 14, 0, 0, 0);
    il_q_msg held[4];
    for (uint32_t i = 0; i < 4; i++) {
        CHECK_EQ(put_msg(&t.h, 0, i, 0, 16), IL_OK);
        CHECK_EQ(il_q_take(&t.h, me(), NULL, 0, FOREVER, &held[i]), IL_OK);
    }
    CHECK_EQ(put_msg(&t.h, 0, 9, 0, 16), IL_FULL);
    CHECK_EQ(il_q_release_many(&t.h, me(), held, 4, FOREVER), IL_OK);
    CHECK_EQ(put_msg(&t.h, 0, 9, 0, 16), IL_OK);
    tq_free(&t);

    /* arena: too big never fits, big fits only when there is room */
    t = tq_new(16, 4096, 0, 0, 0);
    uint8_t *big = malloc(8192);
    CHECK(big != NULL);
    memset(big, 1, 8192);
    CHECK_EQ(il_q_put(&t.h, me(), big, 4097, 0, 0, FOREVER), IL_TOOBIG);
    CHECK_EQ(il_q_put(&t.h, me(), big, 4096, 0, 0, FOREVER), IL_OK); /* exactly the arena */
    CHECK_EQ(il_q_put(&t.h, me(), big, 0, 0, 0, FOREVER), IL_FULL);
    CHECK_EQ(il_q_take(&t.h, me(), big + 4096, 4096, FOREVER, &m), IL_OK);
    CHECK(m.copied && m.len == 4096);
    CHECK_EQ(il_q_put(&t.h, me(), big, 0, 0, 0, FOREVER), IL_OK); /* empty payload */
    CHECK_EQ(il_q_put(&t.h, me(), big, 4096 - 64, 0, 0, FOREVER), IL_OK);
    CHECK_EQ(il_q_put(&t.h, me(), big, 1, 0, 0, FOREVER), IL_FULL);
    CHECK_EQ(il_q_take(&t.h, me(), big + 4096, 4096, FOREVER, &m), IL_OK);
    CHECK_EQ(m.len, 0);
    check_ok(&t.h);
    free(big);
    tq_free(&t);
}

/* reserve / write in place / commit or abort; nack back to its place */
static void test_reserve_commit_nack(void)
{
    tq t = tq_new(16, 1 << 14, 0, 0, 0);
    il_q_msg a, b, c;
    CHECK_EQ(il_q_reserve(&t.h, me(), 100, 0, 7, FOREVER, &a), IL_OK);
    CHECK_EQ(il_q_reserve(&t.h, me(), 100, 0, 8, FOREVER, &b), IL_OK);
    uint8_t *pa = il_q_payload(&t.h, &a), *pb = il_q_payload(&t.h, &b);
    CHECK(pa != NULL && pb != NULL);
    make_msg(pa, 0, 1, 0, 100);
    make_msg(pb, 0, 2, 0, 100);
    phdr p;
    CHECK_EQ(get_msg(&t.h, &p), IL_EMPTY); /* WRITING is not visible */
    CHECK_EQ(il_q_commit(&t.h, me(), &b, FOREVER), IL_OK); /* commit order = FIFO order */
    CHECK_EQ(il_q_commit(&t.h, me(), &b, FOREVER), IL_INVALID);
    CHECK_EQ(il_q_abort(&t.h, me(), &b, FOREVER), IL_INVALID);
    CHECK_EQ(il_q_commit(&t.h, me() ^ 1, &a, FOREVER), IL_INVALID); /* not its owner */
    CHECK_EQ(il_q_abort(&t.h, me(), &a, FOREVER), IL_OK);
    CHECK_EQ(il_q_commit(&t.h, me(), &a, FOREVER), IL_INVALID);
    CHECK_EQ(il_q_reserve(&t.h, me(), 50, 0, 9, FOREVER, &c), IL_OK);
    make_msg(il_q_payload(&t.h, &c), 0, 3, 0, 50);
    CHECK_EQ(il_q_commit(&t.h, me(), &c, FOREVER), IL_OK);
    /* take b (zero copy), nack: it must come back before c */
    il_q_msg m;
    CHECK_EQ(il_q_take(&t.h, me(), NULL, 0, FOREVER, &m), IL_OK);
    CHECK(!m.copied && m.tag == 8 && m.deliveries == 1);
    CHECK_EQ(check_msg(il_q_payload(&t.h, &m), m.len).counter, 2);
    CHECK_EQ(il_q_nack(&t.h, me() ^ 1, &m, FOREVER), IL_INVALID);
    CHECK_EQ(il_q_nack(&t.h, me(), &m, FOREVER), IL_OK);
    CHECK_EQ(il_q_nack(&t.h, me(), &m, FOREVER), IL_INVALID);
    check_ok(&t.h);
    CHECK_EQ(il_q_take(&t.h, me(), NULL, 0, FOREVER, &m), IL_OK);
    CHECK(m.tag == 8 && m.deliveries == 2);
    CHECK_EQ(il_q_release(&t.h, me(), &m, FOREVER), IL_OK);
    CHECK_EQ(get_msg(&t.h, &p), IL_OK);
    CHECK_EQ(p.counter, 3);
    CHECK_EQ(get_msg(&t.h, &p), IL_EMPTY);
    /* invalid ident */
    CHECK_EQ(il_q_reserve(&t.h, 0, 10, 0, 0, FOREVER, &a), IL_INVALID);
    CHECK_EQ(il_q_take(&t.h, UINT64_MAX, NULL, 0, FOREVER, &a), IL_INVALID);
    check_ok(&t.h);
    tq_free(&t);
}

static void test_task_done(void)
{
    tq t = tq_new(16, 1 << 12, 0, 0, 0);
    for (uint32_t i = 0; i < 3; i++)
        CHECK_EQ(put_msg(&t.h, 0, i, 0, 16), IL_OK);
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.unfinished, 3);
    CHECK_EQ(il_q_task_done(&t.h, me(), 2, FOREVER), IL_OK);
    CHECK_EQ(il_q_task_done(&t.h, me(), 2, FOREVER), IL_INVALID); /* more than put */
    CHECK_EQ(il_q_task_done(&t.h, me(), 1, FOREVER), IL_OK);
    CHECK_EQ(il_q_task_done(&t.h, me(), 1, FOREVER), IL_INVALID);
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.unfinished, 0);
    tq_free(&t);
}

static void test_many(void)
{
    tq t = tq_new(64, 1 << 16, 0, 0, 0);
    uint8_t bufs[40][256];
    il_q_item items[40];
    for (uint32_t i = 0; i < 40; i++) {
        uint32_t len = make_msg(bufs[i], 2, i, (int32_t)(i % 3), 16 + i * 5);
        items[i] = (il_q_item){bufs[i], len, (int32_t)(i % 3), i};
    }
    uint32_t done = 0;
    CHECK_EQ(il_q_put_many(&t.h, me(), items, 40, FOREVER, &done), IL_OK);
    CHECK_EQ(done, 40);
    il_q_msg ms[64];
    uint32_t got = 0;
    CHECK_EQ(il_q_take_many(&t.h, me(), ms, 25, FOREVER, &got), IL_OK);
    CHECK_EQ(got, 25);
    uint32_t got2 = 0;
    CHECK_EQ(il_q_take_many(&t.h, me(), ms + 25, 64 - 25, FOREVER, &got2), IL_OK);
    CHECK_EQ(got2, 15);
    for (uint32_t k = 0; k < 40; k++) {
        phdr p = check_msg(il_q_payload(&t.h, &ms[k]), ms[k].len);
        CHECK_EQ(ms[k].tag, p.counter);
        if (k > 0) {
            CHECK(ms[k - 1].prio >= ms[k].prio);
            if (ms[k - 1].prio == ms[k].prio)
                CHECK(ms[k - 1].seq < ms[k].seq);
        }
    }
    CHECK_EQ(il_q_take_many(&t.h, me(), ms + 40, 4, FOREVER, &got), IL_EMPTY);
    CHECK_EQ(got, 0);
    CHECK_EQ(il_q_release_many(&t.h, me(), ms, 40, FOREVER), IL_OK);
    check_ok(&t.h);
    /* put_many stops at the first item that does not fit */
    tq u = tq_new(8, 1 << 16, 5, 0, 0);
    CHECK_EQ(il_q_put_many(&u.h, me(), items, 40, FOREVER, &done), IL_FULL);
    CHECK_EQ(done, 5);
    /* with a large item in the middle (copied outside the mutex) */
    uint8_t *big = malloc(20000);
    CHECK(big != NULL);
    uint32_t blen = make_msg(big, 3, 99, 0, 20000);
    tq v = tq_new(8, 1 << 16, 0, 0, 0);
    il_q_item mix[3] = {items[0], {big, blen, 0, 0}, items[3]};
    CHECK_EQ(il_q_put_many(&v.h, me(), mix, 3, FOREVER, &done), IL_OK);
    CHECK_EQ(done, 3);
    il_q_item huge = {big, 1 << 17, 0, 0};
    CHECK_EQ(il_q_put_many(&v.h, me(), &huge, 1, FOREVER, &done), IL_TOOBIG);
    CHECK_EQ(il_q_take_many(&v.h, me(), ms, 8, FOREVER, &got), IL_OK);
    CHECK_EQ(got, 3);
    CHECK_EQ(check_msg(il_q_payload(&v.h, &ms[1]), ms[1].len).counter, 99);
    free(big);
    tq_free(&t);
    tq_free(&u);
    tq_free(&v);
}

/* ---- the arena under random sizes and random release order ---------------- */

static void test_arena_random(void)
{
    const uint64_t arena = 1 << 16;
    tq t = tq_new(256, arena, 0, 0, 0);
    il_q_msg held[256];
    uint32_t nheld = 0, counter = 0;
    uint64_t bytes_through = 0;
    int fulls = 0;
    for (int it = 0; it < 20000; it++) {
        int op = (int)t_rand_below(3);
        if (op < 2) {
            uint32_t len = 16 + (uint32_t)(t_rand_below(8) == 0 ? t_rand_below(20000)
                                                                : t_rand_below(700));
            int32_t prio = (int32_t)t_rand_below(4);
            int rc = put_msg(&t.h, 5, counter, prio, len);
            if (rc == IL_FULL)
                fulls++;
            else {
                CHECK_EQ(rc, IL_OK);
                counter++;
                bytes_through += len;
            }
        }
        if (op == 1 || op == 2) {
            if (nheld < 200 && t_rand_below(2) == 0) {
                il_q_msg m;
                int rc = il_q_take(&t.h, me(), NULL, 0, FOREVER, &m);
                if (rc == IL_OK) {
                    check_msg(il_q_payload(&t.h, &m), m.len);
                    held[nheld++] = m;
                } else
                    CHECK_EQ(rc, IL_EMPTY);
            }
            if (nheld > 0 && t_rand_below(2) == 0) { /* release a random held one */
                uint32_t k = (uint32_t)t_rand_below(nheld);
                check_msg(il_q_payload(&t.h, &held[k]), held[k].len);
                CHECK_EQ(il_q_release(&t.h, me(), &held[k], FOREVER), IL_OK);
                held[k] = held[--nheld];
            }
        }
        if (it % 1000 == 0)
            check_ok(&t.h);
    }
    check_ok(&t.h);
    CHECK(bytes_through > 10 * arena); /* wrapped many times */
    CHECK(fulls > 0);
    /* a record that stays (the oldest, low priority, unreleased) does not stop
     * the arena from cycling around it */
    CHECK_EQ(il_q_release_many(&t.h, me(), held, nheld, FOREVER), IL_OK);
    phdr p;
    while (get_msg(&t.h, &p) == IL_OK) {
    }
    CHECK_EQ(put_msg(&t.h, 6, 0, -5, 1000), IL_OK);
    il_q_msg stuck;
    CHECK_EQ(il_q_take(&t.h, me(), NULL, 0, FOREVER, &stuck), IL_OK);
    uint64_t through = 0;
    for (uint32_t i = 0; through < 8 * arena; i++) {
        CHECK_EQ(put_msg(&t.h, 6, i + 1, 0, 3000), IL_OK);
        CHECK_EQ(put_msg(&t.h, 6, i + 1, 0, 5000), IL_OK);
        CHECK_EQ(get_msg(&t.h, &p), IL_OK);
        CHECK_EQ(get_msg(&t.h, &p), IL_OK);
        through += 8000;
    }
    CHECK_EQ(check_msg(il_q_payload(&t.h, &stuck), stuck.len).counter, 0);
    CHECK_EQ(il_q_release(&t.h, me(), &stuck, FOREVER), IL_OK);
    check_ok(&t.h);
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.arena_used, 0);
    tq_free(&t);
}

/* ---- corrupted shared memory ---------------------------------------------- */

static void fill_some(tq *t, uint32_t k)
{
    for (uint32_t i = 0; i < k; i++)
        CHECK_EQ(put_msg(&t->h, 0, i, (int32_t)(i % 3), 32 + i), IL_OK);
}

static void test_corrupt_derived(void)
{
    /* A broken heap: operations say CORRUPT (and keep saying it) until a
     * repair rebuilds the derived data from the entry table. */
    tq t = tq_new(32, 1 << 14, 0, 0, 0);
    fill_some(&t, 10);
    t.h.heap[0].entry = 1000;
    phdr p;
    CHECK_EQ(get_msg(&t.h, &p), IL_CORRUPT);
    CHECK_EQ(put_msg(&t.h, 0, 50, 0, 16), IL_CORRUPT);
    CHECK_EQ(il_q_repair(&t.h, me(), FOREVER), IL_OK);
    check_ok(&t.h);
    uint32_t n = 0;
    while (get_msg(&t.h, &p) == IL_OK)
        n++;
    CHECK_EQ(n, 10); /* nothing lost */
    /* heap key that does not match the entry */
    fill_some(&t, 5);
    t.h.heap[0].seq += 1000;
    CHECK_EQ(get_msg(&t.h, &p), IL_CORRUPT);
    CHECK_EQ(il_q_repair(&t.h, me(), FOREVER), IL_OK);
    /* free stack naming a live entry */
    t.h.stk[atomic_load(&t.h.q->free_len) - 1] = t.h.heap[0].entry;
    CHECK_EQ(put_msg(&t.h, 0, 51, 0, 16), IL_CORRUPT);
    CHECK_EQ(il_q_repair(&t.h, me(), FOREVER), IL_OK);
    /* counters out of range */
    atomic_store(&t.h.q->heap_len, 1u << 30);
    CHECK_EQ(get_msg(&t.h, &p), IL_CORRUPT);
    CHECK_EQ(il_q_repair(&t.h, me(), FOREVER), IL_OK);
    atomic_store(&t.h.q->n_live, 1u << 30);
    CHECK_EQ(put_msg(&t.h, 0, 52, 0, 16), IL_CORRUPT);
    CHECK_EQ(il_q_repair(&t.h, me(), FOREVER), IL_OK);
    atomic_store(&t.h.q->cursor, 12345);
    CHECK_EQ(put_msg(&t.h, 0, 53, 0, 16), IL_CORRUPT);
    CHECK_EQ(il_q_repair(&t.h, me(), FOREVER), IL_OK);
    /* extent ring links */
    uint32_t c = atomic_load(&t.h.q->cursor);
    t.h.ent[c].next = 999;
    CHECK_EQ(put_msg(&t.h, 0, 54, 0, 16), IL_CORRUPT);
    CHECK_EQ(il_q_repair(&t.h, me(), FOREVER), IL_OK);
    n = 0;
    while (get_msg(&t.h, &p) == IL_OK)
        n++;
    CHECK_EQ(n, 5);
    check_ok(&t.h);
    tq_free(&t);
}

static void test_corrupt_entries(void)
{
    /* The entry table itself is wrong: repair cannot help, CORRUPT stays. */
    struct {
        const char *what;
        int kind;
    } cases[] = {{"state", 0}, {"extent", 1}, {"overlap", 2}, {"len", 3}, {"ready owner", 4}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tq t = tq_new(32, 1 << 14, 0, IL_Q_DURABLE, 0);
        fill_some(&t, 6);
        il_q_entry *e0 = &t.h.ent[0], *e1 = &t.h.ent[1];
        switch (cases[k].kind) {
        case 0: atomic_store(&e0->sw, (uint64_t)7 << 60); break;
        case 1: e0->off = (1 << 14) - 32; break;
        case 2: e1->off = e0->off; break;
        case 3: e0->len = UINT64_MAX - 10; break;
        default: atomic_store(&e0->sw, ((uint64_t)IL_Q_READY << 60) | 12345); break;
        }
        CHECK_EQ(il_q_check(&t.h, me(), FOREVER), IL_CORRUPT);
        CHECK_EQ(il_q_repair(&t.h, me(), FOREVER), IL_CORRUPT);
        phdr p;
        CHECK_EQ(get_msg(&t.h, &p), IL_CORRUPT);
        CHECK_EQ(put_msg(&t.h, 0, 1, 0, 16), IL_CORRUPT);
        uint64_t boot[2] = {1, 2};
        CHECK_EQ(il_q_reboot_recover(&t.h, boot, NULL), IL_CORRUPT);
        tq_free(&t);
    }
}

/* Random garbage in the state and derived areas: no crash, no sanitizer
 * report, only documented statuses. */
static void test_corrupt_fuzz(void)
{
    for (int round = 0; round < 300; round++) {
        tq t = tq_new(16, 4096, 0, (uint32_t)(round & 1), 0);
        fill_some(&t, (uint32_t)t_rand_below(12));
        il_q_msg held;
        int holding = il_q_take(&t.h, me(), NULL, 0, FOREVER, &held) == IL_OK;
        il_q *q = t.h.q;
        /* scribble some bytes of: counters, entries, heap, free stack */
        uint8_t *areas[4] = {(uint8_t *)&q->n_ready, (uint8_t *)t.h.ent, (uint8_t *)t.h.heap,
                             (uint8_t *)t.h.stk};
        uint64_t sizes[4] = {offsetof(il_q, j_op) - offsetof(il_q, n_ready),
                             16 * sizeof(il_q_entry), 16 * sizeof(il_q_node), 16 * 4};
        int nscr = 1 + (int)t_rand_below(4);
        for (int s = 0; s < nscr; s++) {
            int a = (int)t_rand_below(4);
            uint64_t off = t_rand_below(sizes[a]);
            areas[a][off] = (uint8_t)t_rand();
        }
        for (int op = 0; op < 30; op++) {
            phdr p;
            uint8_t buf[4096];
            il_q_msg m;
            int rc;
            switch (t_rand_below(6)) {
            case 0:
                rc = put_msg(&t.h, 0, 1, 0, 16 + (uint32_t)t_rand_below(500));
                CHECK(rc == IL_OK || rc == IL_FULL || rc == IL_CORRUPT);
                break;
            case 1:
                rc = il_q_take(&t.h, me(), buf, sizeof buf, FOREVER, &m);
                CHECK(rc == IL_OK || rc == IL_EMPTY || rc == IL_CORRUPT);
                (void)p;
                break;
            case 2:
                if (holding) {
                    rc = il_q_release(&t.h, me(), &held, FOREVER);
                    CHECK(rc == IL_OK || rc == IL_INVALID || rc == IL_CORRUPT);
                    holding = 0;
                }
                break;
            case 3:
                rc = il_q_check(&t.h, me(), FOREVER);
                CHECK(rc == IL_OK || rc == IL_CORRUPT);
                break;
            case 4:
                rc = il_q_repair(&t.h, me(), FOREVER);
                CHECK(rc == IL_OK || rc == IL_CORRUPT);
                if (rc == IL_OK)
                    CHECK_EQ(il_q_check(&t.h, me(), FOREVER), IL_OK);
                break;
            default:
                rc = il_q_recover_dead(&t.h, me(), FOREVER, NULL);
                CHECK(rc == IL_OK || rc == IL_CORRUPT);
                break;
            }
        }
        tq_free(&t);
    }
}

/* ---- waits --------------------------------------------------------------- */

static void test_bounded_waits(void)
{
    tq t = tq_new(4, 4096, 1, 0, 0);
    phdr p;
    int64_t t0 = il_now_ns();
    CHECK_EQ(get_blocking(&t.h, &p, 30 * MS), IL_TIMEOUT);
    int64_t el = il_now_ns() - t0;
    CHECK(el >= 30 * MS && el < 2000 * MS);
    CHECK_EQ(put_msg(&t.h, 0, 0, 0, 16), IL_OK);
    t0 = il_now_ns();
    CHECK_EQ(put_blocking(&t.h, 0, 1, 0, 16, 30 * MS), IL_TIMEOUT);
    el = il_now_ns() - t0;
    CHECK(el >= 30 * MS && el < 2000 * MS);
    /* every registration was removed */
    for (int k = 0; k < 3; k++) {
        CHECK_EQ(atomic_load(&t.h.q->wq[k].mask), 0);
        CHECK_EQ(atomic_load(&t.h.q->wq[k].overflow), 0);
    }
    /* the mutex held by a live holder: a budget bounds the wait */
    CHECK_EQ(il_q_lock(&t.h, me(), 0), IL_OK);
    pid_t kid = fork_child();
    if (kid == 0) {
        il_q_msg m;
        int64_t s = il_now_ns();
        int rc = il_q_reserve(&t.h, me(), 16, 0, 0, 25 * MS, &m);
        int64_t e = il_now_ns() - s;
        int rc2 = il_q_take(&t.h, me(), NULL, 0, 0, &m); /* spin only */
        _exit(rc == IL_BUSY && rc2 == IL_BUSY && e >= 25 * MS && e < 2000 * MS ? 0 : 1);
    }
    CHECK_EQ(wait_exit(kid), 0);
    il_q_unlock(&t.h);
    check_ok(&t.h);
    tq_free(&t);
}

typedef struct waker_arg {
    il_qh *h;
    int delay_ms;
} waker_arg;

static void *waker(void *a)
{
    waker_arg *w = a;
    t_sleep_ms(w->delay_ms);
    CHECK_EQ(put_msg(w->h, 9, 9, 0, 16), IL_OK);
    return NULL;
}

static void test_wake_get(void)
{
    tq t = tq_new(8, 4096, 0, 0, 0);
    pthread_t th;
    waker_arg a = {&t.h, 50};
    CHECK_EQ(pthread_create(&th, NULL, waker, &a), 0);
    phdr p;
    il_q_waiter w;
    il_q_wait_begin(&w, &t.h, me(), IL_Q_WAIT_GET);
    int slept_ok = 0;
    for (;;) {
        if (get_msg(&t.h, &p) == IL_OK)
            break;
        int rc = il_q_wait_sleep(&w, 5000 * MS); /* woken, not timed out */
        CHECK(rc == IL_OK);
        slept_ok++;
    }
    il_q_wait_end(&w, 0);
    CHECK(slept_ok >= 1);
    CHECK_EQ(p.counter, 9);
    pthread_join(th, NULL);
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    CHECK(st.wakes >= 1);
    /* no sleeper, no wake syscall */
    uint64_t before = st.wakes;
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(put_msg(&t.h, 0, 0, 0, 16), IL_OK);
        CHECK_EQ(get_msg(&t.h, &p), IL_OK);
    }
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before);
    tq_free(&t);
}

static void test_join_wait(void)
{
    tq t = tq_new(8, 4096, 0, 0, 1);
    CHECK_EQ(put_msg(&t.h, 0, 0, 0, 16), IL_OK);
    CHECK_EQ(put_msg(&t.h, 0, 1, 0, 16), IL_OK);
    pid_t kid = fork_child();
    if (kid == 0) {
        phdr p;
        t_sleep_ms(30);
        for (int i = 0; i < 2; i++) {
            if (get_msg(&t.h, &p) != IL_OK)
                _exit(2);
            if (il_q_task_done(&t.h, me(), 1, FOREVER) != IL_OK)
                _exit(3);
        }
        _exit(0);
    }
    il_q_waiter w;
    il_q_wait_begin(&w, &t.h, me(), IL_Q_WAIT_JOIN);
    int64_t deadline = il_now_ns() + 5000 * MS;
    while (atomic_load(&t.h.q->unfinished) != 0) {
        CHECK(il_now_ns() < deadline);
        il_q_wait_sleep(&w, 20 * MS);
    }
    il_q_wait_end(&w, 0);
    CHECK_EQ(wait_exit(kid), 0);
    tq_free(&t);
}

/* A spinning consumer suppresses producers' wake syscalls; its flag goes with
 * wait_end, and a dead spinner's flag is cleared by recovery. */
static void test_spinning(void)
{
    tq t = tq_new(16, 1 << 14, 0, 0, 1);
    il_q_waiter w, sleeper;
    il_q_wait_begin(&sleeper, &t.h, me(), IL_Q_WAIT_GET); /* someone registered */
    il_q_wait_begin(&w, &t.h, me(), IL_Q_WAIT_GET);
    il_q_wait_spinning(&w, 1);
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    uint64_t before = st.wakes;
    for (uint32_t i = 0; i < 5; i++)
        CHECK_EQ(put_msg(&t.h, 0, i, 0, 16), IL_OK);
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before); /* no syscall while a consumer spins */
    il_q_wait_spinning(&w, 0);
    /* taking one with others READY and nobody spinning wakes a sleeper */
    phdr p;
    CHECK_EQ(get_msg(&t.h, &p), IL_OK);
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before + 1);
    /* the sleeper wakes and re-arms (its snapshot is stale: no sleep) */
    CHECK_EQ(il_q_wait_sleep(&sleeper, 1000 * MS), IL_OK);
    CHECK_EQ(put_msg(&t.h, 0, 9, 0, 16), IL_OK); /* a commit wakes too */
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before + 2);
    il_q_wait_spinning(&w, 1);
    il_q_wait_end(&w, 1); /* ends the spin flag with the registration */
    CHECK_EQ(atomic_load(&t.h.q->wq[IL_Q_WAIT_GET].spin_mask), 0);
    il_q_wait_end(&sleeper, 0);
    /* a consumer killed while spinning */
    pid_t kid = fork_child();
    if (kid == 0) {
        il_q_waiter d;
        il_q_wait_begin(&d, &t.h, me(), IL_Q_WAIT_GET);
        il_q_wait_spinning(&d, 1);
        kill(getpid(), SIGKILL);
        _exit(2);
    }
    CHECK_EQ(wait_exit(kid), 128 + SIGKILL);
    CHECK(atomic_load(&t.h.q->wq[IL_Q_WAIT_GET].spin_mask) != 0);
    il_q_recovered r;
    CHECK_EQ(il_q_recover_dead(&t.h, me(), FOREVER, &r), IL_OK);
    CHECK_EQ(r.waiters, 1);
    CHECK_EQ(atomic_load(&t.h.q->wq[IL_Q_WAIT_GET].spin_mask), 0);
    CHECK_EQ(atomic_load(&t.h.q->wq[IL_Q_WAIT_GET].mask), 0);
    tq_free(&t);
}

/* A single wake on its way suppresses further wake syscalls until a waiter
 * re-arms (begin, spinning off, after a sleep, or leaving unsatisfied). */
static void test_wake_pending(void)
{
    tq t = tq_new(64, 1 << 16, 0, 0, 1);
    il_q_waitq *wq = &t.h.q->wq[IL_Q_WAIT_GET];
    il_q_waiter a, b;
    il_q_wait_begin(&a, &t.h, me(), IL_Q_WAIT_GET);
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    uint64_t before = st.wakes;
    for (uint32_t i = 0; i < 10; i++)
        CHECK_EQ(put_msg(&t.h, 0, i, 0, 16), IL_OK);
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before + 1); /* one syscall for ten commits */
    CHECK_EQ(atomic_load(&wq->pending), 1);
    /* the woken waiter re-arms after its sleep: the next commit wakes again */
    CHECK_EQ(il_q_wait_sleep(&a, 1000 * MS), IL_OK);
    CHECK_EQ(atomic_load(&wq->pending), 0);
    CHECK_EQ(put_msg(&t.h, 0, 10, 0, 16), IL_OK);
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before + 2);
    /* a take that leaves messages READY passes no second wake while one is
     * pending */
    phdr p;
    CHECK_EQ(get_msg(&t.h, &p), IL_OK);
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before + 2);
    /* a waiter leaving unsatisfied re-arms and passes the wake on to another
     * waiter (messages are READY) */
    il_q_wait_begin(&b, &t.h, me(), IL_Q_WAIT_GET); /* re-arms: pending cleared */
    CHECK_EQ(atomic_load(&wq->pending), 0);
    CHECK_EQ(put_msg(&t.h, 0, 11, 0, 16), IL_OK);
    CHECK_EQ(atomic_load(&wq->pending), 1);
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before + 3);
    il_q_wait_end(&a, 0);
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.wakes, before + 4);
    il_q_wait_end(&b, 1);
    /* spinning off re-arms too */
    il_q_wait_begin(&a, &t.h, me(), IL_Q_WAIT_GET);
    il_q_wait_spinning(&a, 1);
    atomic_store(&wq->pending, 1);
    il_q_wait_spinning(&a, 0);
    CHECK_EQ(atomic_load(&wq->pending), 0);
    il_q_wait_end(&a, 1);
    /* a woken waiter that dies before re-arming: recovery clears the flag */
    pid_t kid = fork_child();
    if (kid == 0) {
        il_q_waiter d;
        il_q_wait_begin(&d, &t.h, me(), IL_Q_WAIT_GET);
        atomic_store(&wq->pending, 1);
        kill(getpid(), SIGKILL);
        _exit(2);
    }
    CHECK_EQ(wait_exit(kid), 128 + SIGKILL);
    CHECK_EQ(atomic_load(&wq->pending), 1);
    il_q_recovered r;
    CHECK_EQ(il_q_recover_dead(&t.h, me(), FOREVER, &r), IL_OK);
    CHECK_EQ(r.waiters, 1);
    CHECK_EQ(atomic_load(&wq->pending), 0);
    check_ok(&t.h);
    tq_free(&t);
}

/* No wake is ever lost: consumers sleep with a 3 s slice and must always be
 * woken (IL_OK), never time out, while a producer puts in bursts with pauses
 * (so that they sleep often) and skips most wake syscalls. */
typedef struct pend_arg {
    il_qh *h;
    uint32_t total;
    _Atomic uint32_t got;
    _Atomic uint32_t timeouts;
} pend_arg;

static void *pend_consumer(void *v)
{
    pend_arg *a = v;
    phdr p;
    for (;;) {
        int rc = get_msg(a->h, &p);
        if (rc == IL_EMPTY) {
            il_q_waiter w;
            il_q_wait_begin(&w, a->h, me(), IL_Q_WAIT_GET);
            for (;;) {
                rc = get_msg(a->h, &p);
                if (rc != IL_EMPTY)
                    break;
                if (il_q_wait_sleep(&w, 3000 * MS) == IL_TIMEOUT) {
                    atomic_fetch_add(&a->timeouts, 1);
                    rc = get_msg(a->h, &p);
                    break;
                }
            }
            il_q_wait_end(&w, rc == IL_OK);
        }
        if (rc != IL_OK)
            return NULL;
        if (p.producer == 99) /* stop */
            return NULL;
        atomic_fetch_add(&a->got, 1);
    }
}

static void test_wake_pending_threads(void)
{
    tq t = tq_new(256, 1 << 16, 0, 0, 0);
    pend_arg a = {&t.h, 20000, 0, 0};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, pend_consumer, &a), 0);
    for (uint32_t i = 0; i < a.total;) {
        uint32_t burst = 1 + (uint32_t)t_rand_below(8);
        for (uint32_t k = 0; k < burst && i < a.total; k++, i++) {
            int rc;
            while ((rc = put_msg(&t.h, 0, i, 0, 16)) == IL_FULL)
                sched_yield();
            CHECK_EQ(rc, IL_OK);
        }
        if (t_rand_below(4) == 0) {
            struct timespec ts = {0, (long)t_rand_below(200) * 1000L};
            nanosleep(&ts, NULL);
        }
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ(put_msg(&t.h, 99, 0, 0, 16), IL_OK);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&a.got), a.total);
    CHECK_EQ(atomic_load(&a.timeouts), 0);
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    printf("    wake_pending_threads: %u messages, %" PRIu64 " wake syscalls\n", a.total,
           st.wakes);
    check_ok(&t.h);
    tq_free(&t);
}

/* ---- many threads --------------------------------------------------------- */

#define TP 4
#define TC 4
#define TN 30000

typedef struct tstate {
    il_qh *h;
    int id;
    _Atomic uint32_t *seen; /* [TP * TN] */
    _Atomic int *producers_left;
    int use_many;
} tstate;

static void *t_producer(void *arg)
{
    tstate *s = arg;
    uint8_t buf[600];
    il_q_item items[8];
    uint8_t bufs[8][300];
    for (uint32_t i = 0; i < TN;) {
        if (s->use_many && i + 8 <= TN) {
            for (int k = 0; k < 8; k++) {
                int32_t pr = (int32_t)((i + (uint32_t)k) % 3);
                uint32_t len = make_msg(bufs[k], (uint32_t)s->id, i + (uint32_t)k, pr,
                                        16 + (uint32_t)t_rand_below(280));
                items[k] = (il_q_item){bufs[k], len, pr, 0};
            }
            uint32_t off = 0;
            while (off < 8) {
                uint32_t done = 0;
                int rc = il_q_put_many(s->h, me(), items + off, 8 - off, FOREVER, &done);
                off += done;
                if (rc == IL_FULL) {
                    il_q_waiter w;
                    il_q_wait_begin(&w, s->h, me(), IL_Q_WAIT_PUT);
                    il_q_wait_sleep(&w, 2 * MS);
                    il_q_wait_end(&w, 0);
                } else
                    CHECK_EQ(rc, IL_OK);
            }
            i += 8;
        } else {
            int32_t pr = (int32_t)(i % 3);
            (void)buf;
            CHECK_EQ(put_blocking(s->h, (uint32_t)s->id, i, pr, 16 + (uint32_t)t_rand_below(580),
                                  60000 * MS),
                     IL_OK);
            i++;
        }
    }
    atomic_fetch_sub(s->producers_left, 1);
    return NULL;
}

static void *t_consumer(void *arg)
{
    tstate *s = arg;
    int64_t last[TP][3];
    for (int p = 0; p < TP; p++)
        for (int k = 0; k < 3; k++)
            last[p][k] = -1;
    for (;;) {
        il_q_msg ms[16];
        uint32_t got = 0;
        int rc;
        if (s->use_many) {
            rc = il_q_take_many(s->h, me(), ms, 16, FOREVER, &got);
        } else {
            phdr p;
            rc = get_blocking(s->h, &p, 20 * MS);
            if (rc == IL_OK) {
                CHECK(p.producer < TP && p.counter < TN);
                CHECK(p.counter > last[p.producer][p.prio]); /* per-producer order */
                last[p.producer][p.prio] = p.counter;
                CHECK_EQ(atomic_fetch_add(&s->seen[p.producer * TN + p.counter], 1), 0);
                continue;
            }
        }
        if (rc == IL_OK) {
            for (uint32_t k = 0; k < got; k++) {
                phdr p = check_msg(il_q_payload(s->h, &ms[k]), ms[k].len);
                CHECK(p.producer < TP && p.counter < TN);
                CHECK(p.counter > last[p.producer][p.prio]);
                last[p.producer][p.prio] = p.counter;
                CHECK_EQ(atomic_fetch_add(&s->seen[p.producer * TN + p.counter], 1), 0);
            }
            CHECK_EQ(il_q_release_many(s->h, me(), ms, got, FOREVER), IL_OK);
            continue;
        }
        CHECK(rc == IL_EMPTY || rc == IL_TIMEOUT);
        if (atomic_load(s->producers_left) == 0 && il_q_qsize(s->h) == 0 &&
            atomic_load(&s->h->q->n_writing) == 0)
            break;
        if (rc == IL_EMPTY) {
            il_q_waiter w;
            il_q_wait_begin(&w, s->h, me(), IL_Q_WAIT_GET);
            if (il_q_qsize(s->h) == 0)
                il_q_wait_sleep(&w, 2 * MS);
            il_q_wait_end(&w, 0);
        }
    }
    return NULL;
}

static void run_threads(int use_many)
{
    tq t = tq_new(256, 1 << 16, 200, 0, 0);
    _Atomic uint32_t *seen = calloc(TP * TN, sizeof *seen);
    CHECK(seen != NULL);
    _Atomic int left = TP;
    tstate st[TP + TC];
    pthread_t th[TP + TC];
    for (int i = 0; i < TP + TC; i++) {
        st[i] = (tstate){&t.h, i < TP ? i : i - TP, seen, &left, use_many};
        CHECK_EQ(pthread_create(&th[i], NULL, i < TP ? t_producer : t_consumer, &st[i]), 0);
    }
    for (int i = 0; i < TP + TC; i++)
        pthread_join(th[i], NULL);
    for (uint32_t i = 0; i < TP * TN; i++)
        CHECK_EQ(atomic_load(&seen[i]), 1);
    check_ok(&t.h);
    il_q_stats s;
    il_q_read_stats(&t.h, &s);
    CHECK_EQ(s.puts, TP * TN);
    CHECK_EQ(s.ready + s.taken + s.writing, 0);
    printf("    threads(%s): lock contended %" PRIu64 ", lock wakes %" PRIu64
           ", wait wakes %" PRIu64 "\n",
           use_many ? "many" : "one", s.lock_contended, s.lock_wakes, s.wakes);
    free((void *)seen);
    tq_free(&t);
}

static void test_threads_single(void) { run_threads(0); }
static void test_threads_many(void) { run_threads(1); }

/* ---- forked processes on a shared mapping ---------------------------------- */

#define PP 3
#define PC 3
#define PN 20000

typedef struct shared_log {
    _Atomic uint32_t seen[PP * PN];
    _Atomic int producers_left;
} shared_log;

static void test_processes(void)
{
    tq t = tq_new(128, 1 << 15, 100, 0, 1);
    shared_log *log = mmap(NULL, sizeof(shared_log), PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(log != MAP_FAILED);
    atomic_store(&log->producers_left, PP);
    pid_t kids[PP + PC];
    for (int i = 0; i < PP + PC; i++) {
        kids[i] = fork_child();
        if (kids[i] != 0)
            continue;
        if (i < PP) {
            for (uint32_t c = 0; c < PN; c++)
                CHECK_EQ(put_blocking(&t.h, (uint32_t)i, c, (int32_t)(c % 2),
                                      16 + (uint32_t)t_rand_below(400), 60000 * MS),
                         IL_OK);
            atomic_fetch_sub(&log->producers_left, 1);
            _exit(0);
        }
        int64_t last[PP][2];
        for (int p = 0; p < PP; p++)
            last[p][0] = last[p][1] = -1;
        for (;;) {
            phdr p;
            int rc = get_blocking(&t.h, &p, 10 * MS);
            if (rc == IL_OK) {
                CHECK(p.producer < PP && p.counter < PN);
                CHECK(p.counter > last[p.producer][p.prio]);
                last[p.producer][p.prio] = p.counter;
                CHECK_EQ(atomic_fetch_add(&log->seen[p.producer * PN + p.counter], 1), 0);
                continue;
            }
            CHECK_EQ(rc, IL_TIMEOUT);
            if (atomic_load(&log->producers_left) == 0 && il_q_qsize(&t.h) == 0)
                break;
        }
        _exit(0);
    }
    for (int i = 0; i < PP + PC; i++)
        CHECK_EQ(wait_exit(kids[i]), 0);
    for (uint32_t i = 0; i < PP * PN; i++)
        CHECK_EQ(atomic_load(&log->seen[i]), 1);
    check_ok(&t.h);
    munmap(log, sizeof *log);
    tq_free(&t);
}

/* ---- owner death ------------------------------------------------------------ */

/* A child dies holding the mutex, with a reservation and a held message. */
static void test_dead_holder(void)
{
    for (int durable = 0; durable < 2; durable++) {
        tq t = tq_new(16, 1 << 14, 0, durable ? IL_Q_DURABLE : 0, 1);
        fill_some(&t, 4);
        pid_t kid = fork_child();
        if (kid == 0) {
            il_q_msg a, b;
            if (il_q_reserve(&t.h, me(), 100, 0, 0, FOREVER, &a) != IL_OK ||
                il_q_take(&t.h, me(), NULL, 0, FOREVER, &b) != IL_OK ||
                il_q_lock(&t.h, me(), FOREVER) != IL_OK)
                _exit(1);
            kill(getpid(), SIGKILL);
            _exit(2);
        }
        CHECK_EQ(wait_exit(kid), 128 + SIGKILL);
        /* the next operation takes the mutex over and repairs */
        CHECK_EQ(il_q_lock(&t.h, me(), FOREVER), IL_Q_OWNERDIED);
        il_q_unlock(&t.h);
        check_ok(&t.h);
        il_q_stats st;
        il_q_read_stats(&t.h, &st);
        CHECK_EQ(st.owner_died, 1);
        CHECK_EQ(st.writing, 0);
        CHECK_EQ(st.taken, 0);
        CHECK_EQ(st.abandoned, 1);
        CHECK_EQ(st.ready, durable ? 4 : 3);
        CHECK_EQ(st.redelivered, durable ? 1 : 0);
        CHECK_EQ(st.dropped, durable ? 0 : 1);
        phdr p;
        uint32_t n = 0;
        int64_t first = -1;
        while (get_msg(&t.h, &p) == IL_OK) {
            if (first < 0)
                first = p.counter;
            n++;
        }
        CHECK_EQ(n, durable ? 4 : 3);
        if (durable)
            CHECK_EQ(first, 2); /* the child took the best one (prio 2): back at its place */
        tq_free(&t);
    }
}

/* A durable consumer dies without acking: recover_dead puts it back. */
static void test_recover_dead_consumer(void)
{
    tq t = tq_new(16, 1 << 14, 0, IL_Q_DURABLE, 1);
    fill_some(&t, 3);
    pid_t kid = fork_child();
    if (kid == 0) {
        il_q_msg m;
        if (il_q_take(&t.h, me(), NULL, 0, FOREVER, &m) != IL_OK)
            _exit(1);
        il_q_waiter w; /* and die registered as a waiter */
        il_q_wait_begin(&w, &t.h, me(), IL_Q_WAIT_GET);
        kill(getpid(), SIGKILL);
        _exit(2);
    }
    CHECK_EQ(wait_exit(kid), 128 + SIGKILL);
    CHECK(atomic_load(&t.h.q->wq[IL_Q_WAIT_GET].mask) != 0);
    il_q_recovered r;
    CHECK_EQ(il_q_recover_dead(&t.h, me(), FOREVER, &r), IL_OK);
    CHECK_EQ(r.redelivered, 1);
    CHECK_EQ(r.waiters, 1);
    CHECK_EQ(atomic_load(&t.h.q->wq[IL_Q_WAIT_GET].mask), 0);
    CHECK_EQ(il_q_recover_dead(&t.h, me(), FOREVER, &r), IL_OK);
    CHECK_EQ(r.redelivered + r.waiters, 0);
    il_q_msg m;
    CHECK_EQ(il_q_take(&t.h, me(), NULL, 0, FOREVER, &m), IL_OK);
    CHECK_EQ(m.deliveries, 2);
    CHECK_EQ(check_msg(il_q_payload(&t.h, &m), m.len).counter, 2); /* prio 2: the first */
    CHECK_EQ(il_q_release(&t.h, me(), &m, FOREVER), IL_OK);
    check_ok(&t.h);
    /* rate limit: one scan per interval */
    CHECK(il_q_recover_due(&t.h, 0) == 1);
    CHECK(il_q_recover_due(&t.h, 1000 * MS) == 0);
    tq_free(&t);
}

/* The holder dies after each step of a commit: the journal keeps the
 * unfinished-task count in step with the entry state. */
static void test_commit_journal(void)
{
    for (int step = 0; step <= 6; step++) {
        tq t = tq_new(8, 4096, 0, 0, 1);
        fill_some(&t, 2);
        il_q_msg m;
        CHECK_EQ(il_q_reserve(&t.h, me(), 40, 0, 0, FOREVER, &m), IL_OK);
        make_msg(il_q_payload(&t.h, &m), 0, 77, 0, 40);
        pid_t kid = fork_child();
        if (kid == 0) {
            /* the child commits "our" reservation: take it over in the table */
            il_q *q = t.h.q;
            il_q_entry *en = &t.h.ent[m.entry];
            if (il_q_lock(&t.h, me(), FOREVER) != IL_OK)
                _exit(1);
            atomic_store(&en->sw, ((uint64_t)IL_Q_WRITING << 60) | me());
            uint64_t seq = atomic_load(&q->next_seq), unf = atomic_load(&q->unfinished);
            /* the steps of commit_locked, in order */
            if (step > 0) {
                atomic_store(&q->j_entry, m.entry);
                atomic_store(&q->j_seq, seq);
                atomic_store(&q->j_unfinished, unf);
                atomic_store(&q->j_op, 1);
            }
            if (step > 1)
                en->seq = seq;
            if (step > 2)
                atomic_store(&en->sw, (uint64_t)IL_Q_READY << 60);
            if (step > 3)
                atomic_store(&q->next_seq, seq + 1);
            if (step > 4)
                atomic_store(&q->unfinished, unf + 1);
            if (step > 5)
                atomic_store(&q->j_op, 0);
            kill(getpid(), SIGKILL);
            _exit(2);
        }
        CHECK_EQ(wait_exit(kid), 128 + SIGKILL);
        CHECK_EQ(il_q_lock(&t.h, me(), FOREVER), IL_Q_OWNERDIED);
        il_q_unlock(&t.h);
        check_ok(&t.h);
        il_q_stats st;
        il_q_read_stats(&t.h, &st);
        int committed = step > 2;
        CHECK_EQ(st.ready, 2 + committed);
        CHECK_EQ(st.unfinished, 2 + committed);
        CHECK_EQ(st.writing, 0);
        phdr p;
        uint32_t n = 0, saw77 = 0;
        while (get_msg(&t.h, &p) == IL_OK) {
            n++;
            saw77 += p.counter == 77;
        }
        CHECK_EQ(n, 2 + committed);
        CHECK_EQ(saw77, committed);
        tq_free(&t);
    }
}

/* ---- kill -9 chaos -------------------------------------------------------- */

#define CH_PRODUCERS 3
#define CH_CONSUMERS 3
#define CH_PER_PRODUCER 30000

typedef struct chaos_log {
    /* per message: committed (the producer saw put return OK), received count */
    _Atomic uint8_t committed[CH_PRODUCERS * CH_PER_PRODUCER];
    _Atomic uint32_t received[CH_PRODUCERS * CH_PER_PRODUCER];
    _Atomic uint32_t next[CH_PRODUCERS]; /* next counter each producer slot puts */
    _Atomic uint32_t acked;
} chaos_log;

static void chaos_producer(il_qh *h, chaos_log *log, uint32_t slot)
{
    for (;;) {
        /* a fresh counter per attempt: a producer killed during its put
         * leaves at most that one message, committed or not, never a copy */
        uint32_t c = atomic_fetch_add(&log->next[slot], 1);
        if (c >= CH_PER_PRODUCER)
            _exit(0);
        int rc = put_blocking(h, slot, c, (int32_t)(c % 3), 16 + (uint32_t)t_rand_below(1500),
                              60000 * MS);
        if (rc != IL_OK)
            _exit(3);
        atomic_store(&log->committed[slot * CH_PER_PRODUCER + c], 1);
    }
}

static void chaos_consumer(il_qh *h, chaos_log *log, int durable)
{
    il_q_waiter w;
    for (;;) {
        il_q_msg m;
        int rc = il_q_take(h, me(), NULL, 0, FOREVER, &m);
        if (rc == IL_EMPTY) {
            il_q_wait_begin(&w, h, me(), IL_Q_WAIT_GET);
            if (il_q_qsize(h) == 0 &&
                il_q_wait_sleep(&w, 10 * MS) == IL_TIMEOUT && il_q_recover_due(h, 10 * MS))
                il_q_recover_dead(h, me(), FOREVER, NULL);
            il_q_wait_end(&w, 0);
            continue;
        }
        if (rc != IL_OK)
            _exit(4);
        phdr p = check_msg(il_q_payload(h, &m), m.len);
        if (p.producer >= CH_PRODUCERS || p.counter >= CH_PER_PRODUCER)
            _exit(5);
        atomic_fetch_add(&log->received[p.producer * CH_PER_PRODUCER + p.counter], 1);
        if (durable && t_rand_below(10) == 0) {
            atomic_fetch_sub(&log->received[p.producer * CH_PER_PRODUCER + p.counter], 1);
            if (il_q_nack(h, me(), &m, FOREVER) != IL_OK)
                _exit(6);
            continue;
        }
        if (il_q_release(h, me(), &m, FOREVER) != IL_OK)
            _exit(7);
        atomic_fetch_add(&log->acked, 1);
    }
}

static void run_chaos(int durable)
{
    tq t = tq_new(64, 1 << 15, 48, durable ? IL_Q_DURABLE : 0, 1);
    chaos_log *log =
        mmap(NULL, sizeof *log, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(log != MAP_FAILED);
    pid_t prod[CH_PRODUCERS], cons[CH_CONSUMERS];
    for (uint32_t i = 0; i < CH_PRODUCERS; i++) {
        prod[i] = fork_child();
        if (prod[i] == 0)
            chaos_producer(&t.h, log, i);
    }
    for (uint32_t i = 0; i < CH_CONSUMERS; i++) {
        cons[i] = fork_child();
        if (cons[i] == 0)
            chaos_consumer(&t.h, log, durable);
    }
    int kills = 0;
    int64_t deadline = il_now_ns() + 100000 * MS;
    for (;;) {
        CHECK(il_now_ns() < deadline);
        t_sleep_ms((int)t_rand_below(6));
        int alive_producers = 0;
        for (uint32_t i = 0; i < CH_PRODUCERS; i++) {
            if (prod[i] == 0)
                continue;
            int st;
            pid_t r = waitpid(prod[i], &st, WNOHANG);
            if (r == prod[i]) {
                CHECK(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0));
                if (atomic_load(&log->next[i]) >= CH_PER_PRODUCER) {
                    prod[i] = 0;
                    continue;
                }
                prod[i] = fork_child(); /* respawn: it continues where its slot stopped */
                if (prod[i] == 0)
                    chaos_producer(&t.h, log, i);
            }
            alive_producers++;
        }
        for (uint32_t i = 0; i < CH_CONSUMERS; i++) {
            int st;
            pid_t r = waitpid(cons[i], &st, WNOHANG);
            if (r == cons[i]) {
                CHECK(WIFSIGNALED(st));
                cons[i] = fork_child();
                if (cons[i] == 0)
                    chaos_consumer(&t.h, log, durable);
            }
        }
        if (alive_producers == 0)
            break;
        /* kill one at random */
        {
            uint32_t k = (uint32_t)t_rand_below(CH_PRODUCERS + CH_CONSUMERS);
            pid_t v = k < CH_PRODUCERS ? prod[k] : cons[k - CH_PRODUCERS];
            if (v > 0) {
                kill(v, SIGKILL);
                kills++;
            }
        }
    }
    /* producers are done: let the consumers drain, then stop them */
    int64_t drain = il_now_ns() + 30000 * MS;
    for (;;) {
        il_q_recover_dead(&t.h, me(), FOREVER, NULL);
        il_q_stats st;
        il_q_read_stats(&t.h, &st);
        if (st.ready == 0 && st.taken == 0 && st.writing == 0)
            break;
        CHECK(il_now_ns() < drain);
        t_sleep_ms(5);
    }
    for (uint32_t i = 0; i < CH_CONSUMERS; i++) {
        kill(cons[i], SIGKILL);
        CHECK_EQ(wait_exit(cons[i]), 128 + SIGKILL);
    }
    il_q_recover_dead(&t.h, me(), FOREVER, NULL);
    check_ok(&t.h);
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    uint32_t committed = 0, missing = 0, dup = 0, unrecorded = 0;
    for (uint32_t i = 0; i < CH_PRODUCERS * CH_PER_PRODUCER; i++) {
        uint32_t r = atomic_load(&log->received[i]);
        if (atomic_load(&log->committed[i])) {
            committed++;
            if (r == 0)
                missing++;
        } else if (r > 0)
            unrecorded++; /* put committed, producer killed before recording it */
        if (r > 1)
            dup++;
    }
    printf("    chaos(%s): %d kills, %u committed, %u missing, %u received more than once, "
           "%u unrecorded; owner_died %" PRIu64 ", abandoned %" PRIu64 ", dropped %" PRIu64
           ", redelivered %" PRIu64 "\n",
           durable ? "durable" : "plain", kills, committed, missing, dup, unrecorded,
           st.owner_died, st.abandoned, st.dropped, st.redelivered);
    CHECK(kills > 10);
    CHECK(committed > CH_PRODUCERS * CH_PER_PRODUCER / 2);
    if (durable) {
        CHECK_EQ(missing, 0);                     /* at-least-once */
        CHECK(dup <= st.redelivered);             /* only redeliveries repeat */
        CHECK_EQ(st.dropped, 0);
    } else {
        CHECK_EQ(dup, 0);                         /* never twice */
        CHECK(missing <= st.dropped);             /* lost only with a dead consumer */
        CHECK_EQ(st.redelivered, 0);
    }
    munmap(log, sizeof *log);
    tq_free(&t);
}

static void test_chaos_plain(void) { run_chaos(0); }
static void test_chaos_durable(void) { run_chaos(1); }

/* ---- restart ---------------------------------------------------------------- */

static void test_reboot(void)
{
    uint64_t boot[2];
    CHECK_EQ(il_q_read_boot_id(boot), IL_OK);
    CHECK(boot[0] != 0 || boot[1] != 0);
    tq t = tq_new(16, 1 << 14, 0, IL_Q_DURABLE, 0);
    il_q_set_boot(&t.h, boot);
    CHECK(il_q_same_boot(&t.h, boot));
    fill_some(&t, 5);
    il_q_msg a, b;
    CHECK_EQ(il_q_reserve(&t.h, me(), 64, 0, 0, FOREVER, &a), IL_OK);
    CHECK_EQ(il_q_take(&t.h, me(), NULL, 0, FOREVER, &b), IL_OK);
    CHECK_EQ(il_q_task_done(&t.h, me(), 1, FOREVER), IL_OK);
    il_q_waiter w;
    il_q_wait_begin(&w, &t.h, me(), IL_Q_WAIT_PUT);
    /* "the machine stops" while we hold the mutex: our identity is alive, as
     * a reused pid + start time could be after a restart */
    CHECK_EQ(il_q_lock(&t.h, me(), FOREVER), IL_OK);
    uint64_t next[2] = {boot[0] ^ 1, boot[1]};
    CHECK(!il_q_same_boot(&t.h, next));
    il_q_recovered r;
    CHECK_EQ(il_q_reboot_recover(&t.h, next, &r), IL_OK);
    CHECK(il_q_same_boot(&t.h, next));
    CHECK_EQ(r.abandoned, 1);
    CHECK_EQ(r.redelivered, 1);
    CHECK_EQ(atomic_load(&t.h.q->lock), 0);
    CHECK_EQ(atomic_load(&t.h.q->wq[IL_Q_WAIT_PUT].mask), 0);
    check_ok(&t.h);
    il_q_stats st;
    il_q_read_stats(&t.h, &st);
    CHECK_EQ(st.ready, 5);
    CHECK_EQ(st.unfinished, 4);
    il_q_msg m;
    CHECK_EQ(il_q_take(&t.h, me(), NULL, 0, FOREVER, &m), IL_OK);
    CHECK_EQ(m.seq, b.seq); /* back at its place */
    CHECK_EQ(m.deliveries, 2);
    tq_free(&t);
}

int main(int argc, char **argv)
{
    static const test_case tests[] = {
        {"geometry", test_geometry, 0},
        {"fifo", test_fifo, 0},
        {"priority", test_priority, 0},
        {"heap_model", test_heap_model, 0},
        {"full_and_toobig", test_full_and_toobig, 0},
        {"reserve_commit_nack", test_reserve_commit_nack, 0},
        {"task_done", test_task_done, 0},
        {"many", test_many, 0},
        {"arena_random", test_arena_random, 0},
        {"corrupt_derived", test_corrupt_derived, 0},
        {"corrupt_entries", test_corrupt_entries, 0},
        {"corrupt_fuzz", test_corrupt_fuzz, 0},
        {"bounded_waits", test_bounded_waits, 0},
        {"wake_get", test_wake_get, 0},
        {"join_wait", test_join_wait, 0},
        {"spinning", test_spinning, 0},
        {"wake_pending", test_wake_pending, 0},
        {"wake_pending_threads", test_wake_pending_threads, 120},
        {"threads_single", test_threads_single, 120},
        {"threads_many", test_threads_many, 120},
        {"processes", test_processes, 120},
        {"dead_holder", test_dead_holder, 0},
        {"recover_dead_consumer", test_recover_dead_consumer, 0},
        {"commit_journal", test_commit_journal, 0},
        {"chaos_plain", test_chaos_plain, 150},
        {"chaos_durable", test_chaos_durable, 150},
        {"reboot", test_reboot, 0},
    };
    return RUN_TESTS("test_queue", tests, argc, argv);
}
