"""`interlink ls` and `interlink gc` against real channels.

A stale object is made the honest way: a child interpreter creates a channel,
sends a message, and is killed with SIGKILL, so its attach slot names a dead
process.  Everything happens in the session's namespace (tests/conftest.py),
so objects of other test runs are never listed or removed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import interlink as il
from interlink import _segment
from interlink.cli import main
from interlink.cli.objects import human_size

CHILD = textwrap.dedent(
    """
    import sys, time
    import interlink as il
    ch = il.Channel(sys.argv[1], capacity=4096)
    ch.send(b"left behind")
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    time.sleep(120)
    """
)


def _wait_line(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"child {proc.pid} said nothing within {timeout} s")
    return proc.stdout.readline().decode().strip()


@pytest.fixture
def stale(name: str) -> Iterator[tuple[str, int]]:
    """A channel whose only user was killed with SIGKILL: (name, dead pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_line(proc) == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        yield name, proc.pid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        _segment._path_for(name).unlink(missing_ok=True)


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _entry(name: str) -> dict[str, object] | None:
    entries = json.loads(_run("ls", "--json"))
    assert isinstance(entries, list)
    found = [e for e in entries if e["name"] == name]
    assert len(found) <= 1
    return found[0] if found else None


def test_ls_shows_a_stale_channel(stale: tuple[str, int]) -> None:
    name, pid = stale
    out = _run("ls")
    line = next(ln for ln in out.splitlines() if name in ln)
    assert "channel" in line
    assert "stale" in line
    assert f"{pid} (dead)" in line
    assert "0600" in line
    assert "12.0 KiB" in line  # 4 KiB header + 4 KiB control page + 4 KiB ring


def test_ls_json_describes_a_stale_channel(stale: tuple[str, int]) -> None:
    name, pid = stale
    entry = _entry(name)
    assert entry is not None
    assert entry["kind"] == "channel"
    assert entry["state"] == "stale"
    assert entry["mode"] == "0600"
    assert entry["size"] == 3 * 4096
    assert entry["uid"] == os.geteuid()
    assert Path(str(entry["path"])) == _segment._path_for(name)
    assert entry["users"] == [{"pid": pid, "alive": False, "sender": True}]


def test_gc_dry_run_lists_and_keeps(stale: tuple[str, int]) -> None:
    name, pid = stale
    out = _run("gc", "--dry-run")
    assert f"would remove {name} " in out
    assert f"{pid} (dead)" in out
    assert _segment._path_for(name).exists()
    entry = _entry(name)
    assert entry is not None and entry["state"] == "stale"


def test_gc_removes_stale(stale: tuple[str, int]) -> None:
    name, _pid = stale
    out = _run("gc")
    assert f"removed {name} " in out
    assert not _segment._path_for(name).exists()
    assert _entry(name) is None
    assert name not in _run("ls")
    # and the name is free for a new channel
    with il.Channel(name, capacity=4096, create=True) as ch:
        ch.send(b"new")
        assert ch.recv_bytes(timeout=5) == b"new"


def test_live_channel_is_ok_and_kept(name: str) -> None:
    with il.Channel(name, capacity=4096) as ch:
        entry = _entry(name)
        assert entry is not None
        assert entry["state"] == "ok"
        users = entry["users"]
        assert isinstance(users, list)
        assert {"pid": os.getpid(), "alive": True, "sender": False} in users
        line = next(ln for ln in _run("ls").splitlines() if name in ln)
        assert f"{os.getpid()} (alive)" in line
        assert "ok" in line
        out = _run("gc")
        assert name not in out
        out = _run("gc", "--corrupt")
        assert name not in out
        assert _segment._path_for(name).exists()
        ch.send(b"still here")
        assert ch.recv_bytes(timeout=5) == b"still here"


def test_gc_removes_corrupt_only_when_asked(name: str) -> None:
    path = _segment._path_for(name)
    path.write_bytes(b"\x00" * 100)  # shorter than a header: damaged
    try:
        entry = _entry(name)
        assert entry is not None
        assert entry["state"] == "corrupt"
        assert entry["kind"] == "?"
        out = _run("gc")
        assert f"removed {name}" not in out
        assert name in out and "--corrupt" in out  # the hint
        assert path.exists()
        out = _run("gc", "--dry-run", "--corrupt")
        assert f"would remove {name} " in out
        assert path.exists()
        out = _run("gc", "--corrupt")
        assert f"removed {name} " in out
        assert not path.exists()
    finally:
        path.unlink(missing_ok=True)


def test_abandoned_object_is_removed(name: str) -> None:
    path = _segment._path_for(name)
    path.touch(mode=0o600)  # a creator that died right after O_EXCL
    try:
        entry = _entry(name)
        assert entry is not None and entry["state"] == "abandoned"
        out = _run("gc")
        assert f"removed {name} " in out
        assert not path.exists()
    finally:
        path.unlink(missing_ok=True)


def test_names_are_shown_verbatim(name: str) -> None:
    weird = f"{name}[bold]x[red]"  # rich markup in a name must not be interpreted
    with il.Channel(weird, capacity=4096):
        assert weird in _run("ls")


def test_empty_namespace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INTERLINK_SHM_DIR", str(tmp_path))
    assert "no interlink objects" in _run("ls")
    assert json.loads(_run("ls", "--json")) == []
    assert "nothing to remove" in _run("gc")


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (12288, "12.0 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (8 << 30, "8.0 GiB"),
        (3 << 40, "3.0 TiB"),
        (5 << 60, "5120.0 PiB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text
