"""Ctrl-C (SIGINT) reaches a child process blocked in the channel promptly."""

from __future__ import annotations

import signal
import time

import pytest
from mp_helpers import Spawn, blocked_in_futex, wait_until

import interlink as il

pytestmark = pytest.mark.timeout(60)

BLOCKED = """
name, what = sys.argv[1], sys.argv[2]
ch = il.Channel(name, create=False)
if what == "recv":
    say("blocking")
    ch.recv()
else:
    while True:
        try:
            ch.send_nowait(b"x" * 1000)
        except il.Full:
            break
    say("blocking")
    ch.send(b"x" * 1000)
say("returned")  # never reached
"""


@pytest.mark.parametrize("what", ["recv", "send"])
def test_sigint_interrupts_a_blocked_child(spawn: Spawn, name: str, what: str) -> None:
    with il.Channel(name, 4096) as me:
        if what == "send":
            with pytest.raises(il.Empty):
                me.recv_nowait()  # a live receiver that never reads
        child = spawn(BLOCKED, name, what)
        child.expect("blocking")
        wait_until(lambda: blocked_in_futex(child.pid), 10, "the child to sleep in the channel")
        start = time.monotonic()
        child.kill(signal.SIGINT)
        rc = child.wait(10)
        took = time.monotonic() - start
        print(f"{what}: child exited {took * 1e3:.1f} ms after SIGINT")
        assert rc == -signal.SIGINT  # CPython re-raises an unhandled Ctrl-C as the signal
        err = child.stderr()
        assert "KeyboardInterrupt" in err
        assert child.proc.stdout is not None
        assert "returned" not in child.proc.stdout.read().decode()
        assert took < 2.0  # includes interpreter teardown
