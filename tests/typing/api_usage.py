"""Type-checked by `make lint` (mypy --strict): the public API as users write it.

Never executed; a stub or signature regression fails the lint step.
"""

from __future__ import annotations

import asyncio

import interlink as il


def producer(ch: il.Channel) -> int:
    ch.send(b"bytes")
    ch.send(bytearray(b"bytearray"), timeout=0.5)
    ch.send_nowait(memoryview(b"view"))
    sent: int = ch.send_many([b"a", b"b"], timeout=None)
    with ch.loan(16) as buf:
        buf[:4] = b"abcd"
    loan: il.Loan = ch.loan(8)
    loan.commit(4)
    return sent


def consumer(ch: il.Channel) -> bytes:
    with ch.recv(timeout=1.0) as msg:
        view: memoryview = memoryview(msg)
        n: int = len(msg) + view.nbytes
    batch: list[il.Message] = ch.recv_many(64, timeout=None)
    for m in batch:
        m.release()
    stats: il.ChannelStatistics = ch.statistics()
    assert n >= 0 and stats.capacity > 0
    return ch.recv_bytes(timeout=0.1) + ch.recv_nowait().tobytes()


async def async_consumer(ch: il.Channel) -> il.Message:
    await ch.asend(b"x", timeout=1.0)
    return await asyncio.wait_for(ch.arecv(), 1.0)


def errors() -> tuple[type[BaseException], ...]:
    return (il.Timeout, il.Empty, il.Full, il.Closed, il.NotFound, il.Busy, il.Corrupt)


def open_channels() -> None:
    with il.Channel("x", capacity=1 << 16, create=None, mode=0o600) as ch:
        assert ch.name and ch.max_message_size < ch.capacity
    il.Channel(None).unlink()


def sync_primitives() -> None:
    lock = il.Lock("l", create=None, mode=0o600)
    got: bool = lock.acquire() and lock.acquire(False) and lock.acquire(True, 0.5)
    got = got or lock.acquire(block=True, timeout=None)
    with lock:
        assert lock.locked()
    lock.release()
    if lock.owner_died:
        lock.recovered()
    stats: il.LockStatistics = lock.statistics()
    rlock = il.RLock()
    with rlock, rlock:
        pass
    sem = il.Semaphore("s", 4)
    bounded = il.BoundedSemaphore(None, 2)
    with sem:
        sem.release(2)
    value: int = bounded.get_value() + stats.waiters
    sstats: il.SemaphoreStatistics = sem.statistics()
    assert got and value >= 0 and sstats.max_value is None
    for obj in (lock, rlock, sem, bounded):
        obj.close()


def codecs(ch: il.Channel) -> object:
    codec: il.Codec = il.get_codec("pickle", trusted=False)
    named: list[il.Codec] = [il.get_codec(n) for n in ("auto", "bytes", "msgpack", "json")]
    custom = il.PickleCodec(trusted=True, oob_threshold=1 << 16)
    record: bytes | il.Encoded = codec.encode({"k": [1, 2]})
    if isinstance(record, il.Encoded):
        size: int = record.size
        with ch.loan(size) as buf:
            written: int = record.write_into(buf)
            assert written == len(record)
    else:
        ch.send(record)
    whole: bytes = custom.dumps(b"raw")
    with ch.recv(timeout=1.0) as msg:
        value: object = codec.decode(msg, copy=True)
    view: object = il.BytesCodec().decode(whole[:0] + il.BytesCodec().dumps(b"x"))
    other = il.MsgpackCodec(use_list=False).decode(il.JsonCodec(allow_nan=False).dumps(1))
    try:
        codec.encode(lambda: None)
    except il.EncodeError as exc:
        assert isinstance(exc, TypeError)
    return (named, value, view, other, codec.name, codec.trusted, il.PickleCodec.runs_code)


def queues() -> object:
    import queue as std_queue

    q = il.Queue(None, 10, codec="pickle", trusted=False, mode=0o600, capacity=1 << 20)
    q.put({"k": 1}, True, 1.0, priority=3)
    q.put_nowait(2, priority=-1)
    n: int = q.put_many([3, 4], timeout=0.5)
    try:
        item: object = q.get(True, 0.1)
        items: list[object] = q.get_many(8, block=False)
        q.get_nowait()
    except std_queue.Empty:
        item, items = None, []
    size: int = q.qsize() + q.maxsize + q.capacity
    flags: tuple[bool, bool, bool] = (q.empty(), q.full(), q.closed)
    named = il.Queue("jobs", create=None, codec=il.JsonCodec(), max_messages=64)
    jq = il.JoinableQueue(maxsize=4)
    jq.put(1)
    jq.get()
    jq.task_done()
    done: bool = jq.join(timeout=1.0)
    sq = il.SimpleQueue()
    sq.put("x")
    sq.get()
    for h in (q, named, jq, sq):
        h.close()
        h.join_thread()
        h.cancel_join_thread()
    try:
        q.put(1)
    except il.QueueClosed as exc:
        assert isinstance(exc, ValueError) and isinstance(exc, il.Closed)
    dq = il.JoinableQueue(durable=True, path="/tmp/q", sync="always", max_messages=16)
    msg: il.DurableMessage = dq.get_message(timeout=1.0)
    with msg:
        seen: object = msg.value
        tries: int = msg.deliveries + msg.priority
    msg.ack() if not msg.done else None
    dq.get_message(block=False).nack()
    dq.close()
    return (n, item, items, size, flags, done, named.name, named.mode, named.codec, seen, tries)
