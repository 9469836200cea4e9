"""Issue 4's "bad input" for queues: wrong codec, oversize objects, a corrupted
queue file (a typed error, nothing else lost), pickle from a foreign uid.

Cases already covered elsewhere (and not repeated here): opening a queue with
another codec (tests/unit/test_queue.py, tests/multiprocess/test_queue_mp.py,
tests/unit/test_queue_durable.py), ``put`` of an oversize object
(tests/unit/test_queue.py, test_queue_durable.py), a file that is not a queue
(test_queue_durable.py), pickles put by another user into a /dev/shm queue
(tests/multiprocess/test_queue_mp.py). This file adds what those leave out.
"""

from __future__ import annotations

import os
import pwd
import struct
from pathlib import Path

import pytest

import interlink as il
from interlink import _native
from interlink._codec import get_codec

pytestmark = pytest.mark.timeout(60)

SMALL = {"capacity": 1 << 20, "max_messages": 64}
CORE = _native.SEG_HEADER_SIZE  # the queue core's control block, in the file


# ------------------------------------------------------------ wrong codec


def test_record_of_another_codec_is_incompatible_and_only_it_is_lost() -> None:
    with il.Queue(**SMALL) as q:
        q.put("before")
        q._core.put(bytes(get_codec("json").encode({"a": 1})))  # a peer that bypassed the check
        q.put("after")
        assert q.get(timeout=5) == "before"
        with pytest.raises(il.Incompatible, match="json"):
            q.get(timeout=5)  # taken: it would wedge every consumer otherwise
        assert q.get(timeout=5) == "after"
        assert q.empty() and q.stats()["taken"] == 0


def test_durable_record_of_another_codec_stays_until_taken_for_good(tmp_path: Path) -> None:
    with il.Queue(durable=True, path=tmp_path / "q", **SMALL) as q:
        q._core.put(bytes(get_codec("json").encode([1, 2])))
        q.put("next")
        with pytest.raises(il.Incompatible):
            q.get_message(timeout=5)  # nacked, not dropped: the application decides
        assert q.qsize() == 2
        with pytest.raises(il.Incompatible):
            q.get(timeout=5)  # take-and-ack: this drops it
        assert q.get_message(timeout=5).value == "next"


# ------------------------------------------------------------ oversize


@pytest.mark.parametrize("durable", [False, True])
def test_oversize_object_in_put_many_puts_nothing(tmp_path: Path, durable: bool) -> None:
    extra = {"durable": True, "path": tmp_path / "q"} if durable else {}
    with il.Queue(capacity=64 * 1024, max_messages=64, **extra) as q:  # type: ignore[arg-type]
        with pytest.raises(il.MessageTooLarge):
            q.put_many(["a", b"z" * (128 * 1024), "c"])
        # all or nothing: the caller cannot learn a count from the exception
        assert q.empty()
        assert q.put_many(["a", "c"]) == 2
        assert q.get_many(10) == ["a", "c"]


def test_oversize_numpy_array_is_message_too_large_and_the_queue_goes_on() -> None:
    np = pytest.importorskip("numpy")
    with il.Queue(capacity=1 << 20, max_messages=64) as q:
        with pytest.raises(il.MessageTooLarge):
            q.put(np.zeros(1 << 18))  # 2 MiB out-of-band buffer, 1 MiB arena
        q.put(np.arange(10))
        assert q.get(timeout=5).tolist() == list(range(10))
        assert q.stats()["arena_used"] == 0


# ------------------------------------------------------------ corrupted file


def _durable_with(path: Path, values: list[object]) -> None:
    with il.Queue(durable=True, path=path, **SMALL) as q:
        q.put_many(values)


def test_damaged_record_is_corrupt_and_nothing_else_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "q"
    _durable_with(path, ["a", ("MARKER-7f3a", 1), "c"])
    data = bytearray(path.read_bytes())
    at = data.index(b"MARKER-7f3a")
    magic = data.index(0xC1, at)  # the record trailer's magic byte, right after the pickle
    data[magic] = 0
    path.write_bytes(bytes(data))
    with il.Queue(durable=True, path=path, create=False) as q:
        assert q.get_message(timeout=5).value == "a"  # dropped without ack: goes back
        assert q.get(timeout=5) == "a"
        with pytest.raises(il.Corrupt):
            q.get_message(timeout=5)  # nacked: still there
        assert q.qsize() == 2
        with pytest.raises(il.Corrupt):
            q.get(timeout=5)  # taken for good
        assert q.get(timeout=5) == "c"
        assert q.empty()


def test_damaged_index_in_file_is_repaired_at_open_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "q"
    _durable_with(path, ["keep", "all", "of", "these"])
    with open(path, "r+b") as f:
        f.seek(CORE + 48)
        (heap_off,) = struct.unpack("<Q", f.read(8))
        f.seek(CORE + heap_off + 4)  # the priority heap's top node: its entry index
        f.write(struct.pack("<I", 0xFFFF))
    with il.Queue(durable=True, path=path, create=False) as q:
        assert q.get_many(10) == ["keep", "all", "of", "these"]


def test_damaged_entry_table_is_a_typed_error_at_open(tmp_path: Path) -> None:
    path = tmp_path / "q"
    _durable_with(path, ["x", "y"])
    with open(path, "r+b") as f:
        f.seek(CORE + 40)
        (entries_off,) = struct.unpack("<Q", f.read(8))
        for e in range(SMALL["max_messages"]):  # each live entry's length: past the arena
            f.seek(CORE + entries_off + 64 * e)
            (sw,) = struct.unpack("<Q", f.read(8))
            if sw >> 60:
                f.seek(CORE + entries_off + 64 * e + 24)
                f.write(struct.pack("<Q", 1 << 40))
    with pytest.raises(il.Corrupt):
        il.Queue(durable=True, path=path, create=False)


def test_truncated_and_damaged_headers_are_typed_errors(tmp_path: Path) -> None:
    path = tmp_path / "q"
    _durable_with(path, ["x"])
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises((il.Corrupt, il.Incompatible)):
        il.Queue(durable=True, path=path, create=False)
    path.unlink()
    _durable_with(path, ["x"])
    with open(path, "r+b") as f:
        f.seek(CORE)  # the queue core's magic
        f.write(b"\xde\xad\xbe\xef")
    with pytest.raises(il.Corrupt):
        il.Queue(durable=True, path=path, create=False)


# ------------------------------------------------------------ foreign uid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_durable_file_of_another_user_refuses_pickles(tmp_path: Path) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    path = tmp_path / "q"
    _durable_with(path, [{"runs": "code"}, b"raw bytes"])
    os.chown(path, nobody.pw_uid, nobody.pw_gid)  # as if that user had written it
    with il.Queue(durable=True, path=path, create=False) as q:
        with pytest.raises(il.AccessDenied) as info:
            q.get_message(timeout=5)
        assert isinstance(info.value, PermissionError)
        assert q.qsize() == 2  # refused, not lost: nacked
        with il.Queue(durable=True, path=path, create=False, trusted=True) as trusting:
            assert trusting.get_message(timeout=5).value == {"runs": "code"}  # dropped: back
        with pytest.raises(il.AccessDenied):
            q.get(timeout=5)  # take-and-ack of a refused pickle: consumed
        assert q.get(timeout=5) == b"raw bytes"  # raw records run no code
