"""Durable queues across processes: a consumer killed with SIGKILL before ack
-> the message is redelivered; messages outlive every process that used them."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from mp_helpers import Spawn

import interlink as il

pytestmark = pytest.mark.timeout(60)

SMALL = {"capacity": 1 << 20, "max_messages": 64}


def test_consumer_killed_before_ack_is_redelivered(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "jobs.q"
    with il.Queue(durable=True, path=path, **SMALL) as q:
        q.put({"job": 1})
        q.put({"job": 2})
        child = spawn(
            """
            q = il.Queue(durable=True, path=sys.argv[1], create=False)
            m = q.get_message(timeout=10)
            say("holding", m.value["job"], m.deliveries)
            hear()  # killed here, never acks
            """,
            str(path),
        )
        assert child.expect("holding") == ["1", "1"]
        assert q.qsize() == 1
        child.kill(signal.SIGKILL)
        child.wait()
        # job 2 is ready now; job 1 comes back (at its place: first) once the
        # dead consumer is noticed, within a bounded wait
        first = q.get_message(timeout=10)
        if first.value == {"job": 2}:
            first.nack()
            first = q.get_message(timeout=10)
            if first.value == {"job": 2}:
                first.ack()
                first = q.get_message(timeout=10)
        assert first.value == {"job": 1} and first.deliveries == 2
        first.ack()
        assert q.stats()["redelivered"] >= 1


def test_messages_outlive_their_processes(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "jobs.q"
    producer = spawn(
        """
        q = il.Queue(durable=True, path=sys.argv[1], sync="always",
                     capacity=1 << 20, max_messages=64)
        q.put_many(["a", "b", "c"])
        q.put("z", priority=5)
        say("put")
        os._exit(0)  # no close, no clean-up
        """,
        str(path),
    )
    producer.expect("put")
    assert producer.wait() == 0, producer.stderr()
    consumer = spawn(
        """
        q = il.Queue(durable=True, path=sys.argv[1], create=False)
        say("got", *q.get_many(10, timeout=10))
        q.close()
        """,
        str(path),
    )
    assert consumer.expect("got") == ["z", "a", "b", "c"]
    assert consumer.wait() == 0, consumer.stderr()
    with il.Queue(durable=True, path=path) as q:
        assert q.empty()
