"""Deadlock detection for Lock and RLock across processes and threads.

Children are driven over pipes (mp_helpers.Child): every wait is bounded and
every step is synchronized on a line from the other side, never on a sleep.
Run with ``-s`` to see the measured detection latencies.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from mp_helpers import Spawn, wait_until

import interlink as il
from interlink import _deadlock

# Child i holds locks[i] and then waits for locks[(i + 1) % n]: a cycle of n.
CYCLE_MEMBER = """
kind, first, second = sys.argv[1:4]
cls = il.RLock if kind == "rlock" else il.Lock
a, b = cls(first), cls(second)
a.acquire()
if kind == "rlock":
    a.acquire()  # re-entry: depth 2, still one holder
say("held", os.getpid())
hear()
t0 = time.monotonic()
try:
    ok = b.acquire(timeout=10)
    took = time.monotonic() - t0
    say("got" if ok else "timeout", f"{took:.4f}")
    if ok:
        b.release()
except il.DeadlockError as e:
    took = time.monotonic() - t0
    names = ",".join(sorted({c["waits_for"] for c in e.cycle}))
    pids = ",".join(sorted({str(c["pid"]) for c in e.cycle}))
    say("deadlock", f"{took:.4f}", names, pids, str(e).replace(" ", "_"))
if kind == "rlock":
    a.release()
a.release()  # the victim backs off: the others proceed
hear()
"""


@pytest.mark.parametrize(("n", "kind"), [(2, "lock"), (2, "rlock"), (3, "lock")])
def test_cycle_across_processes(spawn: Spawn, name: str, n: int, kind: str) -> None:
    names = [f"{name}-{i}" for i in range(n)]
    children = [spawn(CYCLE_MEMBER, kind, names[i], names[(i + 1) % n]) for i in range(n)]
    pids = [int(c.expect("held")[0]) for c in children]
    for c in children:
        c.tell("go")
    results = [c.readline(timeout=15).split() for c in children]
    for c in children:
        c.tell("bye")
        assert c.wait() == 0, c.stderr()
    victims = [r for r in results if r[0] == "deadlock"]
    assert len(victims) == 1, results
    others = [r for r in results if r[0] != "deadlock"]
    assert all(r[0] == "got" for r in others), results
    took, cycle_names, cycle_pids = float(victims[0][1]), victims[0][2], victims[0][3]
    print(f"{n}-way {kind} cycle across processes: DeadlockError after {took * 1e3:.0f} ms")
    assert took < 1.0
    assert cycle_names == ",".join(sorted(names))
    assert cycle_pids == ",".join(sorted(str(p) for p in pids))


def _thread_cycle(
    locks: list[Any], timeout: float = 10.0
) -> dict[int, tuple[str, float, str, list[dict[str, object]]]]:
    """Thread i holds locks[i] and waits for locks[i+1]; returns what each saw."""
    n = len(locks)
    barrier = threading.Barrier(n)
    out: dict[int, tuple[str, float, str, list[dict[str, object]]]] = {}

    def member(i: int) -> None:
        mine, wanted = locks[i], locks[(i + 1) % n]
        mine.acquire()
        try:
            barrier.wait(10)
            t0 = time.monotonic()
            try:
                ok = wanted.acquire(timeout=timeout)
                out[i] = ("got" if ok else "timeout", time.monotonic() - t0, "", [])
                if ok:
                    wanted.release()
            except il.DeadlockError as e:
                out[i] = ("deadlock", time.monotonic() - t0, str(e), e.cycle)
        finally:
            mine.release()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return out


@pytest.mark.parametrize("kind", ["lock", "rlock"])
def test_cycle_across_threads(name: str, kind: str) -> None:
    cls = il.RLock if kind == "rlock" else il.Lock
    locks = [cls(f"{name}-a"), cls(f"{name}-b")]
    try:
        out = _thread_cycle(locks)
    finally:
        for lock in locks:
            lock.close()
    kinds = sorted(v[0] for v in out.values())
    assert kinds == ["deadlock", "got"], out
    (victim,) = [v for v in out.values() if v[0] == "deadlock"]
    print(f"2-way {kind} cycle across threads: DeadlockError after {victim[1] * 1e3:.0f} ms")
    assert victim[1] < 1.0
    assert f"{name}-a" in victim[2] and f"{name}-b" in victim[2]
    assert {c["pid"] for c in victim[3]} == {os.getpid()}
    assert len({c["tid"] for c in victim[3]}) == 2


RLOCK_WAITER = """
held_name, wanted_name = sys.argv[1:3]
held, wanted = il.RLock(held_name), il.RLock(wanted_name)
held.acquire()
say("ready")
try:
    ok = wanted.acquire(timeout=10)
    say("got" if ok else "timeout")
    wanted.release()
except il.DeadlockError as e:
    say("deadlock", str(e).replace(" ", "_"))
held.release()
hear()
"""


def test_rlock_reentry_is_not_a_cycle(spawn: Spawn, name: str) -> None:
    """We hold R and re-enter it while a child that holds S waits for R."""
    r = il.RLock(f"{name}-r")
    s = il.RLock(f"{name}-s")
    try:
        r.acquire()
        child = spawn(RLOCK_WAITER, f"{name}-s", f"{name}-r")
        child.expect("ready")
        wait_until(lambda: r.statistics().waiters >= 1, 10, "the child to queue on R")
        # The child's wait passes the threshold and publishes what it waits for.
        entries = _deadlock._registry()
        wait_until(
            lambda: entries.is_dir() and any(True for _ in entries.iterdir()),
            10,
            "the child's wait to reach the detector",
        )
        for _ in range(3):  # re-entries while the child's checks run
            assert r.acquire(timeout=1)
        time.sleep(3 * _deadlock.CHECK_EVERY)  # a window for several checks, not a sync
        assert s.locked()  # the child holds S and still waits for R
        for _ in range(3):
            r.release()
        r.release()
        assert child.readline(timeout=10) == "got"
        child.tell("bye")
        assert child.wait() == 0, child.stderr()
    finally:
        r.close()
        s.close()


def test_detection_off_per_object(name: str) -> None:
    locks = [
        il.Lock(f"{name}-a", deadlock_detection=False),
        il.Lock(f"{name}-b", deadlock_detection=False),
    ]
    assert locks[0].deadlock_detection is False
    try:
        out = _thread_cycle(locks, timeout=0.5)
    finally:
        for lock in locks:
            lock.close()
    assert sorted(v[0] for v in out.values()) in (["timeout", "timeout"], ["got", "timeout"])


def test_detection_off_globally(name: str) -> None:
    before = il.get_deadlock_detection()
    il.set_deadlock_detection(False)
    assert il.get_deadlock_detection() is False
    try:
        locks = [il.Lock(f"{name}-a"), il.Lock(f"{name}-b")]
        try:
            out = _thread_cycle(locks, timeout=0.5)
        finally:
            for lock in locks:
                lock.close()
    finally:
        il.set_deadlock_detection(before)
    assert sorted(v[0] for v in out.values()) in (["timeout", "timeout"], ["got", "timeout"])


def test_detection_off_by_environment() -> None:
    code = "import interlink as il; print(il.get_deadlock_detection())"
    for value, expect in (("0", "False"), ("off", "False"), ("1", "True")):
        env = dict(os.environ, **{_deadlock.ENV_VAR: value})
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
        )
        assert out.stdout.strip() == expect, out.stderr


STRESS = """
names = sys.argv[1].split(",")
seconds, seed = float(sys.argv[2]), int(sys.argv[3])
from interlink import _deadlock
rng = random.Random(seed)
locks = [il.Lock(n) for n in names]
say("ready")
hear()
end = time.monotonic() + seconds
iterations = errors = 0
while time.monotonic() < end:
    subset = sorted(rng.sample(range(len(locks)), rng.randint(1, len(locks))))
    taken = []
    try:
        for i in subset:  # always in the global order: never a cycle
            assert locks[i].acquire(timeout=30)
            taken.append(i)
        if rng.random() < 0.005:
            time.sleep(rng.uniform(0.15, 0.3))  # long holds: waits pass the threshold
    except il.DeadlockError as e:
        errors += 1
        say("deadlock", str(e).replace(" ", "_"))
    finally:
        for i in reversed(taken):
            locks[i].release()
    iterations += 1
say("done", iterations, errors, _deadlock.stats["checks"])
hear()
"""


def test_no_false_positive_under_contention(spawn: Spawn, name: str) -> None:
    names = ",".join(f"{name}-{i}" for i in range(4))
    children = [spawn(STRESS, names, "8", str(seed)) for seed in range(8)]
    for c in children:
        c.expect("ready", timeout=30)
    for c in children:
        c.tell("go")
    total_iter = total_checks = 0
    for c in children:
        line = c.readline(timeout=60).split()
        assert line[0] == "done", f"false positive: {line}"
        iterations, errors, checks = map(int, line[1:])
        assert errors == 0
        total_iter += iterations
        total_checks += checks
    for c in children:
        c.tell("bye")
        assert c.wait() == 0, c.stderr()
    print(f"stress: {total_iter} lock-set acquisitions, {total_checks} detector runs, no error")
    assert total_checks > 0  # the detector did run (waits passed the threshold)


def test_per_object_switch_survives_pickling(name: str) -> None:
    import pickle

    for flag in (False, True):
        lock = il.RLock(f"{name}-{flag}", deadlock_detection=flag)
        try:
            copy = pickle.loads(pickle.dumps(lock))
            try:
                assert copy.deadlock_detection is flag
                assert type(copy) is il.RLock
            finally:
                copy.close()
        finally:
            lock.close()


# ---------------------------------------------------------------------------
# RWLock: read/write cycles, mixed with Lock, re-entrant read, upgrade.

# A member holds (hold_kind, hold_name) and then asks for (want_kind,
# want_name); kinds: lock, read, write (the last two on an RWLock).
RW_MEMBER = """
hold_kind, hold_name, want_kind, want_name = sys.argv[1:5]

def obj(kind, name):
    return il.Lock(name) if kind == "lock" else il.RWLock(name)

def take(kind, o, timeout):
    if kind == "lock":
        return o.acquire(timeout=timeout)
    return (o.acquire_read if kind == "read" else o.acquire_write)(timeout=timeout)

def give(kind, o):
    if kind == "lock":
        o.release()
    else:
        (o.release_read if kind == "read" else o.release_write)()

held, wanted = obj(hold_kind, hold_name), obj(want_kind, want_name)
assert take(hold_kind, held, 10)
say("held", os.getpid())
hear()
t0 = time.monotonic()
try:
    ok = take(want_kind, wanted, 10)
    say("got" if ok else "timeout", f"{time.monotonic() - t0:.4f}")
    if ok:
        give(want_kind, wanted)
except il.DeadlockError as e:
    took = time.monotonic() - t0
    names = ",".join(sorted({c["waits_for"] for c in e.cycle}))
    pids = ",".join(sorted({str(c["pid"]) for c in e.cycle}))
    say("deadlock", f"{took:.4f}", names, pids, str(e).replace(" ", "_"))
give(hold_kind, held)  # the victim backs off: the others proceed
hear()
"""


def _run_members(
    spawn: Spawn, members: list[tuple[str, str, str, str]]
) -> tuple[list[list[str]], list[int]]:
    children = [spawn(RW_MEMBER, *m) for m in members]
    pids = [int(c.expect("held", timeout=30)[0]) for c in children]
    for c in children:
        c.tell("go")
    results = [c.readline(timeout=15).split() for c in children]
    for c in children:
        c.tell("bye")
        assert c.wait() == 0, c.stderr()
    return results, pids


def _one_victim(results: list[list[str]], names: list[str], pids: list[int], what: str) -> None:
    victims = [r for r in results if r[0] == "deadlock"]
    assert len(victims) == 1, results
    assert all(r[0] == "got" for r in results if r[0] != "deadlock"), results
    took, cycle_names, cycle_pids = float(victims[0][1]), victims[0][2], victims[0][3]
    print(f"{what}: DeadlockError after {took * 1e3:.0f} ms")
    assert took < 1.0
    assert cycle_names == ",".join(sorted(set(names)))
    assert cycle_pids == ",".join(sorted(str(p) for p in pids))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("n", "hold", "want"), [(2, "read", "write"), (2, "write", "read"), (3, "read", "write")]
)
def test_rwlock_cycle_across_processes(
    spawn: Spawn, name: str, n: int, hold: str, want: str
) -> None:
    """Member i holds a side of RWLock i and asks for the other side of RWLock i+1."""
    names = [f"{name}-{i}" for i in range(n)]
    members = [(hold, names[i], want, names[(i + 1) % n]) for i in range(n)]
    results, pids = _run_members(spawn, members)
    _one_victim(results, names, pids, f"{n}-way RWLock {hold}->{want} cycle across processes")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "members",
    [
        # A holds Lock L and asks to write RW; B reads RW and asks for L.
        [("lock", "L", "write", "RW"), ("read", "RW", "lock", "L")],
        # A writes RW and asks for L; B holds L and asks to read RW.
        [("write", "RW", "lock", "L"), ("lock", "L", "read", "RW")],
        # Three members: Lock -> RWLock write -> RWLock read -> Lock.
        [
            ("lock", "L", "write", "RW"),
            ("read", "RW", "write", "RW2"),
            ("read", "RW2", "lock", "L"),
        ],
    ],
    ids=["lock-write", "write-read-lock", "3-way-mixed"],
)
def test_mixed_rwlock_lock_cycle(
    spawn: Spawn, name: str, members: list[tuple[str, str, str, str]]
) -> None:
    named = [(h, f"{name}-{hn}", w, f"{name}-{wn}") for h, hn, w, wn in members]
    results, pids = _run_members(spawn, named)
    _one_victim(results, [m[3] for m in named], pids, f"{len(members)}-way mixed cycle")


REENTRANT_READER = """
rw = il.RWLock(sys.argv[1])
assert rw.acquire_read(timeout=10)
say("reading")
hear()
t0 = time.monotonic()
try:
    ok = rw.acquire_read(timeout=10)
    say("got" if ok else "timeout")
    if ok:
        rw.release_read()
except il.DeadlockError as e:
    say("deadlock", f"{time.monotonic() - t0:.4f}", str(e).replace(" ", "_"))
rw.release_read()
hear()
"""

WRITER = """
rw = il.RWLock(sys.argv[1])
say("ready")
hear()
try:
    ok = rw.acquire_write(timeout=10)
    say("got" if ok else "timeout")
    if ok:
        rw.release_write()
except il.DeadlockError as e:
    say("deadlock", str(e).replace(" ", "_"))
hear()
"""


@pytest.mark.timeout(60)
def test_reentrant_read_behind_waiting_writer(spawn: Spawn, name: str) -> None:
    """The reader that asks for a second read side while a writer waits for its
    first one is the one told (not the writer), and the writer then gets in."""
    rw = il.RWLock(name)
    try:
        reader = spawn(REENTRANT_READER, name)
        reader.expect("reading", timeout=30)
        writer = spawn(WRITER, name)
        writer.expect("ready", timeout=30)
        writer.tell("go")
        # The writer holds the write side's turn and drains the reader.
        wait_until(lambda: rw.statistics().writer_pid == writer.pid, 10, "the writer to queue")
        reader.tell("go")
        line = reader.readline(timeout=15).split()
        assert line[0] == "deadlock", line
        print(f"re-entrant read behind a writer: DeadlockError after {float(line[1]) * 1e3:.0f} ms")
        assert float(line[1]) < 1.0
        assert "second_read_side" in line[2]
        assert writer.readline(timeout=15) == "got"
        for c in (reader, writer):
            c.tell("bye")
            assert c.wait() == 0, c.stderr()
    finally:
        rw.close()


UPGRADER = """
rw = il.RWLock(sys.argv[1])
assert rw.acquire_read(timeout=10)
t0 = time.monotonic()
try:
    ok = rw.acquire_write(timeout=10)
    say("got" if ok else "timeout")
except il.DeadlockError as e:
    say("deadlock", f"{time.monotonic() - t0:.4f}", e.cycle[0]["pid"] == os.getpid())
rw.release_read()
say("released")
hear()
"""


@pytest.mark.timeout(60)
def test_upgrade_self_deadlock_in_a_process(spawn: Spawn, name: str) -> None:
    rw = il.RWLock(name)
    try:
        child = spawn(UPGRADER, name)
        line = child.expect("deadlock", timeout=15)
        assert float(line[0]) < 1.0 and line[1] == "True"
        child.expect("released")
        assert rw.acquire_write(timeout=10)  # nothing left behind
        rw.release_write()
        child.tell("bye")
        assert child.wait() == 0, child.stderr()
    finally:
        rw.close()


def test_upgrade_through_a_second_handle(name: str) -> None:
    """Read through one handle, write through another of the same RWLock: the
    wait-for graph finds the thread waiting for itself."""
    a = il.RWLock(name)
    b = il.RWLock(name, create=False)
    try:
        assert a.acquire_read()
        t0 = time.monotonic()
        with pytest.raises(il.DeadlockError, match="no upgrade") as info:
            b.acquire_write(timeout=10)
        took = time.monotonic() - t0
        print(f"upgrade through a second handle: DeadlockError after {took * 1e3:.0f} ms")
        assert took < 1.0
        cycle = info.value.cycle  # type: ignore[attr-defined]
        assert len(cycle) == 1 and cycle[0]["wait"] == "write" and cycle[0]["me"]
        assert a.statistics().writer_pid == 0  # the write side was given back
        a.release_read()
        assert b.acquire_write(timeout=10)
        b.release_write()
    finally:
        a.close()
        b.close()


def test_rwlock_cycle_across_threads(name: str) -> None:
    a, b = il.RWLock(f"{name}-a"), il.RWLock(f"{name}-b")
    barrier = threading.Barrier(2)
    out: dict[int, tuple[str, float, list[dict[str, object]]]] = {}

    def member(i: int, mine: il.RWLock, wanted: il.RWLock) -> None:
        assert mine.acquire_write(timeout=10)
        try:
            barrier.wait(10)
            t0 = time.monotonic()
            try:
                ok = wanted.acquire_read(timeout=10)
                out[i] = ("got" if ok else "timeout", time.monotonic() - t0, [])
                if ok:
                    wanted.release_read()
            except il.DeadlockError as e:
                out[i] = ("deadlock", time.monotonic() - t0, e.cycle)
        finally:
            mine.release_write()

    threads = [
        threading.Thread(target=member, args=(0, a, b)),
        threading.Thread(target=member, args=(1, b, a)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
            assert not t.is_alive()
    finally:
        a.close()
        b.close()
    assert sorted(v[0] for v in out.values()) == ["deadlock", "got"], out
    (victim,) = [v for v in out.values() if v[0] == "deadlock"]
    assert victim[1] < 1.0
    assert {c["wait"] for c in victim[2]} == {"read"}
    assert len({c["tid"] for c in victim[2]}) == 2


def test_long_read_hold_is_not_a_deadlock(name: str) -> None:
    """A writer waits for a reader that is busy (not blocked), and for one that
    is blocked on a Lock held by a busy thread: no cycle, nobody raises."""
    rw = il.RWLock(name)
    lock = il.Lock(f"{name}-l")
    reading = threading.Barrier(3)
    lock.acquire()
    errors: list[BaseException] = []

    def busy_reader() -> None:
        with rw.read():
            reading.wait(10)
            time.sleep(6 * _deadlock.CHECK_EVERY)  # busy while the writer's checks run

    def blocked_reader() -> None:
        with rw.read():
            reading.wait(10)
            try:
                assert lock.acquire(timeout=10)
                lock.release()
            except il.DeadlockError as e:
                errors.append(e)

    threads = [threading.Thread(target=busy_reader), threading.Thread(target=blocked_reader)]
    for t in threads:
        t.start()
    try:
        reading.wait(10)
        before = _deadlock.stats["checks"]
        writer_result: list[object] = []

        def writer() -> None:
            try:
                writer_result.append(rw.acquire_write(timeout=10))
                rw.release_write()
            except il.DeadlockError as e:
                writer_result.append(e)

        w = threading.Thread(target=writer)
        w.start()
        threads[0].join(10)  # the busy reader leaves; the blocked one still waits
        assert _deadlock.stats["checks"] > before  # the detector did run meanwhile
        lock.release()
        w.join(10)
        for t in threads:
            t.join(10)
        assert writer_result == [True] and not errors
    finally:
        with contextlib.suppress(RuntimeError):
            lock.release()
        rw.close()
        lock.close()


STRESS_RW = """
import threading
names = sys.argv[1].split(",")
seconds, seed, nthreads = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
from interlink import _deadlock
# Every other object is an RWLock; the threads of this process share the
# handles (so read sides of one handle are held by several threads), and all
# take the objects in the global order: never a cycle.
objs = [il.RWLock(n) if i % 2 else il.Lock(n) for i, n in enumerate(names)]
say("ready")
hear()
end = time.monotonic() + seconds
counts = {"iterations": 0, "errors": 0}
guard = threading.Lock()

def worker(k):
    rng = random.Random(seed * 100 + k)
    while time.monotonic() < end:
        subset = sorted(rng.sample(range(len(objs)), rng.randint(1, len(objs))))
        taken = []
        try:
            for i in subset:
                o = objs[i]
                if i % 2 == 0:
                    assert o.acquire(timeout=30)
                    taken.append(o.release)
                elif rng.random() < 0.3:
                    assert o.acquire_write(timeout=30)
                    taken.append(o.release_write)
                else:
                    assert o.acquire_read(timeout=30)
                    taken.append(o.release_read)
            if rng.random() < 0.01:
                time.sleep(rng.uniform(0.15, 0.3))  # long holds: waits pass the threshold
        except il.DeadlockError as e:
            with guard:
                counts["errors"] += 1
            say("deadlock", str(e).replace(" ", "_"))
        finally:
            for release in reversed(taken):
                release()
        with guard:
            counts["iterations"] += 1

threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
say("done", counts["iterations"], counts["errors"], _deadlock.stats["checks"])
hear()
"""


@pytest.mark.timeout(120)
def test_no_false_positive_with_rwlocks(spawn: Spawn, name: str) -> None:
    names = ",".join(f"{name}-{i}" for i in range(4))
    # 4 processes x 2 threads: read sides of one handle held by several threads.
    children = [spawn(STRESS_RW, names, "8", str(seed), "2") for seed in range(4)]
    for c in children:
        c.expect("ready", timeout=30)
    for c in children:
        c.tell("go")
    total_iter = total_checks = 0
    for c in children:
        line = c.readline(timeout=90).split()
        assert line[0] == "done", f"false positive: {line}"
        iterations, errors, checks = map(int, line[1:])
        assert errors == 0
        total_iter += iterations
        total_checks += checks
    for c in children:
        c.tell("bye")
        assert c.wait() == 0, c.stderr()
    print(f"rw stress: {total_iter} lock-set acquisitions, {total_checks} detector runs, no error")
    assert total_checks > 0  # the detector did run (waits passed the threshold)
