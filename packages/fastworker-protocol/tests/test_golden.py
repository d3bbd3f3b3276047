"""Golden samples: bytes that peers of each released protocol version sent must keep
decoding to the same messages. Breaking this needs a new major protocol version."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from protocol_samples import SAMPLES_BY_VERSION

from fastworker.protocol import PROTOCOL_VERSION, decode_frame, encode_frame
from fastworker.protocol import messages as m

GOLDEN_ROOT = Path(__file__).parent / "golden"
CURRENT = "{}.{}".format(*PROTOCOL_VERSION)
CURRENT_DIR = GOLDEN_ROOT / CURRENT
SAMPLES = SAMPLES_BY_VERSION[CURRENT]
ALL_MESSAGE_TYPES: tuple[type[m.Message], ...] = typing.get_args(m.Message)


def _tag(message_type: type[m.Message]) -> str:
    return message_type.__struct_config__.tag  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("version", "kind"),
    [(version, kind) for version, samples in SAMPLES_BY_VERSION.items() for kind in samples],
)
def test_golden_bytes_decode_to_the_sample(version: str, kind: str) -> None:
    # Every version's bytes decode to that version's sample: fields a later minor
    # version appended take their defaults.
    frame = decode_frame((GOLDEN_ROOT / version / f"{kind}.msgpack").read_bytes())
    assert (frame.major, frame.minor) == tuple(int(part) for part in version.split("."))
    assert frame.messages == [SAMPLES_BY_VERSION[version][kind]]


def test_every_golden_folder_has_its_samples() -> None:
    assert {path.name for path in GOLDEN_ROOT.iterdir()} == set(SAMPLES_BY_VERSION)


def test_every_message_kind_has_a_sample_and_a_golden_file() -> None:
    tags = {_tag(message_type) for message_type in ALL_MESSAGE_TYPES}
    assert set(SAMPLES) == tags
    assert {path.stem for path in CURRENT_DIR.glob("*.msgpack")} == tags


def test_each_sample_is_keyed_by_its_own_tag() -> None:
    for kind, message in SAMPLES.items():
        assert _tag(type(message)) == kind


@pytest.mark.parametrize(
    "path", sorted(GOLDEN_ROOT.glob("*/*.msgpack")), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_every_golden_file_of_this_major_version_still_decodes(path: Path) -> None:
    if int(path.parent.name.split(".")[0]) != PROTOCOL_VERSION[0]:
        pytest.skip("golden file of another major version")
    assert len(decode_frame(path.read_bytes()).messages) == 1


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_encoding_is_stable_within_this_version(kind: str) -> None:
    # Same code, same bytes: a change here means the wire format moved without a new
    # version (reordered fields, a changed default, a renamed tag).
    assert encode_frame([SAMPLES[kind]]) == (CURRENT_DIR / f"{kind}.msgpack").read_bytes()
