"""Turning messages into frames and back, and task values into msgpack.

One encoder and one typed frame decoder, built once at import. Decoding refuses, with a
typed error, anything that breaks the contract: a frame over the size limit, bytes that
are not msgpack, fields of the wrong type, input nested too deeply, and a frame from a
peer of another major protocol version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta, Raw, Struct

from .constants import MAX_FRAME_BYTES
from .errors import (
    FrameTooLargeError,
    MalformedFrameError,
    ProtocolVersionError,
    UnsupportedValueError,
)
from .messages import Frame, Message

__all__ = [
    "PROTOCOL_VERSION",
    "decode_frame",
    "decode_value",
    "encode_frame",
    "encode_value",
]

PROTOCOL_VERSION: Final = (1, 1)
"""(major, minor). Peers of one major version understand each other; a minor version
only appends fields with defaults. Frames of another major version are refused."""

_MAJOR, _MINOR = PROTOCOL_VERSION

_encoder: Final = msgspec.msgpack.Encoder()
_frame_decoder: Final = msgspec.msgpack.Decoder(Frame)
_value_decoder: Final = msgspec.msgpack.Decoder()


class _VersionProbe(Struct, array_like=True):
    """Reads only the version at the head of a frame whose body did not decode, to tell
    a peer of another major version from a broken one. Trailing elements are ignored."""

    major: int
    minor: int


class _AckProbe(_VersionProbe, array_like=True):
    """Reads the acknowledgement count after the version, for this major version's
    frames only (another major version may lay its head out differently)."""

    acked: Annotated[int, Meta(ge=0)]


_version_decoder: Final = msgspec.msgpack.Decoder(_VersionProbe)
_ack_decoder: Final = msgspec.msgpack.Decoder(_AckProbe)


def encode_frame(messages: Sequence[Message], *, acked: int = 0) -> bytes:
    """Encode messages into one frame stamped with this protocol version and the count
    of frames received from the peer so far."""
    return _encoder.encode(Frame(_MAJOR, _MINOR, acked, list(messages)))


def decode_frame(
    data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_FRAME_BYTES
) -> Frame:
    """Decode and check one frame.

    Raises:
        FrameTooLargeError: ``data`` is longer than ``max_bytes``.
        ProtocolVersionError: the frame comes from a peer of another major version.
        MalformedFrameError: anything else that is not a valid frame.
    """
    if len(data) > max_bytes:
        raise FrameTooLargeError(f"frame of {len(data)} bytes is over the limit of {max_bytes}")
    try:
        frame = _frame_decoder.decode(data)
    except msgspec.ValidationError as exc:
        _refuse_other_major(data)
        raise MalformedFrameError(f"invalid frame: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedFrameError(f"frame is not valid msgpack: {exc}") from None
    except UnicodeDecodeError as exc:  # older msgspec releases raise it for bad text
        raise MalformedFrameError(f"frame holds text that is not UTF-8: {exc}") from None
    except RecursionError:
        raise MalformedFrameError("frame is nested too deeply to decode") from None
    if frame.major != _MAJOR:
        raise _version_error(frame.major, frame.minor)
    return frame


def _refuse_other_major(data: bytes | bytearray | memoryview) -> None:
    """Raise ProtocolVersionError if the head of an undecodable frame names another
    major version: its body failing our schema is then expected, not garbage."""
    try:
        head = _version_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return
    if head.major != _MAJOR:
        raise _version_error(head.major, head.minor)


def read_acked(data: bytes | bytearray | memoryview) -> int:
    """The acknowledgement count at the head of a frame whose body may not decode, or 0
    if it is unreadable. A peer's refused frame still says what the peer received."""
    try:
        head = _ack_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return 0
    return head.acked if head.major == _MAJOR else 0


def _version_error(major: int, minor: int) -> ProtocolVersionError:
    return ProtocolVersionError(
        f"peer speaks fastworker protocol {major}.{minor}; this side speaks "
        f"{_MAJOR}.{_MINOR} and accepts only major version {_MAJOR}"
    )


def encode_value(value: object) -> Raw:
    """Encode a task argument list, keyword map or result as msgpack.

    Accepts what msgpack and msgspec carry natively: None, bool, int, float, str, bytes,
    lists, tuples, dicts, datetimes, UUIDs, decimals, enums, dataclasses and Structs.
    Anything else raises :class:`UnsupportedValueError`; nothing is converted to text
    behind the caller's back.
    """
    try:
        return Raw(_encoder.encode(value))
    except TypeError as exc:
        raise UnsupportedValueError(f"cannot encode value for the wire: {exc}") from None
    except RecursionError:
        raise UnsupportedValueError("value is nested too deeply to encode") from None
    except OverflowError as exc:
        raise UnsupportedValueError(f"cannot encode value for the wire: {exc}") from None


def decode_value(raw: Raw | bytes) -> Any:
    """Decode msgpack made by :func:`encode_value` into plain Python values.

    Raises:
        MalformedFrameError: the bytes are not valid msgpack or are nested too deeply.
    """
    try:
        return _value_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedFrameError(f"value is not valid msgpack: {exc}") from None
    except UnicodeDecodeError as exc:
        raise MalformedFrameError(f"value holds text that is not UTF-8: {exc}") from None
    except RecursionError:
        raise MalformedFrameError("value is nested too deeply to decode") from None
