"""Put and ack throughput of a durable queue under each sync policy.

    python benchmarks/queue_sync.py                  # in a temporary directory under /var/tmp
    python benchmarks/queue_sync.py --dir /data --count 50000

One process puts ``count`` small objects ``(i, "abc", 2.0)`` one at a time
into ``Queue(durable=True, path=<dir>/q, sync=policy)`` (timed from the first
put to the end of ``close()``, so "batch" pays for its last flush), then a
fresh handle takes each with ``get_message()`` and ``ack()``s it (timed the
same way). "always" does an msync per operation, so it gets ``count // 20``
objects (at least 200). The directory decides what is measured: use the disk
the queue would live on (on tmpfs msync costs nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    import interlink as il
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import interlink as il


def _policy_kwargs(policy: str, messages: int, interval: float) -> dict[str, object]:
    if policy == "batch":
        return {"sync": policy, "sync_messages": messages, "sync_interval": interval}
    return {"sync": policy}


def measure(
    directory: Path, policy: str, count: int, messages: int, interval: float
) -> tuple[float, float]:
    """(puts per second, acks per second) for ``count`` objects under ``policy``."""
    path = directory / f"sync-{policy}.q"
    kwargs = _policy_kwargs(policy, messages, interval)
    # Room for every object (entries and arena): no put ever waits.
    q = il.Queue(
        durable=True,
        path=path,
        capacity=max(1 << 20, count * 128),
        max_messages=count + 16,
        **kwargs,
    )
    put = q.put
    t0 = time.perf_counter()
    for i in range(count):
        put((i, "abc", 2.0), timeout=10)
    q.close()
    put_rate = count / (time.perf_counter() - t0)
    q = il.Queue(durable=True, path=path, create=False, **kwargs)
    t0 = time.perf_counter()
    for _ in range(count):
        q.get_message(timeout=10).ack()
    q.close()
    ack_rate = count / (time.perf_counter() - t0)
    os.unlink(path)
    return put_rate, ack_rate


def main(argv: list[str] | None = None) -> None:
    """Parse the options, measure each policy, print one line per policy."""
    parser = argparse.ArgumentParser(prog="python benchmarks/queue_sync.py", description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="where the queue files go")
    parser.add_argument("--count", type=int, default=100_000, help="objects per policy")
    parser.add_argument("--sync-messages", type=int, default=256, help='"batch": messages')
    parser.add_argument("--sync-interval", type=float, default=0.05, help='"batch": seconds')
    parser.add_argument("--policy", action="append", choices=["os", "batch", "always"])
    opts = parser.parse_args(argv)
    policies = opts.policy or ["os", "batch", "always"]
    base = opts.dir if opts.dir is not None else Path("/var/tmp")
    with tempfile.TemporaryDirectory(prefix="interlink-sync-", dir=base) as tmp:
        print(f"durable queue in {tmp}; load average {os.getloadavg()[0]:.1f}")
        print(f"{'policy':<18} {'objects':>8} {'put/s':>10} {'get+ack/s':>10}")
        for policy in policies:
            count = max(200, opts.count // 20) if policy == "always" else opts.count
            put_rate, ack_rate = measure(
                Path(tmp), policy, count, opts.sync_messages, opts.sync_interval
            )
            label = (
                f"batch({opts.sync_messages}, {opts.sync_interval * 1000:g} ms)"
                if policy == "batch"
                else policy
            )
            print(f"{label:<18} {count:>8,} {put_rate:>10,.0f} {ack_rate:>10,.0f}")


if __name__ == "__main__":
    main()
