"""interlink.Topic across real processes: 1 publisher x 8 subscribers under both
policies (block: every message to every subscriber, in order; drop: a lapped
subscriber's ``received + lost`` is exact; half the subscribers receive in
``recv_many`` batches), several publishers (order per
publisher), a subscriber killed with SIGKILL under the block policy (the
publisher proceeds), a publisher killed while publishing (nothing torn, its
slot taken over), a named topic opened by an unrelated process, and Ctrl-C in
a blocked recv."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from mp_helpers import Spawn, blocked_in_futex, wait_until

import interlink as il

pytestmark = pytest.mark.timeout(180)

_SPAWN = multiprocessing.get_context("spawn")
END = "end"


# ------------------------------------------------- targets (spawn children)


def _received(sub: il.Subscription, batched: bool) -> Iterator[Any]:
    """Every object the subscription receives: one recv() at a time, or
    through recv_many() batches of varying sizes."""
    if not batched:
        while True:
            yield sub.recv(timeout=60)
    sizes = itertools.cycle((1, 7, 64, 256, 3))
    while True:
        yield from sub.recv_many(next(sizes), timeout=60)


def _subscriber(
    topic: il.Topic, k: int, ready: il.Queue, results: il.Queue, go: il.Event | None
) -> None:
    """Receive (publisher, index) pairs until an (END, index) marker; report
    the count, whether the order per publisher held, lost, and the marker's
    index.  With `go`, read nothing until it is set (deliberately lapped).
    Odd-numbered subscribers receive in batches (recv_many)."""
    sub = topic.subscribe()
    ready.put(k, timeout=60)
    if go is not None:
        assert go.wait(60)
    last: dict[int, int] = {}
    count = 0
    ordered = True
    gapless = True
    for item in _received(sub, batched=k % 2 == 1):
        if item[0] == END:
            break
        pub, i = item
        if i <= last.get(pub, -1):
            ordered = False
        if i != last.get(pub, -1) + 1:
            gapless = False
        last[pub] = i
        count += 1
    results.put((k, count, ordered, gapless, sub.lost, item[1]), timeout=60)
    sub.close()
    topic.close()


def _multi_subscriber(
    topic: il.Topic, k: int, npub: int, ready: il.Queue, results: il.Queue
) -> None:
    sub = topic.subscribe()
    ready.put(k, timeout=60)
    last: dict[int, int] = {}
    ends = 0
    ok = True
    while ends < npub:
        item = sub.recv(timeout=60)
        if item[0] == END:
            ends += 1
            continue
        pub, i = item
        ok = ok and i == last.get(pub, -1) + 1
        last[pub] = i
    results.put((k, ok, last, sub.lost), timeout=60)
    topic.close()


def _publisher(topic: il.Topic, p: int, count: int, go: il.Event) -> None:
    assert go.wait(60)
    i = 0
    while i < count:
        n = min(32, count - i)
        if p % 2:
            i += topic.publish_many([(p, j) for j in range(i, i + n)], timeout=60)
        else:
            topic.publish((p, i), timeout=60)
            i += 1
    topic.publish((END, p), timeout=60)
    topic.close()


def _start(procs: list[multiprocessing.process.BaseProcess]) -> None:
    for p in procs:
        p.start()


def _reap(procs: list[multiprocessing.process.BaseProcess]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(10)


def _interrupt_blocked(child: Any, what: str) -> None:
    """Once the child says "blocking" and sleeps in a futex (in `what`),
    Ctrl-C ends it with KeyboardInterrupt within 2 s (teardown included)."""
    child.expect("blocking")
    wait_until(lambda: blocked_in_futex(child.pid), 10, f"the child to sleep in {what}")
    start = time.monotonic()
    child.kill(signal.SIGINT)
    rc = child.wait(10)
    took = time.monotonic() - start
    assert rc == -signal.SIGINT
    assert "KeyboardInterrupt" in child.stderr()
    assert took < 2.0  # includes interpreter teardown


# ------------------------------------------------------------------ tests


def test_block_one_publisher_eight_subscribers_every_message_in_order() -> None:
    n = 20_000
    topic = il.Topic(policy="block", capacity=1 << 16)
    ready, results = il.Queue(), il.Queue()
    subs = [
        _SPAWN.Process(target=_subscriber, args=(topic, k, ready, results, None)) for k in range(8)
    ]
    try:
        _start(subs)
        assert sorted(ready.get(timeout=60) for _ in subs) == list(range(8))
        for i in range(n):
            topic.publish((0, i), timeout=60)
        topic.publish((END, n), timeout=60)
        got = sorted(results.get(timeout=120) for _ in subs)
        for k, count, ordered, gapless, lost, marker in got:
            assert (count, ordered, gapless, lost, marker) == (n, True, True, 0, n), k
        for p in subs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        _reap(subs)
        for x in (topic, ready, results):
            x.close()


def test_drop_one_publisher_eight_subscribers_lost_is_exact() -> None:
    n = 20_000
    topic = il.Topic(policy="drop", capacity=1 << 14)
    ready, results = il.Queue(), il.Queue()
    go = il.Event()
    # subscribers 0 (recv) and 1 (recv_many) read nothing until everything is
    # published: they are lapped
    subs = [
        _SPAWN.Process(target=_subscriber, args=(topic, k, ready, results, go if k < 2 else None))
        for k in range(8)
    ]
    try:
        _start(subs)
        assert sorted(ready.get(timeout=60) for _ in subs) == list(range(8))
        for i in range(n):
            topic.publish((0, i))  # never waits
        go.set()
        # End markers carry their own index: every message before the marker a
        # subscriber stops at was either received or counted lost.
        reported: list[tuple[int, int, bool, bool, int, int]] = []
        marker = n
        while len(reported) < len(subs):
            topic.publish((END, marker))
            marker += 1
            with contextlib.suppress(il.Empty):
                reported.append(results.get(timeout=0.01))
        for k, count, ordered, _gapless, lost, stopped_at in reported:
            assert ordered, k
            assert count + lost == stopped_at, (k, count, lost, stopped_at)
        for slow in (r for r in reported if r[0] < 2):
            assert slow[4] > 0  # it was lapped, and says so
        for p in subs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        _reap(subs)
        for x in (topic, ready, results):
            x.close()


def test_several_publishers_order_per_publisher() -> None:
    npub, count = 3, 5000
    topic = il.Topic(policy="block", capacity=1 << 14)
    ready, results = il.Queue(), il.Queue()
    go = il.Event()
    subs = [
        _SPAWN.Process(target=_multi_subscriber, args=(topic, k, npub, ready, results))
        for k in range(2)
    ]
    pubs = [_SPAWN.Process(target=_publisher, args=(topic, p, count, go)) for p in range(npub)]
    try:
        _start(subs)
        assert sorted(ready.get(timeout=60) for _ in subs) == [0, 1]
        _start(pubs)
        go.set()
        for _ in subs:
            _k, ok, last, lost = results.get(timeout=120)
            assert ok and lost == 0
            assert last == {p: count - 1 for p in range(npub)}
        for p in pubs + subs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        _reap(pubs + subs)
        for x in (topic, ready, results):
            x.close()


def test_block_subscriber_killed_leaves_the_wait_set(spawn: Spawn, name: str) -> None:
    with il.Topic(name, policy="block", capacity=4096) as topic:
        live = topic.subscribe()
        child = spawn(
            """
            t = il.Topic(sys.argv[1])
            s = t.subscribe()
            say("subscribed")
            hear()  # never reads
            """,
            name,
        )
        child.expect("subscribed")
        sent = 0
        with pytest.raises(il.Timeout):
            while True:
                topic.publish(sent, timeout=0.2)  # the child never reads: full
                sent += 1
        assert [live.recv(timeout=5) for _ in range(sent)] == list(range(sent))
        child.kill(signal.SIGKILL)
        child.wait()
        start = time.monotonic()
        topic.publish("after", timeout=60)  # bounded: the dead one leaves the wait set
        took = time.monotonic() - start
        print(f"publisher proceeded {took * 1e3:.1f} ms after the subscriber's death")
        assert live.recv(timeout=5) == "after"
        for i in range(sent * 3):  # and it stays out
            topic.publish(i, timeout=60)
            assert live.recv(timeout=5) == i
        assert topic.counts() == (1, 1)


def test_publisher_killed_while_publishing(spawn: Spawn, name: str) -> None:
    with il.Topic(name, policy="block", capacity=1 << 14, max_publishers=1, codec="bytes") as t:
        sub = t.subscribe()
        child = spawn(
            """
            t = il.Topic(sys.argv[1], codec="bytes")
            say("publishing")
            i = 0
            while True:
                body = bytes([i % 251]) * (16 + (i * 37) % 3000)
                t.publish(struct.pack("<II", i, zlib.crc32(body)) + body)
                i += 1
            """,
            name,
        )
        child.expect("publishing")
        got = 0
        deadline = time.monotonic() + 60
        # read while it publishes, then kill it at an arbitrary point
        while got < 500 and time.monotonic() < deadline:
            data = bytes(sub.recv(timeout=10))
            i, crc = int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little")
            assert i == got and zlib_crc(data[8:]) == crc
            got += 1
        child.kill(signal.SIGKILL)
        child.wait()
        while True:  # everything committed before the kill, intact and in order
            try:
                data = bytes(sub.recv(timeout=0.2))
            except il.Timeout:
                break
            i, crc = int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little")
            assert i == got and zlib_crc(data[8:]) == crc
            got += 1
        assert sub.lost == 0
        # the dead publisher's only slot is taken over, and the stream goes on
        t.publish(b"successor")
        assert bytes(sub.recv(timeout=5)) == b"successor"
        assert sub.lost == 0


def zlib_crc(b: bytes) -> int:
    return zlib.crc32(b)


def test_named_topic_between_unrelated_processes(spawn: Spawn, name: str) -> None:
    with il.Topic(name, policy="block") as t:
        sub = t.subscribe()
        child = spawn(
            """
            t = il.Topic(sys.argv[1])
            s = t.subscribe(history=1)
            say("policy", t.policy, s.recv(timeout=30))
            t.publish(("from child", os.getpid()))
            say("got", s.recv(timeout=30)[0])
            """,
            name,
        )
        t.publish("before")
        # history=1: it gets "before" whether it subscribed before or after
        assert child.expect("policy") == ["block", "before"]
        assert sub.recv(timeout=30) == "before"
        what, pid = sub.recv(timeout=30)
        assert what == "from child" and pid == child.pid
        assert child.expect("got") == ["from", "child"]
        assert child.wait() == 0, child.stderr()


def test_sigint_interrupts_a_blocked_recv(spawn: Spawn, name: str) -> None:
    with il.Topic(name):
        child = spawn(
            """
            t = il.Topic(sys.argv[1])
            s = t.subscribe()
            say("blocking")
            s.recv()
            say("returned")
            """,
            name,
        )
        _interrupt_blocked(child, "recv")


def test_anonymous_topic_reaches_spawn_children_and_is_reclaimed() -> None:
    topic = il.Topic(policy="block")
    ready, results = il.Queue(), il.Queue()
    p = _SPAWN.Process(target=_subscriber, args=(topic, 0, ready, results, None))
    try:
        p.start()
        assert ready.get(timeout=60) == 0
        topic.publish((0, 0), timeout=60)
        topic.publish((END, 1), timeout=60)
        assert results.get(timeout=60) == (0, 1, True, True, 0, 1)
        p.join(60)
        assert p.exitcode == 0
    finally:
        _reap([p])
        path = topic._segment.path
        for x in (topic, ready, results):
            x.close()
    assert not os.path.exists(path)


def test_sigint_interrupts_a_blocked_publish(spawn: Spawn, name: str) -> None:
    with il.Topic(name, policy="block", capacity=4096) as t:
        sub = t.subscribe()  # a live subscriber that never reads
        child = spawn(
            """
            t = il.Topic(sys.argv[1])
            try:
                while True:
                    t.publish(b"x" * 100, timeout=0.05)
            except il.Timeout:
                pass
            say("blocking")
            t.publish(b"x" * 100)
            say("returned")
            """,
            name,
        )
        _interrupt_blocked(child, "publish")
        assert sub.lost == 0


def _fork_publisher(topic: il.Topic, n: int) -> None:
    for i in range(n):
        topic.publish((os.getpid(), i), timeout=60)


def test_forked_children_publish_through_the_parents_handle() -> None:
    fork = multiprocessing.get_context("fork")
    with il.Topic(policy="block", capacity=1 << 14) as topic:
        sub = topic.subscribe()
        topic.publish(("parent", 0))  # the parent holds a publisher slot too
        procs = [fork.Process(target=_fork_publisher, args=(topic, 500)) for _ in range(2)]
        for p in procs:
            p.start()
        seen: dict[object, int] = {}
        assert sub.recv(timeout=30) == ("parent", 0)
        for _ in range(1000):
            who, i = sub.recv(timeout=30)
            assert i == seen.get(who, -1) + 1  # order per publisher
            seen[who] = i
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert sorted(seen.values()) == [499, 499]
        assert set(seen) == {p.pid for p in procs}
        topic.publish(("parent", 1))  # the parent's slot is still its own
        assert sub.recv(timeout=30) == ("parent", 1)
