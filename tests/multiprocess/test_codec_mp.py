"""Codecs across processes: zero-copy numpy through a channel, and pickle between users.

The writer is a child interpreter (mp_helpers.Child) that encodes straight
into a channel loan; the parent decodes from ``recv()``.  The cross-user tests
run the writer as 'nobody' (the child imports interlink as root, then drops
its privileges, as in test_permissions.py).
"""

from __future__ import annotations

import gc
import os
import pwd
import zlib

import numpy as np
import pytest
from mp_helpers import Spawn, segment_path

import interlink as il
from interlink._codec import pickle_allowed

pytestmark = pytest.mark.timeout(90)

SEND_FRAME = """
import numpy as np
name, nbytes = sys.argv[1], int(sys.argv[2])
frame = np.random.default_rng(7).integers(0, 1 << 62, nbytes // 8, dtype=np.int64)
frame = frame.reshape(-1, 1024)
codec = il.PickleCodec()
record = codec.encode({"seq": 1, "frame": frame, "note": "from the child"})
assert isinstance(record, il.Encoded) and record.size > nbytes
ch = il.Channel(name, create=False)
with ch.loan(record.size, timeout=10) as buf:
    record.write_into(buf)          # the only copy of the frame's bytes
say("sent", zlib.crc32(frame), frame.shape[0], frame.shape[1])
hear()
ch.close()
"""


def test_numpy_8mib_from_another_process_without_copy(spawn: Spawn, name: str) -> None:
    nbytes = 8 << 20
    with il.Channel(name, 32 << 20) as ch:
        child = spawn(SEND_FRAME, name, str(nbytes))
        crc, rows, cols = (int(x) for x in child.expect("sent", timeout=60))
        msg = ch.recv(timeout=30)
        out = il.PickleCodec().decode(msg)
        frame = out["frame"]
        assert out["seq"] == 1 and out["note"] == "from the child"
        assert frame.shape == (rows, cols) and frame.dtype == np.int64
        assert frame.nbytes == nbytes
        # Zero copy: the array is a view of the message in shared memory.
        assert np.shares_memory(frame, np.frombuffer(msg, dtype=np.uint8))
        assert frame.ctypes.data % 64 == 0
        assert not frame.flags.writeable
        assert zlib.crc32(frame) == crc
        msg.release()  # deferred while the array lives
        assert ch.statistics().used > nbytes
        del frame, out, msg
        gc.collect()
        assert ch.statistics().used == 0
        child.tell("done")
        assert child.wait() == 0, child.stderr()


# ------------------------------------------------------------ between users

AS_NOBODY = """
name, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
ch = il.Channel(name, create=False)
pickle_codec = il.PickleCodec()                # records carry uid 'nobody'
ch.send(pickle_codec.encode({"op": "hello"}))
ch.send(pickle_codec.encode(b"raw bytes"))     # not pickled: no code runs
ch.send(il.JsonCodec().encode({"op": "json"}))
# A hostile writer forges the producer uid of a pickle record.
forged = bytearray(pickle_codec.dumps({"op": "forged"}))
struct.pack_into("<I", forged, len(forged) - 8, int(sys.argv[4]))
ch.send(forged)
ch.close()
say("sent")
"""


def nobody() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    return pw.pw_uid, pw.pw_gid


def test_pickle_from_another_user_is_refused_unless_trusted(spawn: Spawn, name: str) -> None:
    uid, gid = nobody()
    with il.Channel(name, 1 << 16, mode=0o666) as ch:
        child = spawn(AS_NOBODY, name, str(uid), str(gid), str(os.geteuid()))
        child.expect("sent", timeout=30)
        assert child.wait() == 0, child.stderr()
        msgs = [ch.recv(timeout=10) for _ in range(4)]
        pickled, raw, as_json, forged = msgs

        with pytest.raises(il.AccessDenied, match=f"uid {uid}"):
            il.PickleCodec().decode(pickled)
        assert il.PickleCodec(trusted=True).decode(pickled) == {"op": "hello"}
        assert il.PickleCodec().decode(raw) == b"raw bytes"
        assert il.JsonCodec().decode(as_json) == {"op": "json"}

        # The uid in a record is only a claim: a forged one passes the
        # record check, which is why a queue also checks the segment itself.
        assert il.PickleCodec().decode(forged) == {"op": "forged"}
        st = os.stat(segment_path(name))
        assert not pickle_allowed(st.st_uid, st.st_mode, trusted=False)
        assert pickle_allowed(st.st_uid, st.st_mode, trusted=True)
        for m in msgs:
            m.release()


def test_pickle_allowed_for_a_private_segment(name: str) -> None:
    with il.Channel(name, 4096) as ch:
        st = os.stat(segment_path(name))
        assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o600
        assert pickle_allowed(st.st_uid, st.st_mode, trusted=False)
        ch.unlink()
