"""Sleepers killed asleep: the shared sleeper counts come back to the live ones.

A process killed (SIGKILL) while blocked in Semaphore.acquire, Event.wait or
RWLock.acquire_read used to leave the shared count of sleepers (what a release
reads to decide on a wake syscall, and what statistics() and `interlink ls`
report as waiters) one too high for good.  The counts are now kept per attach
slot, and recovery takes a dead slot's count out.
"""

from __future__ import annotations

import mmap
import os
import struct

import pytest
from mp_helpers import Child, Spawn, blocked_in_futex, wait_until

import interlink as il
from interlink import _native, _segment

pytestmark = pytest.mark.timeout(120)

BLOCK = """
name, kind = sys.argv[1], sys.argv[2]
if kind == "sem":
    obj = il.Semaphore(name, create=False)
    say("blocking")
    assert obj.acquire(timeout=60)
elif kind == "event":
    obj = il.Event(name, create=False)
    say("blocking")
    assert obj.wait(timeout=60)
else:
    obj = il.RWLock(name, create=False)
    say("blocking")
    assert obj.acquire_read(timeout=60)
say("acquired")
hear()
"""

SLEEPERS = 3


def _blocked(spawn: Spawn, name: str, kind: str, n: int) -> list[Child]:
    children = [spawn(BLOCK, name, kind) for _ in range(n)]
    for child in children:
        child.expect("blocking")
    for child in children:
        wait_until(lambda c=child: blocked_in_futex(c.pid), 10, f"child {child.pid} asleep")
    return children


def _kill_all(children: list[Child]) -> None:
    for child in children:
        child.kill()
    for child in children:
        child.wait()


def _ls_waiters(name: str) -> int | None:
    infos = [i for i in _segment.list_objects() if i.name == name]
    assert len(infos) == 1
    return infos[0].waiters


def test_semaphore_waiters_killed_asleep(spawn: Spawn, name: str) -> None:
    sem = il.Semaphore(name, 0)
    try:
        children = _blocked(spawn, name, "sem", SLEEPERS)
        wait_until(lambda: sem.statistics().waiters == SLEEPERS, 10, "all counted asleep")
        assert _ls_waiters(name) == SLEEPERS
        _kill_all(children)
        # ls counts live slots only, at once; statistics() recovers first.
        assert _ls_waiters(name) == 0
        wait_until(lambda: sem.statistics().waiters == 0, 5, "dead sleepers taken out")
        # Wake-ups are not lost: a new sleeper is woken by the next release.
        (child,) = _blocked(spawn, name, "sem", 1)
        wait_until(lambda: sem.statistics().waiters == 1, 10, "the new one counted asleep")
        sem.release()
        child.expect("acquired")
        wait_until(lambda: sem.statistics().waiters == 0, 5, "the woken one gone")
    finally:
        sem.close()


def _event_sleepers(name: str) -> int:
    """The event's shared sleepers count (il_event.sleepers, eventword.h)."""
    fd = os.open(_segment._path_for(name), os.O_RDONLY)
    try:
        with mmap.mmap(fd, _native.EVENT_SEGMENT_SIZE, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            (n,) = struct.unpack_from("<I", mm, _segment._HEADER_SIZE + 4)
            return int(n)
    finally:
        os.close(fd)


def test_event_waiters_killed_asleep(spawn: Spawn, name: str) -> None:
    ev = il.Event(name)
    try:
        children = _blocked(spawn, name, "event", SLEEPERS)
        wait_until(lambda: _event_sleepers(name) == SLEEPERS, 10, "all counted asleep")
        _kill_all(children)
        assert _event_sleepers(name) == SLEEPERS  # until some process recovers
        # A live waiter recovers within about a second of waiting.
        assert ev.wait(timeout=1.5) is False
        assert _event_sleepers(name) == 0
        (child,) = _blocked(spawn, name, "event", 1)
        wait_until(lambda: _event_sleepers(name) == 1, 10, "the new one counted asleep")
        ev.set()
        child.expect("acquired")
        assert _event_sleepers(name) == 0
        # _reclaim (run by close()) recovers as well, without a wait.
        ev.clear()
        children = _blocked(spawn, name, "event", 2)
        wait_until(lambda: _event_sleepers(name) == 2, 10, "both counted asleep")
        _kill_all(children)
        ev._reclaim()
        assert _event_sleepers(name) == 0
    finally:
        ev.close()


def test_rwlock_readers_killed_asleep(spawn: Spawn, name: str) -> None:
    rw = il.RWLock(name)
    try:
        assert rw.acquire_write(timeout=5)
        children = _blocked(spawn, name, "rwlock", SLEEPERS)
        wait_until(lambda: rw.statistics().waiting_readers == SLEEPERS, 10, "all counted waiting")
        _kill_all(children)
        rw._reclaim()
        assert rw.statistics().waiting_readers == 0
        (child,) = _blocked(spawn, name, "rwlock", 1)
        rw.release_write()
        child.expect("acquired")
    finally:
        rw.close()
