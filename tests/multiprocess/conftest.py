"""Fixtures for the multi-process tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mp_helpers import Child, Spawn


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start child interpreters (see mp_helpers.Child); all are killed and reaped at teardown."""
    children: list[Child] = []

    def start(code: str, *args: str) -> Child:
        child = Child(code, *args)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()
