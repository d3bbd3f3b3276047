# pynng ships no type information; this module is the typed boundary around it.
# pyright: reportMissingTypeStubs=false, reportUnknownMemberType=false
# pyright: reportUnknownArgumentType=false, reportUnknownLambdaType=false
# pyright: reportUnknownVariableType=false
"""The connection to a control plane: the one module of the client that imports pynng.

Design, measured on the development machine: a pynng call through its asyncio API costs
about 170-225 us, a non-blocking call a few. So the event loop polls each socket's
readiness descriptor and receives every frame waiting with non-blocking calls, and sends
go out with non-blocking calls too; only when NNG's send buffer is full does a frame
wait for an async send. No thread of ours sits between NNG and the loop.

Outgoing messages are batched: :class:`Outbox` gathers every message queued for one
peer during a turn of the event loop and sends them as one frame.

pynng's errors are turned into fastworker's own here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

import pynng

from fastworker.protocol import (
    MAX_FRAME_BYTES,
    MAX_MESSAGES_PER_FRAME,
    ConfigurationError,
    ConnectionClosedError,
    ProtocolError,
    TransportError,
    decode_frame,
    encode_frame,
    read_acked,
)
from fastworker.protocol.messages import Frame, Message

from ._limiter import LogLimiter
from .tls import TLS_SCHEME, TLSOptions, check_tls, host_of, read_pem

log = logging.getLogger("fastworker.transport")

__all__ = [
    "FLOW_WINDOW",
    "SOCKET_RECV_LIMIT",
    "Dialer",
    "FrameSink",
    "Outbox",
    "ReceivePump",
    "check_address",
]

SOCKET_RECV_LIMIT: Final = MAX_FRAME_BYTES + 64 * 1024
"""NNG drops frames over this without telling anyone, so it sits a little above the
frame limit: a frame between the two reaches the decoder and gets a typed refusal.
Senders refuse to send frames over MAX_FRAME_BYTES in the first place."""

FLOW_WINDOW: Final = 2
"""Frames a control plane may have unacknowledged by one peer. NNG's polyamorous pair1
socket queues two frames per peer and silently drops the next: never more than this."""

_ACK_DELAY: Final = 0.01
"""Seconds a single unacknowledged frame waits for a frame to carry its acknowledgement."""

_SEND_BUFFER_FRAMES: Final = 64
"""NNG's own queue of a client's socket. Small: frames queued while the control plane is
away are sent when it returns, long after their requests timed out."""
_PENDING_SEND_LIMIT: Final = 1024
"""Frames waiting for NNG's send buffer to drain before the connection is declared stuck."""
_PENDING_MESSAGE_LIMIT: Final = 1_000_000
"""Messages waiting for a peer's acknowledgements before the connection is declared stuck."""

_ADDRESS_SCHEMES: Final = ("tcp://", "ipc://", "inproc://", "tls+tcp://", "ws://")


def check_address(address: str) -> str:
    """Return ``address`` if it is an NNG address we can use, else raise
    ConfigurationError saying what is expected."""
    if not address.startswith(_ADDRESS_SCHEMES):
        schemes = ", ".join(_ADDRESS_SCHEMES)
        raise ConfigurationError(
            f"{address!r} is not a fastworker address; expected one of {schemes}"
        )
    return address


class FrameSink(Protocol):
    """Receives frames on the event loop thread, with the peer they came from."""

    def __call__(self, frames: list[tuple[object, bytes]]) -> None: ...


class ReceivePump:
    """Receives on the event loop thread, woken by the socket's readiness descriptor.

    NNG marks a descriptor readable while the socket holds a received frame; the loop
    polls it with the rest of its I/O, and each wake-up takes every frame that is there
    (up to a bound, so one busy peer cannot starve the loop) with non-blocking receives.
    This measured faster than a receiver thread handing frames over with
    ``call_soon_threadsafe``: no thread switch and no wake-up write per burst. The peer
    handed along is the NNG pipe the frame arrived on (``None`` when the socket does
    not say).
    """

    MAX_FRAMES_PER_WAKE: Final = 256

    def __init__(
        self, socket: pynng.Socket, loop: asyncio.AbstractEventLoop, sink: FrameSink, name: str
    ) -> None:
        self._socket = socket
        self._loop = loop
        self._sink = sink
        self._name = name
        self._fd: int | None = None

    def start(self) -> None:
        """Start receiving; call on the loop thread."""
        fd: int = self._socket.recv_fd
        self._fd = fd
        self._loop.add_reader(fd, self._readable)

    def stop(self) -> None:
        """Stop receiving, before the socket closes (its descriptor goes with it)."""
        fd, self._fd = self._fd, None
        if fd is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)

    def _readable(self) -> None:
        frames: list[tuple[object, bytes]] = []
        receive = self._socket.recv_msg
        for _ in range(self.MAX_FRAMES_PER_WAKE):
            try:
                message = receive(block=False)
            except pynng.TryAgain:
                break
            except pynng.Closed:
                self.stop()
                break
            except pynng.NNGException as exc:  # a single failed receive does not end it
                log.debug("%s: a receive failed: %s", self._name, exc)
                break
            frames.append((message.pipe, message.bytes))
        if frames:
            self._sink(frames)


class _Sender(Protocol):
    def send(self, data: bytes, block: bool = True) -> None: ...

    async def asend(self, data: bytes) -> None: ...


class Outbox:
    """Messages for one peer, sent as few frames as possible per turn of the event loop,
    with the flow control of the frame envelope.

    Every frame carries how many frames this side has received from the peer
    (``acked``). With ``window`` set (the control plane's side), at most that many
    frames are unacknowledged by the peer at once and the rest wait here: the control
    plane's socket drops frames beyond a peer's two-frame queue. With ``ack_every`` set
    (clients and subworkers, to the control plane's window), received frames are
    acknowledged in the next frame with messages, or, once that many are
    unacknowledged and the sender may be waiting, in an empty frame at the end of the
    turn. Acknowledging lazily saves a frame per round trip.

    ``on_stuck`` is called when the peer stops taking frames and too much waits for it;
    the owner then drops the connection rather than buffer without limit.
    """

    def __init__(
        self,
        target: _Sender,
        loop: asyncio.AbstractEventLoop,
        on_stuck: Callable[[BaseException], None],
        *,
        window: int | None = None,
        ack_every: int | None = None,
    ) -> None:
        self._target = target
        self._loop = loop
        self._on_stuck = on_stuck
        self._window = window
        self._ack_every = ack_every
        self._messages: collections.deque[Message] = collections.deque()
        self._scheduled = False
        self._sent = 0
        self._peer_acked = 0
        self._received = 0
        self._acked_sent = 0
        """The ``acked`` count of the last frame sent."""
        self._ack_timer: asyncio.TimerHandle | None = None
        self._backlog: collections.deque[bytes] = collections.deque()
        self._backlog_task: asyncio.Task[None] | None = None
        self.closed = False

    def put(self, message: Message) -> None:
        """Queue one message; it leaves at the end of this turn of the loop, or when the
        peer's acknowledgements open the window."""
        if self.closed:
            return
        self._messages.append(message)
        if len(self._messages) > _PENDING_MESSAGE_LIMIT:
            self._fail(TransportError(f"peer has not taken {_PENDING_MESSAGE_LIMIT} messages"))
            return
        self._schedule()

    def receive(self, data: bytes) -> Frame:
        """Decode a frame from this peer and account for it in the flow control.

        Raises:
            ProtocolError: the frame is not valid (it still counts as received).
        """
        self._received += 1
        if self._ack_due():
            # One turn later than the messages of this frame wake their waiters: a
            # waiter that answers at once (the next request of a sequential caller)
            # queues its message first, and the acknowledgement rides along with it
            # instead of taking a frame of its own.
            self._loop.call_soon(self._schedule)
        elif self._ack_every is not None and self._ack_timer is None:
            # Like TCP's delayed ack: one frame unacknowledged for a moment is acknowledged
            # even if nothing else carries it, so the sender never waits on a count
            # that went astray.
            self._ack_timer = self._loop.call_later(_ACK_DELAY, self._ack_now)
        try:
            frame = decode_frame(data)
        except ProtocolError:
            # The peer's count still holds: if it were lost with the frame, the window
            # could stay shut on the very reply that tells the peer what went wrong.
            self._peer_received(read_acked(data))
            raise
        self._peer_received(frame.acked)
        return frame

    def _peer_received(self, count: int) -> None:
        # A peer cannot have received more than was sent; a count from before a
        # reconnection must not open the window.
        acked = min(count, self._sent)
        if acked > self._peer_acked:
            self._peer_acked = acked
            if self._messages:
                self._schedule()

    def _ack_now(self) -> None:
        self._ack_timer = None
        if self._received > self._acked_sent and not self.closed:
            self._send(encode_frame((), acked=self._received))

    def reset(self) -> None:
        """Start counting afresh: the connection was replaced by a new one."""
        self._sent = self._peer_acked = self._received = self._acked_sent = 0
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def _ack_due(self) -> bool:
        every = self._ack_every
        return every is not None and self._received - self._acked_sent >= every

    def _window_open(self) -> bool:
        return self._window is None or self._sent - self._peer_acked < self._window

    def flush(self) -> None:
        """Send what is queued, as far as the window allows."""
        self._scheduled = False
        while self._messages and self._window_open() and not self.closed:
            self._send(self._next_frame())
        if self._ack_due() and not self.closed:
            self._send(encode_frame((), acked=self._received))

    def _next_frame(self) -> bytes:
        """Encode as many queued messages as fit in one frame, and take them off the queue."""
        count = min(len(self._messages), MAX_MESSAGES_PER_FRAME)
        while True:
            batch = list(itertools.islice(self._messages, count))
            frame = encode_frame(batch, acked=self._received)
            if len(frame) <= MAX_FRAME_BYTES or count == 1:
                break
            count //= 2  # a batch of big results can pass the byte limit: split it
        for _ in range(count):
            self._messages.popleft()
        if len(frame) > MAX_FRAME_BYTES:
            # One message alone over the limit: senders check sizes before queueing, so
            # this is a bug; drop the message rather than the connection.
            log.error(
                "dropping a %s message of %d bytes: over the frame limit",
                type(batch[0]).__name__,
                len(frame),
            )
            return encode_frame((), acked=self._received)
        return frame

    def _send(self, frame: bytes) -> None:
        self._sent += 1
        self._acked_sent = self._received  # every frame is encoded with the current count
        if not self._backlog:
            try:
                self._target.send(frame, block=False)
                return
            except pynng.TryAgain:
                pass
            except pynng.NNGException as exc:
                self._fail(exc)
                return
        if len(self._backlog) >= _PENDING_SEND_LIMIT:
            self._fail(TransportError(f"peer has not taken {_PENDING_SEND_LIMIT} frames"))
            return
        self._backlog.append(frame)
        if self._backlog_task is None:
            self._backlog_task = self._loop.create_task(self._send_backlog())

    async def _send_backlog(self) -> None:
        me = asyncio.current_task()
        try:
            while self._backlog and not self.closed:
                frame = self._backlog[0]
                await self._target.asend(frame)
                # pynng finishes a send that completed even when the task was cancelled
                # meanwhile, so the backlog may have been dropped under this await.
                if self._backlog and self._backlog[0] is frame:
                    self._backlog.popleft()
        except pynng.NNGException as exc:
            self._fail(exc)
        finally:
            if self._backlog_task is me:  # not a newer sender started after a drop
                self._backlog_task = None

    def _fail(self, exc: BaseException) -> None:
        """Drop what waits for the peer and tell the owner, who decides: the control
        plane drops such a peer; a client fails its requests in flight and goes on, so
        it works again once its control plane is back."""
        if not self.closed:
            self._drop_pending()
            self._on_stuck(exc)

    def close(self) -> None:
        """Drop what is queued; nothing more is sent."""
        self.closed = True
        self._drop_pending()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _drop_pending(self) -> None:
        self._messages.clear()
        self._backlog.clear()
        if self._backlog_task is not None:
            self._backlog_task.cancel()
            self._backlog_task = None


class Dialer:
    """One long-lived connection from a client or subworker to a control plane.

    NNG redials on its own when the connection drops; ``on_disconnect`` and
    ``on_connect`` tell the owner, on the loop thread, so it can fail or resend what was
    in flight.
    """

    def __init__(
        self,
        address: str,
        *,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Message], None],
        on_connect: Callable[[], None],
        on_disconnect: Callable[[], None],
        on_bad_frame: Callable[[ProtocolError], None] = lambda _error: None,
        name: str = "fastworker-client",
        tls: TLSOptions | None = None,
    ) -> None:
        self.address = check_address(address)
        tls = check_tls(self.address, tls)
        tls_config = client_tls_config(self.address, tls) if tls is not None else None
        self._loop = loop
        self._on_message = on_message
        self._on_bad_frame = on_bad_frame
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        try:
            self._socket = pynng.Pair1(
                recv_max_size=SOCKET_RECV_LIMIT,
                send_buffer_size=_SEND_BUFFER_FRAMES,
                recv_buffer_size=_SEND_BUFFER_FRAMES,
                reconnect_time_min=50,
                reconnect_time_max=1000,
                tls_config=tls_config,
            )
        except pynng.NNGException as exc:
            raise TransportError(f"cannot create a socket: {exc}") from exc
        self._endpoint: pynng.Dialer | None = None
        self._counted: dict[str, int] = {}
        """NNG's counters of this dial when it last connected: failures are counted
        from there."""
        self._pipe_id: int | None = None
        """The connection the frame counts belong to. Set in-band, by the first frame of
        each connection: NNG's connect callback may reach the loop after that frame."""
        self._socket.add_post_pipe_connect_cb(lambda _pipe: self._notify(self._connected))
        self._socket.add_post_pipe_remove_cb(
            lambda pipe: self._notify(lambda: self._disconnected(pipe.id))
        )
        self._pump = ReceivePump(self._socket, loop, self._frames_arrived, name)
        self.outbox = Outbox(self._socket, loop, self._stuck, ack_every=FLOW_WINDOW)
        self._bad_frames = LogLimiter(log, interval=10.0, level=logging.ERROR)

    def _frames_arrived(self, frames: list[tuple[object, bytes]]) -> None:
        """Decode and account for each frame; hand its messages over one by one."""
        for pipe, data in frames:
            pipe_id = getattr(pipe, "id", None)
            if pipe_id != self._pipe_id:
                self.outbox.reset()  # a new connection counts its frames from zero
                self._pipe_id = pipe_id
            try:
                frame = self.outbox.receive(data)
            except ProtocolError as exc:
                self._bad_frames.log(
                    time.monotonic(),
                    "dropping a frame from the control plane at %s: %s",
                    self.address,
                    exc,
                )
                self._on_bad_frame(exc)
                continue
            for message in frame.messages:
                self._on_message(message)

    def _connected(self) -> None:
        if self._endpoint is not None:
            self._counted = endpoint_stats(self._endpoint)
        self._on_connect()

    def _notify(self, callback: Callable[[], None]) -> None:
        # Pipe callbacks run on NNG's threads.
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(callback)

    def _disconnected(self, pipe_id: int) -> None:
        if pipe_id == self._pipe_id:
            # Frames sent from now on go to the next connection, which has seen nothing.
            self.outbox.reset()
            self._pipe_id = None
        self._on_disconnect()

    def _stuck(self, exc: BaseException) -> None:
        self._on_disconnect()

    def open(self) -> None:
        """Start dialing; returns at once and NNG keeps trying in the background."""
        try:
            self._endpoint = self._socket.dial(self.address, block=False)
        except pynng.NNGException as exc:
            raise ConfigurationError(f"cannot dial {self.address}: {exc}") from exc
        self._pump.start()

    def failures(self) -> str | None:
        """Why the connection could not be made so far, if NNG's counters of this dial
        say (a TLS handshake that failed, a refused port), else None."""
        if self._endpoint is None or self.connected:
            return None
        since = {
            name: count - self._counted.get(name, 0)
            for name, count in endpoint_stats(self._endpoint).items()
        }
        return describe_failures(since, self.address)

    def close(self) -> None:
        """Stop receiving and close the socket."""
        self.outbox.close()
        self._pump.stop()
        with contextlib.suppress(pynng.NNGException):
            self._socket.close()

    def drop_connection(self) -> None:
        """Close the current connection (one that went silent); NNG dials a new one."""
        for pipe in list(self._socket.pipes):
            with contextlib.suppress(pynng.NNGException):
                pipe.close()

    @property
    def connected(self) -> bool:
        return bool(self._socket.pipes)


def client_tls_config(address: str, tls: TLSOptions) -> pynng.TLSConfig:
    """NNG's TLS settings for a client of ``address``: the control plane's certificate
    must chain to ``tls.ca`` and carry the server name (always checked: NNG's optional
    mode would accept any certificate)."""
    own: dict[str, str] = {}
    if tls.cert is not None and tls.key is not None:
        own = {
            "own_cert_string": read_pem("certificate", tls.cert),
            "own_key_string": read_pem("key", tls.key),
        }
    try:
        return pynng.TLSConfig(
            pynng.TLSConfig.MODE_CLIENT,
            server_name=tls.server_name or host_of(address),
            ca_string=read_pem("certificate authority", tls.ca),
            auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
            **own,
        )
    except pynng.NNGException as exc:
        raise ConfigurationError(f"the TLS settings for {address} cannot be used: {exc}") from exc


def endpoint_stats(endpoint: pynng.Dialer | pynng.Listener) -> dict[str, int]:
    """NNG's counters of one dialer or listener (``connect``, ``refused``, ``auth``,
    ``proto``, ...)."""
    ffi, lib = pynng.ffi, pynng.lib
    root = ffi.new("nng_stat **")
    if lib.nng_stats_get(root) != 0:
        return {}
    try:
        if isinstance(endpoint, pynng.Listener):
            stat = lib.nng_stat_find_listener(root[0], endpoint.listener)
        else:
            stat = lib.nng_stat_find_dialer(root[0], endpoint.dialer)
        counters: dict[str, int] = {}
        child = lib.nng_stat_child(stat) if stat != ffi.NULL else ffi.NULL
        while child != ffi.NULL:
            if lib.nng_stat_type(child) in (lib.NNG_STAT_COUNTER, lib.NNG_STAT_LEVEL):
                name = ffi.string(lib.nng_stat_name(child)).decode()
                counters[name] = int(lib.nng_stat_value(child))
            child = lib.nng_stat_next(child)
        return counters
    finally:
        lib.nng_stats_free(root[0])


def describe_failures(counters: dict[str, int], address: str) -> str | None:
    """What NNG's counters of a dialer say about why it has no connection."""
    tls = address.startswith(TLS_SCHEME)
    if counters.get("auth"):
        return (
            f"the TLS handshake with {address} failed {counters['auth']} times: its "
            "certificate is not signed by the certificate authority given (--tls-ca), "
            "or does not carry the server name, or it requires a client certificate "
            "this side does not have or it does not trust"
        )
    if counters.get("proto") and tls:
        return (
            f"{address} does not speak TLS ({counters['proto']} handshakes failed): is it tcp://?"
        )
    if tls and counters.get("other"):
        return (
            f"{address} closed the connection while it was set up, {counters['other']} "
            "times: does it expect another certificate?"
        )
    if address.startswith("tcp://") and (counters.get("other") or counters.get("proto")):
        count = counters.get("other", 0) + counters.get("proto", 0)
        return (
            f"{address} closed the connection while it was set up, {count} times: "
            "does it listen on tls+tcp://?"
        )
    if counters.get("refused"):
        return f"nothing listens at {address} (refused {counters['refused']} times)"
    return None


def closed_error(address: str) -> ConnectionClosedError:
    """The error for requests in flight when the connection to ``address`` dropped."""
    return ConnectionClosedError(f"lost the connection to the control plane at {address}")
