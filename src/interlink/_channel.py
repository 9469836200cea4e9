"""Channel: many senders, one receiver, variable-size messages in shared memory.

The hot paths (send, recv, loan and the Message views) are methods of the
compiled base class ``_native.ChannelCore``, so a call costs one C call; this
module adds naming, life cycle, pickling, statistics and asyncio on top.

Roles are taken lazily: the first ``send``/``loan`` makes a handle a sender,
the first ``recv`` makes it the receiver (one live receiver per channel; a
dead receiver's role is taken over, and the messages it had received but not
released are delivered again).  End of stream: once some handle has sent,
``recv`` raises ``Closed`` when no sender handle remains (closed or dead) and
everything committed has been received.  A sender gets ``Closed`` once a
receiver has attached and gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _native
from ._native import Loan, Message
from ._segment import Segment
from .errors import Closed, Empty, Full, InterlinkError, Timeout

__all__ = ["Channel", "ChannelStatistics", "Loan", "Message"]

LAYOUT_VERSION = 1
DEFAULT_CAPACITY = 1 << 20


def _ring_capacity(capacity: int) -> int:
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, not {capacity}")
    if capacity > _native.RING_MAX_CAPACITY:
        raise ValueError(f"capacity must be at most {_native.RING_MAX_CAPACITY} bytes")
    cap = max(capacity, _native.RING_MIN_CAPACITY)
    return 1 << (cap - 1).bit_length()


@dataclass(frozen=True)
class ChannelStatistics:
    """A snapshot of a channel's counters (``sent``/``received``: this handle's)."""

    capacity: int
    used: int
    senders: int
    receiver_pid: int
    skipped: int
    sent: int
    received: int


class Channel(_native.ChannelCore):
    """A named (or anonymous) many-to-one message channel in shared memory.

    ``Channel(name, capacity)`` opens the channel ``name`` or creates it with a
    ring of ``capacity`` bytes (rounded up to a power of two, at least 4 KiB);
    ``create=True`` insists on creating, ``create=False`` on opening.  An
    existing channel keeps the capacity it was created with.  ``mode`` sets the
    permission bits of a new channel (default 0600: this user only).
    """

    def __init__(
        self,
        name: str | None = None,
        capacity: int = DEFAULT_CAPACITY,
        *,
        create: bool | None = None,
        mode: int = 0o600,
        _adopt: tuple[int, int] | None = None,
    ) -> None:
        cap = _ring_capacity(capacity)
        self._anonymous = name is None
        self._waiters: dict[str, _AsyncWaiter] = {}
        self._segment = Segment.open(
            name,
            _native.KIND_CHANNEL,
            size=_native.ring_segment_size(cap),
            layout=LAYOUT_VERSION,
            create=create,
            mode=mode,
            kind_size=cap,
            format=lambda mm, key: _native.ring_format(mm, cap, key),
            attach=lambda mm: self._bind(mm, _adopt),
        )

    # -------------------------------------------------------------- identity
    @property
    def name(self) -> str:
        """The channel's name (generated for an anonymous channel)."""
        return self._segment.name

    @property
    def mode(self) -> int:
        """Permission bits the channel was created with."""
        return self._segment.mode

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"capacity={self.capacity}"
        return f"<interlink.Channel {self.name!r} {state}>"

    def __reduce__(self) -> tuple[Callable[..., Channel], tuple[Any, ...]]:
        # The handle in flight counts as a sender until the other process
        # attaches (or 60 s pass), so a receiver does not see end-of-stream
        # just because a worker has not started yet -- as with an inherited pipe.
        return (_reopen, (self.name, self._lend()))

    # ------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Detach this handle; the channel is removed when its last user goes.

        Messages and loans still alive keep their memory mapped until they go.
        Idempotent.
        """
        if self.closed and self._segment.closed:
            return
        if not self.closed:
            # Free slots whose lending (pickling) expired unadopted, and those
            # of dead processes, so that they do not keep the object alive.
            with contextlib.suppress(InterlinkError):
                self._reclaim()
        self._close()
        self._segment.close()

    def unlink(self) -> None:
        """Remove the channel's name now: new opens create a new channel."""
        self._check_open()
        self._segment.unlink()

    def _check_open(self) -> None:
        if self.closed:
            raise Closed("this channel handle is closed")

    def __del__(self) -> None:
        # A handle dropped without close() must not leak its descriptor or,
        # when it was the last user, leave the object behind in /dev/shm.
        segment = getattr(self, "_segment", None)
        if segment is not None and not segment.closed:
            with contextlib.suppress(Exception):  # at shutdown the next open reclaims it
                self.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------- conveniences
    def recv_bytes(self, timeout: float | None = None) -> bytes:
        """Receive the next message as a bytes copy (the space is freed at once)."""
        msg = self.recv(timeout)
        try:
            return msg.tobytes()
        finally:
            msg.release()

    def statistics(self) -> ChannelStatistics:
        """Counters of the channel and of this handle."""
        s = self._stats()
        return ChannelStatistics(
            capacity=s["capacity"],
            used=s["used"],
            senders=s["senders"],
            receiver_pid=s["receiver_pid"],
            skipped=s["skipped"],
            sent=s["sent"],
            received=s["received"],
        )

    def users(self) -> list[tuple[int, bool]]:
        """(pid, alive) of every attached handle."""
        self._check_open()
        return [(u.pid, u.alive) for u in self._segment.users()]

    # ---------------------------------------------------------------- asyncio
    async def arecv(self, timeout: float | None = None) -> Message:
        """Receive like recv(), awaiting instead of blocking the event loop."""
        deadline = None if timeout is None else _now() + timeout
        while True:
            try:
                return self.recv_nowait()
            except Empty:
                pass
            remaining = None if deadline is None else deadline - _now()
            if remaining is not None and remaining <= 0:
                raise Timeout("no message within the timeout")
            await self._waiter("read").wait(remaining)

    async def asend(self, data: Any, timeout: float | None = None) -> None:
        """Send like send(), awaiting room instead of blocking the event loop."""
        size = memoryview(data).nbytes
        deadline = None if timeout is None else _now() + timeout
        while True:
            try:
                self.send_nowait(data)
                return
            except Full:
                pass
            remaining = None if deadline is None else deadline - _now()
            if remaining is not None and remaining <= 0:
                raise Timeout("no room in the channel within the timeout")
            await self._waiter("write", size).wait(remaining)

    def _waiter(self, kind: str, size: int = 0) -> _AsyncWaiter:
        key = f"{kind}:{size}" if kind == "write" else kind
        waiter = self._waiters.get(key)
        if waiter is None:
            if kind == "read":
                waiter = _AsyncWaiter(lambda t: self.wait_readable(t))
            else:
                waiter = _AsyncWaiter(lambda t: self.wait_writable(size, t))
            self._waiters[key] = waiter
        return waiter


def _reopen(name: str, token: tuple[int, int] | None = None) -> Channel:
    return Channel(name, create=False, _adopt=token)


def _now() -> float:
    import time

    return time.monotonic()


class _AsyncWaiter:
    """Turns a blocking ``wait(timeout) -> bool`` into awaitable readiness.

    One helper thread per waiter object (so per channel and direction, never
    per call) sleeps in the native wait while coroutines are waiting, and
    resolves all their futures through their loops when the condition may
    hold.  The thread exits as soon as nobody waits.
    """

    _POLL = 0.25

    def __init__(self, wait: Callable[[float], bool]) -> None:
        self._wait = wait
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._thread: threading.Thread | None = None

    async def wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._pending.append((loop, fut))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="interlink-async-wait", daemon=True
                )
                self._thread.start()
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass  # the caller re-checks and raises its own Timeout
        finally:
            with self._lock:
                self._pending = [(lp, f) for lp, f in self._pending if f is not fut]

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
            try:
                ready = self._wait(self._POLL)
            except Exception:
                ready = True  # let the coroutines retry and meet the error themselves
            if ready:
                with self._lock:
                    pending, self._pending = self._pending, []
                for loop, fut in pending:
                    with contextlib.suppress(RuntimeError):  # that loop has closed
                        loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
