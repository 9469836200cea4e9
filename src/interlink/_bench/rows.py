"""What ``bench sync``, ``bench queue`` and ``bench topic`` share about their rows.

Each of those benchmarks has a fixed tuple of rows (one per implementation,
with a label and a family), measures each row in a few cases (a scenario name,
or a fan-out), and records one :class:`Outcome` per measurement.  This module
holds the parts that are the same for the three: picking rows with ``--only``,
telling whether a row's package is installed, the outcome's shape and JSON
form, running a plan with progress callbacks, and the JSON document's head.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar


class Labelled(Protocol):
    """A row: shown as ``label``, also selectable by ``family``."""

    @property
    def label(self) -> str:
        """The row's name in tables and JSON."""

    @property
    def family(self) -> str:
        """The group ``--only`` can name to pick every row of it."""


RowT = TypeVar("RowT", bound=Labelled)
CaseT = TypeVar("CaseT")
OutcomeT = TypeVar("OutcomeT")


def select_rows(rows: Sequence[RowT], only: Sequence[str], kind: str) -> list[RowT]:
    """The rows whose label or family (ignoring case) ``only`` names, in the
    order of ``rows`` (all of them when ``only`` is empty).

    Raises ValueError (``unknown {kind} ...``) for a name that matches nothing.
    """
    if not only:
        return list(rows)
    chosen: list[RowT] = []
    for name in only:
        key = name.lower()
        hits = [r for r in rows if key in (r.label.lower(), r.family.lower())]
        if not hits:
            names = ", ".join(r.label for r in rows)
            raise ValueError(f"unknown {kind} {name!r} (known: {names}, or a family)")
        chosen.extend(r for r in hits if r not in chosen)
    return [r for r in rows if r in chosen]


def missing_module(*modules: str | None) -> str | None:
    """Why one of ``modules`` (None entries skipped) cannot be imported, or None."""
    for module in modules:
        if module is None:
            continue
        try:
            __import__(module)
        except ImportError as exc:
            return f"{module} is not installed ({exc})"
    return None


def error_reason(exc: BaseException) -> str:
    """The text an error outcome shows for ``exc``: its message, else its type's name."""
    return str(exc) or type(exc).__name__


@dataclass
class Outcome(Generic[CaseT]):
    """One measurement of one row in one case.

    Subclasses name the JSON keys of the label and the case (``LABEL_KEY``,
    ``CASE_KEY``) and give ``case`` its benchmark's name as a property.
    """

    label: str
    case: CaseT
    status: str
    """"ok", or why there are no figures: "n/a", "not installed", "error"."""
    figures: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    LABEL_KEY: ClassVar[str] = "label"
    CASE_KEY: ClassVar[str] = "case"

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict with every field."""
        return {
            self.LABEL_KEY: self.label,
            self.CASE_KEY: self.case,
            "status": self.status,
            "reason": self.reason,
            "figures": dict(self.figures),
        }


def run_plan(
    steps: Sequence[tuple[RowT, CaseT]],
    measure: Callable[[RowT, CaseT], OutcomeT],
    started: Callable[[RowT, CaseT], None] | None = None,
    finished: Callable[[OutcomeT], None] | None = None,
) -> list[OutcomeT]:
    """``measure`` every (row, case) of ``steps`` in order, telling ``started``
    before and ``finished`` after each; the outcomes in that order."""
    results = []
    for row, case in steps:
        if started is not None:
            started(row, case)
        result = measure(row, case)
        if finished is not None:
            finished(result)
        results.append(result)
    return results


def document(benchmark: str, host: Any, settings: Any, **rest: Any) -> dict[str, Any]:
    """A run's JSON document: the benchmark's name, ``host.to_json()``, this
    process's pid and the settings' fields, then ``rest`` in the order given."""
    return {
        "benchmark": benchmark,
        "host": host.to_json(),
        "pid": os.getpid(),
        "settings": dict(settings.__dict__),
        **rest,
    }
