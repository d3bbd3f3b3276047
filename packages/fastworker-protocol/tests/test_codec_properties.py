"""Property tests of the codec: whatever bytes arrive, the decoder answers with a frame or
a ProtocolError; every valid message round-trips; damaged frames are refused or decode.

The message strategies are derived from the schema itself (``msgspec.inspect``), so the
bounds they respect are the ones the decoder checks, and a new message kind or field is
covered without editing this file.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from msgspec import Raw

from fastworker.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    MalformedFrameError,
    ProtocolError,
    decode_frame,
    encode_frame,
    encode_value,
    read_acked,
)
from fastworker.protocol import messages as m

MAJOR, MINOR = PROTOCOL_VERSION

EXAMPLES = int(os.environ.get("FASTWORKER_FUZZ_EXAMPLES", "300"))
"""Examples per property; ``nox -s fuzz`` runs many more."""
PROPERTIES = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

MAX_LIST_ITEMS = 3
"""Items generated per list: the bounds themselves are checked by the bound tests."""
MAX_TEXT_CHARS = 40
"""Characters generated per string, besides the string at its bound."""
MAX_MESSAGES = 4
"""Messages per generated frame."""

_HEAD = encode_frame([])[:-1]
"""The start of a frame of this version, up to (not including) its message list."""

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
"""What a msgpack integer holds."""


def _schema(cls: type[msgspec.Struct]) -> mi.StructType:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info


_FRAME = _schema(m.Frame)
_FIELDS = {field.name: field.type for field in _FRAME.fields}


def _message_union() -> mi.UnionType:
    listed = _FIELDS["messages"]
    assert isinstance(listed, mi.ListType)
    assert isinstance(listed.item_type, mi.UnionType)
    return listed.item_type


_MESSAGE_UNION = _message_union()
_MESSAGE_TYPES = [t for t in _MESSAGE_UNION.types if isinstance(t, mi.StructType)]
TAGS = [str(t.tag) for t in _MESSAGE_TYPES]


def _plain_values() -> st.SearchStrategy[Any]:
    """Values msgpack carries, nested a little: task payloads and garbage fields."""
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(min_value=_INT64_MIN, max_value=_UINT64_MAX)
        | st.floats()
        | st.text(max_size=MAX_TEXT_CHARS)
        | st.binary(max_size=MAX_TEXT_CHARS)
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=MAX_LIST_ITEMS)
            | st.dictionaries(st.text(max_size=8), inner, max_size=MAX_LIST_ITEMS)
        ),
        max_leaves=8,
    )


def _raw_payloads() -> st.SearchStrategy[Raw]:
    return _plain_values().map(encode_value)


def _text(info: mi.StrType) -> st.SearchStrategy[str]:
    low = info.min_length or 0
    high = info.max_length
    short = st.text(
        min_size=low,
        max_size=low + MAX_TEXT_CHARS if high is None else min(high, low + MAX_TEXT_CHARS),
    )
    if high is None:
        return short
    return short | st.just("x" * high)


def _integers(info: mi.IntType) -> st.SearchStrategy[int]:
    low = _INT64_MIN if info.ge is None else info.ge
    if info.gt is not None:
        low = info.gt + 1
    high = _UINT64_MAX if info.le is None else info.le
    if info.lt is not None:
        high = info.lt - 1
    return st.integers(min_value=low, max_value=high)


def _floats(info: mi.FloatType) -> st.SearchStrategy[float]:
    low = info.ge if info.gt is None else info.gt
    high = info.le if info.lt is None else info.lt
    return st.floats(
        min_value=low,
        max_value=high,
        exclude_min=info.gt is not None,
        exclude_max=info.lt is not None,
        allow_nan=False,  # a NaN never equals itself, so a round trip could not show it
    )


def _lists(info: mi.ListType) -> st.SearchStrategy[list[Any]]:
    low = info.min_length or 0
    high = low + MAX_LIST_ITEMS
    if info.max_length is not None:
        high = min(high, info.max_length)
    return st.lists(strategy_for(info.item_type), min_size=low, max_size=high)


def _dicts(info: mi.DictType) -> st.SearchStrategy[dict[Any, Any]]:
    low = info.min_length or 0
    high = low + MAX_LIST_ITEMS
    if info.max_length is not None:
        high = min(high, info.max_length)
    return st.dictionaries(
        strategy_for(info.key_type), strategy_for(info.value_type), min_size=low, max_size=high
    )


def _structs(info: mi.StructType) -> st.SearchStrategy[msgspec.Struct]:
    fields = {field.name: strategy_for(field.type) for field in info.fields}
    return st.fixed_dictionaries(fields).map(lambda kwargs: info.cls(**kwargs))


def strategy_for(info: mi.Type) -> st.SearchStrategy[Any]:
    """Valid values of one schema type, within every bound the schema declares."""
    if isinstance(info, mi.StructType):
        return st.deferred(lambda: _struct_strategy(info.cls))
    if isinstance(info, mi.UnionType):
        return st.one_of([strategy_for(t) for t in info.types])
    if isinstance(info, mi.ListType):
        return _lists(info)
    if isinstance(info, mi.DictType):
        return _dicts(info)
    if isinstance(info, mi.StrType):
        return _text(info)
    if isinstance(info, mi.IntType):
        return _integers(info)
    if isinstance(info, mi.FloatType):
        return _floats(info)
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.EnumType):
        return st.sampled_from(list(info.cls))
    if isinstance(info, mi.RawType):
        return _raw_payloads()
    raise NotImplementedError(f"no strategy for schema type {info!r}: add one here")


@functools.cache
def _struct_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[msgspec.Struct]:
    return _structs(_schema(cls))


def messages() -> st.SearchStrategy[m.Message]:
    """Any valid message of any kind."""
    return strategy_for(_MESSAGE_UNION)


def frames() -> st.SearchStrategy[tuple[int, list[m.Message]]]:
    """A frame's acknowledgement count and messages."""
    acked = strategy_for(_FIELDS["acked"])
    return st.tuples(acked, st.lists(messages(), max_size=MAX_MESSAGES))


def frame_shaped() -> st.SearchStrategy[bytes]:
    """msgpack laid out like a frame, with messages that start with a real tag and go on
    with any values: input that gets past the envelope into the schema's checks."""
    fake_message = st.tuples(st.sampled_from(TAGS), st.lists(_plain_values(), max_size=6)).map(
        lambda parts: [parts[0], *parts[1]]
    )
    head = st.tuples(
        st.just(MAJOR) | _plain_values(), st.just(MINOR) | _plain_values(), _plain_values()
    )
    body = st.lists(fake_message | _plain_values(), max_size=MAX_MESSAGES)
    return st.tuples(head, body).map(lambda parts: msgspec.msgpack.encode([*parts[0], parts[1]]))


def _decodes_or_refuses(data: bytes) -> m.Frame | None:
    """The contract under test: a valid frame, or a ProtocolError; nothing else."""
    try:
        frame = decode_frame(data)
    except ProtocolError as exc:
        event(type(exc).__name__)
        assert read_acked(data) >= 0
        return None
    event("decoded")
    assert frame.major == MAJOR
    # What decodes is a frame like any other: it re-encodes and decodes to itself.
    assert decode_frame(msgspec.msgpack.encode(frame)) == frame
    return frame


# --- (a) any bytes: a frame or a ProtocolError ------------------------------------------


@PROPERTIES
@given(st.binary(max_size=512))
def test_any_bytes_decode_to_a_frame_or_a_protocol_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@PROPERTIES
@given(frame_shaped())
def test_frame_shaped_msgpack_decodes_to_a_frame_or_a_protocol_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@PROPERTIES
@given(
    st.sampled_from([b"\x91", b"\xdc\x00\x01", b"\x81\xa1k", b"\x81\x00"]),
    st.integers(min_value=1, max_value=20_000),
    st.binary(max_size=8),
)
def test_deep_nesting_decodes_to_a_frame_or_a_protocol_error(
    opener: bytes, depth: int, tail: bytes
) -> None:
    # One-element arrays (fix and 16-bit headers) or maps, each inside the last: as the
    # frame, as its messages, as a trailing field a newer peer may append, and as a task's
    # arguments, which the decoder skips over without building them.
    nested = opener * depth + tail
    _decodes_or_refuses(nested)
    _decodes_or_refuses(_HEAD + nested)
    overview = msgspec.msgpack.encode(["overview", 1])
    _decodes_or_refuses(_HEAD + b"\x91" + bytes([overview[0] + 1]) + overview[1:] + nested)
    submit = m.SubmitTask(request_id=1, task=m.TaskRequest(name="add", args=Raw(nested)))
    _decodes_or_refuses(encode_frame([submit]))


@PROPERTIES
@given(
    st.sampled_from([b"\xdd", b"\xdf", b"\xdb", b"\xc6", b"\xc9"]),
    st.integers(min_value=MAX_FRAME_BYTES, max_value=2**32 - 1),
    st.binary(max_size=64),
)
def test_huge_declared_lengths_decode_to_a_frame_or_a_protocol_error(
    header: bytes, declared: int, tail: bytes
) -> None:
    huge = header + declared.to_bytes(4, "big") + tail  # array, map, str, bin, ext 32
    _decodes_or_refuses(huge)
    _decodes_or_refuses(_HEAD + huge)
    watch = msgspec.msgpack.encode(["watch", 1])
    _decodes_or_refuses(_HEAD + b"\x91" + bytes([watch[0] + 1]) + watch[1:] + huge)


# --- (b) every valid message round-trips ------------------------------------------------


@PROPERTIES
@given(frames())
def test_every_valid_frame_round_trips(frame: tuple[int, list[m.Message]]) -> None:
    acked, sent = frame
    received = decode_frame(encode_frame(sent, acked=acked))
    assert received == m.Frame(MAJOR, MINOR, acked, sent)


@PROPERTIES
@given(messages())
def test_every_valid_message_round_trips_alone(message: m.Message) -> None:
    assert decode_frame(encode_frame([message])).messages == [message]


# --- (c) damaged frames: refused, or a valid frame --------------------------------------


@PROPERTIES
@given(frames(), st.data())
def test_a_truncated_frame_is_refused_or_decodes(
    frame: tuple[int, list[m.Message]], data: st.DataObject
) -> None:
    acked, sent = frame
    encoded = encode_frame(sent, acked=acked)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="cut")
    _decodes_or_refuses(encoded[:cut])


@PROPERTIES
@given(frames(), st.data())
def test_a_frame_with_flipped_bits_is_refused_or_decodes(
    frame: tuple[int, list[m.Message]], data: st.DataObject
) -> None:
    acked, sent = frame
    damaged = bytearray(encode_frame(sent, acked=acked))
    bits = st.integers(min_value=0, max_value=len(damaged) * 8 - 1)
    for bit in data.draw(st.lists(bits, min_size=1, max_size=4), label="bits"):
        damaged[bit // 8] ^= 1 << (bit % 8)
    _decodes_or_refuses(bytes(damaged))


@PROPERTIES
@given(frames(), st.data())
def test_a_frame_with_replaced_bytes_is_refused_or_decodes(
    frame: tuple[int, list[m.Message]], data: st.DataObject
) -> None:
    acked, sent = frame
    damaged = bytearray(encode_frame(sent, acked=acked))
    at = data.draw(st.integers(min_value=0, max_value=len(damaged) - 1), label="at")
    damaged[at : at + 1] = data.draw(st.binary(max_size=9), label="replacement")
    _decodes_or_refuses(bytes(damaged))


# --- the bounds: each one is where the schema declares it -------------------------------

Edge = tuple[Any, Any]
"""A value at a bound, which decodes, and the value just past it, which is refused."""


def _fields(value: object, info: mi.Type) -> list[tuple[msgspec.Struct, str, mi.Type]]:
    """Every struct field inside ``value``, with its schema type."""
    if isinstance(info, mi.UnionType):
        for member in info.types:
            if isinstance(member, mi.StructType) and type(value) is member.cls:
                return _fields(value, member)
        return []
    if isinstance(info, mi.ListType) and isinstance(value, list):
        items: list[object] = value  # pyright: ignore[reportUnknownVariableType]
        return [found for item in items for found in _fields(item, info.item_type)]
    if not (isinstance(info, mi.StructType) and isinstance(value, msgspec.Struct)):
        return []
    found: list[tuple[msgspec.Struct, str, mi.Type]] = []
    for field in info.fields:
        found.append((value, field.name, field.type))
        found.extend(_fields(getattr(value, field.name), field.type))
    return found


def _bounded(info: mi.Type) -> list[mi.Type]:
    """The members of a field's type that declare a bound."""
    if isinstance(info, mi.UnionType):
        return [bounded for member in info.types for bounded in _bounded(member)]
    if isinstance(info, (mi.StrType, mi.ListType)):
        return [info] if info.min_length or info.max_length is not None else []
    if isinstance(info, (mi.IntType, mi.FloatType)):
        bounds = (info.ge, info.gt, info.le, info.lt)
        return [info] if any(b is not None for b in bounds) else []
    return []


def _edges(info: mi.Type, data: st.DataObject) -> list[Edge]:
    """The bounds one field type declares, as values at and just past each."""
    edges: list[Edge] = []
    if isinstance(info, mi.StrType):
        if info.max_length is not None:
            edges.append(("x" * info.max_length, "x" * (info.max_length + 1)))
        if info.min_length:
            edges.append(("x" * info.min_length, "x" * (info.min_length - 1)))
    elif isinstance(info, mi.ListType):
        item = data.draw(strategy_for(info.item_type), label="item")
        if info.max_length is not None:
            # Past its bound the list still fits in a frame: the bound is what refuses it.
            item_bytes = len(msgspec.msgpack.encode(item))
            assume(item_bytes * (info.max_length + 1) < MAX_FRAME_BYTES // 2)
            edges.append(([item] * info.max_length, [item] * (info.max_length + 1)))
        if info.min_length:
            edges.append(([item] * info.min_length, [item] * (info.min_length - 1)))
    elif isinstance(info, mi.IntType):
        edges += [(b, b - 1) for b in (info.ge,) if b is not None]
        edges += [(b, b + 1) for b in (info.le,) if b is not None]
        edges += [(b + 1, b) for b in (info.gt,) if b is not None]
        edges += [(b - 1, b) for b in (info.lt,) if b is not None]
    elif isinstance(info, mi.FloatType):
        edges += [(b, math.nextafter(b, -math.inf)) for b in (info.ge,) if b is not None]
        edges += [(b, math.nextafter(b, math.inf)) for b in (info.le,) if b is not None]
        edges += [(math.nextafter(b, math.inf), b) for b in (info.gt,) if b is not None]
        edges += [(math.nextafter(b, -math.inf), b) for b in (info.lt,) if b is not None]
    return edges


@settings(PROPERTIES, max_examples=max(200, EXAMPLES * 2 // 3))
@given(messages(), st.data())
def test_every_declared_bound_is_exactly_where_decoding_refuses(
    message: m.Message, data: st.DataObject
) -> None:
    whole = m.Frame(MAJOR, MINOR, 0, [message])
    bounded = [
        (owner, name, bounded)
        for owner, name, info in _fields(whole, _FRAME)
        for bounded in _bounded(info)
    ]
    owner, name, info = data.draw(st.sampled_from(bounded), label="field")
    at, past = data.draw(st.sampled_from(_edges(info, data)), label="edge")
    event(f"{type(owner).__name__}.{name}")
    setattr(owner, name, at)
    assert decode_frame(msgspec.msgpack.encode(whole)) == whole
    setattr(owner, name, past)
    with pytest.raises(MalformedFrameError):
        decode_frame(msgspec.msgpack.encode(whole))
