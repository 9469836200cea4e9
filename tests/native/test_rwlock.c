/* test_rwlock.c - the robust writer-preferring reader-writer lock
 * (rwlockword.c): protocol, exclusion across 4 processes, a dead reader's
 * holds dropped, a dead writer recovered with IL_OWNERDIED (told to the
 * readers that get in before the next writer, and to that writer). */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "check.h"
#include "il_common.h"
#include "lockword.h"
#include "proc.h"
#include "rwlockword.h"
#include "seg.h"

#define MS 1000000LL

typedef struct rw_shared {
    il_seg_header hdr;
    il_rw rw;
    _Atomic int writers, readers, bad, ready;
    _Atomic uint64_t count;
} rw_shared;

static rw_shared *rw_new(void)
{
    rw_shared *m = mmap(NULL, sizeof(rw_shared), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    memset((void *)m, 0, sizeof *m);
    m->hdr.nslots = IL_SEG_SLOTS;
    il_rw_init(&m->rw);
    CHECK_EQ(il_rw_validate(&m->rw), IL_OK);
    return m;
}

static uint32_t attach(rw_shared *m)
{
    uint32_t slot = 0;
    CHECK_EQ(il_seg_attach(&m->hdr, il_ident_self(), 0, &slot), IL_OK);
    return slot;
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
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static uint32_t tid(void) { return (uint32_t)gettid(); }

/* Take the write side with bounded slices (repairs after each). */
static int write_acquire(rw_shared *m, uint32_t slot)
{
    il_lock *l = &m->rw.wlock;
    uint64_t id = il_ident_self();
    int rc = il_lock_try(l, id, tid(), 0);
    if (rc == IL_BUSY) {
        il_lock_waiter w;
        il_lock_wait_begin(&w, l, id, tid(), 0);
        for (;;) {
            rc = il_lock_wait_poll(&w);
            if (rc != IL_BUSY)
                break;
            rc = il_lock_wait_slice(&w, 5 * MS);
            if (rc == IL_OK || rc == IL_OWNERDIED)
                break;
            il_lock_check_owner(l, &w);
        }
    }
    CHECK(rc == IL_OK || rc == IL_OWNERDIED);
    while (il_rw_write_drain_slice(&m->rw, 5 * MS) != IL_OK)
        il_rw_recover_readers(&m->rw, &m->hdr, slot);
    return rc;
}

/* Take a read side: IL_OK, or IL_OWNERDIED (acquired; a writer died). */
static int read_acquire(rw_shared *m, uint32_t slot)
{
    for (;;) {
        int rc = il_rw_read_try(&m->rw, slot);
        if (rc == IL_OK || rc == IL_OWNERDIED)
            return rc;
        rc = il_rw_read_wait_slice(&m->rw, slot, -1, 5 * MS);
        if (rc == IL_OK || rc == IL_OWNERDIED)
            return rc;
        il_lock_check_owner(&m->rw.wlock, NULL);
    }
}

static void test_protocol(void)
{
    rw_shared *m = rw_new();
    uint32_t me = attach(m);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_INVALID);
    CHECK_EQ(il_rw_read_try(&m->rw, me), IL_OK);
    CHECK_EQ(il_rw_read_try(&m->rw, me), IL_OK);
    CHECK_EQ(il_rw_readers(&m->rw), 2);
    uint64_t id = il_ident_self();
    CHECK_EQ(il_lock_try(&m->rw.wlock, id, tid(), 0), IL_OK); /* the writer is in line */
    CHECK_EQ(il_rw_read_try(&m->rw, me), IL_BUSY);           /* writer preference */
    CHECK_EQ(il_rw_write_drain_slice(&m->rw, 1 * MS), IL_TIMEOUT);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    CHECK_EQ(il_rw_write_drain_slice(&m->rw, 1 * MS), IL_OK);
    CHECK_EQ(il_rw_read_wait_slice(&m->rw, me, -1, 1 * MS), IL_TIMEOUT);
    CHECK_EQ(il_rw_write_release(&m->rw, id, tid()), IL_OK);
    CHECK_EQ(il_rw_read_try(&m->rw, me), IL_OK);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    munmap(m, sizeof *m);
}

static void test_exclusion_4_processes(void)
{
    rw_shared *m = rw_new();
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork_child();
        if (kids[k] == 0) {
            uint32_t slot = attach(m);
            for (int i = 0; i < 20000; i++) {
                if ((i + k) % 5 == 0) {
                    write_acquire(m, slot);
                    if (atomic_fetch_add(&m->writers, 1) != 0 || atomic_load(&m->readers) != 0)
                        atomic_store(&m->bad, 1);
                    atomic_fetch_add(&m->count, 1);
                    atomic_fetch_sub(&m->writers, 1);
                    CHECK_EQ(il_rw_write_release(&m->rw, il_ident_self(), tid()), IL_OK);
                } else {
                    read_acquire(m, slot);
                    atomic_fetch_add(&m->readers, 1);
                    if (atomic_load(&m->writers) != 0)
                        atomic_store(&m->bad, 1);
                    atomic_fetch_sub(&m->readers, 1);
                    CHECK_EQ(il_rw_read_release(&m->rw, slot), IL_OK);
                }
            }
            _exit(0);
        }
    }
    for (int k = 0; k < 4; k++)
        CHECK_EQ(wait_exit(kids[k]), 0);
    CHECK_EQ(atomic_load(&m->bad), 0);
    CHECK_EQ(atomic_load(&m->count), 4 * 4000);
    CHECK_EQ(il_rw_readers(&m->rw), 0);
    munmap(m, sizeof *m);
}

static void wait_ready(rw_shared *m)
{
    int64_t t0 = il_now_ns();
    while (!atomic_load(&m->ready)) {
        CHECK(il_now_ns() - t0 < 5000 * MS);
        t_sleep_ms(1);
    }
}

static void test_dead_reader_dropped(void)
{
    rw_shared *m = rw_new();
    uint32_t me = attach(m);
    pid_t pid = fork_child();
    if (pid == 0) {
        uint32_t slot = attach(m);
        CHECK_EQ(il_rw_read_try(&m->rw, slot), IL_OK);
        CHECK_EQ(il_rw_read_try(&m->rw, slot), IL_OK);
        atomic_store(&m->ready, 1);
        for (;;)
            pause();
    }
    wait_ready(m);
    CHECK_EQ(il_rw_recover_readers(&m->rw, &m->hdr, me), 0); /* alive: kept */
    kill(pid, SIGKILL);
    CHECK_EQ(wait_exit(pid), 128 + SIGKILL);
    CHECK_EQ(write_acquire(m, me), IL_OK); /* drains by recovering the holds */
    CHECK_EQ(il_rw_readers(&m->rw), 0);
    CHECK_EQ(atomic_load(&m->rw.rrecovered), 2);
    CHECK_EQ(il_rw_write_release(&m->rw, il_ident_self(), tid()), IL_OK);
    munmap(m, sizeof *m);
}

static void test_dead_writer_owner_died(void)
{
    rw_shared *m = rw_new();
    uint32_t me = attach(m);
    pid_t pid = fork_child();
    if (pid == 0) {
        uint32_t slot = attach(m);
        write_acquire(m, slot);
        atomic_store(&m->ready, 1);
        for (;;)
            pause();
    }
    wait_ready(m);
    CHECK_EQ(il_rw_read_try(&m->rw, me), IL_BUSY);
    kill(pid, SIGKILL);
    CHECK_EQ(wait_exit(pid), 128 + SIGKILL);
    /* readers get past the dead writer, and every one is told until a
     * writer has taken the write side again */
    CHECK_EQ(read_acquire(m, me), IL_OWNERDIED);
    CHECK_EQ(il_rw_read_try(&m->rw, me), IL_OWNERDIED);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    CHECK_EQ(write_acquire(m, me), IL_OWNERDIED); /* the next writer is told */
    /* it gives up before repairing (a timed-out drain): the news stays */
    CHECK_EQ(il_rw_write_release_died(&m->rw, il_ident_self(), tid()), IL_OK);
    CHECK_EQ(read_acquire(m, me), IL_OWNERDIED);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    CHECK_EQ(write_acquire(m, me), IL_OWNERDIED);
    CHECK_EQ(il_rw_write_release(&m->rw, il_ident_self(), tid()), IL_OK);
    CHECK_EQ(read_acquire(m, me), IL_OK); /* repaired: nobody is told any more */
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    CHECK_EQ(write_acquire(m, me), IL_OK);
    CHECK_EQ(il_rw_write_release(&m->rw, il_ident_self(), tid()), IL_OK);
    munmap(m, sizeof *m);
}

/* Reader-wait entries (deadlock detection): a claimed entry shows an even
 * seq while its thread waits, an odd one from the successful attempt on, a
 * new wait number per claim; the entries of a dead process are taken over. */
static void test_reader_wait_entries(void)
{
    rw_shared *m = rw_new();
    uint32_t me = attach(m);
    uint64_t id = il_ident_self(), rid, seq, seq2;
    uint32_t rtid;
    CHECK_EQ(il_lock_try(&m->rw.wlock, id, tid(), 0), IL_OK); /* a writer holds */
    int32_t rq = il_rw_rwait_claim(&m->rw, id, tid());
    CHECK(rq >= 0);
    CHECK_EQ(il_rw_rwait_read(&m->rw, (uint32_t)rq, &rid, &rtid, &seq), 1);
    CHECK_EQ(rid, il_ident_bare(id));
    CHECK_EQ(rtid, tid());
    CHECK(seq != 0 && (seq & 1u) == 0);
    /* failed attempts leave the seq even and unchanged */
    CHECK_EQ(il_rw_read_wait_slice(&m->rw, me, rq, 1 * MS), IL_TIMEOUT);
    CHECK_EQ(il_rw_rwait_read(&m->rw, (uint32_t)rq, &rid, &rtid, &seq2), 1);
    CHECK_EQ(seq2, seq);
    CHECK_EQ(il_rw_write_release(&m->rw, id, tid()), IL_OK);
    /* the successful attempt leaves the trying bit set */
    CHECK_EQ(il_rw_read_wait_slice(&m->rw, me, rq, 1 * MS), IL_OK);
    CHECK_EQ(il_rw_rwait_read(&m->rw, (uint32_t)rq, &rid, &rtid, &seq2), 1);
    CHECK_EQ(seq2, seq | 1u);
    il_rw_rwait_release(&m->rw, rq, id);
    CHECK_EQ(il_rw_rwait_read(&m->rw, (uint32_t)rq, &rid, &rtid, &seq2), 0);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    /* a new claim: a new wait number */
    int32_t rq2 = il_rw_rwait_claim(&m->rw, id, tid());
    CHECK(rq2 >= 0);
    CHECK_EQ(il_rw_rwait_read(&m->rw, (uint32_t)rq2, &rid, &rtid, &seq2), 1);
    CHECK(seq2 > seq && (seq2 & 1u) == 0);
    il_rw_rwait_release(&m->rw, rq2, id);
    /* all entries taken by a process that then dies: taken over */
    pid_t pid = fork_child();
    if (pid == 0) {
        for (uint32_t i = 0; i < IL_RW_RWAITS; i++)
            CHECK(il_rw_rwait_claim(&m->rw, il_ident_self(), tid()) >= 0);
        CHECK_EQ(il_rw_rwait_claim(&m->rw, il_ident_self(), tid()), -1);
        atomic_store(&m->ready, 1);
        for (;;)
            pause();
    }
    wait_ready(m);
    kill(pid, SIGKILL);
    CHECK_EQ(wait_exit(pid), 128 + SIGKILL);
    rq = il_rw_rwait_claim(&m->rw, id, tid());
    CHECK(rq >= 0);
    il_rw_rwait_release(&m->rw, rq, id);
    /* waiting counts of a dead slot are dropped by the repair */
    atomic_store(&m->rw.rwaiting[me + 1], 3);
    CHECK_EQ(il_rw_waiting_readers(&m->rw), 3);
    il_rw_recover_readers(&m->rw, &m->hdr, me);
    CHECK_EQ(il_rw_waiting_readers(&m->rw), 0);
    munmap(m, sizeof *m);
}

/* ---- sleeping readers of dead processes ----------------------------------- */

typedef struct rsleep_arg {
    rw_shared *m;
    uint32_t slot;
    int64_t slice;
} rsleep_arg;

static void *rsleeper_thread(void *p)
{
    rsleep_arg *a = p;
    while (il_rw_read_try(&a->m->rw, a->slot) != IL_OK)
        if (il_rw_read_wait_slice(&a->m->rw, a->slot, -1, a->slice) == IL_OK)
            break;
    return NULL;
}

static void wait_rsleepers(rw_shared *m, uint32_t n)
{
    int64_t t0 = il_now_ns();
    while (il_rw_rsleepers(&m->rw) != n) {
        CHECK(il_now_ns() - t0 < 5000 * MS);
        t_sleep_ms(1);
    }
}

/* Readers killed (SIGKILL) while asleep behind a writer: rsleepers keeps
 * counting them until il_rw_recover_readers takes exactly their slots'
 * counts out; a live sleeping reader is still woken by the write release. */
static void test_reader_killed_asleep(void)
{
    rw_shared *m = rw_new();
    uint32_t me = attach(m);
    uint64_t id = il_ident_self();
    CHECK_EQ(il_lock_try(&m->rw.wlock, id, tid(), 0), IL_OK);
    CHECK_EQ(il_rw_write_drain_slice(&m->rw, 1 * MS), IL_OK);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork_child();
        if (kids[i] == 0) {
            rsleep_arg a = {m, attach(m), 5000 * MS};
            pthread_t th[2];
            for (int k = 0; k < 2; k++)
                if (pthread_create(&th[k], NULL, rsleeper_thread, &a) != 0)
                    _exit(2);
            for (;;)
                pause();
        }
    }
    wait_rsleepers(m, 4);
    rsleep_arg live = {m, me, 4000 * MS};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, rsleeper_thread, &live) == 0);
    wait_rsleepers(m, 5);
    il_rw_recover_readers(&m->rw, &m->hdr, me); /* all alive: no change */
    CHECK_EQ(il_rw_rsleepers(&m->rw), 5);
    for (int i = 0; i < 2; i++) {
        CHECK(kill(kids[i], SIGKILL) == 0);
        CHECK_EQ(wait_exit(kids[i]), 128 + SIGKILL);
    }
    uint32_t dead = 0;
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        if (i != me)
            dead += il_rw_slot_sleepers(&m->rw, i);
    CHECK_EQ(dead, 4);
    CHECK_EQ(il_rw_rsleepers(&m->rw), 5); /* the leak, until recovery */
    il_rw_recover_readers(&m->rw, &m->hdr, me);
    CHECK_EQ(il_rw_rsleepers(&m->rw), 1);
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++)
        if (i != me)
            CHECK_EQ(il_rw_slot_sleepers(&m->rw, i), 0);
    int64_t t0 = il_now_ns();
    CHECK_EQ(il_rw_write_release(&m->rw, id, tid()), IL_OK);
    pthread_join(th, NULL);
    CHECK(il_now_ns() - t0 < 2000 * MS); /* woken, not the end of its 4 s slice */
    CHECK_EQ(il_rw_held(&m->rw, me), 1);
    CHECK_EQ(il_rw_read_release(&m->rw, me), IL_OK);
    CHECK_EQ(il_rw_rsleepers(&m->rw), 0);
    CHECK_EQ(il_rw_slot_sleepers(&m->rw, me), 0);
    munmap(m, sizeof *m);
}

int main(int argc, char **argv)
{
    static const test_case tests[] = {
        {"rw_protocol", test_protocol, 0},
        {"rw_exclusion_4_processes", test_exclusion_4_processes, 120},
        {"rw_dead_reader_dropped", test_dead_reader_dropped, 0},
        {"rw_dead_writer_owner_died", test_dead_writer_owner_died, 0},
        {"rw_reader_wait_entries", test_reader_wait_entries, 0},
        {"rw_reader_killed_asleep", test_reader_killed_asleep, 0},
    };
    return RUN_TESTS("test_rwlock", tests, argc, argv);
}
