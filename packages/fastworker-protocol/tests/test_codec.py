"""The codec: round trips of every message kind, and every refusal with its typed error."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import uuid

import msgspec
import pytest
from msgspec import Raw
from protocol_samples import SAMPLES

from fastworker.protocol import (
    MAX_FRAME_BYTES,
    MAX_MESSAGES_PER_FRAME,
    PROTOCOL_VERSION,
    FrameTooLargeError,
    MalformedFrameError,
    ProtocolError,
    ProtocolVersionError,
    TaskPriority,
    UnsupportedValueError,
    decode_frame,
    decode_value,
    encode_frame,
    encode_value,
    read_acked,
)
from fastworker.protocol import messages as m

MAJOR, MINOR = PROTOCOL_VERSION


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_message_kind_round_trips(kind: str) -> None:
    frame = decode_frame(encode_frame([SAMPLES[kind]]))
    assert (frame.major, frame.minor) == PROTOCOL_VERSION
    assert frame.messages == [SAMPLES[kind]]


def test_a_frame_carries_many_messages_in_order() -> None:
    messages = list(SAMPLES.values())
    assert decode_frame(encode_frame(messages)).messages == messages


def test_a_batch_of_many_tasks_fits_in_one_frame() -> None:
    tasks = [
        m.TaskRequest(name="add", args=encode_value([i, i]), task_id=f"t{i}") for i in range(4000)
    ]
    frame = decode_frame(encode_frame([m.SubmitBatch(request_id=1, tasks=tasks)]))
    (batch,) = frame.messages
    assert isinstance(batch, m.SubmitBatch)
    assert [decode_value(task.args) for task in batch.tasks[:3]] == [[0, 0], [1, 1], [2, 2]]
    assert batch.tasks[-1].task_id == "t3999"


def test_defaults_fill_in_for_a_minimal_task() -> None:
    (message,) = decode_frame(
        encode_frame([m.SubmitTask(request_id=0, task=m.TaskRequest(name="noop"))])
    ).messages
    assert isinstance(message, m.SubmitTask)
    assert message.task.priority is TaskPriority.NORMAL
    assert decode_value(message.task.args) == []
    assert decode_value(message.task.kwargs) == {}
    assert message.task.notify is True


def test_the_acknowledgement_count_travels_in_the_envelope() -> None:
    frame = decode_frame(encode_frame([m.OverviewQuery(request_id=1)], acked=12345))
    assert frame.acked == 12345
    assert decode_frame(encode_frame([], acked=3)).messages == []


def test_a_negative_acknowledgement_count_is_refused() -> None:
    with pytest.raises(MalformedFrameError, match=r"\$\[2\]"):
        decode_frame(msgspec.msgpack.encode([MAJOR, MINOR, -1, []]))


def test_a_newer_minor_version_with_appended_fields_is_accepted() -> None:
    # A 1.x peer may append fields with defaults to any struct; we ignore what we don't know.
    newer = msgspec.msgpack.encode(
        [MAJOR, MINOR + 1, 0, [["overview", 7, "a field from the future"]]]
    )
    frame = decode_frame(newer)
    assert frame.minor == MINOR + 1
    assert frame.messages == [m.OverviewQuery(request_id=7)]


# --- refusals ---------------------------------------------------------------------------


def test_another_major_version_is_refused_even_if_the_body_would_decode() -> None:
    data = msgspec.msgpack.encode([MAJOR + 1, 0, 0, [["overview", 7]]])
    with pytest.raises(ProtocolVersionError, match=rf"protocol {MAJOR + 1}\.0"):
        decode_frame(data)


def test_another_major_version_with_an_unknown_body_is_refused_as_a_version_error() -> None:
    data = msgspec.msgpack.encode([MAJOR + 1, 3, {"entirely": ["new", "layout"]}])
    with pytest.raises(ProtocolVersionError):
        decode_frame(data)


def test_a_frame_over_the_size_limit_is_refused_before_decoding() -> None:
    data = encode_frame([m.Goodbye(reason="x" * 1000)])
    with pytest.raises(FrameTooLargeError, match="over the limit of 100"):
        decode_frame(data, max_bytes=100)


def test_the_default_size_limit_applies() -> None:
    with pytest.raises(FrameTooLargeError):
        decode_frame(b"\x00" * (MAX_FRAME_BYTES + 1))


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http"),
        pytest.param(encode_frame([SAMPLES["submit"]])[:-5], id="truncated"),
        pytest.param(b"\x94\x01\x00\x00\x91\x92\xa7unknown\x01", id="unknown-tag"),
        pytest.param(msgspec.msgpack.encode({"major": 1}), id="map-not-array"),
        pytest.param(
            msgspec.msgpack.encode([MAJOR, MINOR, 0, "not a list"]), id="messages-not-a-list"
        ),
    ],
)
def test_garbage_is_refused_as_malformed(garbage: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        decode_frame(garbage)


def _message(*fields: object) -> list[object]:
    return list(fields)


@pytest.mark.parametrize(
    ("message", "where"),
    [
        pytest.param(
            _message("submit", "one", ["add"]), r"\$\[3\]\[0\]\[1\]", id="request-id-as-string"
        ),
        pytest.param(
            _message("submit", 1, _message("add", [], {}, 9)),
            r"\$\[3\]\[0\]\[2\]\[3\]",
            id="priority-out-of-range",
        ),
        pytest.param(
            _message("submit", 1, _message("", [], {})),
            r"\$\[3\]\[0\]\[2\]\[0\]",
            id="empty-task-name",
        ),
        pytest.param(
            _message("submit", -1, ["add"]), r"\$\[3\]\[0\]\[1\]", id="negative-request-id"
        ),
        pytest.param(_message("heartbeat", "noon"), r"\$\[3\]\[0\]\[1\]", id="time-as-string"),
        pytest.param(
            _message("worker_hello", 1, "w", 0, []), r"\$\[3\]\[0\]\[3\]", id="zero-concurrency"
        ),
        pytest.param(
            _message("results", [_message("t", "exploded")]),
            r"\$\[3\]\[0\]\[1\]\[0\]\[1\]",
            id="unknown-status",
        ),
    ],
)
def test_wrong_field_types_are_refused_with_the_path(message: list[object], where: str) -> None:
    with pytest.raises(MalformedFrameError, match=where):
        decode_frame(msgspec.msgpack.encode([MAJOR, MINOR, 0, [message]]))


def test_a_frame_with_too_many_messages_is_refused() -> None:
    data = msgspec.msgpack.encode(
        [MAJOR, MINOR, 0, [["overview", 1]] * (MAX_MESSAGES_PER_FRAME + 1)]
    )
    with pytest.raises(MalformedFrameError):
        decode_frame(data)


def test_an_over_long_task_id_is_refused() -> None:
    data = msgspec.msgpack.encode([MAJOR, MINOR, 0, [["watch", 1, ["x" * 129]]]])
    with pytest.raises(MalformedFrameError):
        decode_frame(data)


def test_deeply_nested_input_is_refused_not_crashing() -> None:
    # Nesting inside an opaque argument payload: msgspec raises RecursionError even
    # while skipping it, which must surface as our typed error.
    deep_args = Raw(b"\x91" * 200_000 + b"\x01")
    data = encode_frame(
        [m.SubmitTask(request_id=1, task=m.TaskRequest(name="add", args=deep_args))]
    )
    with pytest.raises(MalformedFrameError, match="nested too deeply"):
        decode_frame(data)


def test_every_refusal_is_a_protocol_error() -> None:
    for bad in (b"\xc1", msgspec.msgpack.encode([MAJOR + 1, 0, []])):
        with pytest.raises(ProtocolError):
            decode_frame(bad)


# --- values -----------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        (None, None),
        (True, True),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
        (1.5, 1.5),
        ("héllo", "héllo"),
        (b"\x00\xff", b"\x00\xff"),
        ([1, [2, [3]]], [1, [2, [3]]]),
        ((1, 2), [1, 2]),
        ({"a": {"b": None}}, {"a": {"b": None}}),
        (Point(1, 2), {"x": 1, "y": 2}),
        (TaskPriority.HIGH, 1),
        (uuid.UUID(int=7), str(uuid.UUID(int=7))),
        (decimal.Decimal("1.10"), "1.10"),
    ],
)
def test_values_round_trip_as_plain_data(value: object, decoded: object) -> None:
    assert decode_value(encode_value(value)) == decoded


def test_datetimes_keep_their_time_zone() -> None:
    when = datetime.datetime(2026, 11, 24, 12, 30, tzinfo=datetime.timezone.utc)
    assert decode_value(encode_value(when)) == when


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param({1, 2} and open, id="builtin-function"),
        pytest.param(2**64, id="int-too-large"),
        pytest.param({"when": lambda: None}, id="lambda-inside-dict"),
        pytest.param(complex(1, 2), id="complex"),
    ],
)
def test_values_the_codec_cannot_carry_are_refused_not_stringified(value: object) -> None:
    with pytest.raises(UnsupportedValueError):
        encode_value(value)


def test_unsupported_value_error_is_a_type_error_for_callers_that_catch_those() -> None:
    with pytest.raises(TypeError):
        encode_value(object())


def test_a_value_nested_too_deeply_is_refused_both_ways() -> None:
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(UnsupportedValueError, match="nested too deeply"):
        encode_value(nested)
    with pytest.raises(MalformedFrameError, match="nested too deeply"):
        decode_value(Raw(b"\x91" * 100_000 + b"\x01"))


def test_a_value_that_is_not_msgpack_is_refused() -> None:
    with pytest.raises(MalformedFrameError):
        decode_value(b"\xc1")


def test_a_refused_frame_still_tells_its_acknowledgement_count() -> None:
    data = msgspec.msgpack.encode([MAJOR, MINOR, 7, [["watch", 1, ["x" * 129]]]])
    with pytest.raises(MalformedFrameError):
        decode_frame(data)
    assert read_acked(data) == 7


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgspec.msgpack.encode([MAJOR + 1, 0, 7, []]),
        msgspec.msgpack.encode([MAJOR, MINOR, "seven", []]),
        msgspec.msgpack.encode([MAJOR, MINOR, -1, []]),
        msgspec.msgpack.encode([MAJOR, MINOR]),
    ],
    ids=["garbage", "other-major", "count-not-a-number", "negative-count", "no-count"],
)
def test_an_unreadable_acknowledgement_count_reads_as_none_received(data: bytes) -> None:
    assert read_acked(data) == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\x94\x01\x01\x00\x91\x92\xa8\x80verview\x00",  # a tag that is not UTF-8
        b"\x94\x01\x01\x00\x91\x92\xa8overview\x81\xa1\xff\x00",  # a field name likewise
    ],
)
def test_text_that_is_not_utf8_is_a_malformed_frame(data: bytes) -> None:
    # msgspec releases near our floor raise UnicodeDecodeError here, not DecodeError.
    with pytest.raises(MalformedFrameError):
        decode_frame(data)
    assert read_acked(data) == 0


def test_a_value_with_text_that_is_not_utf8_is_malformed() -> None:
    with pytest.raises(MalformedFrameError):
        decode_value(Raw(b"\x91\xa2\xc3\x28"))
