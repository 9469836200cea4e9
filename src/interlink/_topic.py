"""Topic and Subscription: publish/subscribe between processes over shared memory.

The native core (``_native.TopicCore``, ``topicword.c``; docs/design/topic.md)
gives every publisher its own single-writer ring and every subscriber its own
cursor per ring.  This module adds naming and life cycle (``_segment.Segment``),
codecs (``_codec``), the pickle trust rule, pickling of handles, iteration and
asyncio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import pickle
import struct
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, cast

from . import _native
from ._codec import (
    _PARSE_ERRORS,
    _WATCH,
    RAW_BYTES,
    BytesCodec,
    Codec,
    PickleCodec,
    check_descriptor,
    get_codec,
    refuse_pickle,
    segment_pickle_ok,
)
from ._segment import Segment
from .errors import Closed, Incompatible, Timeout

__all__ = ["Subscription", "Topic"]

#: Layout version of a topic segment (header page + topicword.h area).
LAYOUT_VERSION: Final = 2  # 2: the armed wake flag (topicword.h IL_TOPIC_VERSION 2)
#: Default bytes of each publisher's ring (a power of two; pages of /dev/shm
#: are only used once touched).
DEFAULT_CAPACITY: Final = 1 << 20
DEFAULT_MAX_PUBLISHERS: Final = 8
DEFAULT_MAX_SUBSCRIBERS: Final = 32

_POLICIES: Final = {"drop": _native.TOPIC_DROP, "block": _native.TOPIC_BLOCK}
_POLICY_NAMES: Final = {v: k for k, v in _POLICIES.items()}

# The descriptor, at SEG_TOPIC_DESC of page 0: magic, codec id, codec name.
_DESC = struct.Struct("<8sB7x32s")
_DESC_MAGIC: Final = b"ILTDESC1"

#: How long one executor call of ``arecv`` may wait (a cancelled ``arecv``
#: leaves its thread at most this long; what it receives is kept).
_ASYNC_SLICE: Final = 0.1


class Topic:
    """A publish/subscribe topic shared between processes.

    ``publish(obj)`` from any number of publishers, in any processes (each
    handle that publishes takes one of ``max_publishers`` slots, with its own
    ring of ``capacity`` bytes); ``subscribe(history=0)`` returns a
    :class:`Subscription` that receives every message published after it
    subscribed, plus up to ``history`` earlier ones per publisher, in order per
    publisher.

    ``policy`` decides what happens to a slow subscriber:

    * ``"drop"`` (the default for a new topic): publishers never wait; a
      subscriber that falls a whole ring behind is lapped, skips ahead to the
      oldest message still present, and its ``lost`` says exactly how many
      messages it missed.
    * ``"block"``: publishers wait (``publish(timeout=)``) until every live
      subscriber has read what they would overwrite.  A subscriber process
      that dies leaves the wait set within ~30 ms (liveness: pid + process
      start time).

    ``name=None`` creates an anonymous topic (pickle the handle to hand it to
    a child); a name creates or opens it (``create=True`` requires creating it,
    ``False`` requires it to exist).  An existing topic keeps its policy,
    capacity and slot counts: an explicit ``policy`` that differs, or another
    codec, raises ``Incompatible``.  A message whose record is larger than
    ``capacity - 16`` bytes raises ``MessageTooLarge``.  The pickle codec
    unpickles records only if the topic segment is owned by this user and
    writable by nobody else, or ``trusted=True``.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        policy: str | None = None,
        capacity: int = DEFAULT_CAPACITY,
        codec: str | Codec = "pickle",
        mode: int = 0o600,
        trusted: bool = False,
        create: bool | None = None,
        max_publishers: int = DEFAULT_MAX_PUBLISHERS,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
    ) -> None:
        if policy is not None and policy not in _POLICIES:
            raise ValueError(f"policy must be 'drop' or 'block', not {policy!r}")
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        if not 1 <= max_publishers <= _native.TOPIC_MAX_PUBLISHERS:
            raise ValueError(
                f"max_publishers must be within 1..{_native.TOPIC_MAX_PUBLISHERS}, "
                f"not {max_publishers}"
            )
        if not 1 <= max_subscribers <= _native.TOPIC_MAX_SUBSCRIBERS:
            raise ValueError(
                f"max_subscribers must be within 1..{_native.TOPIC_MAX_SUBSCRIBERS}, "
                f"not {max_subscribers}"
            )
        self._codec = get_codec(codec, trusted=trusted)
        self._trusted = bool(trusted)
        self._closed = False
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        core = _native.TopicCore()
        self._core = core
        size = _native.topic_segment_size(max_publishers, max_subscribers, capacity)
        codec_id = self._codec.codec_id
        codec_name = self._codec.name
        pol = _POLICIES[policy or "drop"]

        def fmt(mm: Any, key: int) -> None:
            _DESC.pack_into(mm, _native.SEG_TOPIC_DESC, _DESC_MAGIC, codec_id, codec_name.encode())
            _native.topic_format(mm, max_publishers, max_subscribers, capacity, pol)

        self._segment = Segment.open(
            name,
            _native.KIND_TOPIC,
            size=size,
            layout=LAYOUT_VERSION,
            create=create,
            mode=mode,
            kind_size=size - _native.SEG_HEADER_SIZE,
            format=fmt,
            attach=core._bind,
        )
        try:
            magic, got_id, got_name = _DESC.unpack_from(self._segment.mm, _native.SEG_TOPIC_DESC)
            check_descriptor(
                "topic", self.name, magic == _DESC_MAGIC, got_id, got_name, self._codec
            )
            if policy is not None and core.policy != _POLICIES[policy]:
                raise Incompatible(
                    f"topic {self.name!r} has the policy {self.policy!r}, not {policy!r}"
                )
            self._pickle_ok = segment_pickle_ok(self._codec, self._segment.fd, trusted)
        except BaseException:
            self._close_handle()
            raise
        self._setup_fast_path()

    def _setup_fast_path(self) -> None:
        # publish is one native call for exact bytes and small pickles of the
        # stock codecs (docs/design/topic.md, "Object fast path"); the core
        # hands everything else to _publish_slow.  It holds only a weak
        # reference to this Topic (no cycle: dropping the Topic closes it).
        codec = self._codec
        is_pickle = type(codec) is PickleCodec
        bytes_tail: bytes | None = None
        if is_pickle:
            bytes_tail = cast(PickleCodec, codec)._raw_tails[RAW_BYTES]
        elif type(codec) is BytesCodec:
            bytes_tail = codec._tail
        cls = type(self)
        self._core._fast_setup(
            owner=weakref.ref(self),
            slow=cls._publish_slow,
            closed=Closed,
            codec=codec,
            encode_error=codec._encode_error,
            bytes_tail=bytes_tail,
            dumps=pickle.dumps if is_pickle else None,
            plain_tail=codec._tail,
            limit=cast(PickleCodec, codec)._fast_limit if is_pickle else 0,
            watch=_WATCH,
        )
        if cls.publish is Topic.publish:
            # bound to the core, not to self: skips a Python frame per call
            self.__dict__["publish"] = self._core._publish_obj

    # ------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """The topic's name (generated for an anonymous one)."""
        return self._segment.name

    @property
    def policy(self) -> str:
        """``"drop"`` or ``"block"``."""
        return _POLICY_NAMES[self._core.policy]

    @property
    def capacity(self) -> int:
        """Bytes of each publisher's ring (the largest record is 16 bytes less)."""
        return self._core.ring_bytes

    @property
    def codec(self) -> Codec:
        """The codec objects travel with."""
        return self._codec

    @property
    def mode(self) -> int:
        """Permission bits the topic was created with."""
        return self._segment.mode

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called on this handle."""
        return self._closed

    def counts(self) -> tuple[int, int]:
        """``(live publishers, live subscribers)`` of the whole topic (a snapshot)."""
        self._check_open()
        return self._core.counts()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<interlink.Topic {self.name!r} policy={self.policy!r} {state}>"

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        # The receiver opens the topic by name: the sender keeps its handle
        # open until then.
        return (_reopen, (self.name, self._codec, self._trusted))

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"topic {self.name!r} is closed")

    # ------------------------------------------------------------ publishing
    def publish(self, obj: Any, timeout: float | None = None) -> None:
        """Publish ``obj`` to every subscriber.

        Under ``"drop"`` this never waits.  Under ``"block"`` it waits up to
        ``timeout`` seconds (``None``: forever) while a live subscriber has not
        read what the message would overwrite, then raises ``Timeout``.
        Raises ``MessageTooLarge``, ``EncodeError``, ``Closed``, and ``Busy``
        when every publisher slot is held by a live process.
        """
        # Instances use TopicCore._publish_obj directly (_setup_fast_path);
        # this is the path of subclasses that call super().publish.
        self._core._publish_obj(obj, timeout)

    def _publish_slow(self, obj: Any, timeout: float | None) -> None:
        # Everything _publish_obj does not publish itself: the codec's path.
        self._check_open()
        record = self._codec.encode(obj)
        if type(record) is bytes:
            self._core.publish(record, timeout)
        else:
            # Encoded: written once, straight into the ring.
            self._core._publish_into(len(record), record.write_into, timeout)  # type: ignore[union-attr]

    def publish_many(self, objs: Iterable[Any], timeout: float | None = None) -> int:
        """Publish every object in order; returns how many were published
        (fewer only when ``timeout`` passed under ``"block"``; ``Timeout`` if
        none)."""
        self._check_open()
        records = [self._codec.encode(o) for o in objs]
        if all(type(r) is bytes for r in records):
            return int(self._core.publish_many(cast("list[bytes]", records), timeout))
        done = 0
        for rec in records:
            try:
                if type(rec) is bytes:
                    self._core.publish(rec, timeout)
                else:
                    self._core._publish_into(len(rec), rec.write_into, timeout)  # type: ignore[union-attr]
            except Timeout:
                if done:
                    return done
                raise
            done += 1
        return done

    # ------------------------------------------------------------ subscribing
    def subscribe(self, history: int = 0) -> Subscription:
        """A new :class:`Subscription`: every message published from now on,
        plus up to ``history`` earlier ones per publisher (those still in its
        ring).  Raises ``Busy`` when every subscriber slot is held by a live
        process."""
        self._check_open()
        if history < 0:
            raise ValueError(f"history must be >= 0, not {history}")
        core = self._core.subscribe(history)
        codec = self._codec
        decode = functools.partial(_decode_value, codec.decode if self._pickle_ok else self._decode)
        if type(codec) is PickleCodec:
            core._fast_setup(
                decode=decode,
                errors=_PARSE_ERRORS,
                loads=pickle.loads if self._pickle_ok else None,
                plain_tail=codec._tail,
                raw_tail=codec._raw_tails[RAW_BYTES],
            )
        elif type(codec) is BytesCodec:
            core._fast_setup(decode=decode, view_tail=codec._tail)
        else:
            core._fast_setup(decode=decode)
        sub = Subscription(self, core)
        self._subs.add(sub)
        return sub

    # ------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Close this handle and its subscriptions; give its publisher slot
        back.  Messages already published stay readable by other subscribers.
        The topic is removed when its last user closes it.  Idempotent."""
        if self._closed:
            return
        for sub in list(self._subs):
            sub.close()
        self._close_handle()

    def _close_handle(self) -> None:
        self._closed = True
        self._core._close()
        self._segment.close()

    def unlink(self) -> None:
        """Remove the name now: new opens create a new topic."""
        self._check_open()
        self._segment.unlink()

    def __enter__(self) -> Topic:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        segment = getattr(self, "_segment", None)
        if segment is not None and not segment.closed:
            with contextlib.suppress(Exception):
                self._close_handle()

    # ------------------------------------------------------------ decoding
    def _decode(self, data: bytes) -> Any:
        if not self._pickle_ok:
            refuse_pickle("topic", self.name, data)
        return self._codec.decode(data)


class _Failed:
    """A decoding error kept for the next ``recv`` (a cancelled ``arecv``)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _decode_value(decode: Callable[[Any], Any], data: bytes | _native.TopicMessage) -> Any:
    """``decode(data)``; a ``TopicMessage`` is released afterwards (deferred
    while views of it, such as numpy arrays decoded out of band, live)."""
    if type(data) is bytes:
        return decode(data)
    try:
        return decode(data)
    finally:
        data.release()  # type: ignore[union-attr]


class Subscription:
    """One subscriber of a :class:`Topic` (from ``Topic.subscribe``).

    ``recv(timeout=None)`` returns the next object (``Timeout`` when none came
    in time); iterating yields objects until the subscription is closed;
    ``await arecv()`` is the asyncio form.  ``lost`` counts, exactly, the
    messages this subscriber missed because a ``"drop"`` topic lapped it.
    Close it (or use ``with``) to leave the topic: under ``"block"`` an open
    subscription that does not read holds publishers back.
    """

    def __init__(self, topic: Topic, core: _native.TopicSubscriberCore) -> None:
        self._topic = topic
        self._core = core
        self._pending: collections.deque[Any] = collections.deque()
        self._pending_lock = threading.Lock()
        self._fast = type(self).recv is Subscription.recv
        if self._fast:
            # recv is TopicSubscriberCore._recv_obj itself while nothing is
            # pending (no Python frame per message)
            self.__dict__["recv"] = core._recv_obj

    @property
    def topic(self) -> Topic:
        """The topic this subscription reads."""
        return self._topic

    @property
    def lost(self) -> int:
        """Messages missed because the subscriber was lapped (``"drop"``)."""
        return self._core.lost

    @property
    def received(self) -> int:
        """Messages received so far."""
        return self._core.received

    @property
    def closed(self) -> bool:
        """Whether the subscription (or its topic handle) is closed."""
        return bool(self._core.closed)

    def recv(self, timeout: float | None = None) -> Any:
        """The next object, waiting up to ``timeout`` seconds (``None``:
        forever).  Raises ``Timeout``, ``Closed``, ``Corrupt``, ``AccessDenied``
        (a pickled record from an untrusted segment); Ctrl-C interrupts the
        wait."""
        if self._pending:
            with self._pending_lock:
                if self._pending:
                    item = self._pending.popleft()
                    if isinstance(item, _Failed):
                        raise item.exc
                    return item
                if self._fast:
                    self.__dict__["recv"] = self._core._recv_obj  # drained
        return self._core._recv_obj(timeout)

    def recv_many(self, max_items: int = 64, timeout: float | None = None) -> list[Any]:
        """Wait up to ``timeout`` seconds (``None``: forever) for the next
        object, then take every message already there, up to ``max_items``
        (1..256) in all: their objects, in order.  Cheaper per message than
        ``recv`` when messages come faster than one at a time.  A message
        that cannot be decoded is skipped and its error (``Corrupt``,
        ``AccessDenied``) raised by the next receive, or at once when nothing
        else came.  Raises ``Timeout``, ``Closed``, ``ValueError`` (bad
        ``max_items``)."""
        if self._pending:
            with self._pending_lock:
                out: list[Any] = []
                while self._pending and len(out) < max_items:
                    item = self._pending[0]
                    if isinstance(item, _Failed):
                        if out:
                            return out
                        self._pending.popleft()
                        raise item.exc
                    out.append(self._pending.popleft())
                if out:
                    return out
        return self._core._recv_many_obj(max_items, timeout)

    def _recv_any(self, timeout: float) -> tuple[Any] | None:
        # arecv's executor call: (object,) or None when none came in time
        try:
            return (self._core._recv_obj(timeout),)
        except Timeout:
            return None

    async def arecv(self, timeout: float | None = None) -> Any:
        """``recv`` for asyncio: waits in the loop's default executor, in
        slices of 0.1 s; a cancelled ``arecv`` loses nothing (a message its
        thread took is returned by the next receive)."""
        try:
            return self.recv(0)
        except Timeout:
            pass
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._pending:  # taken by the thread of a cancelled arecv
                return self.recv(0)
            step = _ASYNC_SLICE
            if deadline is not None:
                step = max(0.0, min(step, deadline - loop.time()))
            fut = loop.run_in_executor(None, self._recv_any, step)
            try:
                got = await asyncio.shield(fut)
            except asyncio.CancelledError:
                fut.add_done_callback(self._keep)
                raise
            if got is not None:
                return got[0]
            if deadline is not None and loop.time() >= deadline:
                raise Timeout("no message within the timeout")

    def _keep(self, fut: asyncio.Future[tuple[Any] | None]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        item: Any
        if exc is not None:
            item = _Failed(exc)
        else:
            got = fut.result()
            if got is None:
                return
            item = got[0]
        with self._pending_lock:
            # what the thread took, or the error its decoding raised: the
            # next recv returns (raises) it first, through the Python method
            self._pending.append(item)
            self.__dict__.pop("recv", None)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self.recv()
        except Closed:
            raise StopIteration from None

    def close(self) -> None:
        """Leave the topic (idempotent)."""
        self._core.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<interlink.Subscription of {self._topic.name!r} {state} "
            f"received={self.received} lost={self.lost}>"
        )


def _reopen(name: str, codec: Codec, trusted: bool) -> Topic:
    return Topic(name, create=False, codec=codec, trusted=trusted)


for _cls in (Topic, Subscription):
    _cls.__module__ = "interlink"  # tracebacks and reprs name the public path
