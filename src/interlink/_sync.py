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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import _native
from ._segment import Segment
from .errors import Closed, InterlinkError, OwnerDied

__all__ = [
    "BoundedSemaphore",
    "Lock",
    "LockStatistics",
    "RLock",
    "Semaphore",
    "SemaphoreStatistics",
]

LAYOUT_VERSION = 1

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


class _LockBase(_Named, _native.LockCore):
    _kind = _native.KIND_LOCK
    _recursive = False
    _kind_name = "lock"

    def __init__(self, name: str | None = None, *, create: bool | None = None, mode: int = 0o600):
        self._segment = Segment.open(
            name,
            self._kind,
            size=_native.LOCK_SEGMENT_SIZE,
            layout=LAYOUT_VERSION,
            create=create,
            mode=mode,
            format=lambda mm, key: _native.lock_format(mm),
            attach=lambda mm: self._bind(mm, self._recursive),
        )

    def _owner_died_hook(self) -> None:
        # Called by the native acquire when it recovered a dead holder's lock.
        warnings.warn(
            OwnerDied(
                f"the previous holder of {type(self).__name__} {self.name!r} died holding it; "
                "the data it protects may need repair (then call recovered())"
            ),
            stacklevel=3,
        )

    def statistics(self) -> LockStatistics:
        """Holder, waiters and counters of the lock."""
        return LockStatistics(**self._stats())


class Lock(_LockBase):
    """A non-recursive lock shared between processes: threading.Lock's API.

    ``Lock(name)`` opens the lock ``name`` or creates it; ``create=True``
    insists on creating, ``create=False`` on opening; ``name=None`` makes an
    anonymous lock that can be passed to child processes (pickling).  Any
    thread of any process may release it, as with threading.Lock.  Waiters are
    served in FIFO order.  When a holder dies, the next acquirer gets the lock
    with an ``OwnerDied`` warning and ``owner_died`` True.
    """


class RLock(_LockBase):
    """A recursive lock shared between processes: threading.RLock's API.

    The owner is a thread of a process; it may acquire again (each acquire
    needs a release), and only the owner may release it (RuntimeError
    otherwise).
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
