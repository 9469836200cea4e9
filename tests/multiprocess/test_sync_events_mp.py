"""Event, Condition, Barrier across real processes: wake-ups, deaths, Ctrl-C."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import pytest
from mp_helpers import Spawn, wait_until

import interlink as il

pytestmark = pytest.mark.timeout(60)

EVENT_WAITER = """
ev = il.Event(sys.argv[1], create=False)
say("waiting")
say("woke", ev.wait(10))
"""


def test_event_set_wakes_other_processes(spawn: Spawn, name: str) -> None:
    ev = il.Event(name)
    try:
        kids = [spawn(EVENT_WAITER, name) for _ in range(2)]
        for k in kids:
            k.expect("waiting")
        ev.set()
        for k in kids:
            assert k.expect("woke") == ["True"]
            assert k.wait(10) == 0
    finally:
        ev.close()


COND_WAITER = """
cond = il.Condition(sys.argv[1], create=False)
with cond:
    say("waiting")
    say("woke", cond.wait(15))
"""


def test_condition_notify_and_notify_all_across_processes(spawn: Spawn, name: str) -> None:
    cond = il.Condition(name)
    try:
        kids = [spawn(COND_WAITER, name) for _ in range(3)]
        for k in kids:
            k.expect("waiting")
        wait_until(lambda: cond._waiters() == 3, 10, "three waiters")
        with cond:
            cond.notify()
        wait_until(lambda: cond._waiters() == 2, 10, "one waiter notified")
        with cond:
            cond.notify_all()
        for k in kids:
            assert k.expect("woke") == ["True"]
            assert k.wait(10) == 0
    finally:
        cond.close()


PRODUCER = """
cond = il.Condition(sys.argv[1], create=False)
fd = os.open(sys.argv[2], os.O_RDWR)
import mmap
mm = mmap.mmap(fd, 8)
for i in range(1, 51):
    with cond:
        struct.pack_into("<q", mm, 0, i)
        cond.notify_all()
say("done")
"""


def test_condition_producer_consumer_wait_for(spawn: Spawn, name: str, tmp_path: Path) -> None:
    import mmap
    import os
    import struct

    path = tmp_path / "value"
    path.write_bytes(b"\0" * 8)
    cond = il.Condition(name)
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, 8)
    try:
        with cond:
            child = spawn(PRODUCER, name, str(path))
            ok = cond.wait_for(lambda: struct.unpack_from("<q", mm, 0)[0] >= 50, 20)
            assert ok
        child.expect("done")
        with cond:
            assert cond.wait_for(lambda: False, 0.05) is False
    finally:
        mm.close()
        os.close(fd)
        cond.close()


NOTIFIER = """
cond = il.Condition(sys.argv[1], create=False)
cond.acquire()
say("held")
hear()
"""


def test_killed_notifier_and_dead_waiter_lose_no_wakeup(spawn: Spawn, name: str) -> None:
    cond = il.Condition(name)
    try:
        doomed = spawn(COND_WAITER, name)
        doomed.expect("waiting")
        wait_until(lambda: cond._waiters() == 1, 10, "the first waiter")
        live = [spawn(COND_WAITER, name) for _ in range(2)]
        for k in live:
            k.expect("waiting")
        wait_until(lambda: cond._waiters() == 3, 10, "three waiters")
        doomed.kill()  # the oldest waiter dies: it must not swallow a notify(1)
        doomed.wait(10)
        notifier = spawn(NOTIFIER, name)
        notifier.expect("held")
        notifier.kill()  # dies holding the condition's lock
        notifier.wait(10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", il.OwnerDied)
            with cond:
                cond.notify(1)
        # The dead waiter (oldest) was skipped: one live waiter left the wait.
        wait_until(lambda: cond._waiters() == 1, 10, "notify(1) to reach a live waiter")
        with cond:
            cond.notify()
        for k in live:
            assert k.expect("woke") == ["True"]
            assert k.wait(10) == 0
    finally:
        cond.close()


BARRIER_PARTY = """
path = sys.argv[3]
def action():
    with open(path, "a") as f:
        f.write("x")
b = il.Barrier(sys.argv[1], int(sys.argv[2]), action=action)
say("ready")
say("index", b.wait(15))
"""


def test_barrier_across_processes(spawn: Spawn, name: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.write_text("")

    def action() -> None:
        with marks.open("a") as f:
            f.write("x")

    b = il.Barrier(name, 4, action=action)
    try:
        kids = [spawn(BARRIER_PARTY, name, "4", str(marks)) for _ in range(3)]
        for k in kids:
            k.expect("ready")
        mine = b.wait(15)
        indices = [mine] + [int(k.expect("index")[0]) for k in kids]
        assert sorted(indices) == [0, 1, 2, 3]
        for k in kids:
            assert k.wait(10) == 0
        assert marks.read_text() == "x"
        assert not b.broken and b.n_waiting == 0
    finally:
        b.close()


BARRIER_WAITER = """
b = il.Barrier(sys.argv[1], int(sys.argv[2]), create=False)
say("waiting")
start = time.monotonic()
try:
    b.wait(20)
    say("passed")
except threading.BrokenBarrierError:
    say("broken", int((time.monotonic() - start) * 1000))
"""


def test_barrier_party_killed_breaks_it(spawn: Spawn, name: str) -> None:
    b = il.Barrier(name, 3)
    code = "import threading\n" + BARRIER_WAITER
    try:
        victim = spawn(code, name, "3")
        other = spawn(code, name, "3")
        victim.expect("waiting")
        other.expect("waiting")
        wait_until(lambda: b.n_waiting == 2, 10, "two parties waiting")
        victim.kill()
        killed = time.monotonic()
        other.expect("broken", timeout=5)
        took = time.monotonic() - killed
        print(f"barrier: dead party detected {took * 1e3:.0f} ms after kill -9")
        assert took < 1.5
        assert b.broken
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(1)
        b.reset()
        assert not b.broken and b.n_waiting == 0
    finally:
        b.close()


def test_barrier_timeout_and_abort_across_processes(spawn: Spawn, name: str) -> None:
    b = il.Barrier(name, 3)
    code = "import threading\n" + BARRIER_WAITER
    try:
        kid = spawn(code, name, "3")
        kid.expect("waiting")
        wait_until(lambda: b.n_waiting == 1, 10, "one party waiting")
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(0.1)  # the timeout breaks it for everyone
        kid.expect("broken", timeout=5)
        b.reset()
        kid2 = spawn(code, name, "3")
        kid2.expect("waiting")
        wait_until(lambda: b.n_waiting == 1, 10, "one party waiting")
        b.abort()
        kid2.expect("broken", timeout=5)
    finally:
        b.close()


INTERRUPTED = """
import threading
def on_alarm(signum, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, on_alarm)
kind = sys.argv[2]
if kind == "event":
    obj = il.Event(sys.argv[1], create=False)
else:
    obj = il.Barrier(sys.argv[1], create=False)
say("blocking")
signal.setitimer(signal.ITIMER_REAL, 0.3)
start = time.monotonic()
try:
    obj.wait()
    say("returned")
except KeyboardInterrupt:
    say("interrupted", int((time.monotonic() - start) * 1000))
"""


@pytest.mark.parametrize("kind", ["event", "barrier"])
def test_sigalrm_interrupts_blocked_wait(spawn: Spawn, name: str, kind: str) -> None:
    obj: il.Event | il.Barrier = il.Event(name) if kind == "event" else il.Barrier(name, 2)
    try:
        child = spawn(INTERRUPTED, name, kind)
        child.expect("blocking")
        (ms,) = child.expect("interrupted", timeout=10)
        assert 250 <= int(ms) < 1500
        assert child.wait(10) == 0
        if isinstance(obj, il.Barrier):
            assert obj.broken  # the interrupted party left: the barrier breaks
    finally:
        obj.close()
