"""``interlink ls`` and ``interlink gc``: list and remove shared-memory objects.

``ls`` shows every interlink object of the current namespace
(``INTERLINK_NAMESPACE``) in ``/dev/shm`` (``INTERLINK_SHM_DIR``): kind, size,
permissions, owner, state and the processes attached to it.  ``gc`` removes
what only dead processes held (state ``stale``), what a creator left half-made
(``abandoned``) and, with ``--corrupt``, objects whose header is damaged.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from .._segment import ObjectInfo, UserInfo

__all__ = ["gc", "human_size", "ls"]

_STATE_STYLES = {"ok": "green", "stale": "yellow", "abandoned": "yellow", "corrupt": "bold red"}


def human_size(n: int) -> str:
    """``n`` bytes as a short human-readable string: 512 B, 4.0 KiB, 1.5 MiB."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _mode(mode: int) -> str:
    return f"{mode:04o}"


def _users_text(users: tuple[UserInfo, ...]) -> str:
    """Attached pids, each marked alive or dead; one entry per (pid, state)."""
    seen: dict[tuple[int, bool], None] = {}
    for user in users:
        seen.setdefault((user.pid, user.alive), None)
    return ", ".join(f"{pid} ({'alive' if alive else 'dead'})" for pid, alive in seen)


def _state_text(info: ObjectInfo) -> str:
    return f"{info.state} ({info.detail})" if info.detail else info.state


def _as_json(info: ObjectInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "path": str(info.path),
        "kind": info.kind,
        "size": info.size,
        "mode": _mode(info.mode),
        "uid": info.uid,
        "owner": info.owner,
        "state": info.state,
        "detail": info.detail,
        "users": [{"pid": u.pid, "alive": u.alive, "sender": u.sender} for u in info.users],
        "holders": None if info.holders is None else list(info.holders),
        "waiters": info.waiters,
        "writer": info.writer,
        "readers": None if info.readers is None else list(info.readers),
    }


def _holders_text(info: ObjectInfo) -> str:
    """Lock/semaphore holders: their pids, "free", or "" for other kinds.

    An RWLock's: "<pid> (write)" or "<pid>, <pid> (read)".
    """
    if info.holders is None:
        return ""
    if not info.holders:
        return "free"
    pids = ", ".join(str(pid) for pid in info.holders)
    if info.writer is not None:
        return f"{pids} (write)"
    if info.readers is not None:
        return f"{pids} (read)"
    return pids


def _waiters_text(info: ObjectInfo) -> str:
    return "" if info.waiters is None else str(info.waiters)


def _console() -> Console:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped or captured: never wrap or cut a name because of a guessed width.
        console = Console(width=max(console.width, 200))
    return console


def _where() -> str:
    from .._segment import shm_dir

    ns = os.environ.get("INTERLINK_NAMESPACE", "")
    return f"{shm_dir()}" + (f", namespace {ns!r}" if ns else "")


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def ls(as_json: bool) -> None:
    """List interlink objects: kind, size, mode, owner, state, attached processes.

    For locks, rlocks, rwlocks and semaphores also the pids holding them
    (HELD BY; a semaphore's holders are the processes with units charged to
    them; an rwlock's are its writer, marked (write), or its readers, marked
    (read)) and the number of threads waiting (WAITING; for an rwlock:
    waiting readers, queued writers and a writer waiting for readers to
    leave).

    STATE is ok (some attached process is alive), stale (only dead processes
    were attached: `interlink gc` removes it), abandoned (its creator died
    before finishing it) or corrupt (damaged header).
    """
    from rich.table import Table
    from rich.text import Text

    from .._segment import list_objects

    objects = list_objects()
    if as_json:
        click.echo(json.dumps([_as_json(info) for info in objects], indent=2))
        return
    console = _console()
    if not objects:
        console.print(Text(f"no interlink objects in {_where()}"))
        return
    table = Table(title=f"interlink objects in {_where()}", title_justify="left")
    table.add_column("NAME", overflow="fold")
    table.add_column("KIND")
    table.add_column("SIZE", justify="right")
    table.add_column("MODE")
    table.add_column("OWNER")
    table.add_column("STATE")
    table.add_column("ATTACHED", overflow="fold")
    table.add_column("HELD BY", overflow="fold")
    table.add_column("WAITING", justify="right")
    for info in objects:
        # Text cells, not markup: a name like "a[b]" is shown as it is.
        table.add_row(
            Text(info.name),
            Text(info.kind),
            Text(human_size(info.size)),
            Text(_mode(info.mode)),
            Text(info.owner),
            Text(_state_text(info), style=_STATE_STYLES.get(info.state, "")),
            Text(_users_text(info.users)),
            Text(_holders_text(info)),
            Text(_waiters_text(info)),
        )
    console.print(table, highlight=False)


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.option("--corrupt", is_flag=True, help="Also remove objects with a damaged header.")
def gc(dry_run: bool, corrupt: bool) -> None:
    """Remove interlink objects that only dead processes held.

    Objects that some live process still uses are never touched; stale ones
    (every attached process has died) and abandoned ones (the creator died
    while creating it) are removed; damaged ones only with --corrupt.  The
    deadlock-detection entries that killed processes left behind (one small
    file per thread that died in a long lock wait) are removed too.
    """
    from .._deadlock import gc_registry
    from .._segment import gc_objects, list_objects

    try:
        removed = gc_objects(dry_run=dry_run, corrupt=corrupt)
        entries = gc_registry(dry_run=dry_run)
    except OSError as exc:
        raise click.ClickException(f"gc failed: {exc}") from exc
    verb = "would remove" if dry_run else "removed"
    for info in removed:
        users = _users_text(info.users)
        click.echo(
            f"{verb} {info.name} ({info.kind}, {human_size(info.size)}, {_state_text(info)}"
            + (f"; was attached by {users}" if users else "")
            + ")"
        )
    if entries:
        noun = "entry" if len(entries) == 1 else "entries"
        click.echo(f"{verb} {len(entries)} deadlock-registry {noun} of dead processes")
    if not removed and not entries:
        click.echo(f"nothing to remove in {_where()}")
    if not corrupt:
        damaged = [info.name for info in list_objects() if info.state == "corrupt"]
        if damaged:
            click.echo(
                f"kept {len(damaged)} corrupt object(s): {', '.join(damaged)} "
                "(use --corrupt to remove them)"
            )
