"""``interlink bench sync``: locks and semaphores against the usual alternatives.

Two measurements, each in fresh ``spawn`` processes under a wall-clock limit:

uncontended
    ``acquire(); release()`` in a tight loop, nobody else touching the
    object, in ns per pair (the loop itself included, the same for every
    row): the best and the median of the rounds.  Every row is measured in
    the same fresh process, interleaved: each round times every row once
    (a few ms each), starting from a different row each time, and a row's
    ratio to threading.Lock is the median of its per-round ratios.  On the
    VMs this runs on the machine's speed is bimodal over time (the same code
    runs ~1.7x slower for stretches of ~0.1-1 s, every row alike, with
    address layout randomization and the hash seed fixed), so rows timed in
    separate processes, or far apart, compared those modes, not locks.
    Timed with the process's CPU clock, so that time the process spends
    descheduled by other load on the machine is not charged to whichever row
    happened to run then.  threading.Lock is the in-process reference the
    ratios compare to.
handoff
    a round trip between two processes: the ping process releases ``ping``
    and blocks on ``pong``; the pong process, blocked on ``ping``, wakes and
    releases ``pong``.  Each round trip is two hand-offs, each a wake-up of a
    sleeping process; p50 and p99 in µs, ratios compare to interlink.Lock.
    Both objects start held (a Lock, like threading.Lock, may be released by
    any process; the semaphores start at 0).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .children import run_children
from .peers import SPAWN, load
from .rows import Outcome, document, error_reason, missing_module, run_plan, select_rows

UNCONTENDED = "uncontended"
HANDOFF = "handoff"

REFERENCE_UNCONTENDED = "threading.Lock"
REFERENCE_HANDOFF = "interlink.Lock"


@dataclass(frozen=True)
class SyncSettings:
    """Counts and limits of one ``bench sync`` run (picklable)."""

    iterations: int = 50_000
    """acquire+release pairs per uncontended repeat."""
    repeats: int = 31
    """Uncontended rounds (each times every row once); the fastest counts,
    and the ratios are medians of per-round ratios."""
    roundtrips: int = 20_000
    """Timed hand-off round trips (after ``warmup`` untimed ones)."""
    warmup: int = 2_000
    timeout: float = 120.0
    """Wall-clock limit of one measurement, process start-up included."""

    @classmethod
    def choose(
        cls, *, quick: bool = False, count: int | None = None, timeout: float | None = None
    ) -> SyncSettings:
        """Full or ``quick`` settings; ``count`` sets the uncontended iterations
        (round trips are ``count // 10``)."""
        base = (
            cls(iterations=20_000, repeats=9, roundtrips=2_000, warmup=200, timeout=30.0)
            if quick
            else cls()
        )
        changes: dict[str, Any] = {}
        if count is not None:
            changes.update(
                iterations=count, roundtrips=max(100, count // 10), warmup=max(10, count // 100)
            )
        if timeout is not None:
            changes["timeout"] = timeout
        if not changes:
            return base
        return SyncSettings(**{**base.__dict__, **changes})

    def line(self) -> str:
        """One line saying what was measured."""
        return (
            f"uncontended: {self.repeats} interleaved rounds x {self.iterations:,} "
            "acquire+release per row (best; ratio: median of per-round ratios); "
            f"hand-off: {self.roundtrips:,} round trips after {self.warmup:,} warm-up; "
            f"limit {self.timeout:g} s per measurement"
        )


@dataclass(frozen=True)
class Primitive:
    """One row: how to make the object, in which measurements it takes part."""

    label: str
    family: str
    module: str | None = None
    """The package it needs (None: always available)."""
    handoff: bool = False

    def missing(self) -> str | None:
        """Why it cannot be measured here, or None."""
        return missing_module(self.module)


PRIMITIVES: tuple[Primitive, ...] = (
    Primitive("interlink.Lock", "interlink", handoff=True),
    Primitive("interlink.RLock", "interlink"),
    Primitive("interlink.Semaphore", "interlink", handoff=True),
    Primitive("threading.Lock", "threading"),
    Primitive("multiprocessing.Lock", "multiprocessing", handoff=True),
    Primitive("posix_ipc.Semaphore", "posix_ipc", module="posix_ipc", handoff=True),
)


def select(only: Sequence[str]) -> list[Primitive]:
    """The rows ``--only`` picks (all without it); ValueError for an unknown name."""
    return select_rows(PRIMITIVES, only, "primitive")


class Result(Outcome[str]):
    """One measurement of one row ("ok", "not installed" or "error")."""

    LABEL_KEY = "primitive"
    CASE_KEY = "scenario"

    @property
    def scenario(self) -> str:
        """UNCONTENDED or HANDOFF."""
        return self.case


def plan(rows: Sequence[Primitive]) -> list[tuple[Primitive, str]]:
    """The measurements :func:`run` makes, in order."""
    return [(p, UNCONTENDED) for p in rows] + [(p, HANDOFF) for p in rows if p.handoff]


# ------------------------------------------------------------ the objects


@contextlib.contextmanager
def _objects(label: str, count: int, initially_held: bool) -> Iterator[list[Any]]:
    """Make ``count`` objects of ``label``'s kind (held, or semaphores at 0, if
    ``initially_held``); remove whatever was created afterwards."""
    made: list[Any] = []
    cleanup: list[Callable[[], object]] = []
    try:
        for _ in range(count):
            if label in ("interlink.Lock", "interlink.RLock"):
                import interlink

                obj: Any = interlink.Lock() if label == "interlink.Lock" else interlink.RLock()
                if initially_held:
                    obj.acquire()
                cleanup.append(obj.close)
            elif label == "interlink.Semaphore":
                import interlink

                obj = interlink.Semaphore(None, 0 if initially_held else 1)
                cleanup.append(obj.close)
            elif label == "threading.Lock":
                import threading

                obj = threading.Lock()
            elif label == "multiprocessing.Lock":
                obj = SPAWN.Lock()
                if initially_held:
                    obj.acquire()
            elif label == "posix_ipc.Semaphore":
                posix_ipc = load("posix_ipc")
                sem = posix_ipc.Semaphore(
                    f"/interlink-bench-{secrets.token_hex(6)}",
                    posix_ipc.O_CREX,
                    initial_value=0 if initially_held else 1,
                )
                cleanup.append(sem.unlink)
                cleanup.append(sem.close)
                obj = sem.name
            else:  # pragma: no cover - PRIMITIVES and this function go together
                raise ValueError(label)
            made.append(obj)
        yield made
    finally:
        for fn in reversed(cleanup):
            with contextlib.suppress(Exception):
                fn()


def _open(label: str, obj: Any) -> Any:
    """In a child: the usable object for what :func:`_objects` made."""
    if label == "posix_ipc.Semaphore":
        return load("posix_ipc").Semaphore(obj)
    return obj


# ------------------------------------------------------------ child bodies


def _time_pairs(obj: Any, iterations: int) -> float:
    """ns per acquire+release pair over ``iterations`` pairs (process CPU time)."""
    acquire, release = obj.acquire, obj.release
    loop = range(iterations)
    clock = time.process_time_ns  # CPU time: see the module docstring
    t0 = clock()
    for _ in loop:
        acquire()
        release()
    return (clock() - t0) / iterations


def _uncontended(labels: Sequence[str], settings: SyncSettings) -> dict[str, dict[str, Any]]:
    """Every row of ``labels`` in this process, interleaved: label -> figures,
    or ``{"error": message}`` for a row whose object could not be made."""
    out: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        objs: dict[str, Any] = {}
        for label in labels:
            try:
                (made,) = stack.enter_context(_objects(label, 1, initially_held=False))
                objs[label] = _open(label, made)
                _time_pairs(objs[label], min(1000, settings.iterations))  # warm up
            except Exception as exc:
                out[label] = {"error": str(exc) or type(exc).__name__}
        order = list(objs)
        runs: dict[str, list[float]] = {label: [] for label in order}
        for r in range(settings.repeats):
            for k in range(len(order)):
                label = order[(r + k) % len(order)]
                runs[label].append(_time_pairs(objs[label], settings.iterations))
        empty = float("inf")
        loop = range(settings.iterations)
        for _ in range(settings.repeats):
            t0 = time.process_time_ns()
            for _ in loop:
                pass
            empty = min(empty, (time.process_time_ns() - t0) / settings.iterations)
        ref = runs.get(REFERENCE_UNCONTENDED)
        for label in order:
            out[label] = {
                "ns": min(runs[label]),
                "median_ns": statistics.median(runs[label]),
                "loop_ns": empty,
                "pid": os.getpid(),
            }
            if ref is not None:
                # paired: each round's rows ran within a few ms of each other
                out[label]["x_ref"] = statistics.median(
                    a / b for a, b in zip(runs[label], ref, strict=True)
                )
    return out


def _pong(label: str, ping: Any, pong: Any, settings: SyncSettings) -> dict[str, float]:
    ping, pong = _open(label, ping), _open(label, pong)
    acquire, release = ping.acquire, pong.release
    for _ in range(settings.warmup + settings.roundtrips):
        acquire()
        release()
    return {}


def _ping(label: str, ping: Any, pong: Any, settings: SyncSettings) -> dict[str, float]:
    ping, pong = _open(label, ping), _open(label, pong)
    release, acquire = ping.release, pong.acquire
    clock = time.perf_counter_ns
    for _ in range(settings.warmup):
        release()
        acquire()
    samples = [0] * settings.roundtrips
    for i in range(settings.roundtrips):
        t0 = clock()
        release()
        acquire()
        samples[i] = clock() - t0
    samples.sort()
    n = len(samples)
    return {
        "p50_us": samples[n // 2] / 1000.0,
        "p99_us": samples[min(n - 1, (n * 99) // 100)] / 1000.0,
        "mean_us": sum(samples) / n / 1000.0,
    }


def measure(row: Primitive, scenario: str, settings: SyncSettings) -> Result:
    """One measurement of ``row`` in fresh processes (uncontended: alone; run()
    measures every row's uncontended cost together)."""
    missing = row.missing()
    if missing is not None:
        return Result(row.label, scenario, "not installed", reason=missing)
    if scenario == UNCONTENDED:
        return measure_uncontended([row], settings)[0]
    try:
        with _objects(row.label, 2, initially_held=True) as (ping, pong):
            args = (row.label, ping, pong, settings)
            figures, _ = run_children(
                [(_ping, args), (_pong, args)], settings.timeout, prefix="bench-sync"
            )
    except Exception as exc:
        return Result(row.label, scenario, "error", reason=error_reason(exc))
    return Result(row.label, scenario, "ok", figures=figures)


def measure_uncontended(rows: Sequence[Primitive], settings: SyncSettings) -> list[Result]:
    """The uncontended measurement of every row, all in one fresh process
    (interleaved: see the module docstring), in the order of ``rows``."""
    results: dict[str, Result] = {}
    present = []
    for row in rows:
        missing = row.missing()
        if missing is not None:
            results[row.label] = Result(row.label, UNCONTENDED, "not installed", reason=missing)
        else:
            present.append(row.label)
    if present:
        try:
            (figures,) = run_children(
                [(_uncontended, (present, settings))], settings.timeout, prefix="bench-sync"
            )
        except Exception as exc:
            reason = error_reason(exc)
            figures = {label: {"error": reason} for label in present}
        for label in present:
            f = figures[label]
            if "error" in f:
                results[label] = Result(label, UNCONTENDED, "error", reason=str(f["error"]))
            else:
                results[label] = Result(label, UNCONTENDED, "ok", figures=f)
    return [results[row.label] for row in rows]


def run(
    rows: Sequence[Primitive],
    settings: SyncSettings,
    started: Callable[[Primitive, str], None] | None = None,
    finished: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Every measurement of :func:`plan`, in order (the uncontended ones all
    at once, in one process, when the first of them is due)."""
    uncontended: dict[str, Result] = {}

    def one(row: Primitive, scenario: str) -> Result:
        if scenario != UNCONTENDED:
            return measure(row, scenario, settings)
        if not uncontended:  # every row at once, in one process
            todo = [r for r, sc in plan(rows) if sc == UNCONTENDED]
            uncontended.update((r.label, r) for r in measure_uncontended(todo, settings))
        return uncontended[row.label]

    return run_plan(plan(rows), one, started, finished)


# ------------------------------------------------------------ report


def ratios(results: Sequence[Result]) -> dict[tuple[str, str], float]:
    """(label, scenario) -> cost relative to the scenario's reference in this run."""
    out: dict[tuple[str, str], float] = {}
    ref = {
        UNCONTENDED: (REFERENCE_UNCONTENDED, "ns"),
        HANDOFF: (REFERENCE_HANDOFF, "p50_us"),
    }
    by_key = {(r.label, r.scenario): r for r in results if r.status == "ok"}
    for (label, scenario), result in by_key.items():
        if "x_ref" in result.figures:  # measured paired with the reference
            out[label, scenario] = result.figures["x_ref"]
            continue
        ref_label, key = ref[scenario]
        base = by_key.get((ref_label, scenario))
        if base is not None and base.figures[key] > 0:
            out[label, scenario] = result.figures[key] / base.figures[key]
    return out


def build_tables(results: Sequence[Result]) -> list[Any]:
    """The two rich tables: uncontended cost, and hand-off latency."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rel = ratios(results)

    def failed(result: Result) -> Text:
        style = "dim" if result.status == "not installed" else "red"
        return Text(f"{result.status}: {result.reason}", style=style)

    first = Table(
        title="uncontended acquire+release, one process",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        header_style="bold",
    )
    first.add_column("primitive")
    first.add_column("ns / pair", justify="right")
    first.add_column("median ns", justify="right")
    first.add_column(f"x {REFERENCE_UNCONTENDED}", justify="right")
    second = Table(
        title="hand-off between two processes (round trip = 2 hand-offs)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        header_style="bold",
    )
    second.add_column("primitive")
    second.add_column("p50 µs", justify="right")
    second.add_column("p99 µs", justify="right")
    second.add_column("mean µs", justify="right")
    second.add_column(f"p50 x {REFERENCE_HANDOFF}", justify="right")
    for result in results:
        label = Text(result.label, style="bold" if result.label.startswith("interlink") else "")
        ratio = rel.get((result.label, result.scenario))
        ratio_text = Text("-" if ratio is None else f"{ratio:.2f}x")
        if result.scenario == UNCONTENDED:
            if result.status != "ok":
                first.add_row(label, failed(result), Text(""), Text(""))
                continue
            f = result.figures
            first.add_row(label, Text(f"{f['ns']:.0f}"), Text(f"{f['median_ns']:.0f}"), ratio_text)
        else:
            if result.status != "ok":
                second.add_row(label, failed(result), Text(""), Text(""), Text(""))
                continue
            f = result.figures
            second.add_row(
                label,
                Text(f"{f['p50_us']:.1f}"),
                Text(f"{f['p99_us']:.1f}"),
                Text(f"{f['mean_us']:.1f}"),
                ratio_text,
            )
    return [first, second]


def loop_overhead(results: Sequence[Result]) -> float | None:
    """The empty loop's cost per iteration (ns), the smallest seen in the run."""
    seen = [r.figures["loop_ns"] for r in results if r.status == "ok" and "loop_ns" in r.figures]
    return min(seen) if seen else None


def to_json(host: Any, settings: SyncSettings, results: Sequence[Result]) -> dict[str, Any]:
    """The whole run as a JSON-serialisable document."""
    rel = ratios(results)
    return document(
        "sync",
        host,
        settings,
        references={UNCONTENDED: REFERENCE_UNCONTENDED, HANDOFF: REFERENCE_HANDOFF},
        results=[{**r.to_json(), "ratio": rel.get((r.label, r.scenario))} for r in results],
    )
