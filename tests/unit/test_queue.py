"""interlink.Queue / JoinableQueue / SimpleQueue in one process: multiprocessing's
documented behaviour, priorities, codecs, sizes, close, pickling, zero-copy."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import interlink as il

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def q() -> Iterator[il.Queue]:
    qu = il.Queue()
    yield qu
    qu.close()


def test_fifo_objects_roundtrip(q: il.Queue) -> None:
    objs = [1, "two", b"three", (4, [5]), {"six": 6.0}, None, bytearray(b"x" * 5000)]
    for o in objs:
        q.put(o)
    assert q.qsize() == len(objs)
    assert not q.empty()
    assert [q.get() for _ in objs] == objs
    assert q.empty() and q.qsize() == 0


def test_priorities_higher_first_fifo_within(q: il.Queue) -> None:
    for i, prio in enumerate([0, 1, 0, 5, 1, -3, 5]):
        q.put(i, priority=prio)
    assert [q.get() for _ in range(7)] == [3, 6, 1, 4, 0, 2, 5]


def test_empty_raises_queue_empty_like_multiprocessing(q: il.Queue) -> None:
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    t0 = time.monotonic()
    with pytest.raises(il.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - t0 >= 0.05
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    # the same calls on multiprocessing's queue raise the same type
    mq: multiprocessing.queues.Queue[int] = multiprocessing.Queue()
    with pytest.raises(queue.Empty):
        mq.get(block=False)
    mq.close()


def test_full_raises_queue_full() -> None:
    with il.Queue(maxsize=2) as q:
        assert q.maxsize == 2
        q.put(1)
        q.put(2)
        assert q.full() and q.qsize() == 2
        with pytest.raises(queue.Full):
            q.put(3, block=False)
        with pytest.raises(queue.Full):
            q.put_nowait(3)
        with pytest.raises(il.Full):
            q.put(3, timeout=0.05)
        assert q.get() == 1
        assert not q.full()
        q.put(3)
        assert [q.get(), q.get()] == [2, 3]


def test_blocked_put_resumes_when_a_get_frees_room() -> None:
    with il.Queue(maxsize=1) as q:
        q.put("a")
        done = threading.Event()

        def producer() -> None:
            q.put("b", timeout=10)
            done.set()

        t = threading.Thread(target=producer)
        t.start()
        assert not done.wait(0.05)
        assert q.get(timeout=5) == "a"
        assert done.wait(10)
        t.join(10)
        assert q.get(timeout=5) == "b"


def test_unbounded_maxsize_zero_and_negative() -> None:
    for m in (0, -5):
        with il.Queue(maxsize=m) as q:
            assert q.maxsize == 0
            q.put_many(range(3000))
            assert q.qsize() == 3000 and not q.full()


def test_put_many_get_many(q: il.Queue) -> None:
    big = b"y" * 100_000
    assert q.put_many([1, 2, big, 3, big, 4]) == 6
    got = q.get_many(100)
    assert got == [1, 2, big, 3, big, 4]
    with pytest.raises(queue.Empty):
        q.get_many(5, block=False)
    with pytest.raises(ValueError):
        q.get_many(0)
    q.put_many(range(1000))  # more than the core takes per call (256)
    assert q.get_many(10_000) == list(range(1000))
    q.put_many(range(600))
    assert q.get_many(300) == list(range(300))
    assert q.qsize() == 300


def test_put_many_partial_when_full() -> None:
    with il.Queue(maxsize=3) as q:
        assert q.put_many(range(5), block=False) == 3
        with pytest.raises(queue.Full):
            q.put_many([9], block=False)
        assert q.get_many(10) == [0, 1, 2]


def test_joinable_task_done_and_join() -> None:
    with il.JoinableQueue() as q:
        assert q.join(timeout=0) is True
        q.put(1)
        q.put(2)
        assert q.join(timeout=0.05) is False
        q.get()
        q.task_done()
        assert q.join(timeout=0.05) is False
        q.get()
        q.task_done()
        assert q.join(timeout=5) is True
        q.join()
        with pytest.raises(ValueError, match="too many times"):
            q.task_done()


def test_simple_queue_api() -> None:
    q = il.SimpleQueue()
    assert q.empty()
    q.put([1, 2])
    assert not q.empty()
    assert q.get() == [1, 2]
    q.close()


def test_close_then_operations_raise_closed_and_value_error() -> None:
    q = il.Queue()
    q.put(1)
    with pytest.raises(ValueError):
        q.join_thread()  # multiprocessing: only after close()
    q.cancel_join_thread()
    q.close()
    q.close()  # idempotent
    assert q.closed
    q.join_thread()
    for call in (lambda: q.put(2), q.get, q.qsize, q.empty, q.full, lambda: q.put_many([1])):
        with pytest.raises(il.Closed):
            call()
        with pytest.raises(ValueError):
            call()
    # multiprocessing raises ValueError too
    mq: multiprocessing.queues.Queue[int] = multiprocessing.Queue()
    mq.close()
    with pytest.raises(ValueError):
        mq.put(1)


def test_oversize_object_is_message_too_large() -> None:
    with il.Queue(capacity=64 * 1024) as q:
        with pytest.raises(il.MessageTooLarge):
            q.put(b"z" * (128 * 1024))
        with pytest.raises(ValueError):  # MessageTooLarge is a ValueError
            q.put(b"z" * (128 * 1024))
        q.put(b"ok")  # the queue is unaffected
        assert q.get() == b"ok"


def test_named_create_or_open_and_wrong_codec(request: pytest.FixtureRequest) -> None:
    name = f"q-{request.node.name[:20]}-{time.monotonic_ns() % 10**9}"
    with il.Queue(name, maxsize=7, codec="json") as a:
        with il.Queue(name, codec="json") as b:
            assert b.maxsize == 7  # the existing queue's settings win
            a.put({"k": [1, 2]})
            assert b.get(timeout=5) == {"k": [1, 2]}
        with pytest.raises(il.Incompatible, match="json"):
            il.Queue(name, codec="pickle")
        with pytest.raises(il.AlreadyExists):
            il.Queue(name, create=True, codec="json")
    with pytest.raises(il.NotFound):
        il.Queue(name, create=False, codec="json")


def test_pickled_handle_reopens_by_name(q: il.Queue) -> None:
    q.put("hello")
    again = pickle.loads(pickle.dumps(q))
    try:
        assert again.name == q.name
        assert again.get(timeout=5) == "hello"
        again.put("back")
        assert q.get(timeout=5) == "back"
    finally:
        again.close()
    j = il.JoinableQueue()
    j2 = pickle.loads(pickle.dumps(j))
    assert type(j2) is il.JoinableQueue
    j2.close()
    j.close()


def test_numpy_array_is_zero_copy_and_held_until_released(q: il.Queue) -> None:
    np = pytest.importorskip("numpy")
    a = np.arange(1 << 20, dtype=np.float64)  # 8 MiB
    q.put(a)
    b = q.get()
    assert b.dtype == a.dtype and np.array_equal(a, b)
    assert not b.flags.writeable and not b.flags.owndata  # a view of shared memory
    assert b.ctypes.data % 64 == 0
    st = q.stats()
    assert st["taken"] == 1 and st["arena_used"] >= a.nbytes  # still held by the view
    del b
    st = q.stats()
    assert st["taken"] == 0 and st["arena_used"] == 0


def test_view_survives_close_of_the_handle() -> None:
    np = pytest.importorskip("numpy")
    q = il.Queue()
    q.put(np.full(100_000, 7, dtype=np.int32))
    b = q.get()
    q.close()
    assert int(b.sum()) == 700_000
    del b


def test_bytes_codec_and_encode_errors() -> None:
    with il.Queue(codec="bytes") as q:
        q.put(b"abc")
        assert q.get() == b"abc"
        with pytest.raises(il.EncodeError):
            q.put(12)
    with il.Queue(codec="json") as q:
        with pytest.raises(il.EncodeError):
            q.put(object())
        assert q.empty()


def test_writer_that_keeps_a_view_is_refused() -> None:
    with il.Queue() as q:
        kept: list[memoryview] = []
        with pytest.raises(BufferError):
            q._core._put_into(8192, lambda mv: kept.append(mv[:]))
        # left reserved (memory safety): never delivered, never reused
        assert q.stats()["writing"] == 1 and q.empty()
        kept[0][:4] = b"safe"
        q.put(b"still works")
        assert q.get() == b"still works"
        with pytest.raises(ZeroDivisionError):
            q._core._put_into(8192, lambda mv: 1 / 0)
        assert q.stats()["writing"] == 1 and q.empty()


def test_ls_shows_kind_qsize_and_maxsize() -> None:
    from interlink._segment import list_objects

    with il.Queue(maxsize=5) as q:
        q.put(1)
        q.put(2)
        info = next(i for i in list_objects() if i.name == q.name)
        assert info.kind == "queue"
        assert info.detail == "qsize 2, maxsize 5"
    with il.Queue() as q:
        info = next(i for i in list_objects() if i.name == q.name)
        assert info.detail == "qsize 0, maxsize unbounded"


def test_trusted_codec_instance_counts_as_trusted() -> None:
    with il.Queue(mode=0o666) as untrusting:  # writable by others: pickles refused
        untrusting.put({"a": 1})
        untrusting.put(b"raw")
        with pytest.raises(il.AccessDenied):
            untrusting.get(timeout=5)
        assert untrusting.get(timeout=5) == b"raw"
        untrusting.put({"b": 2})
        with il.Queue(untrusting.name, codec=il.PickleCodec(trusted=True)) as trusting:
            assert trusting.get(timeout=5) == {"b": 2}


# ------------------------------------------------ the native object path (put/get)


def test_object_path_writes_and_reads_the_codecs_records(q: il.Queue) -> None:
    # put's one-call path frames exactly what the codec would; get reads
    # records the codec wrote (another interlink version, put_many, ...).
    codec = q.codec
    for obj in [(1, "abc", 2.0), {"k": [1, 2]}, "x" * 4080, "y" * 4095, None]:
        q.put(obj)
        raw = q._core.get()
        if not isinstance(raw, bytes):  # over 4 KiB: a view, released here
            with raw:
                raw = raw.tobytes()
        assert raw == codec.encode(obj)
        q._core.put(codec.encode(obj))  # type: ignore[arg-type]
        assert q.get() == obj


@pytest.mark.parametrize("n", [4070, 4080, 4086, 4087, 4088, 4089, 4100, 5000, 70_000])
def test_object_path_sizes_around_the_copy_and_watch_limits(q: il.Queue, n: int) -> None:
    # records of 4096 bytes or less are copied under the mutex, larger ones
    # outside it; pickles of 4096 bytes or more go through the codec
    obj = ("s", "z" * n)
    q.put(obj)
    q.put([n])
    assert q.get() == obj
    assert q.get() == [n]
    assert q.empty()


class _BytesSub(bytes):
    pass


def test_object_path_values_that_look_like_its_signals(q: il.Queue) -> None:
    q.put(NotImplemented)
    q.put(object())
    q.put(_BytesSub(b"pickled, not raw"))
    q.put(memoryview(b"raw view"))
    assert q.get() is NotImplemented
    assert type(q.get()) is object
    got = q.get()
    assert type(got) is _BytesSub and got == b"pickled, not raw"
    assert bytes(q.get()) == b"raw view"


def test_object_path_after_a_big_object_the_codec_watches(q: il.Queue) -> None:
    np = pytest.importorskip("numpy")
    from interlink._codec import _WATCH

    q.put((1, 2))
    assert q.codec._watch == 0  # type: ignore[attr-defined]
    q.put({"array": np.arange(4096.0)})  # pickled once by the native path, then by the codec
    assert q.codec._watch == _WATCH  # type: ignore[attr-defined]
    for i in range(3):
        q.put(("small", i))  # while watching: the codec's path
    assert q.codec._watch == _WATCH - 3  # type: ignore[attr-defined]
    got = q.get()
    assert got == (1, 2)
    arr = q.get()["array"]
    assert not arr.flags.owndata and arr.sum() == np.arange(4096.0).sum()  # out of band
    del arr
    assert [q.get() for _ in range(3)] == [("small", i) for i in range(3)]


class _Reducer:
    calls = 0

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> Any:
        type(self).calls += 1
        raise self.exc


class _Stop(BaseException):
    pass


def test_object_path_encode_errors(q: il.Queue) -> None:
    with pytest.raises(il.EncodeError) as info:
        q.put(lambda: 0)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value.__cause__, (pickle.PicklingError, AttributeError))
    assert "codec 'pickle' cannot encode function" in str(info.value)
    _Reducer.calls = 0
    with pytest.raises(il.EncodeError) as info:
        q.put(_Reducer(KeyError("boom")))
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.__cause__.__traceback__ is not None
    assert _Reducer.calls == 1  # pickled once, not again by a fallback
    with pytest.raises(_Stop):  # not an Exception: propagates unchanged
        q.put(_Reducer(_Stop()))
    with pytest.raises(MemoryError):
        q.put(_Reducer(MemoryError()))
    assert q.empty()
    q.put("fine")
    assert q.get() == "fine"


def test_object_path_damaged_payload_is_corrupt_and_consumed(q: il.Queue) -> None:
    tail = q.codec._tail  # type: ignore[attr-defined]
    q._core.put(b"\x80\x05\x95garbage" + tail)
    q._core.put(b"" + tail)  # an empty payload
    q.put("after")
    for _ in range(2):
        with pytest.raises(il.Corrupt) as info:
            q.get(timeout=5)
        assert "pickle payload could not be decoded" in str(info.value)
        assert isinstance(info.value.__cause__, (pickle.UnpicklingError, EOFError, ValueError))
    assert q.get(timeout=5) == "after"


def test_object_path_checks_the_trailer_uid_and_trust(q: il.Queue) -> None:
    from interlink._codec import _TRAILER, CODEC_PICKLE, MAGIC

    payload = pickle.dumps({"from": "elsewhere"}, 5)
    other = _TRAILER.pack((os.geteuid() + 1) & 0xFFFFFFFF, CODEC_PICKLE, 0, 0, MAGIC)
    q._core.put(payload + other)
    with pytest.raises(il.AccessDenied):
        q.get(timeout=5)
    q._core.put(payload + other)
    with il.Queue(q.name, trusted=True) as trusting:
        assert trusting.get(timeout=5) == {"from": "elsewhere"}
    bad_magic = q.codec._tail[:-1] + b"\x00"  # type: ignore[attr-defined]
    q._core.put(payload + bad_magic)
    with pytest.raises(il.Corrupt):
        q.get(timeout=5)


def test_queue_handle_is_freed_without_the_cycle_collector() -> None:
    import gc
    import weakref

    gc.disable()
    try:
        qu = il.Queue()
        qu.put(1)
        assert qu.get() == 1
        ref = weakref.ref(qu)
        name = qu.name
        del qu
        assert ref() is None  # reference counting alone: __del__ closed it
        with pytest.raises(il.NotFound):
            il.Queue(name, create=False)
    finally:
        gc.enable()


class _CountingQueue(il.Queue):
    puts = 0

    def put(
        self, obj: Any, block: bool = True, timeout: float | None = None, *, priority: int = 0
    ) -> None:
        type(self).puts += 1
        super().put(obj, block, timeout, priority=priority)


def test_put_and_get_are_native_unless_overridden() -> None:
    with il.Queue() as q:
        assert "put" in vars(q) and "get" in vars(q)  # the core's methods, no Python frame
        q.put("a", priority=1)
        q.put("b", True, 5, priority=2)
        q.put_nowait("c", priority=3)
        assert q.get(timeout=5) == "c"
        assert q.get(True, 5) == "b"
        assert q.get_nowait() == "a"
        with pytest.raises(TypeError):
            q.put()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            q.get(1, 2, 3)  # type: ignore[call-arg]
        with pytest.raises(ValueError):
            q.put("x", True, -1)  # a negative timeout, as multiprocessing
        assert q.empty()
    with _CountingQueue() as cq:
        assert "put" not in vars(cq) and "get" in vars(cq)
        cq.put((1, 2))
        cq.put(b"raw")
        assert cq.get(timeout=5) == (1, 2) and cq.get(timeout=5) == b"raw"
        assert _CountingQueue.puts == 2


def test_bound_put_outliving_its_queue_raises_closed() -> None:
    q = il.Queue()
    put, get = q.put, q.get
    put(1)
    del q  # closes the handle (no other reference)
    with pytest.raises(il.QueueClosed):
        put(2)
    with pytest.raises(il.QueueClosed):
        get()


def test_many_object_paths_mixed_records(q: il.Queue) -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange(2048.0)
    objs = [
        (1, "a"),
        b"raw",
        bytearray(b"ba"),
        "s" * 5000,
        {"arr": arr},
        _BytesSub(b"sub"),
        None,
        ("after", [2]),
    ]
    assert q.put_many(objs, priority=1) == len(objs)
    assert q.put_many(iter([(9,), (10,)])) == 2  # any iterable
    got = q.get_many(100)
    assert len(got) == 10
    assert got[:4] == objs[:4] and type(got[2]) is bytearray
    assert np.array_equal(got[4]["arr"], arr) and not got[4]["arr"].flags.owndata
    assert type(got[5]) is _BytesSub and got[6:] == [None, ("after", [2]), (9,), (10,)]
    with pytest.raises(il.EncodeError):
        q.put_many([1, lambda: 0])
    assert q.empty()  # nothing put: encoding comes first


def test_get_many_decode_error_raises_and_consumes_the_batch(q: il.Queue) -> None:
    tail = q.codec._tail  # type: ignore[attr-defined]
    q.put("first")
    q._core.put(b"\x80\x05garbage" + tail)
    q.put("third")
    with pytest.raises(il.Corrupt) as info:
        q.get_many(10)
    assert isinstance(info.value.__cause__, (pickle.UnpicklingError, EOFError, ValueError))
    assert q.empty() and q.stats()["taken"] == 0
    q.put_many(["x", "y"])
    assert q.get_many(10) == ["x", "y"]


def test_get_many_refuses_pickles_from_an_untrusted_segment() -> None:
    with il.Queue(mode=0o666) as q:  # writable by others
        q.put_many([b"raw", {"pickled": 1}])
        with pytest.raises(il.AccessDenied):
            q.get_many(10)
        assert q.empty()


_close_target: list[il.Queue] = []


def _close_and_mark() -> str:
    for qu in _close_target:
        qu.close()
    return "closed"


class _Closer:
    """Closes the queues in _close_target when pickled (put) and unpickled (get)."""

    def __reduce__(self) -> Any:
        _close_and_mark()
        return (_close_and_mark, ())


def test_closing_the_queue_while_pickling_or_unpickling_is_safe() -> None:
    with il.Queue() as q:
        _close_target[:] = [q]
        try:
            with pytest.raises(il.QueueClosed):  # closed before the write
                q.put(_Closer())
        finally:
            _close_target.clear()
        assert q.closed
    for many in (False, True):
        with il.Queue() as q:
            q.put_many([_Closer(), 1, _Closer(), "x" * 5000])
            _close_target[:] = [q]
            try:
                got = q.get_many(10) if many else [q.get()]
            finally:
                _close_target.clear()
            assert q.closed
            assert got == (["closed", 1, "closed", "x" * 5000] if many else ["closed"])


def test_native_put_and_get_have_the_documented_signatures(q: il.Queue) -> None:
    import inspect

    assert list(inspect.signature(q.put).parameters) == ["obj", "block", "timeout", "priority"]
    assert list(inspect.signature(q.get).parameters) == ["block", "timeout"]
    assert "Queue.put" in (q.put.__doc__ or "") and "Queue.get" in (q.get.__doc__ or "")
