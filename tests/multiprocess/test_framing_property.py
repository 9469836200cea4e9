"""Done-means: framing survives constant wrap-around (hypothesis, one process).

Random message sizes from 0 to the largest a 4 KiB ring can carry go through
that ring -- so nearly every message wraps or pads -- with sends, loans
(some shrunk at commit), receives and out-of-order releases interleaved as
hypothesis chooses.  Every message must come out exactly as sent and in order,
the ring must never report Corrupt, and once everything is released the ring
must be empty again.
"""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import interlink as il

pytestmark = pytest.mark.timeout(300)

CAPACITY = 4096
MAX = CAPACITY - 16

sizes = st.one_of(
    st.integers(0, 48),
    st.integers(0, MAX),
    st.sampled_from([0, 1, 15, 16, 17, 31, 32, 33, 2032, 2048, 4064, 4065, 4079, MAX]),
)
STYLES = ["send", "send_nowait", "send_many", "loan", "loan_shrunk"]


def payload(index: int, size: int) -> bytes:
    return random.Random(index).randbytes(size)


class Model:
    """The channel under test and what it must hand back."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.ch = il.Channel(None, CAPACITY)
        self.pending: deque[bytes] = deque()  # sent, not yet received
        self.held: list[tuple[il.Message, bytes]] = []  # received, not yet released
        self.views: list[memoryview] = []  # views keeping released messages alive
        self.sent = 0

    def try_send(self, data: bytes, style: str) -> bool:
        """One attempt that never waits: True if the message went in."""
        ch = self.ch
        try:
            if style == "send":
                ch.send(data, timeout=0)
            elif style == "send_nowait":
                ch.send_nowait(data)
            elif style == "send_many":
                assert ch.send_many([data], timeout=0) == 1
            else:
                extra = 0
                if style == "loan_shrunk":
                    extra = self.data.draw(st.integers(0, MAX - len(data)), label="extra")
                loan = ch.loan(len(data) + extra, timeout=0)
                with loan as buf:
                    buf[: len(data)] = data
                    if extra:
                        buf[len(data) :] = b"\xee" * extra  # must not be delivered
                        loan.commit(len(data))
        except il.Full:
            return False
        except il.Timeout:
            return False
        return True

    def receive(self) -> bool:
        """Receive one message (or a few) and check them; False if none was there."""
        try:
            if self.data.draw(st.booleans(), label="recv_many"):
                msgs = self.ch.recv_many(self.data.draw(st.integers(1, 4)), timeout=0)
            else:
                msgs = [self.ch.recv_nowait()]
        except il.Empty:
            return False
        for msg in msgs:
            assert self.pending, "received a message that was never sent"
            want = self.pending.popleft()
            assert len(msg) == len(want)
            assert msg.tobytes() == want, "message content differs from what was sent"
            self.held.append((msg, want))
        return True

    def release_one(self) -> None:
        i = self.data.draw(st.integers(0, len(self.held) - 1), label="release")
        msg, want = self.held.pop(i)
        if self.data.draw(st.integers(0, 9), label="keep_view") == 0:
            view = memoryview(msg)  # release is deferred while the view lives
            msg.release()
            assert bytes(view) == want
            self.views.append(view)
        else:
            msg.release()
        if self.views and self.data.draw(st.booleans(), label="drop_view"):
            self.views.pop(0).release()

    def send(self, data: bytes, style: str) -> None:
        for _ in range(10_000):
            if self.try_send(data, style):
                self.pending.append(data)
                self.sent += 1
                return
            # Full: make room as the receiver would.
            if self.pending and (not self.held or self.data.draw(st.booleans(), label="r")):
                assert self.receive()
            elif self.held:
                self.release_one()
            elif self.views:
                self.views.pop().release()
            else:
                # Nothing pending or held: only pads remain.  Passing them frees the
                # ring; the attempt after may itself pad to the end of the ring, so
                # the message must fit at the latest after a second pass.
                for _attempt in range(2):
                    with pytest.raises(il.Empty):
                        self.ch.recv_nowait()
                    if self.try_send(data, style):
                        self.pending.append(data)
                        self.sent += 1
                        return
                raise AssertionError(f"a {len(data)}-byte message does not fit in an empty ring")
        raise AssertionError("no progress")

    def finish(self) -> None:
        while self.pending:
            assert self.receive(), "a sent message is missing"
        with pytest.raises(il.Empty):
            self.ch.recv_nowait()
        while self.held:
            self.release_one()
        for v in self.views:
            v.release()
        self.views.clear()
        stats = self.ch.statistics()
        assert stats.used == 0, f"{stats.used} bytes still in use after releasing everything"
        assert stats.sent == stats.received == self.sent
        assert stats.skipped == 0
        self.ch.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(message_sizes=st.lists(sizes, min_size=1, max_size=80), data=st.data())
def test_framing_across_wrap_around(message_sizes: list[int], data: st.DataObject) -> None:
    model = Model(data)
    try:
        for index, size in enumerate(message_sizes):
            style = data.draw(st.sampled_from(STYLES), label="style")
            model.send(payload(index, size), style)
            # Interleave some receiving and releasing between sends.
            for _ in range(data.draw(st.integers(0, 3), label="recvs")):
                if not model.receive():
                    break
            for _ in range(data.draw(st.integers(0, 2), label="releases")):
                if model.held:
                    model.release_one()
            assert 0 <= model.ch.statistics().used <= CAPACITY
        model.finish()
    finally:
        for v in model.views:
            v.release()
        model.held.clear()
        model.ch.close()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, MAX), min_size=1, max_size=200))
def test_one_at_a_time_round_trip(message_sizes: list[int]) -> None:
    with il.Channel(None, CAPACITY) as ch:
        for index, size in enumerate(message_sizes):
            data = payload(index, size)
            for _ in range(2):  # the second attempt follows a pass over a pad
                try:
                    ch.send_nowait(data)
                    break
                except il.Full:
                    with pytest.raises(il.Empty):
                        ch.recv_nowait()
            else:
                raise AssertionError(f"{size} bytes do not fit in an empty ring")
            with ch.recv(timeout=1) as msg:
                assert msg.tobytes() == data
        assert ch.statistics().used == 0
