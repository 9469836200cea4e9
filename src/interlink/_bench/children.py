"""Runs benchmark bodies in spawned children under one deadline.

Shared by the ``bench sync``, ``bench queue`` (and later ``bench topic``)
measurements, whose children each run one module-level function and report
its figures. Nothing here can hang: every child has exited (joined, else
killed) when :func:`run_children` returns or raises.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from .peers import SPAWN

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

Body = Callable[..., Any]
"""A module-level function (spawn pickles it by reference) returning the figures."""

Job = tuple[Body, tuple[Any, ...]]
"""One child: its body and the arguments to call it with."""


class ChildFailed(Exception):
    """A child raised, died without a result, or overran the deadline."""


def _role(body: Body) -> str:
    """The name a child is reported under: its body's name without leading underscores."""
    return body.__name__.lstrip("_")


def child_main(body: Body, args: tuple[Any, ...], conn: Connection) -> None:
    """Entry point of a spawned child: run ``body(*args)`` and send (ok, figures | error text)."""
    try:
        result: tuple[bool, Any] = (True, body(*args))
    except BaseException as exc:  # reported to the parent, which shows it in the table
        result = (False, f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(OSError):
        conn.send(result)
    conn.close()


def run_children(jobs: Sequence[Job], timeout: float, *, prefix: str = "bench") -> list[Any]:
    """Run each (body, args) in its own spawned process; return their figures in job order.

    All children start at once and share one wall-clock ``timeout`` (start-up
    included). Raises :class:`ChildFailed` with the first error when one
    raises, dies or is still running at the deadline; every child has exited
    when this returns or raises. ``prefix`` names the processes
    (``{prefix}-{role}``).
    """
    procs: list[BaseProcess] = []
    conns: list[Connection] = []
    results: dict[int, tuple[bool, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        for body, args in jobs:
            reader, writer = SPAWN.Pipe(duplex=False)
            proc = SPAWN.Process(
                target=child_main,
                args=(body, args, writer),
                name=f"{prefix}-{_role(body)}",
                daemon=True,
            )
            proc.start()
            writer.close()
            procs.append(proc)
            conns.append(reader)
        while len(results) < len(jobs) and all(ok for ok, _ in results.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            pending = [i for i in range(len(jobs)) if i not in results]
            ready = wait([conns[i] for i in pending] + [procs[i].sentinel for i in pending], left)
            for i in pending:
                role = _role(jobs[i][0])
                if conns[i] in ready or conns[i].poll():
                    try:
                        results[i] = conns[i].recv()
                    except (EOFError, OSError):
                        results[i] = (False, f"the {role} process died without a result")
                elif procs[i].sentinel in ready:
                    results[i] = (False, f"the {role} process exited without a result")
    finally:
        for child in procs:
            child.join(max(0.0, min(5.0, deadline - time.monotonic())))
            if child.is_alive():
                child.kill()
                child.join(5.0)
        for conn in conns:
            conn.close()
    errors = [str(r) for ok, r in results.values() if not ok]
    if len(results) < len(jobs):
        errors.append(f"timed out after {timeout:g} s")
    if errors:
        raise ChildFailed(errors[0])
    return [results[i][1] for i in range(len(jobs))]
