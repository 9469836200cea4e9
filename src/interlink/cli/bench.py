"""``interlink bench``: measure interlink against the IPC mechanisms a user would otherwise pick.

``interlink bench`` runs the default scenario group, ``channel``; other groups
(sync, queue, topic) are added as further subcommands of :func:`bench`. The
options below are accepted both by ``bench`` and by each subcommand, so
``interlink bench --quick`` and ``interlink bench channel --quick`` are the
same run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from click.core import ParameterSource

F = TypeVar("F", bound=Callable[..., Any])


def bench_options(command: F) -> F:
    """Add the options shared by ``bench`` and its subcommands to ``command``."""
    options = [
        click.option(
            "--quick", is_flag=True, help="Small counts: the whole run takes well under a minute."
        ),
        click.option(
            "--count",
            type=click.IntRange(min=100),
            help="64 B one-way messages; round trips are COUNT/10, 1 MiB messages COUNT/100.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=1.0),
            help="Wall-clock limit of one measurement in seconds (default 120, --quick 30).",
        ),
        click.option(
            "--idle-seconds",
            type=click.FloatRange(min=0.1),
            help="How long the idle receiver sits blocked (default 2).",
        ),
        click.option(
            "--only",
            "only",
            multiple=True,
            metavar="NAME",
            help="Measure only this transport (repeatable); 'interlink' selects all its rows.",
        ),
        click.option(
            "--json",
            "json_target",
            metavar="FILE",
            help="Also write every raw figure as JSON to FILE ('-': standard output).",
        ),
        click.option(
            "--plot",
            "plot_target",
            metavar="FILE.png",
            help="Also save bar charts to FILE.png (needs matplotlib).",
        ),
        click.option("--list", "list_only", is_flag=True, help="List the transports and exit."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def merged_options(ctx: click.Context, own: dict[str, Any]) -> dict[str, Any]:
    """Return the options given to ``bench`` overridden by those given to the subcommand."""
    merged = dict(ctx.parent.params) if ctx.parent is not None else {}
    for name, value in own.items():
        if name not in merged or ctx.get_parameter_source(name) is not ParameterSource.DEFAULT:
            merged[name] = value
    return merged


@click.group(invoke_without_command=True)
@bench_options
@click.pass_context
def bench(ctx: click.Context, /, **options: Any) -> None:
    """Measure interlink against other IPC mechanisms (default: the channel benchmark).

    Every figure is measured between two separate processes, with the same
    payloads for every transport; ratios compare to interlink in the same run.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(channel, **options)


@bench.command()
@bench_options
@click.pass_context
def channel(ctx: click.Context, /, **options: Any) -> None:
    """Channels: 64 B round trip, 64 B and 1 MiB one-way, idle receiver CPU.

    Compared: interlink (send/recv, batches, loans), os.pipe, socketpair,
    multiprocessing Pipe and Queue, and faster-fifo, pyzmq, posix_ipc and
    iceoryx2 when installed.
    """
    opts = merged_options(ctx, options)
    # Imported here: `interlink --help` and the other commands stay fast.
    from rich.console import Console

    from interlink._bench import harness, hostinfo, peers, report
    from interlink._bench.results import Status
    from interlink._bench.settings import Settings

    try:
        rows = peers.select(opts["only"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--only") from None
    json_target: str | None = opts["json_target"]
    console = Console(stderr=json_target == "-")
    if opts["list_only"]:
        report.print_transports(console, rows)
        return
    plot_target: str | None = opts["plot_target"]
    if plot_target is not None:
        problem = report.plot_unavailable()
        if problem is not None:
            raise click.UsageError(problem)
    settings = Settings.choose(
        quick=opts["quick"],
        count=opts["count"],
        timeout=opts["timeout"],
        idle_seconds=opts["idle_seconds"],
    )
    host = hostinfo.collect()
    with report.ProgressBar(console, total=len(harness.plan(rows))) as progress:
        cells = harness.run(rows, settings, progress)
    report.print_report(console, host, settings, rows, cells)
    if json_target is not None:
        report.write_json(json_target, report.to_json(host, settings, cells))
    if plot_target is not None:
        report.write_plot(plot_target, host, rows, cells)
        console.print(f"plot saved to {plot_target}")
    if any(c.status is Status.ERROR and c.transport.startswith("interlink") for c in cells):
        raise click.ClickException("interlink failed in at least one measurement (see above)")


def _run_rows_bench(
    ctx: click.Context,
    options: dict[str, Any],
    bench_module: Any,
    settings_type: Any,
    list_line: Callable[[Any], str],
    step: Callable[[Any, Any], str],
    note: Callable[[Sequence[Any]], str | None] = lambda results: None,
) -> None:
    """The body of ``bench sync``, ``bench queue`` and ``bench topic``.

    ``bench_module`` is the benchmark's module under ``interlink._bench``
    (``select``, ``plan``, ``run``, ``build_tables``, ``to_json``);
    ``settings_type`` its settings class (``choose``, ``line``). ``list_line``
    gives a row's line for ``--list``, ``step`` the progress text of a (row,
    case) measurement, ``note`` a line printed under the tables (None: none).
    Raises ClickException when an interlink row failed.
    """
    opts = merged_options(ctx, options)
    # Imported here: `interlink --help` and the other commands stay fast.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.text import Text

    from interlink._bench import hostinfo, report

    try:
        rows = bench_module.select(opts["only"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--only") from None
    json_target: str | None = opts["json_target"]
    console = Console(stderr=json_target == "-")
    if opts["list_only"]:
        for row in rows:
            console.print(Text(list_line(row)))
        return
    if opts["plot_target"] is not None:
        raise click.UsageError("--plot is only available for the channel benchmark")
    settings = settings_type.choose(
        quick=opts["quick"], count=opts["count"], timeout=opts["timeout"]
    )
    host = hostinfo.collect()
    steps = bench_module.plan(rows)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=len(steps))
        results = bench_module.run(
            rows,
            settings,
            started=lambda row, case: progress.update(task, description=step(row, case)),
            finished=lambda result: progress.advance(task),
        )
    console.print(
        Text(f"interlink bench {ctx.command.name}", style="bold"), Text(host.line(), style="dim")
    )
    console.print(Text(settings.line(), style="dim"))
    for table in bench_module.build_tables(results):
        console.print(table)
    text = note(results)
    if text is not None:
        console.print(Text(text), highlight=False)
    if json_target is not None:
        report.write_json(json_target, bench_module.to_json(host, settings, results))
    if any(r.status == "error" and r.label.startswith("interlink") for r in results):
        raise click.ClickException("interlink failed in at least one measurement (see above)")


@bench.command()
@bench_options
@click.pass_context
def sync(ctx: click.Context, /, **options: Any) -> None:
    """Locks and semaphores: uncontended acquire+release, hand-off between two processes.

    Uncontended: acquire()+release() in a loop in one process for interlink
    Lock, RLock and Semaphore, threading.Lock (the in-process reference),
    multiprocessing.Lock and posix_ipc.Semaphore (when installed). Hand-off:
    round trips between two spawned processes, each waking the other through
    two objects, for interlink Lock and Semaphore, multiprocessing.Lock and
    posix_ipc.Semaphore; p50/p99. COUNT sets the uncontended iterations (round
    trips: COUNT/10); --idle-seconds and --plot apply to the channel benchmark only.
    """
    from interlink._bench import sync as bench_sync

    def list_line(row: Any) -> str:
        scenarios = "uncontended, hand-off" if row.handoff else "uncontended"
        state = "installed" if row.missing() is None else "not installed"
        return f"{row.label:<22} {scenarios:<22} {state}"

    def note(results: Sequence[Any]) -> str | None:
        loop = bench_sync.loop_overhead(results)
        if loop is None:
            return None
        return f"ns / pair includes the Python loop itself (~{loop:.0f} ns, empty loop)."

    _run_rows_bench(
        ctx,
        options,
        bench_sync,
        bench_sync.SyncSettings,
        list_line,
        lambda row, scenario: f"{row.label} {scenario}",
        note,
    )


@bench.command()
@bench_options
@click.pass_context
def queue(ctx: click.Context, /, **options: Any) -> None:
    """Queues: small objects (1 -> 1 and 4 -> 4 processes) and 8 MiB numpy arrays.

    interlink.Queue against multiprocessing.Queue and faster_fifo.Queue (when
    installed), each with its default pickling, the same objects and spawned
    processes for every queue; rates are timed in the consumers from the
    first get to the last. COUNT sets the small objects (split over the 4
    producers in the 4 -> 4 case; arrays: COUNT/1000, at least 4);
    --idle-seconds and --plot apply to the channel benchmark only.
    """
    from interlink._bench import queue as bench_queue

    def list_line(row: Any) -> str:
        state = "installed" if row.missing(bench_queue.SMALL) is None else "not installed"
        return f"{row.label:<24} {state}"

    _run_rows_bench(
        ctx,
        options,
        bench_queue,
        bench_queue.QueueSettings,
        list_line,
        lambda row, scenario: f"{row.label} {scenario}",
        lambda results: "il x: interlink.Queue's rate / the row's rate (higher: interlink faster).",
    )


@bench.command()
@bench_options
@click.pass_context
def topic(ctx: click.Context, /, **options: Any) -> None:
    """Publish/subscribe: 64-byte messages from one publisher to 1 and 4 subscribers.

    interlink.Topic (policy "block": nothing lost; and "drop") against pyzmq
    PUB/SUB over ipc:// (when installed), every publisher and subscriber a
    spawned process; each subscriber times itself from its first message to
    the end marker. The last column is the mean per-subscriber rate with 4
    subscribers divided by the rate of a lone one. COUNT sets the messages;
    --idle-seconds and --plot apply to the channel benchmark only.
    """
    from interlink._bench import topic as bench_topic

    def list_line(row: Any) -> str:
        state = "installed" if row.missing() is None else "not installed"
        return f"{row.label:<24} {state}"

    _run_rows_bench(
        ctx,
        options,
        bench_topic,
        bench_topic.TopicSettings,
        list_line,
        lambda row, n: f"{row.label} 1->{n}",
    )
