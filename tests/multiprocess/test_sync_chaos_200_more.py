"""Chaos, 200 kills per primitive (continued): RWLock, Barrier, Condition and
Event, their users killed with kill -9 at random points.

Same method as test_sync_chaos_200.py, whose fork/reap helpers this file
reuses: workers are forked (fork ~1 ms, a fresh interpreter ~80 ms) and hammer
the object; each round kills one or two of them at a random moment, checks,
and forks replacements, while the survivors keep going (one fork per kill is
what keeps 200 rounds within the budget on a loaded 2-core machine).  Checked
every round: nobody hangs (every wait has a timeout, and a wait that times out
is a failure), every death is detected, and the state is consistent; the
shared fields live in an anonymous shared mmap inherited by fork.  Each
worker records where it is (a phase marker written only by itself), so the
test knows where each victim died.

* RWLock: mixed readers/writers; writers break and restore a == b.  A death
  holding the write side is reported (OwnerDied / ``owner_died``) to the next
  writer (docs/design/sync-rwlock.md: readers are not told); a death holding a
  read has its hold dropped; readers never see (a, b) move under them nor a
  live writer inside, writers never see a live reader inside.
* Barrier: the test is one of the parties; the victim dies before arriving,
  half-way through arriving or while waiting.  Nobody passes a generation the
  dead party was counted in, the others get BrokenBarrierError within a
  bound, and after reset() the barrier works again with fresh parties.
* Condition: notifiers and waiters (Lock-based condition) killed anywhere,
  inside notify and inside wait (re-acquisition included); a death holding
  the lock is reported by OwnerDied on the lock, the invariant a == b is
  repaired by whoever is told, no waiter is lost (each round's notify_all
  wakes every surviving waiter; a wait never times out) and no entry of a
  dead waiter survives a notify_all.
* Event: setters, clearers and waiters killed anywhere; a live waiter never
  times out, and once the clearers are paused and the event is set, every
  surviving waiter gets through wait() (no lost wake-up); is_set() agrees.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import signal
import struct
import threading
import time
import warnings
from collections.abc import Callable

import pytest
from test_sync_chaos_200 import BUDGET, ROUNDS, SLOWDOWN, _fork, _live, _reap

import interlink as il

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60 * SLOWDOWN)]

__all__ = ["_reap"]  # the autouse fixture that kills and reaps leftover workers

Q = struct.Struct("<q")
NSLOTS = 64  # int64 fields of the shared area


def _area() -> mmap.mmap:
    return mmap.mmap(-1, Q.size * NSLOTS)  # MAP_SHARED|MAP_ANONYMOUS: inherited by fork


def _rd(mm: mmap.mmap, slot: int) -> int:
    return int(Q.unpack_from(mm, slot * 8)[0])


def _wr(mm: mmap.mmap, slot: int, value: int) -> None:
    Q.pack_into(mm, slot * 8, value)


def _bump(mm: mmap.mmap, slot: int) -> None:
    """Add one.  Not atomic: only for fields written by one process at a time
    (under an exclusive lock, or a per-worker slot), never for a count shared
    by concurrent writers (a stale write would lose counts)."""
    _wr(mm, slot, _rd(mm, slot) + 1)


def _running(pid: int) -> bool:
    """True if ``pid`` is a process that still runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] not in (b"Z", b"X")


def _until(cond: Callable[[], bool], what: Callable[[], str], bound: float = 5.0) -> None:
    """Poll ``cond`` until true; fail with ``what()`` after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < deadline, what()
        time.sleep(0.0005)


def _at_least(mm: mmap.mmap, slots: tuple[int, ...], value: int) -> Callable[[], bool]:
    """A condition for _until: the sum of the fields ``slots`` is >= ``value``."""
    return lambda: sum(_rd(mm, slot) for slot in slots) >= value


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    _live.discard(pid)


def _kill_victims(pids: list[int], rng: random.Random, most: int) -> list[int]:
    """Kill 1..most random workers (a short random gap between two kills);
    return their indexes."""
    victims = rng.sample(range(len(pids)), rng.randint(1, most))
    for n, v in enumerate(victims):
        if n:
            time.sleep(rng.uniform(0.0, 0.002))
        _kill(pids[v])
    return victims


def _aim(mm: mmap.mmap, base: int, count: int, phase: int, bound: float = 0.01) -> int | None:
    """Busy-poll the phase markers ``base .. base + count`` for up to ``bound``
    seconds: the index of a worker seen in ``phase``, or None.  (Kill it at
    once: where it really died is read back from its marker afterwards.)"""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        for i in range(count):
            if _rd(mm, base + i) == phase:
                return i
    return None


def _exit_code(pid: int, bound: float) -> int | None:
    """Reap ``pid`` if it exits within ``bound`` seconds: its exit code (-signal
    if killed), or None if it is still running."""
    deadline = time.monotonic() + bound
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            _live.discard(pid)
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.0005)


def _alive_or_fail(pids: list[int], skip: list[int]) -> None:
    """Every worker not in ``skip`` still runs (none died of a failed check)."""
    for i, pid in enumerate(pids):
        if i not in skip:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _live.discard(pid)
                pytest.fail(f"worker {i} exited early ({os.waitstatus_to_exitcode(status)})")


# ---------------------------------------------------------------------------
# RWLock
# ---------------------------------------------------------------------------

# Fields: a, b (a == b, broken by writers only), repairs (by workers), writes
# (all under the write side), missed (a writer found a != b without owner_died), torn (a reader saw
# (a, b) change under its read hold), overlap (a live reader inside during a
# write, or a live writer inside during a read); per worker i: w_inside (its
# pid while between its two stores), r_inside (its pid while it reads), phase
# (RW_HOLDS_WRITE / RW_HOLDS_READ while it certainly holds that side), reads
# (its own count: readers overlap, so a shared count would be a racy
# read-modify-write).
RW_A, RW_B, RW_REPAIRS, RW_WRITES, RW_MISSED, RW_TORN, RW_OVERLAP = range(7)
RW_W_INSIDE, RW_R_INSIDE, RW_PHASE, RW_READS_I = 8, 12, 16, 20  # 4 slots each
RW_HOLDS_WRITE, RW_HOLDS_READ = 1, 2
RW_WORKERS = 3


def _rw_worker(name: str, mm: mmap.mmap, index: int, seed: int) -> Callable[[], None]:
    def others_inside(base: int, me: int) -> bool:
        for slot in range(base, base + RW_WORKERS):
            pid = _rd(mm, slot)
            if pid and pid != me and _running(pid):  # a dead one's marker may linger
                return True
        return False

    def body() -> None:
        warnings.simplefilter("ignore", il.OwnerDied)  # the flag is what we test
        rw = il.RWLock(name, create=False)
        rng = random.Random(seed)
        me = os.getpid()
        while True:
            if rng.random() < 0.5:
                assert rw.acquire_write(timeout=10), "write side wedged"
                _wr(mm, RW_PHASE + index, RW_HOLDS_WRITE)
                a, b = _rd(mm, RW_A), _rd(mm, RW_B)
                if rw.owner_died:
                    if a != b:
                        _wr(mm, RW_B, a)
                    _bump(mm, RW_REPAIRS)
                    rw.recovered()
                elif a != b:
                    _wr(mm, RW_MISSED, 1)  # a broken invariant nobody was told about
                    os._exit(3)
                if others_inside(RW_R_INSIDE, me) or others_inside(RW_W_INSIDE, me):
                    _wr(mm, RW_OVERLAP, 1)
                    os._exit(4)
                _wr(mm, RW_W_INSIDE + index, me)
                _wr(mm, RW_A, _rd(mm, RW_A) + 1)  # invariant broken ...
                if rng.random() < 0.5:
                    os.sched_yield()  # ... across a switch: the kill may land here
                _wr(mm, RW_B, _rd(mm, RW_B) + 1)  # ... restored
                _wr(mm, RW_W_INSIDE + index, 0)
                _bump(mm, RW_WRITES)
                _wr(mm, RW_PHASE + index, 0)
                rw.release_write()
            else:
                assert rw.acquire_read(timeout=10), "read side wedged"
                _wr(mm, RW_PHASE + index, RW_HOLDS_READ)
                _wr(mm, RW_R_INSIDE + index, me)
                first = (_rd(mm, RW_A), _rd(mm, RW_B))
                if others_inside(RW_W_INSIDE, me):
                    _wr(mm, RW_OVERLAP, 1)
                    os._exit(4)
                if rng.random() < 0.5:
                    os.sched_yield()  # held across a switch
                if (_rd(mm, RW_A), _rd(mm, RW_B)) != first:
                    _wr(mm, RW_TORN, 1)
                    os._exit(5)
                _wr(mm, RW_R_INSIDE + index, 0)
                _bump(mm, RW_READS_I + index)
                _wr(mm, RW_PHASE + index, 0)
                rw.release_read()

    return body


def test_killed_rwlock_users_200(name: str) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    rw = il.RWLock(name)
    mm = _area()
    seen_by_test = kills = died_writing = died_reading = 0

    progress_slots = (RW_WRITES, *range(RW_READS_I, RW_READS_I + RW_WORKERS))

    def progress() -> int:
        return sum(_rd(mm, slot) for slot in progress_slots)

    start = time.monotonic()
    pids = [_fork(_rw_worker(name, mm, i, rng.getrandbits(32))) for i in range(RW_WORKERS)]
    try:
        for _ in range(ROUNDS):
            since = progress()
            _until(
                _at_least(mm, progress_slots, since + 20),
                lambda: f"no progress: {rw.statistics()}",
            )
            before = rw.statistics()
            time.sleep(rng.uniform(0.0, 0.003))
            victims = _kill_victims(pids, rng, 2)
            kills += len(victims)
            phases = [_rd(mm, RW_PHASE + v) for v in victims]  # where each one died
            for v in victims:  # its markers: nobody else writes them
                for base in (RW_W_INSIDE, RW_R_INSIDE, RW_PHASE):
                    _wr(mm, base + v, 0)
            assert not _rd(mm, RW_MISSED), "a writer found a death nobody was told about"
            assert not _rd(mm, RW_TORN), "(a, b) changed under a read hold"
            assert not _rd(mm, RW_OVERLAP), "a live reader and a live writer were inside"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ok = rw.acquire_write(timeout=5)
                assert ok, f"wedged after the kills: {rw.statistics()}"
            a, b = _rd(mm, RW_A), _rd(mm, RW_B)
            if rw.owner_died:
                assert any(issubclass(c.category, il.OwnerDied) for c in caught)
                seen_by_test += 1
                _wr(mm, RW_B, a)  # repair
                rw.recovered()
            else:
                assert a == b, "a writer died mid-section and nobody was told"
            stats = rw.statistics()
            # A victim that died holding the write side was reported (to the
            # test or to a worker); one that died holding a read had it taken
            # back (else this write could not have drained the readers).
            if RW_HOLDS_WRITE in phases:
                died_writing += 1
                assert stats.owner_died > before.owner_died, "a dead writer went unreported"
            # Every write-side report is of a death this round (the last round
            # ended with the test's own write acquisition), one per death.
            assert stats.owner_died - before.owner_died <= len(victims), "a spurious OwnerDied"
            if RW_HOLDS_READ in phases:
                died_reading += 1
                assert stats.readers_recovered > before.readers_recovered, "a read hold leaked"
            rw.release_write()
            assert rw.acquire_read(timeout=5), "no read after the round"
            rw.release_read()
            _alive_or_fail(pids, victims)
            for v in victims:
                pids[v] = _fork(_rw_worker(name, mm, v, rng.getrandbits(32)))
        for pid in pids:
            _kill(pid)
        elapsed = time.monotonic() - start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", il.OwnerDied)  # the flag is checked
            ok = rw.acquire_write(timeout=5)
            assert ok, "the last kills were not recovered"
        if rw.owner_died:
            _wr(mm, RW_B, _rd(mm, RW_A))
            rw.recovered()
        stats = rw.statistics()
        assert stats.readers == 0 and _rd(mm, RW_A) == _rd(mm, RW_B)
        rw.release_write()
        stats = rw.statistics()
        assert stats.writer_pid == 0 and stats.readers == 0, stats
        repairs = _rd(mm, RW_REPAIRS)
        print(
            f"RWLock: {ROUNDS} rounds, {kills} kills, {_rd(mm, RW_WRITES)} writes, "
            f"{progress() - _rd(mm, RW_WRITES)} reads; rounds with a death holding the write side "
            f"{died_writing}, a read {died_reading}; writer deaths reported: {seen_by_test} "
            f"to the test + {repairs} to workers (owner_died counter {stats.owner_died}), "
            f"read holds recovered {stats.readers_recovered}, {elapsed:.1f} s"
        )
        # Each report is one OwnerDied acquisition; a worker killed between its
        # acquisition and its count leaves the counter ahead, never behind.
        assert stats.owner_died >= seen_by_test + repairs
        assert died_writing > 0 and died_reading > 0  # the kills land inside both sides
        assert elapsed < BUDGET
    finally:
        rw.close()
        mm.close()


# ---------------------------------------------------------------------------
# Barrier
# ---------------------------------------------------------------------------

# Fields: epoch (bumped by the test after each reset); per worker i: passes in
# this epoch, broken (the epoch in which it got BrokenBarrierError).
BAR_EPOCH, BAR_PASSES, BAR_BROKEN = 0, 4, 8
BAR_WORKERS = 3
# il_barrier (eventword.h) after the segment header: word u64 (count bits
# 0..15, BROKEN bit 16, generation bits 32..63), then at +64 the entries:
# ident u64 (pid in bits 0..21), gs u64 (generation << 8 | state), tid, unused.
_BAR_ENTRY = struct.Struct("<QQII")
_BAR_WAITING = 1


def _bar_registered(bar: il.Barrier, pid: int) -> bool:
    """Whether ``pid`` holds an entry registered WAITING in the barrier's
    current generation (white box: what the barrier's dead-party scan sees)."""
    base = il._native.SEG_HEADER_SIZE
    mm = bar._segment.mm
    (word,) = struct.unpack_from("<Q", mm, base)
    gen = word >> 32
    for i in range(il._native.BARRIER_MAX_PARTIES):
        ident, gs, _tid, _ = _BAR_ENTRY.unpack_from(mm, base + 64 + i * _BAR_ENTRY.size)
        if ident & ((1 << 22) - 1) == pid and gs == (gen << 8) | _BAR_WAITING:
            return True
    return False


def _bar_worker(name: str, mm: mmap.mmap, index: int) -> Callable[[], None]:
    def body() -> None:
        bar = il.Barrier(name, create=False)
        while True:
            epoch = _rd(mm, BAR_EPOCH)
            try:
                bar.wait(timeout=10)
            except threading.BrokenBarrierError:
                _wr(mm, BAR_BROKEN + index, epoch)
                deadline = time.monotonic() + 10.0
                while _rd(mm, BAR_EPOCH) == epoch:  # parked until the test's reset
                    assert time.monotonic() < deadline, "never reset"
                    time.sleep(0.001)
                continue
            _bump(mm, BAR_PASSES + index)

    return body


def test_killed_barrier_parties_200(name: str) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    bar = il.Barrier(name, BAR_WORKERS + 1)  # the test is the last party
    mm = _area()
    detected = before_arriving = 0
    start = time.monotonic()
    _wr(mm, BAR_EPOCH, 1)
    pids = [_fork(_bar_worker(name, mm, i)) for i in range(BAR_WORKERS)]
    try:
        for _ in range(ROUNDS):
            epoch = _rd(mm, BAR_EPOCH)
            # Fresh parties (survivors and replacements) pass after the reset.
            generations = rng.randint(1, 3)
            for _ in range(generations):
                bar.wait(timeout=10)
            if rng.random() < 0.7:
                time.sleep(rng.uniform(0.0, 0.002))  # the victim is likely waiting
            v = rng.randrange(BAR_WORKERS)  # else it is likely still returning
            _kill(pids[v])
            registered = _bar_registered(bar, pids[v]) or bar.broken
            t0 = time.monotonic()
            if registered:
                # Counted (or half-way through arriving) and dead: the
                # generation must break, never complete with it.
                with pytest.raises(threading.BrokenBarrierError):
                    bar.wait(timeout=10)
                assert time.monotonic() - t0 < 9.0, "a dead party was not detected"
                detected += 1
            else:
                # It died before arriving: nothing can tell, the wait's
                # timeout is the bound (0 here: it breaks the barrier at once).
                with pytest.raises(threading.BrokenBarrierError):
                    bar.wait(timeout=0)
                before_arriving += 1
            for i in range(BAR_WORKERS):
                if i != v:
                    _until(
                        _at_least(mm, (BAR_BROKEN + i,), epoch),
                        lambda: "a surviving party did not get BrokenBarrierError",
                    )
                    assert _rd(mm, BAR_PASSES + i) == generations, "passed without the test"
            assert _rd(mm, BAR_PASSES + v) in (generations - 1, generations)
            assert bar.broken
            _alive_or_fail(pids, [v])
            # Every survivor is parked: reset, then let them (and a
            # replacement for the victim) in again.
            bar.reset()
            assert (bar.broken, bar.n_waiting) == (False, 0)
            for i in range(BAR_WORKERS):
                _wr(mm, BAR_PASSES + i, 0)
            _wr(mm, BAR_EPOCH, epoch + 1)
            pids[v] = _fork(_bar_worker(name, mm, v))
        elapsed = time.monotonic() - start
        print(
            f"Barrier: {ROUNDS} rounds, dead parties detected {detected}, died before "
            f"arriving {before_arriving}, {elapsed:.1f} s"
        )
        assert detected > 0 and before_arriving > 0
        assert elapsed < BUDGET
    finally:
        bar.close()
        mm.close()


def _one_wait(name: str) -> Callable[[], None]:
    def body() -> None:
        il.Barrier(name, create=False).wait(timeout=10)

    return body


def test_barrier_never_completes_with_a_dead_party(name: str) -> None:
    """Regression (found by the test above): a party that arrived and then died
    was counted into the generation that the next arrival completed, so the
    others passed and then waited for it in the next one.  The last arrival
    now checks the parties it completes and breaks the generation instead."""
    bar = il.Barrier(name, 2)
    try:
        pid = _fork(_one_wait(name))
        _until(lambda: bar.n_waiting == 1, lambda: "the child never arrived")
        os.kill(pid, signal.SIGKILL)  # not reaped: a zombie, as when the parent waits
        _until(lambda: not _running(pid), lambda: "the child did not die")
        t0 = time.monotonic()
        with pytest.raises(threading.BrokenBarrierError):
            bar.wait(timeout=5)
        assert time.monotonic() - t0 < 4.0, "broken by the timeout, not by the death"
        assert bar.broken
        assert _exit_code(pid, 5.0) == -signal.SIGKILL
        bar.reset()
        pid = _fork(_one_wait(name))  # fresh parties pass again
        assert bar.wait(timeout=5) in (0, 1)
        assert _exit_code(pid, 5.0) == 0
    finally:
        bar.close()


# ---------------------------------------------------------------------------
# Condition
# ---------------------------------------------------------------------------

# Fields: a, b (a == b, broken by everyone inside the lock), repairs, missed,
# gen (bumped by each notifier pass and by the test), stop, wakes (waiter
# returns), lost (a waiter's wait timed out); per worker i: seen (the gen a
# waiter saw after its last wake), stopped, phase (CV_IN_SECTION while it
# certainly holds the lock, CV_IN_NOTIFY inside notify (lock held),
# CV_IN_WAIT inside wait, from registering to the end of the re-acquisition).
CV_A, CV_B, CV_REPAIRS, CV_MISSED, CV_GEN, CV_STOP, CV_WAKES, CV_LOST = range(8)
CV_SEEN, CV_STOPPED, CV_PHASE = 8, 12, 16  # 4 slots each
CV_IN_SECTION, CV_IN_NOTIFY, CV_IN_WAIT = 1, 2, 3
CV_WORKERS = 4


def _cv_section(
    lock: il.Lock, mm: mmap.mmap, rng: random.Random, cond: il.Condition, index: int
) -> None:
    """Entered with the lock: repair after an owner death, then break and
    restore the invariant (notifying in the middle, sometimes)."""
    _wr(mm, CV_PHASE + index, CV_IN_SECTION)
    a, b = _rd(mm, CV_A), _rd(mm, CV_B)
    if lock.owner_died:
        if a != b:
            _wr(mm, CV_B, a)
        _bump(mm, CV_REPAIRS)
        lock.recovered()
    elif a != b:
        _wr(mm, CV_MISSED, 1)
        os._exit(3)
    _wr(mm, CV_A, _rd(mm, CV_A) + 1)  # broken ...
    if rng.random() < 0.5:
        _wr(mm, CV_PHASE + index, CV_IN_NOTIFY)
        cond.notify()  # a kill in here is an owner death with a broken invariant
        _wr(mm, CV_PHASE + index, CV_IN_SECTION)
    _wr(mm, CV_B, _rd(mm, CV_B) + 1)  # ... restored


def _cv_worker(
    cname: str, lname: str, mm: mmap.mmap, index: int, waiter: bool, seed: int
) -> Callable[[], None]:
    def body() -> None:
        warnings.simplefilter("ignore", il.OwnerDied)
        lock = il.Lock(lname, create=False, deadlock_detection=False)
        cond = il.Condition(cname, lock, create=False)
        rng = random.Random(seed)
        last = -1
        while True:
            assert cond.acquire(timeout=10), "condition lock wedged"
            _cv_section(lock, mm, rng, cond, index)
            if _rd(mm, CV_STOP):
                _wr(mm, CV_PHASE + index, 0)
                _wr(mm, CV_STOPPED + index, 1)
                cond.release()
                os._exit(0)
            if waiter:
                while _rd(mm, CV_GEN) == last and not _rd(mm, CV_STOP):
                    _wr(mm, CV_PHASE + index, CV_IN_WAIT)
                    if not cond.wait(timeout=10):
                        _wr(mm, CV_LOST, 1)  # alive, waiting, never notified
                        os._exit(4)
                    _cv_section(lock, mm, rng, cond, index)  # owner_died of the re-acquisition
                last = _rd(mm, CV_GEN)
                _wr(mm, CV_SEEN + index, last)
                _bump(mm, CV_WAKES)
            else:
                _bump(mm, CV_GEN)
                if rng.random() < 0.5:
                    cond.notify_all()
                else:
                    cond.notify(rng.randint(1, 2))
            _wr(mm, CV_PHASE + index, 0)
            cond.release()
            if rng.random() < 0.5:
                os.sched_yield()

    return body


def test_killed_condition_users_200(name: str) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    lname = f"{name}.lk"
    lock = il.Lock(lname, deadlock_detection=False)
    cond = il.Condition(name, lock)
    mm = _area()
    seen_by_test = kills = 0
    died_in = [0, 0, 0, 0]  # by phase
    roles = [False, True, True, rng.random() < 0.5]  # a notifier, waiters, either

    def fork(i: int) -> int:
        return _fork(_cv_worker(name, lname, mm, i, roles[i], rng.getrandbits(32)))

    start = time.monotonic()
    pids = [fork(i) for i in range(CV_WORKERS)]
    try:
        for _ in range(ROUNDS):
            since = _rd(mm, CV_WAKES)
            _until(_at_least(mm, (CV_WAKES,), since + 10), lambda: "no progress")
            before = lock.statistics().owner_died
            time.sleep(rng.uniform(0.0, 0.003))
            # A quarter of the rounds aim at a notifier inside notify (a short
            # window that random kills rarely hit).
            aimed = _aim(mm, CV_PHASE, CV_WORKERS, CV_IN_NOTIFY) if rng.random() < 0.25 else None
            if aimed is not None:
                _kill(pids[aimed])
                victims = [aimed]
            else:
                victims = _kill_victims(pids, rng, 2)
            kills += len(victims)
            phases = [_rd(mm, CV_PHASE + v) for v in victims]
            for v, phase in zip(victims, phases, strict=True):
                died_in[phase] += 1
                _wr(mm, CV_PHASE + v, 0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ok = cond.acquire(timeout=5)
                assert ok, "condition lock wedged after the kills"
            assert not _rd(mm, CV_MISSED), "a worker found a death nobody was told about"
            assert not _rd(mm, CV_LOST), "a waiting waiter was never notified"
            a, b = _rd(mm, CV_A), _rd(mm, CV_B)
            if lock.owner_died:
                assert any(issubclass(c.category, il.OwnerDied) for c in caught)
                seen_by_test += 1
                _wr(mm, CV_B, a)
                lock.recovered()
            else:
                assert a == b, "the lock's holder died mid-section and nobody was told"
            if CV_IN_SECTION in phases or CV_IN_NOTIFY in phases:
                assert lock.statistics().owner_died > before, "a lock owner's death went unreported"
            gen = _rd(mm, CV_GEN) + 1
            _wr(mm, CV_GEN, gen)
            cond.notify_all()
            # Nobody can register while we hold the lock: every entry was
            # notified, or freed because its waiter is dead.
            assert cond._waiters() == 0, "a dead waiter's entry survived notify_all"
            cond.release()
            for i in range(CV_WORKERS):  # every surviving waiter wakes (or never slept)
                if roles[i] and i not in victims:
                    _until(
                        _at_least(mm, (CV_SEEN + i,), gen),
                        lambda: f"a surviving waiter was not woken (lost: {_rd(mm, CV_LOST)})",
                    )
            assert not _rd(mm, CV_LOST), "a waiting waiter was never notified"
            _alive_or_fail(pids, victims)
            for v in victims:
                pids[v] = fork(v)
        # Stop everyone: each one must see it and leave cleanly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", il.OwnerDied)  # the flag is checked
            ok = cond.acquire(timeout=5)
            assert ok
        if lock.owner_died:
            _wr(mm, CV_B, _rd(mm, CV_A))
            lock.recovered()
        _wr(mm, CV_STOP, 1)
        cond.notify_all()
        cond.release()
        for i, pid in enumerate(pids):
            assert _exit_code(pid, 5.0) == 0 and _rd(mm, CV_STOPPED + i) == 1
        elapsed = time.monotonic() - start
        assert not _rd(mm, CV_LOST) and not _rd(mm, CV_MISSED)
        assert _rd(mm, CV_A) == _rd(mm, CV_B)
        assert cond.acquire(timeout=5)
        assert not lock.owner_died and cond._waiters() == 0
        cond.release()
        stats = lock.statistics()
        assert stats.holder_pid == 0 and not lock.locked()
        repairs = _rd(mm, CV_REPAIRS)
        print(
            f"Condition: {ROUNDS} rounds, {kills} kills (in the section {died_in[CV_IN_SECTION]}, "
            f"in notify {died_in[CV_IN_NOTIFY]}, in wait {died_in[CV_IN_WAIT]}), "
            f"{_rd(mm, CV_GEN)} notifier passes, {_rd(mm, CV_WAKES)} waiter wake-ups; "
            f"lock owner deaths reported: {seen_by_test} to the test + {repairs} to workers "
            f"(counter {stats.owner_died}), {elapsed:.1f} s"
        )
        assert stats.owner_died >= seen_by_test + repairs > 0
        assert died_in[CV_IN_SECTION] and died_in[CV_IN_NOTIFY] and died_in[CV_IN_WAIT]
        assert elapsed < BUDGET
    finally:
        cond.close()
        lock.close()
        mm.close()


# ---------------------------------------------------------------------------
# Event
# ---------------------------------------------------------------------------

# Fields: lost (a waiter's wait timed out), pause (the clearers stop clearing
# while it is non-zero); per worker i (its own counts: two workers may share a
# role, so a shared count would be a racy read-modify-write): ack (the pause
# value it obeys), wakes (its wait() returns), sets, clears.
EV_LOST, EV_PAUSE = 0, 1
EV_ACK, EV_WAKES_I, EV_SETS_I, EV_CLEARS_I = 8, 12, 16, 20  # 4 slots each
EV_SETTER, EV_CLEARER, EV_WAITER = 0, 1, 2
EV_WORKERS = 4


def _ev_worker(name: str, mm: mmap.mmap, index: int, role: int, seed: int) -> Callable[[], None]:
    def body() -> None:
        ev = il.Event(name, create=False)
        rng = random.Random(seed)
        while True:
            if role == EV_SETTER:
                ev.set()
                _bump(mm, EV_SETS_I + index)
            elif role == EV_CLEARER:
                pause = _rd(mm, EV_PAUSE)
                if pause:
                    _wr(mm, EV_ACK + index, pause)  # no clear() until pause is 0
                    time.sleep(0.0005)
                    continue
                ev.clear()
                _bump(mm, EV_CLEARS_I + index)
            else:
                if not ev.wait(timeout=10):
                    _wr(mm, EV_LOST, 1)
                    os._exit(4)
                _bump(mm, EV_WAKES_I + index)
            if rng.random() < 0.5:
                os.sched_yield()

    return body


def test_killed_event_users_200(name: str) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    ev = il.Event(name)
    mm = _area()
    killed = [0, 0, 0]
    roles = [EV_SETTER, EV_CLEARER, EV_WAITER, rng.randrange(3)]

    def fork(i: int) -> int:
        return _fork(_ev_worker(name, mm, i, roles[i], rng.getrandbits(32)))

    def total(base: int) -> int:
        return sum(_rd(mm, base + i) for i in range(EV_WORKERS))

    wakes = tuple(range(EV_WAKES_I, EV_WAKES_I + EV_WORKERS))

    start = time.monotonic()
    pids = [fork(i) for i in range(EV_WORKERS)]
    try:
        for rnd in range(1, ROUNDS + 1):
            since = total(EV_WAKES_I)
            _until(_at_least(mm, wakes, since + 10), lambda: "no progress")
            time.sleep(rng.uniform(0.0, 0.003))
            victims = _kill_victims(pids, rng, 2)
            for v in victims:
                killed[roles[v]] += 1
            assert not _rd(mm, EV_LOST), "a waiter timed out"
            # Pause the surviving clearers (each acknowledges), then set: every
            # surviving waiter must get through wait(), twice.
            _wr(mm, EV_PAUSE, rnd)
            for i in range(EV_WORKERS):
                if roles[i] == EV_CLEARER and i not in victims:
                    _until(_at_least(mm, (EV_ACK + i,), rnd), lambda: "a clearer hung")
            ev.set()
            assert ev.is_set()
            for i in range(EV_WORKERS):
                if roles[i] == EV_WAITER and i not in victims:
                    got = _rd(mm, EV_WAKES_I + i)
                    _until(
                        _at_least(mm, (EV_WAKES_I + i,), got + 2),
                        lambda: "a waiter stayed asleep on a set event (lost wake-up)",
                    )
            assert ev.is_set() and ev.wait(timeout=0)
            _alive_or_fail(pids, victims)
            _wr(mm, EV_PAUSE, 0)
            for v in victims:
                pids[v] = fork(v)
        for pid in pids:
            _kill(pid)
        elapsed = time.monotonic() - start
        assert not _rd(mm, EV_LOST)
        ev.clear()
        assert not ev.is_set() and not ev.wait(timeout=0)
        ev.set()
        assert ev.is_set() and ev.wait(timeout=0)
        print(
            f"Event: {ROUNDS} rounds, {total(EV_SETS_I)} sets, {total(EV_CLEARS_I)} clears, "
            f"{total(EV_WAKES_I)} wake-ups; killed {killed[EV_SETTER]} setters, "
            f"{killed[EV_CLEARER]} clearers, {killed[EV_WAITER]} waiters, {elapsed:.1f} s"
        )
        assert elapsed < BUDGET
    finally:
        with contextlib.suppress(il.InterlinkError):
            ev.close()
        mm.close()
