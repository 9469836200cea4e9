"""Channel.arecv / asend on one event loop (the cross-process case is in multiprocess/)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

import interlink as il

pytestmark = pytest.mark.timeout(30)


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_arecv_returns_a_waiting_message(name: str) -> None:
    async def main() -> bytes:
        with il.Channel(name, 4096) as c:
            c.send(b"ready")
            msg = await c.arecv(timeout=1)
            with msg:
                return msg.tobytes()

    assert run(main()) == b"ready"


def test_arecv_wakes_when_a_message_arrives(name: str) -> None:
    async def main() -> tuple[bytes, float]:
        with il.Channel(name, 4096) as rx, il.Channel(name) as tx:
            loop = asyncio.get_running_loop()
            start = time.monotonic()
            loop.call_later(0.1, tx.send, b"later")
            msg = await rx.arecv(timeout=10)
            took = time.monotonic() - start
            with msg:
                return msg.tobytes(), took

    data, took = run(main())
    assert data == b"later"
    assert 0.09 <= took < 2.0


def test_arecv_does_not_block_the_loop(name: str) -> None:
    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        with il.Channel(name, 4096) as c:
            task = asyncio.create_task(ticker())
            with pytest.raises(il.Timeout):
                await c.arecv(timeout=0.3)
            task.cancel()
        return ticks

    assert run(main()) >= 10


def test_arecv_timeout(name: str) -> None:
    async def main() -> float:
        with il.Channel(name, 4096) as c:
            start = time.monotonic()
            with pytest.raises(il.Timeout):
                await c.arecv(timeout=0.2)
            with pytest.raises(il.Timeout):
                await c.arecv(timeout=0)
            return time.monotonic() - start

    took = run(main())
    assert 0.19 <= took < 2.0


def test_concurrent_arecv_each_get_a_message(name: str) -> None:
    async def main() -> list[bytes]:
        with il.Channel(name, 4096) as rx, il.Channel(name) as tx:

            async def one() -> bytes:
                with await rx.arecv(timeout=5) as m:
                    return m.tobytes()

            tasks = [asyncio.create_task(one()) for _ in range(3)]
            await asyncio.sleep(0.05)
            for i in range(3):
                tx.send(bytes([i]))
            return sorted(await asyncio.gather(*tasks))

    assert run(main()) == [b"\0", b"\1", b"\2"]


def test_arecv_raises_closed_at_end_of_stream(name: str) -> None:
    async def main() -> None:
        with il.Channel(name, 4096) as rx:
            tx = il.Channel(name)
            tx.send(b"last")
            loop = asyncio.get_running_loop()
            with await rx.arecv(timeout=1) as m:
                assert m.tobytes() == b"last"
            loop.call_later(0.05, tx.close)
            with pytest.raises(il.Closed):
                await rx.arecv(timeout=5)

    run(main())


def test_asend_waits_for_room(name: str) -> None:
    async def main() -> float:
        with il.Channel(name, 4096) as tx, il.Channel(name) as rx:
            with pytest.raises(il.Empty):
                rx.recv_nowait()  # a live receiver
            while True:
                try:
                    tx.send_nowait(b"x" * 1000)
                except il.Full:
                    break
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, lambda: rx.recv_bytes(timeout=1))
            start = time.monotonic()
            await tx.asend(b"y" * 1000, timeout=10)
            took = time.monotonic() - start
            got = [rx.recv_bytes(timeout=1) for _ in range(4)]
            assert got[-1] == b"y" * 1000
            return took

    took = run(main())
    assert 0.09 <= took < 2.0


def test_asend_timeout_and_too_large(name: str) -> None:
    async def main() -> None:
        with il.Channel(name, 4096) as tx, il.Channel(name) as rx:
            with pytest.raises(il.Empty):
                rx.recv_nowait()
            await tx.asend(b"fits", timeout=1)
            with pytest.raises(il.MessageTooLarge):
                await tx.asend(b"x" * 4081, timeout=1)
            while True:
                try:
                    tx.send_nowait(b"x" * 1000)
                except il.Full:
                    break
            start = time.monotonic()
            with pytest.raises(il.Timeout):
                await tx.asend(b"x" * 1000, timeout=0.2)
            assert 0.19 <= time.monotonic() - start < 2.0

    run(main())


def test_async_calls_on_a_closed_handle_raise_closed(name: str) -> None:
    async def main() -> None:
        c = il.Channel(name, 4096)
        c.close()
        with pytest.raises(il.Closed):
            await c.arecv(timeout=1)
        with pytest.raises(il.Closed):
            await c.asend(b"x", timeout=1)

    run(main())
