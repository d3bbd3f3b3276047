# pynng ships no type information; this module is the typed boundary around it.
# pyright: reportMissingTypeStubs=false, reportUnknownMemberType=false
# pyright: reportUnknownArgumentType=false, reportUnknownLambdaType=false
# pyright: reportUnknownVariableType=false
"""The control plane's listening socket: the one module of the server that imports pynng.

One NNG pair1 socket in polyamorous mode takes every client and subworker connection;
each connection is an NNG pipe, and replies go back on the pipe the request came on.
Receiving and batching reuse the client's transport (receives on the event loop thread,
one frame per peer per turn of the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import warnings
from collections.abc import Callable

import pynng

from fastworker.client._transport import (
    FLOW_WINDOW,
    SOCKET_RECV_LIMIT,
    Outbox,
    ReceivePump,
    check_address,
    endpoint_stats,
)
from fastworker.client.tls import TLS_SCHEME, read_pem
from fastworker.protocol import ConfigurationError, TransportError

__all__ = ["Listener", "ListenerTLS", "Peer"]

_BUFFER_FRAMES = 1024
_CLOSE_GRACE = 0.5
"""Seconds a refused connection stays open after its last frame, for that to arrive."""


class Peer:
    """One connection to the control plane: a client or a subworker."""

    def __init__(
        self, pipe: pynng.Pipe, loop: asyncio.AbstractEventLoop, on_stuck: Callable[[Peer], None]
    ) -> None:
        self.id: int = pipe.id
        self._pipe = pipe
        self._loop = loop
        try:
            self.address = str(pipe.remote_address)
        except pynng.NNGException:
            self.address = "unknown"
        self.certificate = _verified_common_name(pipe)
        """The common name of the peer's TLS certificate, once verified; "" without."""
        self.outbox = Outbox(self, loop, lambda _exc: on_stuck(self), window=FLOW_WINDOW)

    # The Outbox's sender interface, addressed to this pipe only.
    def send(self, data: bytes, block: bool = True) -> None:
        self._pipe.socket.send_msg(pynng.Message(data, self._pipe), block=block)

    async def asend(self, data: bytes) -> None:
        await self._pipe.asend(data)

    def close(self) -> None:
        """Drop the connection (the peer redials if it wants to)."""
        self.outbox.close()
        self._close_pipe()

    def close_after_sending(self) -> None:
        """Send what is queued for the peer now, then drop the connection a moment
        later: a refused peer reads why before it goes."""
        self.outbox.flush()
        self.outbox.close()
        self._loop.call_later(_CLOSE_GRACE, self._close_pipe)

    def _close_pipe(self) -> None:
        with contextlib.suppress(pynng.NNGException):
            self._pipe.close()


@dataclasses.dataclass(frozen=True)
class ListenerTLS:
    """The control plane's side of TLS: its certificate (PEM, with its chain) and key,
    and, for mutual TLS, the certificate authority client certificates must chain to."""

    cert: str
    key: str
    client_ca: str | None = None

    def config(self) -> pynng.TLSConfig:
        """NNG's settings; the files are read now, so a wrong path fails at start."""
        own_cert = read_pem("certificate", self.cert)
        own_key = read_pem("key", self.key)
        try:
            config = pynng.TLSConfig(
                pynng.TLSConfig.MODE_SERVER, own_cert_string=own_cert, own_key_string=own_key
            )
            if self.client_ca is None:
                # Passed to the constructor, NONE (0) would be ignored.
                config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_NONE)
            else:
                # REQUIRED, never OPTIONAL: NNG's optional mode accepts any certificate.
                config.set_ca_chain(read_pem("certificate authority", self.client_ca))
                config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED)
        except pynng.NNGException as exc:
            raise ConfigurationError(
                f"the control plane's TLS settings cannot be used: {exc}"
            ) from exc
        return config


def _verified_common_name(pipe: pynng.Pipe) -> str:
    """The common name of the certificate a TLS peer presented and NNG verified, or "":
    for a plain connection, a peer without a certificate, or one not verified. pynng
    exposes no TLS options of a pipe, so NNG's are read through its C interface."""
    ffi, lib = pynng.ffi, pynng.lib
    verified = ffi.new("bool *")
    if lib.nng_pipe_get_bool(pipe.pipe, b"tls-verified", verified) != 0 or not verified[0]:
        return ""
    name = ffi.new("char **")
    if lib.nng_pipe_get_string(pipe.pipe, b"tls-peer-cn", name) != 0 or name[0] == ffi.NULL:
        return ""
    try:
        return ffi.string(name[0]).decode("utf-8", "replace")
    finally:
        lib.nng_strfree(name[0])


class Listener:
    """The control plane's socket. Calls back on the event loop thread."""

    def __init__(
        self,
        address: str,
        *,
        loop: asyncio.AbstractEventLoop,
        on_frames: Callable[[list[tuple[Peer, bytes]]], None],
        on_disconnect: Callable[[Peer], None],
        tls: ListenerTLS | None = None,
    ) -> None:
        self.address = check_address(address)
        if address.startswith(TLS_SCHEME) and tls is None:
            raise ConfigurationError(
                f"{address} is a TLS address: give the control plane its certificate and "
                "key (--tls-cert, --tls-key)"
            )
        if tls is not None and not address.startswith(TLS_SCHEME):
            raise ConfigurationError(
                f"a TLS certificate was given, but {address} is not a {TLS_SCHEME} address"
            )
        tls_config = tls.config() if tls is not None else None
        self._loop = loop
        self._on_frames = on_frames
        self._on_disconnect = on_disconnect
        self.peers: dict[int, Peer] = {}
        with warnings.catch_warnings():
            # NNG marks polyamorous pair1 as deprecated; it is still the one pattern that
            # gives a server per-connection replies and pushes on a single socket.
            warnings.simplefilter("ignore")
            self._socket = pynng.Pair1(
                polyamorous=True,
                recv_max_size=SOCKET_RECV_LIMIT,
                send_buffer_size=_BUFFER_FRAMES,
                recv_buffer_size=_BUFFER_FRAMES,
                tls_config=tls_config,
            )
        self._endpoint: pynng.Listener | None = None
        self._socket.add_post_pipe_remove_cb(self._pipe_removed)
        self._pump = ReceivePump(
            self._socket, loop, self._frames_arrived, "fastworker-control-plane"
        )

    def open(self) -> None:
        """Start listening. Raises ConfigurationError if the address cannot be bound."""
        try:
            self._endpoint = self._socket.listen(self.address)
        except pynng.AddressInUse as exc:
            raise ConfigurationError(f"{self.address} is already in use: {exc}") from exc
        except pynng.NNGException as exc:
            raise ConfigurationError(f"cannot listen on {self.address}: {exc}") from exc
        self._pump.start()

    def failed_handshakes(self) -> int:
        """Connections that ended before they were set up, since the start: a TLS
        handshake that failed (an untrusted or missing certificate, a peer that does not
        speak TLS). NNG tells the listener nothing else of them."""
        if self._endpoint is None or not self.address.startswith(TLS_SCHEME):
            return 0
        counters = endpoint_stats(self._endpoint)
        return counters.get("auth", 0) + counters.get("proto", 0) + counters.get("other", 0)

    def close(self) -> None:
        """Stop listening and drop every connection."""
        for peer in list(self.peers.values()):
            peer.outbox.close()
        self._pump.stop()
        with contextlib.suppress(pynng.NNGException):
            self._socket.close()

    def _peer(self, pipe: object) -> Peer:
        if not isinstance(pipe, pynng.Pipe):
            raise TransportError("a frame arrived without its connection")
        peer = self.peers.get(pipe.id)
        if peer is None:
            peer = self.peers[pipe.id] = Peer(pipe, self._loop, self._drop)
        return peer

    def _frames_arrived(self, frames: list[tuple[object, bytes]]) -> None:
        self._on_frames([(self._peer(pipe), data) for pipe, data in frames])

    def _drop(self, peer: Peer) -> None:
        peer.close()

    def _pipe_removed(self, pipe: pynng.Pipe) -> None:
        # Runs on an NNG thread.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._forget, pipe.id)

    def _forget(self, pipe_id: int) -> None:
        peer = self.peers.pop(pipe_id, None)
        if peer is not None:
            peer.outbox.close()
            self._on_disconnect(peer)
