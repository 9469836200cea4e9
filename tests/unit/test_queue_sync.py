"""The sync policies of durable queues: "os", "batch", "always".

What a policy does is when msync(2) runs; the msync counts are observed with
strace where it is available (a real syscall count of a child process), and
the batch bookkeeping (pending operations, flushes) directly otherwise.
"""

from __future__ import annotations

import math
import multiprocessing
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import interlink as il

pytestmark = pytest.mark.timeout(60)

SMALL = {"capacity": 1 << 20, "max_messages": 64}


def _until(cond: object, timeout: float) -> bool:
    """Poll ``cond()`` every millisecond for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_policies_are_accepted_and_reported(tmp_path: Path) -> None:
    for policy in ("os", "batch", "always"):
        with il.Queue(durable=True, path=tmp_path / policy, sync=policy, **SMALL) as q:
            assert q.sync == policy
            q.put(policy)
            assert q.get() == policy
    with il.Queue(sync="batch") as plain:  # not durable: nothing to sync
        assert plain.sync == "os"


def test_invalid_values_raise_value_error(tmp_path: Path) -> None:
    path = tmp_path / "q"
    with pytest.raises(ValueError, match="sync must be one of"):
        il.Queue(durable=True, path=path, sync="sometimes")
    with pytest.raises(ValueError, match="sync must be one of"):
        il.Queue(durable=True, path=path, sync="BATCH")
    with pytest.raises(ValueError, match="sync_messages"):
        il.Queue(durable=True, path=path, sync="batch", sync_messages=0)
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="sync_interval"):
            il.Queue(durable=True, path=path, sync="batch", sync_interval=bad)
    with pytest.raises(ValueError, match='for sync="batch"'):
        il.Queue(durable=True, path=path, sync="always", sync_messages=10)
    with pytest.raises(ValueError, match='for sync="batch"'):
        il.Queue(durable=True, path=path, sync_interval=1.0)
    assert not path.exists()  # refused before anything was created


def test_batch_flushes_when_full(tmp_path: Path) -> None:
    with il.Queue(
        durable=True, path=tmp_path / "q", sync="batch", sync_messages=4, sync_interval=60, **SMALL
    ) as q:
        batch = q._batch
        assert batch is not None
        for i in range(3):
            q.put(i)
        assert (batch.pending, batch.flushes) == (3, 0)
        q.put(3)  # the 4th operation completes the batch
        assert (batch.pending, batch.flushes) == (0, 1)
        assert q.put_many(range(9)) == 9  # counts as 9 operations
        assert (batch.pending, batch.flushes) == (0, 2)
        assert q.get_many(5) == [0, 1, 2, 3, 0]  # take-and-ack: 5 more
        assert (batch.pending, batch.flushes) == (0, 3)
        m = q.get_message(timeout=5)
        m.nack()
        m = q.get_message(timeout=5)
        m.ack()
        assert q.get() == 2
        assert (batch.pending, batch.flushes) == (3, 3)


def test_batch_flushes_after_the_interval_even_when_idle(tmp_path: Path) -> None:
    with il.Queue(
        durable=True,
        path=tmp_path / "q",
        sync="batch",
        sync_messages=1000,
        sync_interval=0.05,
        **SMALL,
    ) as q:
        batch = q._batch
        assert batch is not None
        q.put("x")
        assert batch.pending == 1
        # nothing else happens on the handle: the timer flushes
        assert _until(lambda: batch.pending == 0, 10), "the interval passed without a flush"
        assert batch.flushes == 1


def test_batch_flushes_the_pending_batch_on_close(tmp_path: Path) -> None:
    path = tmp_path / "q"
    q = il.Queue(durable=True, path=path, sync="batch", sync_messages=1000, sync_interval=60)
    batch = q._batch
    assert batch is not None
    q.put_many(["a", "b"])
    assert (batch.pending, batch.flushes) == (2, 0)
    q.close()
    assert (batch.pending, batch.flushes) == (0, 1)
    with il.Queue(durable=True, path=path, create=False) as again:
        assert again.get_many(10) == ["a", "b"]


def test_pickled_handle_keeps_the_policy(tmp_path: Path) -> None:
    with il.Queue(
        durable=True, path=tmp_path / "q", sync="batch", sync_messages=7, sync_interval=0.5
    ) as q:
        again = pickle.loads(pickle.dumps(q))
        try:
            assert again.sync == "batch"
            assert again._batch is not None
            assert (again._batch.messages, again._batch.interval) == (7, 0.5)
        finally:
            again.close()


def _forked_put_and_close(q: il.Queue) -> None:
    q.put("from the child")
    q.close()  # must not wait on the parent's timer or lock


def test_forked_child_syncs_on_its_own(tmp_path: Path) -> None:
    with il.Queue(
        durable=True, path=tmp_path / "q", sync="batch", sync_messages=1000, sync_interval=60
    ) as q:
        q.put("from the parent")  # the parent's timer is armed across the fork
        child = multiprocessing.get_context("fork").Process(target=_forked_put_and_close, args=(q,))
        with warnings.catch_warnings():  # 3.12+: "multi-threaded, fork() may deadlock"
            warnings.simplefilter("ignore", DeprecationWarning)
            child.start()
        child.join(30)
        assert child.exitcode == 0
        assert q.get_many(10) == ["from the parent", "from the child"]


MSYNC_CHILD = """
import sys
import interlink as il
q = il.Queue(durable=True, path=sys.argv[1], create=False, sync=sys.argv[2],
             **({"sync_messages": 4, "sync_interval": 60} if sys.argv[2] == "batch" else {}))
print("start", flush=True)
for i in range(10):
    q.put(i)
q.close()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize(("policy", "msyncs"), [("os", 0), ("batch", 3), ("always", 10)])
def test_msync_calls_per_policy(tmp_path: Path, policy: str, msyncs: int) -> None:
    """10 puts then close: "os" never msyncs, "batch" (4 per batch) after the
    4th and the 8th put and at close, "always" after every put."""
    path = tmp_path / "q"
    il.Queue(durable=True, path=path, **SMALL).close()  # formatted here, not in the child
    out = tmp_path / "strace.out"
    strace = ["strace", "-f", "-qq", "-e", "trace=msync", "-o", str(out)]
    proc = subprocess.run(
        [*strace, sys.executable, "-c", textwrap.dedent(MSYNC_CHILD), str(path), policy],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["start"]
    calls = [line for line in out.read_text().splitlines() if re.search(r"\bmsync\(", line)]
    assert len(calls) == msyncs, calls
