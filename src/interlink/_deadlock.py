"""Cross-process, cross-thread deadlock detection for Lock and RLock.

See docs/design/deadlock.md.  In short: a thread whose acquire has waited
longer than ``CHECK_AFTER`` publishes "I wait for lock X" in a per-namespace
registry (one small file per waiting thread, in a hidden directory of the
shared-memory directory) and, every ``CHECK_EVERY``, walks the wait-for
graph: the lock it wants -> its holder (read from the lock word) -> the lock
that holder waits for (registry) -> its holder ...  The registry is only a
hint: every edge is read from the lock words themselves (the holder, and the
waiter's queue entry with its ticket), and a cycle counts only if three
successive reads of every lock in it agree, which proves that all its
members were waiting and holding at one instant (see the design note).  The
cycle's member with the highest (identity, tid) is the victim: it alone gets
``DeadlockError`` and leaves the queue; the others keep waiting.

Nothing here runs for an uncontended acquire or a wait shorter than
``CHECK_AFTER``: the native wait loop calls in only past that threshold.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import _native
from ._segment import _prefix, shm_dir
from .errors import DeadlockError

__all__ = [
    "CHECK_AFTER",
    "CHECK_EVERY",
    "ENV_VAR",
    "get_deadlock_detection",
    "set_deadlock_detection",
]

ENV_VAR = "INTERLINK_DEADLOCK_DETECTION"
CHECK_AFTER = 0.15  # seconds a wait lasts before it takes part in detection
CHECK_EVERY = 0.1  # then it re-checks this often
_MAX_CYCLE = 64  # longest cycle looked for
_SWEEP_EVERY = 5.0  # seconds between sweeps of dead processes' registry entries


def _env_enabled() -> bool:
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


_enabled = _env_enabled()


def set_deadlock_detection(enabled: bool) -> None:
    """Switch deadlock detection on or off for every Lock/RLock of this process.

    The default comes from the environment variable
    ``INTERLINK_DEADLOCK_DETECTION`` (``0``, ``false``, ``no`` or ``off``
    disables it); it is on otherwise.  A process with detection off neither
    checks nor publishes its waits, so cycles through its threads are not
    detected by anyone.  Per object: ``Lock(name, deadlock_detection=False)``.
    """
    global _enabled
    _enabled = bool(enabled)


def get_deadlock_detection() -> bool:
    """Whether deadlock detection is on for this process (see set_deadlock_detection)."""
    return _enabled


class _Waiting(Protocol):
    """What the detector needs from a Lock/RLock handle."""

    @property
    def name(self) -> str: ...
    @property
    def _dd_path(self) -> str: ...
    @property
    def _dd_buffer(self) -> mmap.mmap: ...


# ---------------------------------------------------------------- registry

_lock = threading.Lock()
# Counters of this process (for tests and diagnostics): checks run, cycles
# confirmed (by any member), DeadlockErrors raised here.
stats: dict[str, int] = {"checks": 0, "cycles": 0, "raised": 0}
_published: dict[tuple[int, int], str] = {}  # (ident, tid) -> entry text
_last_sweep = 0.0
_ident_cache: tuple[int, int] = (0, 0)  # (pid, ident)


def _self_ident() -> int:
    global _ident_cache
    pid = os.getpid()
    if _ident_cache[0] != pid:
        _ident_cache = (pid, _native.self_ident())
    return _ident_cache[1]


def _registry() -> Path:
    # Hidden (leading dot), so `interlink ls`/`gc` never take it for an object.
    return shm_dir() / f".{_prefix()}waits"


def _entry_path(ident: int, tid: int) -> Path:
    return _registry() / f"{ident:x}.{tid}"


def _publish(ident: int, tid: int, text: str) -> None:
    key = (ident, tid)
    if _published.get(key) == text:
        return
    path = _entry_path(ident, tid)
    tmp = path.with_name(path.name + ".tmp")
    for _ in range(3):  # the directory may be removed by a concurrent _withdraw
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except FileNotFoundError:
            continue
        _published[key] = text
        break
    _sweep_dead()


def _withdraw(ident: int, tid: int) -> None:
    if _published.pop((ident, tid), None) is None:
        return
    path = _entry_path(ident, tid)
    with contextlib.suppress(OSError):
        path.unlink()
    with contextlib.suppress(OSError):  # only succeeds when empty
        path.parent.rmdir()


def _sweep_dead() -> None:
    """Remove the entries of processes that died while waiting (rate-limited)."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < _SWEEP_EVERY:
        return
    _last_sweep = now
    try:
        names = os.listdir(_registry())
    except OSError:
        return
    for name in names:
        head = name.split(".", 1)[0]
        try:
            ident = int(head, 16)
        except ValueError:
            continue
        if ident and not _native.ident_alive(ident):
            with contextlib.suppress(OSError):
                os.unlink(_registry() / name)


@dataclass(frozen=True)
class _Entry:
    path: str
    name: str


def _lookup(ident: int, tid: int) -> _Entry | None:
    """What thread (ident, tid) says it waits for, or None."""
    try:
        text = _entry_path(ident, tid).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    if len(lines) < 3 or not lines[1]:
        return None
    return _Entry(path=lines[1], name=lines[2])


# ------------------------------------------------------------ lock words

_maps: dict[str, tuple[int, int, mmap.mmap]] = {}  # path -> (dev, ino, read-only map)


def _mapping(path: str) -> mmap.mmap | None:
    """A read-only view of the lock segment at ``path`` (cached per process)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    cached = _maps.get(path)
    if cached is not None and cached[0] == st.st_dev and cached[1] == st.st_ino:
        return cached[2]
    size = _native.LOCK_SEGMENT_SIZE
    if st.st_size < size:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if len(_maps) >= 256:
        _maps.clear()  # dropped maps close when their last user lets go
    _maps[path] = (st.st_dev, st.st_ino, mm)
    return mm


Snapshot = tuple[int, int, tuple[tuple[int, int, int, int], ...]]


def _snapshot(mm: mmap.mmap) -> Snapshot | None:
    try:
        return _native.lock_snapshot(mm)
    except (ValueError, BufferError, OSError):
        return None


@dataclass(frozen=True)
class _Edge:
    """``waiter`` is queued on ``lock`` (queue entry, ticket) and ``holder`` holds it."""

    waiter: tuple[int, int]
    lock_path: str
    lock_name: str
    mm: mmap.mmap
    entry: int
    ticket: int
    holder: tuple[int, int]


def _edge_from(snap: Snapshot, waiter: tuple[int, int]) -> tuple[int, int, tuple[int, int]] | None:
    hid, htid, waiters = snap
    if hid == 0:
        return None
    for ident, tid, entry, ticket in waiters:
        if ident == waiter[0] and tid == waiter[1]:
            return entry, ticket, (hid, htid)
    return None


def _walk(me: tuple[int, int], path: str, name: str, mm: mmap.mmap) -> list[_Edge] | None:
    """Follow waiter -> lock -> holder -> the lock it waits for ... back to ``me``."""
    edges: list[_Edge] = []
    waiter = me
    seen = {me}
    for _ in range(_MAX_CYCLE):
        snap = _snapshot(mm)
        if snap is None:
            return None
        found = _edge_from(snap, waiter)
        if found is None:
            return None
        entry, ticket, holder = found
        edges.append(_Edge(waiter, path, name, mm, entry, ticket, holder))
        if holder == me:
            return edges
        if holder in seen:
            return None  # a cycle we are not part of (or a self-wait): not ours to break
        seen.add(holder)
        wants = _lookup(*holder)
        if wants is None:
            return None
        found_mm = _mapping(wants.path)
        if found_mm is None:
            return None
        waiter, path, name, mm = holder, wants.path, wants.name, found_mm
    return None


def _confirm(edges: list[_Edge]) -> bool:
    """Every edge still reads the same: same holder, same queue entry and ticket."""
    for e in edges:
        snap = _snapshot(e.mm)
        if snap is None:
            return False
        if _edge_from(snap, e.waiter) != (e.entry, e.ticket, e.holder):
            return False
    return True


def _describe(edges: list[_Edge], me: tuple[int, int]) -> tuple[str, list[dict[str, object]]]:
    cycle: list[dict[str, object]] = []
    n = len(edges)
    for i, e in enumerate(edges):
        held = edges[i - 1].lock_name if n > 1 else e.lock_name
        cycle.append(
            {
                "pid": e.waiter[0] & ((1 << 22) - 1),
                "tid": e.waiter[1],
                "holds": held,
                "waits_for": e.lock_name,
                "me": e.waiter == me,
            }
        )
    parts = [
        f"pid {c['pid']} thread {c['tid']}{' (this thread)' if c['me'] else ''} "
        f"holds {c['holds']!r} and waits for {c['waits_for']!r}"
        for c in cycle
    ]
    return "deadlock: " + "; ".join(parts) + "; this thread backs off", cycle


def check(lock: _Waiting, tid: int) -> None:
    """Publish this thread's wait and raise DeadlockError if it is a cycle's victim."""
    me = (_self_ident(), tid)
    stats["checks"] += 1
    with _lock, contextlib.suppress(OSError):
        _publish(me[0], tid, f"{os.getpid()}\n{lock._dd_path}\n{lock.name}\n")
    edges = _walk(me, lock._dd_path, lock.name, lock._dd_buffer)
    if edges is None:
        return
    # Three reads of every lock in the cycle (the walk and two confirmations):
    # the waits seen in the first and the last and the holders in the middle
    # one prove that all members waited and held at one instant.
    if not (_confirm(edges) and _confirm(edges)):
        return
    stats["cycles"] += 1
    victim = max(e.waiter for e in edges)
    if victim != me:
        return  # the victim (it checks too) backs off; we keep waiting
    message, cycle = _describe(edges, me)
    stats["raised"] += 1
    err = DeadlockError(message)
    err.cycle = cycle  # type: ignore[attr-defined]
    raise err


def done(tid: int) -> None:
    """The wait of thread ``tid`` of this process ended: withdraw its entry."""
    with _lock:
        _withdraw(_self_ident(), tid)
