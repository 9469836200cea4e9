"""Helpers for the multi-process tests: child interpreters driven over pipes.

A child runs a snippet of Python (``python -c``) after a small prelude that
imports interlink and defines ``say(*parts)`` (one line to the parent) and
``hear()`` (one line from the parent).  The parent synchronizes on those lines
with bounded waits, never on sleeps.  Child stderr goes to a temporary file,
so a chatty child can never block on a full pipe, and it is shown whenever an
expectation fails.

This module imports nothing but the standard library and interlink, so that
'spawn' children can import it cheaply (the targets below live here).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import interlink as il
from interlink import _segment

PRELUDE = """\
import os, random, signal, struct, sys, time, zlib
import interlink as il

def say(*parts):
    sys.stdout.write(" ".join(str(p) for p in parts) + "\\n")
    sys.stdout.flush()

def hear():
    line = sys.stdin.readline()
    if not line:
        os._exit(0)  # the parent went away
    return line.strip()

"""


class Child:
    """A child Python process running ``PRELUDE + code`` with ``sys.argv[1:] == args``."""

    def __init__(self, code: str, *args: str) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.pid = self.proc.pid
        self._buf = b""

    # ------------------------------------------------------------ talking
    def readline(self, timeout: float = 10.0) -> str:
        """The next line the child printed; AssertionError on EOF or timeout."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"child {self.pid}: no line within {timeout}s{self._diag()}")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(5)
                raise AssertionError(
                    f"child {self.pid} exited (rc {self.proc.returncode}) "
                    f"instead of printing a line{self._diag()}"
                )
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def expect(self, word: str, timeout: float = 10.0) -> list[str]:
        """Read a line whose first word is ``word``; return the other words."""
        line = self.readline(timeout)
        parts = line.split()
        if not parts or parts[0] != word:
            raise AssertionError(f"child {self.pid}: expected {word!r}, got {line!r}{self._diag()}")
        return parts[1:]

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    # ----------------------------------------------------------- life cycle
    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"child {self.pid} did not exit in {timeout}s") from None

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _diag(self) -> str:
        err = self.stderr()
        return f"\n--- child stderr ---\n{err}" if err else ""

    def close(self) -> None:
        """Kill the child if it still runs, reap it, close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(BrokenPipeError):
                    f.close()
        self._stderr.close()


Spawn = Callable[..., Child]


def segment_path(name: str) -> Path:
    """The file in /dev/shm that holds the object ``name``."""
    return _segment.shm_dir() / (_segment._prefix() + name)


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``cond`` (every millisecond) until true; return the seconds it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)
    return time.monotonic() - start


def blocked_in_futex(pid: int) -> bool:
    """Whether the (single-threaded) process ``pid`` sleeps in futex(2) right now."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            if "futex" in f.read():
                return True
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] == "202"  # SYS_futex on x86_64
    except (OSError, IndexError):
        return False


# --------------------------------------------------------------------------
# Targets for multiprocessing 'spawn' children (importable without pytest).


def echo_target(ch: il.Channel, reply: il.Channel, count: int) -> None:
    """Receive ``count`` messages from ``ch`` and send each back on ``reply``."""
    try:
        for _ in range(count):
            with ch.recv(timeout=10) as msg:
                reply.send(msg, timeout=10)
    finally:
        ch.close()
        reply.close()


def send_target(ch: il.Channel, payloads: list[bytes]) -> None:
    """Send every payload on ``ch`` (a channel handed over by pickling)."""
    try:
        for p in payloads:
            ch.send(p, timeout=10)
    finally:
        ch.close()


def send_one_target(ch: il.Channel, i: int) -> int:
    """A pool task: send ``i`` on a channel that came with the task."""
    ch.send(i.to_bytes(4, "little"), timeout=10)
    ch.close()
    return i
