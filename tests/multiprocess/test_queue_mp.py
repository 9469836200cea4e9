"""interlink.Queue across real processes: many producers x many consumers (none
lost or duplicated, FIFO per producer), anonymous queues pickled to spawn
children, named queues opened by unrelated processes, JoinableQueue.join across
processes, blocking get woken by another process, zero-copy 8 MiB arrays, and
the pickle trust rule against another user."""

from __future__ import annotations

import multiprocessing
import os
import pwd
from collections import Counter

import pytest
from mp_helpers import Spawn, blocked_in_futex, wait_until

import interlink as il

pytestmark = pytest.mark.timeout(180)

_SPAWN = multiprocessing.get_context("spawn")


# ------------------------------------------------- targets (spawn children)


def _producer(q: il.Queue, k: int, count: int, ready: il.Queue) -> None:
    ready.put(("ready", k))
    i = 0
    while i < count:
        n = min(64, count - i)
        if k % 2:  # half the producers batch, half put one at a time
            i += q.put_many([(k, j) for j in range(i, i + n)], timeout=60)
        else:
            q.put((k, i), timeout=60)
            i += 1
    q.close()


def _consumer(q: il.Queue, c: int, results: il.Queue) -> None:
    got: list[tuple[int, int]] = []
    while True:
        items = q.get_many(64, timeout=60) if c % 2 else [q.get(timeout=60)]
        stops = 0
        for item in items:
            if item is None:
                stops += 1
            else:
                got.append(item)
        if stops:
            for _ in range(stops - 1):  # get_many took another consumer's stop too
                q.put(None, priority=-1)
            break
    results.put((c, got), timeout=60)
    q.close()
    results.close()


def _joinable_worker(q: il.JoinableQueue, done: il.Queue, n: int) -> None:
    for _ in range(n):
        item = q.get(timeout=60)
        done.put(item * 2, timeout=60)
        q.task_done()


def _array_producer(q: il.Queue, nbytes: int) -> None:
    import numpy as np

    a = np.arange(nbytes // 8, dtype=np.float64)
    q.put(a, timeout=60)
    q.put("sent", timeout=60)


def _array_echo(q: il.Queue, back: il.Queue) -> None:
    a = q.get(timeout=60)
    # report whether the array we got views shared memory, then send it back
    back.put((bool(a.flags.owndata), bool(a.flags.writeable), a.ctypes.data % 64), timeout=60)
    back.put(a, timeout=60)


# ------------------------------------------------------------------ tests


def _many_to_many(nprod: int, ncons: int, count: int) -> None:
    q = il.Queue(maxsize=4096)
    ready = il.Queue()
    results = il.Queue()
    prods = [_SPAWN.Process(target=_producer, args=(q, k, count, ready)) for k in range(nprod)]
    cons = [_SPAWN.Process(target=_consumer, args=(q, c, results)) for c in range(ncons)]
    try:
        for p in prods + cons:
            p.start()
        for _ in range(nprod):
            assert ready.get(timeout=60)[0] == "ready"
        for p in prods:
            p.join(120)
            assert p.exitcode == 0
        for _ in range(ncons):
            q.put(None, priority=-1)  # after every real item
        got: dict[int, list[tuple[int, int]]] = {}
        for _ in range(ncons):
            c, items = results.get(timeout=120)
            got[c] = items
        for p in cons:
            p.join(60)
            assert p.exitcode == 0
        everything = Counter(item for items in got.values() for item in items)
        assert len(everything) == nprod * count, "lost messages"
        assert set(everything.values()) == {1}, "duplicated messages"
        assert set(everything) == {(k, i) for k in range(nprod) for i in range(count)}
        for items in got.values():  # FIFO per producer, seen by each consumer
            last: dict[int, int] = {}
            for k, i in items:
                assert i > last.get(k, -1)
                last[k] = i
        assert q.empty() and q.stats()["taken"] == 0
    finally:
        for p in prods + cons:
            if p.is_alive():
                p.kill()
            p.join(10)
        for x in (q, ready, results):
            x.close()


def test_four_producers_four_consumers_none_lost_or_duplicated() -> None:
    _many_to_many(4, 4, 25_000)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_four_by_four_250k_each() -> None:
    _many_to_many(4, 4, 250_000)


def test_joinable_join_waits_for_task_done_in_another_process() -> None:
    q = il.JoinableQueue()
    done = il.Queue()
    for i in range(10):
        q.put(i)
    assert q.join(timeout=0.05) is False
    p = _SPAWN.Process(target=_joinable_worker, args=(q, done, 10))
    p.start()
    try:
        assert q.join(timeout=60) is True
        # join returned only after every task_done: all results are there
        assert sorted(done.get(timeout=5) for _ in range(10)) == [2 * i for i in range(10)]
        p.join(60)
        assert p.exitcode == 0
        with pytest.raises(ValueError):
            q.task_done()
    finally:
        if p.is_alive():
            p.kill()
        p.join(10)
        q.close()
        done.close()


def test_named_queue_opened_by_unrelated_process(spawn: Spawn, name: str) -> None:
    with il.Queue(name, maxsize=3) as q:
        child = spawn(
            """
            q = il.Queue(sys.argv[1])
            say("maxsize", q.maxsize)
            item = q.get(timeout=30)
            q.put(("echo", item), priority=2)
            q.put("low")
            say("done")
            """,
            name,
        )
        assert child.expect("maxsize") == ["3"]
        wait_until(lambda: blocked_in_futex(child.pid), 30, "the child to block in get")
        q.put({"x": 1})
        child.expect("done")
        assert child.wait() == 0, child.stderr()
        assert q.get(timeout=5) == ("echo", {"x": 1})
        assert q.get(timeout=5) == "low"


def test_wrong_codec_from_another_process_is_incompatible(spawn: Spawn, name: str) -> None:
    with il.Queue(name, codec="msgpack" if _has("msgpack") else "json"):
        child = spawn(
            """
            try:
                il.Queue(sys.argv[1], codec="pickle")
            except il.Incompatible as exc:
                say("incompatible")
            """,
            name,
        )
        child.expect("incompatible")
        assert child.wait() == 0, child.stderr()


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_numpy_8mib_zero_copy_across_processes() -> None:
    np = pytest.importorskip("numpy")
    nbytes = 8 << 20
    q = il.Queue()
    back = il.Queue()
    p = _SPAWN.Process(target=_array_producer, args=(q, nbytes))
    e = _SPAWN.Process(target=_array_echo, args=(q, back))
    try:
        p.start()
        a = q.get(timeout=60)
        assert q.get(timeout=60) == "sent"
        assert a.nbytes == nbytes and np.array_equal(a, np.arange(nbytes // 8, dtype=np.float64))
        assert not a.flags.owndata and not a.flags.writeable and a.ctypes.data % 64 == 0
        st = q.stats()
        assert st["taken"] == 1 and st["arena_used"] >= nbytes  # the view holds the message
        p.join(60)
        assert p.exitcode == 0
        # send our view to another process, which sees a view of its own
        e.start()
        q.put(a)
        del a
        owndata, writeable, align = back.get(timeout=60)
        assert (owndata, writeable, align) == (False, False, 0)
        b = back.get(timeout=60)
        assert np.array_equal(b, np.arange(nbytes // 8, dtype=np.float64))
        del b
        e.join(60)
        assert e.exitcode == 0
        assert q.stats()["taken"] == 0 and back.stats()["taken"] == 0
    finally:
        for x in (p, e):
            if x.is_alive():
                x.kill()
            if x.pid is not None:
                x.join(10)
        q.close()
        back.close()


AS_NOBODY_PUT = """
name, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
q = il.Queue(sys.argv[1], create=False, trusted=True)
q.put({"from": "nobody"})
q.put(b"raw bytes")
q.put({"from": "nobody", "again": True})
q.close()
say("put")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_pickle_from_another_user_is_refused(spawn: Spawn, name: str) -> None:
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    # 0o666: another user can write it, so its pickles are not trusted
    with il.Queue(name, mode=0o666) as q:
        child = spawn(AS_NOBODY_PUT, name, str(pw.pw_uid), str(pw.pw_gid))
        child.expect("put")
        assert child.wait() == 0, child.stderr()
        with pytest.raises(il.AccessDenied) as info:
            q.get(timeout=5)
        assert isinstance(info.value, PermissionError)
        assert q.get(timeout=5) == b"raw bytes"  # raw records run no code
        with il.Queue(name, trusted=True) as trusting:
            assert trusting.get(timeout=5) == {"from": "nobody", "again": True}


def _fork_putter(q: il.Queue, k: int) -> None:
    q.put_many([(k, i) for i in range(1000)], timeout=60)
    q.close()


def test_fork_children_use_the_inherited_handle() -> None:
    ctx = multiprocessing.get_context("fork")
    q = il.Queue()
    ps = [ctx.Process(target=_fork_putter, args=(q, k)) for k in range(2)]
    try:
        for p in ps:
            p.start()
        for p in ps:
            p.join(60)
            assert p.exitcode == 0
        got = q.get_many(10_000, timeout=5)
        assert sorted(got) == sorted((k, i) for k in range(2) for i in range(1000))
        assert [u.pid for u in q._segment.users() if u.alive] == [os.getpid()]
    finally:
        for p in ps:
            if p.is_alive():
                p.kill()
            p.join(10)
        q.close()
