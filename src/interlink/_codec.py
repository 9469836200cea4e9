"""Codecs: objects to records in shared memory and back, copying big buffers once.

A *record* is the byte string one object travels as.  Queue and Topic write it
into a channel loan (or send it as bytes) and hand what they receive back to
the same codec.  docs/design/codec.md describes the format and the choices;
in short::

    [in-band payload][pad][oob 0][pad][oob 1]...[slack][oob table][footer][trailer]

* The 8-byte **trailer** comes last: producer uid (u32), codec id, flags, the
  padding before the first out-of-band buffer, and a magic/format byte.  A
  record without out-of-band buffers is just ``payload + trailer``: the trailer
  is a per-process constant, so encoding costs one concatenation, and pickle
  reads its payload straight from the start of the message (bytes past its
  STOP opcode are ignored) -- no view or slice is made on the hot path.
* With out-of-band buffers (pickle protocol 5: numpy arrays and other
  ``PickleBuffer`` producers) a table before the trailer lists their lengths;
  each buffer starts on a 64-byte boundary *of the memory it was written to*
  (the writer measures the address), so numpy views of shared memory are
  aligned.  Every length and offset read back is bounds-checked: a damaged
  record raises :class:`~interlink.Corrupt`, never over-reads.

Decoding with ``copy=False`` (the default) returns out-of-band buffers, and the
raw payloads of ``memoryview`` objects and of the bytes codec, as read-only
memoryview slices of the record: no copy.  Those views keep the exporter (an
``il.Message``) alive and its release deferred until the last of them -- and
of the numpy arrays built on them -- is garbage-collected.  ``copy=True``
gives objects that own their memory, so the record may be released at once.
"""

from __future__ import annotations

import abc
import importlib
import json
import os
import pickle
import stat
import struct
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias

from ._native import Message as _Message
from .errors import AccessDenied, Corrupt, EncodeError, Incompatible

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "BytesCodec",
    "Codec",
    "Encoded",
    "JsonCodec",
    "MsgpackCodec",
    "PickleCodec",
    "Record",
    "codec_names",
    "get_codec",
    "pickle_allowed",
    "write_record",
]

# ------------------------------------------------------------------ format

#: Magic/format byte, the record's last byte.  A later format gets another
#: magic value; a reader reports any byte but its own as Corrupt (one byte
#: cannot tell a newer format from damage reliably).
FORMAT_VERSION: Final = 1
MAGIC: Final = 0xC1

#: uid u32, codec id u8, flags u8, pad0 u8, magic u8.
_TRAILER: Final = struct.Struct("<IBBBB")
TRAILER_SIZE: Final = _TRAILER.size  # 8
_TRAILER_KEY: Final = struct.Struct("<Q")  # the same 8 bytes as one integer
#: Before the trailer of a record with out-of-band buffers: in-band length
#: u64, buffer count u32, CRC-32 of the framing u32; before it, one u64 per buffer.
_OOB_FOOTER: Final = struct.Struct("<QII")
OOB_FOOTER_SIZE: Final = _OOB_FOOTER.size  # 16
OOB_ALIGN: Final = 64

# Codec ids (u8).  0 is never valid.
CODEC_BYTES: Final = 1
CODEC_PICKLE: Final = 2
CODEC_MSGPACK: Final = 3
CODEC_JSON: Final = 4
_CODEC_NAMES: Final = {
    CODEC_BYTES: "bytes",
    CODEC_PICKLE: "pickle",
    CODEC_MSGPACK: "msgpack",
    CODEC_JSON: "json",
}

# Flags (u8).  Bits 0-1: raw kind of a pickle-codec record whose payload is
# the object's own bytes (no pickling); bit 2: out-of-band buffers follow.
RAW_NONE: Final = 0
RAW_BYTES: Final = 1
RAW_BYTEARRAY: Final = 2
RAW_VIEW: Final = 3
_RAW_MASK: Final = 0x03
FLAG_OOB: Final = 0x04
_FLAGS_KNOWN: Final = _RAW_MASK | FLAG_OOB

#: Records up to this size without out-of-band buffers are returned by
#: ``encode`` as one ``bytes`` (cheapest to build and to ``Channel.send``);
#: bigger ones as an :class:`Encoded` written once into the destination.
INLINE_MAX: Final = 64 * 1024

_ZEROS: Final = bytes(OOB_ALIGN)
_PICKLE_PROTOCOL: Final = 5
#: After a pickle at least as long as the out-of-band threshold, this many
#: further encodes use the buffer callback directly (see PickleCodec.encode).
_WATCH: Final = 64
_WATCH_FOREVER: Final = 1 << 62
_dumps = pickle.dumps
#: Types the pickle codec sends as their own bytes, not pickled.
_RAW_KINDS: Final[dict[type, int]] = {
    bytes: RAW_BYTES,
    bytearray: RAW_BYTEARRAY,
    memoryview: RAW_VIEW,
}
#: Types whose len() counts bytes (the decoder's fast path reads the trailer
#: at len() - 8).
_BYTE_SIZED: Final = frozenset({bytes, bytearray, _Message})
_loads = pickle.loads
_unpack_key = _TRAILER_KEY.unpack_from

#: Exceptions a payload parser raises on malformed input: reported as Corrupt.
#: Others (an ImportError for a class the reader lacks, errors raised by user
#: code in __setstate__) are not damage and propagate unchanged.
_PARSE_ERRORS: Final = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,  # includes UnicodeDecodeError, json.JSONDecodeError
    IndexError,
    KeyError,
    OverflowError,
    struct.error,
    RecursionError,  # hostile nesting depth
)


def _align(n: int) -> int:
    return (n + OOB_ALIGN - 1) & ~(OOB_ALIGN - 1)


def _flat(obj: Any) -> memoryview:
    """``obj``'s bytes as a 1-D unsigned-byte view; copies only a non-contiguous buffer.

    The bytes are the buffer's logical bytes in C order, as ``bytes(obj)``
    gives them.  Raises TypeError for an object without the buffer protocol.
    """
    mv = memoryview(obj)
    if mv.c_contiguous:
        if mv.ndim == 1 and mv.format == "B":
            return mv
        return pickle.PickleBuffer(mv).raw()
    return memoryview(mv.tobytes())


def _writable_bytes(buf: Buffer) -> memoryview:
    mv = memoryview(buf)
    if mv.readonly:
        raise TypeError("the destination buffer is read-only")
    if mv.ndim != 1 or mv.format != "B":
        if not mv.c_contiguous:
            raise TypeError("the destination buffer must be contiguous")
        mv = pickle.PickleBuffer(mv).raw()
    return mv


def _framing_crc(mv: memoryview, table: int, size: int) -> int:
    """CRC-32 of a record's framing: the length table, the footer's first 12
    bytes and the trailer.  Catches damage that bounds checks cannot see, such
    as a changed first-buffer padding that would shift every buffer."""
    footer = size - TRAILER_SIZE - OOB_FOOTER_SIZE
    return zlib.crc32(mv[size - TRAILER_SIZE : size], zlib.crc32(mv[table : footer + 12]))


def _address(mv: memoryview) -> int:
    """Address of the first byte of a writable, non-empty buffer."""
    import ctypes  # only records with out-of-band buffers need it

    return ctypes.addressof(ctypes.c_char.from_buffer(mv))


# ----------------------------------------------------------------- records


class Encoded:
    """A record ready to be written: ``size`` bytes, by ``write_into``.

    Holds references to the object's buffers, which must not change until the
    record is written.  Out-of-band buffers are copied exactly once, directly
    into the destination.
    """

    __slots__ = ("_buffers", "_codec_id", "_flags", "_payload", "_uid", "size")

    size: int
    """Total length of the record in bytes."""

    def __init__(
        self,
        codec_id: int,
        flags: int,
        payload: Buffer,
        buffers: list[memoryview],
        uid: int,
    ) -> None:
        self._codec_id = codec_id
        self._flags = flags | (FLAG_OOB if buffers else 0)
        self._payload = _flat(payload)
        self._buffers = buffers
        self._uid = uid
        size = self._payload.nbytes + TRAILER_SIZE
        if buffers:
            size += OOB_ALIGN - 1 + 8 * len(buffers) + OOB_FOOTER_SIZE
            for b in buffers[:-1]:
                size += _align(b.nbytes)
            size += buffers[-1].nbytes
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"<interlink Encoded record: {_CODEC_NAMES.get(self._codec_id, '?')}, "
            f"{self.size} bytes, {len(self._buffers)} out-of-band buffers>"
        )

    def write_into(self, buf: Buffer) -> int:
        """Write the record at the start of the writable buffer ``buf``; return ``size``.

        ``buf`` must hold at least ``size`` bytes; exactly the first ``size``
        are written (padding zeroed), and the record is exactly those bytes.
        Out-of-band buffers start on 64-byte boundaries of ``buf``'s memory.
        """
        mv = _writable_bytes(buf)
        size = self.size
        if mv.nbytes < size:
            raise ValueError(f"the buffer holds {mv.nbytes} bytes; the record needs {size}")
        payload = self._payload
        n = payload.nbytes
        mv[:n] = payload
        pad0 = 0
        if self._buffers:
            pad0 = -(_address(mv) + n) % OOB_ALIGN
            mv[n : n + pad0] = _ZEROS[:pad0]
            off = n + pad0
            lengths = []
            last = len(self._buffers) - 1
            for i, b in enumerate(self._buffers):
                k = b.nbytes
                mv[off : off + k] = b
                lengths.append(k)
                off += k
                if i != last:
                    aligned = _align(off - n - pad0) + n + pad0
                    mv[off:aligned] = _ZEROS[: aligned - off]
                    off = aligned
            slack = OOB_ALIGN - 1 - pad0
            mv[off : off + slack] = _ZEROS[:slack]
            off += slack
            table = off
            struct.pack_into(f"<{len(lengths)}Q", mv, table, *lengths)
            off += 8 * len(lengths)
            _OOB_FOOTER.pack_into(mv, off, n, len(lengths), 0)
        _TRAILER.pack_into(
            mv, size - TRAILER_SIZE, self._uid, self._codec_id, self._flags, pad0, MAGIC
        )
        if self._buffers:
            struct.pack_into("<I", mv, off + 12, _framing_crc(mv, table, size))
        return size

    def tobytes(self) -> bytes:
        """The record as one ``bytes`` (a copy; alignment is not preserved by the copy)."""
        out = bytearray(self.size)
        self.write_into(out)
        return bytes(out)


#: What ``Codec.encode`` returns: a whole small record as ``bytes``, or an
#: :class:`Encoded` to write into a buffer of ``len(record)`` bytes.
Record: TypeAlias = "bytes | Encoded"


def write_record(record: Record, buf: Buffer) -> int:
    """Write ``record`` (either form ``encode`` returns) at the start of ``buf``.

    Returns the record's size; ``buf`` must be writable and at least that long.
    """
    if type(record) is bytes:
        mv = _writable_bytes(buf)
        n = len(record)
        if mv.nbytes < n:
            raise ValueError(f"the buffer holds {mv.nbytes} bytes; the record needs {n}")
        mv[:n] = record
        return n
    assert isinstance(record, Encoded)
    return record.write_into(buf)


class _Parsed:
    """The framing of a record, validated: where everything is."""

    __slots__ = ("buffers", "codec_id", "flags", "inband", "uid", "view")

    def __init__(self, data: Buffer) -> None:
        mv = memoryview(data)
        if not mv.c_contiguous:
            raise TypeError("a record must be a contiguous buffer")
        if mv.ndim != 1 or mv.format != "B":
            mv = pickle.PickleBuffer(mv).raw()
        mv = mv.toreadonly()
        n = mv.nbytes
        if n < TRAILER_SIZE:
            raise Corrupt(f"record of {n} bytes is shorter than its {TRAILER_SIZE}-byte trailer")
        uid, codec_id, flags, pad0, magic = _TRAILER.unpack_from(mv, n - TRAILER_SIZE)
        if magic != MAGIC:
            raise Corrupt(
                f"bad record magic {magic:#04x} (this interlink reads record format "
                f"{FORMAT_VERSION}, magic {MAGIC:#04x})"
            )
        if flags & ~_FLAGS_KNOWN:
            raise Corrupt(f"unknown record flags {flags:#04x}")
        if codec_id == 0:
            raise Corrupt("record without a codec id")
        self.view = mv
        self.uid = uid
        self.codec_id = codec_id
        self.flags = flags
        self.buffers: list[memoryview] = []
        if not flags & FLAG_OOB:
            if pad0:
                raise Corrupt("padding set in a record without out-of-band buffers")
            self.inband = n - TRAILER_SIZE
            return
        if pad0 >= OOB_ALIGN:
            raise Corrupt(f"first-buffer padding {pad0} is not below {OOB_ALIGN}")
        end = n - TRAILER_SIZE - OOB_FOOTER_SIZE
        if end < 0:
            raise Corrupt(f"record of {n} bytes is too short for its out-of-band table")
        inband, count, crc = _OOB_FOOTER.unpack_from(mv, end)
        if count == 0 or 8 * count > end:
            raise Corrupt(f"out-of-band buffer count {count} does not fit the record")
        table = end - 8 * count
        if _framing_crc(mv, table, n) != crc:
            raise Corrupt("checksum mismatch in the record's out-of-band table")
        if inband + pad0 > table:
            raise Corrupt(f"in-band length {inband} runs past the out-of-band table")
        lengths = struct.unpack_from(f"<{count}Q", mv, table)
        base = off = inband + pad0
        last = count - 1
        for i, k in enumerate(lengths):
            stop = off + k
            if stop > table:
                raise Corrupt(f"out-of-band buffer {i} ({k} bytes) runs past the record")
            self.buffers.append(mv[off:stop])
            off = stop if i == last else base + _align(stop - base)
        if off + OOB_ALIGN - 1 - pad0 != table:
            raise Corrupt("out-of-band buffers do not account for the record's length")
        self.inband = inband

    def payload(self) -> memoryview:
        return self.view[: self.inband]


# ------------------------------------------------------------------ codecs


class Codec(abc.ABC):
    """Turns objects into records and back; one subclass per wire encoding.

    ``encode(obj)`` returns a :data:`Record`; ``decode(record)`` the object.
    A codec is stateless apart from its options, so one instance serves any
    number of threads.  ``decode`` refuses (``Incompatible``) records written
    by another codec.  A subclass implements ``encode`` and ``_loads`` (the
    payload of a checked record to the object); :class:`_SimpleCodec` gives
    the ``encode`` of codecs that only turn an object into payload bytes.
    """

    name: ClassVar[str]
    """The codec's registered name (``get_codec(name)``)."""
    codec_id: ClassVar[int]
    """The id written into each record."""
    runs_code: ClassVar[bool] = False
    """Whether decoding may run code named by the record (pickle)."""

    def __init__(self) -> None:
        self._uid = os.geteuid()
        self._tail = _TRAILER.pack(self._uid, self.codec_id, 0, 0, MAGIC)

    @property
    def trusted(self) -> bool:
        """Whether records are decoded whoever wrote them (only pickle asks)."""
        return True

    @abc.abstractmethod
    def encode(self, obj: Any) -> Record:
        """Encode ``obj``: ``bytes`` (the whole record) or an :class:`Encoded`.

        Raises :class:`~interlink.EncodeError` (a TypeError) when the codec
        cannot represent ``obj``.
        """

    def dumps(self, obj: Any) -> bytes:
        """The record of ``obj`` as one ``bytes`` object (copies big buffers into it)."""
        r = self.encode(obj)
        return r.tobytes() if isinstance(r, Encoded) else r

    def decode(self, data: Buffer, *, copy: bool = False) -> Any:
        """Decode one record (any buffer: ``il.Message``, memoryview, bytes).

        ``copy=False`` may return views of ``data`` (see the module docs);
        ``copy=True`` returns objects that do not reference ``data``.  Raises
        ``Corrupt`` for a damaged record, ``Incompatible`` for another codec's
        record or format version, ``AccessDenied`` for a pickle record from
        another user unless the codec is trusted.
        """
        p = _Parsed(data)
        self._check(p)
        try:
            return self._loads(p, copy)
        except _PARSE_ERRORS as exc:
            raise Corrupt(f"{self.name} payload could not be decoded: {exc}") from exc

    def _check(self, p: _Parsed) -> None:
        if p.codec_id != self.codec_id:
            other = _CODEC_NAMES.get(p.codec_id)
            if other is None:
                raise Incompatible(f"record of unknown codec id {p.codec_id}")
            raise Incompatible(
                f"record was encoded by codec {other!r}; this reader uses {self.name!r}"
            )
        if p.flags:
            raise Corrupt(f"flags {p.flags:#04x} are not valid for codec {self.name!r}")

    def _encode_error(self, obj: object, exc: BaseException) -> EncodeError:
        return EncodeError(f"codec {self.name!r} cannot encode {type(obj).__name__}: {exc}")

    @abc.abstractmethod
    def _loads(self, p: _Parsed, copy: bool) -> Any:
        """The object in the payload of ``p`` (a record :meth:`_check` accepted);
        views of the record unless ``copy``."""

    def __repr__(self) -> str:
        return f"<interlink codec {self.name!r}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Codec) or type(other) is not type(self):
            return NotImplemented
        return other._options() == self._options()

    def __hash__(self) -> int:
        return hash((type(self), self._options()))

    def _options(self) -> tuple[Any, ...]:
        return ()

    def __reduce__(self) -> tuple[Any, ...]:
        # A codec travels to child processes as its options (queues pickle it).
        return (type(self)._from_options, self._options())

    @classmethod
    def _from_options(cls, *options: Any) -> Codec:
        return cls(*options)


class _SimpleCodec(Codec):
    """A codec whose records are its serialization's bytes and nothing else
    (no flags, no out-of-band buffers): subclasses implement ``_dumps`` and
    ``_loads``."""

    def encode(self, obj: Any) -> Record:
        """Encode ``obj``: ``bytes`` (the whole record) or an :class:`Encoded`.

        Raises :class:`~interlink.EncodeError` (a TypeError) when the codec
        cannot represent ``obj``.
        """
        try:
            data = self._dumps(obj)
        except MemoryError:
            raise
        except Exception as exc:
            raise self._encode_error(obj, exc) from exc
        if len(data) <= INLINE_MAX:
            return data + self._tail
        return Encoded(self.codec_id, 0, data, [], self._uid)

    @abc.abstractmethod
    def _dumps(self, obj: Any) -> bytes:
        """The payload of ``obj``'s record; any Exception but MemoryError
        becomes an EncodeError."""


class BytesCodec(Codec):
    """Bytes-like objects only, sent as they are (no serialization).

    ``encode`` takes anything with the buffer protocol (bytes, bytearray,
    memoryview, numpy arrays, mmap...) and sends its bytes in C order.
    ``decode`` returns a read-only ``memoryview`` of the record (no copy), or
    ``bytes`` with ``copy=True``.  Safe between users: decoding runs no code.
    """

    name = "bytes"
    codec_id = CODEC_BYTES

    def encode(self, obj: Any) -> Record:
        if type(obj) is bytes and len(obj) <= INLINE_MAX:
            return obj + self._tail
        try:
            mv = _flat(obj)
        except TypeError as exc:
            raise EncodeError(
                f"codec 'bytes' takes bytes-like objects, not {type(obj).__name__}"
            ) from exc
        if mv.nbytes <= INLINE_MAX:
            return b"".join((mv, self._tail))
        return Encoded(CODEC_BYTES, 0, mv, [], self._uid)

    def _loads(self, p: _Parsed, copy: bool) -> Any:
        return p.payload().tobytes() if copy else p.payload()


class PickleCodec(Codec):
    """pickle protocol 5; numpy arrays and other buffers travel out of band.

    Contiguous buffers of at least ``oob_threshold`` bytes that the object
    exposes through ``PickleBuffer`` (numpy arrays do) are written once,
    64-byte aligned, next to the pickle stream, and come back as views of the
    record (``copy=False``).  ``bytes``, ``bytearray`` and ``memoryview``
    objects are not pickled at all: their bytes are the payload, and they come
    back as the same type (a memoryview as a flat read-only byte view of the
    record, or of a copy with ``copy=True``).

    Unpickling runs code the record names, so ``decode`` refuses
    (``AccessDenied``) a pickled record whose producer uid differs from this
    process's, unless ``trusted=True``.  See :func:`pickle_allowed` for the
    check a queue makes when it opens a segment.
    """

    name = "pickle"
    codec_id = CODEC_PICKLE
    runs_code = True

    def __init__(self, trusted: bool = False, oob_threshold: int = 4096) -> None:
        if not isinstance(oob_threshold, int) or oob_threshold < 0:
            raise ValueError(f"oob_threshold must be an int >= 0, not {oob_threshold!r}")
        super().__init__()
        self._trusted = bool(trusted)
        self._oob_threshold = oob_threshold
        self._raw_tails = tuple(
            _TRAILER.pack(self._uid, CODEC_PICKLE, kind, 0, MAGIC) for kind in range(4)
        )
        self._plain_key = _TRAILER_KEY.unpack(self._tail)[0]
        # Pickles shorter than this are final after one pass without a buffer
        # callback (the callback costs ~10% of a small round trip).  _watch
        # counts down the encodes still made with the callback after a big
        # object; 0 is the fast mode.  With a zero threshold, always watch.
        self._fast_limit = min(oob_threshold, INLINE_MAX + 1)
        self._watch = 0 if oob_threshold else _WATCH_FOREVER

    @property
    def trusted(self) -> bool:
        return self._trusted

    @property
    def oob_threshold(self) -> int:
        """Smallest buffer, in bytes, sent out of band (smaller ones are pickled in-band)."""
        return self._oob_threshold

    def _options(self) -> tuple[Any, ...]:
        return (self._trusted, self._oob_threshold)

    def __repr__(self) -> str:
        return f"<interlink codec 'pickle' trusted={self._trusted}>"

    def encode(self, obj: Any) -> Record:
        kind = _RAW_KINDS.get(type(obj))
        if kind is not None:
            if kind == RAW_BYTES and len(obj) <= INLINE_MAX:
                return obj + self._raw_tails[RAW_BYTES]  # type: ignore[no-any-return]
            mv = _flat(obj)
            if mv.nbytes <= INLINE_MAX:
                return b"".join((mv, self._raw_tails[kind]))
            return Encoded(CODEC_PICKLE, kind, mv, [], self._uid)
        if not self._watch:
            # Fast mode: no buffer callback.  A pickle shorter than the
            # threshold cannot hold a buffer that would go out of band (an
            # in-band buffer puts all its bytes in the stream), so it is the
            # record as the callback would have made it.
            try:
                data = _dumps(obj, _PICKLE_PROTOCOL)
            except MemoryError:
                raise
            except Exception as exc:
                raise self._encode_error(obj, exc) from exc
            if len(data) < self._fast_limit:
                return data + self._tail
            # Big enough to hold such a buffer: pickle again watching for
            # them, and keep watching while big objects keep coming.
            self._watch = _WATCH
        return self._encode_watching(obj)

    def _encode_watching(self, obj: Any) -> Record:
        bufs: list[pickle.PickleBuffer] = []
        try:
            data = _dumps(obj, _PICKLE_PROTOCOL, buffer_callback=bufs.append)
            record = self._encode_oob(obj, data, bufs) if bufs else None
        except MemoryError:
            raise
        except Exception as exc:
            raise self._encode_error(obj, exc) from exc
        if record is None:
            record = (
                data + self._tail
                if len(data) <= INLINE_MAX
                else (Encoded(CODEC_PICKLE, RAW_NONE, data, [], self._uid))
            )
        if len(record) < self._fast_limit:  # never true with a zero threshold
            left = self._watch - 1  # threads may race here: it is only a hint
            self._watch = left if left > 0 else 0
        else:
            self._watch = _WATCH
        return record

    def _encode_oob(self, obj: Any, data: bytes, bufs: list[pickle.PickleBuffer]) -> Record:
        views = [b.raw() for b in bufs]
        threshold = self._oob_threshold
        if any(v.nbytes < threshold for v in views):
            # Some are small: pickle again, keeping those in-band (an object
            # holding many small arrays pays a second pass; big ones do not).
            views = []

            def keep_small(b: pickle.PickleBuffer) -> bool:
                raw = b.raw()
                if raw.nbytes < threshold:
                    return True  # in-band
                views.append(raw)
                return False

            data = pickle.dumps(obj, _PICKLE_PROTOCOL, buffer_callback=keep_small)
            if not views:
                if len(data) <= INLINE_MAX:
                    return data + self._tail
                return Encoded(CODEC_PICKLE, RAW_NONE, data, [], self._uid)
        return Encoded(CODEC_PICKLE, RAW_NONE, data, views, self._uid)

    def decode(self, data: Buffer, *, copy: bool = False) -> Any:
        # Hot path: a record without out-of-band buffers, pickled by this
        # user.  Its trailer is then exactly this codec's constant tail, and
        # pickle.loads reads the stream from the record's start, ignoring the
        # trailer after STOP.  (Only types whose len() counts bytes.)
        t = type(data)
        if t in _BYTE_SIZED or (
            t is memoryview and data.itemsize == 1 and data.ndim == 1 and data.c_contiguous  # type: ignore[attr-defined]
        ):
            try:
                plain = _unpack_key(data, len(data) - 8)[0] == self._plain_key  # type: ignore[arg-type]
            except struct.error:  # shorter than a trailer
                plain = False
            if plain:
                try:
                    return _loads(data)
                except _PARSE_ERRORS as exc:
                    raise Corrupt(f"pickle payload could not be decoded: {exc}") from exc
        return super().decode(data, copy=copy)

    def _check(self, p: _Parsed) -> None:
        if p.codec_id != CODEC_PICKLE:
            super()._check(p)
        kind = p.flags & _RAW_MASK
        if kind != RAW_NONE and p.flags & FLAG_OOB:
            raise Corrupt("a raw pickle-codec record cannot have out-of-band buffers")
        if kind == RAW_NONE and p.uid != self._uid and not self._trusted:
            raise AccessDenied(
                f"refusing to unpickle a record from uid {p.uid} (this process runs as uid "
                f"{self._uid}): unpickling runs code; use trusted=True to accept it"
            )

    def _loads(self, p: _Parsed, copy: bool) -> Any:
        kind = p.flags & _RAW_MASK
        if kind == RAW_BYTES:
            return p.payload().tobytes()
        if kind == RAW_BYTEARRAY:
            return bytearray(p.payload())
        if kind == RAW_VIEW:
            return memoryview(p.payload().tobytes()) if copy else p.payload()
        buffers: list[Any] = p.buffers
        if copy:
            buffers = [bytearray(b) for b in buffers]
        return pickle.loads(p.payload(), buffers=buffers)


class MsgpackCodec(_SimpleCodec):
    """MessagePack (the optional ``msgpack`` package): safe between users.

    Represents None, bool, int (64-bit), float, str, bytes, lists/tuples and
    dicts.  Arrays come back as lists (``use_list=False``: as tuples), bytes
    objects as ``bytes``.  Without the package, constructing the codec raises
    ``ModuleNotFoundError`` naming it.
    """

    name = "msgpack"
    codec_id = CODEC_MSGPACK

    def __init__(self, use_list: bool = True) -> None:
        try:
            msgpack = importlib.import_module("msgpack")
        except ImportError as exc:
            raise ModuleNotFoundError(
                "the 'msgpack' codec needs the msgpack package: pip install msgpack",
                name="msgpack",
            ) from exc
        super().__init__()
        self._use_list = bool(use_list)
        self._packb: Callable[..., bytes] = msgpack.packb
        self._unpackb: Callable[..., Any] = msgpack.unpackb
        self._errors: tuple[type[Exception], ...] = (
            msgpack.UnpackException,
            msgpack.FormatError,
            msgpack.StackError,
            TypeError,  # e.g. an array used as a map key
        )

    def _options(self) -> tuple[Any, ...]:
        return (self._use_list,)

    def _dumps(self, obj: Any) -> bytes:
        return self._packb(obj, use_bin_type=True)

    def _loads(self, p: _Parsed, copy: bool) -> Any:
        try:
            return self._unpackb(
                p.payload(), raw=False, use_list=self._use_list, strict_map_key=False
            )
        except self._errors as exc:
            raise Corrupt(f"msgpack payload could not be decoded: {exc}") from exc


class JsonCodec(_SimpleCodec):
    """JSON text in UTF-8: safe between users, readable by anything.

    Represents None, bool, int, float, str, lists/tuples and dicts with string
    keys; tuples come back as lists, non-string keys as strings (as
    ``json.dumps`` makes them).  ``allow_nan=False`` refuses NaN and
    infinities (strict JSON).
    """

    name = "json"
    codec_id = CODEC_JSON

    def __init__(self, allow_nan: bool = True) -> None:
        super().__init__()
        self._allow_nan = bool(allow_nan)
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=self._allow_nan
        )

    def _options(self) -> tuple[Any, ...]:
        return (self._allow_nan,)

    def _dumps(self, obj: Any) -> bytes:
        return self._encoder.encode(obj).encode("utf-8", "surrogatepass")

    def _loads(self, p: _Parsed, copy: bool) -> Any:
        return json.loads(str(p.payload(), "utf-8", "surrogatepass"))


# ---------------------------------------------------------------- registry

_FACTORIES: Final[dict[str, Callable[[bool], Codec]]] = {
    "auto": lambda trusted: PickleCodec(trusted=trusted),
    "bytes": lambda trusted: BytesCodec(),
    "json": lambda trusted: JsonCodec(),
    "msgpack": lambda trusted: MsgpackCodec(),
    "pickle": lambda trusted: PickleCodec(trusted=trusted),
}


def codec_names() -> list[str]:
    """The names ``get_codec`` knows ("auto" is pickle with the bytes fast path)."""
    return sorted(_FACTORIES)


def get_codec(spec: str | Codec = "auto", *, trusted: bool = False) -> Codec:
    """The codec named ``spec`` (or ``spec`` itself, when it is a Codec).

    ``trusted=True`` makes a pickle codec accept records from other users;
    passing it with a codec instance that is not trusted is a ValueError (say
    ``PickleCodec(trusted=True)`` instead).  An unknown name is a ValueError
    listing the known ones; a missing optional package a ModuleNotFoundError.
    """
    if isinstance(spec, Codec):
        if trusted and not spec.trusted:
            raise ValueError(f"trusted=True conflicts with the untrusted codec {spec!r}")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"codec must be a name or a Codec, not {type(spec).__name__}")
    factory = _FACTORIES.get(spec)
    if factory is None:
        raise ValueError(f"unknown codec {spec!r}; known codecs: {', '.join(codec_names())}")
    return factory(trusted)


def pickle_allowed(owner_uid: int, mode: int, trusted: bool) -> bool:
    """Whether pickle records read from an object may be unpickled.

    The uid in a record is written by its producer and can be forged by any
    process that can write the segment, so a queue checks the segment itself
    when it opens it (``os.fstat``: ``st_uid`` and ``st_mode``, never the
    header's copies): pickle is allowed when the caller trusts the peers, or
    when the object belongs to this process's effective uid and neither group
    nor others may write it (so only this user -- and root -- can have written
    the records).
    """
    if trusted:
        return True
    return owner_uid == os.geteuid() and not mode & (stat.S_IWGRP | stat.S_IWOTH)


# -------------------------------------------- shared by Queue and Topic


def check_descriptor(
    kind: str, name: str, magic_ok: bool, codec_id: int, codec_name: bytes, codec: Codec
) -> None:
    """Raise ``Incompatible`` unless a segment's codec descriptor names ``codec``.

    ``kind`` ("queue", "topic") and ``name`` go into the message;
    ``magic_ok`` says whether the descriptor's magic was found; ``codec_id``
    and ``codec_name`` (NUL-padded ASCII) are what the segment stores.
    """
    stored = codec_name.rstrip(b"\0").decode("ascii", "replace")
    if not magic_ok:
        raise Incompatible(f"{kind} {name!r} has no codec descriptor")
    if codec_id != codec.codec_id or stored != codec.name:
        raise Incompatible(f"{kind} {name!r} uses the codec {stored!r}, not {codec.name!r}")


def segment_pickle_ok(codec: Codec, fd: int, trusted: bool) -> bool:
    """Whether records of ``codec`` read from the segment open on ``fd`` may
    be decoded: always for a codec that runs no code, else by
    :func:`pickle_allowed` on the segment's owner and mode (trusted when
    ``trusted`` or the codec itself is)."""
    st = os.fstat(fd)
    return not codec.runs_code or pickle_allowed(
        st.st_uid, stat.S_IMODE(st.st_mode), bool(trusted) or codec.trusted
    )


def refuse_pickle(kind: str, name: str, data: Any) -> None:
    """Raise ``AccessDenied`` unless ``data`` is a raw bytes/bytearray/memoryview
    record of the pickle codec (those run no code when decoded).

    For a record read from the ``kind`` ("queue", "topic") ``name`` whose
    segment :func:`segment_pickle_ok` refused.
    """
    mv = memoryview(data)
    try:
        n = mv.nbytes
        if n >= TRAILER_SIZE:
            flags = _TRAILER.unpack_from(mv, n - TRAILER_SIZE)[2]
            if flags & _RAW_MASK:
                return
    finally:
        mv.release()
    raise AccessDenied(
        f"refusing to unpickle a record from {kind} {name!r}: the segment is not "
        "owned by this user or is writable by others (pass trusted=True to accept)"
    )


def _fix_module() -> None:
    # Tracebacks, reprs and pickles name the public path (interlink.PickleCodec).
    for cls in (Codec, BytesCodec, PickleCodec, MsgpackCodec, JsonCodec, Encoded):
        cls.__module__ = "interlink"


_fix_module()
