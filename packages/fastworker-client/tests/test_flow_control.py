"""The outbox's flow control: the control plane's side never has more than two frames
unacknowledged by a peer (NNG drops the rest), and a peer's acknowledgements always
come, lazily but never late. NNG is outside the project: a fake socket records frames."""

from __future__ import annotations

import asyncio
import gc

import msgspec
import pynng  # pyright: ignore[reportMissingTypeStubs]
import pytest

from fastworker.client._transport import FLOW_WINDOW, Outbox  # pyright: ignore[reportPrivateUsage]
from fastworker.protocol import PROTOCOL_VERSION, ProtocolError, decode_frame, encode_frame
from fastworker.protocol import messages as m


class RecordingSocket:
    """Stands in for a pynng socket: keeps every frame sent."""

    def __init__(self) -> None:
        self.frames: list[m.Frame] = []

    def send(self, data: bytes, block: bool = True) -> None:
        self.frames.append(decode_frame(data))

    async def asend(self, data: bytes) -> None:
        self.send(data)


def _outboxes(
    loop: asyncio.AbstractEventLoop,
) -> tuple[Outbox, RecordingSocket, Outbox, RecordingSocket]:
    plane_socket, peer_socket = RecordingSocket(), RecordingSocket()
    plane = Outbox(plane_socket, loop, lambda _exc: None, window=FLOW_WINDOW)
    peer = Outbox(peer_socket, loop, lambda _exc: None, ack_every=FLOW_WINDOW)
    return plane, plane_socket, peer, peer_socket


async def _turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_the_window_holds_frames_until_the_peer_acknowledges() -> None:
    plane, plane_socket, _peer, _ = _outboxes(asyncio.get_running_loop())
    for i in range(5):
        plane.put(m.Heartbeat(sent_at=float(i)))
        await _turn()  # one frame per turn of the loop
    assert len(plane_socket.frames) == FLOW_WINDOW
    plane.receive(encode_frame([], acked=2))
    await _turn()
    assert len(plane_socket.frames) == FLOW_WINDOW + 1  # the rest left as one frame
    sent_at = [
        message.sent_at
        for frame in plane_socket.frames[2:]
        for message in frame.messages
        if isinstance(message, m.Heartbeat)
    ]
    assert sent_at == [2.0, 3.0, 4.0]


async def test_a_peer_acknowledges_at_once_when_the_window_would_close() -> None:
    loop = asyncio.get_running_loop()
    _plane, _, peer, peer_socket = _outboxes(loop)
    peer.receive(encode_frame([m.Heartbeat(sent_at=1.0)]))
    await _turn()
    assert peer_socket.frames == []  # one frame: no ack yet
    peer.receive(encode_frame([m.Heartbeat(sent_at=2.0)]))
    await _turn()
    assert [f.acked for f in peer_socket.frames] == [2]


async def test_a_reply_queued_by_the_woken_waiter_carries_the_acknowledgement() -> None:
    # A sequential caller: the second frame wakes a waiter (a callback on the next turn,
    # as a future wakes its task), which sends its next request at once. The count goes
    # with that request rather than in an empty frame of its own.
    loop = asyncio.get_running_loop()
    _plane, _, peer, peer_socket = _outboxes(loop)
    peer.receive(encode_frame([m.Heartbeat(sent_at=1.0)]))
    peer.receive(encode_frame([m.Heartbeat(sent_at=2.0)]))
    loop.call_soon(peer.put, m.Heartbeat(sent_at=3.0))
    await _turn()
    assert [(f.acked, len(f.messages)) for f in peer_socket.frames] == [(2, 1)]


async def test_a_single_frame_is_acknowledged_after_a_short_delay() -> None:
    _plane, _, peer, peer_socket = _outboxes(asyncio.get_running_loop())
    peer.receive(encode_frame([m.Heartbeat(sent_at=1.0)]))
    await asyncio.sleep(0.05)
    assert [f.acked for f in peer_socket.frames] == [1]


async def test_an_acknowledgement_rides_on_the_next_frame_with_messages() -> None:
    _plane, _, peer, peer_socket = _outboxes(asyncio.get_running_loop())
    peer.receive(encode_frame([m.Heartbeat(sent_at=1.0)]))
    peer.put(m.Heartbeat(sent_at=3.0))
    await asyncio.sleep(0.05)
    assert len(peer_socket.frames) == 1  # no separate ack frame
    assert peer_socket.frames[0].acked == 1
    assert len(peer_socket.frames[0].messages) == 1


async def test_a_count_from_an_earlier_connection_does_not_open_the_window() -> None:
    plane, plane_socket, _peer, _ = _outboxes(asyncio.get_running_loop())
    plane.receive(encode_frame([], acked=500))  # the peer counted an older connection
    for i in range(4):
        plane.put(m.Heartbeat(sent_at=float(i)))
        await _turn()
    assert len(plane_socket.frames) == FLOW_WINDOW


async def test_a_reset_starts_counting_afresh() -> None:
    _plane, _, peer, peer_socket = _outboxes(asyncio.get_running_loop())
    peer.receive(encode_frame([]))
    peer.receive(encode_frame([]))
    await _turn()
    peer.reset()
    peer.put(m.Heartbeat(sent_at=1.0))
    await _turn()
    assert [f.acked for f in peer_socket.frames] == [2, 0]


async def test_a_refused_frame_still_acknowledges_and_opens_the_window() -> None:
    # The peer's frame breaks the schema, so the plane refuses it; the count in its head
    # must still count, or the refusal itself could wait behind a shut window.
    plane, plane_socket, _peer, _ = _outboxes(asyncio.get_running_loop())
    for i in range(3):
        plane.put(m.Heartbeat(sent_at=float(i)))
        await _turn()
    assert len(plane_socket.frames) == FLOW_WINDOW
    major, minor = PROTOCOL_VERSION
    with pytest.raises(ProtocolError):
        plane.receive(msgspec.msgpack.encode([major, minor, 2, [["no-such-message"]]]))
    await _turn()
    assert len(plane_socket.frames) == FLOW_WINDOW + 1


class SlowSocket:
    """A socket whose queue is full, so frames go through the backlog, and whose
    ``asend`` finishes a send that completed even when its task was cancelled meanwhile,
    as pynng's does."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.release = asyncio.Event()

    def send(self, data: bytes, block: bool = True) -> None:
        raise pynng.TryAgain(pynng.lib.NNG_EAGAIN, "try again")  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]

    async def asend(self, data: bytes) -> None:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            await self.release.wait()  # the send completes all the same
        self.sent.append(data)


async def test_a_backlog_dropped_while_a_send_completes_does_not_break_the_sender() -> None:
    loop = asyncio.get_running_loop()
    failures: list[BaseException] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: failures.append(context["exception"]))
    try:
        socket = SlowSocket()
        outbox = Outbox(socket, loop, lambda _exc: None, ack_every=FLOW_WINDOW)
        outbox.put(m.Heartbeat(sent_at=1.0))
        await _turn()  # the frame waits in the backlog, its send in flight
        outbox.close()  # drops the backlog and cancels the sender under its await
        socket.release.set()
        await _turn()
        await asyncio.sleep(0.01)
        gc.collect()  # a task that died with an exception reports it when collected
        await _turn()
    finally:
        loop.set_exception_handler(previous)
    assert failures == []
    assert len(socket.sent) == 1
