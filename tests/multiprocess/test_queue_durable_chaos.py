"""A durable queue under kill -9, at issue 4's scale, through the public API.

Producers and consumers are separate interpreters (``subprocess``) that open
``il.Queue(durable=True, path=...)`` and are killed with SIGKILL at random
moments while 100,000 messages go through; each killed one is replaced at
once (a producer's replacement continues its slot's sequence) until every
message has been put.  Then every consumer is killed (mid-stream: messages are
still queued and some are held unacknowledged), and a **fresh** process opens
the file and drains it.

What each process records (append-only files of fixed-size records, one
writer each; ``os.write`` of a whole record, so a kill leaves at worst a
truncated last record, which the reader drops):

* a producer, per slot ``k``: ``INTENT i`` before ``put((k, i, blob))`` and
  ``PUT i`` after ``put`` returned.  A replacement starts after the last
  INTENT, so no (k, i) is ever put twice: a kill between INTENT and PUT loses
  at most that one message (it may or may not be in the queue).
* a consumer (each process its own file) and the drain: ``DELIVERED k i d t``
  right after ``get_message`` returned (``d`` = ``deliveries``, ``t`` =
  CLOCK_MONOTONIC, one clock for all processes), ``DAMAGED`` if the value is
  not exactly what (k, i) determines, then ``ACKED k i d t`` right after
  ``ack()`` returned (or ``NACKED`` after an occasional ``nack()``).

The checks, and why they are the honest reading of "delivered at least once"
and "acked ones exactly once":

1. **At least once**: every (k, i) with a ``PUT`` record has a ``DELIVERED``
   record (a consumer's or the drain's).  The drain takes everything left,
   including what dead consumers held (redelivered once their death is seen).
2. **Exactly as sent**: no ``DAMAGED`` record, and every delivered (k, i) had
   an ``INTENT`` (nothing invented).  Values include 4 KiB+ blobs and
   bytearrays (pickle-5 out-of-band buffers, the zero-copy put path).
3. **Acked exactly once**: a message that was acked is never delivered again.
   A delivery may legitimately repeat *before* the ack (its holder died or
   nacked), so "exactly once" cannot mean one DELIVERED record; it means:
   (a) at most one ``ACKED`` record per message; (b) no delivery of it is
   recorded after its ack completed: every ``DELIVERED`` time of that message
   is earlier than its ``ACKED`` time.  This is sound: a legitimate delivery
   is recorded while its consumer holds the message, holds of one message
   never overlap (it is TAKEN by one process at a time and only goes back
   by nack or by its holder's death), so every legitimate delivery record
   precedes the end of the acked hold, hence the ack's record.  A redelivery
   after the ack (a lost ack, a resurrected entry) is recorded after it and
   fails (b); one that slips into the microseconds between ``ack()``
   returning and its record being taken would still show as (c): the
   ``deliveries`` numbers recorded for a message are pairwise distinct and
   the acked one is the largest (every take increments it and a message
   that goes back keeps it, so a duplicated entry restarts at a number
   already seen and a take after the ack exceeds the acked number); and (d)
   the drain, which starts after every consumer is dead, delivers no acked
   message.  A consumer killed between ``ack()`` and its record leaves an
   acked message without an ``ACKED`` record: it then must not be delivered
   again either, which (c) checks only among the records that exist; such a
   message is simply counted as delivered.
4. Repeated deliveries are bounded by the queue's own counters
   (``redelivered + nacks``), and the drained queue is empty and consistent.

Waits are bounded (every ``get_message``/``put`` has a timeout, every child
line has a deadline); the kill times are random, not synchronization.
"""

from __future__ import annotations

import random
import select
import struct
import time
from collections import defaultdict
from pathlib import Path

import pytest
from mp_helpers import Child, Spawn

import interlink as il

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

REC = struct.Struct("<IIIIQ")  # kind, k, i, deliveries, t_ns
INTENT, PUT, DELIVERED, DAMAGED, ACKED, NACKED = range(1, 7)

COMMON = """
REC = struct.Struct("<IIIIQ")
INTENT, PUT, DELIVERED, DAMAGED, ACKED, NACKED = range(1, 7)

def expected(k, i):
    r = random.Random(k * 1_000_003 + i)
    if i % 97 == 0:
        return (k, i, bytearray(r.randbytes(12_000 + i % 5_000)))  # out-of-band buffer
    if i % 31 == 0:
        return (k, i, r.randbytes(4_100 + i % 3_000))  # over 4 KiB: the zero-copy take
    return (k, i, r.randbytes(i % 61))

def opener():
    return il.Queue("chaos", durable=True, path=sys.argv[1], create=False)

def record(fd, kind, k, i, d=0):
    os.write(fd, REC.pack(kind, k, i, d, time.monotonic_ns()))
"""

PRODUCER = (
    COMMON
    + """
k, count, log = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(log, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
data = os.pread(fd, os.fstat(fd).st_size, 0)
os.ftruncate(fd, len(data) - len(data) % REC.size)  # a kill may have cut a record short
start = 0
for off in range(0, len(data) - REC.size + 1, REC.size):
    kind, _, i, _, _ = REC.unpack_from(data, off)
    if kind == INTENT:
        start = i + 1  # a replacement never puts an (k, i) twice
q = opener()
say("ready", start)
for i in range(start, count):
    record(fd, INTENT, k, i)
    q.put(expected(k, i), timeout=60, priority=i % 3)
    record(fd, PUT, k, i)
say("done")
q.close()
"""
)

CONSUMER = (
    COMMON
    + """
log, drain = sys.argv[2], sys.argv[3] == "drain"
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
rng = random.Random()
q = opener()
say("ready")
n = 0
while True:
    try:
        m = q.get_message(timeout=1.0 if drain else 60)
    except il.Empty:
        if not drain:
            continue
        st = q.stats()
        if st["ready"] == 0 and st["taken"] == 0 and st["writing"] == 0:
            break
        continue  # held by dead consumers: back once their death is seen
    k, i = m.value[0], m.value[1]
    record(fd, DELIVERED, k, i, m.deliveries)
    want = expected(k, i)
    if m.value != want or type(m.value[2]) is not type(want[2]):
        record(fd, DAMAGED, k, i, m.deliveries)
    if not drain and rng.random() < 0.02:
        m.nack()
        record(fd, NACKED, k, i, m.deliveries)
    else:
        m.ack()
        record(fd, ACKED, k, i, m.deliveries)
    n += 1
st = q.stats()
say("drained", n, st["ready"], st["taken"], st["writing"], st["redelivered"], st["nacks"])
q.close()
"""
)


def _records(path: Path) -> list[tuple[int, int, int, int, int]]:
    """Every whole record of a log (a kill may have truncated the last one)."""
    data = path.read_bytes() if path.exists() else b""
    usable = len(data) - len(data) % REC.size
    return [REC.unpack_from(data, off) for off in range(0, usable, REC.size)]


def _has_line(ch: Child) -> bool:
    """Whether ``ch`` has printed something not yet read (without blocking)."""
    assert ch.proc.stdout is not None
    return bool(ch._buf) or bool(select.select([ch.proc.stdout.fileno()], [], [], 0)[0])


class _Run:
    """The processes of one chaos run: slots of producers and consumers, kills, replacements."""

    def __init__(self, spawn: Spawn, qpath: Path, logs: Path, nprod: int, count: int) -> None:
        self.spawn, self.qpath, self.logs, self.count = spawn, qpath, logs, count
        self.serial = 0
        self.prods = {k: self.producer(k) for k in range(nprod)}
        self.cons: dict[int, Child] = {}
        self.starting: set[Child] = set(self.prods.values())  # not "ready" yet: not killed
        self.done: set[int] = set()
        self.kills = {"producer": 0, "consumer": 0}

    def producer(self, k: int) -> Child:
        log = self.logs / f"producer-{k}"
        return self.spawn(PRODUCER, str(self.qpath), str(k), str(self.count), str(log))

    def consumer(self, mode: str = "work") -> Child:
        self.serial += 1
        log = self.logs / ("drain" if mode == "drain" else f"consumer-{self.serial}")
        return self.spawn(CONSUMER, str(self.qpath), str(log), mode)

    def start_consumers(self, ncons: int) -> None:
        self.cons = {c: self.consumer() for c in range(ncons)}
        self.starting.update(self.cons.values())

    def poll(self) -> None:
        """Note the children that became ready and the producers that finished."""
        for ch in list(self.starting):
            if _has_line(ch):
                ch.expect("ready", timeout=10)
                self.starting.discard(ch)
        for k, ch in self.prods.items():
            if k not in self.done and ch not in self.starting and ch.proc.poll() is not None:
                assert ch.proc.returncode == 0, ch.stderr()
                self.done.add(k)

    def victims(self) -> list[tuple[str, int]]:
        """The running, ready children: (role, slot)."""
        out = [("producer", k) for k, ch in self.prods.items() if k not in self.done]
        out += [("consumer", c) for c in self.cons]
        return [(r, j) for r, j in out if self.group(r)[j] not in self.starting]

    def group(self, role: str) -> dict[int, Child]:
        return self.prods if role == "producer" else self.cons

    def kill(self, role: str, j: int, replace: bool = True) -> None:
        """SIGKILL the child in slot ``j`` and start its replacement at once."""
        ch = self.group(role)[j]
        ch.kill()
        ch.wait(10)
        self.starting.discard(ch)
        ch.close()  # its pipes: hundreds of children pass through a run
        if role == "producer" and ch.proc.returncode == 0:
            self.done.add(j)  # it had just finished
            return
        self.kills[role] += 1
        if not replace:
            del self.group(role)[j]
            return
        new = self.producer(j) if role == "producer" else self.consumer()
        self.group(role)[j] = new
        self.starting.add(new)

    def put_so_far(self) -> int:
        """Messages put (two producer records each): a cheap estimate."""
        paths = [self.logs / f"producer-{k}" for k in self.prods]
        return sum(p.stat().st_size // REC.size // 2 for p in paths if p.exists())


def _chaos(
    spawn: Spawn,
    tmp_path: Path,
    *,
    nprod: int,
    ncons: int,
    count: int,
    min_kills: int,
    kill_every: float,
    budget: float,
) -> None:
    """Run ``nprod`` x ``ncons`` with kills until ``nprod * count`` messages were put
    (at least ``min_kills`` kills), drain in a fresh process, check (module docstring)."""
    total = nprod * count
    qpath = tmp_path / "chaos.q"
    logs = tmp_path / "logs"
    logs.mkdir()
    # Bounded, so that producers run about as fast as consumers and kills land
    # on both.  The parent's handle only reads qsize().
    maxsize = 4096
    with il.Queue("chaos", durable=True, path=qpath, maxsize=maxsize, capacity=32 << 20) as watch:
        run = _Run(spawn, qpath, logs, nprod, count)
        run.start_consumers(ncons)
        rng = random.Random()
        deadline = time.monotonic() + budget
        while len(run.done) < nprod:
            assert time.monotonic() < deadline, f"not all put in {budget}s ({run.kills} kills)"
            # A random kill moment (pacing, not synchronization); the
            # replacement starts at once and is a candidate once it is ready.
            time.sleep(rng.uniform(0.02, kill_every * 2 - 0.02))
            run.poll()
            if run.cons and total - run.put_so_far() + watch.qsize() + 256 < maxsize:
                # The rest fits in the queue: the consumers die mid-stream,
                # holding what they hold, and the last messages are put into a
                # queue nobody consumes.  The fresh process drains it all.
                for c in list(run.cons):
                    run.kill("consumer", c, replace=False)
            victims = run.victims()
            if victims:
                run.kill(*rng.choice(victims))
        for c in list(run.cons):  # the producers were faster: stop the consumers now
            run.kill("consumer", c, replace=False)
    kills = run.kills
    drain = run.consumer("drain")
    drain.expect("ready", timeout=60)
    final = drain.expect("drained", timeout=120)
    assert drain.wait(30) == 0, drain.stderr()
    _n, ready, taken, writing, redelivered, nacks = map(int, final)
    assert (ready, taken, writing) == (0, 0, 0)

    # ------------------------------------------------------------ the logs
    intended: set[tuple[int, int]] = set()
    put: set[tuple[int, int]] = set()
    for k in range(nprod):
        for kind, _, i, _, _ in _records(logs / f"producer-{k}"):
            (intended if kind == INTENT else put).add((k, i))
    delivered: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    acked: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    damaged: list[tuple[int, int]] = []
    drained: set[tuple[int, int]] = set()
    acked_before_drain: set[tuple[int, int]] = set()
    for log in sorted(logs.glob("*")):
        if log.name.startswith("producer-"):
            continue
        for kind, k, i, d, t in _records(log):
            if kind == DELIVERED:
                delivered[k, i].append((d, t))
                if log.name == "drain":
                    drained.add((k, i))
            elif kind == ACKED:
                acked[k, i].append((d, t))
                if log.name != "drain":
                    acked_before_drain.add((k, i))
            elif kind == DAMAGED:
                damaged.append((k, i))
    assert len(intended) == total  # every slot reached the end
    assert len(put) >= total - kills["producer"]  # a kill loses at most its put in flight
    # 1. at least once
    missing = sorted(put - delivered.keys())
    assert not missing, f"{len(missing)} put messages never delivered: {missing[:10]}"
    # 2. exactly as sent, nothing invented
    assert not damaged, f"damaged: {damaged[:10]}"
    assert delivered.keys() <= intended, sorted(delivered.keys() - intended)[:10]
    # 3. acked ones exactly once
    for key, acks in acked.items():
        assert len(acks) == 1, (key, "acked twice", acks)
        (d_ack, t_ack) = acks[0]
        ds = [d for d, _ in delivered[key]]
        assert len(ds) == len(set(ds)), (key, "the same delivery recorded twice", ds)
        assert max(ds) == d_ack, (key, "delivered again after its ack", ds, d_ack)
        late = [t for _, t in delivered[key] if t > t_ack]
        assert not late, (key, "delivered after its ack completed", delivered[key], acks)
    again = sorted(acked_before_drain & drained)
    assert not again, f"acked, then drained again: {again[:10]}"  # (d)
    for key, recs in delivered.items():
        ds = [d for d, _ in recs]
        assert len(ds) == len(set(ds)), (key, "the same delivery recorded twice", ds)
    # 4. repeats are the queue's own redeliveries and nacks
    repeats = sum(len(recs) - 1 for recs in delivered.values())
    assert repeats <= redelivered + nacks, (repeats, redelivered, nacks)
    assert kills["producer"] + kills["consumer"] >= min_kills
    assert drained, "the drain had nothing to do"
    assert redelivered > 0, "no consumer was killed holding a message"
    with il.Queue("chaos", durable=True, path=qpath, create=False) as q:
        assert q.empty() and q.stats()["taken"] == 0
        q._core._check()
    print(
        f"kills {kills}, put {len(put)}/{total}, deliveries {sum(map(len, delivered.values()))}, "
        f"redelivered {redelivered}, nacks {nacks}, drained {len(drained)}"
    )


def test_durable_kill9_100k(spawn: Spawn, tmp_path: Path) -> None:
    """2 producers + 2 consumers, 100,000 messages, kill -9 at random until all are put."""
    _chaos(
        spawn, tmp_path, nprod=2, ncons=2, count=50_000, min_kills=20, kill_every=0.15, budget=150
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_durable_kill9_4x4_400k(spawn: Spawn, tmp_path: Path) -> None:
    """4 producers + 4 consumers, 400,000 messages, at least 150 kills."""
    _chaos(
        spawn, tmp_path, nprod=4, ncons=4, count=100_000, min_kills=150, kill_every=0.1, budget=700
    )
