"""Event, Condition, Barrier: threading semantics (threads of one process)."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

import interlink as il

pytestmark = pytest.mark.timeout(60)


def test_event_basics() -> None:
    e = il.Event()
    try:
        assert e.is_set() is False
        assert e.wait(0.02) is False
        e.set()
        assert e.is_set() is True
        assert e.wait() is True
        assert e.wait(0) is True
        e.clear()
        assert e.is_set() is False
        assert e.wait(timeout=0) is False
    finally:
        e.close()


def test_event_set_wakes_all_threads() -> None:
    e = il.Event()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(e.wait(10))) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.05)  # not required for correctness: waiters may also arrive after set
        e.set()
        for t in threads:
            t.join(10)
        assert results == [True] * 4
    finally:
        e.close()


def test_event_set_then_clear_still_wakes_waiter() -> None:
    e = il.Event()
    got: list[bool] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        got.append(e.wait(10))

    t = threading.Thread(target=waiter)
    try:
        t.start()
        started.wait()
        time.sleep(0.05)
        e.set()
        e.clear()
        t.join(10)
        assert got == [True]
    finally:
        e.close()


def test_named_event_shared_and_kind_checked(name: str) -> None:
    a = il.Event(name)
    b = il.Event(name, create=False)
    try:
        a.set()
        assert b.is_set()
        with pytest.raises(il.Incompatible):
            il.Lock(name, create=False)
        c = pickle.loads(pickle.dumps(a))
        assert c.is_set()
        c.close()
    finally:
        b.close()
        a.close()
    assert a.closed
    with pytest.raises(il.Closed):
        a.set()


def test_condition_requires_lock() -> None:
    c = il.Condition()
    try:
        with pytest.raises(RuntimeError):
            c.wait(0.01)
        with pytest.raises(RuntimeError):
            c.notify()
        with pytest.raises(RuntimeError):
            c.notify_all()
        with c:
            assert c.wait(0.02) is False
            assert c.wait_for(lambda: False, 0.02) is False
            assert c.wait_for(lambda: 5, 0.02) == 5
            c.notify()  # nobody waits: a no-op
        assert isinstance(c.lock, il.RLock)
    finally:
        c.close()


@pytest.mark.parametrize("lock_cls", [il.Lock, il.RLock])
def test_condition_with_given_lock(lock_cls: type[il.Lock]) -> None:
    lock = lock_cls()
    c = il.Condition(lock)
    items: list[int] = []
    got: list[object] = []

    def consumer() -> None:
        with c:
            got.append(c.wait_for(lambda: items, 10))

    t = threading.Thread(target=consumer)
    try:
        t.start()
        deadline = time.monotonic() + 10
        while c._waiters() < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        with c:
            if lock_cls is il.RLock:
                c.acquire()  # re-entrant depth 2 is fully released by wait
            items.append(1)
            c.notify()
            if lock_cls is il.RLock:
                c.release()
        t.join(10)
        assert got == [[1]]
        assert not lock.locked()
    finally:
        c.close()
        lock.close()


def test_condition_notify_n_and_all() -> None:
    c = il.Condition()
    woke: list[bool] = []
    threads = [threading.Thread(target=lambda: _wait_in(c, woke)) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        _until(lambda: c._waiters() == 4)
        with c:
            c.notify(2)
        _until(lambda: len(woke) == 2)
        assert c._waiters() == 2
        with c:
            c.notify_all()
        for t in threads:
            t.join(10)
        assert woke == [True] * 4
    finally:
        c.close()


def _wait_in(c: il.Condition, out: list[bool]) -> None:
    with c:
        out.append(c.wait(10))


def _until(cond: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_barrier_threads_indices_action_reuse() -> None:
    runs: list[int] = []
    b = il.Barrier(None, 3, action=lambda: runs.append(1))
    out: list[int] = []
    try:
        assert b.parties == 3 and b.n_waiting == 0 and not b.broken
        for _round in range(3):
            ts = [threading.Thread(target=lambda: out.append(b.wait(10))) for _ in range(3)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(10)
        assert sorted(out) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert runs == [1, 1, 1]
    finally:
        b.close()


def test_barrier_timeout_abort_reset() -> None:
    b = il.Barrier(None, 2)
    try:
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(0.05)
        assert b.broken
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(1)
        b.reset()
        assert not b.broken
        errs: list[BaseException] = []

        def waiter() -> None:
            try:
                b.wait(10)
            except threading.BrokenBarrierError as exc:
                errs.append(exc)

        t = threading.Thread(target=waiter)
        t.start()
        _until(lambda: b.n_waiting == 1)
        b.abort()
        t.join(10)
        assert len(errs) == 1 and b.broken
        b.reset()
        t = threading.Thread(target=waiter)
        t.start()
        _until(lambda: b.n_waiting == 1)
        b.reset()  # a waiter of the reset generation gets BrokenBarrierError
        t.join(10)
        assert len(errs) == 2 and not b.broken
    finally:
        b.close()


def test_barrier_default_timeout_and_action_error() -> None:
    b = il.Barrier(None, 1, action=lambda: 1 / 0)
    try:
        with pytest.raises(ZeroDivisionError):
            b.wait()
        assert b.broken
    finally:
        b.close()
    b2 = il.Barrier(None, 2, timeout=0.05)
    try:
        with pytest.raises(threading.BrokenBarrierError):
            b2.wait()
    finally:
        b2.close()


def test_barrier_parties_checked(name: str) -> None:
    with pytest.raises(ValueError):
        il.Barrier(None, 0)
    b = il.Barrier(name, 2)
    try:
        with pytest.raises(ValueError):
            il.Barrier(name, 3)
        same = il.Barrier(name)
        assert same.parties == 2
        same.close()
        copy = pickle.loads(pickle.dumps(b))
        assert copy.parties == 2
        copy.close()
    finally:
        b.close()
