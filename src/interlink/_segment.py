"""Named shared-memory objects: create, open, attach, reclaim.

Every interlink object is one file in ``/dev/shm`` (``INTERLINK_SHM_DIR``
overrides it), named ``interlink.<name>`` or, inside a namespace set with
``INTERLINK_NAMESPACE``, ``interlink.<namespace>.<name>``.  Page 0 of the file
is a header (see ``_native/seg.h``): magic, layout version, kind, creator,
mode, size, and an attach table of (pid, process start time) words.

Life cycle, and the locks that make it race-free (``flock`` on the file):

* the creator makes the file with ``O_EXCL``, holds ``LOCK_EX`` while it
  formats and attaches, then stores the magic last;
* an opener holds ``LOCK_SH`` while it validates and attaches, then checks
  that the name still refers to the inode it locked (a reclaimer may have
  unlinked it meanwhile: then it starts over);
* whoever finds no live user left -- the last handle to close, an opener that
  finds only dead users, ``interlink gc`` -- takes ``LOCK_EX``, checks again,
  and unlinks the name.

So an object lives exactly as long as some live process uses it, crashes
included, and nobody ever attaches to an object that is being removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import pwd
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path

from . import _native
from .errors import AccessDenied, AlreadyExists, Corrupt, Incompatible, NotFound

__all__ = [
    "KIND_NAMES",
    "MAX_NAME_BYTES",
    "ObjectInfo",
    "Segment",
    "UserInfo",
    "gc_objects",
    "list_objects",
    "shm_dir",
    "validate_name",
]

MAX_NAME_BYTES = 200
KIND_NAMES: dict[int, str] = {
    _native.KIND_CHANNEL: "channel",
    _native.KIND_LOCK: "lock",
    _native.KIND_RLOCK: "rlock",
    _native.KIND_SEMAPHORE: "semaphore",
    _native.KIND_BOUNDED_SEMAPHORE: "bounded-semaphore",
    _native.KIND_EVENT: "event",
    _native.KIND_CONDITION: "condition",
    _native.KIND_BARRIER: "barrier",
    _native.KIND_RWLOCK: "rwlock",
    _native.KIND_QUEUE: "queue",
    _native.KIND_TOPIC: "topic",
}

# magic, layout, kind, creator uid, creator pid, mode, nslots, total size,
# created (ns since the epoch), key, kind area size
_HEADER = struct.Struct("<QIIIIIIQQQQ")
_HEADER_SIZE: int = _native.SEG_HEADER_SIZE


@dataclass(frozen=True)
class _Header:
    magic: int
    layout: int
    kind: int
    uid: int
    pid: int
    mode: int
    nslots: int
    total_size: int
    created_ns: int
    key: int
    kind_size: int


def shm_dir() -> Path:
    """The directory that holds interlink objects."""
    return Path(os.environ.get("INTERLINK_SHM_DIR", "/dev/shm"))


def _prefix() -> str:
    ns = os.environ.get("INTERLINK_NAMESPACE", "")
    return f"interlink.{ns}." if ns else "interlink."


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise ValueError.

    Valid: a non-empty str of at most 200 UTF-8 bytes without '/', NUL or '..'.
    """
    if not isinstance(name, str):
        raise TypeError(f"object name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("object name must not be empty")
    if "/" in name or "\0" in name:
        raise ValueError(f"object name must not contain '/' or NUL: {name!r}")
    if ".." in name:
        raise ValueError(f"object name must not contain '..': {name!r}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"object name is longer than {MAX_NAME_BYTES} bytes")
    return name


def _path_for(name: str) -> Path:
    return shm_dir() / (_prefix() + name)


def _anonymous_name() -> str:
    return f"anon-{os.getpid()}-{secrets.token_hex(6)}"


def _read_header(mm: mmap.mmap) -> _Header:
    return _Header(*_HEADER.unpack_from(mm, 0))


def _lock(fd: int, how: int) -> None:
    fcntl.flock(fd, how)


def _same_inode(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return st.st_ino == mine.st_ino and st.st_dev == mine.st_dev


def _live_users(mm: mmap.mmap) -> int:
    return sum(1 for user in _native.seg_users(mm) if user[4])


class _Retry(Exception):
    """The name changed under us (reclaimed or recreated): start over."""


class Segment:
    """One process's mapping of a named object.

    Created only through :meth:`open`; ``close`` unmaps this mapping and
    removes the object if no live user remains; ``unlink`` removes the name.
    """

    def __init__(
        self, name: str, path: Path, fd: int, mm: mmap.mmap, header: _Header, created: bool
    ) -> None:
        self.name = name
        self.path = path
        self.fd = fd
        self.mm = mm
        self.kind: int = header.kind
        self.mode: int = header.mode
        self.size: int = header.total_size
        self.key: int = header.key
        self.created = created
        self.closed = False

    # ------------------------------------------------------------------ open
    @classmethod
    def open(
        cls,
        name: str | None,
        kind: int,
        *,
        size: int,
        layout: int,
        create: bool | None = None,
        mode: int = 0o600,
        kind_size: int = 0,
        format: Callable[[mmap.mmap, int], None],
        attach: Callable[[mmap.mmap], None],
    ) -> Segment:
        """Create or open the object ``name`` of ``kind``.

        ``create=None`` opens the object or creates it if missing; ``True``
        requires creating it (AlreadyExists if a live one exists); ``False``
        requires it to exist (NotFound).  ``name=None`` creates an anonymous
        object.  ``format(mm, key)`` formats the kind's area of a new object;
        ``attach(mm)`` attaches the caller, under the lock, for new and
        existing objects alike.  Raises NotFound, AlreadyExists, AccessDenied,
        Incompatible or Corrupt; nothing is left behind on failure.
        """
        if name is None:
            if create is False:
                raise ValueError("an anonymous object can only be created")
            _sweep_stale_anonymous_once()
            name = _anonymous_name()
            create = True
        validate_name(name)
        if not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be within 0o000..0o777, not {mode:#o}")
        path = _path_for(name)
        for _ in range(100):
            try:
                if create is not False:
                    seg = cls._try_create(
                        name, path, kind, size, layout, mode, kind_size, format, attach
                    )
                    if seg is not None:
                        return seg
                    if create is True and cls._reclaim_if_stale(path) is False:
                        raise AlreadyExists(f"interlink object {name!r} already exists")
                    if create is True:
                        continue
                seg = cls._try_open(name, path, kind, layout, attach)
                if seg is not None:
                    return seg
                if create is False:
                    raise NotFound(f"no interlink object named {name!r}")
            except _Retry:
                continue
        raise NotFound(f"interlink object {name!r} kept changing while being opened")

    @classmethod
    def _try_create(
        cls,
        name: str,
        path: Path,
        kind: int,
        size: int,
        layout: int,
        mode: int,
        kind_size: int,
        format: Callable[[mmap.mmap, int], None],
        attach: Callable[[mmap.mmap], None],
    ) -> Segment | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            return None
        except PermissionError as exc:
            raise AccessDenied(f"cannot create {path}: {exc.strerror}") from None
        mm: mmap.mmap | None = None
        try:
            _lock(fd, fcntl.LOCK_EX)
            if not _same_inode(fd, path):
                # An opener took our empty file for an abandoned one and removed
                # it before we could lock it: start over.
                os.close(fd)
                raise _Retry
            os.fchmod(fd, mode)  # the umask must not narrow what the caller asked for
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            key = int.from_bytes(secrets.token_bytes(8), "little") | 1
            header = _Header(
                magic=0,
                layout=layout,
                kind=kind,
                uid=os.geteuid(),
                pid=os.getpid(),
                mode=mode,
                nslots=_native.SEG_SLOTS,
                total_size=size,
                created_ns=time.time_ns(),
                key=key,
                kind_size=kind_size,
            )
            _HEADER.pack_into(mm, 0, *astuple(header))
            format(mm, key)
            attach(mm)
            _native.seg_publish(mm)
            _lock(fd, fcntl.LOCK_UN)
            return cls(name, path, fd, mm, header, created=True)
        except _Retry:
            raise
        except BaseException:
            # Leave nothing half-made behind.
            try:
                if _same_inode(fd, path):
                    os.unlink(path)
            finally:
                if mm is not None:
                    with contextlib.suppress(BufferError):
                        mm.close()
                os.close(fd)
            raise

    @classmethod
    def _try_open(
        cls,
        name: str,
        path: Path,
        kind: int,
        layout: int,
        attach: Callable[[mmap.mmap], None],
    ) -> Segment | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise AccessDenied(
                f"cannot open interlink object {name!r}: {exc.strerror} "
                f"(owner uid {_owner_uid(path)}, this process uid {os.geteuid()})"
            ) from None
        mm: mmap.mmap | None = None
        ok = False
        try:
            _lock(fd, fcntl.LOCK_SH)
            if not _same_inode(fd, path):
                raise _Retry
            size = os.fstat(fd).st_size
            if size == 0:
                # Its creator died before formatting it: remove and start over.
                cls._reclaim_fd(fd, path, unformatted=True)
                raise _Retry
            if size < _HEADER_SIZE:
                raise Corrupt(f"interlink object {name!r} is truncated ({size} bytes)")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            magic = _native.seg_magic(mm)
            if magic == 0:
                mm.close()
                mm = None
                cls._reclaim_fd(fd, path, unformatted=True)
                raise _Retry
            header = _read_header(mm)
            _check_header(name, header, size, kind, layout)
            if _live_users(mm) == 0:
                # Every user has gone (crash included): the object is garbage.
                mm.close()
                mm = None
                cls._reclaim_fd(fd, path, unformatted=False)
                raise _Retry
            attach(mm)
            _lock(fd, fcntl.LOCK_UN)
            ok = True
            return cls(name, path, fd, mm, header, created=False)
        finally:
            if not ok:
                if mm is not None:
                    with contextlib.suppress(BufferError):
                        mm.close()
                os.close(fd)

    # --------------------------------------------------------------- reclaim
    @staticmethod
    def _reclaim_fd(fd: int, path: Path, *, unformatted: bool) -> bool:
        """Unlink path if it still names fd's inode and, checked again under the
        exclusive lock, is still garbage: never formatted (``unformatted``), or
        formatted with no live user left."""
        _lock(fd, fcntl.LOCK_UN)
        _lock(fd, fcntl.LOCK_EX)
        try:
            if not _same_inode(fd, path):
                return False
            size = os.fstat(fd).st_size
            if size >= _HEADER_SIZE:
                with mmap.mmap(fd, _HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ) as hm:
                    formatted = _magic_ro(hm) != 0
                    if formatted and (unformatted or _live_users_ro(hm) > 0):
                        return False  # its creator finished meanwhile, or a user came
            elif size != 0:
                return False  # damaged: only `interlink gc --corrupt` removes it
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            return True
        finally:
            _lock(fd, fcntl.LOCK_UN)

    @classmethod
    def _reclaim_if_stale(cls, path: Path) -> bool | None:
        """Remove the object at path if only dead processes held it.

        True: removed; False: it is alive; None: it vanished meanwhile.
        """
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except PermissionError:
            return False
        try:
            _lock(fd, fcntl.LOCK_SH)
            size = os.fstat(fd).st_size
            formatted = False
            if size >= _HEADER_SIZE:
                with mmap.mmap(fd, _HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ) as hm:
                    formatted = _magic_ro(hm) != 0
                    if formatted and _live_users_ro(hm) > 0:
                        return False
            elif size != 0:
                return False  # damaged: leave it for `interlink gc --corrupt`
            return cls._reclaim_fd(fd, path, unformatted=not formatted) or None
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- close
    def users(self) -> list[UserInfo]:
        """The processes attached to this object."""
        return _users_of(self.mm)

    def close(self) -> None:
        """Unmap; remove the object if no live user remains.  Idempotent.

        The caller must have detached itself from the attach table first.
        """
        if self.closed:
            return
        self.closed = True
        try:
            if _same_inode(self.fd, self.path) and _live_users(self.mm) == 0:
                self._reclaim_fd(self.fd, self.path, unformatted=False)
        finally:
            # Views may still point into it: then it unmaps when the last goes.
            with contextlib.suppress(BufferError):
                self.mm.close()
            os.close(self.fd)

    def unlink(self) -> None:
        """Remove the name now; users already attached keep their mapping."""
        try:
            if _same_inode(self.fd, self.path):
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def _owner_uid(path: Path) -> str:
    try:
        return str(os.stat(path).st_uid)
    except OSError:
        return "?"


def _check_header(name: str, h: _Header, size: int, kind: int, layout: int) -> None:
    if h.magic != _native.SEG_MAGIC:
        raise Corrupt(f"interlink object {name!r} has a damaged header (bad magic)")
    if h.kind != kind:
        raise Incompatible(
            f"interlink object {name!r} is a {KIND_NAMES.get(h.kind, f'kind {h.kind}')}, "
            f"not a {KIND_NAMES.get(kind, f'kind {kind}')}"
        )
    if h.layout != layout:
        raise Incompatible(
            f"interlink object {name!r} has layout version {h.layout}; "
            f"this interlink reads version {layout}"
        )
    if h.total_size != size:
        raise Corrupt(
            f"interlink object {name!r} is {size} bytes but its header says {h.total_size}"
        )
    if h.nslots != _native.SEG_SLOTS:
        raise Corrupt(f"interlink object {name!r} has a damaged header (slot count)")


# ---------------------------------------------------------------------------
# Listing and garbage collection (interlink ls / gc)


@dataclass(frozen=True)
class UserInfo:
    """One attached process."""

    pid: int
    alive: bool
    sender: bool


@dataclass(frozen=True)
class ObjectInfo:
    """What ``interlink ls`` shows of one object."""

    name: str
    path: Path
    kind: str
    size: int
    mode: int
    uid: int
    owner: str
    state: str  # "ok", "stale" (only dead users), "abandoned" (never finished), "corrupt"
    users: tuple[UserInfo, ...] = field(default=())
    detail: str = ""
    # Locks, RLocks, RWLocks and semaphores only (None for other kinds): the
    # pids holding it (a semaphore's: those with units charged to them; an
    # RWLock's: its writer, or its readers) and how many threads wait for it
    # (an RWLock's: waiting readers, queued writers, and a writer that holds
    # the write side's turn but waits for readers to leave).
    holders: tuple[int, ...] | None = None
    waiters: int | None = None
    # RWLocks only: the pid holding the write side, and the pids holding
    # read sides.
    writer: int | None = None
    readers: tuple[int, ...] | None = None


def _magic_ro(mm: mmap.mmap) -> int:
    return int.from_bytes(mm[0:8], "little")


def _users_of(mm: mmap.mmap) -> list[UserInfo]:
    return [
        UserInfo(pid=pid, alive=bool(alive), sender=bool(roles & _native.ROLE_SENDER))
        for _slot, pid, _ident, roles, alive in _native.seg_users(mm)
    ]


def _live_users_ro(mm: mmap.mmap) -> int:
    # seg_users needs a writable buffer; copy page 0 into one (a snapshot suffices).
    snapshot = bytearray(mm[:_HEADER_SIZE])
    return sum(1 for user in _native.seg_users(snapshot) if user[4])


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _inspect(path: Path) -> ObjectInfo | None:
    name = path.name[len(_prefix()) :]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    base = ObjectInfo(
        name=name,
        path=path,
        kind="?",
        size=st.st_size,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        owner=_owner_name(st.st_uid),
        state="ok",
    )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except PermissionError:
        return replace(base, kind="?", state="ok", detail="no permission to read")
    try:
        if st.st_size == 0:
            return replace(base, kind="?", state="abandoned")
        if st.st_size < _HEADER_SIZE:
            return replace(base, kind="?", state="corrupt", detail="truncated")
        with mmap.mmap(fd, _HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ) as hm:
            page = bytearray(hm[:_HEADER_SIZE])
        h = _Header(*_HEADER.unpack_from(page, 0))
        kind = KIND_NAMES.get(h.kind, f"kind-{h.kind}")
        if h.magic == 0:
            return replace(base, kind=kind, state="abandoned")
        if h.magic != _native.SEG_MAGIC:
            return replace(base, kind="?", state="corrupt", detail="bad magic")
        if h.total_size != st.st_size:
            return replace(base, kind=kind, state="corrupt", detail="size mismatch")
        users = tuple(_users_of_snapshot(page))
        state = "ok" if any(u.alive for u in users) else "stale"
        info = replace(base, kind=kind, state=state, users=users)
        return _with_sync_state(info, fd, h.kind, page)
    finally:
        os.close(fd)


# The il_sem fields `interlink ls` reads (lockword.h), as offsets into the kind
# area: held[slot] and slp[slot] (sleepers per attach slot).
_IDENT_PID_MASK = (1 << 22) - 1  # IL_IDENT_PID_BITS (proc.h)


def _with_rwlock_state(info: ObjectInfo, fd: int) -> ObjectInfo:
    """Add writer, reader pids and the waiter count of an rwlock (a snapshot)."""
    size = _native.RWLOCK_SEGMENT_SIZE
    if info.size < size:
        return info
    try:
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            snap = _native.rwlock_snapshot(mm)
    except (OSError, ValueError):
        return info
    if snap is None:
        return info
    writer_ident, _tid, _turn, queued, reading, _waits, waiting_readers = snap
    readers = tuple(dict.fromkeys(ident & _IDENT_PID_MASK for _slot, ident, _n in reading if ident))
    # A writer holding the turn while read sides are held is still draining
    # them: it waits, it does not hold yet.
    draining = bool(writer_ident) and bool(reading)
    writer = writer_ident & _IDENT_PID_MASK if writer_ident and not draining else None
    return replace(
        info,
        holders=(writer,) if writer is not None else readers,
        waiters=waiting_readers + len(queued) + int(draining),
        writer=writer,
        readers=readers,
    )


def _with_sync_state(info: ObjectInfo, fd: int, kind: int, page: bytearray) -> ObjectInfo:
    """Add holder pids and the waiter count of a lock, rlock, rwlock or semaphore,
    the qsize and maxsize of a queue (a snapshot)."""
    if kind == _native.KIND_RWLOCK:
        return _with_rwlock_state(info, fd)
    if kind == _native.KIND_QUEUE:
        return _with_queue_state(info, fd, page)
    if kind == _native.KIND_TOPIC:
        return _with_topic_state(info, fd)
    is_lock = kind in (_native.KIND_LOCK, _native.KIND_RLOCK)
    if is_lock:
        size = _native.LOCK_SEGMENT_SIZE
    elif kind in (_native.KIND_SEMAPHORE, _native.KIND_BOUNDED_SEMAPHORE):
        size = _native.SEM_SEGMENT_SIZE
    else:
        return info
    if info.size < size:
        return info
    try:
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            if is_lock:
                snap = _native.lock_snapshot(mm)
                if snap is None:
                    return info
                holder_ident, _tid, queued = snap
                holders = () if holder_ident == 0 else (holder_ident & _IDENT_PID_MASK,)
                return replace(info, holders=holders, waiters=len(queued))
            sem = _native.sem_snapshot(mm)
            if sem is None:
                return info
            held, slp = sem
    except (OSError, ValueError):
        return info
    users = _native.seg_users(page)
    pids = {slot: pid for slot, pid, _ident, _roles, _alive in users}
    live = {slot for slot, _pid, _ident, _roles, alive in users if alive}
    sem_holders = tuple(
        dict.fromkeys(pids[slot] for slot, n in enumerate(held) if n and slot in pids)
    )
    # Sleepers of dead processes stay counted until some process recovers
    # them: count the live slots' only.
    sleepers = sum(n for slot, n in enumerate(slp) if slot in live)
    return replace(info, holders=sem_holders, waiters=sleepers)


def _with_queue_state(info: ObjectInfo, fd: int, page: bytearray) -> ObjectInfo:
    """Add "qsize N, maxsize M" (a snapshot) to a queue's detail."""
    # maxsize as given (0: unbounded) is in the queue's descriptor (_queue.py)
    (maxsize,) = struct.unpack_from("<Q", page, _native.SEG_QUEUE_DESC + 16)
    try:
        with mmap.mmap(fd, info.size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            qsize = _native.queue_snapshot(mm)
    except (OSError, ValueError):
        return info
    if qsize is None:
        return replace(info, detail="queue area not valid")
    return replace(info, detail=f"qsize {qsize}, maxsize {maxsize or 'unbounded'}")


def _with_topic_state(info: ObjectInfo, fd: int) -> ObjectInfo:
    """Add "policy P, publishers N, subscribers M" (a snapshot) to a topic's detail."""
    try:
        with mmap.mmap(fd, info.size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            snap = _native.topic_snapshot(mm)
    except (OSError, ValueError):
        return info
    if snap is None:
        return replace(info, detail="topic area not valid")
    policy, pubs, subs, _ring = snap
    name = "block" if policy == _native.TOPIC_BLOCK else "drop"
    return replace(info, detail=f"policy {name}, publishers {pubs}, subscribers {subs}")


def _users_of_snapshot(page: bytearray) -> Iterator[UserInfo]:
    for _slot, pid, _ident, roles, alive in _native.seg_users(page):
        yield UserInfo(pid=pid, alive=bool(alive), sender=bool(roles & _native.ROLE_SENDER))


def list_objects() -> list[ObjectInfo]:
    """Every interlink object in the current namespace, sorted by name."""
    prefix = _prefix()
    try:
        entries = sorted(p for p in shm_dir().iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []
    found = []
    for path in entries:
        info = _inspect(path)
        if info is not None:
            found.append(info)
    return found


def gc_objects(*, dry_run: bool = False, corrupt: bool = False) -> list[ObjectInfo]:
    """Remove objects that only dead processes held (and, with corrupt=True,
    damaged ones).  Returns what was (or, with dry_run, would be) removed."""
    removed = []
    for info in list_objects():
        wanted = info.state in ("stale", "abandoned") or (corrupt and info.state == "corrupt")
        if not wanted:
            continue
        if dry_run:
            removed.append(info)
            continue
        if info.state == "corrupt":
            try:
                os.unlink(info.path)
                removed.append(info)
            except FileNotFoundError:
                pass
            continue
        if info.state == "abandoned" and _creation_in_progress(info.path):
            continue
        if Segment._reclaim_if_stale(info.path):
            removed.append(info)
    return removed


_swept_pids: set[int] = set()


def _sweep_stale_anonymous_once() -> None:
    """Remove anonymous objects of this namespace whose users all died.

    Nobody reopens an anonymous object by name, so without this only
    ``interlink gc`` would remove one left by a crashed process.  Runs once
    per process (and again in a forked child), at its first anonymous object.
    """
    pid = os.getpid()
    if pid in _swept_pids:
        return
    _swept_pids.add(pid)
    prefix = _prefix() + "anon-"
    try:
        candidates = [p for p in shm_dir().iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for path in candidates:
        with contextlib.suppress(OSError, Corrupt):
            if path.stat().st_uid == os.geteuid():
                Segment._reclaim_if_stale(path)


def _creation_in_progress(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)
    return False
