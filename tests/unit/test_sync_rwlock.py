"""RWLock within one process: API, threads, timeouts, statistics, pickling."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import interlink as il


@pytest.fixture
def rw() -> Iterator[il.RWLock]:
    lock = il.RWLock()
    yield lock
    lock.close()


def _wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_readers_share_between_threads(rw: il.RWLock) -> None:
    both_in = threading.Barrier(3, timeout=10)

    def reader() -> None:
        with rw.read():
            both_in.wait()  # only passes if both readers hold at the same time
            both_in.wait()

    ts = [threading.Thread(target=reader) for _ in range(2)]
    for t in ts:
        t.start()
    both_in.wait()
    st = rw.statistics()
    assert st.readers == 2 and st.held == 2 and st.writer_pid == 0
    assert rw.acquire_write(blocking=False) is False
    both_in.wait()
    for t in ts:
        t.join(10)
    assert rw.statistics().readers == 0


def test_writer_excludes_readers_and_writers(rw: il.RWLock) -> None:
    assert rw.acquire_write()
    results: list[bool] = []

    def other() -> None:
        results.append(rw.acquire_read(timeout=0.05))
        results.append(rw.acquire_write(timeout=0.05))

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert results == [False, False]
    st = rw.statistics()
    assert st.writer_pid > 0 and st.writer_tid > 0
    rw.release_write()
    assert rw.acquire_read(blocking=False)
    rw.release_read()


def test_blocked_reader_enters_when_writer_leaves(rw: il.RWLock) -> None:
    rw.acquire_write()
    got: list[float] = []

    def reader() -> None:
        if rw.acquire_read(timeout=10):
            got.append(time.monotonic())
            rw.release_read()

    t = threading.Thread(target=reader)
    t.start()
    _wait_until(lambda: rw.statistics().waiting_readers == 1)
    released = time.monotonic()
    rw.release_write()
    t.join(10)
    assert got and got[0] - released < 0.5


def test_waiting_writer_blocks_new_readers(rw: il.RWLock) -> None:
    assert rw.acquire_read()
    order: list[str] = []

    def writer() -> None:
        with rw.write(timeout=10):
            order.append("writer")

    def reader() -> None:
        with rw.read(timeout=10):
            order.append("reader")

    w = threading.Thread(target=writer)
    w.start()
    _wait_until(lambda: rw.statistics().writer_tid != 0)
    # A writer waits: new readers (even non-blocking ones) stay out.
    assert rw.acquire_read(blocking=False) is False
    r = threading.Thread(target=reader)
    r.start()
    _wait_until(lambda: rw.statistics().waiting_readers == 1)
    rw.release_read()
    w.join(10)
    r.join(10)
    assert order == ["writer", "reader"]


def test_timeouts(rw: il.RWLock) -> None:
    rw.acquire_write()
    out: list[object] = []

    def other() -> None:
        t0 = time.monotonic()
        out.append(rw.acquire_read(timeout=0.1))
        out.append(time.monotonic() - t0)
        try:
            with rw.write(timeout=0.05):
                pass
        except il.Timeout:
            out.append("timeout")

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert out[0] is False and 0.09 <= out[1] < 2.0  # type: ignore[operator]
    assert out[2] == "timeout"
    rw.release_write()
    # A writer that timed out draining leaves the lock usable.
    holding, leave = threading.Event(), threading.Event()

    def reader() -> None:
        with rw.read():
            holding.set()
            leave.wait(10)

    r = threading.Thread(target=reader)
    r.start()
    assert holding.wait(10)
    assert rw.acquire_write(timeout=0.05) is False
    leave.set()
    r.join(10)
    assert rw.acquire_write(timeout=1)
    rw.release_write()


def test_upgrade_is_a_deadlock_error(rw: il.RWLock) -> None:
    assert rw.acquire_read()
    with pytest.raises(il.DeadlockError, match="no upgrade") as info:
        rw.acquire_write(timeout=5)
    assert info.value.cycle[0]["me"] is True  # type: ignore[attr-defined]
    with pytest.raises(il.DeadlockError), rw.write():
        pass
    assert rw.acquire_write(blocking=False) is False  # a try never waits: just False
    st = rw.statistics()
    assert st.readers == 1 and st.writer_pid == 0  # nothing left behind
    rw.release_read()
    assert rw.acquire_write(timeout=1)
    rw.release_write()


def test_upgrade_waits_with_detection_off(name: str) -> None:
    rw = il.RWLock(name, deadlock_detection=False)
    try:
        assert rw.deadlock_detection is False
        assert rw.acquire_read()
        assert rw.acquire_write(timeout=0.05) is False
        rw.release_read()
    finally:
        rw.close()
    before = il.get_deadlock_detection()
    il.set_deadlock_detection(False)
    rw = il.RWLock()
    try:
        assert rw.acquire_read()
        assert rw.acquire_write(timeout=0.05) is False
        rw.release_read()
    finally:
        il.set_deadlock_detection(before)
        rw.close()


def test_read_side_released_by_its_thread_only(rw: il.RWLock) -> None:
    assert rw.acquire_read()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            rw.release_read()
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert len(errors) == 1
    assert rw.statistics().readers == 1
    rw.release_read()
    assert rw.statistics().readers == 0


def test_pickle_keeps_deadlock_switch(name: str) -> None:
    for flag in (False, True):
        rw = il.RWLock(f"{name}-{flag}", deadlock_detection=flag)
        copy = pickle.loads(pickle.dumps(rw))
        try:
            assert copy.deadlock_detection is flag
        finally:
            copy.close()
            rw.close()


def test_argument_spellings_and_errors(rw: il.RWLock) -> None:
    assert rw.acquire_read(block=False)
    rw.release_read()
    assert rw.acquire_write(True, None)
    rw.release_write()
    with pytest.raises(ValueError):
        rw.acquire_read(False, 1)
    with pytest.raises(RuntimeError):
        rw.release_read()
    with pytest.raises(RuntimeError):
        rw.release_write()


def test_named_open_share_and_pickle(name: str) -> None:
    a = il.RWLock(name)
    b = il.RWLock(name, create=False)
    c = pickle.loads(pickle.dumps(a))
    try:
        assert a.acquire_write()
        assert b.acquire_read(blocking=False) is False
        assert c.acquire_write(blocking=False) is False
        a.release_write()
        with b.read(), c.read():
            assert a.statistics().readers == 2
        assert "RWLock" in repr(a) and a.name == name
        st = a.statistics()
        assert st.read_acquisitions == 2 and st.write_acquisitions == 1
    finally:
        for x in (a, b, c):
            x.close()
    with pytest.raises(il.Closed):
        a.acquire_read()


def test_close_gives_back_read_holds(name: str) -> None:
    a = il.RWLock(name)
    b = il.RWLock(name, create=False)
    try:
        assert b.acquire_read()
        b.close()
        assert a.acquire_write(timeout=1)
        a.release_write()
    finally:
        a.close()


def test_many_threads_mixed(rw: il.RWLock) -> None:
    state = {"writers": 0, "readers": 0, "bad": 0, "count": 0}
    guard = threading.Lock()

    def work(i: int) -> None:
        for j in range(300):
            if (i + j) % 4 == 0:
                with rw.write():
                    if state["writers"] or state["readers"]:
                        state["bad"] += 1
                    state["writers"] += 1
                    state["count"] += 1
                    state["writers"] -= 1
            else:
                with rw.read():
                    with guard:
                        state["readers"] += 1
                        if state["writers"]:
                            state["bad"] += 1
                    with guard:
                        state["readers"] -= 1

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert state["bad"] == 0
    assert state["count"] == 300


@pytest.mark.parametrize("second", ["read", "write"])
def test_writer_asking_again_is_a_deadlock(rw: il.RWLock, second: str) -> None:
    """A thread holding the write side that asks for a read side (or for the
    write side again) waits for itself: deadlock detection reports it."""
    assert rw.acquire_write()
    t0 = time.monotonic()
    try:
        with pytest.raises(il.DeadlockError) as info:
            (rw.acquire_read if second == "read" else rw.acquire_write)(timeout=10)
        assert time.monotonic() - t0 < 5.0  # reported, not timed out
        cycle = info.value.cycle  # type: ignore[attr-defined]
        assert len(cycle) == 1 and cycle[0]["wait"] == second and cycle[0]["me"]
    finally:
        rw.release_write()
    assert rw.statistics().waiting_readers == 0 and rw.statistics().waiting_writers == 0
    assert rw.acquire_read(timeout=1)
    rw.release_read()
