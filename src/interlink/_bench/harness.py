"""Runs the measurements: two spawned processes each, under a deadline.

Nothing here can hang: every measurement has a wall-clock limit
(``Settings.timeout``, start-up included); a child that overruns it, or whose
partner failed, is terminated and then killed. A broken transport yields an
error cell, never an exception out of :func:`run`. Whatever a transport
created (channels, queues, sockets, files) is removed when its measurement
ends, however it ended.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .peers import SPAWN, Link, Peer, RoundTripLink
from .results import Cell, MeasurementError, NotApplicable, Status
from .settings import Scenario, Settings
from .workers import ROLE_PAIRS, Figures, Job, child_main

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

GRACE = 5.0
"""Seconds a child may take to exit after it reported, before it is terminated."""


class ProgressSink(Protocol):
    """Told about each measurement as it starts and ends."""

    def started(self, peer: Peer, scenario: Scenario) -> None:
        """A measurement of ``peer`` in ``scenario`` starts."""

    def finished(self, cell: Cell) -> None:
        """A measurement ended with ``cell``."""


class _Silent:
    """A :class:`ProgressSink` that ignores everything."""

    def started(self, peer: Peer, scenario: Scenario) -> None:
        """Ignore the start."""

    def finished(self, cell: Cell) -> None:
        """Ignore the end."""


def plan(peers: Sequence[Peer]) -> list[tuple[Peer, Scenario]]:
    """Return the measurements :func:`run` makes for ``peers``, in order."""
    return [(peer, scenario) for peer in peers for scenario in peer.scenarios]


def run(
    peers: Sequence[Peer], settings: Settings, progress: ProgressSink | None = None
) -> list[Cell]:
    """Measure every scenario of every peer; return one cell per measurement.

    Peers that are not installed get one "not installed" cell per scenario
    without starting any process.
    """
    sink = progress if progress is not None else _Silent()
    cells = []
    for peer, scenario in plan(peers):
        sink.started(peer, scenario)
        cell = measure(peer, scenario, settings)
        sink.finished(cell)
        cells.append(cell)
    return cells


def measure(peer: Peer, scenario: Scenario, settings: Settings) -> Cell:
    """Run one measurement in two fresh processes and return its cell."""
    missing = peer.missing()
    if missing is not None:
        return Cell(peer.label, scenario, Status.NOT_INSTALLED, reason=missing)
    try:
        with tempfile.TemporaryDirectory(prefix="interlink-bench-") as tmp:
            figures = _measure_in(Path(tmp), peer, scenario, settings)
    except NotApplicable as exc:
        return Cell(peer.label, scenario, Status.NOT_APPLICABLE, reason=str(exc))
    except MeasurementError as exc:
        return Cell(peer.label, scenario, Status.ERROR, reason=str(exc))
    except Exception as exc:  # setting the link up failed: the peer is broken here
        return Cell(peer.label, scenario, Status.ERROR, reason=f"{type(exc).__name__}: {exc}")
    return Cell(peer.label, scenario, Status.OK, figures=figures)


def _measure_in(workdir: Path, peer: Peer, scenario: Scenario, settings: Settings) -> Figures:
    """Create the link in ``workdir``, run both roles, return the measuring role's figures."""
    link: contextlib.AbstractContextManager[Link | RoundTripLink]
    if scenario is Scenario.ROUNDTRIP:
        link = peer.roundtrip_link(settings, workdir)
    else:
        link = peer.link(settings.size_of(scenario), settings, workdir)
    with link as opened:
        jobs = [Job(role, opened, settings, peer.batch) for role in ROLE_PAIRS[scenario]]
        measuring, other = run_processes(jobs, settings.timeout)
    return {**other, **measuring}


def run_processes(jobs: Sequence[Job], timeout: float) -> list[Figures]:
    """Run each job in its own spawned process; return their figures in job order.

    Raises :class:`MeasurementError` if a job fails, dies or is still running
    after ``timeout`` seconds; every process has exited when this returns.
    """
    barrier = SPAWN.Barrier(len(jobs))
    procs: list[BaseProcess] = []
    conns: list[Connection] = []
    outcomes: dict[int, tuple[bool, Figures | str]] = {}
    try:
        for job in jobs:
            reader, writer = SPAWN.Pipe(duplex=False)
            proc = SPAWN.Process(
                target=child_main,
                args=(job, barrier, writer),
                name=f"interlink-bench-{job.role}",
                daemon=True,
            )
            proc.start()
            writer.close()
            procs.append(proc)
            conns.append(reader)
        _collect(jobs, procs, conns, outcomes, time.monotonic() + timeout)
    finally:
        failed = len(outcomes) < len(jobs) or not all(ok for ok, _ in outcomes.values())
        _stop(procs, grace=0.5 if failed else GRACE)
        for conn in conns:
            conn.close()
    errors = [str(result) for ok, result in outcomes.values() if not ok]
    if len(outcomes) < len(jobs):
        late = [jobs[i].role for i in range(len(jobs)) if i not in outcomes]
        errors.append(f"timed out after {timeout:g} s ({', '.join(late)} still running)")
    if errors:
        # The partner of a failed process usually only saw the broken barrier: say the cause.
        errors.sort(key=lambda text: text.startswith("BrokenBarrierError"))
        raise MeasurementError(errors[0])
    return [_figures(outcomes[i][1]) for i in range(len(jobs))]


def _figures(result: Figures | str) -> Figures:
    """Return the figures of a successful outcome."""
    if isinstance(result, str):
        raise MeasurementError(result)
    return result


def _collect(
    jobs: Sequence[Job],
    procs: Sequence[BaseProcess],
    conns: Sequence[Connection],
    outcomes: dict[int, tuple[bool, Figures | str]],
    deadline: float,
) -> None:
    """Fill ``outcomes`` (job index -> outcome) until all reported, one failed, or the deadline."""
    while len(outcomes) < len(jobs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        pending = [i for i in range(len(jobs)) if i not in outcomes]
        waitables = [conns[i] for i in pending] + [procs[i].sentinel for i in pending]
        ready = wait(waitables, timeout=remaining)
        for i in pending:
            if conns[i] in ready or conns[i].poll():
                try:
                    outcomes[i] = conns[i].recv()
                except (EOFError, OSError):
                    outcomes[i] = (False, _death(jobs[i], procs[i]))
            elif procs[i].sentinel in ready:
                outcomes[i] = (False, _death(jobs[i], procs[i]))
        if any(not ok for ok, _ in outcomes.values()):
            return


def _death(job: Job, proc: BaseProcess) -> str:
    """Describe a child that exited without reporting."""
    proc.join(1.0)
    return f"the {job.role} process exited with code {proc.exitcode} without a result"


def _stop(procs: Sequence[BaseProcess], grace: float) -> None:
    """Make sure every process has exited: join, then terminate, then kill."""
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(1.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
