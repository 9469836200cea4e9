"""Done-means: kill -9 of senders at random points never wedges or corrupts the receiver.

A receiver (a thread of this process, reading one channel) runs throughout.
A well-behaved sender process sends without pause; meanwhile, 200 times, a
chaos sender is forked from a pre-warmed "zygote" process (fork keeps each
start at a millisecond or two; the senders, their deaths and their detection
are real processes) and killed with SIGKILL 0..20 ms after it said it started,
in the middle of whatever it was doing: send, send_many, or writing a loan.

Every record carries (sender id, sequence number, length, CRC-32) so that a
torn or misframed record is caught.  At the end: every record is intact, the
well-behaved sender's records all arrived in order, each killed sender's
records are exactly a prefix 0..k-1 of what it sent, and the receiver never
waited longer than a bound while the well-behaved sender was sending.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import threading
import time
import zlib

import pytest
from mp_helpers import Spawn

import interlink as il

ITERATIONS = int(os.environ.get("INTERLINK_CHAOS_ITERATIONS", "200"))  # more for a soak
KILL_DELAY = (0.0, 0.020)
WEDGE_BOUND = 5.0  # seconds the receiver may wait for a message while a sender sends

RECORD_CODE = """
HEADER = struct.Struct("<IIII")  # sender, seq, body length, crc32(sender, seq, length, body)

def record(sender, seq, body):
    head = struct.pack("<III", sender, seq, len(body))
    return head + struct.pack("<I", zlib.crc32(head + body)) + body

def send_some(ch, sender, seq, rng):
    \"\"\"Send a few records in one of three ways; return the next sequence number.\"\"\"
    style = rng.random()
    if style < 0.4:
        ch.send(record(sender, seq, rng.randbytes(rng.randint(0, 200))), timeout=60)
        return seq + 1
    if style < 0.7:
        n = rng.randint(1, 8)
        batch = [record(sender, seq + i, rng.randbytes(rng.randint(0, 100))) for i in range(n)]
        assert ch.send_many(batch, timeout=60) == n
        return seq + n
    body = rng.randbytes(rng.randint(0, 400))
    rec = record(sender, seq, body)
    extra = rng.choice([0, 0, rng.randint(1, 64)])
    loan = ch.loan(len(rec) + extra, timeout=60)
    with loan as buf:
        buf[16 : len(rec)] = body  # the body first, the header last: a torn
        buf[:16] = rec[:16]         # record could not pass the CRC check
        if extra:
            loan.commit(len(rec))
    return seq + 1
"""

ZYGOTE = (
    RECORD_CODE
    + """
import traceback
name = sys.argv[1]
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the killed senders

def chaos_sender(sender, seed, early):
    rng = random.Random(seed)
    if early:  # sometimes get killed while still opening the channel
        say("started", sender, os.getpid())
    ch = il.Channel(name, create=False)
    if not early:
        say("started", sender, os.getpid())
    seq = 0
    while True:
        seq = send_some(ch, sender, seq, rng)

say("zygote")
while True:
    cmd = hear().split()
    if cmd[0] == "exit":
        break
    sender, seed, early = int(cmd[1]), int(cmd[2]), cmd[3] == "1"
    if os.fork() == 0:
        try:
            chaos_sender(sender, seed, early)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            signal.pause()  # wait for the kill, so the parent never kills a stranger
        os._exit(0)
say("bye")
"""
)

STEADY = (
    RECORD_CODE
    + """
import select
name = sys.argv[1]
ch = il.Channel(name, create=False)
rng = random.Random(0)
say("steady")
seq = 0
while not select.select([sys.stdin], [], [], 0)[0]:
    seq = send_some(ch, 0, seq, rng)
    time.sleep(0.0002)  # leave the chaos senders some CPU on a 2-core machine
ch.close()
say("stopped", seq)
hear()
"""
)


class Receiver(threading.Thread):
    """Reads the channel until end of stream, checking every record."""

    def __init__(self, ch: il.Channel) -> None:
        super().__init__(name="chaos-receiver", daemon=True)
        self.ch = ch
        self.seqs: dict[int, list[int]] = {}
        self.count = 0
        self.longest_wait = 0.0
        self.steady_done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        header = struct.Struct("<IIII")
        while True:
            start = time.monotonic()
            try:
                batch = self.ch.recv_many(256, timeout=WEDGE_BOUND * 2)
            except il.Closed:
                return
            if not self.steady_done.is_set():
                self.longest_wait = max(self.longest_wait, time.monotonic() - start)
            for msg in batch:
                data = msg.tobytes()
                msg.release()
                assert len(data) >= 16, f"torn record of {len(data)} bytes"
                sender, seq, length, crc = header.unpack_from(data)
                assert len(data) == 16 + length, f"sender {sender} #{seq}: bad length"
                assert zlib.crc32(data[:12] + data[16:]) == crc, f"sender {sender} #{seq}: bad CRC"
                self.seqs.setdefault(sender, []).append(seq)
                self.count += 1


@pytest.mark.chaos
@pytest.mark.timeout(180)
def test_kill_9_of_senders_never_wedges_or_corrupts_the_receiver(spawn: Spawn, name: str) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 32)
    print(f"chaos seed {seed}")
    rng.seed(seed)
    started = time.monotonic()
    with il.Channel(name, capacity=1 << 16) as rx:
        receiver = Receiver(rx)
        with pytest.raises(il.Empty):
            rx.recv_nowait()  # take the receiver role before anyone sends
        receiver.start()
        zygote = spawn(ZYGOTE, name)
        zygote.expect("zygote")
        steady = spawn(STEADY, name)
        steady.expect("steady")

        early_kills = 0
        for sender in range(1, ITERATIONS + 1):
            early = rng.random() < 0.25
            early_kills += early
            zygote.tell(f"spawn {sender} {rng.randrange(1 << 32)} {int(early)}")
            said, pid = zygote.expect("started")
            assert int(said) == sender
            time.sleep(rng.uniform(*KILL_DELAY))  # the random point of death
            os.kill(int(pid), signal.SIGKILL)
            assert receiver.is_alive(), f"receiver stopped: {receiver.error!r}"

        steady.tell("stop")
        [steady_count] = steady.expect("stopped", timeout=30)
        receiver.steady_done.set()
        zygote.tell("exit")
        zygote.expect("bye")
        assert zygote.wait() == 0
        receiver.join(60)
        assert not receiver.is_alive(), "receiver did not see end of stream"
        if receiver.error is not None:
            raise receiver.error
        stats = rx.statistics()
        assert zygote.stderr() == "", "a chaos sender failed before it was killed"
        assert steady.stderr() == ""

    elapsed = time.monotonic() - started
    seqs = receiver.seqs
    assert seqs.get(0) == list(range(int(steady_count))), "the steady sender lost records"
    killed_sent = 0
    for sender in range(1, ITERATIONS + 1):
        got = seqs.get(sender, [])
        assert got == list(range(len(got))), f"chaos sender {sender}: {got[:20]}..."
        killed_sent += len(got)
    assert set(seqs) <= set(range(ITERATIONS + 1))
    print(
        f"{ITERATIONS} kills ({early_kills} while opening) in {elapsed:.1f}s; "
        f"{receiver.count} records ({steady_count} steady, {killed_sent} from killed senders); "
        f"{stats.skipped} in-flight records of dead senders skipped; "
        f"longest receiver wait {receiver.longest_wait * 1e3:.1f} ms"
    )
    assert receiver.longest_wait < WEDGE_BOUND
