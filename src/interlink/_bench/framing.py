"""Length-prefixed framing over byte streams (pipes and stream sockets).

A frame is a 4-byte little-endian length followed by that many bytes. The
writer hands header and payload to one vectored write (``os.writev`` or
``socket.sendmsg``), so a message costs one system call and no concatenation.
The reader reads big chunks into a buffer it owns and cuts frames out of it,
so many small frames cost one system call; a frame too big for that buffer is
read straight into a preallocated one with ``readinto``-style calls.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer

HEADER = struct.Struct("<I")

Writev = Callable[[Sequence["Buffer"]], int]
"""Writes the given buffers in order, returns how many bytes it wrote (may be short)."""

ReadInto = Callable[[memoryview], int]
"""Reads into the given memoryview, returns how many bytes it read (0 at end of stream)."""


def write_frame(writev: Writev, data: Buffer) -> None:
    """Write ``data`` as one frame; returns once every byte has been handed to the kernel."""
    body = memoryview(data).cast("B")
    head = HEADER.pack(body.nbytes)
    total = len(head) + body.nbytes
    done = writev((head, body))
    while done < total:  # a short write (signal, socket buffer): finish the rest
        if done < len(head):
            done += writev((head[done:], body))
        else:
            done += writev((body[done - len(head) :],))


class FrameReader:
    """Cuts frames out of a byte stream read through ``readinto``."""

    def __init__(self, readinto: ReadInto, bufsize: int = 1 << 18) -> None:
        """Read through ``readinto`` with a ``bufsize``-byte buffer for small frames."""
        self._readinto = readinto
        self._buf = bytearray(bufsize)
        self._view = memoryview(self._buf)
        self._start = 0  # first unread byte
        self._end = 0  # one past the last buffered byte
        self._large = memoryview(bytearray(0))

    def read_frame(self) -> memoryview:
        """Return the next frame's payload.

        The view stays valid until the next call only; raises ``EOFError`` if
        the stream ends before a whole frame arrived.
        """
        self._fill(HEADER.size)
        (size,) = HEADER.unpack_from(self._buf, self._start)
        if HEADER.size + size <= len(self._buf) // 2:
            self._fill(HEADER.size + size)
            begin = self._start + HEADER.size
            self._start = begin + size
            return self._view[begin : begin + size]
        return self._read_large(size)

    def _fill(self, need: int) -> None:
        """Read until at least ``need`` unread bytes are buffered."""
        while self._end - self._start < need:
            if self._start == self._end:
                self._start = self._end = 0
            elif len(self._buf) - self._start < need:
                pending = self._end - self._start
                self._view[:pending] = self._view[self._start : self._end]
                self._start, self._end = 0, pending
            got = self._readinto(self._view[self._end :])
            if got == 0:
                raise EOFError("the peer closed the stream in the middle of a frame")
            self._end += got

    def _read_large(self, size: int) -> memoryview:
        """Return a frame of ``size`` bytes read into the preallocated large buffer."""
        if len(self._large) < size:
            self._large = memoryview(bytearray(size))
        dest = self._large
        begin = self._start + HEADER.size
        have = min(self._end - begin, size)
        dest[:have] = self._view[begin : begin + have]
        self._start = begin + have
        while have < size:
            got = self._readinto(dest[have:size])
            if got == 0:
                raise EOFError("the peer closed the stream in the middle of a frame")
            have += got
        return dest[:size]
