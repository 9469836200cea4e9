"""What the two child processes of a measurement run.

:func:`child_main` is the process target (top level, so ``spawn`` can pickle
it). It opens the ends of the link, meets the other process at a barrier,
runs its role and sends back either ``(True, figures)`` or ``(False, error)``
on a pipe. The same barrier is met again at the end, before the ends are
closed, so no sender tears its end down while messages are still in flight.

The first role of each pair in :data:`ROLE_PAIRS` is the measuring one: the
receiver for one-way scenarios (time from the first to the last message
received), the pinger for the round trip.
"""

from __future__ import annotations

import contextlib
import resource
import time
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from threading import BrokenBarrierError
from typing import TYPE_CHECKING

from .peers import Link, Receiver, RoundTripLink, Sender, read_stamps
from .settings import Scenario, Settings

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Barrier

Figures = dict[str, float]


@dataclass(frozen=True)
class Job:
    """What one child process does: its role, over which link, with which settings."""

    role: str
    link: Link | RoundTripLink
    settings: Settings
    batch: bool = False


def child_main(job: Job, barrier: Barrier, results: Connection) -> None:
    """Run ``job`` and send ``(True, figures)`` or ``(False, error text)`` on ``results``.

    On failure the barrier is aborted, so that the other process stops
    waiting for this one.
    """
    try:
        outcome: tuple[bool, Figures | str] = (True, ROLES[job.role](job, barrier))
    except BaseException as exc:  # report everything, KeyboardInterrupt included
        with contextlib.suppress(Exception):
            barrier.abort()
        outcome = (False, describe(exc))
    try:
        results.send(outcome)
    finally:
        results.close()


def describe(exc: BaseException) -> str:
    """Return a one-line description of ``exc`` naming its type and where it was raised."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    return text


def _meet(barrier: Barrier, settings: Settings) -> None:
    """Wait for the other process at ``barrier`` (at most ``settings.timeout`` s)."""
    try:
        barrier.wait(settings.timeout)
    except BrokenBarrierError:
        raise BrokenBarrierError("the other process failed or did not arrive") from None


def _one_way(job: Job) -> Link:
    """Return the job's link, which must be a one-way link."""
    if not isinstance(job.link, Link):
        raise TypeError(f"{job.role} needs a one-way link")
    return job.link


def _round_trip(job: Job) -> RoundTripLink:
    """Return the job's link, which must be a round-trip link."""
    if not isinstance(job.link, RoundTripLink):
        raise TypeError(f"{job.role} needs a round-trip link")
    return job.link


def _close(*ends: Sender | Receiver) -> None:
    """Close every end (an end shared by both directions is closed twice, harmlessly)."""
    for end in ends:
        end.close()


# ---------------------------------------------------------------- round trip


def percentile(sorted_samples: array[int], fraction: float) -> int:
    """Return the nearest-rank ``fraction`` percentile of the non-empty sorted samples."""
    index = min(len(sorted_samples) - 1, int(fraction * len(sorted_samples)))
    return sorted_samples[index]


def ping(job: Job, barrier: Barrier) -> Figures:
    """Send a 64 B ping and wait for the pong, ``warmup`` + ``roundtrips`` times.

    Each timed round trip spans send, receive and release of the reply
    (``time.perf_counter_ns``); returns p50, p99, mean, min and max in µs.
    """
    s = job.settings
    tx, rx = _round_trip(job).pinger()
    try:
        msg = bytes(s.small_size)
        _meet(barrier, s)
        for _ in range(s.warmup):
            tx.send(msg)
            rx.release(rx.recv())
        samples = array("q", bytes(8 * s.roundtrips))
        clock = time.perf_counter_ns
        send, recv, release = tx.send, rx.recv, rx.release
        for i in range(s.roundtrips):
            start = clock()
            send(msg)
            release(recv())
            samples[i] = clock() - start
        _meet(barrier, s)
    finally:
        _close(tx, rx)
    total = sum(samples)
    ordered = array("q", sorted(samples))
    return {
        "p50_us": percentile(ordered, 0.50) / 1e3,
        "p99_us": percentile(ordered, 0.99) / 1e3,
        "mean_us": total / len(ordered) / 1e3,
        "min_us": ordered[0] / 1e3,
        "max_us": ordered[-1] / 1e3,
        "roundtrips": len(ordered),
    }


def pong(job: Job, barrier: Barrier) -> Figures:
    """Answer every ping with a 64 B pong (after releasing the ping)."""
    s = job.settings
    tx, rx = _round_trip(job).ponger()
    try:
        reply = bytes(s.small_size)
        _meet(barrier, s)
        send, recv, release = tx.send, rx.recv, rx.release
        for _ in range(s.warmup + s.roundtrips):
            release(recv())
            send(reply)
        _meet(barrier, s)
    finally:
        _close(tx, rx)
    return {}


# ---------------------------------------------------------------- 64 B one way


def send_small(job: Job, barrier: Barrier) -> Figures:
    """Send ``small_count`` 64 B messages (in ``send_many`` batches for batched rows)."""
    s = job.settings
    tx = _one_way(job).sender()
    try:
        msg = bytes(s.small_size)
        _meet(barrier, s)
        start = time.perf_counter()
        if job.batch:
            chunk = [msg] * s.batch
            full, rest = divmod(s.small_count, s.batch)
            for _ in range(full):
                tx.send_many(chunk)
            if rest:
                tx.send_many(chunk[:rest])
        else:
            send = tx.send
            for _ in range(s.small_count):
                send(msg)
        elapsed = time.perf_counter() - start
        _meet(barrier, s)
    finally:
        tx.close()
    return {"sender_seconds": elapsed, **tx.figures()}


def receive_small(job: Job, barrier: Barrier) -> Figures:
    """Count ``small_count`` messages; rate = messages after the first call / time since it.

    The clock starts when the first receive call returns, and stops when the
    last message has been received and released.
    """
    s = job.settings
    rx = _one_way(job).receiver()
    try:
        _meet(barrier, s)
        release = rx.release
        if job.batch:
            first = rx.recv_many()
            start = time.perf_counter()
            head = got = len(first)
            for m in first:
                release(m)
            recv_many = rx.recv_many
            while got < s.small_count:
                msgs = recv_many()
                got += len(msgs)
                for m in msgs:
                    release(m)
        else:
            release(rx.recv())
            start = time.perf_counter()
            head = got = 1
            recv = rx.recv
            while got < s.small_count:
                release(recv())
                got += 1
        elapsed = time.perf_counter() - start
        _meet(barrier, s)
    finally:
        rx.close()
    if got != s.small_count:
        raise RuntimeError(f"received {got} messages, {s.small_count} were sent")
    return {
        "msgs_per_s": (got - head) / elapsed,
        "messages": got,
        "seconds": elapsed,
    }


# ---------------------------------------------------------------- 1 MiB one way


def send_large(job: Job, barrier: Barrier) -> Figures:
    """Send ``large_count`` 1 MiB messages stamped 0, 1, 2, ... at both ends."""
    s = job.settings
    tx = _one_way(job).sender()
    try:
        _meet(barrier, s)
        start = time.perf_counter()
        send_stamped = tx.send_stamped
        for seq in range(s.large_count):
            send_stamped(seq)
        elapsed = time.perf_counter() - start
        _meet(barrier, s)
    finally:
        tx.close()
    return {"sender_seconds": elapsed, **tx.figures()}


def receive_large(job: Job, barrier: Barrier) -> Figures:
    """Receive ``large_count`` messages, checking size and both stamps of every one.

    Raises if a message is missing, duplicated, reordered or torn. Rates
    count the messages after the first, over the time since it arrived.
    """
    s = job.settings
    rx = _one_way(job).receiver()
    try:
        _meet(barrier, s)
        recv, release = rx.recv, rx.release
        start = 0.0
        for expected in range(s.large_count):
            msg = recv()
            first, last, size = read_stamps(msg)
            release(msg)
            if first != expected or last != expected or size != s.large_size:
                raise RuntimeError(
                    f"message {expected} arrived as {size} B stamped {first} / {last}"
                )
            if expected == 0:
                start = time.perf_counter()
        elapsed = time.perf_counter() - start
        _meet(barrier, s)
    finally:
        rx.close()
    msgs_per_s = (s.large_count - 1) / elapsed
    return {
        "msgs_per_s": msgs_per_s,
        "mib_per_s": msgs_per_s * s.large_size / (1 << 20),
        "messages": s.large_count,
        "seconds": elapsed,
    }


# ---------------------------------------------------------------- idle receiver


def receive_idle(job: Job, barrier: Barrier) -> Figures:
    """Block in one receive call while no message comes for ``idle_seconds``.

    Returns the process's CPU time (user + system, all threads, from
    ``getrusage``) over that wait, as a percentage of one core.
    """
    s = job.settings
    rx = _one_way(job).receiver()
    try:
        _meet(barrier, s)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        msg = rx.recv()
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        rx.release(msg)
        _meet(barrier, s)
    finally:
        rx.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_percent": 100.0 * cpu / wall, "cpu_seconds": cpu, "wall_seconds": wall}


def wake_idle(job: Job, barrier: Barrier) -> Figures:
    """Let the receiver wait ``idle_seconds``, then send the one message that ends it."""
    s = job.settings
    tx = _one_way(job).sender()
    try:
        _meet(barrier, s)
        time.sleep(s.idle_seconds)
        tx.send(bytes(s.small_size))
        _meet(barrier, s)
    finally:
        tx.close()
    return {}


ROLES: dict[str, Callable[[Job, Barrier], Figures]] = {
    "ping": ping,
    "pong": pong,
    "send_small": send_small,
    "receive_small": receive_small,
    "send_large": send_large,
    "receive_large": receive_large,
    "receive_idle": receive_idle,
    "wake_idle": wake_idle,
}

ROLE_PAIRS: dict[Scenario, tuple[str, str]] = {
    Scenario.ROUNDTRIP: ("ping", "pong"),
    Scenario.SMALL: ("receive_small", "send_small"),
    Scenario.LARGE: ("receive_large", "send_large"),
    Scenario.IDLE: ("receive_idle", "wake_idle"),
}
"""The two roles of each scenario; the first one measures."""
