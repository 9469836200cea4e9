"""Channel: construction, naming, sending, receiving, loans, messages (one process)."""

from __future__ import annotations

import array
import contextlib
import gc
import os
import pickle
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import interlink as il
from interlink import _native, _segment
from interlink.testing import unique_name

pytestmark = pytest.mark.timeout(30)


def seg_path(name: str) -> Path:
    return _segment.shm_dir() / (_segment._prefix() + name)


@pytest.fixture
def ch(name: str) -> Iterator[il.Channel]:
    with il.Channel(name, capacity=4096) as c:
        yield c


def pair(name: str, capacity: int = 4096) -> tuple[il.Channel, il.Channel]:
    """(sender handle, receiver handle) on one channel."""
    tx = il.Channel(name, capacity)
    rx = il.Channel(name)
    return tx, rx


# --------------------------------------------------------------- creation


@pytest.mark.parametrize(
    ("asked", "got"),
    [
        (1, 4096),
        (4095, 4096),
        (4096, 4096),
        (4097, 8192),
        (5000, 8192),
        (65536, 65536),
        ((1 << 20) + 1, 1 << 21),
    ],
)
def test_capacity_rounds_up_to_power_of_two_min_4096(asked: int, got: int) -> None:
    with il.Channel(unique_name(), capacity=asked) as c:
        assert c.capacity == got
        assert c.max_message_size == got - 16
        assert c.statistics().capacity == got


def test_default_capacity_is_one_mebibyte(name: str) -> None:
    with il.Channel(name) as c:
        assert c.capacity == 1 << 20
        assert c.max_message_size == (1 << 20) - 16


def test_named_channel_is_a_file_in_the_namespace(name: str) -> None:
    assert os.environ["INTERLINK_NAMESPACE"] in _segment._prefix()
    with il.Channel(name) as c:
        assert c.name == name
        assert seg_path(name).exists()
        assert name in repr(c)
    assert not seg_path(name).exists()


def test_create_or_open_by_name(name: str) -> None:
    with il.Channel(name, 4096) as a, il.Channel(name, 1 << 20) as b:
        # an existing channel keeps the capacity it was created with
        assert b.capacity == 4096
        a.send(b"from a")
        assert b.recv_bytes(timeout=1) == b"from a"


def test_create_true_and_false(name: str) -> None:
    with pytest.raises(il.NotFound):
        il.Channel(name, create=False)
    with pytest.raises(FileNotFoundError):
        il.Channel(name, create=False)
    assert not seg_path(name).exists()  # nothing left behind by the failed open
    with il.Channel(name, create=True) as a:
        with pytest.raises(il.AlreadyExists):
            il.Channel(name, create=True)
        with pytest.raises(FileExistsError):
            il.Channel(name, create=True)
        with il.Channel(name, create=False) as b:
            assert b.name == a.name


def test_anonymous_channel() -> None:
    with il.Channel() as a, il.Channel(None, 8192) as b:
        assert a.name != b.name
        assert a.name.startswith("anon-")
        assert seg_path(a.name).exists()
        assert b.capacity == 8192
        a.send(b"x")
        assert a.recv_bytes(timeout=1) == b"x"
    with pytest.raises(ValueError):
        il.Channel(None, create=False)


def test_default_mode_is_0600(name: str) -> None:
    with il.Channel(name) as c:
        assert c.mode == 0o600
        assert stat.S_IMODE(os.stat(seg_path(name)).st_mode) == 0o600


def test_mode_is_not_narrowed_by_umask(name: str) -> None:
    old = os.umask(0o077)
    try:
        with il.Channel(name, mode=0o646) as c:
            assert c.mode == 0o646
            assert stat.S_IMODE(os.stat(seg_path(name)).st_mode) == 0o646
            # an opener sees the creator's mode
            with il.Channel(name, mode=0o600) as d:
                assert d.mode == 0o646
    finally:
        os.umask(old)


def test_name_of_200_bytes_works() -> None:
    base = unique_name()
    name = base + "x" * (200 - len(base.encode()))
    assert len(name.encode()) == 200
    with il.Channel(name, 4096) as c:
        assert c.name == name
    with il.Channel("é" * 100, 4096) as c:  # 200 bytes of UTF-8
        assert c.name == "é" * 100


# ------------------------------------------------------------ send / recv


def test_send_and_recv_any_bytes_like(ch: il.Channel) -> None:
    arr = np.arange(10, dtype=np.int32)
    payloads: list[object] = [
        b"bytes",
        bytearray(b"bytearray"),
        memoryview(b"--memoryview--")[2:-2],
        array.array("i", [1, 2, 3]),
        arr,
        b"",
    ]
    for p in payloads:
        ch.send(p)  # type: ignore[arg-type]
    for p in payloads:
        assert ch.recv_bytes(timeout=1) == bytes(memoryview(p))  # type: ignore[arg-type]


def test_send_rejects_non_buffers(ch: il.Channel) -> None:
    with pytest.raises(TypeError):
        ch.send("a str is not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ch.send(12)  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        ch.send(memoryview(b"abcdef")[::2])  # not contiguous
    with pytest.raises(il.Empty):
        ch.recv_nowait()


def test_empty_message(ch: il.Channel) -> None:
    ch.send(b"")
    with ch.recv(timeout=1) as msg:
        assert len(msg) == 0
        assert bytes(msg) == b""
    assert ch.statistics().used == 0


def test_order_is_kept_across_send_styles(ch: il.Channel) -> None:
    ch.send(b"1")
    ch.send_nowait(b"2")
    assert ch.send_many([b"3", bytearray(b"4")]) == 2
    with ch.loan(1) as buf:
        buf[:] = b"5"
    ch.send(b"6", timeout=1)
    got = [ch.recv_bytes(timeout=1) for _ in range(6)]
    assert got == [b"1", b"2", b"3", b"4", b"5", b"6"]


def test_recv_nowait_raises_empty(ch: il.Channel) -> None:
    with pytest.raises(il.Empty) as info:
        ch.recv_nowait()
    import queue

    assert isinstance(info.value, queue.Empty)
    assert isinstance(info.value, il.Timeout)
    assert isinstance(info.value, TimeoutError)


def test_recv_timeout(ch: il.Channel) -> None:
    t0 = time.monotonic()
    with pytest.raises(il.Timeout):
        ch.recv(timeout=0.1)
    elapsed = time.monotonic() - t0
    assert 0.09 <= elapsed < 2.0
    with pytest.raises(il.Empty):  # timeout=0 is a poll
        ch.recv(timeout=0)


def test_send_nowait_raises_full_and_send_times_out(name: str) -> None:
    import queue

    tx, rx = pair(name)
    with tx, rx:
        with pytest.raises(il.Empty):
            rx.recv_nowait()  # a live receiver that does not read
        n = 0
        while True:
            try:
                tx.send_nowait(b"x" * 100)
            except il.Full as exc:
                assert isinstance(exc, queue.Full)
                assert isinstance(exc, il.Timeout)
                break
            n += 1
        assert n == 4096 // 128
        t0 = time.monotonic()
        with pytest.raises(il.Timeout) as info:
            tx.send(b"x" * 100, timeout=0.1)
        assert not isinstance(info.value, il.Full)
        assert 0.09 <= time.monotonic() - t0 < 2.0
        with pytest.raises(il.Timeout):
            tx.loan(100, timeout=0.05)
        # room comes back once the receiver releases
        rx.recv_bytes(timeout=1)
        tx.send(b"y" * 100, timeout=1)


def test_send_many_and_recv_many(ch: il.Channel) -> None:
    items = [bytes([i]) * i for i in range(20)]
    assert ch.send_many(items) == 20
    assert ch.send_many(iter([b"a", b"b"])) == 2  # any iterable
    first = ch.recv_many(8, timeout=1)
    assert [m.tobytes() for m in first] == items[:8]
    rest = ch.recv_many(timeout=1)
    assert [m.tobytes() for m in rest] == [*items[8:], b"a", b"b"]
    for m in first + rest:
        m.release()
    with pytest.raises(il.Empty):
        ch.recv_many(timeout=0)
    with pytest.raises(ValueError):
        ch.recv_many(0)
    with pytest.raises(TypeError):
        ch.send_many(5)  # type: ignore[arg-type]


def test_send_many_sends_the_items_before_an_error(ch: il.Channel) -> None:
    with pytest.raises(TypeError):
        ch.send_many([b"a", b"b", "c", b"d"])  # type: ignore[list-item]
    assert [m.tobytes() for m in ch.recv_many(10, timeout=1)] == [b"a", b"b"]


def test_send_many_stops_at_full(name: str) -> None:
    with il.Channel(name, 4096) as ch:
        with pytest.raises(il.Full):
            ch.send_many([b"x" * 1000] * 10, timeout=0)  # 4 records of 1024 bytes fit
        got = ch.recv_many(10, timeout=1)
        assert len(got) == 4 and all(m.tobytes() == b"x" * 1000 for m in got)


def test_released_space_is_visible_to_writers(name: str) -> None:
    """Space the receiver has released must be usable by a sender right away.

    Fails with the lazy read_pos publication in ring.c (advance_read): released
    space below 1/64 of the ring is not published, so a sender gets Full (or
    waits out its whole timeout) while the ring has room.
    """
    tx, rx = pair(name, capacity=1 << 20)
    with tx, rx:
        with pytest.raises(il.Empty):
            rx.recv_nowait()  # a live receiver
        n = 0
        with contextlib.suppress(il.Full):
            while True:
                tx.send_nowait(b"x" * 1008)  # 1 KiB records
                n += 1
        assert n == 1024
        for _ in range(8):
            rx.recv(timeout=1).release()  # 8 KiB free now
        tx.send_nowait(b"y" * 1008)
        tx.send(b"y" * 1008, timeout=0.5)


# ------------------------------------------------------------------ loans


def test_loan_commits_at_end_of_with_block(ch: il.Channel) -> None:
    with ch.loan(10) as buf:
        assert isinstance(buf, memoryview)
        assert not buf.readonly
        assert len(buf) == 10
        buf[:] = b"0123456789"
    assert ch.recv_bytes(timeout=1) == b"0123456789"
    assert ch.statistics().sent == 1


def test_loan_aborts_on_exception(ch: il.Channel) -> None:
    with pytest.raises(RuntimeError, match="boom"), ch.loan(10) as buf:
        buf[:5] = b"hello"
        raise RuntimeError("boom")
    with pytest.raises(il.Empty):
        ch.recv_nowait()
    ch.send(b"next")  # the aborted space does not block anything
    assert ch.recv_bytes(timeout=1) == b"next"
    assert ch.statistics().used == 0


def test_loan_commit_shrinks(ch: il.Channel) -> None:
    loan = ch.loan(1000)
    assert len(loan) == 1000
    memoryview(loan)[:5] = b"hello"
    loan.commit(5)
    ch.send(b"after")
    assert ch.recv_bytes(timeout=1) == b"hello"
    assert ch.recv_bytes(timeout=1) == b"after"
    assert ch.statistics().used == 0


def test_loan_commit_zero_bytes(ch: il.Channel) -> None:
    ch.loan(64).commit(0)
    with ch.recv(timeout=1) as msg:
        assert len(msg) == 0


def test_loan_misuse(ch: il.Channel) -> None:
    loan = ch.loan(10)
    with pytest.raises(ValueError):
        loan.commit(11)
    with pytest.raises(ValueError):
        loan.commit(-1)
    loan.commit()
    with pytest.raises(il.InterlinkError):
        loan.commit()
    loan.abort()  # idempotent after commit
    with pytest.raises(BufferError):
        memoryview(loan)
    with pytest.raises(il.InterlinkError), loan:
        pass
    with pytest.raises(ValueError):
        ch.loan(-1)
    assert len(ch.recv_bytes(timeout=1)) == 10


def test_loan_abort_and_dropped_loan(ch: il.Channel) -> None:
    loan = ch.loan(100)
    loan.abort()
    loan.abort()
    with pytest.raises(il.InterlinkError):
        loan.commit()
    dropped = ch.loan(100)
    del dropped  # never committed: aborted, must not block the reader
    gc.collect()
    ch.send(b"x")
    assert ch.recv_bytes(timeout=1) == b"x"
    assert ch.statistics().sent == 1


def test_open_loan_holds_back_later_messages(ch: il.Channel) -> None:
    loan = ch.loan(4)
    ch.send(b"later")
    with pytest.raises(il.Empty):
        ch.recv_nowait()  # the loan comes first and is still being written
    memoryview(loan)[:] = b"loan"
    loan.commit()
    assert ch.recv_bytes(timeout=1) == b"loan"
    assert ch.recv_bytes(timeout=1) == b"later"


def test_loan_written_through_numpy(ch: il.Channel) -> None:
    values = np.linspace(0, 1, 100)
    with ch.loan(values.nbytes) as buf:
        target = np.frombuffer(buf, dtype=np.float64)
        assert target.flags.writeable
        target[:] = values
        del target
    with ch.recv(timeout=1) as msg:
        assert np.array_equal(np.frombuffer(msg, dtype=np.float64), values)


# --------------------------------------------------------------- messages


def _reaches(obj: object, target: object) -> bool:
    """Whether the .base / .obj chain of obj leads to target."""
    seen = 0
    while obj is not None and seen < 10:
        if obj is target:
            return True
        obj = (
            getattr(obj, "base", None) if isinstance(obj, np.ndarray) else getattr(obj, "obj", None)
        )
        seen += 1
    return False


def test_message_is_a_read_only_view_of_shared_memory(ch: il.Channel) -> None:
    data = np.arange(256, dtype=np.uint32)
    ch.send(data)
    msg = ch.recv(timeout=1)
    assert isinstance(msg, il.Message)
    assert len(msg) == msg.nbytes == data.nbytes
    view = memoryview(msg)
    assert view.readonly
    assert view.obj is msg
    with pytest.raises(TypeError):
        view[0] = 1
    arr = np.frombuffer(msg, dtype=np.uint32)
    assert not arr.flags.writeable
    assert np.array_equal(arr, data)
    assert _reaches(arr, msg), "numpy.frombuffer copied the message"
    # Zero-copy: the array's data lives inside the channel's mapping.
    mapping = np.frombuffer(ch._segment.mm, dtype=np.uint8)
    lo = mapping.ctypes.data + _native.RING_DATA_OFFSET
    hi = lo + ch.capacity
    assert lo <= arr.ctypes.data < arr.ctypes.data + arr.nbytes <= hi
    assert np.shares_memory(arr, np.frombuffer(view, dtype=np.uint8))
    del mapping, view, arr
    msg.release()


def test_message_bytes_len_tobytes(ch: il.Channel) -> None:
    ch.send(b"payload")
    msg = ch.recv(timeout=1)
    assert bytes(msg) == b"payload"
    assert msg.tobytes() == b"payload"
    assert len(msg) == 7
    assert "7 bytes" in repr(msg)
    assert not msg.released
    msg.release()
    assert msg.released
    msg.release()  # idempotent
    assert "released" in repr(msg)
    with pytest.raises(BufferError):
        msg.tobytes()
    with pytest.raises(BufferError):
        memoryview(msg)
    with pytest.raises(BufferError):
        bytes(msg)


def test_message_with_block_releases(ch: il.Channel) -> None:
    ch.send(b"x" * 100)
    with ch.recv(timeout=1) as msg:
        assert ch.statistics().used > 0
        assert bytes(msg) == b"x" * 100
    assert msg.released
    assert ch.statistics().used == 0


def test_release_with_live_views_is_deferred(ch: il.Channel) -> None:
    ch.send(b"abc" * 100)
    msg = ch.recv(timeout=1)
    view = memoryview(msg)
    arr = np.frombuffer(msg, dtype=np.uint8)
    msg.release()
    assert msg.released
    assert ch.statistics().used == 320  # still held for the views
    assert bytes(view[:3]) == b"abc"  # the views still read the message
    assert arr[:3].tobytes() == b"abc"
    with pytest.raises(BufferError):
        memoryview(msg)  # no new views
    del view
    assert ch.statistics().used > 0
    del arr
    assert ch.statistics().used == 0
    ch.send(b"z" * 3000)  # the space is really free again
    assert ch.recv_bytes(timeout=1) == b"z" * 3000


def test_dropping_a_message_releases_it(ch: il.Channel) -> None:
    ch.send(b"x" * 100)
    msg = ch.recv(timeout=1)
    assert ch.statistics().used > 0
    del msg
    assert ch.statistics().used == 0


def test_release_in_any_order(ch: il.Channel) -> None:
    for i in range(5):
        ch.send(bytes([i]) * (i * 10))
    msgs = [ch.recv(timeout=1) for _ in range(5)]
    for i in (3, 1, 4, 2):
        msgs[i].release()
        assert ch.statistics().used > 0  # msgs[0] still pins the ring
    assert msgs[0].tobytes() == b""
    msgs[0].release()
    assert ch.statistics().used == 0


def test_recv_bytes_frees_the_space_at_once(ch: il.Channel) -> None:
    ch.send(b"q" * 1000)
    assert ch.recv_bytes(timeout=1) == b"q" * 1000
    assert ch.statistics().used == 0


def test_message_outlives_a_closed_channel(name: str) -> None:
    c = il.Channel(name, 4096)
    c.send(b"still here")
    msg = c.recv(timeout=1)
    view = memoryview(msg)
    c.close()
    assert not seg_path(name).exists()
    assert bytes(view) == b"still here"
    assert msg.tobytes() == b"still here"
    del view
    msg.release()


# ------------------------------------------------------------------ waits


def test_wait_readable(ch: il.Channel) -> None:
    t0 = time.monotonic()
    assert ch.wait_readable(0.05) is False
    assert 0.04 <= time.monotonic() - t0 < 2.0
    assert ch.wait_readable(0) is False
    ch.send(b"x")
    assert ch.wait_readable(0) is True
    assert ch.wait_readable(None) is True
    assert ch.recv_bytes(timeout=0) == b"x"  # wait_readable consumed nothing


def test_wait_writable(name: str) -> None:
    tx, rx = pair(name)
    with tx, rx:
        assert tx.wait_writable(4080, 0) is True
        assert tx.wait_writable(10, None) is True
        tx.send(b"x" * 3000)
        assert tx.wait_writable(3000, 0.05) is False
        assert tx.wait_writable(1000, 0) is True
        assert rx.recv_bytes(timeout=1) == b"x" * 3000
        assert tx.wait_writable(3000, 0) is True


def test_wait_readable_takes_the_receiver_role(name: str) -> None:
    a, b = pair(name)
    with a, b:
        assert a.wait_readable(0) is False
        with pytest.raises(il.Busy):
            b.wait_readable(0)


# ------------------------------------------------------- stats and users


def test_statistics(name: str) -> None:
    tx, rx = pair(name)
    with tx, rx:
        s = tx.statistics()
        assert isinstance(s, il.ChannelStatistics)
        assert (s.capacity, s.used, s.senders, s.receiver_pid, s.skipped, s.sent, s.received) == (
            4096,
            0,
            0,
            0,
            0,
            0,
            0,
        )
        tx.send(b"hello")
        tx.send(b"x" * 20)
        s = tx.statistics()
        assert (s.senders, s.sent, s.received, s.used) == (1, 2, 0, 32 + 48)
        msg = rx.recv(timeout=1)
        s = rx.statistics()
        assert (s.receiver_pid, s.sent, s.received) == (os.getpid(), 0, 1)
        msg.release()
        rx.recv_bytes(timeout=1)
        assert rx.statistics().used == 0
        assert rx.statistics().received == 2


def test_users(name: str) -> None:
    with il.Channel(name) as a:
        assert a.users() == [(os.getpid(), True)]
        with il.Channel(name) as b:
            assert a.users() == [(os.getpid(), True)] * 2
            assert b.users() == a.users()
        assert a.users() == [(os.getpid(), True)]


# ------------------------------------------------------------- life cycle


def test_close_is_idempotent_and_removes_the_object(name: str) -> None:
    a = il.Channel(name)
    b = il.Channel(name)
    assert not a.closed
    a.close()
    assert a.closed
    a.close()
    assert seg_path(name).exists()  # b still uses it
    b.close()
    assert not seg_path(name).exists()
    assert "closed" in repr(a)


def test_with_block_closes(name: str) -> None:
    with il.Channel(name) as c:
        assert not c.closed
    assert c.closed
    assert not seg_path(name).exists()


@pytest.mark.parametrize(
    "op",
    [
        lambda c: c.send(b"x"),
        lambda c: c.send_nowait(b"x"),
        lambda c: c.send_many([b"x"]),
        lambda c: c.loan(1),
        lambda c: c.recv(timeout=0),
        lambda c: c.recv_nowait(),
        lambda c: c.recv_many(),
        lambda c: c.recv_bytes(),
        lambda c: c.wait_readable(0),
        lambda c: c.wait_writable(1, 0),
        lambda c: c.statistics(),
        lambda c: c.users(),
        lambda c: c.unlink(),
    ],
    ids=[
        "send",
        "send_nowait",
        "send_many",
        "loan",
        "recv",
        "recv_nowait",
        "recv_many",
        "recv_bytes",
        "wait_readable",
        "wait_writable",
        "statistics",
        "users",
        "unlink",
    ],
)
def test_every_operation_on_a_closed_handle_raises_closed(
    name: str, op: Callable[[il.Channel], object]
) -> None:
    c = il.Channel(name, 4096)
    c.close()
    with pytest.raises(il.Closed):
        op(c)


def test_unlink_removes_the_name_only(name: str) -> None:
    a = il.Channel(name, 4096)
    b = il.Channel(name)
    a.unlink()
    assert not seg_path(name).exists()
    a.send(b"old")
    assert b.recv_bytes(timeout=1) == b"old"  # attached handles keep working
    with il.Channel(name, 8192) as fresh:  # a new, independent channel
        assert fresh.capacity == 8192
        with pytest.raises(il.Empty):
            fresh.recv_nowait()
        a.close()
        b.close()
        assert seg_path(name).exists(), "closing the old channel removed the new one"
    assert not seg_path(name).exists()


def test_dropped_handle_frees_its_resources(name: str) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    c = il.Channel(name, 4096)
    c.send(b"x")
    del c
    gc.collect()
    assert open_fds() == before, "a dropped Channel leaked its file descriptor"
    assert not seg_path(name).exists(), "a dropped Channel left its object behind"


def test_pickle_round_trip_in_one_process(name: str) -> None:
    for c in (il.Channel(name, 4096), il.Channel(None, 4096)):
        with c, pickle.loads(pickle.dumps(c)) as d:
            assert isinstance(d, il.Channel)
            assert d.name == c.name
            assert d.capacity == c.capacity
            d.send(b"through the copy")
            assert c.recv_bytes(timeout=1) == b"through the copy"


def test_pickled_handle_counts_as_a_sender_until_adopted(name: str) -> None:
    rx, tx = il.Channel(name, 4096), il.Channel(name)
    with rx:
        tx.send(b"x")
        data = pickle.dumps(tx)
        tx.close()
        assert rx.recv_bytes(timeout=1) == b"x"
        with pytest.raises(il.Timeout) as info:  # not end-of-stream: a handle is in flight
            rx.recv(timeout=0.2)
        assert not isinstance(info.value, il.Closed)
        with pickle.loads(data) as adopted:
            adopted.send(b"y")
        assert rx.recv_bytes(timeout=1) == b"y"
        with pytest.raises(il.Closed):
            rx.recv(timeout=2)


def test_lent_slot_expires(name: str) -> None:
    rx, tx = il.Channel(name, 4096), il.Channel(name)
    with rx:
        tx.send(b"x")
        tx._lend(0.05)  # as pickling does, with a short time to live
        tx.close()
        assert rx.recv_bytes(timeout=1) == b"x"
        with pytest.raises(il.Closed):
            rx.recv(timeout=5)


def test_closing_after_an_expired_lend_removes_the_object(name: str) -> None:
    """A pickle that is never loaded must not keep the object alive past its TTL
    once the last handle has closed."""
    c = il.Channel(name, 4096)
    c._lend(0.01)
    time.sleep(0.05)  # let the lent slot expire (a time to live, not a synchronization)
    try:
        c.close()
        assert not seg_path(name).exists()
    finally:
        seg_path(name).unlink(missing_ok=True)
