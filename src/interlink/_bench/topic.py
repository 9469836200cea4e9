"""``interlink bench topic``: interlink.Topic fan-out, against pyzmq PUB/SUB.

One publisher and 1 or 4 subscribers, each in a fresh ``spawn`` process, with
64-byte ``bytes`` messages.  Rows:

interlink.Topic block
    policy "block": the publisher waits for the slowest subscriber, nothing is
    lost; the figure the issue's target is about.
interlink.Topic drop
    policy "drop": the publisher never waits; slow subscribers are lapped and
    count what they lost.
interlink.Topic block raw
    the "block" row through the native handles (``TopicCore.publish``,
    ``TopicSubscriberCore.recv``), without the codec layer: what the
    transport itself costs.
interlink.Topic block batch
    the "block" row with subscribers that take what is there in batches
    (``Subscription.recv_many(256)``) instead of one ``recv`` per message.
pyzmq PUB/SUB
    over ``ipc://`` with unlimited high-water marks (nothing dropped, memory
    buffers instead), when pyzmq is installed.

Each subscriber times itself with ``time.perf_counter`` from its first data
message to the end marker and reports ``received / elapsed``.  The publisher
starts only when every subscriber is ready (for pyzmq: has received a hello,
so the subscription has reached the publisher).  Figures per fan-out: the
mean and the slowest per-subscriber rate, and the scaling ratio
``mean per-subscriber rate at 1 -> 4 / rate at 1 -> 1`` (1.0: every
subscriber as fast as a lone one).  A row's two fan-outs are measured back
to back, in several rounds (the order alternating); figures are medians of
the rounds and the ratio the median of per-round ratios, so that a machine
whose speed drifts between runs (the 2-core VM this was developed on is
bimodal over time) compares like with like.  All processes share the machine's cores:
on 2 cores, 1 publisher + 4 subscribers oversubscribe it, which bounds that
ratio by the CPU time each process gets.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .children import run_children
from .peers import SPAWN
from .rows import Outcome, document, error_reason, missing_module, run_plan, select_rows

FANOUTS = (1, 4)
PAYLOAD = 64
END = b"E" * 8
HELLO = b"H" * 8

BLOCK = "interlink.Topic block"
DROP = "interlink.Topic drop"
RAW = "interlink.Topic block raw"
BATCH = "interlink.Topic block batch"
ZMQ = "pyzmq PUB/SUB"
REFERENCE = BLOCK


@dataclass(frozen=True)
class TopicSettings:
    """Counts and limits of one ``bench topic`` run (picklable)."""

    messages: int = 2_000_000
    """Messages the publisher sends per measurement."""
    timeout: float = 120.0
    """Wall-clock limit of one measurement, process start-up included."""
    rounds: int = 3
    """Rounds per row, each measuring 1 -> 1 and 1 -> 4 back to back (the
    order alternating); figures are medians over the rounds, the scaling
    ratio the median of per-round ratios."""

    @classmethod
    def choose(
        cls, *, quick: bool = False, count: int | None = None, timeout: float | None = None
    ) -> TopicSettings:
        """Full or ``quick`` settings, with ``count`` messages if given."""
        base = cls(messages=50_000, timeout=30.0, rounds=1) if quick else cls()
        changes: dict[str, Any] = {}
        if count is not None:
            changes["messages"] = count
        if timeout is not None:
            changes["timeout"] = timeout
        return TopicSettings(**{**base.__dict__, **changes}) if changes else base

    def line(self) -> str:
        """One line saying what was measured."""
        return (
            f"{self.messages:,} x {PAYLOAD} B bytes; one publisher -> 1 and 4 subscribers, "
            f"each a spawned process; {self.rounds} round(s) per row, medians; "
            f"limit {self.timeout:g} s per measurement"
        )


@dataclass(frozen=True)
class Row:
    """One publish/subscribe implementation."""

    label: str
    family: str
    module: str | None = None

    def missing(self) -> str | None:
        """Why it cannot be measured here, or None."""
        return missing_module(self.module)


ROWS: tuple[Row, ...] = (
    Row(BLOCK, "interlink"),
    Row(DROP, "interlink"),
    Row(RAW, "interlink"),
    Row(BATCH, "interlink"),
    Row(ZMQ, "pyzmq", module="zmq"),
)


def select(only: Sequence[str]) -> list[Row]:
    """The rows ``--only`` picks (all without it); ValueError for an unknown name."""
    return select_rows(ROWS, only, "topic")


class Result(Outcome[int]):
    """One measurement: one row at one fan-out ("ok", "n/a" or "error")."""

    LABEL_KEY = "topic"
    CASE_KEY = "subscribers"

    @property
    def subscribers(self) -> int:
        """The fan-out: how many subscriber processes."""
        return self.case


def plan(rows: Sequence[Row]) -> list[tuple[Row, int]]:
    """The measurements :func:`run` makes, in order."""
    return [(r, n) for r in rows for n in FANOUTS]


# ------------------------------------------------------------ child bodies


def _wait_all(events: Sequence[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for ev in events:
        if not ev.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("a subscriber did not start")


def _il_subscriber(
    topic: Any, ready: Any, done: Any, timeout: float, how: str = ""
) -> dict[str, float]:
    sub = topic.subscribe()
    ready.set()
    recv = sub._core.recv if how == RAW else sub.recv
    clock = time.perf_counter
    first = bytes(recv(timeout))
    t0 = clock()
    n = 0 if first == END else 1
    if first != END and how == BATCH:
        recv_many = sub.recv_many
        while True:
            batch = recv_many(256, timeout)
            for msg in batch:
                if len(msg) != PAYLOAD:
                    break
                n += 1
            else:
                continue
            break
    elif first != END:
        while True:
            msg = recv(timeout)
            if len(msg) != PAYLOAD:
                break
            n += 1
    elapsed = clock() - t0
    done.set()
    lost = sub.lost
    sub.close()
    topic.close()
    return {"received": n, "lost": lost, "elapsed_s": elapsed}


def _il_publisher(
    topic: Any,
    readies: Sequence[Any],
    dones: Sequence[Any],
    count: int,
    timeout: float,
    how: str = "",
) -> dict[str, float]:
    _wait_all(readies, timeout)
    payload = b"x" * PAYLOAD
    publish = topic._core.publish if how == RAW else topic.publish
    t0 = time.perf_counter()
    for _ in range(count):
        publish(payload, timeout)
    elapsed = time.perf_counter() - t0
    # end markers until every subscriber has stopped (a lapped one may miss some)
    deadline = time.monotonic() + timeout
    while not all(d.is_set() for d in dones) and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            publish(END, 0.01)
        time.sleep(0.001)
    topic.close()
    return {"published_per_s": count / elapsed if elapsed > 0 else float("inf")}


def _zmq_subscriber(endpoint: str, ready: Any, done: Any, timeout: float) -> dict[str, float]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    recv = sock.recv
    msg = recv()
    while msg == HELLO:  # the subscription has reached the publisher
        ready.set()
        msg = recv()
    clock = time.perf_counter
    t0 = clock()
    n = 0 if msg == END else 1
    if msg != END:
        while True:
            msg = recv()
            if len(msg) != PAYLOAD:
                break
            n += 1
    elapsed = clock() - t0
    done.set()
    sock.close(0)
    ctx.term()
    return {"received": n, "lost": 0, "elapsed_s": elapsed}


def _zmq_publisher(
    endpoint: str, readies: Sequence[Any], dones: Sequence[Any], count: int, timeout: float
) -> dict[str, float]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.bind(endpoint)
    deadline = time.monotonic() + timeout
    while not all(r.is_set() for r in readies):
        if time.monotonic() > deadline:
            raise TimeoutError("a subscriber did not start")
        sock.send(HELLO)
        time.sleep(0.001)
    payload = b"x" * PAYLOAD
    send = sock.send
    t0 = time.perf_counter()
    for _ in range(count):
        send(payload)
    elapsed = time.perf_counter() - t0
    while not all(d.is_set() for d in dones) and time.monotonic() < deadline:
        send(END)
        time.sleep(0.001)
    sock.close(0)
    ctx.term()
    return {"published_per_s": count / elapsed if elapsed > 0 else float("inf")}


# ------------------------------------------------------------ measuring


@contextlib.contextmanager
def _endpoint(label: str) -> Iterator[Any]:
    """The topic (interlink, created in the parent) or the ipc endpoint (pyzmq)."""
    if label in (BLOCK, DROP, RAW, BATCH):
        import interlink

        topic = interlink.Topic(
            policy="drop" if label == DROP else "block", codec="bytes", capacity=1 << 20
        )
        try:
            yield topic
        finally:
            topic.close()
    else:
        with tempfile.TemporaryDirectory(prefix="il-bench-topic-") as tmp:
            yield f"ipc://{tmp}/pubsub"


def measure(row: Row, subscribers: int, settings: TopicSettings) -> Result:
    """One measurement of ``row`` with ``subscribers`` subscriber processes."""
    missing = row.missing()
    if missing is not None:
        return Result(row.label, subscribers, "n/a", reason=missing)
    is_zmq = row.label == ZMQ
    sub_body: Callable[..., Any] = _zmq_subscriber if is_zmq else _il_subscriber
    pub_body: Callable[..., Any] = _zmq_publisher if is_zmq else _il_publisher
    t = settings.timeout
    try:
        with _endpoint(row.label) as where:
            readies = [SPAWN.Event() for _ in range(subscribers)]
            dones = [SPAWN.Event() for _ in range(subscribers)]
            extra = (row.label,) if row.label in (RAW, BATCH) else ()
            jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
                (sub_body, (where, readies[k], dones[k], t, *extra)) for k in range(subscribers)
            ]
            jobs.append((pub_body, (where, readies, dones, settings.messages, t, *extra)))
            figures = run_children(jobs, t, prefix="bench-topic")
    except Exception as exc:
        return Result(row.label, subscribers, "error", reason=error_reason(exc))
    subs, pub = figures[:-1], figures[-1]
    rates = [f["received"] / f["elapsed_s"] if f["elapsed_s"] > 0 else 0.0 for f in subs]
    received = sum(f["received"] for f in subs)
    lost = sum(f["lost"] for f in subs)
    return Result(
        row.label,
        subscribers,
        "ok",
        figures={
            "per_sub_mean": statistics.fmean(rates),
            "per_sub_min": min(rates),
            "aggregate_per_s": sum(rates),
            "published_per_s": pub["published_per_s"],
            "received": received,
            "lost": lost,
            "lost_fraction": lost / (received + lost) if received + lost else 0.0,
        },
    )


def measure_row(row: Row, settings: TopicSettings) -> dict[int, Result]:
    """Every fan-out of ``row``, ``settings.rounds`` times, the fan-outs of a
    round back to back (first 1 -> 1, then 1 -> 4, the next round the other
    way round): on a machine whose speed drifts, a ratio within a round
    compares like with like.  Per fan-out: the median figures of the rounds,
    with ``paired_ratio`` (median of the per-round 1 -> 4 / 1 -> 1 ratios)
    on the widest fan-out, and ``rounds``."""
    runs: dict[int, list[Result]] = {n: [] for n in FANOUTS}
    for r in range(max(1, settings.rounds)):
        for n in FANOUTS if r % 2 == 0 else tuple(reversed(FANOUTS)):
            runs[n].append(measure(row, n, settings))
    out: dict[int, Result] = {}
    for n, results in runs.items():
        bad = next((x for x in results if x.status != "ok"), None)
        if bad is not None:
            out[n] = bad
            continue
        keys = results[0].figures.keys()
        figures = {k: statistics.median(x.figures[k] for x in results) for k in keys}
        figures["rounds"] = len(results)
        out[n] = Result(row.label, n, "ok", figures=figures)
    wide, one = runs[max(FANOUTS)], runs[min(FANOUTS)]
    if all(x.status == "ok" and x.figures["per_sub_mean"] > 0 for x in one + wide):
        out[max(FANOUTS)].figures["paired_ratio"] = statistics.median(
            w.figures["per_sub_mean"] / o.figures["per_sub_mean"]
            for w, o in zip(wide, one, strict=True)
        )
    return out


def run(
    rows: Sequence[Row],
    settings: TopicSettings,
    started: Callable[[Row, int], None] | None = None,
    finished: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Every measurement of :func:`plan`, in order (a row's fan-outs are
    measured together, in rounds: :func:`measure_row`)."""
    done: dict[str, dict[int, Result]] = {}

    def one(row: Row, n: int) -> Result:
        if row.label not in done:
            done[row.label] = measure_row(row, settings)
        return done[row.label][n]

    return run_plan(plan(rows), one, started, finished)


# ------------------------------------------------------------ report


def scaling(results: Sequence[Result]) -> dict[str, float]:
    """label -> mean per-subscriber rate at 1 -> 4 / rate at 1 -> 1 (the
    median of per-round ratios when measured in rounds)."""
    ok = {(r.label, r.subscribers): r for r in results if r.status == "ok"}
    out: dict[str, float] = {}
    for (label, n), r in ok.items():
        one = ok.get((label, 1))
        if n != max(FANOUTS) or one is None or one.figures["per_sub_mean"] <= 0:
            continue
        out[label] = r.figures.get(
            "paired_ratio", r.figures["per_sub_mean"] / one.figures["per_sub_mean"]
        )
    return out


def build_tables(results: Sequence[Result]) -> list[Any]:
    """One rich table: a row per implementation and fan-out."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    scale = scaling(results)
    table = Table(
        title=f"{PAYLOAD} B messages, one publisher -> N subscribers (msg/s per subscriber)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        header_style="bold",
    )
    table.add_column("topic", no_wrap=True)
    for column, justify in (
        ("N", "right"),
        ("mean", "right"),
        ("slowest", "right"),
        ("aggregate", "right"),
        ("lost", "right"),
        ("1->4 / 1->1", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in results:
        label = Text(r.label, style="bold" if r.label.startswith("interlink") else "")
        if r.status != "ok":
            style = "dim" if r.status == "n/a" else "red"
            table.add_row(
                label,
                str(r.subscribers),
                Text(f"{r.status}: {r.reason}", style=style),
                "",
                "",
                "",
                "",
            )
            continue
        f = r.figures
        ratio = scale.get(r.label) if r.subscribers == max(FANOUTS) else None
        table.add_row(
            label,
            str(r.subscribers),
            f"{f['per_sub_mean']:,.0f}",
            f"{f['per_sub_min']:,.0f}",
            f"{f['aggregate_per_s']:,.0f}",
            f"{100 * f['lost_fraction']:.1f} %",
            "-" if ratio is None else f"{ratio:.2f}",
        )
    return [table]


def to_json(host: Any, settings: TopicSettings, results: Sequence[Result]) -> dict[str, Any]:
    """The whole run as a JSON-serialisable document."""
    return document(
        "topic",
        host,
        settings,
        reference=REFERENCE,
        results=[r.to_json() for r in results],
        scaling=scaling(results),
    )
