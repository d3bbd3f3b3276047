"""Running the dashboard with uvicorn, inside an event loop someone else owns.

The control plane runs :func:`serve` as one task of its own loop, so uvicorn must not
touch the process: no signal handlers (the host process owns SIGTERM and SIGINT), no
logging configuration, no ``sys.exit`` when the port is taken (the socket is bound here
first, and a failure is an ``OSError`` the caller can handle).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Generator
from typing import Final

import uvicorn
from starlette.middleware.trustedhost import TrustedHostMiddleware

from fastworker.client import TLSOptions
from fastworker.protocol import ConfigurationError

from .app import create_app

__all__ = ["bind", "is_loopback", "listening_url", "serve"]

log = logging.getLogger("fastworker.dashboard")

SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds a cancelled :func:`serve` waits for open requests before it cuts them."""


class _EmbeddedServer(uvicorn.Server):
    """uvicorn.Server that leaves the process's signals alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def install_signal_handlers(self) -> None:
        """Older uvicorn releases install handlers through this; do nothing."""


_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
"""The names a browser may use for a dashboard served on loopback without a token."""


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port`` 0 picks a free one).

    Raises:
        OSError: the address cannot be bound (in use, not local, not permitted).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise OSError(exc.errno, f"the dashboard cannot resolve {host!r}: {exc}") from exc
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"the dashboard cannot listen on {host}:{port}: {exc.strerror}"
        ) from exc
    return sock


def listening_url(sock: socket.socket) -> str:
    """``http://host:port/`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


async def serve(
    control_plane_address: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    access_token: str | None = None,
    auth_token: str | None = None,
    tls: TLSOptions | None = None,
) -> None:
    """Serve the dashboard of the control plane at ``control_plane_address`` on
    ``host:port`` until cancelled, in the running event loop.

    Cancelling the task stops it gracefully: open requests get a few seconds, then the
    app's client is stopped. Binding anything but loopback needs ``access_token``, the
    token visitors of the dashboard must give; ``auth_token`` is the control plane's
    shared secret (default: ``$FASTWORKER_AUTH_TOKEN``); ``tls`` the TLS options of a
    ``tls+tcp://`` control plane (default: ``$FASTWORKER_TLS_*``).

    Raises:
        ConfigurationError: a non-loopback ``host`` without an access token.
        OSError: ``host:port`` cannot be bound.
    """
    await _serve(
        control_plane_address,
        host,
        port,
        access_token=access_token,
        auth_token=auth_token,
        tls=tls,
    )


async def _serve(
    control_plane_address: str | None,
    host: str,
    port: int,
    *,
    access_token: str | None,
    auth_token: str | None = None,
    tls: TLSOptions | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    loopback = is_loopback(host)
    if not loopback and not access_token:
        raise ConfigurationError(
            f"the dashboard would listen on {host}, which other hosts can reach; "
            "give it an access token (--access-token or FASTWORKER_DASHBOARD_TOKEN) "
            "or bind it to 127.0.0.1"
        )
    sock = bind(host, port)
    try:
        app = create_app(
            control_plane_address, access_token=access_token, auth_token=auth_token, tls=tls
        )
        if not access_token:
            # Without a token, a page elsewhere could reach a loopback dashboard through a
            # name of its own that resolves to 127.0.0.1 (DNS rebinding): answer only
            # requests addressed to a loopback name.
            app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*_LOOPBACK_NAMES, host])
        config = uvicorn.Config(
            app,
            log_config=None,  # the host process's logging stays as it is
            log_level="warning",  # uvicorn's own loggers only; the listening line is ours
            access_log=False,
            lifespan="on",
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT),
        )
        server = _EmbeddedServer(config)
        url = listening_url(sock)
        reach = (
            "bound to loopback only: other hosts cannot reach it"
            if loopback
            else "reachable from other hosts; the access token is required"
        )
        message = f"fastworker dashboard listening on {url} ({reach})"
        if announce is None:
            log.info("%s", message)
        else:
            announce(message)
        running = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name="fastworker-dashboard-uvicorn"
        )
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(running), SHUTDOWN_TIMEOUT + 2)
            except BaseException:  # we are cancelled already: never hang here
                server.force_exit = True
                running.cancel()
            raise
        except SystemExit as exc:  # uvicorn exits when the app's startup fails
            raise RuntimeError(f"the dashboard failed to start (exit status {exc.code})") from exc
    finally:
        sock.close()
