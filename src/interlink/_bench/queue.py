"""``interlink bench queue``: interlink.Queue against multiprocessing.Queue and faster-fifo.

Three scenarios, each measured in fresh ``spawn`` processes under a
wall-clock limit, with the same objects and processes for every row:

small
    N tuples ``(i, "abc", 2.0)``, put one at a time and got one at a time,
    one producer and one consumer; messages per second.
small4x4
    the same N tuples split over 4 producers (N/4 each), taken by 4
    consumers one at a time; messages per second through the queue as a
    whole.
array
    M numpy arrays of 2**20 float64 (8 MiB); the consumer touches the first
    and the last element of each and drops it; arrays and MiB per second.

Every queue uses its own default serialisation (pickle).  The rate is timed in
the consumer with ``time.perf_counter``, from the return of its first ``get``
to the return of its last, so process start-up is left out the same way for
every row: ``(count - 1) / elapsed``.  The producer starts putting only once
the consumer is ready to get (an event), so the timing does not start on a
queue filled in advance.  In ``small4x4`` all eight processes start together
(a barrier); each consumer times its own first and last get and the rate is
``(N - 1) / (latest last get - earliest first get)`` (``time.perf_counter``
is CLOCK_MONOTONIC, one clock for all processes on Linux).  Once every
producer's objects are in the queue (each flushes multiprocessing's feeder
thread, then counts itself done), a ninth process puts one ``None`` per
consumer, which stops it; the consumers' counts must add up to N ("min/even":
the least busy consumer's share of an even split).  The ratio column is
interlink's rate divided by the row's rate ("il x": how many times faster
interlink is).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .children import run_children
from .peers import SPAWN, load
from .rows import Outcome, document, error_reason, missing_module, run_plan, select_rows

SMALL = "small"
SMALL_4X4 = "small4x4"
ARRAY = "array"
SCENARIOS = (SMALL, SMALL_4X4, ARRAY)

PRODUCERS = CONSUMERS = 4
"""Processes on each side of ``small4x4``."""

REFERENCE = "interlink.Queue"
"""The row every ratio is computed against."""

ARRAY_ELEMENTS = 1 << 20
"""float64 elements of one array: 8 MiB."""
ARRAY_BYTES = ARRAY_ELEMENTS * 8
ARRAY_QUEUE_BYTES = 128 << 20
"""Capacity in bytes of the queues carrying arrays (where the queue has one)."""
SMALL_QUEUE_BYTES = 1 << 20
"""faster-fifo's buffer for the small objects (its default, 200 kB, is smaller)."""


@dataclass(frozen=True)
class QueueSettings:
    """Counts and limits of one ``bench queue`` run (picklable)."""

    messages: int = 200_000
    """Small objects per measurement."""
    arrays: int = 200
    """8 MiB arrays per measurement."""
    timeout: float = 120.0
    """Wall-clock limit of one measurement, process start-up included."""

    @classmethod
    def choose(
        cls, *, quick: bool = False, count: int | None = None, timeout: float | None = None
    ) -> QueueSettings:
        """Full or ``quick`` settings; ``count`` sets the small objects (arrays: ``count // 1000``,
        at least 4)."""
        base = cls(messages=20_000, arrays=30, timeout=30.0) if quick else cls()
        changes: dict[str, Any] = {}
        if count is not None:
            changes.update(messages=count, arrays=max(4, count // 1000))
        if timeout is not None:
            changes["timeout"] = timeout
        if not changes:
            return base
        return QueueSettings(**{**base.__dict__, **changes})

    def line(self) -> str:
        """One line saying what was measured."""
        return (
            f"small: {self.messages:,} tuples (i, 'abc', 2.0), 1 -> 1 and "
            f"{PRODUCERS} -> {CONSUMERS} processes; "
            f"array: {self.arrays:,} x 8 MiB float64, 1 -> 1; "
            f"limit {self.timeout:g} s per measurement"
        )


@dataclass(frozen=True)
class Row:
    """One queue implementation."""

    label: str
    family: str
    module: str | None = None
    """The package it needs (None: always available)."""

    def missing(self, scenario: str) -> str | None:
        """Why it cannot be measured here in ``scenario``, or None."""
        return missing_module(self.module, "numpy" if scenario == ARRAY else None)


ROWS: tuple[Row, ...] = (
    Row(REFERENCE, "interlink"),
    Row("multiprocessing.Queue", "multiprocessing"),
    Row("faster_fifo.Queue", "faster_fifo", module="faster_fifo"),
)


def select(only: Sequence[str]) -> list[Row]:
    """The rows ``--only`` picks (all without it); ValueError for an unknown name."""
    return select_rows(ROWS, only, "queue")


class Result(Outcome[str]):
    """One measurement of one row ("ok", "n/a" or "error")."""

    LABEL_KEY = "queue"
    CASE_KEY = "scenario"

    @property
    def scenario(self) -> str:
        """SMALL, SMALL_4X4 or ARRAY."""
        return self.case


def plan(rows: Sequence[Row]) -> list[tuple[Row, str]]:
    """The measurements :func:`run` makes, in order."""
    return [(r, s) for s in SCENARIOS for r in rows]


# ------------------------------------------------------------ the queues


@contextlib.contextmanager
def _make_queue(label: str, scenario: str) -> Iterator[Any]:
    """Create the queue for one measurement in the parent; close it afterwards.

    The parent keeps its handle until both children have exited (an anonymous
    interlink.Queue is opened by name in the children).
    """
    if label == REFERENCE:
        import interlink

        queue: Any = (
            interlink.Queue(capacity=ARRAY_QUEUE_BYTES) if scenario == ARRAY else interlink.Queue()
        )
        try:
            yield queue
        finally:
            queue.close()
    elif label == "multiprocessing.Queue":
        queue = SPAWN.Queue()
        try:
            yield queue
        finally:
            queue.close()
            queue.join_thread()
    elif label == "faster_fifo.Queue":
        size = ARRAY_QUEUE_BYTES if scenario == ARRAY else SMALL_QUEUE_BYTES
        queue = load("faster_fifo").Queue(max_size_bytes=size)
        try:
            yield queue
        finally:
            queue.close()
    else:  # pragma: no cover - ROWS and this function go together
        raise ValueError(label)


# ------------------------------------------------------------ child bodies


def _items(scenario: str, count: int) -> Iterator[Any]:
    """The objects the producer puts: the same for every row."""
    if scenario in (SMALL, SMALL_4X4):
        for i in range(count):
            yield (i, "abc", 2.0)
    else:
        arr = load("numpy").ones(ARRAY_ELEMENTS)
        for _ in range(count):
            yield arr


def _producer(
    queue: Any, ready: Any, scenario: str, count: int, timeout: float
) -> dict[str, float]:
    if not ready.wait(timeout):
        raise TimeoutError("the consumer did not start")
    put = queue.put
    for item in _items(scenario, count):
        put(item, True, timeout)
    if type(queue).__module__.startswith("multiprocessing"):  # wait for the feeder thread
        queue.close()
        queue.join_thread()
    return {}


def _consumer(
    queue: Any, ready: Any, scenario: str, count: int, timeout: float
) -> dict[str, float]:
    get = queue.get
    clock = time.perf_counter
    touched = 0.0
    ready.set()  # the producer starts now: nothing is queued in advance of the timing
    item = get(True, timeout)
    t0 = clock()
    if scenario == ARRAY:
        touched += item[0] + item[-1]
    del item
    for _ in range(count - 1):
        item = get(True, timeout)
        if scenario == ARRAY:
            touched += item[0] + item[-1]
        del item
    elapsed = clock() - t0
    if scenario == ARRAY and touched != 2.0 * count:
        raise AssertionError(f"arrays arrived damaged (sum of ends {touched}, not {2 * count})")
    rate = (count - 1) / elapsed if elapsed > 0 else float("inf")
    figures = {"per_s": rate, "elapsed_s": elapsed}
    if scenario == ARRAY:
        figures["mib_per_s"] = rate * ARRAY_BYTES / (1 << 20)
    return figures


def _flush(queue: Any) -> None:
    """Make sure what this producer put is in the queue (multiprocessing's feeder thread)."""
    if type(queue).__module__.startswith("multiprocessing"):
        queue.close()
        queue.join_thread()


def _producer_nxn(
    queue: Any, start: Any, finished: Any, all_put: Any, count: int, timeout: float
) -> dict[str, float]:
    start.wait(timeout)
    put = queue.put
    for item in _items(SMALL, count):
        put(item, True, timeout)
    _flush(queue)  # in the queue before it counts as finished
    with finished.get_lock():
        finished.value += 1
        if finished.value == PRODUCERS:
            all_put.set()
    return {}


def _stopper_nxn(queue: Any, all_put: Any, consumers: int, timeout: float) -> dict[str, float]:
    """Once every producer's objects are in the queue, put one stop per consumer."""
    if not all_put.wait(timeout):
        raise TimeoutError("the producers did not finish")
    for _ in range(consumers):
        queue.put(None, True, timeout)
    _flush(queue)
    return {}


def _consumer_nxn(queue: Any, start: Any, timeout: float) -> dict[str, float]:
    get = queue.get
    clock = time.perf_counter
    start.wait(timeout)
    got = 0
    first = last = 0.0
    while True:
        item = get(True, timeout)
        if item is None:
            break
        last = clock()
        if not got:
            first = last
        got += 1
    return {"got": float(got), "first": first, "last": last}


def _measure_nxn(queue: Any, settings: QueueSettings) -> dict[str, float]:
    """Run 4 producers and 4 consumers on ``queue``; the whole queue's figures.

    A ninth process, idle until every producer is done, puts the stops (a
    closed multiprocessing.Queue, flushed, cannot put them itself).
    """
    per = settings.messages // PRODUCERS
    total = per * PRODUCERS
    start = SPAWN.Barrier(PRODUCERS + CONSUMERS)
    finished = SPAWN.Value("i", 0)
    all_put = SPAWN.Event()
    timeout = settings.timeout
    jobs: list[tuple[Callable[..., dict[str, float]], tuple[Any, ...]]] = [
        (_consumer_nxn, (queue, start, timeout)) for _ in range(CONSUMERS)
    ]
    jobs += [
        (_producer_nxn, (queue, start, finished, all_put, per, timeout)) for _ in range(PRODUCERS)
    ]
    jobs.append((_stopper_nxn, (queue, all_put, CONSUMERS, timeout)))
    figures = run_children(jobs, timeout, prefix="bench-queue")[:CONSUMERS]
    got = sum(int(f["got"]) for f in figures)
    if got != total:
        raise RuntimeError(f"the consumers got {got:,} objects, not {total:,}")
    active = [f for f in figures if f["got"]]
    elapsed = max(f["last"] for f in active) - min(f["first"] for f in active)
    rate = (total - 1) / elapsed if elapsed > 0 else float("inf")
    return {
        "per_s": rate,
        "elapsed_s": elapsed,
        "min_share": min(f["got"] for f in figures) / total,
    }


def measure(row: Row, scenario: str, settings: QueueSettings) -> Result:
    """One measurement of ``row`` in ``scenario``, in fresh processes."""
    missing = row.missing(scenario)
    if missing is not None:
        return Result(row.label, scenario, "n/a", reason=missing)
    count = settings.messages if scenario == SMALL else settings.arrays
    try:
        with _make_queue(row.label, scenario) as queue:
            if scenario == SMALL_4X4:
                figures = _measure_nxn(queue, settings)
            else:
                args = (queue, SPAWN.Event(), scenario, count, settings.timeout)
                figures, _ = run_children(
                    [(_consumer, args), (_producer, args)], settings.timeout, prefix="bench-queue"
                )
    except Exception as exc:
        return Result(row.label, scenario, "error", reason=error_reason(exc))
    return Result(row.label, scenario, "ok", figures=figures)


def run(
    rows: Sequence[Row],
    settings: QueueSettings,
    started: Callable[[Row, str], None] | None = None,
    finished: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Every measurement of :func:`plan`, in order."""
    return run_plan(plan(rows), lambda row, sc: measure(row, sc, settings), started, finished)


# ------------------------------------------------------------ report


def ratios(results: Sequence[Result]) -> dict[tuple[str, str], float]:
    """(label, scenario) -> interlink.Queue's rate / this row's rate, in the same run."""
    out: dict[tuple[str, str], float] = {}
    by_key = {(r.label, r.scenario): r for r in results if r.status == "ok"}
    for (label, scenario), result in by_key.items():
        base = by_key.get((REFERENCE, scenario))
        if base is not None and result.figures["per_s"] > 0:
            out[label, scenario] = base.figures["per_s"] / result.figures["per_s"]
    return out


def build_tables(results: Sequence[Result]) -> list[Any]:
    """The three rich tables: small objects 1 -> 1 and 4 -> 4, and 8 MiB arrays."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rel = ratios(results)

    def table(title: str, columns: Sequence[str]) -> Table:
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
        t.add_column("queue")
        for column in columns:
            t.add_column(column, justify="right")
        t.add_column("il x", justify="right")
        return t

    small = table("small objects (i, 'abc', 2.0), one producer -> one consumer", ["msg/s"])
    many = table(
        f"small objects (i, 'abc', 2.0), {PRODUCERS} producers -> {CONSUMERS} consumers",
        ["msg/s", "min/even"],
    )
    array = table("8 MiB numpy arrays, one producer -> one consumer", ["arrays/s", "MiB/s"])
    targets = {SMALL: small, SMALL_4X4: many, ARRAY: array}
    for result in results:
        target = targets[result.scenario]
        label = Text(result.label, style="bold" if result.label.startswith("interlink") else "")
        width = 1 if result.scenario == SMALL else 2
        if result.status != "ok":
            style = "dim" if result.status == "n/a" else "red"
            target.add_row(
                label,
                Text(f"{result.status}: {result.reason}", style=style),
                *[Text("") for _ in range(width)],
            )
            continue
        ratio = rel.get((result.label, result.scenario))
        ratio_text = Text("-" if ratio is None else f"{ratio:.2f}x")
        f = result.figures
        if result.scenario == SMALL:
            target.add_row(label, Text(f"{f['per_s']:,.0f}"), ratio_text)
        elif result.scenario == SMALL_4X4:
            share = Text(f"{f['min_share'] * CONSUMERS:.2f}")
            target.add_row(label, Text(f"{f['per_s']:,.0f}"), share, ratio_text)
        else:
            target.add_row(
                label, Text(f"{f['per_s']:,.1f}"), Text(f"{f['mib_per_s']:,.0f}"), ratio_text
            )
    return [small, many, array]


def to_json(host: Any, settings: QueueSettings, results: Sequence[Result]) -> dict[str, Any]:
    """The whole run as a JSON-serialisable document."""
    rel = ratios(results)
    return document(
        "queue",
        host,
        settings,
        reference=REFERENCE,
        results=[{**r.to_json(), "ratio": rel.get((r.label, r.scenario))} for r in results],
    )
