"""Session-wide test isolation.

Every test session gets its own interlink namespace, so concurrent runs (two
checkouts, CI next to a developer) never open each other's shared-memory
objects.  The variable is set when pytest imports this file, before any test
module imports interlink; child processes inherit it.  When the session ends,
every object left in /dev/shm under that namespace is removed, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import pytest

SHM_DIR = Path("/dev/shm")
NAMESPACE = "t" + secrets.token_hex(4)
os.environ["INTERLINK_NAMESPACE"] = NAMESPACE


def _leftovers() -> list[Path]:
    prefix = f"interlink.{NAMESPACE}."
    try:
        entries = list(os.scandir(SHM_DIR))
    except OSError:
        return []
    return [
        Path(e.path)
        for e in entries
        if e.name.startswith(prefix) and not e.is_dir(follow_symlinks=False)
    ]


def pytest_report_header(config: pytest.Config) -> str:
    return f"interlink namespace: {NAMESPACE}"


@pytest.fixture
def name() -> str:
    """A channel name no other test uses (interlink.testing.unique_name)."""
    from interlink.testing import unique_name

    return unique_name()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for path in _leftovers():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
