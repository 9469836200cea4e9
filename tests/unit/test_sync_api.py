"""Lock, RLock, Semaphore, BoundedSemaphore: threading-API semantics in one process."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

import interlink as il
from interlink import _native
from interlink._segment import list_objects

LOCKS = [il.Lock, il.RLock]
SEMS = [il.Semaphore, il.BoundedSemaphore]


@pytest.mark.parametrize("cls", LOCKS)
def test_lock_acquire_release_locked(cls: type[il.Lock], name: str) -> None:
    lock = cls(name)
    try:
        assert lock.locked() is False
        assert lock.acquire() is True
        assert lock.locked() is True
        lock.release()
        assert lock.locked() is False
        with lock as entered:
            assert entered is True
            assert lock.locked()
        assert not lock.locked()
    finally:
        lock.close()


def test_lock_is_not_recursive_and_times_out(name: str) -> None:
    lock = il.Lock(name)
    try:
        assert lock.acquire()
        assert lock.acquire(False) is False
        assert lock.acquire(blocking=False) is False
        assert lock.acquire(block=False) is False
        start = time.monotonic()
        assert lock.acquire(timeout=0.1) is False
        assert 0.09 <= time.monotonic() - start < 2.0
        assert lock.acquire(True, 0) is False
        lock.release()
        with pytest.raises(RuntimeError):
            lock.release()
    finally:
        lock.close()


def test_lock_released_by_another_thread(name: str) -> None:
    """threading.Lock has no owner: any thread may release it."""
    lock = il.Lock(name)
    try:
        lock.acquire()
        t = threading.Thread(target=lock.release)
        t.start()
        t.join(10)
        assert not lock.locked()
    finally:
        lock.close()


def test_rlock_recursion_and_ownership(name: str) -> None:
    rlock = il.RLock(name)
    try:
        assert rlock.acquire() and rlock.acquire(False) and rlock.acquire(timeout=1)
        assert rlock.statistics().depth == 3
        errors: list[BaseException] = []

        def other() -> None:
            try:
                assert rlock.acquire(timeout=0.05) is False
                rlock.release()
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        for _ in range(3):
            rlock.release()
        assert not rlock.locked()
        with pytest.raises(RuntimeError):
            rlock.release()
    finally:
        rlock.close()


@pytest.mark.parametrize("cls", LOCKS)
def test_acquire_argument_errors(cls: type[il.Lock], name: str) -> None:
    lock = cls(name)
    try:
        with pytest.raises(ValueError):
            lock.acquire(False, 1.0)
        with pytest.raises(ValueError):
            lock.acquire(timeout=-2)
        with pytest.raises(TypeError):
            lock.acquire(blocking=True, block=True)
        with pytest.raises(TypeError):
            lock.acquire(wait=True)  # type: ignore[call-arg]
        assert lock.acquire(False, -1) is True
        lock.release()
        assert lock.acquire(block=True, timeout=None) is True
        lock.release()
    finally:
        lock.close()


def test_threads_mutual_exclusion(name: str) -> None:
    lock = il.Lock(name)
    count = [0]

    def work() -> None:
        for _ in range(5000):
            with lock:
                v = count[0]
                count[0] = v + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    lock.close()
    assert count[0] == 20000


def test_blocked_thread_gets_lock_on_release(name: str) -> None:
    lock = il.Lock(name)
    lock.acquire()
    got = threading.Event()

    def waiter() -> None:
        if lock.acquire(timeout=10):
            got.set()
            lock.release()

    t = threading.Thread(target=waiter)
    t.start()
    assert not got.wait(0.05)
    lock.release()
    assert got.wait(10)
    t.join(10)
    lock.close()


@pytest.mark.parametrize("cls", SEMS)
def test_semaphore_counts(cls: type[il.Semaphore], name: str) -> None:
    sem = cls(name, 2)
    try:
        assert sem.get_value() == 2
        assert sem.acquire() and sem.acquire(blocking=True, timeout=None)
        assert sem.acquire(False) is False
        assert sem.acquire(timeout=0.05) is False
        assert sem.statistics().held == 2
        sem.release()
        with sem:
            assert sem.get_value() == 0
        sem.release()
        assert sem.get_value() == 2
        with pytest.raises(ValueError):
            sem.release(0)
        with pytest.raises(ValueError):
            sem.acquire(False, 1.0)
    finally:
        sem.close()


def test_bounded_semaphore_over_release(name: str) -> None:
    sem = il.BoundedSemaphore(name, 1)
    try:
        with pytest.raises(ValueError):
            sem.release()
        sem.acquire()
        with pytest.raises(ValueError):
            sem.release(2)
        sem.release()
        assert sem.statistics().max_value == 1
    finally:
        sem.close()


def test_semaphore_release_n_and_zero(name: str) -> None:
    sem = il.Semaphore(name, 0)
    try:
        assert sem.acquire(False) is False
        sem.release(3)
        assert sem.get_value() == 3
        assert sem.statistics().max_value is None
        woke = threading.Event()

        def waiter() -> None:
            sem2 = il.Semaphore(name, create=False)
            for _ in range(4):
                assert sem2.acquire(timeout=10)
            woke.set()
            sem2.close()

        t = threading.Thread(target=waiter)
        t.start()
        assert not woke.wait(0.05)
        sem.release()
        assert woke.wait(10)
        t.join(10)
    finally:
        sem.close()


@pytest.mark.parametrize("value", [-1, _native.SEM_VALUE_MAX + 1])
def test_semaphore_bad_value(value: int) -> None:
    with pytest.raises(ValueError):
        il.Semaphore(None, value)
    with pytest.raises(TypeError):
        il.Semaphore(None, 1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("made", "opened"),
    [
        (il.Lock, il.Semaphore),
        (il.Lock, il.RLock),
        (il.Semaphore, il.Lock),
        (il.Semaphore, il.BoundedSemaphore),
        (il.Channel, il.Lock),
    ],
)
def test_wrong_kind_is_incompatible(made: type, opened: type, name: str) -> None:
    obj = made(name)
    try:
        with pytest.raises(il.Incompatible):
            opened(name)
    finally:
        obj.close()


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 201, "nul\0"])
@pytest.mark.parametrize("cls", [il.Lock, il.RLock, il.Semaphore, il.BoundedSemaphore])
def test_bad_names(cls: type, bad: str) -> None:
    with pytest.raises(ValueError):
        cls(bad)


def test_create_flags(name: str) -> None:
    with pytest.raises(il.NotFound):
        il.Lock(name, create=False)
    lock = il.Lock(name, create=True)
    with pytest.raises(il.AlreadyExists):
        il.Lock(name, create=True)
    lock.close()


@pytest.mark.parametrize("cls", [il.Lock, il.RLock, il.Semaphore, il.BoundedSemaphore])
def test_close_unlink_pickle_and_ls(cls: type, name: str) -> None:
    obj = cls(name)
    assert obj.name == name and obj.mode == 0o600
    again = pickle.loads(pickle.dumps(obj))
    assert type(again) is cls and again.name == name
    kinds = {info.name: info.kind for info in list_objects()}
    assert (
        kinds[name]
        == {
            il.Lock: "lock",
            il.RLock: "rlock",
            il.Semaphore: "semaphore",
            il.BoundedSemaphore: "bounded-semaphore",
        }[cls]
    )
    again.close()
    obj.close()
    obj.close()
    assert obj.closed
    with pytest.raises(il.Closed):
        obj.acquire()
    with pytest.raises(il.Closed):
        obj.unlink()
    assert name not in {info.name for info in list_objects()}


def test_anonymous_lock_pickles(name: str) -> None:
    lock = il.Lock()
    assert lock.name.startswith("anon-")
    copy = pickle.loads(pickle.dumps(lock))
    assert copy.acquire()
    assert lock.locked()
    copy.release()
    copy.close()
    lock.close()


@pytest.mark.parametrize("cls", [il.Lock, il.Semaphore])
def test_close_while_another_thread_waits(cls: type, name: str) -> None:
    obj = cls(name) if cls is il.Lock else cls(name, 0)
    holder = cls(name, create=False)
    if cls is il.Lock:
        holder.acquire()
    result: list[object] = []

    def waiter() -> None:
        try:
            result.append(obj.acquire(timeout=10))
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 10
    while holder.statistics().waiters == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    obj.close()
    t.join(10)
    assert not t.is_alive()
    assert len(result) == 1 and isinstance(result[0], il.Closed)
    if cls is il.Lock:
        holder.release()
    holder.close()


def test_statistics_are_frozen(name: str) -> None:
    lock = il.Lock(name)
    stats = lock.statistics()
    assert isinstance(stats, il.LockStatistics)
    with pytest.raises(AttributeError):
        stats.waiters = 3  # type: ignore[misc]
    lock.close()
    sem = il.Semaphore(name + "s", 3)
    s = sem.statistics()
    assert isinstance(s, il.SemaphoreStatistics) and s.value == 3
    sem.close()


def test_recovered_clears_flag(name: str) -> None:
    lock = il.Lock(name)
    assert lock.owner_died is False
    lock.recovered()
    assert lock.owner_died is False
    lock.close()
