"""The machine a benchmark ran on, for the report's header line and the JSON."""

from __future__ import annotations

import datetime
import os
import platform
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class HostInfo:
    """Date, machine and interpreter of a benchmark run."""

    date: str
    hostname: str
    cpu: str
    cores: int
    python: str
    kernel: str

    def line(self) -> str:
        """Return the one-line summary printed above the result table."""
        return (
            f"{self.date} · {self.hostname} · {self.cpu} · {self.cores} cores · "
            f"Python {self.python} · {self.kernel}"
        )

    def to_json(self) -> dict[str, Any]:
        """Return every field as a JSON-serialisable dict."""
        return asdict(self)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Return how many cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def collect() -> HostInfo:
    """Describe this machine now."""
    now = datetime.datetime.now(datetime.UTC).astimezone()
    return HostInfo(
        date=now.strftime("%Y-%m-%d %H:%M %Z"),
        hostname=socket.gethostname(),
        cpu=cpu_model(),
        cores=usable_cores(),
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        kernel=f"{platform.system()} {platform.release()}",
    )
