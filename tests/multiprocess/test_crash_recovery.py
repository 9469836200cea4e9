"""Peers that die (kill -9) or close: end of stream, receiver takeover, redelivery, Busy."""

from __future__ import annotations

import os
import threading
import time

import pytest
from mp_helpers import Child, Spawn

import interlink as il

pytestmark = pytest.mark.timeout(60)

SENDER = """
name, count = sys.argv[1], int(sys.argv[2])
ch = il.Channel(name, create=False)
for i in range(count):
    ch.send(b"m%d" % i, timeout=10)
say("sent", count)
hear()  # blocks until the parent kills us
"""

RECEIVER = """
name, keep, release = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ch = il.Channel(name, create=False)
msgs = [ch.recv(timeout=10) for _ in range(keep)]
for i in map(int, filter(None, release.split(","))):
    msgs[i].release()
say("holding", *[m.tobytes().decode() for m in msgs if not m.released])
hear()  # blocks until the parent kills us
"""

IDLE_RECEIVER = """
name = sys.argv[1]
ch = il.Channel(name, create=False)
try:
    ch.recv_nowait()
except il.Empty:
    pass
say("receiving")
hear()
ch.close()
say("closed")
hear()
"""


def kill_later(child: Child, delay: float) -> tuple[threading.Timer, list[float]]:
    """Kill -9 the child after ``delay`` seconds (while this thread blocks in a call)."""
    when: list[float] = []

    def kill() -> None:
        when.append(time.monotonic())
        child.kill()

    timer = threading.Timer(delay, kill)
    timer.start()
    return timer, when


# ----------------------------------------------------------- dead senders


def test_dead_sender_is_noticed_by_a_blocked_recv(spawn: Spawn, name: str) -> None:
    with il.Channel(name, 4096) as rx:
        child = spawn(SENDER, name, "3")
        child.expect("sent")
        assert [rx.recv_bytes(timeout=5) for _ in range(3)] == [b"m0", b"m1", b"m2"]
        timer, killed_at = kill_later(child, 0.2)
        with pytest.raises(il.Closed):
            rx.recv(timeout=10)
        noticed = time.monotonic() - killed_at[0]
        timer.join()
        print(f"dead sender noticed {noticed * 1e3:.1f} ms after kill -9")
        assert noticed < 1.0  # the design says about 100 ms


def test_committed_messages_of_a_dead_sender_are_delivered(spawn: Spawn, name: str) -> None:
    with il.Channel(name, 1 << 16) as rx:
        child = spawn(SENDER, name, "200")
        child.expect("sent")
        child.kill()
        child.wait()
        got = []
        with pytest.raises(il.Closed):
            while True:
                got.append(rx.recv_bytes(timeout=5))
        assert got == [b"m%d" % i for i in range(200)]


def test_receiver_death_makes_a_blocked_sender_see_closed(spawn: Spawn, name: str) -> None:
    with il.Channel(name, 4096) as tx:
        child = spawn(IDLE_RECEIVER, name)
        child.expect("receiving")
        with pytest.raises(il.Full):
            while True:
                tx.send_nowait(b"x" * 1000)
        timer, killed_at = kill_later(child, 0.2)
        with pytest.raises(il.Closed):
            tx.send(b"x" * 1000, timeout=10)
        noticed = time.monotonic() - killed_at[0]
        timer.join()
        print(f"dead receiver noticed by a sender {noticed * 1e3:.1f} ms after kill -9")
        assert noticed < 1.0


# ---------------------------------------------------------- the receiver


def test_live_receiver_in_another_process_makes_recv_busy(spawn: Spawn, name: str) -> None:
    with il.Channel(name, 4096) as me:
        child = spawn(IDLE_RECEIVER, name)
        child.expect("receiving")
        with pytest.raises(il.Busy, match=str(child.pid)):
            me.recv(timeout=0.1)
        with pytest.raises(il.Busy):
            me.recv_nowait()
        assert me.statistics().receiver_pid == child.pid
        me.send(b"sending is fine")
        child.tell("close")
        child.expect("closed")
        assert me.recv_bytes(timeout=5) == b"sending is fine"  # the role is free again
        assert me.statistics().receiver_pid == os.getpid()


def test_new_receiver_takes_over_from_a_killed_one(spawn: Spawn, name: str) -> None:
    with il.Channel(name, 4096) as me:
        child = spawn(IDLE_RECEIVER, name)
        child.expect("receiving")
        with pytest.raises(il.Busy):
            me.recv_nowait()
        child.kill()
        child.wait()
        me.send(b"after the crash")
        assert me.recv_bytes(timeout=5) == b"after the crash"


@pytest.mark.parametrize(
    ("released", "redelivered"),
    [
        ("", range(0, 10)),  # held everything: all of it comes again
        ("0,1,2", range(3, 10)),  # released a prefix: the rest comes again
        ("1,3", [0, 2, *range(4, 10)]),  # released out of order: only those are skipped
    ],
    ids=["none-released", "prefix-released", "holes-released"],
)
def test_messages_held_by_a_killed_receiver_are_delivered_again(
    spawn: Spawn, name: str, released: str, redelivered: range | list[int]
) -> None:
    with il.Channel(name, 4096) as tx:
        for i in range(10):
            tx.send(b"m%d" % i)
        child = spawn(RECEIVER, name, "5", released)
        held = child.expect("holding")
        child.kill()
        child.wait()
        expected_held = [f"m{i}" for i in range(5) if str(i) not in released.split(",")]
        assert held == expected_held
        with il.Channel(name) as rx:
            got = []
            while True:
                try:
                    got.append(rx.recv_bytes(timeout=0.2))
                except il.Timeout:
                    break
        assert got == [b"m%d" % i for i in redelivered]


PACED_SENDER = """
import select
ch = il.Channel(sys.argv[1], create=False)
say("ready")
i = 0
while not select.select([sys.stdin], [], [], 0)[0]:
    ch.send(b"s%d" % i, timeout=10)
    i += 1
    time.sleep(0.001)  # a steady trickle: about one message per millisecond
ch.close()
say("stopped", i)
"""

LOANER = """
ch = il.Channel(sys.argv[1], create=False)
loan = ch.loan(100)  # reserved, never committed
say("loaned")
hear()
"""


def test_dead_senders_reservation_does_not_stall_the_others(spawn: Spawn, name: str) -> None:
    """A sender killed between reserving and committing must not hold up the
    messages that other, live senders commit behind its record.

    Fails while the receiver resolves a dead writer's record only after a wait
    slice that no commit interrupted (module.c, after_wait: il_ring_resolve_stuck
    runs only when rc == IL_TIMEOUT): a live sender that keeps committing
    keeps waking the receiver, and the dead record blocks delivery until the
    ring fills or recv's timeout expires.
    """
    with il.Channel(name, 1 << 20) as rx:
        with pytest.raises(il.Empty):
            rx.recv_nowait()
        paced = spawn(PACED_SENDER, name)
        paced.expect("ready")
        loaner = spawn(LOANER, name)
        loaner.expect("loaned")
        while True:  # take everything up to the open loan
            try:
                rx.recv_nowait().release()
            except il.Empty:
                break
        loaner.kill()
        loaner.wait()
        start = time.monotonic()
        try:
            msg = rx.recv(timeout=3)
        except il.Timeout:
            msg = None
        took = time.monotonic() - start
        paced.tell("stop")
        paced.expect("stopped")
        print(f"delivery resumed {took * 1e3:.1f} ms after the loaner died")
        assert msg is not None, "the receiver stayed stuck behind the dead sender's record"
        assert msg.tobytes().startswith(b"s")
        msg.release()
        assert took < 1.0
        assert rx.statistics().skipped == 1
