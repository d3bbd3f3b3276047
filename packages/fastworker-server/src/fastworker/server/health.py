"""Health checks over plain HTTP, for systemd, Docker and Kubernetes probes.

``GET /healthz`` answers 200 while the event loop turns, ``GET /readyz`` 200 while the
process is ready to do its job (each role says what that means, as a readiness check).
The server runs in its own daemon thread, so a wedged event loop cannot take it down
with it: each request asks the loop for the answer, and a loop that does not give one
within :data:`LOOP_ANSWER_TIMEOUT` reads unhealthy (503).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from fastworker.protocol import ConfigurationError

__all__ = [
    "LOOP_ANSWER_TIMEOUT",
    "HealthServer",
    "LoopHTTPServer",
    "NoAnswer",
    "ReadinessCheck",
    "Reply",
    "Responder",
    "Verdict",
    "answer",
    "ask_loop",
    "call_on_loop",
    "json_reply",
    "serving",
]

log = logging.getLogger("fastworker.health")

LOOP_ANSWER_TIMEOUT: Final = 1.0
"""Seconds the event loop gets to answer a probe before the process reads unhealthy."""
REQUEST_TIMEOUT: Final = 2.0
"""Seconds a connection gets to send its request before it is closed."""
MAX_CONNECTIONS: Final = 64
"""Probes served at once; a connection past it is closed unanswered, so a flood of
connections costs at most this many threads."""
_CLOSE_TIMEOUT: Final = 2.0

ReadinessCheck = Callable[[], str | None]
"""Called on the event loop: None when ready, else why not."""

_PATHS: Final = ("/healthz", "/readyz")
_METHODS: Final = ("GET", "HEAD")


@dataclasses.dataclass(frozen=True)
class NoAnswer:
    """The event loop did not answer a probe: why, for the body."""

    reason: str


Verdict = str | NoAnswer | None
"""What the event loop said: None (ready), why it is not ready, or no answer."""

Reply = tuple[int, str, bytes]
"""An HTTP answer: status code, media type, body."""

Responder = Callable[[str, str, str], Reply]
"""Called in a request's thread with its method, target and ``Host`` header; it may ask
the event loop (:func:`call_on_loop`), and must do so with a bound."""

_T = TypeVar("_T")
_Served = TypeVar("_Served", bound="LoopHTTPServer")


def json_reply(status: int, body: dict[str, str]) -> Reply:
    return status, "application/json", json.dumps(body).encode()


def answer(method: str, target: str, readiness: Verdict) -> tuple[int, dict[str, str]]:
    """The status code and JSON body for one request, given what the event loop said
    (see :data:`Verdict`)."""
    path = urlsplit(target).path
    if path not in _PATHS:
        return HTTPStatus.NOT_FOUND, {"status": "not found", "reason": f"no {path}; try /healthz"}
    if method not in _METHODS:
        return HTTPStatus.METHOD_NOT_ALLOWED, {"status": "method not allowed", "reason": "use GET"}
    if isinstance(readiness, NoAnswer):
        return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unhealthy", "reason": readiness.reason}
    if path == "/healthz" or readiness is None:
        return HTTPStatus.OK, {"status": "ok"}
    return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "reason": readiness}


def ask_loop(
    loop: asyncio.AbstractEventLoop, check: ReadinessCheck, timeout: float = LOOP_ANSWER_TIMEOUT
) -> Verdict:
    """Run ``check`` on ``loop`` from another thread and return what it said, within
    ``timeout`` seconds."""
    try:
        return call_on_loop(loop, check, timeout)
    except Exception as exc:
        return f"the readiness check failed: {exc}"


def call_on_loop(
    loop: asyncio.AbstractEventLoop, call: Callable[[], _T], timeout: float = LOOP_ANSWER_TIMEOUT
) -> _T | NoAnswer:
    """Run ``call`` on ``loop`` from another thread and return its result (or raise what it
    raised), or :class:`NoAnswer` when the loop does not run it within ``timeout``
    seconds: state that lives on the loop is read only there."""
    reply: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def on_loop() -> None:
        if not reply.set_running_or_notify_cancel():
            return
        try:
            reply.set_result(call())
        except Exception as exc:
            reply.set_exception(exc)

    try:
        loop.call_soon_threadsafe(on_loop)
    except RuntimeError:
        return NoAnswer("the event loop is closed")
    try:
        return reply.result(timeout)
    except concurrent.futures.TimeoutError:
        reply.cancel()
        return NoAnswer(f"the event loop did not answer within {timeout} s")


def _probes(loop: asyncio.AbstractEventLoop, check: ReadinessCheck) -> Responder:
    """``/healthz`` and ``/readyz``, by :func:`answer`."""

    def respond(method: str, target: str, host: str) -> Reply:
        # Only a probe of a known path with a known method costs a trip to the loop.
        readiness: Verdict = None
        if urlsplit(target).path in _PATHS and method in _METHODS:
            readiness = ask_loop(loop, check)
        return json_reply(*answer(method, target, readiness))

    return respond


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT  # a socket timeout: the bound on reading the request

    def _answer(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        try:
            reply = server.respond(self.command, self.path, self.headers.get("Host", ""))
        except Exception as exc:
            log.exception("answering %s %s failed", self.command, self.path)
            reply = json_reply(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"status": "error", "reason": str(exc)}
            )
        self._send(*reply)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up do_<METHOD> and answers 501 when there is none;
        # every method gets an answer from _answer instead (405 for all but GET and HEAD).
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (400, 414, 431) get a JSON body like every other answer."""
        reason = message or HTTPStatus(code).phrase
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # unreadable, not 0.9: send a status line
        self._send(*json_reply(code, {"status": "bad request", "reason": reason}))

    def _send(self, status: int, media_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ", ".join(_METHODS))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def version_string(self) -> str:
        return "fastworker-health"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], respond: Responder) -> None:
        self.respond = respond
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.address = address
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own also looks up the host's fully qualified name: a reverse DNS
        # query, unbounded, on the event loop's thread.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.address[0]
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("health check from %s failed", client_address, exc_info=True)


class LoopHTTPServer:
    """A small HTTP server on ``host:port`` (0 picks a free port) in a daemon thread, whose
    answers come from ``responder(loop)``, made with the running event loop at start: no
    web framework, at most :data:`MAX_CONNECTIONS` requests at once, each with
    :data:`REQUEST_TIMEOUT` to arrive. ``what`` names it in errors and logs; ``paths``
    are listed in the log line. Use as ``with ...:`` inside the loop."""

    def __init__(
        self,
        host: str,
        port: int,
        responder: Callable[[asyncio.AbstractEventLoop], Responder],
        *,
        what: str,
        paths: tuple[str, ...],
    ) -> None:
        self.host = host
        self.requested_port = port
        self.responder = responder
        self.what = what
        self.paths = paths
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, for port 0)."""
        if self._server is None:
            return self.requested_port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen and serve in a daemon thread.

        Raises:
            ConfigurationError: ``host:port`` cannot be bound.
        """
        respond = self.responder(asyncio.get_running_loop())
        try:
            self._server = _Server((self.host, self.requested_port), respond)
        except (OSError, OverflowError) as exc:  # OverflowError: a port past 65535
            raise ConfigurationError(
                f"the {self.what} cannot listen on {self.host}:{self.requested_port}: {exc}"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"fastworker-{self.what.replace(' ', '-')}",
            daemon=True,
        )
        self._thread.start()
        base = f"http://{self.host}:{self.port}"
        log.info("%s on %s", self.what, " and ".join(base + path for path in self.paths))

    def close(self) -> None:
        """Stop serving; probes after this find nothing listening."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # returns within serve_forever's poll interval
        server.server_close()
        if self._thread is not None:
            self._thread.join(_CLOSE_TIMEOUT)

    def __enter__(self: _Served) -> _Served:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class HealthServer(LoopHTTPServer):
    """``/healthz`` and ``/readyz`` on ``host:port`` (0 picks a free port), answered by
    the running event loop and ``check``. Use as ``with HealthServer(...):`` inside the
    loop, around the service it reports on."""

    def __init__(self, host: str, port: int, check: ReadinessCheck) -> None:
        super().__init__(
            host,
            port,
            lambda loop: _probes(loop, check),
            what="health checks",
            paths=_PATHS,
        )
        self.check = check


def serving(
    host: str, port: int | None, check: ReadinessCheck
) -> contextlib.AbstractContextManager[HealthServer | None]:
    """A :class:`HealthServer` on ``host:port``, or with no port one that serves nothing."""
    return contextlib.nullcontext() if port is None else HealthServer(host, port, check)
