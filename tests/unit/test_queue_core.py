"""QueueCore (the native half of interlink.Queue) in one process: order,
statuses, multiprocessing's exceptions, acks, zero-copy views, bad segments."""

from __future__ import annotations

import mmap
import queue
import struct
import time

import pytest

import interlink._native as n
from interlink import errors

pytestmark = pytest.mark.timeout(60)


def make(
    nentries: int = 64, arena: int = 1 << 20, maxsize: int = 0, durable: bool = False
) -> tuple[n.QueueCore, mmap.mmap]:
    size = n.queue_segment_size(nentries, arena)
    mm = mmap.mmap(-1, size)
    struct.pack_into("<I", mm, 28, n.SEG_SLOTS)  # the attach table, as _segment.py writes it
    n.queue_format(mm, nentries, arena, maxsize, durable)
    q = n.QueueCore()
    q._bind(mm)
    return q, mm


def test_fifo_and_priorities() -> None:
    q, _ = make()
    for i, prio in enumerate([0, 1, 0, 5, 1, -3, 5]):
        q.put(b"%d" % i, priority=prio)
    assert q.qsize() == 7
    got = [q.get() for _ in range(7)]
    # higher priority first, FIFO within a priority (POSIX mq order)
    assert got == [b"3", b"6", b"1", b"4", b"0", b"2", b"5"]
    assert q.empty()


def test_empty_and_full_are_queue_exceptions() -> None:
    q, _ = make(maxsize=2)
    with pytest.raises(queue.Empty):
        q.get(block=False)
    t0 = time.monotonic()
    with pytest.raises(errors.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - t0 >= 0.05
    q.put(b"a")
    q.put(b"b")
    assert q.full()
    with pytest.raises(queue.Full):
        q.put(b"c", block=False)
    with pytest.raises(errors.Full):
        q.put(b"c", timeout=0.05)
    with pytest.raises(ValueError):
        q.put(b"c", timeout=-1)
    assert q.get() == b"a"
    assert not q.full()


def test_task_done_and_join() -> None:
    q, _ = make()
    for _ in range(3):
        q.put(b"x")
    assert q.join(timeout=0.01) is False
    for _ in range(3):
        q.get()
    q.task_done()
    q.task_done(2)
    assert q.join(timeout=0.01) is True
    with pytest.raises(ValueError, match="too many"):
        q.task_done()


def test_put_many_get_many() -> None:
    q, _ = make(maxsize=10)
    assert q.put_many([b"%d" % i for i in range(6)]) == 6
    # only 4 fit: a partial count, not an exception
    assert q.put_many([b"x"] * 8, block=False) == 4
    with pytest.raises(errors.Full):
        q.put_many([b"y"], block=False)
    got = q.get_many(7)
    assert got == [b"0", b"1", b"2", b"3", b"4", b"5", b"x"]
    assert len(q.get_many(256)) == 3
    with pytest.raises(ValueError):
        q.get_many(0)


def test_large_payload_is_a_zero_copy_view() -> None:
    np = pytest.importorskip("numpy")
    q, _ = make(arena=16 << 20)
    a = np.arange(1 << 20, dtype=np.float64)  # 8 MiB
    q.put(a)
    msg = q.get()
    assert isinstance(msg, n.QueueMessage)
    assert msg.nbytes == a.nbytes
    b = np.frombuffer(msg, dtype=np.float64)
    assert b[12345] == 12345.0 and b[-1] == a[-1]
    msg.release()  # deferred while `b` views it
    assert q.stats()["taken"] == 1
    del b
    assert q.stats()["taken"] == 0
    with pytest.raises(errors.MessageTooLarge):
        q.put(bytes(17 << 20))


def test_durable_ack_nack_and_dropped_message() -> None:
    q, _ = make(durable=True)
    assert q.durable
    q.put(b"one")
    q.put(b"two")
    m = q.get_message()
    assert bytes(m) == b"one" and m.deliveries == 1
    m.nack()
    m = q.get_message()
    assert bytes(m) == b"one" and m.deliveries == 2  # back at its place
    del m  # dropped without ack: given back
    with q.get_message() as m:
        assert bytes(m) == b"one" and m.deliveries == 3
    assert bytes(q.get_message(timeout=1)) == b"two"  # the first one was acked by `with`
    with pytest.raises(RuntimeError), q.get_message() as m:
        raise RuntimeError  # an exception in the block gives it back
    assert q.get_message().deliveries == 3
    assert q._same_boot()
    q._check()


def test_plain_get_message_and_double_settle() -> None:
    q, _ = make()
    q.put(b"a")
    m = q.get_message()
    m.ack()
    m.ack()  # idempotent
    with pytest.raises(ValueError):
        m.nack()
    with pytest.raises(BufferError):
        memoryview(m)


def test_closed_handle_raises_closed() -> None:
    q, _ = make()
    q.put(b"a")
    m = q.get_message()
    q._close()
    assert q.closed
    with pytest.raises(errors.Closed):
        q.put(b"b")
    assert bytes(m) == b"a"  # a live message keeps the mapping
    m.ack()


def test_corrupted_segment() -> None:
    _, mm = make()
    for off, val in [(4096, 0x12345678), (4096 + 12, 1 << 30)]:  # magic, nentries
        bad = mmap.mmap(-1, len(mm))
        bad[:] = mm[:]
        struct.pack_into("<I", bad, off, val)
        with pytest.raises(errors.Corrupt):
            n.QueueCore()._bind(bad)
    # derived data damaged: operations raise Corrupt until repaired
    q, mm2 = make()
    q.put(b"keep")
    q.put(b"me")
    (heap_off,) = struct.unpack_from("<Q", mm2, 4096 + 48)  # il_q.heap_off
    struct.pack_into("<I", mm2, 4096 + heap_off + 4, 0xFFFF)  # the top node's entry index
    with pytest.raises(errors.Corrupt):
        q.get()
    with pytest.raises(errors.Corrupt):
        q._check()
    q._repair()
    assert [q.get(), q.get()] == [b"keep", b"me"]
