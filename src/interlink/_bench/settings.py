"""What the channel benchmark measures, and how much of it."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

SMALL_SIZE = 64
"""Payload of the round-trip and small one-way measurements, in bytes."""

LARGE_SIZE = 1 << 20
"""Payload of the large one-way measurement, in bytes."""

STAMP_SIZE = 8
"""Each large message carries its sequence number in its first and last 8 bytes."""


class Scenario(str, enum.Enum):
    """One measurement, run between two fresh processes."""

    ROUNDTRIP = "roundtrip_64b"
    """64 B ping-pong; p50 and p99 round-trip time."""

    SMALL = "oneway_64b"
    """64 B one way; messages per second at the receiver."""

    LARGE = "oneway_1mib"
    """1 MiB one way, receiver checks both sequence stamps; MiB/s and msgs/s."""

    IDLE = "idle_cpu"
    """CPU time of a receiver blocked with no traffic, as % of one core."""

    @property
    def display_name(self) -> str:
        """A short human-readable name, for progress lines and listings."""
        return _DISPLAY_NAMES[self]


_DISPLAY_NAMES = {
    Scenario.ROUNDTRIP: "64 B round trip",
    Scenario.SMALL: "64 B one-way",
    Scenario.LARGE: "1 MiB one-way",
    Scenario.IDLE: "idle receiver",
}

ALL_SCENARIOS: tuple[Scenario, ...] = tuple(Scenario)


@dataclass(frozen=True)
class Settings:
    """Counts, sizes and limits of one benchmark run (picklable, sent to the children)."""

    roundtrips: int = 20_000
    """Timed round trips (after ``warmup`` untimed ones)."""
    warmup: int = 2_000
    """Untimed round trips before the timed ones."""
    small_count: int = 200_000
    """64 B messages in the one-way measurement."""
    large_count: int = 2_000
    """1 MiB messages in the one-way measurement."""
    idle_seconds: float = 2.0
    """How long the idle receiver sits blocked."""
    timeout: float = 120.0
    """Wall-clock limit of one measurement, process start-up included."""
    capacity: int = 8 << 20
    """Buffer size given to the transports that take one (interlink, faster-fifo)."""
    batch: int = 64
    """Messages per send_many / recv_many call in the batched variants."""
    small_size: int = SMALL_SIZE
    large_size: int = LARGE_SIZE

    @classmethod
    def choose(
        cls,
        *,
        quick: bool = False,
        count: int | None = None,
        timeout: float | None = None,
        idle_seconds: float | None = None,
    ) -> Settings:
        """Return the settings for a full run, or a ``quick`` one (< 60 s in all).

        ``count`` sets the number of 64 B one-way messages; the round trips
        (``count // 10``) and 1 MiB messages (``count // 100``) follow from it.
        """
        base = cls.quick() if quick else cls()
        changes: dict[str, float | int] = {}
        if count is not None:
            if count < 100:
                raise ValueError("count must be at least 100")
            changes.update(
                small_count=count,
                roundtrips=max(100, count // 10),
                warmup=max(10, count // 100),
                large_count=max(10, count // 100),
            )
        if timeout is not None:
            changes["timeout"] = timeout
        if idle_seconds is not None:
            changes["idle_seconds"] = idle_seconds
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    @classmethod
    def quick(cls) -> Settings:
        """Small counts for a demo run that finishes well within a minute."""
        return cls(
            roundtrips=2_000,
            warmup=200,
            small_count=20_000,
            large_count=200,
            idle_seconds=2.0,
            timeout=30.0,
        )

    def size_of(self, scenario: Scenario) -> int:
        """Return the payload size of ``scenario``'s messages, in bytes."""
        return self.large_size if scenario is Scenario.LARGE else self.small_size
