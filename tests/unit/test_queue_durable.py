"""Durable queues in one process: file-backed, survive close/reopen, ack/nack,
get_message, sync policy, argument checks."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import interlink as il

pytestmark = pytest.mark.timeout(60)

SMALL = {"capacity": 1 << 20, "max_messages": 64}


def test_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.q"
    with il.Queue(durable=True, path=path, **SMALL) as q:
        assert q.durable
        q.put_many([1, 2, 3])
        q.put("big" * 10_000, priority=1)
    assert path.exists()  # close never removes a durable queue's file
    with il.Queue(durable=True, path=path, create=False) as q:
        assert q.qsize() == 4
        assert q.get() == "big" * 10_000
        assert q.get_many(10) == [1, 2, 3]
    with il.Queue(durable=True, path=path) as q:
        assert q.empty()


def test_get_message_ack_nack_and_context_manager(tmp_path: Path) -> None:
    with il.Queue(durable=True, path=tmp_path / "q", sync="always", **SMALL) as q:
        q.put("a")
        q.put("b")
        m = q.get_message(timeout=5)
        assert (m.value, m.deliveries, m.done) == ("a", 1, False)
        m.nack()  # back at its place: first again
        m = q.get_message(timeout=5)
        assert (m.value, m.deliveries) == ("a", 2)
        m.ack()
        assert m.done
        with pytest.raises(RuntimeError), q.get_message(timeout=5) as m2:
            assert m2.value == "b"
            raise RuntimeError("processing failed")  # -> nack
        with q.get_message(timeout=5) as m3:  # -> ack
            assert (m3.value, m3.deliveries) == ("b", 2)
        assert q.empty() and q.stats()["taken"] == 0


def test_unacked_message_dropped_by_this_process_goes_back(tmp_path: Path) -> None:
    with il.Queue(durable=True, path=tmp_path / "q", **SMALL) as q:
        q.put("x")
        m = q.get_message(timeout=5)
        assert q.qsize() == 0
        del m  # neither acked nor nacked: a durable message is not lost
        m = q.get_message(timeout=5)
        assert (m.value, m.deliveries) == ("x", 2)
        m.ack()


def test_arguments_and_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path"):
        il.Queue(durable=True)
    with pytest.raises(ValueError, match="durable"):
        il.Queue(path=tmp_path / "q")
    with pytest.raises(ValueError, match="sync"):
        il.Queue(durable=True, path=tmp_path / "q", sync="sometimes")
    with pytest.raises(il.NotFound):
        il.Queue(durable=True, path=tmp_path / "missing", create=False)
    with il.Queue(durable=True, path=tmp_path / "q", **SMALL) as q:
        with pytest.raises(il.AlreadyExists):
            il.Queue(durable=True, path=tmp_path / "q", create=True)
        with pytest.raises(il.Incompatible):
            il.Queue(durable=True, path=tmp_path / "q", codec="json")
        with pytest.raises(il.MessageTooLarge):
            q.put(b"z" * (2 << 20))
    with il.Queue() as plain, pytest.raises(ValueError, match="durable"):
        plain.get_message()
    (tmp_path / "junk").write_bytes(b"not a queue" * 1000)
    with pytest.raises((il.Corrupt, il.Incompatible)):
        il.Queue(durable=True, path=tmp_path / "junk")


def test_pickled_handle_reopens_the_file(tmp_path: Path) -> None:
    with il.Queue(durable=True, path=tmp_path / "q", **SMALL) as q:
        q.put("hi")
        again = pickle.loads(pickle.dumps(q))
        try:
            assert again.durable and again.get(timeout=5) == "hi"
        finally:
            again.close()


def test_joinable_durable_counts_tasks(tmp_path: Path) -> None:
    with il.JoinableQueue(durable=True, path=tmp_path / "q", **SMALL) as q:
        q.put(1)
        with q.get_message(timeout=5) as m:
            assert m.value == 1
        q.task_done()
        assert q.join(timeout=5)


def test_file_whose_creator_died_formatting_is_formatted_again(tmp_path: Path) -> None:
    path = tmp_path / "q"
    with il.Queue(durable=True, path=path, **SMALL) as q:
        q.put(1)
    with open(path, "r+b") as f:  # as if the creator died before publishing
        f.write(bytes(8))
    with il.Queue(durable=True, path=path, **SMALL) as q:
        assert q.empty()
        q.put(2)
        assert q.get() == 2
