"""What one measurement produced: a cell of the result table."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .settings import Scenario


class Status(str, enum.Enum):
    """How a measurement ended."""

    OK = "ok"
    """Measured; the figures are in :attr:`Cell.figures`."""
    NOT_APPLICABLE = "n/a"
    """The transport cannot carry this scenario here (the reason says why)."""
    NOT_INSTALLED = "not installed"
    """The transport's Python package is not importable."""
    ERROR = "error"
    """The measurement failed or timed out (the reason says how)."""


@dataclass
class Cell:
    """The outcome of one transport in one scenario."""

    transport: str
    scenario: Scenario
    status: Status
    figures: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when the measurement succeeded and :attr:`figures` holds its numbers."""
        return self.status is Status.OK

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict with every field of the cell."""
        return {
            "transport": self.transport,
            "scenario": self.scenario.value,
            "status": self.status.value,
            "reason": self.reason,
            "figures": dict(self.figures),
        }


class MeasurementError(Exception):
    """A measurement failed; the message is what the result table shows."""


class NotApplicable(Exception):
    """A transport cannot run a scenario on this system; the message says why."""
