"""Deadlock detection for Lock and RLock across processes and threads.

Children are driven over pipes (mp_helpers.Child): every wait is bounded and
every step is synchronized on a line from the other side, never on a sleep.
Run with ``-s`` to see the measured detection latencies.
"""

from __future__ import annotations

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
