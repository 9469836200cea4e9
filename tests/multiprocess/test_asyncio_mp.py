"""asyncio: arecv waits without burning CPU and wakes when another process sends."""

from __future__ import annotations

import asyncio
import time

import pytest
from mp_helpers import Spawn

import interlink as il

pytestmark = pytest.mark.timeout(60)

SEND_ON_CUE = """
name = sys.argv[1]
ch = il.Channel(name, create=False)
say("ready")
hear()
ch.send(b"wake up")
say("sent")
hear()
"""


def test_arecv_idles_without_cpu_and_wakes_on_a_send_from_another_process(
    spawn: Spawn, name: str
) -> None:
    async def main() -> tuple[bytes, float, float]:
        with il.Channel(name, 4096) as rx:
            child = spawn(SEND_ON_CUE, name)
            child.expect("ready")
            task = asyncio.create_task(rx.arecv(timeout=30))
            cpu0 = time.process_time()
            await asyncio.sleep(0.5)  # the measuring period: nothing is sent meanwhile
            cpu = time.process_time() - cpu0
            assert not task.done()
            start = time.monotonic()
            child.tell("send")
            msg = await asyncio.wait_for(task, 10)
            latency = time.monotonic() - start
            child.expect("sent")
            with msg:
                return msg.tobytes(), cpu, latency

    data, cpu, latency = asyncio.run(main())
    print(f"CPU while awaiting 0.5 s: {cpu * 1e3:.1f} ms; woke {latency * 1e3:.2f} ms after send")
    assert data == b"wake up"
    assert cpu < 0.1, "arecv seems to busy-poll"
    assert latency < 1.0


def test_asend_waits_for_a_receiver_in_another_process(spawn: Spawn, name: str) -> None:
    code = """
name = sys.argv[1]
ch = il.Channel(name, create=False)
try:
    ch.recv_nowait()
except il.Empty:
    pass
say("receiving")
hear()
got = [ch.recv_bytes(timeout=10) for _ in range(5)]
say("got", *[len(g) for g in got])
hear()
"""

    async def main() -> list[str]:
        with il.Channel(name, 4096) as tx:
            child = spawn(code, name)
            child.expect("receiving")
            for _ in range(4):
                tx.send_nowait(b"x" * 1000)
            task = asyncio.create_task(tx.asend(b"y" * 1000, timeout=30))
            await asyncio.sleep(0.1)
            assert not task.done()  # the ring is full
            child.tell("drain")
            await asyncio.wait_for(task, 10)
            return child.expect("got")

    assert asyncio.run(main()) == ["1000"] * 5
