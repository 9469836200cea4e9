"""Channel errors: the hierarchy, argument validation, damaged and foreign objects."""

from __future__ import annotations

import os
import queue
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

import interlink as il
from interlink import _native, _segment
from interlink.testing import unique_name

pytestmark = pytest.mark.timeout(30)


def seg_path(name: str) -> Path:
    return _segment.shm_dir() / (_segment._prefix() + name)


def poke_u32(name: str, offset: int, value: int) -> None:
    with open(seg_path(name), "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<I", value))


# -------------------------------------------------------------- hierarchy


@pytest.mark.parametrize(
    ("exc", "bases"),
    [
        (il.Timeout, (TimeoutError,)),
        (il.Empty, (il.Timeout, TimeoutError, queue.Empty)),
        (il.Full, (il.Timeout, TimeoutError, queue.Full)),
        (il.NotFound, (FileNotFoundError,)),
        (il.AlreadyExists, (FileExistsError,)),
        (il.AccessDenied, (PermissionError,)),
        (il.MessageTooLarge, (ValueError,)),
        (il.Closed, ()),
        (il.Corrupt, ()),
        (il.Incompatible, ()),
        (il.Busy, ()),
    ],
)
def test_exception_hierarchy(exc: type[BaseException], bases: tuple[type, ...]) -> None:
    assert issubclass(exc, il.InterlinkError)
    for base in bases:
        assert issubclass(exc, base)
    assert exc.__module__ == "interlink"
    assert getattr(il.errors, exc.__name__) is exc


# ------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "/abs", "..", "x..y", "a\0b", "x" * 201, "é" * 101],
    ids=["empty", "slash", "leading-slash", "dotdot", "inner-dotdot", "nul", "201", "utf8-202"],
)
def test_bad_names_raise_value_error(bad: str) -> None:
    for create in (None, True, False):
        with pytest.raises(ValueError):
            il.Channel(bad, 4096, create=create)


@pytest.mark.parametrize("bad", [5, b"name", Path("p"), 1.5])
def test_non_str_names_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        il.Channel(bad)  # type: ignore[arg-type]


# --------------------------------------------- capacity, mode and timeouts


@pytest.mark.parametrize("bad", [0, -1, -4096, _native.RING_MAX_CAPACITY * 2])
def test_bad_capacity_raises_value_error(bad: int) -> None:
    with pytest.raises(ValueError):
        il.Channel(unique_name(), capacity=bad)


@pytest.mark.parametrize("bad", [1.5, "4096", True, None])
def test_non_int_capacity_raises_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        il.Channel(unique_name(), capacity=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 0o1000, 0o7777])
def test_bad_mode_raises_value_error(bad: int) -> None:
    name = unique_name()
    with pytest.raises(ValueError):
        il.Channel(name, mode=bad)
    assert not seg_path(name).exists()


TIMED_OPS: list[tuple[str, Callable[[il.Channel, object], object]]] = [
    ("recv", lambda c, t: c.recv(timeout=t)),  # type: ignore[arg-type]
    ("recv_many", lambda c, t: c.recv_many(timeout=t)),  # type: ignore[arg-type]
    ("recv_bytes", lambda c, t: c.recv_bytes(timeout=t)),  # type: ignore[arg-type]
    ("send", lambda c, t: c.send(b"x", timeout=t)),  # type: ignore[arg-type]
    ("send_many", lambda c, t: c.send_many([b"x"], timeout=t)),  # type: ignore[arg-type]
    ("loan", lambda c, t: c.loan(1, timeout=t)),  # type: ignore[arg-type]
    ("wait_readable", lambda c, t: c.wait_readable(t)),  # type: ignore[arg-type]
    ("wait_writable", lambda c, t: c.wait_writable(1, t)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("what", "op"), TIMED_OPS, ids=[w for w, _ in TIMED_OPS])
def test_bad_timeouts(what: str, op: Callable[[il.Channel, object], object]) -> None:
    with il.Channel(None, 4096) as c:
        for bad in (-1, -0.001, float("nan"), float("-inf")):
            with pytest.raises(ValueError):
                op(c, bad)
        with pytest.raises(TypeError):
            op(c, "1")
        with pytest.raises(il.Empty):
            c.recv_nowait()  # nothing was sent by the rejected calls


# ----------------------------------------------------------- too large


def test_message_too_large(name: str) -> None:
    with il.Channel(name, 4096) as c:
        big = b"x" * (c.max_message_size + 1)
        for op in (
            lambda: c.send(big),
            lambda: c.send(big, timeout=0),
            lambda: c.send_nowait(big),
            lambda: c.send_many([big]),
            lambda: c.loan(len(big)),
            lambda: c.loan(1 << 40),
        ):
            with pytest.raises(il.MessageTooLarge):
                op()
        # The largest message fits (the ring is empty and aligned).
        c.send(b"y" * c.max_message_size, timeout=1)
        assert c.recv_bytes(timeout=1) == b"y" * c.max_message_size
        # Once the ring has moved on, the largest message first pads to the end
        # of the ring, and the receiver has to pass the pad before it fits.
        c.send(b"z" * 100)
        assert c.recv_bytes(timeout=1) == b"z" * 100
        with pytest.raises(il.Timeout):
            c.send(b"y" * c.max_message_size, timeout=0.05)
        with pytest.raises(il.Empty):
            c.recv_nowait()  # passes the pad
        with c.loan(c.max_message_size, timeout=1) as buf:
            buf[:] = b"w" * c.max_message_size
        assert c.recv_bytes(timeout=1) == b"w" * c.max_message_size
        assert c.statistics().used == 0


def test_message_too_large_default_capacity(name: str) -> None:
    with il.Channel(name) as c:
        with pytest.raises(il.MessageTooLarge):
            c.send(bytes(c.max_message_size + 1))
        c.send(bytes(c.max_message_size))
        assert len(c.recv_bytes(timeout=1)) == (1 << 20) - 16


# ---------------------------------------------------------------- roles


def test_second_receiver_handle_in_one_process_is_busy(name: str) -> None:
    with il.Channel(name) as a, il.Channel(name) as b:
        a.send(b"1")
        assert a.recv_bytes(timeout=1) == b"1"
        for op in (
            lambda: b.recv(timeout=0.05),
            lambda: b.recv_nowait(),
            lambda: b.recv_many(timeout=0),
            lambda: b.recv_bytes(),
            lambda: b.wait_readable(0),
        ):
            with pytest.raises(il.Busy):
                op()
        b.send(b"2")  # sending is fine
        assert a.recv_bytes(timeout=1) == b"2"
        a.close()
        with pytest.raises(il.Empty):
            b.recv_nowait()  # the role is free again
        b.send(b"3")
        assert b.recv_bytes(timeout=1) == b"3"


# ------------------------------------------------------------ end of stream


def test_recv_raises_closed_after_every_sender_closed_and_drained(name: str) -> None:
    rx = il.Channel(name, 4096)
    s1, s2 = il.Channel(name), il.Channel(name)
    with rx:
        s1.send(b"a")
        s2.send(b"b")
        s1.close()
        assert rx.recv_bytes(timeout=1) == b"a"
        s2.send(b"c")
        s2.close()
        assert rx.recv_bytes(timeout=1) == b"b"  # drained first ...
        assert rx.recv_bytes(timeout=1) == b"c"
        for op in (  # ... then Closed, from every receiving call
            lambda: rx.recv(timeout=1),
            lambda: rx.recv(),
            lambda: rx.recv_nowait(),
            lambda: rx.recv_many(timeout=1),
            lambda: rx.recv_bytes(timeout=1),
        ):
            with pytest.raises(il.Closed):
                op()
        assert rx.wait_readable(1) is True  # recv_nowait would not raise Empty
        # A new sender reopens the stream.
        with il.Channel(name) as s3:
            s3.send(b"d")
            assert rx.recv_bytes(timeout=1) == b"d"
            with pytest.raises(il.Timeout):
                rx.recv(timeout=0.05)
        with pytest.raises(il.Closed):
            rx.recv(timeout=1)


def test_no_end_of_stream_before_anyone_sent(name: str) -> None:
    rx = il.Channel(name, 4096)
    with rx:
        il.Channel(name).close()  # opened and closed without sending
        with pytest.raises(il.Timeout) as info:
            rx.recv(timeout=0.05)
        assert not isinstance(info.value, il.Closed)


def test_send_raises_closed_after_the_receiver_closed(name: str) -> None:
    tx = il.Channel(name, 4096)
    with tx:
        tx.send(b"before any receiver")  # no receiver yet: the message waits
        rx = il.Channel(name)
        assert rx.recv_bytes(timeout=1) == b"before any receiver"
        rx.close()
        for op in (
            lambda: tx.send(b"x"),
            lambda: tx.send(b"x", timeout=1),
            lambda: tx.send_nowait(b"x"),
            lambda: tx.send_many([b"x"]),
            lambda: tx.loan(1),
        ):
            with pytest.raises(il.Closed):
                op()
        assert tx.wait_writable(1, 1) is True
        with il.Channel(name) as rx2:  # a new receiver reopens the channel
            with pytest.raises(il.Empty):
                rx2.recv_nowait()
            tx.send(b"again")
            assert rx2.recv_bytes(timeout=1) == b"again"


# ------------------------------------------------- foreign or damaged objects


@pytest.mark.parametrize(("offset", "value"), [(12, 2), (12, 0), (8, 99), (8, 0)])
def test_incompatible_kind_or_layout(name: str, offset: int, value: int) -> None:
    holder = il.Channel(name, 4096)  # keeps the object alive
    poke_u32(name, offset, value)
    for create in (None, False):
        with pytest.raises(il.Incompatible):
            il.Channel(name, create=create)
    with pytest.raises(il.AlreadyExists):
        il.Channel(name, create=True)  # a live object of the wrong kind is not replaced
    holder.close()
    assert not seg_path(name).exists()


def test_bad_magic_is_corrupt(name: str) -> None:
    holder = il.Channel(name, 4096)
    with open(seg_path(name), "r+b") as f:
        f.write(b"GARBAGE!")
    with pytest.raises(il.Corrupt):
        il.Channel(name)
    with pytest.raises(il.Corrupt):
        il.Channel(name, create=False)
    [info] = [o for o in _segment.list_objects() if o.name == name]
    assert info.state == "corrupt"
    holder.close()


def _copy_object(src: str, dst: str, size: int | None = None) -> None:
    """Copy a channel's file under another name (optionally truncated): an object
    that nobody has mapped, so damaging it cannot fault a live mapping."""
    shutil.copyfile(seg_path(src), seg_path(dst))
    os.chmod(seg_path(dst), 0o600)
    if size is not None:
        os.truncate(seg_path(dst), size)


@pytest.mark.parametrize("delta", [-100, -4096, +4096])
def test_file_size_not_matching_header_is_corrupt(name: str, delta: int) -> None:
    damaged = unique_name()
    with il.Channel(name, 4096) as c:
        c.send(b"x")
        _copy_object(name, damaged, os.path.getsize(seg_path(name)) + delta)
        with pytest.raises(il.Corrupt):
            il.Channel(damaged)
        with pytest.raises(il.Corrupt):
            il.Channel(damaged, create=False)
    [info] = [o for o in _segment.list_objects() if o.name in (name, damaged)]
    assert (info.name, info.state, info.detail) == (damaged, "corrupt", "size mismatch")
    assert damaged not in [o.name for o in _segment.gc_objects()]  # gc keeps damaged objects
    assert damaged in [o.name for o in _segment.gc_objects(corrupt=True)]  # ... unless asked
    assert not seg_path(damaged).exists()


def test_file_shorter_than_a_header_is_corrupt(name: str) -> None:
    damaged = unique_name()
    with il.Channel(name, 4096):
        _copy_object(name, damaged, 100)
    with pytest.raises(il.Corrupt):
        il.Channel(damaged)
    [info] = [o for o in _segment.list_objects() if o.name in (name, damaged)]
    assert (info.name, info.state, info.detail) == (damaged, "corrupt", "truncated")
    _segment.gc_objects(corrupt=True)
    assert not seg_path(damaged).exists()


@pytest.mark.timeout(20)
def test_scribbled_write_pos_is_corrupt(name: str) -> None:
    with il.Channel(name, 4096) as c:
        c.send(b"abc")
        c.recv_bytes(timeout=1)
        c.send(b"def")
        mm = c._segment.mm
        struct.pack_into("<Q", mm, _native.RING_WRITE_POS_OFFSET, 0xDEADBEEF12345677)
        for op in (
            lambda: c.recv(timeout=0.1),
            lambda: c.recv(),
            lambda: c.recv_nowait(),
            lambda: c.recv_many(timeout=0.1),
            lambda: c.send(b"x", timeout=0.1),
            lambda: c.send(b"x"),
            lambda: c.send_nowait(b"x"),
            lambda: c.send_many([b"x"], timeout=0.1),
            lambda: c.loan(5, timeout=0.1),
        ):
            with pytest.raises(il.Corrupt):
                op()
        struct.pack_into("<Q", mm, _native.RING_WRITE_POS_OFFSET, 4096 * 5 + 16)  # aligned
        with pytest.raises(il.Corrupt):
            c.recv(timeout=0.1)
        with pytest.raises(il.Corrupt):
            c.send(b"x", timeout=0.1)
    assert not seg_path(name).exists()  # a corrupt channel still closes cleanly


@pytest.mark.timeout(20)
@pytest.mark.parametrize("garbage", [0x1234567, 1 << 60, 4096 * 1000])
def test_scribbled_read_pos_is_corrupt(name: str, garbage: int) -> None:
    tx, rx = il.Channel(name, 4096), il.Channel(name)
    with pytest.raises(il.Empty):
        rx.recv_nowait()  # a live receiver that does not read
    while True:
        try:
            tx.send_nowait(b"m" * 100)
        except il.Full:
            break
    mm = tx._segment.mm
    struct.pack_into("<Q", mm, _native.RING_READ_POS_OFFSET, garbage)
    with pytest.raises(il.Corrupt):  # a writer looks at read_pos when the ring is full
        tx.send_nowait(b"m" * 100)
    with pytest.raises(il.Corrupt):
        tx.send(b"m" * 100, timeout=0.1)
    rx.close()
    struct.pack_into("<Q", mm, _native.RING_READ_POS_OFFSET, garbage)
    with il.Channel(name) as rx2, pytest.raises(il.Corrupt):  # a new receiver starts there
        rx2.recv(timeout=0.1)
    tx.close()
    assert not seg_path(name).exists()


def test_scribbled_record_length_is_corrupt(name: str) -> None:
    with il.Channel(name, 4096) as c:
        c.send(b"hello")
        write_pos = c._stats()["write_pos"]
        header = _native.RING_DATA_OFFSET + (write_pos - 32) % c.capacity
        struct.pack_into("<I", c._segment.mm, header + 8, 0xFFFFFFF0)
        with pytest.raises(il.Corrupt):
            c.recv(timeout=0.1)
        with pytest.raises(il.Corrupt):
            c.recv_nowait()


def test_scribbled_record_stamp_is_corrupt_once_the_writer_has_gone(name: str) -> None:
    rx, tx = il.Channel(name, 4096), il.Channel(name)
    with rx:
        tx.send(b"hello")
        write_pos = rx._stats()["write_pos"]
        header = _native.RING_DATA_OFFSET + (write_pos - 32) % rx.capacity
        struct.pack_into("<Q", rx._segment.mm, header, 0x1234)
        with pytest.raises(il.Timeout):
            rx.recv(timeout=0.1)  # looks like a record still being written
        tx.close()
        with pytest.raises(il.Corrupt):
            rx.recv(timeout=2)
