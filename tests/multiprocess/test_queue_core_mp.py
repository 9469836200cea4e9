"""QueueCore across real processes: many producers and consumers (exact
multiset, per-producer order), wake-ups, Ctrl-C, a consumer killed with
SIGKILL (durable: redelivered; plain: dropped and counted), zero-copy arrays."""

from __future__ import annotations

import mmap
import random
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from mp_helpers import Spawn, blocked_in_futex, wait_until

import interlink._native as n

pytestmark = pytest.mark.timeout(120)

OPEN = """
import mmap
import interlink._native as n
f = open(sys.argv[1], "r+b")
mm = mmap.mmap(f.fileno(), 0)
q = n.QueueCore()
q._bind(mm)
"""


def create(path: Path, nentries: int, arena: int, maxsize: int = 0, durable: bool = False) -> None:
    size = n.queue_segment_size(nentries, arena)
    with open(path, "w+b") as f:
        f.truncate(size)
        mm = mmap.mmap(f.fileno(), size)
        struct.pack_into("<I", mm, 28, n.SEG_SLOTS)
        n.queue_format(mm, nentries, arena, maxsize, durable)
        mm.close()


@pytest.fixture
def qfile(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "queue"


def bind(path: Path) -> tuple[n.QueueCore, mmap.mmap]:
    f = open(path, "r+b")  # noqa: SIM115 (the mapping outlives the file object)
    mm = mmap.mmap(f.fileno(), 0)
    f.close()
    q = n.QueueCore()
    q._bind(mm)
    return q, mm


PRODUCER = (
    OPEN
    + """
k, count = int(sys.argv[2]), int(sys.argv[3])
say("ready")
hear()
batch = []
for i in range(count):
    item = struct.pack("<II", k, i)
    if i % 3 == 0:
        if batch:  # keep this producer's commit order = its counter order
            assert q.put_many(batch, priority=0) == len(batch)
            batch = []
        q.put(item, priority=i % 2)
    else:
        batch.append(item)
        if len(batch) == 16:
            assert q.put_many(batch, priority=0) == 16
            batch = []
if batch:
    q.put_many(batch, priority=0)
say("done")
"""
)

CONSUMER = (
    OPEN
    + """
c, nprod, count = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
seen = bytearray(nprod * count)
last = {}
say("ready")
while True:
    items = q.get_many(64, timeout=60)
    stops = 0
    for b in items:
        b = bytes(b)
        if b == b"STOP":
            stops += 1
            continue
        k, i = struct.unpack("<II", b)
        prio = 1 if (i % 3 == 0 and i % 2 == 1) else 0
        assert i > last.get((k, prio), -1), (k, prio, i)  # per-producer order
        last[(k, prio)] = i
        seen[k * count + i] += 1
    if stops:
        for _ in range(stops - 1):  # one STOP per consumer: pass the others on
            q.put(b"STOP", priority=-1)
        break
say("seen", zlib.compress(bytes(seen)).hex())
"""
)


def test_many_producers_many_consumers_exact(spawn: Spawn, qfile: Path) -> None:
    nprod, ncons, count = 3, 3, 20000
    create(qfile, 4096, 1 << 20, maxsize=1000)
    q, _ = bind(qfile)
    prods = [spawn(PRODUCER, str(qfile), str(k), str(count)) for k in range(nprod)]
    cons = [spawn(CONSUMER, str(qfile), str(c), str(nprod), str(count)) for c in range(ncons)]
    for ch in prods + cons:
        ch.expect("ready")
    for p in prods:
        p.tell("go")
    for p in prods:
        p.expect("done", timeout=90)
    for _ in cons:
        q.put(b"STOP", priority=-1)  # after everything else
    total = bytearray(nprod * count)
    for c in cons:
        (hexdata,) = c.expect("seen", timeout=60)
        part = zlib.decompress(bytes.fromhex(hexdata))
        for j, v in enumerate(part):
            if v:
                total[j] += v
        assert c.wait(10) == 0
    assert set(total) == {1}  # every message exactly once
    st = q.stats()
    assert st["ready"] == 0 and st["taken"] == 0 and st["writing"] == 0
    q._check()


def test_blocked_get_is_woken_by_put(spawn: Spawn, qfile: Path) -> None:
    create(qfile, 16, 1 << 16)
    q, _ = bind(qfile)
    kid = spawn(OPEN + 'say("waiting")\nsay("got", q.get(timeout=30).decode())\n', str(qfile))
    kid.expect("waiting")
    wait_until(lambda: blocked_in_futex(kid.pid), 10, "the child asleep in futex")
    q.put(b"hello")
    assert kid.expect("got", timeout=10) == ["hello"]
    assert kid.wait(10) == 0
    assert q.stats()["wakes"] >= 1


def test_ctrl_c_interrupts_a_blocked_get(spawn: Spawn, qfile: Path) -> None:
    create(qfile, 16, 1 << 16)
    kid = spawn(
        OPEN
        + """
say("waiting")
try:
    q.get()
except KeyboardInterrupt:
    say("interrupted")
""",
        str(qfile),
    )
    kid.expect("waiting")
    wait_until(lambda: blocked_in_futex(kid.pid), 10, "the child asleep in futex")
    kid.kill(signal.SIGINT)
    kid.expect("interrupted", timeout=5)
    assert kid.wait(10) == 0


HOLDER = (
    OPEN
    + """
m = q.get_message()
say("holding", bytes(m).decode(), m.deliveries)
hear()
"""
)


def test_durable_consumer_killed_holding_a_message(spawn: Spawn, qfile: Path) -> None:
    create(qfile, 16, 1 << 16, durable=True)
    q, _ = bind(qfile)
    q.put(b"first")
    q.put(b"second")
    kid = spawn(HOLDER, str(qfile))
    assert kid.expect("holding") == ["first", "1"]
    kid.kill()
    assert kid.wait(10) == -signal.SIGKILL
    rec = q._recover()
    assert rec["redelivered"] == 1
    m = q.get_message()
    assert bytes(m) == b"first" and m.deliveries == 2  # redelivered at its place
    m.ack()
    assert q.get() == b"second"
    q._check()


def test_plain_consumer_killed_holding_a_message(spawn: Spawn, qfile: Path) -> None:
    create(qfile, 16, 1 << 16)
    q, _ = bind(qfile)
    q.put(b"first")
    q.put(b"second")
    kid = spawn(HOLDER, str(qfile))
    assert kid.expect("holding") == ["first", "1"]
    kid.kill()
    kid.wait(10)
    # a blocked get recovers the dead holder's entry by itself (after a slice)
    assert q.get(timeout=5) == b"second"
    wait_until(lambda: q._recover() is not None and q.stats()["taken"] == 0, 10, "recovery")
    assert q.stats()["dropped"] == 1
    assert q.empty()


def test_numpy_array_zero_copy_between_processes(spawn: Spawn, qfile: Path) -> None:
    np = pytest.importorskip("numpy")
    create(qfile, 16, 32 << 20)
    q, _ = bind(qfile)
    kid = spawn(
        OPEN
        + """
import numpy as np
a = np.arange(1 << 20, dtype=np.float64)
q.put(a)
say("put")
""",
        str(qfile),
    )
    kid.expect("put", timeout=30)
    msg = q.get(timeout=10)
    assert isinstance(msg, n.QueueMessage)
    arr = np.frombuffer(msg, dtype=np.float64)
    assert arr.shape == (1 << 20,) and arr[777] == 777.0 and arr[-1] == (1 << 20) - 1
    del arr
    msg.release()
    assert q.stats()["arena_used"] == 0
    assert kid.wait(10) == 0


CHAOS_PRODUCER = (
    OPEN
    + """
k, count = int(sys.argv[3]), int(sys.argv[4])
lf = open(sys.argv[2], "r+b")
log = mmap.mmap(lf.fileno(), 0)
NEXT = 8 * k  # this producer slot's next counter (one writer at a time)
say("ready")
while True:
    (i,) = struct.unpack_from("<Q", log, NEXT)
    if i >= count:
        break
    struct.pack_into("<Q", log, NEXT, i + 1)  # before the put: a kill never repeats i
    body = struct.pack("<II", k, i) * (1 + i % 50)
    q.put(body + zlib.crc32(body).to_bytes(4, "little"), priority=i % 3)
    log[64 + k * count + i] = 1  # committed (the put returned)
say("done")
"""
)

CHAOS_CONSUMER = (
    OPEN
    + """
c, nprod, count = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lf = open(sys.argv[2], "r+b")
log = mmap.mmap(lf.fileno(), 0)
base = 64 + nprod * count * (1 + c)  # this consumer slot's receive counts
say("ready")
while True:
    m = q.get_message(timeout=60)
    data = bytes(m)
    body, crc = data[:-4], int.from_bytes(data[-4:], "little")
    assert zlib.crc32(body) == crc, "torn payload"
    k, i = struct.unpack_from("<II", body)
    log[base + k * count + i] = min(255, log[base + k * count + i] + 1)
    m.ack()
"""
)


@pytest.mark.slow
def test_durable_chaos_kill9(spawn: Spawn, tmp_path: Path) -> None:
    """Producers and consumers killed with SIGKILL at random: every committed
    message is received at least once, intact; repeats only by redelivery."""
    nprod, ncons, count, kills = 2, 2, 100000, 40
    qpath, lpath = tmp_path / "queue", tmp_path / "log"
    create(qpath, 256, 1 << 20, maxsize=128, durable=True)
    lpath.write_bytes(bytes(64 + nprod * count * (1 + ncons)))
    q, _ = bind(qpath)
    prods = {
        k: spawn(CHAOS_PRODUCER, str(qpath), str(lpath), str(k), str(count)) for k in range(nprod)
    }
    cons = {
        c: spawn(CHAOS_CONSUMER, str(qpath), str(lpath), str(c), str(nprod), str(count))
        for c in range(ncons)
    }
    for ch in [*prods.values(), *cons.values()]:
        ch.expect("ready")
    rng = random.Random()
    for _ in range(kills):
        time.sleep(rng.uniform(0.01, 0.08))  # random kill times, not synchronization
        if rng.random() < 0.5:
            k = rng.randrange(nprod)
            prods[k].kill()
            prods[k].wait(10)
            prods[k] = spawn(CHAOS_PRODUCER, str(qpath), str(lpath), str(k), str(count))
            prods[k].expect("ready")
        else:
            c = rng.randrange(ncons)
            cons[c].kill()
            cons[c].wait(10)
            cons[c] = spawn(CHAOS_CONSUMER, str(qpath), str(lpath), str(c), str(nprod), str(count))
            cons[c].expect("ready")
    for k in range(nprod):
        prods[k].expect("done", timeout=90)

    def drained() -> bool:
        q._recover()
        st = q.stats()
        return st["ready"] == 0 and st["taken"] == 0 and st["writing"] == 0

    wait_until(drained, 60, "the consumers to drain the queue")
    for ch in cons.values():
        ch.kill()
        ch.wait(10)
    q._recover()
    q._check()
    log = lpath.read_bytes()
    st = q.stats()
    committed = missing = repeated = 0
    for j in range(nprod * count):
        got = sum(log[64 + nprod * count * (1 + c) + j] for c in range(ncons))
        if log[64 + j]:
            committed += 1
            missing += got == 0
        repeated += max(0, got - 1)
    assert committed >= nprod * count - kills  # each kill loses at most one put
    assert missing == 0, (missing, st)
    assert repeated <= st["redelivered"] + st["nacks"], (repeated, st)
