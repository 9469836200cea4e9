"""Object life cycle across processes: removal by the last user, crashes, gc, pickling."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

import mp_helpers
import pytest
from mp_helpers import Spawn, segment_path

import interlink as il
from interlink import _segment

pytestmark = pytest.mark.timeout(60)

USER = """
name, send = sys.argv[1], sys.argv[2] == "send"
ch = il.Channel(name, 4096)
if send:
    ch.send(b"left behind")
else:
    try:
        ch.recv_nowait()
    except il.Empty:
        pass
say("attached", os.getpid())
if hear() == "close":
    ch.close()
    say("closed")
    hear()
"""


def objects_named(name: str) -> list[_segment.ObjectInfo]:
    return [o for o in _segment.list_objects() if o.name == name]


def test_object_is_removed_when_the_last_user_closes(spawn: Spawn, name: str) -> None:
    a = spawn(USER, name, "send")
    b = spawn(USER, name, "recv")
    a.expect("attached")
    b.expect("attached")
    with il.Channel(name) as me:
        assert sorted(pid for pid, _ in me.users()) == sorted([a.pid, b.pid, os.getpid()])
        for child in (a, b):
            child.tell("close")
            child.expect("closed")
            assert segment_path(name).exists()
        assert me.users() == [(os.getpid(), True)]
    assert not segment_path(name).exists()


def test_a_process_that_exits_without_closing_leaves_nothing(spawn: Spawn, name: str) -> None:
    child = spawn(USER, name, "send")
    child.expect("attached")
    child.tell("exit")  # returns from the script with the channel still open
    assert child.wait() == 0
    assert child.stderr() == ""
    assert objects_named(name) == [], "normal exit left the object behind"


def test_kill_9_of_every_user_leaves_a_stale_object_that_gc_removes(
    spawn: Spawn, name: str
) -> None:
    children = [spawn(USER, name, "send"), spawn(USER, name, "recv")]
    pids = sorted(int(c.expect("attached")[0]) for c in children)
    for c in children:
        c.kill()
        c.wait()
    assert segment_path(name).exists()  # nobody could clean up
    [info] = objects_named(name)
    assert info.state == "stale"
    assert info.kind == "channel"
    assert sorted(u.pid for u in info.users) == pids
    assert not any(u.alive for u in info.users)
    assert [u.sender for u in sorted(info.users, key=lambda u: u.pid)] == [True, False]
    assert [o.name for o in _segment.gc_objects(dry_run=True) if o.name == name] == [name]
    assert segment_path(name).exists()  # dry run
    removed = [o.name for o in _segment.gc_objects() if o.name == name]
    assert removed == [name]
    assert not segment_path(name).exists()
    assert objects_named(name) == []


@pytest.mark.parametrize("create", [None, True])
def test_next_open_reclaims_a_stale_object_and_starts_empty(
    spawn: Spawn, name: str, create: bool | None
) -> None:
    child = spawn(USER, name, "send")
    child.expect("attached")
    child.kill()
    child.wait()
    assert objects_named(name)[0].state == "stale"
    with il.Channel(name, 8192, create=create) as fresh:
        assert fresh.capacity == 8192  # really a new channel, not the old 4096 one
        with pytest.raises(il.Empty):
            fresh.recv_nowait()  # "left behind" went with the old object
        s = fresh.statistics()
        assert (s.used, s.senders, s.receiver_pid) == (0, 0, os.getpid())
        assert fresh.users() == [(os.getpid(), True)]


def test_open_existing_only_does_not_revive_a_stale_object(spawn: Spawn, name: str) -> None:
    child = spawn(USER, name, "send")
    child.expect("attached")
    child.kill()
    child.wait()
    with pytest.raises(il.NotFound):
        il.Channel(name, create=False)
    assert not segment_path(name).exists()  # and the stale object was removed on the way


# ------------------------------------------------------ pickling and spawn


@pytest.mark.parametrize("anonymous", [True, False], ids=["anonymous", "named"])
def test_channels_pickled_to_a_spawn_child(name: str, anonymous: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    with (
        il.Channel(None if anonymous else name, 4096) as requests,
        il.Channel(None, 4096) as replies,
    ):
        proc = ctx.Process(target=mp_helpers.echo_target, args=(requests, replies, 3))
        proc.start()
        try:
            for i in range(3):
                requests.send(b"ping %d" % i)
            got = [replies.recv_bytes(timeout=20) for _ in range(3)]
        finally:
            proc.join(20)
            if proc.is_alive():
                proc.kill()
                proc.join()
        assert proc.exitcode == 0
        assert got == [b"ping 0", b"ping 1", b"ping 2"]
        with pytest.raises(il.Closed):  # the child's handle was the only sender
            replies.recv(timeout=5)
        assert [pid for pid, _ in requests.users()] == [os.getpid()]


def test_end_of_stream_waits_for_a_pickled_handle_in_flight(name: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with il.Channel(name, 4096) as rx:
        tx = il.Channel(name)
        proc = ctx.Process(target=mp_helpers.send_target, args=(tx, [b"a", b"b"]))
        proc.start()  # pickles tx
        tx.close()  # our only sender handle goes before the child has even started
        try:
            assert rx.recv_bytes(timeout=20) == b"a"
            assert rx.recv_bytes(timeout=20) == b"b"
            with pytest.raises(il.Closed):
                rx.recv(timeout=20)
        finally:
            proc.join(20)
        assert proc.exitcode == 0


SPAWN_SCRIPT = """
import multiprocessing, sys
import interlink as il
import mp_helpers

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    with il.Channel(None, 4096) as requests, il.Channel(sys.argv[1], 4096) as replies:
        p = ctx.Process(target=mp_helpers.echo_target, args=(requests, replies, 2))
        p.start()
        requests.send(b"one")
        requests.send(b"two")
        assert replies.recv_bytes(timeout=20) == b"one"
        assert replies.recv_bytes(timeout=20) == b"two"
        p.join(20)
        assert p.exitcode == 0
        print(requests.name)
"""


def test_spawn_children_leave_no_warnings_and_no_objects(name: str) -> None:
    script = textwrap.dedent(SPAWN_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(mp_helpers.__file__),
        env={**os.environ, "PYTHONPATH": os.path.dirname(mp_helpers.__file__)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", "warnings (resource_tracker, leaks?) on stderr"
    anonymous = proc.stdout.strip()
    assert anonymous.startswith("anon-")
    assert objects_named(name) == []
    assert objects_named(anonymous) == []


# ------------------------------------------------------------------- fork

FORKER = """
name = sys.argv[1]
ch = il.Channel(name, create=False)
ch.send(b"parent")
pid = os.fork()
if pid == 0:
    try:
        ch.send(b"child")  # the inherited handle re-attaches in the child
        ch.close()
    finally:
        os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0
ch.close()
say("done")
"""


def test_handle_inherited_through_fork(spawn: Spawn, name: str) -> None:
    with il.Channel(name, 4096) as rx:
        child = spawn(FORKER, name)
        child.expect("done")
        assert child.wait() == 0
        assert rx.recv_bytes(timeout=5) == b"parent"
        assert rx.recv_bytes(timeout=5) == b"child"
        with pytest.raises(il.Closed):
            rx.recv(timeout=5)


def test_channel_passed_with_many_pool_tasks(name: str) -> None:
    """A channel handed to every task of a Pool: more tasks than attach slots.

    Fails with Busy ("the attach table is full") since pickling lends a sender
    slot per pickle (Channel.__reduce__ -> _lend, ring.c il_ring_lend) that
    stays taken until that pickle is loaded or 60 s pass: the Pool pickles
    tasks faster than its workers load them, and after 127 outstanding
    pickles nobody can pickle -- or even open -- the channel any more.
    """
    ctx = multiprocessing.get_context("spawn")
    tasks = 300
    with il.Channel(name, 1 << 16) as rx:
        with ctx.Pool(2) as pool:
            done = pool.starmap(
                mp_helpers.send_one_target, [(rx, i) for i in range(tasks)], chunksize=1
            )
        assert done == list(range(tasks))
        got = set()
        with pytest.raises(il.Closed):
            while True:
                got.add(int.from_bytes(rx.recv_bytes(timeout=20), "little"))
        assert got == set(range(tasks))


def test_first_anonymous_object_of_a_process_sweeps_stale_anonymous_ones() -> None:
    # A crashed process's anonymous channel: nobody will ever open it by name.
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, interlink as il\n"
            "ch = il.Channel(None, 4096)\n"
            "print(ch.name, flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as crashed:
        assert crashed.stdout is not None
        stale_name = crashed.stdout.readline().strip()
        crashed.kill()
        crashed.wait(10)
    assert segment_path(stale_name).exists()
    assert objects_named(stale_name)[0].state == "stale"
    fresh = subprocess.run(
        [sys.executable, "-c", "import interlink as il; il.Channel(None, 4096).close()"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert not segment_path(stale_name).exists()
