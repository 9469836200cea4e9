"""Blocking calls return to Python promptly when a signal handler raises (Ctrl-C)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import interlink as il

pytestmark = pytest.mark.timeout(30)

ALARM_AFTER = 0.2


class Interrupted(Exception):
    pass


@contextmanager
def alarm(seconds: float, exc: type[BaseException] | None = Interrupted) -> Iterator[list[float]]:
    """SIGALRM after ``seconds``; its handler records when it ran and raises ``exc``.

    pytest-timeout may use SIGALRM itself: its handler and timer are restored after.
    """
    ran: list[float] = []

    def handler(signum: int, frame: object) -> None:
        ran.append(time.monotonic())
        if exc is not None:
            raise exc

    old_handler = signal.signal(signal.SIGALRM, handler)
    start = time.monotonic()
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield ran
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            left = max(old_delay - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


def full_channel(name: str) -> tuple[il.Channel, il.Channel]:
    """(sender, receiver) where the ring is full and the receiver is live but idle."""
    tx, rx = il.Channel(name, 4096), il.Channel(name)
    with pytest.raises(il.Empty):
        rx.recv_nowait()
    while True:
        try:
            tx.send_nowait(b"x" * 1000)
        except il.Full:
            return tx, rx


BLOCKING: list[tuple[str, bool, Callable[[il.Channel], object]]] = [
    ("recv", False, lambda c: c.recv()),
    ("recv-timeout", False, lambda c: c.recv(timeout=20)),
    ("recv_many", False, lambda c: c.recv_many()),
    ("recv_bytes", False, lambda c: c.recv_bytes()),
    ("wait_readable", False, lambda c: c.wait_readable()),
    ("send", True, lambda c: c.send(b"y" * 1000)),
    ("send-timeout", True, lambda c: c.send(b"y" * 1000, timeout=20)),
    ("send_many", True, lambda c: c.send_many([b"y" * 1000] * 3)),
    ("loan", True, lambda c: c.loan(1000)),
    ("wait_writable", True, lambda c: c.wait_writable(1000)),
]


@pytest.mark.parametrize(("what", "sending", "op"), BLOCKING, ids=[b[0] for b in BLOCKING])
def test_blocked_call_is_interrupted_by_a_raising_signal_handler(
    name: str, what: str, sending: bool, op: Callable[[il.Channel], object]
) -> None:
    tx, rx = full_channel(name) if sending else (il.Channel(name, 4096), None)
    try:
        with alarm(ALARM_AFTER) as ran:
            start = time.monotonic()
            with pytest.raises(Interrupted):
                op(tx)
            returned = time.monotonic()
        assert ran, "the handler never ran"
        latency = returned - (start + ALARM_AFTER)
        print(f"{what}: back in Python {latency * 1e3:.2f} ms after SIGALRM")
        assert -0.01 < latency < 1.0  # the design asks for < 100 ms; generous for CI
        # The handle still works afterwards.
        if sending:
            assert rx is not None
            assert rx.recv_bytes(timeout=1) == b"x" * 1000
            tx.send(b"z", timeout=1)
        else:
            tx.send(b"z")
            assert tx.recv_bytes(timeout=1) == b"z"
    finally:
        tx.close()
        if rx is not None:
            rx.close()


def test_a_handler_that_does_not_raise_lets_the_call_go_on(name: str) -> None:
    with il.Channel(name, 4096) as c, alarm(0.05, None) as ran:
        start = time.monotonic()
        with pytest.raises(il.Timeout):
            c.recv(timeout=0.4)
        elapsed = time.monotonic() - start
    assert ran
    assert 0.39 <= elapsed < 2.0  # neither cut short by EINTR nor stuck


def test_keyboard_interrupt_from_a_blocked_recv(name: str) -> None:
    with il.Channel(name, 4096) as c, alarm(ALARM_AFTER, KeyboardInterrupt):
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            c.recv()
        assert time.monotonic() - start < ALARM_AFTER + 1.0
