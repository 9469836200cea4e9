"""interlink.Topic in one process: delivery, order, history, both policies,
exact lost counts, codecs, zero-copy publishing of big buffers, pickling,
asyncio, and bad input (wrong kind, wrong codec or policy, oversize, damaged
segment)."""

from __future__ import annotations

import asyncio
import mmap
import os
import pickle
import struct
import threading
import time
from typing import Any

import numpy as np
import pytest

import interlink as il
from interlink import _native, _segment

pytestmark = pytest.mark.timeout(60)


def test_publish_subscribe_roundtrip(name: str) -> None:
    with il.Topic(name) as t:
        assert t.policy == "drop" and t.name == name
        a, b = t.subscribe(), t.subscribe()
        t.publish({"x": 1})
        t.publish(b"raw")
        t.publish(("tuple", 2))
        for s in (a, b):
            assert s.recv(timeout=5) == {"x": 1}
            assert s.recv(timeout=5) == b"raw"
            assert s.recv(timeout=5) == ("tuple", 2)
            assert s.received == 3 and s.lost == 0
        with pytest.raises(il.Timeout):
            a.recv(timeout=0.01)
        with pytest.raises(il.Timeout):
            a.recv(timeout=0)
        assert t.counts() == (1, 2)


def test_subscriber_sees_only_messages_after_subscribing_plus_history() -> None:
    with il.Topic(capacity=1 << 16) as t:
        for i in range(10):
            t.publish(i)
        now = t.subscribe()
        last3 = t.subscribe(history=3)
        everything = t.subscribe(history=1000)
        t.publish(10)
        assert now.recv(timeout=5) == 10
        assert [last3.recv(timeout=5) for _ in range(4)] == [7, 8, 9, 10]
        assert [everything.recv(timeout=5) for _ in range(11)] == list(range(11))
        with pytest.raises(ValueError):
            t.subscribe(history=-1)


def test_drop_policy_lapped_subscriber_counts_lost_exactly() -> None:
    with il.Topic(policy="drop", capacity=4096) as t:
        s = t.subscribe()
        n = 5000
        for i in range(n):
            t.publish(i)  # never waits
        got = []
        while True:
            try:
                got.append(s.recv(timeout=0))
            except il.Timeout:
                break
        assert s.lost > 0
        assert len(got) + s.lost == n
        assert got == sorted(got) and got[-1] == n - 1
        assert got == list(range(n - len(got), n))  # what is left is the newest, contiguous


def test_block_policy_publisher_waits_for_the_slowest_subscriber() -> None:
    with il.Topic(policy="block", capacity=4096) as t:
        fast, slow = t.subscribe(), t.subscribe()
        sent = 0
        with pytest.raises(il.Timeout):
            while True:
                t.publish(sent, timeout=0.01)
                sent += 1
                assert [fast.recv(timeout=5)] == [sent - 1]
        assert sent > 10
        assert [slow.recv(timeout=5) for _ in range(sent)] == list(range(sent))
        t.publish("more", timeout=5)  # room again
        assert fast.recv(timeout=5) == "more"
        slow.close()  # a closed subscriber no longer holds publishers back
        for i in range(sent * 3):
            t.publish(i, timeout=5)
            assert fast.recv(timeout=5) == i
        assert slow.closed and fast.lost == 0 and slow.lost == 0


def test_publish_many_and_iteration() -> None:
    with il.Topic(policy="block", capacity=1 << 16) as t:
        s = t.subscribe()
        assert t.publish_many(range(100)) == 100
        assert t.publish_many([b"x" * 10_000, np.zeros(1000)]) == 2  # mixed records
        got = []
        for obj in s:
            got.append(obj)
            if len(got) == 102:
                break
        assert got[:100] == list(range(100))
        assert got[100] == b"x" * 10_000 and np.array_equal(got[101], np.zeros(1000))
        s.close()
        assert list(s) == []  # a closed subscription ends iteration


def test_big_numpy_array_roundtrip() -> None:
    with il.Topic(capacity=16 << 20) as t:
        s = t.subscribe()
        a = np.arange(1 << 20, dtype=np.float64)  # 8 MiB, out of band
        t.publish(a)
        b = s.recv(timeout=5)
        assert np.array_equal(a, b)


def test_codecs_and_trust(name: str) -> None:
    with il.Topic(codec="json") as t:
        s = t.subscribe()
        t.publish({"a": [1, 2]})
        assert s.recv(timeout=5) == {"a": [1, 2]}
    with il.Topic(name, codec="json"), pytest.raises(il.Incompatible):
        il.Topic(name, codec="pickle")
    with il.Topic(mode=0o620) as t:  # group-writable: pickles refused unless trusted
        s = t.subscribe()
        t.publish(b"bytes pass")
        assert s.recv(timeout=5) == b"bytes pass"
        t.publish({"a": 1})
        with pytest.raises(il.AccessDenied):
            s.recv(timeout=5)
    with il.Topic(mode=0o620, trusted=True) as t:
        s = t.subscribe()
        t.publish({"a": 1})
        assert s.recv(timeout=5) == {"a": 1}


def test_named_topic_keeps_its_settings(name: str) -> None:
    with il.Topic(name, policy="block", capacity=8192) as t:
        with il.Topic(name) as again:  # no explicit policy: whatever it is
            assert again.policy == "block" and again.capacity == 8192
            s = again.subscribe()
            t.publish("hello")
            assert s.recv(timeout=5) == "hello"
        with pytest.raises(il.Incompatible):
            il.Topic(name, policy="drop")
    with pytest.raises(il.NotFound):
        il.Topic(name, create=False)


def test_pickled_handle_opens_the_same_topic() -> None:
    with il.Topic(policy="block") as t:
        copy = pickle.loads(pickle.dumps(t))
        try:
            s = copy.subscribe()
            t.publish(42)
            assert s.recv(timeout=5) == 42
            assert copy.policy == "block"
        finally:
            copy.close()


def test_bad_input(name: str) -> None:
    with pytest.raises(ValueError, match="policy"):
        il.Topic(policy="fifo")
    with pytest.raises(ValueError):
        il.Topic(capacity=0)
    with pytest.raises(ValueError):
        il.Topic(max_publishers=0)
    with pytest.raises(ValueError):
        il.Topic(max_subscribers=100_000)
    with il.Queue(name), pytest.raises(il.Incompatible):
        il.Topic(name)
    with il.Topic(capacity=4096) as t:
        s = t.subscribe()
        with pytest.raises(il.MessageTooLarge):
            t.publish(b"x" * 5000)
        with pytest.raises(il.MessageTooLarge):
            t.publish(np.zeros(1000))  # an Encoded record
        t.publish(b"still fine")
        assert s.recv(timeout=5) == b"still fine"
    with pytest.raises(il.Closed):
        t.publish(1)
    with pytest.raises(il.Closed):
        s.recv(timeout=0)


def test_slots_are_bounded_and_reused() -> None:
    with il.Topic(max_subscribers=2, max_publishers=1) as t:
        a, b = t.subscribe(), t.subscribe()
        with pytest.raises(il.Busy):
            t.subscribe()
        a.close()
        c = t.subscribe()
        t.publish(1)
        with il.Topic(t.name) as other, pytest.raises(il.Busy):
            other.publish(2)  # the one publisher slot is ours
        assert b.recv(timeout=5) == 1 and c.recv(timeout=5) == 1


def _ring_offset(t: il.Topic) -> int:
    npub, nsub = 8, 32
    stride = (64 + 8 * npub + 63) // 64 * 64
    meta = 256 + 128 * npub + stride * nsub
    return _native.SEG_HEADER_SIZE + (meta + 4095) // 4096 * 4096


def test_corrupted_segment_raises_corrupt(name: str) -> None:
    path = _segment._path_for(name)
    with il.Topic(name, codec="bytes") as t:
        s = t.subscribe()
        t.publish(b"payload")
        fd = os.open(path, os.O_RDWR)
        try:
            with mmap.mmap(fd, 0) as mm:
                off = _ring_offset(t)
                (length,) = struct.unpack_from("<I", mm, off)
                assert length > len(b"payload")  # our record (+ codec trailer) is there
                struct.pack_into("<I", mm, off, 1 << 30)  # a length beyond the ring
                with pytest.raises(il.Corrupt):
                    s.recv(timeout=1)
                struct.pack_into("<I", mm, off, length)
                assert bytes(s.recv(timeout=1)) == b"payload"
                # a damaged control block: a fresh opener refuses the segment
                struct.pack_into("<Q", mm, _native.SEG_HEADER_SIZE, 0xBAD)
                with pytest.raises(il.Corrupt):
                    il.Topic(name, codec="bytes")
        finally:
            os.close(fd)


def test_ls_shows_a_topic(name: str) -> None:
    with il.Topic(name, policy="block") as t:
        s = t.subscribe()
        t.publish(1)
        info = {o.name: o for o in _segment.list_objects()}[name]
        assert info.kind == "topic"
        assert info.detail == "policy block, publishers 1, subscribers 1"
        s.close()


def test_arecv() -> None:
    async def main(t: il.Topic) -> None:
        s = t.subscribe()
        timer = threading.Timer(0.05, t.publish, args=("late",))
        timer.start()
        assert await asyncio.wait_for(s.arecv(), 10) == "late"
        timer.join()
        with pytest.raises(il.Timeout):
            await s.arecv(timeout=0.05)
        # a cancelled arecv loses nothing: what its thread took comes next
        task = asyncio.ensure_future(s.arecv())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t.publish("after cancel")
        assert await asyncio.wait_for(s.arecv(), 10) == "after cancel"

    with il.Topic() as t:
        asyncio.run(main(t))


def test_block_policy_big_messages_are_received_in_place() -> None:
    with il.Topic(policy="block", capacity=16 << 20) as t:
        s = t.subscribe()
        a = np.arange(1 << 20, dtype=np.float64)  # 8 MiB: two do not fit the ring
        t.publish(a)
        b = s.recv(timeout=5)
        assert np.array_equal(a, b)
        assert not b.flags.owndata and not b.flags.writeable  # a view of the ring
        assert b.ctypes.data % 64 == 0
        # the record is held while the view lives: the publisher cannot overwrite it
        with pytest.raises(il.Timeout):
            t.publish(a, timeout=0.05)
        assert np.array_equal(a, b)
        del b  # the last view goes: released
        t.publish(a * 2, timeout=5)
        assert np.array_equal(s.recv(timeout=5), a * 2)
    with il.Topic(policy="drop", capacity=16 << 20) as t:  # drop: always a copy
        s = t.subscribe()
        t.publish(a)
        c = s.recv(timeout=5)
        assert np.array_equal(a, c)
        t.publish(a * 3)  # overwrites the ring: the copy stays intact
        t.publish(a * 3)
        assert np.array_equal(a, c)


def test_object_fast_path_keeps_the_codec_semantics() -> None:
    """publish/recv are one native call for exact bytes and small pickles; the
    objects that come out are exactly what the codec path gives."""
    with il.Topic(capacity=1 << 20) as t:  # pickle codec
        s = t.subscribe()
        # the native methods themselves (no Python frame per message)
        assert t.publish.__name__ == "_publish_obj" and s.recv.__name__ == "_recv_obj"
        sent = [
            b"raw bytes",
            bytearray(b"a bytearray"),
            memoryview(b"a view"),
            (1, "abc", 2.5),
            {"k": [1, 2, 3]},
            b"x" * 70_000,  # bigger than the inline limit: the codec's path
            np.arange(2048, dtype=np.int64),  # 16 KiB: out of band, then watched
            ("small", "again"),
        ]
        for obj in sent:
            t.publish(obj, timeout=5)
        for obj in sent:
            got: Any = s.recv(timeout=5)
            assert type(got) is type(obj)
            if isinstance(obj, np.ndarray):
                assert np.array_equal(got, obj)
            else:
                assert got == obj
    with il.Topic(codec="bytes") as t:
        s = t.subscribe()
        t.publish(b"plain")
        t.publish(bytearray(b"array"))
        for want in (b"plain", b"array"):
            view: Any = s.recv(timeout=5)
            assert isinstance(view, memoryview) and view.readonly and view == want
        with pytest.raises(il.EncodeError):
            t.publish("not bytes")
    with il.Topic(codec="msgpack") as t:  # no fast path: the codec's
        s = t.subscribe()
        t.publish(b"bin")
        t.publish([1, "two"])
        assert s.recv(timeout=5) == b"bin" and s.recv(timeout=5) == [1, "two"]


def test_object_fast_path_errors() -> None:
    with il.Topic() as t:
        s = t.subscribe()
        with pytest.raises(il.EncodeError) as info:
            t.publish(lambda: 1)  # pickle cannot: nothing is published
        assert info.value.__cause__ is not None
        t.publish("next")
        assert s.recv(timeout=5) == "next"
        # a damaged pickle with this user's trailer: Corrupt, the next one is fine
        t._core.publish(b"\x80\x05garbage" + t.codec._tail)
        with pytest.raises(il.Corrupt):
            s.recv(timeout=5)
        t.publish(7)
        assert s.recv(timeout=5) == 7
    publish, recv = t.publish, s.recv
    with pytest.raises(il.Closed):
        publish(1)
    with pytest.raises(il.Closed):
        recv(timeout=0)
    # the bound fast methods outlive the Topic object: Closed, not a crash
    t2 = il.Topic()
    publish = t2.publish
    del t2
    import gc

    gc.collect()
    with pytest.raises(il.Closed):
        publish(1)


def test_subclass_overrides_are_honoured() -> None:
    class Counting(il.Topic):
        published = 0

        def publish(self, obj: object, timeout: float | None = None) -> None:
            Counting.published += 1
            super().publish(("wrapped", obj), timeout)

    with Counting() as t:
        s = t.subscribe()
        t.publish(1)
        assert Counting.published == 1
        assert s.recv(timeout=5) == ("wrapped", 1)


def test_recv_many() -> None:
    with il.Topic(policy="block") as t:
        s = t.subscribe()
        with pytest.raises(il.Timeout):
            s.recv_many(timeout=0.01)
        for i in range(10):
            t.publish(i)
        t.publish(b"raw")
        assert s.recv_many(4, timeout=5) == [0, 1, 2, 3]
        assert s.recv(timeout=5) == 4  # recv and recv_many share the order
        assert s.recv_many(timeout=5) == [5, 6, 7, 8, 9, b"raw"]
        with pytest.raises(ValueError):
            s.recv_many(0)
        with pytest.raises(ValueError):
            s.recv_many(257)
        # waits for the first, then takes what is there
        timer = threading.Timer(0.05, t.publish, args=("late",))
        timer.start()
        assert s.recv_many(timeout=10) == ["late"]
        timer.join()
        # a damaged record is skipped; its error comes with the next receive
        t.publish("before")
        t._core.publish(b"\x80\x05garbage" + t.codec._tail)
        t.publish("after")
        assert s.recv_many(timeout=5) == ["before", "after"]
        with pytest.raises(il.Corrupt):
            s.recv(timeout=0)
        with pytest.raises(il.Timeout):
            s.recv(timeout=0)
        # nothing decodable: the error at once
        t._core.publish(b"\x80\x05garbage" + t.codec._tail)
        with pytest.raises(il.Corrupt):
            s.recv_many(timeout=5)
        assert s.received == 16 and s.lost == 0
    with pytest.raises(il.Closed):
        s.recv_many(timeout=0)


def test_threads_share_a_handle_and_a_subscription() -> None:
    """The handle's thread locks: 4 threads publish through one Topic handle,
    2 threads receive from one Subscription (recv and recv_many); every
    message arrives exactly once, in each publishing thread's order."""
    n, nthreads = 3000, 4
    with il.Topic(policy="block", capacity=1 << 14) as t:
        s = t.subscribe()
        got: list[list[tuple[int, int]]] = [[], []]
        errors: list[BaseException] = []

        def publish(k: int) -> None:
            try:
                for i in range(n):
                    t.publish((k, i), timeout=30)
            except BaseException as exc:  # reported below
                errors.append(exc)

        def receive(j: int) -> None:
            try:
                while True:
                    items = [s.recv(timeout=30)] if j == 0 else s.recv_many(16, timeout=30)
                    for item in items:
                        if item is None:
                            return
                        got[j].append(item)
            except BaseException as exc:
                errors.append(exc)

        receivers = [threading.Thread(target=receive, args=(j,)) for j in range(2)]
        publishers = [threading.Thread(target=publish, args=(k,)) for k in range(nthreads)]
        for th in receivers + publishers:
            th.start()
        for th in publishers:
            th.join(60)
        # one end marker at a time: a batch cannot take both
        for _ in receivers:
            t.publish(None, timeout=30)
            deadline = time.monotonic() + 60
            while all(th.is_alive() for th in receivers) and time.monotonic() < deadline:
                for th in receivers:
                    th.join(0.01)
            receivers = [th for th in receivers if th.is_alive()]
        assert not errors, errors
        assert not receivers and not any(th.is_alive() for th in publishers)
        every = got[0] + got[1]
        assert sorted(every) == [(k, i) for k in range(nthreads) for i in range(n)]
        for j in range(2):  # each receiver sees each publisher's messages in order
            for k in range(nthreads):
                mine = [i for kk, i in got[j] if kk == k]
                assert mine == sorted(mine)
