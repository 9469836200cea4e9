"""Shows benchmark results: progress bar, rich table, JSON and an optional plot."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .hostinfo import HostInfo
from .peers import REFERENCE, Peer
from .results import Cell, Status
from .settings import Scenario, Settings

RATIO_HEADER = "il \N{MULTIPLICATION SIGN}"
"""Header of the ratio columns: "interlink is N.Nx faster"."""

RATIO_CAPTION = (
    f"{RATIO_HEADER} = how many times faster interlink is than that row: interlink's "
    "throughput ÷ the row's, or the row's p50 round trip ÷ interlink's (above 1: interlink "
    "is faster). "
    "Reference: 'interlink' for the round trip and 64 B, 'interlink send+view' for 1 MiB (the "
    "same work as the peers: the sender hands over a prepared 1 MiB buffer). 1 MiB: msg/s "
    "equals MiB/s. idle CPU: receiver blocked with no traffic, % of one core."
)

_HIGHER_IS_BETTER = {Scenario.SMALL: True, Scenario.LARGE: True, Scenario.ROUNDTRIP: False}
_KEY_FIGURE = {
    Scenario.ROUNDTRIP: "p50_us",
    Scenario.SMALL: "msgs_per_s",
    Scenario.LARGE: "mib_per_s",
}


# ---------------------------------------------------------------- progress


class ProgressBar:
    """A transient rich progress bar over the measurements (a ``harness.ProgressSink``)."""

    def __init__(self, console: Console, total: int) -> None:
        """Show progress of ``total`` measurements on ``console``."""
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("starting", total=total)

    def __enter__(self) -> ProgressBar:
        """Start drawing the bar."""
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop drawing and remove the bar."""
        self._progress.stop()

    def started(self, peer: Peer, scenario: Scenario) -> None:
        """Name the running measurement."""
        self._progress.update(self._task, description=f"{peer.label}: {scenario.display_name}")

    def finished(self, cell: Cell) -> None:
        """Advance by one measurement."""
        self._progress.advance(self._task)


# ---------------------------------------------------------------- ratios


def speedups(cells: Sequence[Cell]) -> dict[tuple[str, Scenario], float]:
    """Return "interlink is N.Nx faster" for every measured cell that has a reference.

    Throughput: reference ÷ cell; latency (p50): cell ÷ reference. Cells
    without an ok reference measurement (or idle CPU cells) get no entry.
    """
    by_key = {(c.transport, c.scenario): c for c in cells if c.ok}
    result = {}
    for cell in by_key.values():
        figure = _KEY_FIGURE.get(cell.scenario)
        reference = by_key.get((REFERENCE[cell.scenario], cell.scenario))
        if figure is None or reference is None:
            continue
        ours, theirs = reference.figures.get(figure), cell.figures.get(figure)
        if not ours or not theirs:
            continue
        higher_is_better = _HIGHER_IS_BETTER[cell.scenario]
        result[(cell.transport, cell.scenario)] = (
            ours / theirs if higher_is_better else theirs / ours
        )
    return result


# ---------------------------------------------------------------- table


def _us(value: float) -> str:
    """Format microseconds with three significant digits or so."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _rate(value: float) -> str:
    """Format a rate with a k/M suffix."""
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _ratio(value: float | None, is_reference: bool) -> str:
    """Format an "interlink is N.Nx faster" ratio."""
    if is_reference:
        return "ref"
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


class _Notes:
    """Numbered footnotes for the reasons behind n/a, error and not-installed cells."""

    def __init__(self) -> None:
        """Start with no notes."""
        self.texts: list[str] = []

    def mark(self, cell: Cell) -> str:
        """Return the cell's short marker, e.g. ``error [2]``, adding its reason as a note."""
        if cell.reason not in self.texts:
            self.texts.append(cell.reason)
        number = self.texts.index(cell.reason) + 1
        return f"{cell.status.value} [{number}]"


# The table's column groups: scenario -> (header, figure, formatter) per column, ratio last.
def _mib(value: float) -> str:
    """Format MiB/s with thousands separators."""
    return f"{value:,.0f}"


def _percent(value: float) -> str:
    """Format a share of one core."""
    return f"{value:.2f}%"


# (1 MiB messages: msg/s equals MiB/s, so the table shows it once; the JSON has both.)
_COLUMNS: dict[Scenario, list[tuple[str, str, Any]]] = {
    Scenario.ROUNDTRIP: [("RTT µs\np50", "p50_us", _us), ("\np99", "p99_us", _us)],
    Scenario.SMALL: [("64 B\nmsg/s", "msgs_per_s", _rate)],
    Scenario.LARGE: [("1 MiB\nMiB/s", "mib_per_s", _mib)],
    Scenario.IDLE: [("idle\nCPU", "cpu_percent", _percent)],
}


def build_table(peers: Sequence[Peer], cells: Sequence[Cell]) -> tuple[Table, list[str]]:
    """Return the result table (one row per peer) and its numbered footnotes."""
    table = Table(
        caption=RATIO_CAPTION,
        caption_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("\ntransport", no_wrap=True)
    for scenario, columns in _COLUMNS.items():
        for header, _, _ in columns:
            table.add_column(header, justify="right", no_wrap=True)
        if scenario in _KEY_FIGURE:
            table.add_column("\n" + RATIO_HEADER, justify="right", style="cyan", no_wrap=True)
    by_key = {(c.transport, c.scenario): c for c in cells}
    ratios = speedups(cells)
    notes = _Notes()
    for peer in peers:
        row: list[str | Text] = [
            Text(peer.label, style="bold" if peer.family == "interlink" else "")
        ]
        for scenario, columns in _COLUMNS.items():
            row.extend(_group(by_key.get((peer.label, scenario)), columns, ratios, notes))
            if scenario in _KEY_FIGURE:
                cell = by_key.get((peer.label, scenario))
                is_ref = REFERENCE[scenario] == peer.label and cell is not None and cell.ok
                row.append(_ratio(ratios.get((peer.label, scenario)), is_ref))
        table.add_row(*row)
    return table, notes.texts


def _group(
    cell: Cell | None,
    columns: list[tuple[str, str, Any]],
    ratios: dict[tuple[str, Scenario], float],
    notes: _Notes,
) -> list[str | Text]:
    """Return the texts of one scenario's value columns for one row."""
    if cell is None:
        return [Text("—", style="dim")] + [""] * (len(columns) - 1)
    if not cell.ok:
        style = {Status.ERROR: "red", Status.NOT_APPLICABLE: "yellow"}.get(cell.status, "dim")
        return [Text(notes.mark(cell), style=style)] + [""] * (len(columns) - 1)
    return [fmt(cell.figures[key]) if key in cell.figures else "?" for _, key, fmt in columns]


def settings_line(settings: Settings) -> str:
    """Return what was measured, in one line."""
    return (
        f"{settings.roundtrips:,} round trips of {settings.small_size} B "
        f"(after {settings.warmup:,} warm-up) · {settings.small_count:,} msgs of "
        f"{settings.small_size} B one-way · {settings.large_count:,} msgs of "
        f"{settings.large_size >> 20} MiB one-way, "
        f"stamps checked · idle receiver {settings.idle_seconds:g} s · "
        "each cell: two fresh processes (spawn)"
    )


def print_report(
    console: Console,
    host: HostInfo,
    settings: Settings,
    peers: Sequence[Peer],
    cells: Sequence[Cell],
) -> None:
    """Print the header line, the table and its footnotes."""
    table, notes = build_table(peers, cells)
    console.print(Text("interlink bench channel", style="bold"), Text(host.line(), style="dim"))
    console.print(Text(settings_line(settings), style="dim"))
    console.print(table)
    for number, text in enumerate(notes, start=1):
        console.print(f"[{number}] {text}", markup=False, highlight=False)


def print_transports(console: Console, peers: Sequence[Peer]) -> None:
    """Print each row's name, the scenarios it measures and whether it is installed."""
    short = {
        Scenario.ROUNDTRIP: "RTT",
        Scenario.SMALL: "64 B",
        Scenario.LARGE: "1 MiB",
        Scenario.IDLE: "idle",
    }
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        header_style="bold",
        caption="--only takes a name, or a family: 'interlink' and 'iceoryx2' pick all their rows",
        caption_justify="left",
    )
    for header in ("transport", "measures", "status"):
        table.add_column(header)
    for peer in peers:
        missing = peer.missing()
        status = Text(missing, style="dim") if missing else Text("available", style="green")
        table.add_row(peer.label, ", ".join(short[s] for s in peer.scenarios), status)
    console.print(table)


# ---------------------------------------------------------------- json


def to_json(host: HostInfo, settings: Settings, cells: Sequence[Cell]) -> dict[str, Any]:
    """Return every raw figure of the run, with the host, the settings and the ratios."""
    ratios = speedups(cells)
    results = []
    for cell in cells:
        entry = cell.to_json()
        entry["interlink_speedup"] = ratios.get((cell.transport, cell.scenario))
        results.append(entry)
    return {
        "benchmark": "channel",
        "host": host.to_json(),
        "settings": dataclasses.asdict(settings),
        "reference": {scenario.value: label for scenario, label in REFERENCE.items()},
        "ratio_definition": RATIO_CAPTION,
        "results": results,
    }


def write_json(target: str, document: dict[str, Any]) -> None:
    """Write ``document`` to the file ``target``, or to standard output for ``-``."""
    text = json.dumps(document, indent=2) + "\n"
    if target == "-":
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(target).write_text(text)


# ---------------------------------------------------------------- plot


def plot_unavailable() -> str | None:
    """Return why ``--plot`` cannot work here (matplotlib missing), or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib: pip install 'interlink[plot]' (or: pip install matplotlib)"
    return None


_PLOTS: list[tuple[Scenario, str, str, Any, bool]] = [
    (Scenario.ROUNDTRIP, "p50_us", "64 B round trip, p50 (µs, lower is better)", _us, False),
    (Scenario.SMALL, "msgs_per_s", "64 B one-way (msg/s, log scale)", _rate, True),
    (Scenario.LARGE, "mib_per_s", "1 MiB one-way, stamps read (MiB/s, log scale)", _mib, True),
    (
        Scenario.IDLE,
        "cpu_percent",
        "idle receiver (% of one core, lower is better)",
        _percent,
        False,
    ),
]


def write_plot(target: str, host: HostInfo, peers: Sequence[Peer], cells: Sequence[Cell]) -> None:
    """Save horizontal bar charts of the four key figures as an image (PNG, SVG, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    by_key = {(c.transport, c.scenario): c for c in cells if c.ok}
    figure, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    for axis, (scenario, key, title, fmt, log) in zip(axes.flat, _PLOTS, strict=True):
        rows = [
            (peer, by_key[(peer.label, scenario)].figures[key])
            for peer in peers
            if (peer.label, scenario) in by_key
        ]
        labels = [peer.label for peer, _ in rows]
        values = [value for _, value in rows]
        colors = ["tab:orange" if peer.family == "interlink" else "tab:blue" for peer, _ in rows]
        bars = axis.barh(labels, values, color=colors)
        axis.bar_label(bars, labels=[fmt(v) for v in values], padding=3, fontsize=8)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10)
        axis.grid(axis="x", alpha=0.3)
        if log and values:
            axis.set_xscale("log")
            axis.set_xlim(min(values) / 2, max(values) * 4)
            axis.xaxis.set_major_formatter(EngFormatter())
        else:
            axis.margins(x=0.15)
    figure.suptitle(f"interlink bench channel\n{host.line()}", fontsize=10)
    figure.tight_layout()
    figure.savefig(target, dpi=120)
    plt.close(figure)
