"""Regressions for bugs found in review: each test failed (crash, loss or wedge) before its fix."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import interlink as il
from interlink import _native, _segment


def run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_views_of_a_loan_keep_the_mapping_after_close() -> None:
    # Before: close() unmapped the segment under a live view -> SIGSEGV.
    r = run_child(
        """
        import interlink as il
        ch = il.Channel(None, capacity=1 << 16)
        with ch.loan(4096) as buf:
            part = buf[0:4096]
        mv = memoryview(ch.loan(100))
        ch.close()
        part[0] = 1
        mv[0] = 2
        print("ok", part[0], mv[0])
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "1", "2"]


def test_index_that_closes_the_channel_does_not_crash() -> None:
    r = run_child(
        """
        import interlink as il
        ch = il.Channel(None, capacity=4096)
        class Evil:
            def __index__(self):
                ch.close()
                return 16
        for call in (lambda: ch.loan(Evil()), lambda: ch.wait_writable(Evil(), 0)):
            try:
                call()
            except il.Closed:
                print("closed")
        ch2 = il.Channel(None, capacity=4096)
        loan = ch2.loan(32)
        class Evil2:
            def __index__(self):
                ch2.close()
                return 8
        try:
            loan.commit(Evil2())
        except il.Closed:
            print("closed")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["closed"] * 3


def test_a_forked_child_does_not_touch_the_parents_loans(name: str) -> None:
    ch = il.Channel(name, capacity=1 << 16)
    rx = il.Channel(name, create=False)
    loan = ch.loan(8)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            ch.send(b"child")
            ch.close()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    memoryview(loan)[:] = b"parent!!"
    loan.commit()
    got = []
    for _ in range(2):
        with rx.recv(timeout=5) as m:
            got.append(m.tobytes())
    assert sorted(got) == [b"child", b"parent!!"]
    rx.close()
    ch.close()


def test_a_dead_sender_ends_the_stream_while_its_message_is_held(name: str) -> None:
    rx = il.Channel(name, capacity=1 << 16)
    with pytest.raises(il.Empty):
        rx.recv_nowait()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            il.Channel(name, create=False).send(b"one")
        finally:
            os._exit(0)  # dies without closing
    os.waitpid(pid, 0)
    keep = rx.recv(timeout=5)
    t = time.monotonic()
    with pytest.raises(il.Closed):
        rx.recv(timeout=5)
    assert time.monotonic() - t < 2.0
    assert keep.tobytes() == b"one"
    keep.release()
    rx.close()


def test_writer_killed_inside_a_shrinking_commit_is_skipped(name: str) -> None:
    # The state il_ring_commit leaves between its stores when shrinking a loan:
    # inner pad written, record length cut to the shorter record size, stamp
    # still RESERVED.  The reader must skip it, not report Corrupt forever.
    ch = il.Channel(name, capacity=1 << 16)
    rx = il.Channel(name, create=False)
    with pytest.raises(il.Empty):
        rx.recv_nowait()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        tx = il.Channel(name, create=False)
        loan = tx.loan(100)  # reserved record: 16 + 100 -> 128 bytes at position 0
        os.write(w, b"1")
        time.sleep(60)
        del loan
        os._exit(0)
    assert os.read(r, 1) == b"1"
    os.close(r)
    os.close(w)
    mm = rx._segment.mm
    hdr = _native.RING_DATA_OFFSET
    key = struct.unpack_from("<Q", mm, 48)[0]
    pad_pos = 32  # commit(10): used = 32, inner pad of 96 bytes at 32
    struct.pack_into("<IQ", mm, hdr + pad_pos + 8, 96, 0)  # len, meta (+ next stamp)
    struct.pack_into("<Q", mm, hdr + pad_pos, (pad_pos | 3) ^ key)  # PAD stamp
    struct.pack_into("<I", mm, hdr + 8, 32)  # the cut record length
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    ch.send(b"after")
    with rx.recv(timeout=5) as m:
        assert m.tobytes() == b"after"
    assert rx.statistics().skipped == 1
    rx.close()
    ch.close()


def test_concurrent_create_or_open_never_splits_a_name() -> None:
    # Before: an opener could remove a creator's still-empty file and create
    # its own, so the two processes used different objects under one name.
    base = f"race{os.getpid()}"
    code = f"""
        import sys, interlink as il
        from interlink import _segment
        keep, bad = [], 0
        for i in range(400):
            ch = il.Channel("{base}-%d" % i, capacity=4096)
            bad += not _segment._same_inode(ch._segment.fd, ch._segment.path)
            keep.append(ch)
        sys.stdin.read()
        print(bad, flush=True)
        """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        # Wait until every name exists and all three hold it (3 live users each).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            infos = [o for o in _segment.list_objects() if o.name.startswith(base)]
            if len(infos) == 400 and all(len(o.users) == 3 for o in infos):
                break
            time.sleep(0.05)
        infos = [o for o in _segment.list_objects() if o.name.startswith(base)]
        assert len(infos) == 400
        assert all(len(o.users) == 3 for o in infos), "some name was split between objects"
    finally:
        outs = [p.communicate("", timeout=60)[0] for p in procs]
    assert [o.strip() for o in outs] == ["0", "0", "0"]
