"""Helpers for testing code that uses interlink.

``unique_name`` gives names that no other test (or test run) uses;
``isolated_namespace`` runs a block in a fresh namespace and removes every
object left in it afterwards; ``run_in_process`` runs a function in a fresh
interpreter (multiprocessing 'spawn') and returns its result, bounded by a
timeout.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from ._segment import list_objects

__all__ = ["isolated_namespace", "run_in_process", "unique_name"]

T = TypeVar("T")


def unique_name(prefix: str = "t") -> str:
    """A name that no other call, in any process, returns."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(6)}"


@contextmanager
def isolated_namespace(namespace: str | None = None) -> Iterator[str]:
    """Run the block with ``INTERLINK_NAMESPACE`` set to a fresh namespace
    (inherited by child processes), then remove every object left in it."""
    ns = namespace or f"test{secrets.token_hex(4)}"
    old = os.environ.get("INTERLINK_NAMESPACE")
    os.environ["INTERLINK_NAMESPACE"] = ns
    try:
        yield ns
    finally:
        try:
            for info in list_objects():
                with suppress(FileNotFoundError):
                    os.unlink(info.path)
        finally:
            if old is None:
                del os.environ["INTERLINK_NAMESPACE"]
            else:
                os.environ["INTERLINK_NAMESPACE"] = old


def _call(queue: Any, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        queue.put((True, func(*args)))
    except BaseException as exc:  # report everything to the parent
        queue.put((False, exc))


def run_in_process(func: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
    """Run ``func(*args)`` in a fresh 'spawn' process and return its result.

    ``func``, its arguments and its result must be picklable.  An exception in
    the child is raised here; a child that does not finish within ``timeout``
    seconds is killed and TimeoutError raised.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.SimpleQueue()
    proc = ctx.Process(target=_call, args=(queue, func, args), daemon=True)
    proc.start()
    try:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
            raise TimeoutError(f"{getattr(func, '__name__', func)} did not finish in {timeout}s")
        if queue.empty():
            raise RuntimeError(f"child process exited with code {proc.exitcode} and no result")
        ok, value = queue.get()
    finally:
        queue.close()
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
