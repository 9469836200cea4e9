"""Cross-process, cross-thread deadlock detection for Lock, RLock and RWLock.

See docs/design/deadlock.md.  In short: a thread whose acquire has waited
longer than ``CHECK_AFTER`` publishes what it waits for (the lock and its own
place in that lock's word: queue ticket, reader-wait number or write turn)
and which read sides of RWLocks it holds, in a per-namespace registry (one
small file per waiting thread, in a hidden directory of the shared-memory
directory).  Every ``CHECK_EVERY`` it searches the wait-for graph for a
cycle through itself: a Lock/RLock waiter waits for the lock's holder; a
queued writer for the write side's holder; a reader for the writer and every
queued writer (writer preference); a writer draining readers for every
thread that holds a read side.  The registry is only a hint: every edge is
read from the lock words (holders, queue entries with their tickets, the
reader-wait entries, the per-slot read counts), a holder's read sides count
only if its registry entry was written during the very wait the lock word
shows, and a cycle counts only if three successive reads of every lock in it
agree, which proves that all its members were waiting and holding at one
instant (see the design note).  One member of the cycle is the victim: the
one with the highest (identity, tid), preferring a thread that waits for a
second read side of an RWLock it reads (a re-entrant read stuck behind a
writer) or for the write side of one it reads (an upgrade).  It alone gets
``DeadlockError`` and leaves the queue; the others keep waiting.

Nothing here runs for an uncontended acquire or a wait shorter than
``CHECK_AFTER``: the native wait loops call in only past that threshold.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import _native
from ._segment import _prefix, shm_dir
from .errors import DeadlockError

__all__ = [
    "CHECK_AFTER",
    "CHECK_EVERY",
    "ENV_VAR",
    "gc_registry",
    "get_deadlock_detection",
    "set_deadlock_detection",
]

ENV_VAR = "INTERLINK_DEADLOCK_DETECTION"
CHECK_AFTER = 0.15  # seconds a wait lasts before it takes part in detection
CHECK_EVERY = 0.1  # then it re-checks this often
_MAX_CYCLE = 64  # longest cycle looked for
_MAX_NODES = 256  # threads visited by one search
_SWEEP_EVERY = 5.0  # seconds between sweeps of dead processes' registry entries
_PID_MASK = (1 << 22) - 1  # IL_IDENT_PID_BITS (proc.h)
_FORMAT = "interlink-wait 2"


def _env_enabled() -> bool:
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


_enabled = _env_enabled()


def set_deadlock_detection(enabled: bool) -> None:
    """Switch deadlock detection on or off for every Lock/RLock/RWLock of this process.

    The default comes from the environment variable
    ``INTERLINK_DEADLOCK_DETECTION`` (``0``, ``false``, ``no`` or ``off``
    disables it); it is on otherwise.  A process with detection off neither
    checks nor publishes its waits, so cycles through its threads are not
    detected by anyone.  Per object: ``Lock(name, deadlock_detection=False)``
    (also RLock and RWLock).
    """
    global _enabled
    _enabled = bool(enabled)


def get_deadlock_detection() -> bool:
    """Whether deadlock detection is on for this process (see set_deadlock_detection)."""
    return _enabled


class _Waiting(Protocol):
    """What the detector needs from a Lock/RLock/RWLock handle."""

    @property
    def name(self) -> str: ...
    @property
    def _dd_path(self) -> str: ...
    @property
    def _dd_buffer(self) -> mmap.mmap: ...


class _ReadHolding(Protocol):
    """What the detector needs from an RWLock handle to publish read holds."""

    @property
    def closed(self) -> bool: ...
    @property
    def _slot(self) -> int | None: ...
    @property
    def _dd_path(self) -> str: ...
    def _read_holds(self, tid: int, /) -> int: ...


# ------------------------------------------------------------- read holds

# Every open RWLock handle of this process: a waiting thread publishes the
# read sides it holds through them (RWLock.__init__ registers itself).
_rwlocks: weakref.WeakSet[Any] = weakref.WeakSet()
_rwlocks_lock = threading.Lock()  # additions vs. iteration from other threads


def track_rwlock(handle: _ReadHolding) -> None:
    """Let waits of this process publish the read sides held through ``handle``."""
    with _rwlocks_lock:
        _rwlocks.add(handle)


Hold = tuple[int, int, str]  # (attach slot, read sides, rwlock segment path)


def _read_holds_of(tid: int) -> tuple[Hold, ...]:
    holds: list[Hold] = []
    with _rwlocks_lock:
        handles = list(_rwlocks)
    for h in handles:
        try:
            if h.closed:
                continue
            n = h._read_holds(tid)
            slot = h._slot
        except Exception:  # a handle being closed by another thread
            continue
        if n and slot is not None:
            holds.append((int(slot), int(n), str(h._dd_path)))
    return tuple(sorted(holds))


# ---------------------------------------------------------------- registry

_lock = threading.Lock()
# Counters of this process (for tests and diagnostics): checks run, cycles
# confirmed (by any member), DeadlockErrors raised here.
stats: dict[str, int] = {"checks": 0, "cycles": 0, "raised": 0}
_published: dict[tuple[int, int], str] = {}  # (ident, tid) -> entry text
_last_sweep = 0.0
_ident_cache: tuple[int, int] = (0, 0)  # (pid, ident)

Node = tuple[int, int]  # (process identity, tid)


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


@dataclass(frozen=True)
class _Wait:
    """One thread's published wait.

    ``kind``: "L" queued on a Lock/RLock (``wid`` its ticket), "R" a reader
    waiting on an RWLock (``wid`` its reader-wait number), "Q" a writer queued
    for an RWLock's write side (``wid`` its ticket), "D" a writer holding the
    write side and draining readers (``wid`` the turn it holds).  ``holds``:
    the read sides the thread holds, as (slot, count, rwlock path).
    """

    node: Node
    kind: str
    wid: int
    path: str
    name: str
    holds: tuple[Hold, ...] = ()

    def reads(self, path: str) -> bool:
        return any(p == path for _s, _n, p in self.holds)

    def text(self) -> str:
        lines = [
            _FORMAT,
            str(os.getpid()),
            f"{self.kind} {self.wid}",
            self.path,
            self.name.replace("\n", " "),
        ]
        lines += [f"H {slot} {n} {p}" for slot, n, p in self.holds]
        return "\n".join(lines) + "\n"


def _publish(w: _Wait) -> None:
    key = w.node
    text = w.text()
    if _published.get(key) == text:
        return
    path = _entry_path(*key)
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


def _stale_entries() -> Iterator[Path]:
    """Registry files of processes that are no longer alive."""
    reg = _registry()
    try:
        names = os.listdir(reg)
    except OSError:
        return
    for name in names:
        head = name.split(".", 1)[0]
        try:
            ident = int(head, 16)
        except ValueError:
            continue
        if ident and not _native.ident_alive(ident):
            yield reg / name


def _sweep_dead() -> None:
    """Remove the entries of processes that died while waiting (rate-limited)."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < _SWEEP_EVERY:
        return
    _last_sweep = now
    for path in _stale_entries():
        with contextlib.suppress(OSError):
            path.unlink()


def gc_registry(*, dry_run: bool = False) -> list[Path]:
    """Remove the deadlock-registry entries of dead processes (current namespace).

    A process killed while one of its threads waited past ``CHECK_AFTER``
    leaves one small file; publishers sweep those every few seconds, this
    does it now (``interlink gc``).  The registry directory is removed when
    it is left empty.  Returns the entries removed (or, with dry_run, that
    would be).
    """
    removed: list[Path] = []
    for path in _stale_entries():
        if dry_run:
            removed.append(path)
            continue
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    if not dry_run:
        with contextlib.suppress(OSError):  # only succeeds when empty
            _registry().rmdir()
    return removed


def _parse(node: Node, text: str) -> _Wait | None:
    lines = text.split("\n")
    if len(lines) < 5 or lines[0] != _FORMAT:
        return None
    try:
        kind, wid = lines[2].split(" ", 1)
        holds: list[Hold] = []
        for line in lines[5:]:
            if not line:
                continue
            tag, slot, n, path = line.split(" ", 3)
            if tag != "H":
                return None
            holds.append((int(slot), int(n), path))
        return _Wait(node, kind, int(wid), lines[3], lines[4], tuple(holds))
    except ValueError:
        return None


def _lookup(node: Node) -> _Wait | None:
    """What thread ``node`` says it waits for and holds, or None."""
    try:
        text = _entry_path(*node).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return _parse(node, text)


def _published_by(ident: int) -> list[_Wait]:
    """Every wait published by the threads of process ``ident``."""
    prefix = f"{ident:x}."
    try:
        names = os.listdir(_registry())
    except OSError:
        return []
    found = []
    for name in names:
        if not name.startswith(prefix) or name.endswith(".tmp"):
            continue
        try:
            tid = int(name[len(prefix) :])
        except ValueError:
            continue
        w = _lookup((ident, tid))
        if w is not None:
            found.append(w)
    return found


# ------------------------------------------------------------ lock words

_maps: dict[str, tuple[int, int, int, mmap.mmap]] = {}  # path -> (dev, ino, size, map)


def _mapping(path: str, size: int) -> mmap.mmap | None:
    """A read-only view of the first ``size`` bytes of the segment at ``path``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    cached = _maps.get(path)
    if cached is not None and cached[:3] == (st.st_dev, st.st_ino, size):
        return cached[3]
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
    _maps[path] = (st.st_dev, st.st_ino, size, mm)
    return mm


# lock_snapshot: (holder ident, holder tid, ((ident, tid, entry, ticket), ...))
# rwlock_snapshot: (writer ident, writer tid, turn, queued writers as above,
#                   ((slot, slot ident, read holds), ...),
#                   ((ident, tid, entry, seq), ...) reader waits, waiting readers)
Snapshot = tuple[Any, ...]


class _Pass:
    """One read of every lock a search or confirmation looks at (each lock once)."""

    def __init__(self, own: dict[str, mmap.mmap] | None = None) -> None:
        self._snaps: dict[str, Snapshot | None] = {}
        self._own = own or {}

    def get(self, path: str, rw: bool) -> Snapshot | None:
        key = ("rw:" if rw else "lock:") + path
        if key in self._snaps:
            return self._snaps[key]
        mm = self._own.get(path)
        if mm is None:
            size = _native.RWLOCK_SEGMENT_SIZE if rw else _native.LOCK_SEGMENT_SIZE
            mm = _mapping(path, size)
        snap: Snapshot | None = None
        if mm is not None:
            try:
                snap = (_native.rwlock_snapshot if rw else _native.lock_snapshot)(mm)
            except (ValueError, BufferError, OSError):
                snap = None
        self._snaps[key] = snap
        return snap


def _in_wait(w: _Wait, snap: Snapshot) -> bool:
    """The lock word shows thread ``w.node`` in the wait ``w`` describes."""
    me = w.node
    if w.kind == "L":
        return any((i, t) == me and k == w.wid for i, t, _e, k in snap[2])
    if w.kind == "Q":
        return any((i, t) == me and k == w.wid for i, t, _e, k in snap[3])
    if w.kind == "D":
        return (snap[0], snap[1]) == me and snap[2] == w.wid
    if w.kind == "R":
        # an odd seq (trying) never equals the even wait number published
        return any((i, t) == me and s == w.wid for i, t, _e, s in snap[5])
    return False


def _holds_read(y: _Wait, path: str, snap: Snapshot) -> bool:
    """``y``'s entry says it holds read sides of ``path`` and the slot counts agree."""
    counts = {slot: (ident, n) for slot, ident, n in snap[4]}
    for slot, n, p in y.holds:
        if p == path and n > 0:
            ident, have = counts.get(slot, (0, 0))
            if ident == y.node[0] and have >= n:
                return True
    return False


def _edge_ok(x: _Wait, y: _Wait, snap: Snapshot) -> bool:
    """In this read, ``x`` waits as published and ``y`` blocks it."""
    if not _in_wait(x, snap):
        return False
    holder = (snap[0], snap[1])
    if x.kind in ("L", "Q"):
        return holder == y.node
    if x.kind == "R":
        return holder == y.node or any((i, t) == y.node for i, t, _e, _k in snap[3])
    if x.kind == "D":
        return _holds_read(y, x.path, snap)
    return False


def _candidates(x: _Wait, snap: Snapshot) -> list[Node]:
    """Threads that, by this read, block ``x`` (to be looked up and checked)."""
    if not _in_wait(x, snap):
        return []
    out: list[Node] = []
    if snap[0] != 0 and x.kind != "D":
        out.append((snap[0], snap[1]))
    if x.kind == "R":
        out += [(i, t) for i, t, _e, _k in snap[3]]
    if x.kind == "D":
        for _slot, ident, _n in snap[4]:
            for y in _published_by(ident):
                if y.reads(x.path) and y.node not in out:
                    out.append(y.node)
    return out


def _search(me: _Wait, p: _Pass) -> list[_Wait] | None:
    """A cycle of waits through ``me`` (depth-first), as the list of its members."""
    known: dict[Node, _Wait] = {me.node: me}
    path: list[_Wait] = [me]
    stack: list[Iterator[Node]] = []

    def successors(x: _Wait) -> Iterator[Node]:
        snap = p.get(x.path, x.kind != "L")
        return iter(_candidates(x, snap) if snap is not None else [])

    stack.append(successors(me))
    while stack:
        nxt = next(stack[-1], None)
        if nxt is None:
            stack.pop()
            path.pop()
            continue
        x = path[-1]
        if nxt == me.node:
            snap = p.get(x.path, x.kind != "L")
            if snap is not None and _edge_ok(x, me, snap):
                return list(path)
            continue
        if nxt in known or len(known) >= _MAX_NODES or len(path) >= _MAX_CYCLE:
            continue
        y = _lookup(nxt)
        if y is None:
            continue
        known[nxt] = y
        snap = p.get(x.path, x.kind != "L")
        if snap is None or not _edge_ok(x, y, snap):
            continue
        path.append(y)
        stack.append(successors(y))
    return None


def _confirm(cycle: list[_Wait], own: dict[str, mmap.mmap]) -> bool:
    """A fresh read of every lock shows every edge of the cycle again."""
    p = _Pass(own)
    n = len(cycle)
    for i, x in enumerate(cycle):
        snap = p.get(x.path, x.kind != "L")
        if snap is None or not _edge_ok(x, cycle[(i + 1) % n], snap):
            return False
    return True


def _misuse(w: _Wait) -> str:
    """Why ``w`` waits for itself through an RWLock it reads, or ""."""
    if w.kind == "R" and w.reads(w.path):
        return "a second read side while a writer waits"
    if w.kind in ("Q", "D") and w.reads(w.path):
        return "the write side of an RWLock it reads (no upgrade)"
    return ""


def _victim(cycle: list[_Wait]) -> Node:
    misused = [w.node for w in cycle if _misuse(w)]
    return max(misused or [w.node for w in cycle])


_WAITS = {"L": "lock", "R": "read", "Q": "write", "D": "write"}


def _waits_text(w: _Wait) -> str:
    if w.kind == "L":
        return repr(w.name)
    if w.kind == "R":
        return f"a read side of {w.name!r}"
    if w.kind == "D":
        return f"the readers of {w.name!r} to leave (holding its write side's turn)"
    return f"the write side of {w.name!r}"


def _holds_text(prev: _Wait, w: _Wait) -> str:
    """What ``w`` holds that ``prev`` (the member before it) waits for."""
    if prev.kind == "L":
        return repr(prev.name)
    if prev.kind == "D":
        return f"a read side of {prev.name!r}"
    if prev.kind == "R" and w.kind == "Q":
        return f"a place in the writers' queue of {prev.name!r}"
    return f"the write side of {prev.name!r}"


def _describe(cycle: list[_Wait], me: Node) -> tuple[str, list[dict[str, object]]]:
    out: list[dict[str, object]] = []
    parts = []
    for i, w in enumerate(cycle):
        prev = cycle[i - 1]
        item: dict[str, object] = {
            "pid": w.node[0] & _PID_MASK,
            "tid": w.node[1],
            "holds": prev.name,
            "waits_for": w.name,
            "wait": _WAITS.get(w.kind, "?"),
            "me": w.node == me,
        }
        out.append(item)
        why = _misuse(w)
        parts.append(
            f"pid {item['pid']} thread {item['tid']}{' (this thread)' if item['me'] else ''} "
            f"holds {_holds_text(prev, w)} and waits for {_waits_text(w)}"
            + (f" ({why})" if why else "")
        )
    return "deadlock: " + "; ".join(parts) + "; this thread backs off", out


def _own_wait(lock: _Waiting, me: Node, mode: str, holds: tuple[Hold, ...]) -> _Wait | None:
    """This thread's wait as the lock word shows it now (None: not visible)."""
    buf = lock._dd_buffer
    try:
        snap: Any = _native.lock_snapshot(buf) if mode == "lock" else _native.rwlock_snapshot(buf)
    except (ValueError, BufferError, OSError):
        return None
    if snap is None:
        return None
    kind, wid = "", -1
    if mode == "lock":
        kind, wid = "L", next((k for i, t, _e, k in snap[2] if (i, t) == me), -1)
    elif mode == "read":
        kind = "R"
        wid = next((s for i, t, _e, s in snap[5] if (i, t) == me and not s & 1), -1)
    else:
        # Queued first: a thread that holds the write side and asks for it
        # again is queued behind itself.
        kind, wid = "Q", next((k for i, t, _e, k in snap[3] if (i, t) == me), -1)
        if wid < 0 and (snap[0], snap[1]) == me:
            kind, wid = "D", snap[2]
    if wid < 0:
        return None
    return _Wait(me, kind, wid, lock._dd_path, lock.name, holds)


def check(lock: _Waiting, tid: int, mode: str = "lock") -> None:
    """Publish this thread's wait and raise DeadlockError if it is a cycle's victim.

    ``mode``: "lock" (a Lock/RLock acquire), "read" or "write" (an RWLock).
    """
    me = (_self_ident(), tid)
    stats["checks"] += 1
    w = _own_wait(lock, me, mode, _read_holds_of(tid))
    if w is None:
        return  # not queued (yet): nothing that could be proven
    with _lock, contextlib.suppress(OSError):
        _publish(w)
    own = {lock._dd_path: lock._dd_buffer}
    cycle = _search(w, _Pass(own))
    if cycle is None:
        return
    # Three reads of every lock in the cycle (the search and two
    # confirmations): the waits seen in the first and the last and the holds
    # in the middle one prove that all members waited and held at one instant.
    if not (_confirm(cycle, own) and _confirm(cycle, own)):
        return
    stats["cycles"] += 1
    if _victim(cycle) != me:
        return  # the victim (it checks too) backs off; we keep waiting
    message, described = _describe(cycle, me)
    stats["raised"] += 1
    err = DeadlockError(message)
    err.cycle = described  # type: ignore[attr-defined]
    raise err


def upgrade_error(lock: _Waiting, tid: int) -> DeadlockError:
    """The DeadlockError of a thread asking for the write side of an RWLock it reads."""
    pid = os.getpid()
    stats["raised"] += 1
    err = DeadlockError(
        f"deadlock: pid {pid} thread {tid} (this thread) holds a read side of "
        f"{lock.name!r} and waits for its write side, i.e. for itself (RWLock has no "
        "upgrade: release the read side first, or take the write side from the start)"
    )
    err.cycle = [  # type: ignore[attr-defined]
        {
            "pid": pid,
            "tid": tid,
            "holds": lock.name,
            "waits_for": lock.name,
            "wait": "write",
            "me": True,
        }
    ]
    return err


def done(tid: int) -> None:
    """The wait of thread ``tid`` of this process ended: withdraw its entry."""
    with _lock:
        _withdraw(_self_ident(), tid)
