"""Queue, JoinableQueue, SimpleQueue: multiprocessing's queues over shared memory.

The native core (``_native.QueueCore``, docs/design/queue-core.md) keeps the
messages; this module adds naming and life cycle (``_segment.Segment``, like
the sync objects), codecs (``_codec``), the pickle trust rule, pickling of
handles, and multiprocessing's method names and exceptions.
docs/design/queue.md records the decisions and the differences from
``multiprocessing.Queue`` (chiefly: no feeder thread, ``put`` is synchronous).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import mmap
import os
import pickle
import secrets
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import astuple
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from . import _native
from ._codec import (
    _PARSE_ERRORS,
    _WATCH,
    Codec,
    PickleCodec,
    Record,
    check_descriptor,
    get_codec,
    refuse_pickle,
    segment_pickle_ok,
)
from ._segment import _HEADER, Segment, _check_header, _Header, _read_header
from .errors import (
    AccessDenied,
    AlreadyExists,
    Closed,
    Corrupt,
    Empty,
    Full,
    InterlinkError,
    MessageTooLarge,
    NotFound,
)

__all__ = ["DurableMessage", "JoinableQueue", "Queue", "QueueClosed", "SimpleQueue"]

#: Layout version of a queue segment (header page + queueword.h area).
LAYOUT_VERSION: Final = 1
#: Default payload space of a new queue (pages of /dev/shm are only used once
#: touched, so an idle queue costs little).
DEFAULT_CAPACITY: Final = 64 << 20
#: Default message slots of a new unbounded queue.
DEFAULT_MAX_MESSAGES: Final = 16384
#: Slots kept beyond maxsize for messages held zero-copy by consumers.
_HELD_SLACK: Final = 1024

# The descriptor, at SEG_QUEUE_DESC of page 0: magic, codec id, maxsize as
# given (0: unbounded), codec name.
_DESC = struct.Struct("<8sB7xQ32s")
_DESC_MAGIC: Final = b"ILQDESC1"

_Q = TypeVar("_Q", bound="Queue")


class QueueClosed(Closed, ValueError):
    """Operation on a queue handle after ``close()``.

    Both :class:`~interlink.Closed` and ``ValueError`` (what
    ``multiprocessing.Queue`` raises after ``close()``).
    """


def _timeout_left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


_SYNC_POLICIES: Final = ("os", "batch", "always")
#: sync="batch" defaults: msync once this many operations are pending...
DEFAULT_SYNC_MESSAGES: Final = 256
#: ...or once the oldest pending one is this many seconds old.
DEFAULT_SYNC_INTERVAL: Final = 0.05


class _BatchSync:
    """``sync="batch"``: msync a durable queue's mapping once ``messages``
    operations of this handle are pending, or ``interval`` seconds after the
    first of them, whichever comes first; and on close.

    The time bound holds while the handle is idle too: the first pending
    operation arms a one-shot timer thread.  Flushes (by an operation, the
    timer or ``close``) run under one lock, so ``close`` never unmaps under a
    running msync.  In a forked child the state is reset (the parent's timer
    stays in the parent, which still owns its pending operations).
    """

    def __init__(self, flush: Callable[[], None], messages: int, interval: float) -> None:
        self._flush = flush
        self.messages = messages
        self.interval = interval
        self._lock = threading.Lock()
        self._pending = 0
        self._timer: threading.Timer | None = None
        self._closed = False
        self.flushes = 0
        _BATCH_SYNCS.add(self)

    def note(self, count: int) -> None:
        """``count`` operations just changed the mapping: flush if the batch is full,
        else make sure the timer runs."""
        if count <= 0:
            return
        with self._lock:
            if self._closed:
                return
            self._pending += count
            if self._pending >= self.messages:
                self._flush_locked()
            elif self._timer is None:
                timer = threading.Timer(self.interval, self._on_timer)
                timer.daemon = True
                self._timer = timer
                timer.start()

    @property
    def pending(self) -> int:
        """Operations not yet flushed."""
        return self._pending

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._pending and not self._closed:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = 0
        self.flushes += 1
        self._flush()

    def close(self) -> None:
        """Flush what is pending, stop the timer; later notes are ignored."""
        with self._lock:
            if self._closed:
                return
            if self._pending:
                self._flush_locked()
            elif self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._closed = True

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._timer = None
        self._pending = 0


_BATCH_SYNCS: weakref.WeakSet[_BatchSync] = weakref.WeakSet()


def _reset_batch_syncs_in_child() -> None:
    for batch in list(_BATCH_SYNCS):
        batch._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_batch_syncs_in_child)


def _decode_record(
    codec: Codec, pickle_ok: bool, name: str, data: bytes | _native.QueueMessage
) -> Any:
    """Decode one record taken from a queue (``bytes``, or a ``QueueMessage``
    that is released here, deferred while views of it live).

    Refuses pickled records with ``AccessDenied`` unless ``pickle_ok``.  Takes
    no reference to the Queue: ``QueueCore`` keeps it as its decode callback.
    """
    if type(data) is bytes:
        if not pickle_ok:
            refuse_pickle("queue", name, data)
        return codec.decode(data)
    assert isinstance(data, _native.QueueMessage)
    try:
        if not pickle_ok:
            refuse_pickle("queue", name, data)
        # Views of out-of-band buffers defer the release until they go.
        return codec.decode(data, copy=False)
    finally:
        data.release()


class _DurableFile:
    """A durable queue's file mapping: what ``Segment`` is for /dev/shm objects.

    The file is never removed by ``close`` (that is the point); creation,
    formatting and the boot check run under an exclusive ``flock``.
    """

    def __init__(
        self,
        path: Path,
        *,
        create: bool | None,
        mode: int,
        size: int,
        format: Callable[[mmap.mmap, int], None],
        attach: Callable[[mmap.mmap], None],
        after_attach: Callable[[], None],
        name: str | None = None,
    ) -> None:
        flags = os.O_RDWR | os.O_CLOEXEC
        if create is not False:
            flags |= os.O_CREAT
        if create is True:
            flags |= os.O_EXCL
        try:
            fd = os.open(path, flags, mode)
        except FileExistsError:
            raise AlreadyExists(f"durable queue file {str(path)!r} already exists") from None
        except FileNotFoundError:
            raise NotFound(f"no durable queue file {str(path)!r}") from None
        except PermissionError as exc:
            raise AccessDenied(f"cannot open {str(path)!r}: {exc.strerror}") from None
        mm: mmap.mmap | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            if st.st_size >= _native.SEG_HEADER_SIZE:
                with mmap.mmap(fd, _native.SEG_HEADER_SIZE, mmap.MAP_SHARED) as hm:
                    unpublished = _native.seg_magic(hm) == 0
                if unpublished:
                    # Its creator died formatting it (it held this lock
                    # meanwhile): nothing was ever put; format it again.
                    os.ftruncate(fd, 0)
                    st = os.fstat(fd)
            if st.st_size == 0:  # new (or its creator died before formatting it)
                os.fchmod(fd, mode)
                os.ftruncate(fd, size)
                mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                key = int.from_bytes(secrets.token_bytes(8), "little") | 1
                header = _Header(
                    magic=0,
                    layout=LAYOUT_VERSION,
                    kind=_native.KIND_QUEUE,
                    uid=os.geteuid(),
                    pid=os.getpid(),
                    mode=mode,
                    nslots=_native.SEG_SLOTS,
                    total_size=size,
                    created_ns=time.time_ns(),
                    key=key,
                    kind_size=size - _native.SEG_HEADER_SIZE,
                )
                _HEADER.pack_into(mm, 0, *astuple(header))
                format(mm, key)
                mm.flush()
                _native.seg_publish(mm)
                mm.flush()
            else:
                if st.st_size < _native.SEG_HEADER_SIZE:
                    raise Corrupt(f"durable queue file {str(path)!r} is truncated")
                mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                header = _read_header(mm)
                _check_header(str(path), header, st.st_size, _native.KIND_QUEUE, LAYOUT_VERSION)
            attach(mm)
            after_attach()  # the boot check, still under the exclusive lock
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            if mm is not None:
                with contextlib.suppress(BufferError):
                    mm.close()
            os.close(fd)
            raise
        self.path = path
        self.name = name if name is not None else str(path)
        self.fd = fd
        self.mm = mm
        self.mode: int = header.mode
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(BufferError):  # views may still point into it
            self.mm.close()
        os.close(self.fd)

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class DurableMessage:
    """A message taken from a durable queue by ``get_message``: ``value`` is the
    decoded object; ``ack()`` removes it for good, ``nack()`` puts it back at
    its place.  Dropped without either (or its process killed): it goes back
    (redelivered, ``deliveries`` + 1).  As a context manager: ack on success,
    nack on an exception."""

    __slots__ = ("_msg", "_queue", "value")

    def __init__(self, queue: Queue, msg: _native.QueueMessage, value: Any) -> None:
        self._queue = queue
        self._msg = msg
        self.value = value

    @property
    def deliveries(self) -> int:
        """How many times this message was taken (> 1: redelivered)."""
        return self._msg.deliveries

    @property
    def priority(self) -> int:
        """The priority it was put with."""
        return self._msg.priority

    @property
    def done(self) -> bool:
        """Whether ack() or nack() was called."""
        return self._msg.released

    def ack(self) -> None:
        """Remove the message for good (synced to disk as the queue's ``sync`` policy says)."""
        self._msg.ack()
        self._queue._synced()

    def nack(self) -> None:
        """Give the message back, at its place in the queue."""
        self._msg.nack()
        self._queue._synced()

    def __enter__(self) -> DurableMessage:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._msg.released:
            if exc_type is None:
                self.ack()
            else:
                self.nack()

    def __repr__(self) -> str:
        return f"<interlink.DurableMessage {self.value!r} deliveries={self.deliveries}>"


class Queue:
    """A multi-producer, multi-consumer queue shared between processes.

    The API of ``multiprocessing.Queue`` (``put``/``get`` with ``block`` and
    ``timeout``, ``*_nowait``, ``qsize``/``empty``/``full``, ``close``,
    ``join_thread``, ``cancel_join_thread``) raising ``queue.Empty`` /
    ``queue.Full`` (as :class:`~interlink.Empty` / :class:`~interlink.Full`),
    plus priorities (higher first, FIFO within a priority), ``put_many`` /
    ``get_many`` and names:

    * ``name=None`` creates an anonymous queue; pickle the handle to hand it to
      a child (spawn or fork); the receiver opens it by name, so the sender
      keeps its handle open until then.
    * a name creates the queue or opens the existing one (``create=True``
      requires creating it, ``False`` requires it to exist), so unrelated
      processes meet by name.  An existing queue keeps its own ``maxsize``,
      ``capacity`` and ``max_messages``; its codec must match (``Incompatible``).

    ``capacity`` is the payload space in bytes (an object whose record is
    larger raises ``MessageTooLarge``), ``max_messages`` the number of message
    slots (ready, being put, or held zero-copy by consumers).  Big objects are
    written once, straight into shared memory, and ``get`` returns numpy arrays
    and other out-of-band buffers as views of it (zero-copy; the space is freed
    when the last view goes).

    The pickle codec unpickles records only if the queue segment is owned by
    this user and writable by nobody else, or ``trusted=True``; otherwise
    ``get`` raises ``AccessDenied`` for a pickled record (the message is
    consumed).

    ``durable=True`` keeps the queue in the file ``path`` (``name`` is then
    only a label): it survives every process and a machine restart,
    ``get_message()`` returns a :class:`DurableMessage` to ``ack()`` or
    ``nack()``, and a consumer's unacknowledged messages are delivered again
    when it dies.  Every policy is safe against process crashes (the mapping
    is shared); against power loss: ``sync="always"`` flushes the mapping to
    disk (msync) after every put, take-and-ack, ack and nack; ``"batch"``
    flushes once ``sync_messages`` such operations of the handle are pending
    or ``sync_interval`` seconds after the first of them (default 256 / 0.05
    s), and on ``close()``; ``"os"`` leaves write-back to the page cache.
    """

    _kind_name = "queue"

    def __init__(
        self,
        name: str | None = None,
        maxsize: int = 0,
        *,
        create: bool | None = None,
        codec: str | Codec = "pickle",
        trusted: bool = False,
        mode: int = 0o600,
        capacity: int = DEFAULT_CAPACITY,
        max_messages: int | None = None,
        durable: bool = False,
        path: str | os.PathLike[str] | None = None,
        sync: str = "os",
        sync_messages: int | None = None,
        sync_interval: float | None = None,
    ) -> None:
        if sync not in _SYNC_POLICIES:
            raise ValueError(f"sync must be one of {_SYNC_POLICIES}, not {sync!r}")
        if sync != "batch" and (sync_messages is not None or sync_interval is not None):
            raise ValueError('sync_messages= and sync_interval= are for sync="batch"')
        if sync_messages is None:
            sync_messages = DEFAULT_SYNC_MESSAGES
        if sync_interval is None:
            sync_interval = DEFAULT_SYNC_INTERVAL
        if sync_messages < 1:
            raise ValueError(f"sync_messages must be at least 1, not {sync_messages}")
        if not 0 < sync_interval < float("inf"):
            raise ValueError(f"sync_interval must be a positive number, not {sync_interval}")
        if durable:
            if path is None:
                raise ValueError("a durable queue needs path= (the file that keeps it)")
        elif path is not None:
            raise ValueError("path= is for durable queues (durable=True)")
        self._durable = bool(durable)
        self._sync = sync if durable else "os"
        # True when every mutating call must call _synced() ("always" and "batch").
        self._sync_always = self._sync != "os"
        self._batch: _BatchSync | None = None
        if maxsize < 0:
            maxsize = 0  # multiprocessing: <= 0 means unbounded
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        if max_messages is None:
            max_messages = maxsize + _HELD_SLACK if maxsize else DEFAULT_MAX_MESSAGES
        if not 1 <= max_messages <= _native.QUEUE_MAX_ENTRIES:
            raise ValueError(
                f"max_messages must be within 1..{_native.QUEUE_MAX_ENTRIES}, not {max_messages}"
            )
        self._codec = get_codec(codec, trusted=trusted)
        self._trusted = bool(trusted)
        self._closed = False
        core = _native.QueueCore()
        self._core = core
        size = _native.queue_segment_size(max_messages, capacity)
        codec_id = self._codec.codec_id
        codec_name = self._codec.name

        def fmt(mm: Any, key: int) -> None:
            _DESC.pack_into(
                mm, _native.SEG_QUEUE_DESC, _DESC_MAGIC, codec_id, maxsize, codec_name.encode()
            )
            _native.queue_format(mm, max_messages, capacity, maxsize, durable)

        self._segment: Segment | _DurableFile
        if durable:
            assert path is not None
            self._segment = _DurableFile(
                Path(path),
                create=create,
                mode=mode,
                size=size,
                format=fmt,
                attach=core._bind,
                after_attach=self._boot_check,
                name=name,
            )
        else:
            self._segment = Segment.open(
                name,
                _native.KIND_QUEUE,
                size=size,
                layout=LAYOUT_VERSION,
                create=create,
                mode=mode,
                kind_size=size - _native.SEG_HEADER_SIZE,
                format=fmt,
                attach=core._bind,
            )
        try:
            magic, got_id, self._maxsize, got_name = _DESC.unpack_from(
                self._segment.mm, _native.SEG_QUEUE_DESC
            )
            check_descriptor(
                "queue", self.name, magic == _DESC_MAGIC, got_id, got_name, self._codec
            )
            if self._sync == "batch":
                self._batch = _BatchSync(self._segment.mm.flush, sync_messages, sync_interval)
            self._pickle_ok = segment_pickle_ok(self._codec, self._segment.fd, trusted)
            self._setup_fast_path()
        except BaseException:
            self._close_handle()
            raise

    # ------------------------------------------------------------ naming
    @property
    def name(self) -> str:
        """The queue's name (generated for an anonymous one)."""
        return self._segment.name

    @property
    def mode(self) -> int:
        """Permission bits the queue was created with."""
        return self._segment.mode

    @property
    def codec(self) -> Codec:
        """The codec objects travel with."""
        return self._codec

    @property
    def maxsize(self) -> int:
        """The queue's maxsize (0: unbounded)."""
        return int(self._maxsize)

    @property
    def capacity(self) -> int:
        """Payload space in bytes."""
        return self._core.arena_bytes

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called on this handle."""
        return self._closed

    @property
    def durable(self) -> bool:
        """Whether the queue lives in a file and redelivers unacknowledged messages."""
        return self._durable

    def _setup_fast_path(self) -> None:
        # put and get are one native call per object (docs/design/queue.md
        # section 7): QueueCore._put_obj / _get_obj frame and unframe small
        # pickles of the stock pickle codec themselves and hand everything
        # else to _put_slow / _get_slow.  The core holds only a weak reference
        # to this Queue and functions that hold none, so dropping the last
        # reference still closes the queue at once (__del__, no cycle).
        codec = self._codec
        core = self._core
        fast = type(codec) is PickleCodec
        cls = type(self)
        core._fast_setup(
            owner=weakref.ref(self),
            put_slow=cls._put_slow,
            get_slow=cls._get_slow,
            closed=QueueClosed,
            codec=codec,
            decode=functools.partial(_decode_record, codec, self._pickle_ok, self.name),
            errors=_PARSE_ERRORS,
            encode_error=codec._encode_error,
            dumps=pickle.dumps if fast else None,
            loads=pickle.loads if fast and self._pickle_ok else None,
            tail=codec._tail,
            limit=codec._fast_limit if fast else 0,  # type: ignore[attr-defined]
            watch=_WATCH,
            defer=self._sync_always,  # put/get then sync: the Python path
        )
        # The native methods are bound to the core, not to self (no cycle);
        # as instance attributes they skip a Python frame per call.  Not when
        # a subclass overrides put or get.
        if cls.put is Queue.put:
            self.__dict__["put"] = core._put_obj
        if cls.get is Queue.get:
            self.__dict__["get"] = core._get_obj

    def _boot_check(self) -> None:
        # Under the file's exclusive flock: the first opener after a machine
        # restart resets what the previous boot's processes left behind.
        if not self._core._same_boot():
            self._core._reboot_recover()
        # A file can be damaged at rest (disk, copy, a stray write): verify it
        # and rebuild the derived structures (heap, free stack, extent ring)
        # from the entry table, so that nothing is lost; a damaged entry
        # table itself raises Corrupt here, before any operation.
        try:
            self._core._check()
        except Corrupt:
            self._core._repair()

    @property
    def sync(self) -> str:
        """The sync policy: "os", "batch" or "always" (always "os" when not durable)."""
        return self._sync

    def _synced(self, count: int = 1) -> None:
        # After ``count`` operations that changed the mapping (put, take-and-ack, ack, nack).
        if self._batch is not None:
            self._batch.note(count)
        elif self._sync_always and not self._segment.closed:
            self._segment.mm.flush()  # msync(MS_SYNC): only dirty pages are written

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<interlink.{type(self).__name__} {self.name!r} {state}>"

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        # The receiver opens the queue by name: the sender keeps its handle
        # open until then.
        if isinstance(self._segment, _DurableFile):
            return (
                _reopen_durable,
                (
                    type(self),
                    self._segment.name,
                    str(self._segment.path),
                    self._codec,
                    self._trusted,
                    self._sync,
                    None if self._batch is None else self._batch.messages,
                    None if self._batch is None else self._batch.interval,
                ),
            )
        return (_reopen, (type(self), self.name, self._codec, self._trusted))

    # ------------------------------------------------------------ codec
    def _check_open(self) -> None:
        if self._closed:
            raise QueueClosed(f"{self._kind_name} {self.name!r} is closed")

    def _refuse_pickle(self, data: Any) -> None:
        refuse_pickle("queue", self.name, data)

    def _decode(self, data: bytes | _native.QueueMessage) -> Any:
        return _decode_record(self._codec, self._pickle_ok, self.name, data)

    def _put_record(self, obj: Any, block: bool, timeout: float | None, priority: int) -> None:
        record = self._codec.encode(obj)
        if type(record) is bytes:
            self._core.put(record, block, timeout, priority)
        else:
            # Encoded: written once, straight into the reserved shared memory.
            self._core._put_into(len(record), record.write_into, block, timeout, priority)  # type: ignore[union-attr]

    # ------------------------------------------------------------ queue API
    def put(
        self, obj: Any, block: bool = True, timeout: float | None = None, *, priority: int = 0
    ) -> None:
        """Put ``obj``; when the queue is full wait up to ``timeout`` seconds.

        Returns once the object is in the queue (visible to every consumer).
        Raises ``queue.Full`` (non-blocking or timed out), ``MessageTooLarge``
        (the record can never fit ``capacity``), ``EncodeError``,
        ``QueueClosed`` after ``close()``.
        """
        # Instances use the native method directly (_setup_fast_path); this
        # definition serves subclasses that override put and call it.
        self._core._put_obj(obj, block, timeout, priority)

    def _put_slow(self, obj: Any, block: bool, timeout: float | None, priority: int) -> None:
        # Everything QueueCore._put_obj does not put itself: the codec's path.
        self._check_open()
        self._put_record(obj, block, timeout, priority)
        if self._sync_always:
            self._synced()

    def put_nowait(self, obj: Any, *, priority: int = 0) -> None:
        """``put(obj, False)``."""
        self.put(obj, False, priority=priority)

    def put_many(
        self,
        objs: Iterable[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        priority: int = 0,
    ) -> int:
        """Put every object in order (small ones many per lock hold).

        Returns how many were put: all, unless the queue stayed full past
        ``timeout`` (or at once with ``block=False``); ``queue.Full`` only if
        none could be put.
        """
        self._check_open()
        records: list[Record] = self._core._encode_many(objs)  # small pickles framed natively
        if records and max(map(len, records)) > self._core.arena_bytes:
            # before any is put: the caller could not learn the count from the error
            raise MessageTooLarge(
                f"an object of {max(map(len, records))} bytes encoded can never fit "
                f"queue {self.name!r} ({self._core.arena_bytes} bytes of capacity)"
            )
        deadline = None if timeout is None or not block else time.monotonic() + timeout
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        done = 0
        i = 0
        total = len(records)
        core = self._core
        while i < total:
            j = i
            while j < total and type(records[j]) is bytes:
                j += 1
            try:
                if j > i:
                    k = core.put_many(
                        cast("list[bytes]", records[i:j]), block, _timeout_left(deadline), priority
                    )
                    done += k
                    if k < j - i:
                        return done
                    i = j
                else:
                    rec = records[i]
                    core._put_into(
                        len(rec),
                        rec.write_into,  # type: ignore[union-attr]
                        block,
                        _timeout_left(deadline),
                        priority,
                    )
                    done += 1
                    i += 1
            except InterlinkError as exc:
                if done and isinstance(exc, Full):
                    return done
                raise
        if self._sync_always:
            self._synced(done)
        return done

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the next object (highest priority, then oldest).

        Waits up to ``timeout`` seconds for one (``None``: forever);
        ``block=False`` does not wait.  Raises ``queue.Empty``,
        ``AccessDenied`` (a pickled record from an untrusted segment),
        ``QueueClosed`` after ``close()``.
        """
        return self._core._get_obj(block, timeout)  # see put

    def _get_slow(self, block: bool, timeout: float | None) -> Any:
        # QueueCore._get_obj's path for a closed handle or sync="always".
        self._check_open()
        value = self._decode(self._core.get(block, timeout))
        if self._sync_always:
            self._synced()
        return value

    def get_message(self, block: bool = True, timeout: float | None = None) -> DurableMessage:
        """Take the next object of a durable queue without removing it for good.

        Returns a :class:`DurableMessage`: its ``value`` (decoded as a copy),
        ``ack()`` / ``nack()``.  A message neither acked nor nacked when its
        process dies (or the machine restarts) is delivered again.  Waits and
        raises like ``get``; ``ValueError`` on a non-durable queue.
        """
        self._check_open()
        if not self._durable:
            raise ValueError("get_message() is for durable queues (durable=True)")
        msg = self._core.get_message(block, timeout)
        try:
            if not self._pickle_ok:
                self._refuse_pickle(msg)
            value = self._codec.decode(msg, copy=True)
        except BaseException:
            msg.nack()  # not consumed: back at its place
            raise
        return DurableMessage(self, msg, value)

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self.get(False)

    def get_many(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]:
        """Remove and return up to ``max_items`` objects (at least one).

        Waits like ``get`` for the first; the others are those ready now.
        """
        self._check_open()
        if max_items <= 0:
            raise ValueError(f"max_items must be positive, not {max_items}")
        step = _native.QUEUE_MANY_MAX
        # Decoded natively, a batch per mutex hold; an error while decoding
        # raises it (that batch is consumed, as get() consumes a message).
        take = self._core._get_many_obj
        out = take(min(max_items, step), block, timeout)
        while len(out) < max_items and not self._closed:  # (decoding may close it)
            try:
                out += take(min(max_items - len(out), step), False)
            except Empty:
                break
        if self._sync_always:  # durable: taken and acked
            self._synced(len(out))
        return out

    def qsize(self) -> int:
        """Objects ready to be taken now (a snapshot)."""
        self._check_open()
        return self._core.qsize()

    def empty(self) -> bool:
        """Whether no object is ready now (a snapshot)."""
        self._check_open()
        return self._core.empty()

    def full(self) -> bool:
        """Whether a put would have to wait now (a snapshot)."""
        self._check_open()
        return self._core.full()

    def close(self) -> None:
        """Close this handle: no more puts or gets through it.

        Every ``put`` already returned is in the queue (there is no feeder
        thread).  Objects still viewing the queue's memory (zero-copy arrays)
        stay valid.  The queue is removed when its last user closes it.
        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._close_handle()

    def _close_handle(self) -> None:
        self._closed = True
        batch = getattr(self, "_batch", None)
        if batch is not None:
            batch.close()  # the pending batch reaches the disk before the unmap
        self._core._close()
        self._segment.close()

    def join_thread(self) -> None:
        """Nothing to wait for: ``put`` is synchronous (no feeder thread).

        Raises ``ValueError`` before ``close()``, as multiprocessing does.
        """
        if not self._closed:
            raise ValueError("Queue.join_thread() called before close()")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: ``put`` is synchronous; nothing is lost at exit."""

    def unlink(self) -> None:
        """Remove the name now: new opens create a new queue."""
        self._check_open()
        self._segment.unlink()

    def stats(self) -> dict[str, int]:
        """Counters of the native core (ready, taken, dropped, ...)."""
        self._check_open()
        return self._core.stats()

    def __enter__(self: _Q) -> _Q:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        segment = getattr(self, "_segment", None)
        if segment is not None and not segment.closed:
            with contextlib.suppress(Exception):
                self._close_handle()


class JoinableQueue(Queue):
    """A :class:`Queue` with ``task_done`` and ``join``, across processes.

    Every ``put`` counts one unfinished task; ``task_done`` finishes one
    (``ValueError`` if called more times than objects were put); ``join``
    waits until none is unfinished.
    """

    _kind_name = "joinable queue"

    def task_done(self) -> None:
        """Mark one object taken by ``get`` as processed."""
        self._check_open()
        try:
            self._core.task_done(1)
        except ValueError:
            raise ValueError("task_done() called too many times") from None

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every object put has been marked done by ``task_done``.

        ``timeout`` (an extension): give up after that many seconds and return
        False; True when all tasks are done.
        """
        self._check_open()
        return self._core.join(timeout)


class SimpleQueue(Queue):
    """multiprocessing.SimpleQueue's API (``put``, ``get``, ``empty``, ``close``)
    over an unbounded :class:`Queue`."""

    _kind_name = "simple queue"


def _reopen(cls: type[_Q], name: str, codec: Codec, trusted: bool) -> _Q:
    return cls(name, create=False, codec=codec, trusted=trusted)


def _reopen_durable(
    cls: type[_Q],
    name: str,
    path: str,
    codec: Codec,
    trusted: bool,
    sync: str,
    sync_messages: int | None,
    sync_interval: float | None,
) -> _Q:
    return cls(
        name,
        create=False,
        codec=codec,
        trusted=trusted,
        durable=True,
        path=path,
        sync=sync,
        sync_messages=sync_messages,
        sync_interval=sync_interval,
    )


for _cls in (Queue, JoinableQueue, SimpleQueue, QueueClosed, DurableMessage):
    _cls.__module__ = "interlink"  # tracebacks and reprs name the public path
