"""``--metrics-port``: the control plane's metrics for Prometheus without the dashboard.

``GET /metrics`` asks the event loop for the core's :class:`MetricsReply` (a copy made on
the loop, so no state is read from this thread) within a second, and renders it in the
request's thread with :mod:`fastworker.client.prometheus`. It runs on the health checks'
server (:class:`~fastworker.server.health.LoopHTTPServer`) with its own route, on its own
port. Needs prometheus-client (the ``metrics`` extra); import this module only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Callable
from http import HTTPStatus
from typing import Final
from urllib.parse import urlsplit

from fastworker.client.prometheus import CONTENT_TYPE, render
from fastworker.protocol import FastworkerError
from fastworker.protocol import messages as m

from .health import LoopHTTPServer, NoAnswer, Reply, Responder, call_on_loop, json_reply

__all__ = ["DEFAULT_METRICS_HOST", "METRICS_PATH", "MetricsServer", "serving"]

DEFAULT_METRICS_HOST: Final = "127.0.0.1"
METRICS_PATH: Final = "/metrics"

Snapshot = Callable[[], m.MetricsReply]
"""Called on the event loop: the metrics as they stand."""


def _hostname(host: str) -> str:
    """The name in a ``Host`` header, without its port."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_loopback(name: str) -> bool:
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _scrapes(loop: asyncio.AbstractEventLoop, snapshot: Snapshot, bound: str) -> Responder:
    # Bound to loopback, it answers only requests addressed to a loopback name: a web page
    # in a browser on this host cannot read it through DNS rebinding (as the dashboard).
    loopback_only = _is_loopback(bound)

    def respond(method: str, target: str, host: str) -> Reply:
        if loopback_only and not _is_loopback(_hostname(host)):
            return json_reply(
                HTTPStatus.FORBIDDEN,
                {"status": "forbidden", "reason": "served on loopback to loopback names only"},
            )
        path = urlsplit(target).path
        if path != METRICS_PATH:
            return json_reply(
                HTTPStatus.NOT_FOUND, {"status": "not found", "reason": f"no {path}; try /metrics"}
            )
        if method not in ("GET", "HEAD"):
            return json_reply(
                HTTPStatus.METHOD_NOT_ALLOWED, {"status": "method not allowed", "reason": "use GET"}
            )
        try:
            reply = call_on_loop(loop, snapshot)
        except FastworkerError as exc:  # not started yet, or stopped
            reply = NoAnswer(str(exc))
        if isinstance(reply, NoAnswer):
            return json_reply(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unhealthy", "reason": reply.reason}
            )
        return HTTPStatus.OK, CONTENT_TYPE, render(reply)

    return respond


class MetricsServer(LoopHTTPServer):
    """``GET /metrics`` on ``host:port`` (0 picks a free port), from ``snapshot`` run on
    the running event loop. Use as ``with MetricsServer(...):`` inside the loop."""

    def __init__(self, host: str, port: int, snapshot: Snapshot) -> None:
        super().__init__(
            host,
            port,
            lambda loop: _scrapes(loop, snapshot, host),
            what="metrics",
            paths=(METRICS_PATH,),
        )


def serving(
    host: str, port: int | None, snapshot: Snapshot
) -> contextlib.AbstractContextManager[MetricsServer | None]:
    """A :class:`MetricsServer` on ``host:port``, or with no port one that serves nothing."""
    return contextlib.nullcontext() if port is None else MetricsServer(host, port, snapshot)
