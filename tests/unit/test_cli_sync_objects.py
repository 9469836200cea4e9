"""`interlink ls` shows who holds a lock or semaphore and how many wait for it.

A child interpreter takes the object and stays inside; a thread of the test
process then blocks on it, so the listing has a real holder pid (another
process) and a real waiter.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

import interlink as il
from interlink.cli import main

HOLDER = textwrap.dedent(
    """
    import sys, time
    import interlink as il
    kind, name = sys.argv[1], sys.argv[2]
    if kind == "semaphore":
        obj = il.Semaphore(name, 2, create=False)
        obj.acquire()
        obj.acquire()
    else:
        obj = getattr(il, kind)(name, create=False)
        obj.acquire()
    sys.stdout.write("holding\\n")
    sys.stdout.flush()
    sys.stdin.readline()
    obj.release(2) if kind == "semaphore" else obj.release()
    obj.close()
    """
)


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _entry(name: str) -> dict[str, object]:
    entries = json.loads(_run("ls", "--json"))
    found = [e for e in entries if e["name"] == name]
    assert len(found) == 1, entries
    entry = found[0]
    assert isinstance(entry, dict)
    return entry


def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def held(request: pytest.FixtureRequest, name: str) -> Iterator[tuple[str, int, str]]:
    """(name, holder pid, kind): the object is held by a child and one thread here waits."""
    kind: str = request.param
    obj: il.Lock | il.RLock | il.Semaphore
    obj = il.Semaphore(name, 2) if kind == "semaphore" else getattr(il, kind)(name)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kind, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    waiter = threading.Thread(target=lambda: obj.acquire(timeout=30) and obj.release())
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == b"holding\n"
        waiter.start()
        _until(lambda: _entry(name)["waiters"] == 1)
        yield name, proc.pid, "semaphore" if kind == "semaphore" else kind.lower()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        waiter.join(30)
        assert not waiter.is_alive()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        waiter.join(30)
        obj.unlink()
        obj.close()


@pytest.mark.parametrize("held", ["Lock", "RLock", "semaphore"], indirect=True)
def test_ls_json_shows_holder_and_waiters(held: tuple[str, int, str]) -> None:
    name, pid, kind = held
    entry = _entry(name)
    assert entry["kind"] == kind
    assert entry["holders"] == [pid]
    assert entry["waiters"] == 1


@pytest.mark.parametrize("held", ["Lock"], indirect=True)
def test_ls_table_shows_holder_and_waiters(held: tuple[str, int, str]) -> None:
    name, pid, _kind = held
    line = next(ln for ln in _run("ls").splitlines() if name in ln)
    cells = [c.strip() for c in line.split("\u2502")]
    assert cells[-3:] == [str(pid), "1", ""]


def test_ls_free_lock_and_other_kinds(name: str) -> None:
    lock = il.Lock(name)
    ev = il.Event(f"{name}.ev")
    try:
        entry = _entry(name)
        assert entry["holders"] == [] and entry["waiters"] == 0
        assert "free" in next(ln for ln in _run("ls").splitlines() if name in ln)
        other = _entry(f"{name}.ev")
        assert other["holders"] is None and other["waiters"] is None
    finally:
        lock.unlink()
        ev.unlink()
        lock.close()
        ev.close()


RW_HOLDER = textwrap.dedent(
    """
    import sys
    import interlink as il
    side, name = sys.argv[1], sys.argv[2]
    rw = il.RWLock(name, create=False)
    (rw.acquire_read if side == "read" else rw.acquire_write)()
    sys.stdout.write("holding\\n")
    sys.stdout.flush()
    sys.stdin.readline()
    (rw.release_read if side == "read" else rw.release_write)()
    rw.close()
    """
)


@pytest.mark.parametrize("side", ["read", "write"])
def test_ls_rwlock_writer_readers_and_waiters(name: str, side: str) -> None:
    """A child holds one side; here one thread waits for the other side (and,
    for a read hold, this process reads too): ls names the holders and counts
    the waiter."""
    rw = il.RWLock(name)
    mine = il.RWLock(name, create=False)
    proc = subprocess.Popen(
        [sys.executable, "-c", RW_HOLDER, side, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def waiter() -> None:
        if side == "read":  # a writer waits for the readers to leave
            if rw.acquire_write(timeout=30):
                rw.release_write()
        elif rw.acquire_read(timeout=30):
            rw.release_read()

    thread = threading.Thread(target=waiter)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == b"holding\n"
        if side == "read":
            assert mine.acquire_read(timeout=10)
        thread.start()
        _until(lambda: _entry(name)["waiters"] == 1)
        entry = _entry(name)
        assert entry["kind"] == "rwlock"
        if side == "read":
            assert entry["writer"] is None
            assert sorted(entry["readers"]) == sorted([proc.pid, os.getpid()])  # type: ignore[type-var]
            assert sorted(entry["holders"]) == sorted([proc.pid, os.getpid()])  # type: ignore[type-var]
        else:
            assert entry["writer"] == proc.pid
            assert entry["readers"] == [] and entry["holders"] == [proc.pid]
        line = next(ln for ln in _run("ls").splitlines() if name in ln)
        assert f"({side})" in line and str(proc.pid) in line
        if side == "read":
            mine.release_read()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        thread.join(30)
        assert not thread.is_alive()
        proc.wait(30)
        entry = _entry(name)
        assert entry["holders"] == [] and entry["waiters"] == 0
        assert entry["writer"] is None and entry["readers"] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        if thread.ident is not None:
            thread.join(30)
        rw.unlink()
        rw.close()
        mine.close()


LONG_WAITER = textwrap.dedent(
    """
    import sys
    import interlink as il
    lock = il.Lock(sys.argv[1], create=False)
    sys.stdout.write("waiting\\n")
    sys.stdout.flush()
    lock.acquire(timeout=60)
    """
)


def test_gc_removes_dead_processes_deadlock_entries(name: str) -> None:
    """A process killed during a long lock wait leaves its deadlock-registry
    entry; `interlink gc` removes it (and keeps the entries of live ones)."""
    from interlink import _deadlock

    lock = il.Lock(name)
    lock.acquire()
    proc = subprocess.Popen(
        [sys.executable, "-c", LONG_WAITER, name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    registry = _deadlock._registry()
    live = _deadlock._entry_path(_deadlock._self_ident(), 999999)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == b"waiting\n"

        def child_entries() -> list[str]:
            try:
                return [
                    n
                    for n in os.listdir(registry)
                    if not n.endswith(".tmp")
                    and (int(n.split(".")[0], 16) & ((1 << 22) - 1)) == proc.pid
                ]
            except FileNotFoundError:
                return []

        _until(lambda: len(child_entries()) == 1)  # past CHECK_AFTER: published
        # An entry of a live process (this one) must survive gc.
        live.write_text("not a real wait\n")
        proc.kill()
        proc.wait(30)
        (entry,) = child_entries()
        # (Other tests of this session may have left entries of killed children too.)
        assert registry / entry in _deadlock.gc_registry(dry_run=True)
        assert "would remove" in _run("gc", "--dry-run")
        assert child_entries() == [entry]
        out = _run("gc")
        assert "deadlock-registry entr" in out and "of dead processes" in out
        assert child_entries() == []
        assert live.exists()
        assert "deadlock-registry" not in _run("gc")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        live.unlink(missing_ok=True)
        lock.release()
        lock.unlink()
        lock.close()
