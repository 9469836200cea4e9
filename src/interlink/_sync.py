"""Lock, RLock, Semaphore, BoundedSemaphore across processes.

The threading API (``acquire(blocking=True, timeout=-1)``, ``release()``,
``locked()``, context managers; multiprocessing's ``acquire(block=True,
timeout=None)`` spelling works too) over named shared-memory objects.  The
hot paths are methods of the compiled bases ``_native.LockCore`` and
``_native.SemaphoreCore`` (module_sync.c over lockword.c); this module adds
naming, life cycle, pickling, statistics and the OwnerDied warning.

Owner death: a Lock/RLock whose holder process dies (kill -9 included) is
recovered by the next acquirer within one 20 ms wait slice; that acquirer
gets the lock, an ``OwnerDied`` warning, and ``owner_died`` is True until
its next clean acquisition (or ``recovered()``), so it can repair the data
the lock protected.  Units a dead process took from a Semaphore are given
back.  See docs/design/sync.md and docs/design/sync-lockword.md.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import _deadlock, _native
from ._segment import Segment
from .errors import Closed, InterlinkError, OwnerDied, Timeout

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "LockStatistics",
    "RLock",
    "RWLock",
    "RWLockStatistics",
    "Semaphore",
    "SemaphoreStatistics",
]

# 2: the Lock fast path (FAST bit, adaptive spin and hint fields) and the RWLock
# reader-wait entries changed what a lock word means; an older build's object
# is refused with Incompatible rather than misread.
LAYOUT_VERSION = 2

_S = TypeVar("_S", bound="_Named")


@dataclass(frozen=True)
class LockStatistics:
    """A snapshot of a Lock's or RLock's state and counters.

    ``holder_pid``/``holder_tid`` are 0 when the lock is free; ``depth`` is the
    RLock recursion depth; ``owner_died`` counts acquisitions that found the
    previous holder dead.
    """

    holder_pid: int
    holder_tid: int
    depth: int
    waiters: int
    acquisitions: int
    contentions: int
    owner_died: int
    skipped: int


@dataclass(frozen=True)
class SemaphoreStatistics:
    """A snapshot of a Semaphore's state and counters.

    ``max_value`` is None for an unbounded Semaphore; ``held`` counts the units
    this handle holds; ``recovered`` counts units given back after their
    holder died.
    """

    value: int
    max_value: int | None
    waiters: int
    held: int
    acquisitions: int
    contentions: int
    recovered: int


class _Named:
    """Naming, life cycle and pickling shared by the four types."""

    _segment: Segment
    _kind_name = "object"

    if TYPE_CHECKING:  # provided by the native bases (LockCore, SemaphoreCore)

        @property
        def closed(self) -> bool: ...
        def _close(self) -> None: ...
        def _reclaim(self) -> None: ...

    @property
    def name(self) -> str:
        """The object's name (generated for an anonymous one)."""
        return self._segment.name

    @property
    def mode(self) -> int:
        """Permission bits the object was created with."""
        return self._segment.mode

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<interlink.{type(self).__name__} {self.name!r} {state}>"

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        # The receiving process opens the object by name: the sender must keep
        # its handle open until the receiver has opened it.
        return (_reopen, (type(self), self.name))

    def close(self) -> None:
        """Detach this handle; the object is removed when its last user goes.

        A lock held by this process stays held until released (or until the
        process exits, then the next acquirer recovers it); a Semaphore
        handle gives back the units it still holds.  Threads waiting on this
        handle get ``Closed``.  Idempotent.
        """
        if self.closed and self._segment.closed:
            return
        if not self.closed:
            with contextlib.suppress(InterlinkError):
                self._reclaim()
        self._close()
        self._segment.close()

    def unlink(self) -> None:
        """Remove the name now: new opens create a new object."""
        if self.closed:
            raise Closed(f"this {self._kind_name} handle is closed")
        self._segment.unlink()

    def users(self) -> list[tuple[int, bool]]:
        """(pid, alive) of every attached handle."""
        if self.closed:
            raise Closed(f"this {self._kind_name} handle is closed")
        return [(u.pid, u.alive) for u in self._segment.users()]

    def __del__(self) -> None:
        segment = getattr(self, "_segment", None)
        if segment is not None and not segment.closed:
            with contextlib.suppress(Exception):  # at shutdown the next open reclaims it
                self.close()


def _reopen(cls: Callable[..., _S], name: str) -> _S:
    return cls(name, create=False)


class _DeadlockAware(_Named):
    """Deadlock-detection wiring shared by Lock/RLock and RWLock handles.

    The native wait calls back ``_deadlock_check`` (defined by each kind) and
    ``_deadlock_done``; ``_dd_path`` and ``_dd_buffer`` name the object for the
    registry (docs/design/deadlock.md).
    """

    _deadlock_detection: bool

    if TYPE_CHECKING:  # provided by the native bases (LockCore, RWLockCore)

        def _deadlock_config(self, after_ns: int, every_ns: int) -> None: ...

        # Each concrete kind defines these two: format a new segment's
        # object, and bind the handle's native part to the mapped segment.
        def _format(self, mm: Any) -> None: ...
        def _attach(self, mm: Any) -> None: ...

    _kind: int
    _segment_size: int

    def __init__(
        self,
        name: str | None = None,
        *,
        create: bool | None = None,
        mode: int = 0o600,
        deadlock_detection: bool = True,
    ) -> None:
        self._segment = Segment.open(
            name,
            self._kind,
            size=self._segment_size,
            layout=LAYOUT_VERSION,
            create=create,
            mode=mode,
            format=lambda mm, key: self._format(mm),
            attach=self._attach,
        )
        self._deadlock_detection = bool(deadlock_detection)
        if self._deadlock_detection:
            # Only waits longer than CHECK_AFTER call back into Python.
            self._deadlock_config(
                int(_deadlock.CHECK_AFTER * 1e9), int(_deadlock.CHECK_EVERY * 1e9)
            )

    @property
    def deadlock_detection(self) -> bool:
        """Whether waits on this handle take part in deadlock detection."""
        return self._deadlock_detection

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (_reopen_lock, (type(self), self.name, self._deadlock_detection))

    @property
    def _dd_path(self) -> str:
        return str(self._segment.path)

    @property
    def _dd_buffer(self) -> Any:
        return self._segment.mm

    def _deadlock_done(self, tid: int) -> None:
        _deadlock.done(tid)

    def _warn_owner_died(self, what: str) -> None:
        # Called (through _owner_died_hook) by the native acquire when it
        # recovered a dead holder's lock.
        warnings.warn(
            OwnerDied(
                f"the previous {what} of {type(self).__name__} {self.name!r} died holding it; "
                "the data it protects may need repair (then call recovered())"
            ),
            stacklevel=3,  # _warn_owner_died, _owner_died_hook, the caller of acquire
        )


class _LockBase(_DeadlockAware, _native.LockCore):
    _kind = _native.KIND_LOCK
    _recursive = False
    _kind_name = "lock"
    _segment_size = _native.LOCK_SEGMENT_SIZE

    def _format(self, mm: Any) -> None:
        _native.lock_format(mm)

    def _attach(self, mm: Any) -> None:
        self._bind(mm, self._recursive)

    # Called by the native wait (docs/design/deadlock.md).
    def _deadlock_check(self, tid: int, waited_ns: int) -> None:
        if _deadlock.get_deadlock_detection():
            _deadlock.check(self, tid)
        else:
            _deadlock.done(tid)

    def _owner_died_hook(self) -> None:
        self._warn_owner_died("holder")

    def statistics(self) -> LockStatistics:
        """Holder, waiters and counters of the lock."""
        return LockStatistics(**self._stats())


def _reopen_lock(cls: Callable[..., _S], name: str, deadlock_detection: bool) -> _S:
    return cls(name, create=False, deadlock_detection=deadlock_detection)


class Lock(_LockBase):
    """A non-recursive lock shared between processes: threading.Lock's API.

    ``Lock(name)`` opens the lock ``name`` or creates it; ``create=True``
    insists on creating, ``create=False`` on opening; ``name=None`` makes an
    anonymous lock that can be passed to child processes (pickling).  Any
    thread of any process may release it, as with threading.Lock.  Waiters are
    served in FIFO order.  When a holder dies, the next acquirer gets the lock
    with an ``OwnerDied`` warning and ``owner_died`` True.

    Deadlock detection: when the waits of threads (of any processes) on
    Locks/RLocks form a cycle, one waiter of the cycle gets ``DeadlockError``
    within about 0.3 s, naming the cycle; the others keep waiting.  Only waits
    longer than 150 ms are checked (uncontended acquires pay nothing).
    ``deadlock_detection=False`` leaves this handle's waits out; see
    ``interlink.set_deadlock_detection`` and docs/design/deadlock.md.
    """


class RLock(_LockBase):
    """A recursive lock shared between processes: threading.RLock's API.

    The owner is a thread of a process; it may acquire again (each acquire
    needs a release), and only the owner may release it (RuntimeError
    otherwise).  Re-entry never waits, so it is never taken for a deadlock;
    waits on an RLock take part in deadlock detection as for Lock.
    """

    _kind = _native.KIND_RLOCK
    _recursive = True
    _kind_name = "rlock"


class Semaphore(_Named, _native.SemaphoreCore):
    """A counting semaphore shared between processes: threading.Semaphore's API.

    ``Semaphore(name, value)`` opens the semaphore ``name`` or creates it with
    ``value`` units (an existing one keeps its value).  ``acquire`` takes one
    unit, ``release(n)`` gives n back.  Units are charged to the handle that
    took them: when its process dies, or the handle closes, still holding
    units, they are given back.
    """

    _kind = _native.KIND_SEMAPHORE
    _bounded = False
    _kind_name = "semaphore"

    def __init__(
        self,
        name: str | None = None,
        value: int = 1,
        *,
        create: bool | None = None,
        mode: int = 0o600,
    ) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"semaphore value must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        if value > _native.SEM_VALUE_MAX:
            raise ValueError(f"semaphore initial value must be <= {_native.SEM_VALUE_MAX}")
        bounded = self._bounded
        self._segment = Segment.open(
            name,
            self._kind,
            size=_native.SEM_SEGMENT_SIZE,
            layout=LAYOUT_VERSION,
            create=create,
            mode=mode,
            format=lambda mm, key: _native.sem_format(mm, value, bounded),
            attach=lambda mm: self._bind(mm),
        )

    def statistics(self) -> SemaphoreStatistics:
        """Value, waiters and counters of the semaphore."""
        s = self._stats()
        return SemaphoreStatistics(
            value=s["value"],
            max_value=s["max_value"] if self._bounded else None,
            waiters=s["waiters"],
            held=s["held"],
            acquisitions=s["acquisitions"],
            contentions=s["contentions"],
            recovered=s["recovered"],
        )


class BoundedSemaphore(Semaphore):
    """A Semaphore whose release raises ValueError beyond the initial value."""

    _kind = _native.KIND_BOUNDED_SEMAPHORE
    _bounded = True
    _kind_name = "bounded semaphore"


# ---------------------------------------------------------------------------
# Event, Condition, Barrier (module_events.c over eventword.c; see
# docs/design/sync-events.md)
# ---------------------------------------------------------------------------


class Event(_Named, _native.EventCore):
    """An event flag shared between processes: threading.Event's API.

    ``is_set()``, ``set()`` (wakes every waiter), ``clear()`` and
    ``wait(timeout=None)``, which returns True when the flag was set while
    waiting (even if cleared again before the waiter woke), False on timeout.
    """

    _kind = _native.KIND_EVENT
    _kind_name = "event"

    def __init__(
        self, name: str | None = None, *, create: bool | None = None, mode: int = 0o600
    ) -> None:
        self._segment = Segment.open(
            name,
            self._kind,
            size=_native.EVENT_SEGMENT_SIZE,
            layout=LAYOUT_VERSION,
            create=create,
            mode=mode,
            format=lambda mm, key: _native.event_format(mm),
            attach=lambda mm: self._bind(mm),
        )


class Condition(_Named, _native.ConditionCore):
    """A condition variable shared between processes: threading.Condition's API.

    ``Condition(name=None, lock=None)``; ``Condition(lock)`` (threading's
    spelling) works too.  The lock is an interlink ``Lock`` or ``RLock``;
    without one, a new RLock is used: ``"<name>.lock"`` for a named
    condition, so that every process opening the name shares it.  ``wait``,
    ``wait_for``, ``notify`` and ``notify_all`` raise RuntimeError unless the
    calling thread holds the lock.  Waiters are notified oldest first; a
    waiter whose process died is skipped (it never swallows a notification),
    and a notifier dying half-way loses no waiter.
    """

    _kind = _native.KIND_CONDITION
    _kind_name = "condition"

    def __init__(
        self,
        name: str | Lock | RLock | None = None,
        lock: Lock | RLock | None = None,
        *,
        create: bool | None = None,
        mode: int = 0o600,
    ) -> None:
        if isinstance(name, _LockBase):
            if lock is not None:
                raise TypeError("Condition() got two locks")
            name, lock = None, name
        if lock is not None and not isinstance(lock, _LockBase):
            raise TypeError(f"lock must be an interlink Lock or RLock, not {type(lock).__name__}")
        self._segment = Segment.open(
            name,
            self._kind,
            size=_native.COND_SEGMENT_SIZE,
            layout=LAYOUT_VERSION,
            create=create,
            mode=mode,
            format=lambda mm, key: _native.cond_format(mm),
            attach=lambda mm: self._bind(mm),
        )
        self._owns_lock = lock is None
        if lock is None:
            try:
                lock = RLock(None if name is None else f"{name}.lock", mode=mode)
            except BaseException:
                super().close()
                raise
        self._lock: Lock | RLock = lock

    @property
    def lock(self) -> Lock | RLock:
        """The lock this condition uses."""
        return self._lock

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (_reopen_condition, (type(self), self.name, self._lock))

    def close(self) -> None:
        """Detach this handle (and the default lock it created)."""
        super().close()
        if self._owns_lock:
            self._lock.close()

    # ---- the lock's API
    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        """Acquire the underlying lock (same arguments as its acquire)."""
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        """Release the underlying lock."""
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.__exit__(*exc_info)

    def _is_owned(self) -> bool:
        return self._lock._is_owned()

    def _release_save(self) -> int:
        if isinstance(self._lock, RLock):
            depth = 0
            while self._lock._is_owned():
                self._lock.release()
                depth += 1
            return depth
        self._lock.release()
        return 1

    def _acquire_restore(self, depth: int) -> None:
        for _ in range(depth):
            self._lock.acquire()

    # ---- waiting and notifying
    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait until notified or ``timeout`` seconds pass,
        re-acquire the lock; True unless the timeout expired."""
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        entry = self._register()
        try:
            saved = self._release_save()
        except BaseException:
            self._cancel(entry)
            raise
        try:
            return self._wait(entry, None if timeout is None else max(0.0, timeout))
        finally:
            self._acquire_restore(saved)

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T | bool:
        """Wait until ``predicate()`` is true (threading's semantics); return
        the last value of the predicate."""
        import time

        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = time.monotonic() + waittime
                else:
                    waittime = endtime - time.monotonic()
                    if waittime <= 0:
                        break
            self.wait(waittime)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting threads (any process), oldest first."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        if n > 0:
            self._notify(n)

    def notify_all(self) -> None:
        """Wake every waiting thread."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._notify(-1)


_T = TypeVar("_T")


def _reopen_condition(cls: type[Condition], name: str, lock: Lock | RLock) -> Condition:
    return cls(name, lock, create=False)


class Barrier(_Named, _native.BarrierCore):
    """A barrier shared between processes: threading.Barrier's API.

    ``Barrier(name, parties, action=None, timeout=None)``: ``wait()`` blocks
    until ``parties`` threads (of any processes) have called it and returns a
    distinct index 0..parties-1; the last arriving party runs its handle's
    ``action`` first.  ``reset()``, ``abort()``, ``parties``, ``n_waiting``,
    ``broken``; ``threading.BrokenBarrierError`` when broken: by abort(), a
    timeout, an exception in the action, a waiter interrupted by an exception,
    or a waiting party whose process died.  ``parties`` may be None to open an
    existing barrier; at most ``BARRIER_MAX_PARTIES`` parties.
    """

    _kind = _native.KIND_BARRIER
    _kind_name = "barrier"

    def __init__(
        self,
        name: str | None = None,
        parties: int | None = None,
        action: Callable[[], object] | None = None,
        timeout: float | None = None,
        *,
        create: bool | None = None,
        mode: int = 0o600,
    ) -> None:
        if parties is None:
            if create is True or name is None:
                raise TypeError("Barrier() needs parties to create a barrier")
            create = False
        elif not isinstance(parties, int) or isinstance(parties, bool):
            raise TypeError(f"parties must be an int, not {type(parties).__name__}")
        elif not 1 <= parties <= _native.BARRIER_MAX_PARTIES:
            raise ValueError(f"parties must be within 1..{_native.BARRIER_MAX_PARTIES}")
        self._segment = Segment.open(
            name,
            self._kind,
            size=_native.BARRIER_SEGMENT_SIZE,
            layout=LAYOUT_VERSION,
            create=create,
            mode=mode,
            format=lambda mm, key: _native.barrier_format(mm, parties or 1),
            attach=lambda mm: self._bind(mm),
        )
        if parties is not None and self.parties != parties:
            existing = self.parties
            self.close()
            raise ValueError(f"barrier {name!r} exists with {existing} parties, not {parties}")
        self._action = action
        self._timeout = timeout

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (_reopen_barrier, (type(self), self.name, self.parties, self._action, self._timeout))

    def wait(self, timeout: float | None = None) -> int:
        """Wait until all parties have called wait(); return this party's index.

        BrokenBarrierError if the barrier is or becomes broken; a timeout
        (this call's, or the barrier's default) breaks it.
        """
        import time

        if timeout is None:
            timeout = self._timeout
        if timeout is not None:
            timeout = max(0.0, timeout)
            deadline = time.monotonic() + timeout
        index, last, token = self._arrive(timeout)
        if last:
            if self._action is not None:
                try:
                    self._action()
                except BaseException:
                    self._fail(token)
                    raise
            self._complete(token)
        else:
            left = None if timeout is None else max(0.0, deadline - time.monotonic())
            self._await(token, left)
        return index


def _reopen_barrier(
    cls: type[Barrier],
    name: str,
    parties: int,
    action: Callable[[], object] | None,
    timeout: float | None,
) -> Barrier:
    return cls(name, parties, action, timeout, create=False)


# ---------------------------------------------------------------------------
# RWLock (module_rwlock.c over rwlockword.c; see docs/design/sync-rwlock.md)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RWLockStatistics:
    """A snapshot of an RWLock's state and counters.

    ``writer_pid``/``writer_tid`` are 0 unless a writer holds (or is draining
    readers to take) the write side; ``readers`` counts read holds of every
    process, ``held`` those of this handle's process; ``owner_died`` counts
    write acquisitions that found the previous writer dead and
    ``readers_recovered`` the read holds taken back from dead processes.
    """

    writer_pid: int
    writer_tid: int
    readers: int
    held: int
    waiting_readers: int
    waiting_writers: int
    read_acquisitions: int
    write_acquisitions: int
    owner_died: int
    readers_recovered: int


class RWLock(_DeadlockAware, _native.RWLockCore):
    """A reader-writer lock shared between threads and processes.

    ``with rw.read():`` shares the lock with other readers; ``with
    rw.write():`` excludes readers and writers.  ``acquire_read`` /
    ``acquire_write(blocking=True, timeout=-1)`` return True when acquired
    (Lock.acquire's arguments); ``release_read`` / ``release_write``.

    Writer preference: while a writer holds or waits, new readers wait, so
    writers never starve (readers can, under a continuous stream of writers).
    Writers are served in FIFO order.  A read side is held by the thread that
    took it and only that thread may release it (RuntimeError otherwise).
    Neither side is re-entrant: a thread holding a read side that asks for
    the write side gets ``DeadlockError`` at once (there is no upgrade); one
    that asks for another read side while a writer waits would wait for
    itself, and deadlock detection reports it.

    Deadlock detection: RWLock waits take part as for Lock (cycles through
    read and write sides, and mixed with Lock/RLock, across threads and
    processes): one waiter of a cycle gets ``DeadlockError`` within about
    0.3 s, preferably the thread that asked for a second read side or for
    the write side of an RWLock it reads.  ``deadlock_detection=False``
    leaves this handle's waits out (and lets an upgrade wait for its
    timeout).  See docs/design/deadlock.md.

    Owner death: a writer that dies holding the write side is recovered by
    the next acquirer within one 20 ms slice.  Every reader that gets in
    before a writer has taken the write side again, and that writer, get an
    ``OwnerDied`` warning and ``owner_died`` is True (the data may be half
    written).  Read holds are counted per attached handle and those of a
    dead process are dropped (no warning: readers change nothing).
    """

    _kind = _native.KIND_RWLOCK
    _kind_name = "rwlock"
    _segment_size = _native.RWLOCK_SEGMENT_SIZE

    def _format(self, mm: Any) -> None:
        _native.rwlock_format(mm)

    def __init__(
        self,
        name: str | None = None,
        *,
        create: bool | None = None,
        mode: int = 0o600,
        deadlock_detection: bool = True,
    ) -> None:
        super().__init__(name, create=create, mode=mode, deadlock_detection=deadlock_detection)
        _deadlock.track_rwlock(self)

    def _attach(self, mm: Any) -> None:
        self._bind(mm)

    # Called by the native waits (docs/design/deadlock.md).
    def _deadlock_check(self, tid: int, write: int) -> None:
        if _deadlock.get_deadlock_detection():
            _deadlock.check(self, tid, "write" if write else "read")
        else:
            _deadlock.done(tid)

    def _upgrade_deadlock(self, tid: int) -> None:
        # Called by acquire_write when the calling thread reads this handle.
        if _deadlock.get_deadlock_detection():
            raise _deadlock.upgrade_error(self, tid)

    @contextlib.contextmanager
    def read(self, timeout: float | None = None) -> Iterator[None]:
        """Hold a read side for the ``with`` block (Timeout if ``timeout`` expires)."""
        if not self.acquire_read(timeout=timeout):
            raise Timeout(f"could not take a read side of RWLock {self.name!r} in {timeout} s")
        try:
            yield
        finally:
            self.release_read()

    @contextlib.contextmanager
    def write(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the write side for the ``with`` block (Timeout if ``timeout`` expires)."""
        if not self.acquire_write(timeout=timeout):
            raise Timeout(f"could not take the write side of RWLock {self.name!r} in {timeout} s")
        try:
            yield
        finally:
            self.release_write()

    def _owner_died_hook(self) -> None:
        self._warn_owner_died("writer")

    def statistics(self) -> RWLockStatistics:
        """Writer, readers, waiters and counters of the lock."""
        return RWLockStatistics(**self._stats())
