"""The transports the benchmark compares, one small class each.

A :class:`Peer` lives in the parent process. For each measurement it creates
a :class:`Link` (or a :class:`RoundTripLink` for ping-pong) inside a context
manager that owns whatever the transport needs (pipes, sockets, named queues,
shared memory) and removes it afterwards. The link is pickled into the two
child processes, where ``sender()`` / ``receiver()`` open the two ends.

Every end offers the same small API (:class:`Sender`, :class:`Receiver`), so
the worker functions in :mod:`.workers` run the same loop for every transport.

Optional transports (faster-fifo, pyzmq, posix_ipc, iceoryx2) are imported
only in the processes that use them, through :func:`load`, so this module
imports without any of them installed. interlink's channel is reached the
same way, through its public API only (``il.Channel`` and ``Message``), so
the harness does not depend on the core's internals; a channel that fails at
run time shows up as an error cell like any other transport.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import functools
import importlib
import importlib.util
import itertools
import os
import resource
import socket
import struct
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from multiprocessing import get_context
from multiprocessing.reduction import DupFd
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .framing import FrameReader, write_frame
from .results import NotApplicable
from .settings import ALL_SCENARIOS, STAMP_SIZE, Scenario, Settings

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from typing_extensions import Buffer

STAMP = struct.Struct("<Q")

SPAWN = get_context("spawn")
"""Every child process of the benchmark is started with this context."""


def load(module: str) -> Any:
    """Import and return ``module``; typed ``Any`` because most peers ship no type hints."""
    return importlib.import_module(module)


def stamp(buf: Buffer, seq: int) -> None:
    """Write ``seq`` into the first and the last 8 bytes of the writable buffer ``buf``."""
    view = memoryview(buf)
    try:
        STAMP.pack_into(view, 0, seq)
        STAMP.pack_into(view, view.nbytes - STAMP_SIZE, seq)
    finally:
        view.release()


def read_stamps(buf: Buffer) -> tuple[int, int, int]:
    """Return ``(first stamp, last stamp, size in bytes)`` of a message, copying nothing."""
    view = memoryview(buf)
    try:
        size = view.nbytes
        return (
            STAMP.unpack_from(view, 0)[0],
            STAMP.unpack_from(view, size - STAMP_SIZE)[0],
            size,
        )
    finally:
        view.release()


# ---------------------------------------------------------------- the ends


class Sender(abc.ABC):
    """The sending end of a link, opened in a child process."""

    def __init__(self, size: int) -> None:
        """Prepare the ``size``-byte payload that :meth:`send_stamped` sends."""
        self.size = size
        self.payload = bytearray(size)

    @abc.abstractmethod
    def send(self, data: Buffer) -> None:
        """Send ``data`` as one message; blocks while the transport is full."""

    def send_many(self, items: Sequence[Buffer]) -> None:
        """Send every item of ``items`` as its own message, in order."""
        for item in items:
            self.send(item)

    def send_stamped(self, seq: int) -> None:
        """Send a ``size``-byte message whose first and last 8 bytes hold ``seq``.

        Peers patch the prepared payload and send it (a copy); zero-copy ends
        override this to write only the two stamps in place.
        """
        stamp(self.payload, seq)
        self.send(self.payload)

    def figures(self) -> dict[str, float]:
        """Counters of this end worth reporting (none for most transports)."""
        return {}

    def close(self) -> None:  # noqa: B027 - most ends have nothing to close
        """Release the end; safe to call twice."""


class Receiver(abc.ABC):
    """The receiving end of a link, opened in a child process."""

    @abc.abstractmethod
    def recv(self) -> Buffer:
        """Block until a message arrives and return it (valid until :meth:`release`)."""

    def recv_many(self) -> Sequence[Buffer]:
        """Block until at least one message arrives; return the ones available."""
        return (self.recv(),)

    def release(self, msg: Buffer) -> None:  # noqa: B027 - most messages are plain objects
        """Give ``msg`` back to the transport; it must not be used afterwards."""

    def close(self) -> None:  # noqa: B027
        """Release the end; safe to call twice."""


class Link(abc.ABC):
    """One direction of a transport; picklable, its ends are opened in the children."""

    def __init__(self, size: int) -> None:
        """A link that carries messages of ``size`` bytes."""
        self.size = size

    @abc.abstractmethod
    def sender(self) -> Sender:
        """Open the sending end (in the sending process)."""

    @abc.abstractmethod
    def receiver(self) -> Receiver:
        """Open the receiving end (in the receiving process)."""


class RoundTripLink(abc.ABC):
    """Both directions between a pinger and a ponger; picklable."""

    @abc.abstractmethod
    def pinger(self) -> tuple[Sender, Receiver]:
        """Open the pinger's ends: where it sends pings, where it receives pongs."""

    @abc.abstractmethod
    def ponger(self) -> tuple[Sender, Receiver]:
        """Open the ponger's ends: where it sends pongs, where it receives pings."""


class PairedLinks(RoundTripLink):
    """A round trip over two one-way links (``there``: pings, ``back``: pongs)."""

    def __init__(self, there: Link, back: Link) -> None:
        """Pair two links of the same transport."""
        self.there = there
        self.back = back

    def pinger(self) -> tuple[Sender, Receiver]:
        """Send on ``there``, receive on ``back``."""
        return self.there.sender(), self.back.receiver()

    def ponger(self) -> tuple[Sender, Receiver]:
        """Receive on ``there``, send on ``back``."""
        return self.back.sender(), self.there.receiver()


# ---------------------------------------------------------------- peers


class Peer(abc.ABC):
    """A row of the result table: one transport, used in one particular way."""

    family = ""
    """What ``--only`` also matches (e.g. every "interlink ..." row)."""
    requires: tuple[str, ...] = ()
    """Modules that must be importable, else the row shows "not installed"."""

    def __init__(
        self,
        label: str,
        *,
        scenarios: Sequence[Scenario] = ALL_SCENARIOS,
        batch: bool = False,
        loan: bool = False,
    ) -> None:
        """A row named ``label`` measuring ``scenarios``.

        ``batch``: 64 B one-way uses send_many / recv_many. ``loan``: 1 MiB
        senders write the stamps in place into loaned memory.
        """
        self.label = label
        self.scenarios = tuple(scenarios)
        self.batch = batch
        self.loan = loan

    def missing(self) -> str | None:
        """Return why the transport cannot be used here ("not installed"), or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        return None

    @abc.abstractmethod
    def link(self, size: int, settings: Settings, workdir: Path) -> AbstractContextManager[Link]:
        """Create a one-way link for ``size``-byte messages; removed again on exit.

        Raises :class:`NotApplicable` when the system cannot carry such messages.
        """

    @contextlib.contextmanager
    def roundtrip_link(self, settings: Settings, workdir: Path) -> Iterator[RoundTripLink]:
        """Create the two directions of a 64 B ping-pong; removed again on exit."""
        with (
            self.link(settings.small_size, settings, workdir) as there,
            self.link(settings.small_size, settings, workdir) as back,
        ):
            yield PairedLinks(there, back)


# ---------------------------------------------------------------- interlink


class InterlinkLink(Link):
    """An interlink channel, known to the children by its name."""

    def __init__(self, size: int, name: str, capacity: int, batch: int, loan: bool) -> None:
        """Ends open ``il.Channel(name, capacity=capacity)``."""
        super().__init__(size)
        self.name = name
        self.capacity = capacity
        self.batch = batch
        self.loan = loan

    def sender(self) -> Sender:
        """Open the channel for sending."""
        return InterlinkSender(self)

    def receiver(self) -> Receiver:
        """Open the channel for receiving."""
        return InterlinkReceiver(self)


class InterlinkSender(Sender):
    """``send`` / ``send_many``, or for ``loan`` links a loan written in place."""

    def __init__(self, link: InterlinkLink) -> None:
        """Open the link's channel."""
        super().__init__(link.size)
        il = load("interlink")
        self._ch = il.Channel(link.name, capacity=link.capacity)
        self._loan = link.loan

    def send(self, data: Buffer) -> None:
        """One ``Channel.send`` call."""
        self._ch.send(data)

    def send_many(self, items: Sequence[Buffer]) -> None:
        """One ``Channel.send_many`` call."""
        self._ch.send_many(items)

    def send_stamped(self, seq: int) -> None:
        """Loan ``size`` bytes and write only the two stamps (zero copy), else send a copy."""
        if not self._loan:
            super().send_stamped(seq)
            return
        with self._ch.loan(self.size) as buf:
            stamp(buf, seq)

    def close(self) -> None:
        """Close the channel handle (the parent unlinks the channel)."""
        self._ch.close()


class InterlinkReceiver(Receiver):
    """``recv`` / ``recv_many``; messages are views of shared memory, released after use."""

    def __init__(self, link: InterlinkLink) -> None:
        """Open the link's channel."""
        il = load("interlink")
        self._ch = il.Channel(link.name, capacity=link.capacity)
        self._batch = link.batch

    def recv(self) -> Buffer:
        """One ``Channel.recv`` call."""
        msg: Buffer = self._ch.recv()
        return msg

    def recv_many(self) -> Sequence[Buffer]:
        """One ``Channel.recv_many`` call (up to ``batch`` messages)."""
        msgs: Sequence[Buffer] = self._ch.recv_many(max_count=self._batch)
        return msgs

    def release(self, msg: Buffer) -> None:
        """``Message.release()``: the slot goes back to the channel."""
        msg.release()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Close the channel handle."""
        self._ch.close()


class InterlinkPeer(Peer):
    """interlink channels: the parent creates each channel and unlinks it afterwards."""

    family = "interlink"

    def missing(self) -> str | None:
        """interlink is never "not installed": a failing import is an error cell."""
        return None

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """Create a fresh channel of ``settings.capacity`` bytes."""
        il = load("interlink")
        name: str = load("interlink.testing").unique_name("bench")
        ch = il.Channel(name, capacity=settings.capacity)
        try:
            yield InterlinkLink(size, name, settings.capacity, settings.batch, self.loan)
        finally:
            try:
                ch.unlink()
            finally:
                ch.close()


# ---------------------------------------------------------------- os.pipe


class PipeLink(Link):
    """An ``os.pipe``; both descriptors travel to the children when they are spawned."""

    def __init__(self, size: int, read_fd: int, write_fd: int) -> None:
        """Wrap the two descriptors of a pipe."""
        super().__init__(size)
        self.read_fd = read_fd
        self.write_fd = write_fd

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the descriptors with ``DupFd`` so that the spawned child inherits them."""
        return (_rebuild_pipe_link, (self.size, DupFd(self.read_fd), DupFd(self.write_fd)))

    def sender(self) -> Sender:
        """Write frames with ``os.writev``."""
        return StreamSender(self.size, functools.partial(os.writev, self.write_fd))

    def receiver(self) -> Receiver:
        """Read frames with ``os.readv`` into the reader's buffer."""
        fd = self.read_fd
        return StreamReceiver(FrameReader(lambda view: os.readv(fd, (view,))))


def _rebuild_pipe_link(size: int, read_fd: Any, write_fd: Any) -> PipeLink:
    """Unpickle a :class:`PipeLink` from the descriptors the child inherited."""
    return PipeLink(size, read_fd.detach(), write_fd.detach())


class StreamSender(Sender):
    """Length-prefixed frames over a byte stream, one vectored write each."""

    def __init__(self, size: int, writev: Any) -> None:
        """Write through ``writev`` (``os.writev`` or ``socket.sendmsg`` bound to the end)."""
        super().__init__(size)
        self._writev = writev

    def send(self, data: Buffer) -> None:
        """Write ``data`` as one frame."""
        write_frame(self._writev, data)


class StreamReceiver(Receiver):
    """Frames cut from a byte stream; each is a view valid until the next ``recv``."""

    def __init__(self, reader: FrameReader) -> None:
        """Receive through ``reader``."""
        self._reader = reader

    def recv(self) -> Buffer:
        """Return the next frame's payload."""
        return self._reader.read_frame()


class PipePeer(Peer):
    """``os.pipe`` with 4-byte length-prefixed frames."""

    family = "pipe"

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """Create a pipe; the parent closes its descriptors afterwards."""
        read_fd, write_fd = os.pipe()
        try:
            yield PipeLink(size, read_fd, write_fd)
        finally:
            os.close(read_fd)
            os.close(write_fd)


# ---------------------------------------------------------------- socketpair


class SocketPairLink(Link):
    """A connected ``AF_UNIX`` / ``SOCK_STREAM`` socket pair (sockets pickle for spawn)."""

    def __init__(self, size: int, send_sock: socket.socket, recv_sock: socket.socket) -> None:
        """Wrap both sockets of the pair."""
        super().__init__(size)
        self.send_sock = send_sock
        self.recv_sock = recv_sock

    def sender(self) -> Sender:
        """Write frames with ``sendmsg`` (header and payload in one call)."""
        return StreamSender(self.size, self.send_sock.sendmsg)

    def receiver(self) -> Receiver:
        """Read frames with ``recv_into``; 1 MiB frames land in a preallocated buffer."""
        return StreamReceiver(FrameReader(self.recv_sock.recv_into))


class SocketPairPeer(Peer):
    """``socket.socketpair()`` with 4-byte length-prefixed frames."""

    family = "socketpair"

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """Create a socket pair; the parent closes its copies afterwards."""
        send_sock, recv_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            yield SocketPairLink(size, send_sock, recv_sock)
        finally:
            send_sock.close()
            recv_sock.close()


# ---------------------------------------------------------------- multiprocessing


class MpPipeLink(Link):
    """A one-way ``multiprocessing.Pipe`` (``send_bytes`` / ``recv_bytes``)."""

    def __init__(self, size: int, reader: Connection, writer: Connection) -> None:
        """Wrap both connections of the pipe."""
        super().__init__(size)
        self.reader = reader
        self.writer = writer

    def sender(self) -> Sender:
        """``Connection.send_bytes``."""
        return MpPipeSender(self.size, self.writer)

    def receiver(self) -> Receiver:
        """``Connection.recv_bytes``."""
        return MpPipeReceiver(self.reader)


class MpPipeSender(Sender):
    """``send_bytes`` on the writing connection."""

    def __init__(self, size: int, conn: Connection) -> None:
        """Send on ``conn``."""
        super().__init__(size)
        self._conn = conn

    def send(self, data: Buffer) -> None:
        """``send_bytes(data)``."""
        self._conn.send_bytes(data)


class MpPipeReceiver(Receiver):
    """``recv_bytes`` on the reading connection."""

    def __init__(self, conn: Connection) -> None:
        """Receive on ``conn``."""
        self._conn = conn

    def recv(self) -> Buffer:
        """``recv_bytes()``: a new bytes object per message."""
        return self._conn.recv_bytes()


class MpPipePeer(Peer):
    """``multiprocessing.Pipe(duplex=False)``."""

    family = "mp.Pipe"

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """Create the pipe; the parent closes its connections afterwards."""
        reader, writer = SPAWN.Pipe(duplex=False)
        try:
            yield MpPipeLink(size, reader, writer)
        finally:
            reader.close()
            writer.close()


class QueueLink(Link):
    """A queue object that pickles into spawned children (multiprocessing, faster-fifo)."""

    def __init__(self, size: int, queue: Any, timeout: float, batched: bool) -> None:
        """Wrap ``queue``; ``timeout`` bounds faster-fifo's blocking calls."""
        super().__init__(size)
        self.queue = queue
        self.timeout = timeout
        self.batched = batched

    def sender(self) -> Sender:
        """``put`` (and ``put_many`` for faster-fifo)."""
        if self.batched:
            return FasterFifoSender(self.size, self.queue, self.timeout)
        return MpQueueSender(self.size, self.queue)

    def receiver(self) -> Receiver:
        """``get`` (and ``get_many`` for faster-fifo)."""
        if self.batched:
            return FasterFifoReceiver(self.queue, self.timeout)
        return MpQueueReceiver(self.queue)


class MpQueueSender(Sender):
    """``multiprocessing.Queue.put``: pickled and written by the queue's feeder thread."""

    def __init__(self, size: int, queue: Any) -> None:
        """Put on ``queue``."""
        super().__init__(size)
        self._queue = queue

    def send(self, data: Buffer) -> None:
        """``put(data)``, with an immutable copy of ``data`` unless it already is bytes.

        The feeder thread pickles the object later, after ``put`` returned: a
        buffer the caller goes on changing (the stamped 1 MiB payload) would
        be sent with the next message's stamps.
        """
        self._queue.put(data if isinstance(data, bytes) else bytes(data))

    def close(self) -> None:
        """Flush the feeder thread, so every message put is delivered."""
        self._queue.close()
        self._queue.join_thread()


class MpQueueReceiver(Receiver):
    """``multiprocessing.Queue.get``."""

    def __init__(self, queue: Any) -> None:
        """Get from ``queue``."""
        self._queue = queue

    def recv(self) -> Buffer:
        """``get()``: unpickles a new object per message."""
        msg: Buffer = self._queue.get()
        return msg


class MpQueuePeer(Peer):
    """``multiprocessing.Queue`` (spawn context)."""

    family = "mp.Queue"

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """Create the queue; the parent closes it afterwards."""
        queue = SPAWN.Queue()
        try:
            yield QueueLink(size, queue, settings.timeout, batched=False)
        finally:
            queue.close()
            queue.cancel_join_thread()


class FasterFifoSender(Sender):
    """``faster_fifo.Queue.put`` / ``put_many``."""

    def __init__(self, size: int, queue: Any, timeout: float) -> None:
        """Put on ``queue``, waiting at most ``timeout`` seconds for room."""
        super().__init__(size)
        self._queue = queue
        self._timeout = timeout

    def send(self, data: Buffer) -> None:
        """``put(data)``."""
        self._queue.put(data, block=True, timeout=self._timeout)

    def send_many(self, items: Sequence[Buffer]) -> None:
        """``put_many(items)``."""
        self._queue.put_many(list(items), block=True, timeout=self._timeout)


class FasterFifoReceiver(Receiver):
    """``faster_fifo.Queue.get`` / ``get_many``."""

    def __init__(self, queue: Any, timeout: float) -> None:
        """Get from ``queue``, waiting at most ``timeout`` seconds."""
        self._queue = queue
        self._timeout = timeout

    def recv(self) -> Buffer:
        """``get()``."""
        msg: Buffer = self._queue.get(block=True, timeout=self._timeout)
        return msg

    def recv_many(self) -> Sequence[Buffer]:
        """``get_many()`` with the library's default limit (everything available)."""
        msgs: Sequence[Buffer] = self._queue.get_many(block=True, timeout=self._timeout)
        return msgs


class FasterFifoPeer(Peer):
    """``faster_fifo.Queue`` with ``settings.capacity`` bytes; 64 B one-way is batched."""

    family = "faster-fifo"
    requires = ("faster_fifo",)

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """Create the queue in the parent (its buffer is shared memory)."""
        faster_fifo = load("faster_fifo")
        queue = faster_fifo.Queue(max_size_bytes=settings.capacity)
        try:
            yield QueueLink(size, queue, settings.timeout, batched=True)
        finally:
            queue.close()


# ---------------------------------------------------------------- pyzmq


class ZmqLink(Link):
    """PUSH (connects) -> PULL (binds) over ``ipc://``."""

    def __init__(self, size: int, address: str) -> None:
        """Use the ``ipc://`` endpoint ``address``."""
        super().__init__(size)
        self.address = address

    def sender(self) -> Sender:
        """A PUSH socket connected to the address."""
        zmq = load("zmq")
        return ZmqEnd(self.size, zmq.PUSH, connect=self.address)

    def receiver(self) -> Receiver:
        """A PULL socket bound to the address."""
        zmq = load("zmq")
        return ZmqEnd(self.size, zmq.PULL, bind=self.address)


class ZmqPairLink(RoundTripLink):
    """One PAIR socket on each side (the pinger binds)."""

    def __init__(self, size: int, address: str) -> None:
        """Use the ``ipc://`` endpoint ``address``."""
        self.size = size
        self.address = address

    def pinger(self) -> tuple[Sender, Receiver]:
        """The binding PAIR socket, for both directions."""
        end = ZmqEnd(self.size, load("zmq").PAIR, bind=self.address)
        return end, end

    def ponger(self) -> tuple[Sender, Receiver]:
        """The connecting PAIR socket, for both directions."""
        end = ZmqEnd(self.size, load("zmq").PAIR, connect=self.address)
        return end, end


class ZmqEnd(Sender, Receiver):
    """A zmq socket in its own context; large messages are received without a copy."""

    LINGER_MS = 5_000

    def __init__(
        self, size: int, kind: int, *, bind: str | None = None, connect: str | None = None
    ) -> None:
        """Open a socket of ``kind`` and bind or connect it."""
        Sender.__init__(self, size)
        zmq = load("zmq")
        self._context = zmq.Context()
        self._sock = self._context.socket(kind)
        if bind is not None:
            self._sock.bind(bind)
        if connect is not None:
            self._sock.connect(connect)
        # Frames (zero-copy) pay off above pyzmq's copy threshold; below it bytes are faster.
        self._copy = size < zmq.COPY_THRESHOLD
        self._closed = False

    def send(self, data: Buffer) -> None:
        """``send(data)`` (pyzmq copies it, so the caller may reuse the buffer)."""
        self._sock.send(data)

    def recv(self) -> Buffer:
        """``recv()``; for large messages ``recv(copy=False).buffer``."""
        if self._copy:
            msg: Buffer = self._sock.recv()
            return msg
        view: Buffer = self._sock.recv(copy=False).buffer
        return view

    def close(self) -> None:
        """Close the socket (waiting up to 5 s for queued messages) and the context."""
        if not self._closed:
            self._closed = True
            self._sock.close(linger=self.LINGER_MS)
            self._context.term()


class ZmqPeer(Peer):
    """pyzmq: PUSH/PULL one way, PAIR for the round trip, over ``ipc://`` in a temp dir."""

    family = "pyzmq"
    requires = ("zmq",)
    _counter = itertools.count()

    def _address(self, workdir: Path) -> str:
        """Return a fresh ``ipc://`` endpoint inside ``workdir``."""
        return f"ipc://{workdir}/zmq-{next(self._counter)}.sock"

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """An endpoint in ``workdir`` (removed with it)."""
        yield ZmqLink(size, self._address(workdir))

    @contextlib.contextmanager
    def roundtrip_link(self, settings: Settings, workdir: Path) -> Iterator[RoundTripLink]:
        """One PAIR endpoint in ``workdir``."""
        yield ZmqPairLink(settings.small_size, self._address(workdir))


# ---------------------------------------------------------------- posix_ipc


class PosixMqLink(Link):
    """A POSIX message queue, known to the children by its name."""

    def __init__(self, size: int, name: str) -> None:
        """Use the queue called ``name``."""
        super().__init__(size)
        self.name = name

    def sender(self) -> Sender:
        """Open the queue and ``send``."""
        return PosixMqSender(self.size, self.name)

    def receiver(self) -> Receiver:
        """Open the queue and ``receive``."""
        return PosixMqReceiver(self.name)


class PosixMqSender(Sender):
    """``MessageQueue.send``; blocks while the queue holds its maximum of messages."""

    def __init__(self, size: int, name: str) -> None:
        """Open the existing queue ``name``."""
        super().__init__(size)
        self._mq = load("posix_ipc").MessageQueue(name)

    def send(self, data: Buffer) -> None:
        """``send(data)``."""
        self._mq.send(data)

    def close(self) -> None:
        """Close the queue descriptor."""
        self._mq.close()


class PosixMqReceiver(Receiver):
    """``MessageQueue.receive``."""

    def __init__(self, name: str) -> None:
        """Open the existing queue ``name``."""
        self._mq = load("posix_ipc").MessageQueue(name)

    def recv(self) -> Buffer:
        """``receive()[0]``: a new bytes object per message."""
        msg: Buffer = self._mq.receive()[0]
        return msg

    def close(self) -> None:
        """Close the queue descriptor."""
        self._mq.close()


def _read_int(path: str) -> int | None:
    """Return the integer in the file at ``path``, or None if it cannot be read."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _mq_limit_reason(size: int, error: Exception) -> str:
    """Explain why the kernel refused a message queue of ``size``-byte messages."""
    msgsize_max = _read_int("/proc/sys/fs/mqueue/msgsize_max")
    if msgsize_max is not None and size > msgsize_max:
        return (
            f"{size} B messages exceed the system limit "
            f"fs.mqueue.msgsize_max = {msgsize_max} B (/proc/sys/fs/mqueue/msgsize_max)"
        )
    soft, _hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
    return f"the kernel refused {size} B messages ({error}); RLIMIT_MSGQUEUE = {soft} B"


class PosixIpcPeer(Peer):
    """``posix_ipc.MessageQueue`` with the system's default queue depth."""

    family = "posix_ipc"
    requires = ("posix_ipc",)

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """Create a queue for ``size``-byte messages; unlinked afterwards.

        Raises :class:`NotApplicable` when the system limits forbid that size.
        """
        posix_ipc = load("posix_ipc")
        name = f"/interlink-bench-{uuid.uuid4().hex[:16]}"
        try:
            mq = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_message_size=size)
        except (ValueError, OSError) as exc:
            raise NotApplicable(_mq_limit_reason(size, exc)) from exc
        try:
            yield PosixMqLink(size, name)
        finally:
            mq.close()
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_message_queue(name)


# ---------------------------------------------------------------- iceoryx2


class Iceoryx2Link(Link):
    """An iceoryx2 publish-subscribe service plus an event service to wake the subscriber.

    The configuration is private to the benchmark (its own root directory and
    file prefix), so whatever iceoryx2 leaves behind can be removed afterwards.
    """

    def __init__(
        self, size: int, service: str, root: str, prefix: str, depth: int, loan: bool
    ) -> None:
        """Describe the service; ``depth`` is the subscriber's buffer size in samples."""
        super().__init__(size)
        self.service = service
        self.root = root
        self.prefix = prefix
        self.depth = depth
        self.loan = loan

    def open(self) -> tuple[Any, Any, Any, Any]:
        """Return ``(iceoryx2 module, node, pub-sub service, event service)``.

        Opens the services or creates them; both sides ask for the same
        settings: a slice of bytes, no overflow (a full subscriber makes the
        publisher wait, no message is dropped), ``depth`` samples buffered.
        """
        iox2 = load("iceoryx2")
        iox2.set_log_level(iox2.LogLevel.Error)
        config = iox2.config.default()
        config.global_cfg.prefix = iox2.FileName.new(self.prefix)
        config.global_cfg.root_path = iox2.Path.new(self.root)
        node = (
            iox2.NodeBuilder.new()
            .config(config)
            .signal_handling_mode(iox2.SignalHandlingMode.Disabled)
            .create(iox2.ServiceType.Ipc)
        )
        name = iox2.ServiceName.new(self.service)
        pubsub = (
            node.service_builder(name)
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(self.depth)
            .open_or_create()
        )
        event = node.service_builder(name).event().open_or_create()
        return iox2, node, pubsub, event

    def sender(self) -> Sender:
        """A publisher and a notifier."""
        return Iceoryx2Sender(self)

    def receiver(self) -> Receiver:
        """A subscriber and a listener."""
        return Iceoryx2Receiver(self)


class Iceoryx2Sender(Sender):
    """Loan a sample, fill it, send it, notify the listener.

    The publisher asks to wait while the subscriber is full
    (``RetryUntilDelivered``, safe overflow off), but with iceoryx2 0.10 that
    only holds once the subscriber has called ``receive()``: before, a send to
    a full subscriber returns 0 recipients and the sample is silently dropped.
    So the sender checks that count and, while it is 0, wakes the subscriber,
    yields the CPU and sends the message again (``undelivered_retries``).
    """

    def __init__(self, link: Iceoryx2Link) -> None:
        """Create the publisher (waits while the subscriber is full) and the notifier."""
        super().__init__(link.size)
        iox2, self._node, self._pubsub, self._event = link.open()
        self._publisher = (
            self._pubsub.publisher_builder()
            .initial_max_slice_len(link.size)
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        self._notifier = self._event.notifier_builder().create()
        self._loan = link.loan
        self.retries = 0

    def send(self, data: Buffer) -> None:
        """Copy ``data`` into a loaned sample and send it, until the subscriber got it."""
        view = memoryview(data).cast("B")
        while True:
            sample = self._publisher.loan_slice_uninit(view.nbytes)
            sample.payload().as_memory_view().cast("B")[:] = view
            if sample.assume_init().send():
                break
            self._retry()
        self._notifier.notify()

    def send_stamped(self, seq: int) -> None:
        """With ``loan``: write only the two stamps into the loaned sample (zero copy)."""
        if not self._loan:
            super().send_stamped(seq)
            return
        while True:
            sample = self._publisher.loan_slice_uninit(self.size)
            stamp(sample.payload().as_memory_view(), seq)
            if sample.assume_init().send():
                break
            self._retry()
        self._notifier.notify()

    def _retry(self) -> None:
        """Count an undelivered send, wake the subscriber and let it run."""
        self.retries += 1
        self._notifier.notify()
        os.sched_yield()

    def figures(self) -> dict[str, float]:
        """How many sends had to be repeated because the subscriber was full."""
        return {"undelivered_retries": self.retries}

    def close(self) -> None:
        """Drop the ports and the node."""
        self._notifier = self._publisher = self._event = self._pubsub = self._node = None


class Iceoryx2Receiver(Receiver):
    """``Subscriber.receive`` (non-blocking); when empty, wait on the event listener."""

    def __init__(self, link: Iceoryx2Link) -> None:
        """Create the subscriber and the listener."""
        iox2, self._node, self._pubsub, self._event = link.open()
        self._subscriber = self._pubsub.subscriber_builder().create()
        self._listener = self._event.listener_builder().create()
        self._wait = iox2.Duration.from_secs(1)
        self._held: Any = None

    def recv(self) -> Buffer:
        """Return a zero-copy view of the next sample's payload (held until ``release``)."""
        while True:
            sample = self._subscriber.receive()
            if sample is not None:
                break
            self._listener.timed_wait(self._wait)
        self._held = sample
        view: Buffer = sample.payload().as_memory_view().cast("B")
        return view

    def release(self, msg: Buffer) -> None:
        """Return the sample to the publisher's pool."""
        held, self._held = self._held, None
        if isinstance(msg, memoryview):
            msg.release()
        if held is not None:
            held.delete()

    def close(self) -> None:
        """Drop the ports and the node."""
        self._held = None
        self._listener = self._subscriber = self._event = self._pubsub = self._node = None


class Iceoryx2Peer(Peer):
    """iceoryx2 publish-subscribe (slices of bytes) with an event service for blocking waits."""

    family = "iceoryx2"
    requires = ("iceoryx2",)

    @contextlib.contextmanager
    def link(self, size: int, settings: Settings, workdir: Path) -> Iterator[Link]:
        """Create the services in the parent; remove every file iceoryx2 left afterwards."""
        tag = uuid.uuid4().hex[:12]
        root = workdir / "iceoryx2"
        root.mkdir(exist_ok=True)
        link = Iceoryx2Link(
            size,
            service=f"interlink-bench/{tag}",
            root=f"{root}/",
            prefix=f"ilbench{tag}_",
            depth=max(2, min(1024, settings.capacity // size)),
            loan=self.loan,
        )
        try:
            # The parent holds the services for the whole measurement: both children
            # open what exists, with the same settings, whichever of them comes first.
            opened = link.open()
            try:
                yield link
            finally:
                del opened
        finally:
            for leftover in Path("/dev/shm").glob(f"{link.prefix}*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()


# ---------------------------------------------------------------- the rows

REFERENCE = {
    Scenario.ROUNDTRIP: "interlink",
    Scenario.SMALL: "interlink",
    Scenario.LARGE: "interlink send+view",
    Scenario.IDLE: "interlink",
}
"""The interlink row each scenario's ratios are computed against (same work as the peers)."""


def all_peers() -> list[Peer]:
    """Return every row of the channel benchmark, interlink's variants first."""
    rt, small, large, idle = Scenario.ROUNDTRIP, Scenario.SMALL, Scenario.LARGE, Scenario.IDLE
    return [
        InterlinkPeer("interlink", scenarios=(rt, small, idle)),
        InterlinkPeer("interlink batch", scenarios=(small,), batch=True),
        InterlinkPeer("interlink send+view", scenarios=(large,)),
        InterlinkPeer("interlink loan+view", scenarios=(large,), loan=True),
        PipePeer("os.pipe"),
        SocketPairPeer("socketpair"),
        MpPipePeer("mp.Pipe"),
        MpQueuePeer("mp.Queue"),
        FasterFifoPeer("faster-fifo", batch=True),
        ZmqPeer("pyzmq"),
        PosixIpcPeer("posix_ipc"),
        Iceoryx2Peer("iceoryx2"),
        Iceoryx2Peer("iceoryx2 loan+view", scenarios=(large,), loan=True),
    ]


def select(names: Sequence[str]) -> list[Peer]:
    """Return the rows whose label or family matches one of ``names`` (all rows if empty).

    Matching ignores case. Raises ``ValueError`` naming the choices when a
    name matches nothing.
    """
    peers = all_peers()
    if not names:
        return peers
    wanted = {name.casefold() for name in names}
    chosen = [p for p in peers if {p.label.casefold(), p.family.casefold()} & wanted]
    known = {p.label.casefold() for p in peers} | {p.family.casefold() for p in peers}
    unknown = sorted(wanted - known)
    if unknown:
        choices = ", ".join(sorted({p.label for p in peers} | {p.family for p in peers}))
        raise ValueError(f"unknown transport {', '.join(unknown)}; choose from: {choices}")
    return chosen
