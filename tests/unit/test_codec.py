"""Codecs (interlink._codec): round trips, zero-copy buffers, the record format's checks, trust."""

from __future__ import annotations

import gc
import math
import os
import pickle
import stat
import struct
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import interlink as il
from interlink import _codec
from interlink._codec import (
    FLAG_OOB,
    INLINE_MAX,
    OOB_FOOTER_SIZE,
    TRAILER_SIZE,
    pickle_allowed,
    write_record,
)

pytestmark = pytest.mark.timeout(60)

NAMES = ["bytes", "pickle", "msgpack", "json"]
UID = os.geteuid()


# ---------------------------------------------------------------- helpers


def to_buffer(record: _codec.Record, offset: int = 0) -> memoryview:
    """The record written at ``offset`` of a fresh bytearray, as the exact view."""
    buf = bytearray(offset + len(record) + 5)
    n = write_record(record, memoryview(buf)[offset:])
    assert n == len(record)
    return memoryview(buf)[offset : offset + n]


def trailer(rec: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int]:
    """(uid, codec id, flags, pad0, magic) of a record."""
    return struct.unpack_from("<IBBBB", rec, len(rec) - TRAILER_SIZE)  # type: ignore[return-value]


def patched(rec: bytes | memoryview, offset_from_end: int, fmt: str, value: int) -> bytearray:
    """A copy of ``rec`` with one field (at ``len - offset_from_end``) replaced."""
    out = bytearray(rec)
    struct.pack_into(fmt, out, len(out) - offset_from_end, value)
    return out


def oob_record(n_arrays: int = 2) -> bytes:
    arrays = [np.arange(1024 * (i + 1), dtype=np.float64) for i in range(n_arrays)]
    r = il.PickleCodec().encode({"arrays": arrays, "tag": "x"})
    assert isinstance(r, il.Encoded)
    return r.tobytes()


def normalize(value: Any) -> Any:
    """Tuples as lists (msgpack and json give arrays back as lists)."""
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------- registry


def test_get_codec_names_and_default() -> None:
    assert _codec.codec_names() == ["auto", "bytes", "json", "msgpack", "pickle"]
    assert isinstance(il.get_codec(), il.PickleCodec)
    assert isinstance(il.get_codec("auto"), il.PickleCodec)
    assert isinstance(il.get_codec("bytes"), il.BytesCodec)
    assert isinstance(il.get_codec("pickle"), il.PickleCodec)
    assert isinstance(il.get_codec("msgpack"), il.MsgpackCodec)
    assert isinstance(il.get_codec("json"), il.JsonCodec)
    assert il.get_codec("pickle", trusted=True).trusted
    assert not il.get_codec("pickle").trusted
    assert il.get_codec("json", trusted=True).name == "json"  # trust only matters to pickle


def test_get_codec_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown codec 'yaml'") as info:
        il.get_codec("yaml")
    for name in _codec.codec_names():
        assert name in str(info.value)
    with pytest.raises(TypeError):
        il.get_codec(3)  # type: ignore[arg-type]


def test_get_codec_instance_passes_through() -> None:
    codec = il.MsgpackCodec(use_list=False)
    assert il.get_codec(codec) is codec
    trusted = il.PickleCodec(trusted=True)
    assert il.get_codec(trusted, trusted=True) is trusted
    with pytest.raises(ValueError, match="conflicts"):
        il.get_codec(il.PickleCodec(), trusted=True)


def test_codecs_compare_and_pickle_by_options() -> None:
    assert il.PickleCodec() == il.PickleCodec()
    assert il.PickleCodec() != il.PickleCodec(trusted=True)
    assert il.JsonCodec() != il.PickleCodec()
    assert len({il.PickleCodec(), il.PickleCodec(), il.JsonCodec()}) == 2
    for codec in (
        il.PickleCodec(trusted=True, oob_threshold=10),
        il.MsgpackCodec(use_list=False),
        il.JsonCodec(allow_nan=False),
        il.BytesCodec(),
    ):
        again = pickle.loads(pickle.dumps(codec))
        assert again == codec and type(again) is type(codec)
        assert again.name in repr(again)


def test_pickle_codec_rejects_bad_threshold() -> None:
    with pytest.raises(ValueError):
        il.PickleCodec(oob_threshold=-1)


# -------------------------------------------------------------- round trips

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
msgpack_values = st.recursive(
    scalars | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=10) | st.integers(-100, 100), inner, max_size=5)
    ),
    max_leaves=30,
)
pickle_values = st.recursive(
    scalars | st.binary(max_size=40) | st.integers() | st.complex_numbers(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers() | st.text(max_size=5), max_size=4)
        | st.dictionaries(st.text(max_size=10) | st.integers(), inner, max_size=5)
    ),
    max_leaves=30,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(value=pickle_values, offset=st.integers(0, 70))
def test_pickle_round_trip(value: Any, offset: int) -> None:
    codec = il.PickleCodec()
    record = codec.encode(value)
    assert codec.decode(to_buffer(record, offset)) == value
    assert codec.decode(codec.dumps(value)) == value
    assert codec.decode(bytearray(codec.dumps(value)), copy=True) == value


@SETTINGS
@given(value=msgpack_values)
def test_msgpack_round_trip(value: Any) -> None:
    codec = il.MsgpackCodec()
    assert codec.decode(to_buffer(codec.encode(value), 3)) == normalize(value)
    as_tuples = il.MsgpackCodec(use_list=False).decode(codec.dumps(value))
    assert normalize(as_tuples) == normalize(value)


@SETTINGS
@given(value=json_values)
def test_json_round_trip(value: Any) -> None:
    codec = il.JsonCodec()
    assert codec.decode(to_buffer(codec.encode(value), 1)) == normalize(value)


def test_json_details() -> None:
    codec = il.JsonCodec()
    record = codec.dumps({"é": [1, 2.5, None, True], "k": "\ud800"})  # a lone surrogate too
    assert record[:-TRAILER_SIZE] == '{"é":[1,2.5,null,true],"k":"\ud800"}'.encode(
        "utf-8", "surrogatepass"
    )
    assert codec.decode(record) == {"é": [1, 2.5, None, True], "k": "\ud800"}
    assert math.isinf(codec.decode(codec.dumps(float("inf"))))
    with pytest.raises(il.EncodeError):
        il.JsonCodec(allow_nan=False).encode(float("nan"))


def test_big_objects_come_back_as_encoded_records() -> None:
    big = list(range(INLINE_MAX))
    for codec in (il.PickleCodec(), il.MsgpackCodec(), il.JsonCodec()):
        record = codec.encode(big)
        assert isinstance(record, il.Encoded)
        assert len(record) == record.size > INLINE_MAX
        assert codec.decode(to_buffer(record, 7)) == big
        assert codec.decode(record.tobytes()) == big
    small = codec.encode([1, 2])
    assert type(small) is bytes


# ---------------------------------------------------------- bytes-like fast path


@pytest.mark.parametrize("size", [0, 1, 1000, INLINE_MAX + 1, 3 << 20])
def test_pickle_codec_passes_bytes_like_as_they_are(size: int) -> None:
    codec = il.PickleCodec()
    data = os.urandom(size)
    for obj in (data, bytearray(data), memoryview(data)):
        record = codec.encode(obj)
        assert isinstance(record, bytes) == (size <= INLINE_MAX)
        view = to_buffer(record)
        assert view[:size] == data  # the payload is the bytes themselves, not a pickle
        out = codec.decode(view)
        assert type(out) is type(obj)
        assert bytes(out) == data
        out_copy = codec.decode(view, copy=True)
        assert type(out_copy) is type(obj) and bytes(out_copy) == data


def test_pickle_codec_memoryview_comes_back_as_a_view_of_the_record() -> None:
    codec = il.PickleCodec()
    source = bytearray(b"abcdef" * 1000)
    buf = bytearray(codec.dumps(memoryview(source)))
    out = codec.decode(memoryview(buf))
    assert isinstance(out, memoryview) and out.readonly
    buf[0:3] = b"XYZ"
    assert bytes(out[:3]) == b"XYZ"  # a view, not a copy
    copied = codec.decode(memoryview(buf), copy=True)
    buf[0:3] = b"abc"
    assert bytes(copied[:3]) == b"XYZ"


def test_raw_bytes_are_accepted_from_other_users() -> None:
    codec = il.PickleCodec()
    foreign = patched(codec.dumps(b"payload"), TRAILER_SIZE, "<I", UID + 1)
    assert codec.decode(foreign) == b"payload"  # no unpickling, nothing runs


def test_bytes_codec() -> None:
    codec = il.BytesCodec()
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    cases: list[tuple[Any, bytes]] = [
        (b"abc", b"abc"),
        (bytearray(b"xyz"), b"xyz"),
        (memoryview(b"0123456789")[2:5], b"234"),
        (arr, arr.tobytes()),
        (arr[:, ::2], arr[:, ::2].tobytes()),  # non-contiguous: its bytes in C order
        (np.asfortranarray(arr), arr.tobytes()),
        (b"z" * (INLINE_MAX + 10), b"z" * (INLINE_MAX + 10)),
    ]
    for obj, expected in cases:
        view = to_buffer(codec.encode(obj), 5)
        out = codec.decode(view)
        assert isinstance(out, memoryview) and out.readonly and out == expected
        assert np.shares_memory(np.frombuffer(out, np.uint8), np.frombuffer(view.obj, np.uint8))
        assert codec.decode(view, copy=True) == expected
        assert type(codec.decode(view, copy=True)) is bytes
    with pytest.raises(il.EncodeError, match="bytes-like") as info:
        codec.encode("text")
    assert isinstance(info.value, TypeError)


# ----------------------------------------------------------------- numpy

DTYPES = [
    np.float64,
    np.float32,
    np.int8,
    np.uint16,
    np.int64,
    np.complex128,
    np.bool_,
    np.dtype("datetime64[ns]"),
    np.dtype(">i4"),
    np.dtype([("x", "<i4"), ("y", "<f8"), ("name", "S5")]),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 4), (64, 33, 5)])
def test_numpy_round_trip(dtype: Any, shape: tuple[int, ...]) -> None:
    codec = il.PickleCodec(oob_threshold=0)
    dt = np.dtype(dtype)
    count = math.prod(shape)
    pattern = (bytes(range(1, 256)) * (count * dt.itemsize // 255 + 1))[: count * dt.itemsize]
    arr = np.frombuffer(pattern, dtype=dt).reshape(shape).copy()
    variants = [arr, np.asfortranarray(arr)]
    if arr.ndim >= 1 and arr.shape[0] > 1:
        variants.append(arr[::2])  # non-contiguous: pickled in-band (a copy)
    if arr.ndim == 2:
        variants.append(arr.T)
    for a in variants:
        for copy in (False, True):
            out = codec.decode(to_buffer(codec.encode({"a": a}), 3), copy=copy)["a"]
            ref = pickle.loads(pickle.dumps(a, 5))  # what numpy itself gives back
            assert out.dtype == ref.dtype and out.shape == a.shape
            assert out.tobytes(order="A") == ref.tobytes(order="A")
            assert out.tobytes() == a.astype(ref.dtype).tobytes()
            assert out.flags.f_contiguous == ref.flags.f_contiguous


def test_numpy_arrays_are_views_of_the_record() -> None:
    codec = il.PickleCodec()
    a = np.arange(100_000, dtype=np.float64)
    b = np.arange(30_000, dtype=np.int16).reshape(100, 300)
    record = codec.encode((a, "between", b))
    assert isinstance(record, il.Encoded)
    buf = bytearray(record.size + 64)
    for start in (0, 1, 8, 17, 63):
        view = memoryview(buf)[start : start + record.size]
        record.write_into(view)
        out_a, tag, out_b = codec.decode(view)
        assert tag == "between"
        assert np.array_equal(out_a, a) and np.array_equal(out_b, b)
        whole = np.frombuffer(buf, dtype=np.uint8)
        assert np.shares_memory(out_a, whole) and np.shares_memory(out_b, whole)
        assert not out_a.flags.writeable  # views of a record are read-only
        # 64-byte aligned in memory, whatever the record's own alignment.
        assert out_a.ctypes.data % 64 == 0 and out_b.ctypes.data % 64 == 0
        # Writing into the record is seen through the decoded array: no copy.
        offset = out_a.ctypes.data - whole.ctypes.data
        buf[offset : offset + 8] = struct.pack("<d", -1.5)
        assert out_a[0] == -1.5
        del out_a, out_b


def test_copy_true_gives_arrays_that_own_their_memory() -> None:
    codec = il.PickleCodec()
    a = np.arange(10_000, dtype=np.float32)
    view = to_buffer(codec.encode(a))
    out = codec.decode(view, copy=True)
    assert np.array_equal(out, a)
    assert out.flags.writeable
    assert not np.shares_memory(out, np.frombuffer(view.obj, np.uint8))


def test_small_buffers_stay_in_band() -> None:
    small = np.arange(16, dtype=np.float64)  # 128 bytes < the 4096 threshold
    record = il.PickleCodec().encode({"s": small, "t": small + 1})
    assert type(record) is bytes and not trailer(record)[2] & FLAG_OOB
    out = il.PickleCodec().decode(record)
    assert np.array_equal(out["t"], small + 1) and out["s"].flags.writeable
    big = np.arange(4096, dtype=np.uint8)
    mixed = il.PickleCodec().encode([small, big, small])
    assert isinstance(mixed, il.Encoded)
    assert "1 out-of-band" in repr(mixed)
    got = il.PickleCodec().decode(mixed.tobytes())
    assert all(np.array_equal(x, y) for x, y in zip(got, [small, big, small], strict=True))
    every = il.PickleCodec(oob_threshold=0).encode([small, small.copy()])
    assert "2 out-of-band" in repr(every)


def test_fast_and_watching_modes_give_the_same_records() -> None:
    # Small pickles skip the buffer callback; after a big one the codec
    # watches for buffers for a while.  Records must not depend on the mode.
    codec = il.PickleCodec()
    fresh = il.PickleCodec
    arr = np.arange(2048, dtype=np.float64)  # 16 KiB: out of band
    small = {"a": [1, 2, 3], "s": np.arange(4)}
    assert codec._watch == 0
    assert codec.encode(small) == fresh().encode(small)
    first = codec.encode({"x": arr})  # fast mode: pickled twice, then watching
    assert isinstance(first, il.Encoded) and "1 out-of-band" in repr(first)
    assert codec._watch > 0
    assert codec.encode(small) == small_record(small)  # watching: same bytes
    again = codec.encode({"x": arr})
    assert isinstance(again, il.Encoded) and again.tobytes() == first.tobytes()
    for _ in range(_codec._WATCH):
        codec.encode(small)
    assert codec._watch == 0  # back to the fast mode
    big_plain = list(range(3000))  # big, no buffers: watched, but inline
    assert codec.decode(codec.encode(big_plain)) == big_plain and codec._watch > 0
    always = il.PickleCodec(oob_threshold=0)
    for _ in range(3):
        assert always._watch > 0 and "1 out-of-band" in repr(always.encode(np.arange(3)))


def small_record(value: Any) -> bytes:
    record = il.PickleCodec().encode(value)
    assert type(record) is bytes
    return record


def test_zero_length_out_of_band_buffers() -> None:
    codec = il.PickleCodec(oob_threshold=0)
    value = [np.zeros(0), np.arange(3.0), np.zeros((0, 4))]
    out = codec.decode(to_buffer(codec.encode(value), 2))
    assert [x.shape for x in out] == [(0,), (3,), (0, 4)]
    assert np.array_equal(out[1], value[1])


def test_padding_is_zeroed_and_records_are_deterministic() -> None:
    codec = il.PickleCodec(oob_threshold=0)
    value = [np.full(3, 7, dtype=np.uint8), np.full(5, 9, dtype=np.uint8)]
    record = codec.encode(value)
    assert isinstance(record, il.Encoded)
    first = bytearray(b"\xff" * record.size)
    second = bytearray(b"\xee" * record.size)
    record.write_into(first)
    record.write_into(second)
    pad = trailer(first)[3]
    assert trailer(second)[3] == pad  # both bytearrays share the allocator's alignment
    assert first == second  # every byte written; no leftover garbage


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pickle", lambda: None),
        ("pickle", [1, 2, (x for x in ())]),
        ("msgpack", object()),
        ("msgpack", 2**70),
        ("msgpack", {1: {2: set()}}),
        ("json", object()),
        ("json", {"bytes": b"x"}),
        ("bytes", 42),
        ("bytes", "text"),
    ],
)
def test_unencodable_objects_raise_encode_error(name: str, value: Any) -> None:
    with pytest.raises(il.EncodeError, match=name) as info:
        il.get_codec(name).encode(value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, il.InterlinkError)


def test_circular_json_is_an_encode_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(il.EncodeError):
        il.JsonCodec().encode(loop)


def test_write_into_checks_the_destination() -> None:
    record = il.PickleCodec().encode(np.arange(10_000.0))
    assert isinstance(record, il.Encoded)
    with pytest.raises(ValueError, match="needs"):
        record.write_into(bytearray(record.size - 1))
    with pytest.raises(TypeError, match="read-only"):
        record.write_into(bytes(record.size))
    with pytest.raises(ValueError):
        write_record(b"abc", bytearray(2))
    with pytest.raises(TypeError):
        write_record(b"abc", b"xyz")
    # A multi-byte-item destination is written as bytes.
    words = np.zeros(record.size // 8 + 1, dtype=np.uint64)
    record.write_into(words)
    assert np.array_equal(
        il.PickleCodec().decode(words.view(np.uint8)[: record.size]), np.arange(10_000.0)
    )


@pytest.mark.parametrize("writer", NAMES)
@pytest.mark.parametrize("reader", NAMES)
def test_wrong_codec_is_incompatible(writer: str, reader: str) -> None:
    value: Any = b"abc" if writer == "bytes" else {"k": [1, 2]}
    record = il.get_codec(writer).dumps(value)
    if writer == reader:
        out = il.get_codec(reader).decode(record, copy=True)
        assert out == (b"abc" if writer == "bytes" else {"k": [1, 2]})
        return
    with pytest.raises(il.Incompatible, match=f"codec '{writer}'"):
        il.get_codec(reader).decode(record)


def test_unknown_codec_id_is_incompatible_and_other_formats_corrupt() -> None:
    record = il.PickleCodec().dumps((1, 2))
    with pytest.raises(il.Incompatible, match="unknown codec id 99"):
        il.PickleCodec().decode(patched(record, 4, "<B", 99))
    with pytest.raises(il.Corrupt, match="magic 0xc2"):
        il.PickleCodec().decode(patched(record, 1, "<B", 0xC2))


CORRUPTIONS: list[tuple[str, Callable[[bytes], bytearray | bytes], str]] = [
    ("empty", lambda r: b"", "shorter than"),
    ("short", lambda r: r[:5], "shorter than"),
    ("magic", lambda r: patched(r, 1, "<B", 0x00), "magic"),
    ("magic-ff", lambda r: patched(r, 1, "<B", 0xFF), "magic"),
    ("unknown flags", lambda r: patched(r, 3, "<B", 0x84), "flags"),
    ("pad0 too big", lambda r: patched(r, 2, "<B", 64), "padding"),
    ("count zero", lambda r: patched(r, TRAILER_SIZE + 8, "<I", 0), "count"),
    ("count huge", lambda r: patched(r, TRAILER_SIZE + 8, "<I", 0xFFFFFFFF), "count"),
    # Past the bounds checks, the framing checksum catches the rest, even
    # damage that keeps every offset in bounds (a shifted first buffer).
    ("pad0 off by one", lambda r: patched(r, 2, "<B", (trailer(r)[3] + 1) % 64), "checksum"),
    ("raw and oob", lambda r: patched(r, 3, "<B", FLAG_OOB | 1), "checksum"),
    ("uid", lambda r: patched(r, TRAILER_SIZE, "<I", UID + 1), "checksum"),
    ("crc", lambda r: patched(r, TRAILER_SIZE + 4, "<I", 1), "checksum"),
    ("count plus one", lambda r: patched(r, TRAILER_SIZE + 8, "<I", 3), "checksum"),
    ("inband huge", lambda r: patched(r, TRAILER_SIZE + 16, "<Q", 2**64 - 1), "checksum"),
    ("inband minus one", lambda r: patched(r, TRAILER_SIZE + 16, "<Q", _inband(r) - 1), "checksum"),
    (
        "length 0 huge",
        lambda r: patched(r, OOB_FOOTER_SIZE + TRAILER_SIZE + 16, "<Q", 2**63),
        "checksum",
    ),
    (
        "length 1 minus 1",
        lambda r: patched(r, OOB_FOOTER_SIZE + TRAILER_SIZE + 8, "<Q", 16383),
        "checksum",
    ),
    ("one byte more", lambda r: r[:-TRAILER_SIZE] + b"\0" + r[-TRAILER_SIZE:], "."),
    ("one byte less", lambda r: r[: -TRAILER_SIZE - 1] + r[-TRAILER_SIZE:], "."),
]


def with_crc(rec: bytearray) -> bytearray:
    """``rec`` with its framing checksum recomputed (to reach the checks behind it)."""
    count = struct.unpack_from("<I", rec, len(rec) - TRAILER_SIZE - 8)[0]
    table = len(rec) - TRAILER_SIZE - OOB_FOOTER_SIZE - 8 * count
    crc = _codec._framing_crc(memoryview(rec), table, len(rec))
    struct.pack_into("<I", rec, len(rec) - TRAILER_SIZE - 4, crc)
    return rec


# Damage with a valid checksum: what a buggy or hostile writer could produce.
FORGED: list[tuple[str, Callable[[bytes], bytearray], type[Exception], str]] = [
    ("raw and oob", lambda r: with_crc(patched(r, 3, "<B", FLAG_OOB | 1)), il.Corrupt, "raw"),
    ("uid", lambda r: with_crc(patched(r, TRAILER_SIZE, "<I", UID + 1)), il.AccessDenied, "uid"),
    (
        "inband huge",
        lambda r: with_crc(patched(r, TRAILER_SIZE + 16, "<Q", 2**64 - 1)),
        il.Corrupt,
        "in-band",
    ),
    (
        "inband minus one",
        lambda r: with_crc(patched(r, TRAILER_SIZE + 16, "<Q", _inband(r) - 1)),
        il.Corrupt,
        "account",
    ),
    (
        "inband plus one",
        lambda r: with_crc(patched(r, TRAILER_SIZE + 16, "<Q", _inband(r) + 1)),
        il.Corrupt,
        "account",
    ),
    (
        "length 0 huge",
        lambda r: with_crc(patched(r, OOB_FOOTER_SIZE + TRAILER_SIZE + 16, "<Q", 2**63)),
        il.Corrupt,
        "runs past",
    ),
    (
        "length 1 huge",
        lambda r: with_crc(patched(r, OOB_FOOTER_SIZE + TRAILER_SIZE + 8, "<Q", 2**40)),
        il.Corrupt,
        "runs past",
    ),
    (
        "length 0 plus 1",
        lambda r: with_crc(patched(r, OOB_FOOTER_SIZE + TRAILER_SIZE + 16, "<Q", 8193)),
        il.Corrupt,
        "runs past",
    ),
    (
        "length 1 minus 1",
        lambda r: with_crc(patched(r, OOB_FOOTER_SIZE + TRAILER_SIZE + 8, "<Q", 16383)),
        il.Corrupt,
        "account",
    ),
]


def _inband(rec: bytes | bytearray) -> int:
    return int(struct.unpack_from("<Q", rec, len(rec) - TRAILER_SIZE - OOB_FOOTER_SIZE)[0])


@pytest.mark.parametrize(
    ("what", "damage", "message"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
def test_damaged_out_of_band_record_is_corrupt(
    what: str, damage: Callable[[bytes], bytes | bytearray], message: str
) -> None:
    record = oob_record(2)  # two buffers: 8192 and 16384 bytes
    assert il.PickleCodec().decode(record)["tag"] == "x"
    with pytest.raises(il.Corrupt, match=message):
        il.PickleCodec().decode(damage(record))


@pytest.mark.parametrize(("what", "damage", "error", "message"), FORGED, ids=[c[0] for c in FORGED])
def test_forged_framing_with_valid_checksum_is_still_caught(
    what: str, damage: Callable[[bytes], bytearray], error: type[Exception], message: str
) -> None:
    record = oob_record(2)
    with pytest.raises(error, match=message):
        il.PickleCodec().decode(damage(record))


def test_forged_padding_stays_within_the_record() -> None:
    # A consistent forgery that shifts every buffer inside its slack cannot
    # be told from a real record; what the format guarantees is that nothing
    # outside the record is read.
    record = oob_record(2)
    forged = with_crc(patched(record, 2, "<B", (trailer(record)[3] + 5) % 64))
    out = il.PickleCodec().decode(forged)
    whole = np.frombuffer(forged, dtype=np.uint8)
    for arr in out["arrays"]:
        lo = arr.ctypes.data - whole.ctypes.data
        assert lo >= 0 and lo + arr.nbytes <= len(forged) - TRAILER_SIZE


def test_every_truncation_is_corrupt() -> None:
    codec = il.PickleCodec(oob_threshold=0)
    record = codec.dumps({"a": np.arange(40, dtype=np.uint8), "b": np.arange(3.0), "c": "tail"})
    for cut in range(len(record)):
        with pytest.raises(il.Corrupt):
            codec.decode(record[:cut])
        with pytest.raises(il.Corrupt):
            codec.decode(record[len(record) - cut :] if cut else b"")


@pytest.mark.parametrize("name", NAMES)
def test_damaged_payload_is_corrupt(name: str) -> None:
    codec = il.get_codec(name)
    record = bytearray(codec.dumps(b"x" if name == "bytes" else {"key": "value", "n": [1, 2]}))
    if name == "bytes":
        # No structure to check in raw bytes: only the framing can be damaged.
        with pytest.raises(il.Corrupt):
            codec.decode(patched(record, 3, "<B", 0x01))
        return
    damaged = record[:3] + b"\xff\xfe" + record[5:]
    with pytest.raises(il.Corrupt, match="could not be decoded"):
        codec.decode(damaged)
    truncated_payload = record[:4] + record[-TRAILER_SIZE:]
    with pytest.raises(il.Corrupt):
        codec.decode(truncated_payload)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fuzzed_framing_never_escapes_the_typed_errors(data: st.DataObject) -> None:
    record = bytearray(oob_record(3))
    # Damage 1-3 bytes of the framing: trailer, footer and buffer-length table.
    framing = TRAILER_SIZE + OOB_FOOTER_SIZE + 3 * 8
    for _ in range(data.draw(st.integers(1, 3))):
        pos = len(record) - 1 - data.draw(st.integers(0, framing - 1))
        record[pos] = data.draw(st.integers(0, 255))
    try:
        out = il.PickleCodec().decode(record)
    except (il.Corrupt, il.Incompatible, il.AccessDenied):
        return
    assert out["tag"] == "x"  # an undamaging "damage" (same byte written back)


def test_decode_of_non_byte_views_and_messages() -> None:
    codec = il.PickleCodec()
    value = next(v for v in ("x" * k for k in range(8)) if len(codec.dumps(v)) % 8 == 0)
    as_words = memoryview(codec.dumps(value)).cast("Q")  # len() counts words, not bytes
    assert codec.decode(as_words) == value
    assert codec.decode(np.frombuffer(codec.dumps(value), dtype=np.uint32)) == value
    with pytest.raises(TypeError, match="contiguous"):
        codec.decode(memoryview(np.arange(40, dtype=np.uint8)[::2]))


# ------------------------------------------------------------------- trust


def foreign(record: bytes) -> bytearray:
    return patched(record, TRAILER_SIZE, "<I", UID + 12345)


def test_pickle_from_another_uid_is_refused() -> None:
    record = il.PickleCodec().dumps({"a": 1})
    with pytest.raises(il.AccessDenied, match="unpickling runs code") as info:
        il.PickleCodec().decode(foreign(record))
    assert isinstance(info.value, PermissionError)
    assert il.PickleCodec(trusted=True).decode(foreign(record)) == {"a": 1}
    assert il.get_codec("pickle", trusted=True).decode(foreign(record)) == {"a": 1}


def test_pickle_with_buffers_from_another_uid_is_refused() -> None:
    record = with_crc(foreign(oob_record(1)))
    with pytest.raises(il.AccessDenied):
        il.PickleCodec().decode(record)
    assert il.PickleCodec(trusted=True).decode(record)["tag"] == "x"


@pytest.mark.parametrize("name", ["bytes", "msgpack", "json"])
def test_codecs_that_run_no_code_accept_any_uid(name: str) -> None:
    codec = il.get_codec(name)
    value: Any = b"abc" if name == "bytes" else {"a": [1, 2]}
    out = codec.decode(foreign(codec.dumps(value)))
    assert (bytes(out) if name == "bytes" else out) == value
    assert not codec.runs_code and codec.trusted
    assert il.PickleCodec.runs_code


def test_pickle_allowed() -> None:
    me, other = os.geteuid(), os.geteuid() + 1
    assert pickle_allowed(me, 0o600, False)
    assert pickle_allowed(me, 0o644, False)  # others may read, not write
    assert pickle_allowed(me, 0o400, False)
    assert not pickle_allowed(me, 0o660, False)  # group may write
    assert not pickle_allowed(me, 0o602, False)  # others may write
    assert not pickle_allowed(me, 0o666, False)
    assert not pickle_allowed(other, 0o600, False)  # someone else's object
    assert pickle_allowed(other, 0o666, True)
    assert pickle_allowed(me, 0o666 | stat.S_IFREG, True)


def test_pickle_allowed_on_a_real_channel(name: str) -> None:
    for mode, expected in ((0o600, True), (0o640, True), (0o660, False), (0o666, False)):
        with il.Channel(f"{name}-{mode:o}", 4096, mode=mode) as ch:
            from interlink._segment import _path_for

            st_ = os.stat(_path_for(ch.name))
            assert pickle_allowed(st_.st_uid, st_.st_mode, False) is expected
            assert pickle_allowed(st_.st_uid, st_.st_mode, True)
            ch.unlink()


# ----------------------------------------------------------- with a Channel


def test_round_trip_through_a_channel_loan_without_copies() -> None:
    codec = il.PickleCodec()
    arr = np.random.default_rng(1).random((512, 512))  # 2 MiB
    with il.Channel(None, 8 << 20) as ch:
        record = codec.encode({"frame": arr, "seq": 7})
        assert isinstance(record, il.Encoded)
        with ch.loan(record.size) as buf:
            assert record.write_into(buf) == record.size
        msg = ch.recv(timeout=5)
        out = codec.decode(msg)
        assert out["seq"] == 7 and np.array_equal(out["frame"], arr)
        assert np.shares_memory(out["frame"], np.frombuffer(msg, dtype=np.uint8))
        assert out["frame"].ctypes.data % 64 == 0
        msg.release()  # deferred: the array still views the message
        assert ch.statistics().used > arr.nbytes
        assert out["frame"][511, 511] == arr[511, 511]
        del out, msg
        gc.collect()
        assert ch.statistics().used == 0  # the last view went: the space is back


def test_small_records_through_send_and_recv() -> None:
    values: list[Any] = [(1, "abc", 2.0), {"a": 1}, b"raw", bytearray(b"ba"), None, "s" * 100]
    with il.Channel(None, 1 << 16) as ch:
        for name in ("pickle", "msgpack", "json"):
            codec = il.get_codec(name)
            for v in values:
                if name != "pickle" and isinstance(v, (bytes, bytearray, tuple)):
                    continue
                record = codec.encode(v)
                assert type(record) is bytes
                ch.send(record)
                with ch.recv(timeout=5) as msg:
                    assert codec.decode(msg) == v
        ch.send(il.PickleCodec().encode(b"hello"))
        with ch.recv(timeout=5) as msg:
            with pytest.raises(il.Incompatible):
                il.BytesCodec().decode(msg)
            assert il.PickleCodec().decode(msg) == b"hello"


def test_msgpack_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # import now fails
    with pytest.raises(ModuleNotFoundError, match="pip install msgpack") as info:
        il.MsgpackCodec()
    assert info.value.name == "msgpack"
    with pytest.raises(ModuleNotFoundError):
        il.get_codec("msgpack")
    assert il.get_codec("json").name == "json"  # the others do not need it


def test_hostile_nesting_is_corrupt() -> None:
    deep = il.JsonCodec().dumps(0)[:-TRAILER_SIZE]
    deep = b"[" * 200_000 + deep + b"]" * 200_000
    record = deep + il.JsonCodec()._tail
    with pytest.raises(il.Corrupt):
        il.JsonCodec().decode(record)
    packed = b"\x91" * 200_000 + b"\x00" + il.MsgpackCodec()._tail  # fixarray of 1, nested
    with pytest.raises(il.Corrupt):
        il.MsgpackCodec().decode(packed)
