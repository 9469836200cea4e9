"""The shared child runner of the sync/queue/topic benchmarks (real spawned processes)."""

from __future__ import annotations

import os
import time

import pytest

from interlink._bench.children import ChildFailed, run_children

pytestmark = pytest.mark.timeout(120)


def test_results_in_job_order() -> None:
    # Builtins pickle by reference, like the benchmarks' module-level bodies.
    assert run_children([(len, ("abc",)), (max, (4, 9))], 60) == [3, 9]


def test_a_raising_child_is_reported() -> None:
    with pytest.raises(ChildFailed, match="ValueError: invalid literal"):
        run_children([(int, ("x",)), (len, ("",))], 60)


def test_a_dead_child_is_reported() -> None:
    with pytest.raises(ChildFailed, match=r"the exit process (died|exited) without a result"):
        run_children([(os._exit, (3,))], 60)


def test_an_overrunning_child_is_killed_at_the_deadline() -> None:
    t0 = time.monotonic()
    with pytest.raises(ChildFailed, match="timed out after 3 s"):
        run_children([(time.sleep, (60,))], 3)
    assert time.monotonic() - t0 < 30  # killed, not waited for (a generous budget)
