"""The dashboard as a mountable FastAPI router, and as a standalone app.

Every view is an HTML page (or an htmx fragment of one) with a JSON twin under ``/api``.
The page polls its fragments every second with htmx, so it follows the control plane
without reloads; every list is paged and every page size bounded, so it stays quick with
many thousands of tasks. The control plane is read only through the client calls of
:class:`~fastworker.dashboard.DashboardSource`, which :class:`fastworker.client.Client` has.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from urllib.parse import quote, urlencode

import jinja2
import msgspec
from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fastworker.client import (
    Client,
    TaskCall,
    TLSOptions,
    get_default_client,
    set_default_client,
)
from fastworker.protocol import (
    ConfigurationError,
    FastworkerError,
    NotConnectedError,
    RejectedError,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
    TransportError,
    UnsupportedFeatureError,
)

from . import _dead_letters as dead_letters
from . import _format
from . import _prometheus as prometheus
from . import _schedules as schedules
from ._htmx import HTMX_FILE, HTMX_VERSION
from ._metrics import Sampler
from ._security import CSRF_HEADER, TOKEN_COOKIE, AccessGuard, CsrfGuard
from ._source import DashboardSource
from ._version import __version__
from ._views import (
    PRIORITIES,
    STATUSES,
    jsonable,
    overview_view,
    short_id,
    task_detail_view,
    task_view,
)

__all__ = ["HEALTH_TIMEOUT", "REQUEST_TIMEOUT", "create_app", "create_router"]

log = logging.getLogger("fastworker.dashboard")

REQUEST_TIMEOUT: Final = 2.0
"""Seconds the standalone app's client waits for the control plane: the page polls every
second, so an unreachable control plane must show quickly."""
PAGE_SIZES: Final = (25, 50, 100)
"""Task rows per page in the HTML view."""
API_MAX_LIMIT: Final = 500
"""Largest ``limit`` of ``/api/history``."""
HEALTH_TIMEOUT: Final = 1.0
"""Seconds ``/healthz`` waits for the control plane's answer: a probe's own bound is
typically one or two."""
FRESH_CONNECTION_AFTER: Final = 30.0
"""Seconds without an answer after which the standalone app replaces its client."""
RETRY_KEY_PREFIX: Final = "retry-of:"
"""Prefix of the idempotency key of a retry; the retried task's id follows it."""
_RECONNECT_DELAYS: Final = (0.2, 0.5, 1.0, 2.0)
_REFUSED_RETRY: Final = 5.0

_router_ids = itertools.count(1)

_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# --- static files ------------------------------------------------------------------------


@dataclass(frozen=True)
class _StaticFile:
    data: bytes
    media_type: str
    digest: str


_MEDIA_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


def _load_static() -> dict[str, _StaticFile]:
    files: dict[str, _StaticFile] = {}
    root = resources.files("fastworker.dashboard") / "static"
    for entry in root.iterdir():
        suffix = os.path.splitext(entry.name)[1]
        if not entry.is_file() or suffix not in _MEDIA_TYPES:
            continue
        data = entry.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:12]
        files[entry.name] = _StaticFile(data, _MEDIA_TYPES[suffix], digest)
    return files


_STATIC: Final = _load_static()

_TEMPLATES: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("fastworker.dashboard", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters.update(_format.FILTERS)


# --- the dashboard -----------------------------------------------------------------------


@dataclass
class _HistoryQuery:
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    name: str | None = None
    offset: int = 0
    limit: int = PAGE_SIZES[0]

    @property
    def filtered(self) -> bool:
        return self.status is not None or self.priority is not None or bool(self.name)

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string of the HTML view for this state (page numbers from 1)."""
        values: dict[str, Any] = {
            "status": None if self.status is None else self.status.value,
            "priority": None if self.priority is None else self.priority.name.lower(),
            "name": self.name,
            "page": self.offset // self.limit + 1,
            "size": self.limit,
        }
        values.update(changes)
        if values["page"] == 1:
            values["page"] = None
        if values["size"] == PAGE_SIZES[0]:
            values["size"] = None
        return {k: str(v) for k, v in values.items() if v not in (None, "")}


class _BadRequest(Exception):
    pass


def _int_param(request: Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{key} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise _BadRequest(f"{key} must be between {low} and {high}, got {value}")
    return value


def _clamped_param(request: Request, key: str, default: int, low: int, high: int) -> int:
    """Like :func:`_int_param` for the HTML view: whatever comes, a usable value."""
    try:
        value = int(request.query_params.get(key) or default)
    except ValueError:
        return default
    return min(max(value, low), high)


def _filters(request: Request) -> tuple[TaskStatus | None, TaskPriority | None, str | None]:
    status = priority = name = None
    raw_status = request.query_params.get("status") or None
    if raw_status is not None:
        try:
            status = TaskStatus(raw_status.lower())
        except ValueError:
            raise _BadRequest(
                f"status must be one of {', '.join(STATUSES)}, got {raw_status!r}"
            ) from None
    raw_priority = request.query_params.get("priority") or None
    if raw_priority is not None:
        try:
            priority = TaskPriority.parse(raw_priority)
        except ConfigurationError as exc:
            raise _BadRequest(str(exc)) from None
    raw_name = (request.query_params.get("name") or "").strip()
    if raw_name:
        if len(raw_name) > 256:
            raise _BadRequest("name must be at most 256 characters")
        name = raw_name
    return status, priority, name


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _no_problem() -> str | None:
    return None


class _Dashboard:
    """One dashboard: its router, its security and its samples."""

    def __init__(
        self,
        client: DashboardSource | Callable[[], DashboardSource],
        access_token: str | None,
        *,
        keep_sampling: bool = False,
        connection_problem: Callable[[], str | None] = _no_problem,
    ) -> None:
        if callable(client):
            self.client: Callable[[], DashboardSource] = client
        else:
            fixed = client
            self.client = lambda: fixed
        self._connection_problem = connection_problem
        self.access = AccessGuard(access_token)
        self.csrf = CsrfGuard()
        self.sampler = Sampler(self.client, keep_running=keep_sampling)
        self._last_overview: tuple[float, dict[str, Any]] | None = None
        self._names = f"fastworker_dashboard_{next(_router_ids)}"
        self.router = APIRouter()
        self._add("/", "index", self.index)
        self._add("/fragments/live", "live", self.live_fragment)
        self._add("/fragments/history", "history", self.history_fragment)
        self._add("/fragments/dead-letters", "dead_letters", self.dead_letters_fragment)
        self._add("/fragments/schedules", "schedules", self.schedules_fragment)
        self._add("/fragments/tasks/{task_id:path}", "task_fragment", self.task_fragment)
        self._add("/tasks/{task_id:path}", "task", self.task_page)
        self._add("/actions/cancel/{task_id:path}", "cancel", self.cancel, method="POST")
        self._add("/actions/retry/{task_id:path}", "retry", self.retry, method="POST")
        retry_dead = self._dead_letter_action(dead_letters.retry)
        purge_dead = self._dead_letter_action(dead_letters.purge)
        self._add("/actions/retry-dead/{task_id:path}", "retry_dead", retry_dead, method="POST")
        self._add("/actions/retry-dead-all", "retry_dead_all", retry_dead, method="POST")
        self._add("/actions/purge-dead/{task_id:path}", "purge_dead", purge_dead, method="POST")
        self._add("/actions/purge-dead-all", "purge_dead_all", purge_dead, method="POST")
        self._add("/api/overview", "api_overview", self.api_overview)
        self._add("/api/history", "api_history", self.api_history)
        self._add("/api/dead-letters", "api_dead_letters", self.api_dead_letters)
        self._add("/api/schedules", "api_schedules", self.api_schedules)
        self._add("/api/tasks/{task_id:path}", "api_task", self.api_task)
        # For Prometheus: behind the same guard as the API (a Bearer token), and not a
        # reader of the page, so a scrape does not keep the sampler running.
        self._add("/metrics", "metrics", self.metrics, watched=False)
        self._add("/static/{filename}", "static", self.static, guarded=False)
        # Probes carry no token; unguarded, it says only whether the control plane answers.
        self._add("/healthz", "healthz", self.healthz, guarded=False)

    # --- plumbing -------------------------------------------------------------------------

    def _add(
        self,
        path: str,
        name: str,
        handler: Callable[[Request], Awaitable[Response]],
        *,
        method: str = "GET",
        guarded: bool = True,
        watched: bool = True,
    ) -> None:
        async def endpoint(request: Request) -> Response:
            if guarded:
                denied = self._check_access(request)
                if denied is not None:
                    return denied
                if watched:
                    self.sampler.touch()
            try:
                response = await handler(request)
            except _BadRequest as exc:
                response = self._error(request, 400, "bad_request", str(exc))
            if guarded:
                for key, value in _SECURITY_HEADERS.items():
                    response.headers.setdefault(key, value)
            return response

        endpoint.__name__ = f"{self._names}_{name}"
        self.router.add_api_route(
            path,
            endpoint,
            methods=[method],
            name=f"{self._names}.{name}",
            include_in_schema=False,
        )

    def url(self, request: Request, name: str, **params: str) -> str:
        """The path of one of this dashboard's views, under whatever prefix it is mounted."""
        quoted = {key: quote(value, safe="") for key, value in params.items()}
        return request.url_for(f"{self._names}.{name}", **quoted).path

    def _root_path(self, request: Request) -> str:
        path = self.url(request, "index")
        return path.rstrip("/") or "/"

    def _is_api(self, request: Request) -> bool:
        """Whether a program asks (the JSON API, or a scrape of ``/metrics``), not a
        browser: it gets JSON errors, and a ``?token=`` is not traded for a cookie."""
        path = request.url.path
        api = self.url(request, "api_overview").rsplit("/", 1)[0]
        return path.startswith(api) or path == self.url(request, "metrics")

    def _check_access(self, request: Request) -> Response | None:
        if not self.access.enabled:
            return None
        supplied = request.query_params.get("token")
        if supplied is not None and self.access.matches(supplied):
            if self._is_api(request) or request.method != "GET":
                return None
            # Trade the token in the address for a cookie, and drop it from the address.
            query = urlencode(
                [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            )
            # ASGI's raw_path has no query, but starlette's TestClient sent one before 0.41.3.
            raw_path = request.scope.get("raw_path")
            if isinstance(raw_path, bytes):
                path = raw_path.partition(b"?")[0].decode("latin-1")
            else:
                path = request.url.path
            response = RedirectResponse(f"{path}?{query}" if query else path, status_code=303)
            assert self.access.cookie_value is not None
            response.set_cookie(
                TOKEN_COOKIE,
                self.access.cookie_value,
                path=self._root_path(request),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            response.headers["Cache-Control"] = "no-store"
            return response
        if self.access.allows(request):
            return None
        message = "this dashboard needs an access token"
        headers = {"WWW-Authenticate": 'Bearer realm="fastworker-dashboard"', **_SECURITY_HEADERS}
        if self._is_api(request) or _is_htmx(request) or request.method != "GET":
            return self._json({"error": "unauthorized", "message": message}, 401, headers)
        html = self._render(request, "unauthorized.html", {"message": message})
        return HTMLResponse(html, status_code=401, headers=headers)

    def _json(
        self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return Response(
            msgspec.json.encode(data, enc_hook=jsonable),
            status_code=status,
            media_type="application/json",
            headers=dict(headers or {}),
        )

    def _error(self, request: Request, status: int, code: str, message: str) -> Response:
        if self._is_api(request) or (request.method != "GET" and not _is_htmx(request)):
            return self._json({"error": code, "message": message}, status)
        if _is_htmx(request):
            return self._toast(request, "error", message, status=200)
        html = self._render(request, "error.html", {"status": status, "message": message})
        return HTMLResponse(html, status_code=status)

    def _render(self, request: Request, template: str, context: dict[str, Any]) -> str:
        def url(name: str, **params: str) -> str:
            return self.url(request, name, **params)

        def static(filename: str) -> str:
            return f"{self.url(request, 'static', filename=filename)}?v={_STATIC[filename].digest}"

        def query(name: str, params: Mapping[str, str], **path_params: str) -> str:
            base = self.url(request, name, **path_params)
            return f"{base}?{urlencode(params)}" if params else base

        try:
            address = self.client().address
        except Exception:
            address = "?"
        base: dict[str, Any] = {
            "url": url,
            "static": static,
            "query": query,
            "csrf_token": self.csrf.token,
            "hx_headers": json.dumps({CSRF_HEADER: self.csrf.token}),
            "address": address,
            "version": __version__,
            "htmx_file": HTMX_FILE,
            "htmx_version": HTMX_VERSION,
            "now": time.time(),
            "priorities": PRIORITIES,
            "statuses": STATUSES,
            "page_sizes": PAGE_SIZES,
        }
        return _TEMPLATES.get_template(template).render({**base, **context})

    def _html(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        return HTMLResponse(self._render(request, template, context), status_code=status)

    def _toast(
        self,
        request: Request,
        kind: str,
        message: str,
        *,
        link: str | None = None,
        link_text: str = "",
        status: int = 200,
    ) -> Response:
        html = self._render(
            request,
            "_toast.html",
            {"kind": kind, "message": message, "link": link, "link_text": link_text},
        )
        return HTMLResponse(html, status_code=status, headers={"HX-Trigger": "fw-refresh"})

    # --- reading the control plane --------------------------------------------------------

    def _unreachable(
        self, client: DashboardSource, exc: FastworkerError, stale_since: float | None = None
    ) -> dict[str, Any]:
        """What the page and the JSON twins say about a control plane that did not answer."""
        if isinstance(exc, NotConnectedError):
            problem = self._connection_problem()
            detail = (
                "not connected yet; the dashboard keeps trying"
                if problem is None
                else f"cannot connect: {problem}"
            )
        else:
            detail = str(exc)
        return {"address": client.address, "detail": detail, "stale_since": stale_since}

    async def _overview(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(overview view or the last one seen, None or why the control plane is
        unreachable)."""
        client = self.client()
        now = time.time()
        try:
            overview = await client.overview()
        except TransportError as exc:
            last = self._last_overview
            unreachable = self._unreachable(client, exc, None if last is None else last[0])
            return (None if last is None else last[1]), unreachable
        view = overview_view(overview, now)
        self._last_overview = (now, view)
        return view, None

    async def _live_context(self) -> dict[str, Any]:
        overview, unreachable = await self._overview()
        now = time.time()
        summary = self.sampler.summary(now)
        slots = 0
        if overview is not None:
            slots = sum(w["slots"] for w in overview["workers"] if w["state"] == "connected")
        return {
            "ov": overview,
            "unreachable": unreachable,
            "summary": summary,
            "slots": slots,
            "throughput": self.sampler.throughput_chart(now),
            "latency": self.sampler.latency_chart(now),
        }

    def _history_query(self, request: Request, *, strict: bool) -> _HistoryQuery:
        try:
            status, priority, name = _filters(request)
        except _BadRequest:
            if strict:
                raise
            status = priority = name = None
        if strict:
            limit = _int_param(request, "limit", 50, 1, API_MAX_LIMIT)
            offset = _int_param(request, "offset", 0, 0, 10**9)
            return _HistoryQuery(status, priority, name, offset, limit)
        size = _clamped_param(request, "size", PAGE_SIZES[0], 1, PAGE_SIZES[-1])
        page = _clamped_param(request, "page", 1, 1, 10**9)
        size = min((s for s in PAGE_SIZES if s >= size), default=PAGE_SIZES[-1])
        return _HistoryQuery(status, priority, name, (page - 1) * size, size)

    async def _history(self, query: _HistoryQuery) -> dict[str, Any]:
        client = self.client()
        try:
            reply = await client.history(
                offset=query.offset,
                limit=query.limit,
                status=query.status,
                priority=query.priority,
                name=query.name,
            )
        except TransportError as exc:
            return {
                "tasks": [],
                "total": 0,
                "unreachable": self._unreachable(client, exc),
            }
        return {
            "tasks": [task_view(t) for t in reply.tasks],
            "total": reply.total,
            "unreachable": None,
        }

    def _history_context(self, query: _HistoryQuery, page: dict[str, Any]) -> dict[str, Any]:
        total: int = page["total"]
        pages = max((total + query.limit - 1) // query.limit, 1)
        number = query.offset // query.limit + 1
        return {
            **page,
            "q": query,
            "page": number,
            "pages": pages,
            "first": query.offset + 1 if page["tasks"] else 0,
            "last": query.offset + len(page["tasks"]),
        }

    async def _dead_letters(self, request: Request, *, strict: bool) -> dict[str, Any]:
        """The dead-letter card's context, paged by ``offset`` and ``limit`` (refused when
        out of bounds if ``strict``, else clamped)."""
        if strict:
            offset = _int_param(request, "offset", 0, 0, 10**9)
            limit = _int_param(request, "limit", 50, 1, API_MAX_LIMIT)
        else:
            offset = _clamped_param(request, "offset", 0, 0, 10**9)
            limit = _clamped_param(request, "limit", dead_letters.PAGE_SIZE, 1, PAGE_SIZES[-1])
        client = self.client()
        try:
            return await dead_letters.page(client, offset, limit)
        except TransportError as exc:
            return dead_letters.card(
                None, offset, limit, unreachable=self._unreachable(client, exc)
            )

    async def _schedules(self) -> dict[str, Any]:
        """The schedules card's context."""
        client = self.client()
        try:
            return await schedules.listing(client)
        except TransportError as exc:
            return schedules.card(None, unreachable=self._unreachable(client, exc))

    # --- views ----------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        query = self._history_query(request, strict=False)
        live, page, dead, periodic = await asyncio.gather(
            self._live_context(),
            self._history(query),
            self._dead_letters(request, strict=False),
            self._schedules(),
        )
        context = {
            **live,
            "history": self._history_context(query, page),
            "dead": dead,
            "periodic": periodic,
        }
        return self._html(request, "index.html", context, 503 if live["unreachable"] else 200)

    async def live_fragment(self, request: Request) -> Response:
        return self._html(request, "_live.html", {**await self._live_context(), "oob": True})

    async def history_fragment(self, request: Request) -> Response:
        query = self._history_query(request, strict=False)
        page = await self._history(query)
        response = self._html(
            request, "_history.html", {"history": self._history_context(query, page)}
        )
        if request.query_params.get("nav"):
            # A filter or page the user chose: keep it in the address bar for reloads.
            response.headers["HX-Replace-Url"] = self._index_url(request, query)
        return response

    async def dead_letters_fragment(self, request: Request) -> Response:
        dead = await self._dead_letters(request, strict=False)
        return self._html(request, "_dead_letters.html", {"dead": dead})

    async def schedules_fragment(self, request: Request) -> Response:
        return self._html(request, "_schedules.html", {"periodic": await self._schedules()})

    def _index_url(self, request: Request, query: _HistoryQuery) -> str:
        params = query.params()
        base = self.url(request, "index")
        return f"{base}?{urlencode(params)}" if params else base

    async def _task_context(self, task_id: str) -> tuple[dict[str, Any], int]:
        client = self.client()
        try:
            info = await client.status(task_id, include_payloads=True)
        except TaskNotFoundError:
            return {"task": None, "task_id": task_id, "unreachable": None}, 404
        except TransportError as exc:
            return {
                "task": None,
                "task_id": task_id,
                "unreachable": self._unreachable(client, exc),
            }, 503
        return {"task": task_detail_view(info), "task_id": task_id, "unreachable": None}, 200

    async def task_page(self, request: Request) -> Response:
        context, status = await self._task_context(request.path_params["task_id"])
        return self._html(request, "task.html", context, status)

    async def task_fragment(self, request: Request) -> Response:
        context, _status = await self._task_context(request.path_params["task_id"])
        return self._html(request, "_task.html", {**context, "oob": True})

    async def api_overview(self, request: Request) -> Response:
        overview, unreachable = await self._overview()
        if unreachable is not None:
            return self._unreachable_json(unreachable)
        assert overview is not None
        now = time.time()
        return self._json(
            {
                **overview,
                "throughput": self.sampler.summary(now),
                "series": self.sampler.series(now),
            }
        )

    async def api_history(self, request: Request) -> Response:
        query = self._history_query(request, strict=True)
        page = await self._history(query)
        if page["unreachable"] is not None:
            return self._unreachable_json(page["unreachable"])
        return self._json(
            {
                "offset": query.offset,
                "limit": query.limit,
                "total": page["total"],
                "tasks": page["tasks"],
            }
        )

    async def api_dead_letters(self, request: Request) -> Response:
        dead = await self._dead_letters(request, strict=True)
        if dead["unreachable"] is not None:
            return self._unreachable_json(dead["unreachable"])
        if dead["unsupported"]:
            return self._unsupported_json(dead_letters.UNSUPPORTED)
        return self._json(dead["list"])

    async def api_schedules(self, request: Request) -> Response:
        periodic = await self._schedules()
        if periodic["unreachable"] is not None:
            return self._unreachable_json(periodic["unreachable"])
        if periodic["unsupported"]:
            return self._unsupported_json(schedules.UNSUPPORTED)
        return self._json(periodic["list"])

    async def api_task(self, request: Request) -> Response:
        context, status = await self._task_context(request.path_params["task_id"])
        if status == 503:
            return self._unreachable_json(context["unreachable"])
        if status == 404:
            return self._json(
                {"error": "task_not_found", "message": f"no task {context['task_id']}"}, 404
            )
        task = dict(context["task"])
        for key in ("args_text", "kwargs_text", "value_text"):
            task.pop(key, None)
        return self._json(task)

    async def metrics(self, request: Request) -> Response:
        client = self.client()
        try:
            text = await prometheus.scrape(client)
        except UnsupportedFeatureError:
            return self._unsupported_json(prometheus.UNSUPPORTED)
        except TransportError as exc:
            return self._unreachable_json(self._unreachable(client, exc))
        return Response(text, media_type=prometheus.CONTENT_TYPE)

    def _unsupported_json(self, message: str) -> Response:
        return self._json({"error": "unsupported_feature", "message": message}, 501)

    def _unreachable_json(self, unreachable: dict[str, Any]) -> Response:
        return self._json(
            {
                "error": "control_plane_unreachable",
                "message": f"control plane unreachable at {unreachable['address']}",
                "address": unreachable["address"],
                "detail": unreachable["detail"],
            },
            503,
        )

    async def healthz(self, request: Request) -> Response:
        """200 when the control plane answers one request within :data:`HEALTH_TIMEOUT`,
        else 503 with the kind of failure; the detail (its address, the error) only for
        a request that passes the access guard."""
        client = self.client()
        try:
            await asyncio.wait_for(client.overview(), HEALTH_TIMEOUT)
        except (FastworkerError, asyncio.TimeoutError) as exc:
            if isinstance(exc, RejectedError):
                reason, detail = "control plane refused the dashboard", str(exc)
            elif isinstance(exc, TransportError):
                reason = "control plane unreachable"
                detail = self._unreachable(client, exc)["detail"]
            elif isinstance(exc, FastworkerError):
                reason, detail = "control plane error", str(exc)
            else:
                reason = "control plane unreachable"
                detail = f"no answer within {HEALTH_TIMEOUT} s"
            body = {"status": "unavailable", "control_plane": "down", "reason": reason}
            if self.access.allows(request):
                body.update(address=client.address, detail=detail)
            return self._json(body, 503, {"Cache-Control": "no-store"})
        return self._json(
            {"status": "ok", "control_plane": "ok"}, 200, {"Cache-Control": "no-store"}
        )

    async def static(self, request: Request) -> Response:
        entry = _STATIC.get(request.path_params["filename"])
        if entry is None:
            return Response("not found", status_code=404, media_type="text/plain")
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable",
            "ETag": f'"{entry.digest}"',
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return Response(entry.data, media_type=entry.media_type, headers=headers)

    # --- actions --------------------------------------------------------------------------

    def _refuse(self, request: Request) -> Response | None:
        why = self.csrf.check(request)
        if why is None:
            return None
        log.warning("refused %s %s: %s", request.method, request.url.path, why)
        return self._json({"error": "forbidden", "message": why}, 403)

    async def cancel(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        task_id: str = request.path_params["task_id"]
        client = self.client()
        try:
            reply = await client.cancel(task_id)
        except TransportError as exc:
            return self._action_unreachable(request, client, exc)
        link = self.url(request, "task", task_id=task_id)
        if task_id in reply.cancelled:
            outcome, status, kind = "cancelled", 200, "ok"
            message = f"Cancelled task {short_id(task_id)}."
        elif task_id in reply.stopping:
            outcome, status, kind = "stopping", 202, "ok"
            message = f"Task {short_id(task_id)} is running: its worker was asked to stop it."
        elif task_id in reply.not_cancelled:
            outcome, status, kind = "not_cancelled", 409, "warn"
            message = (
                f"Task {short_id(task_id)} was not cancelled: it has finished, or runs on a "
                "worker that cannot stop it."
            )
        else:
            outcome, status, kind = "unknown", 404, "error"
            message = f"The control plane knows no task {short_id(task_id)}."
        if _is_htmx(request):
            return self._toast(request, kind, message, link=link, link_text="details")
        return self._json({"task_id": task_id, "outcome": outcome, "message": message}, status)

    async def retry(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        task_id: str = request.path_params["task_id"]
        client = self.client()
        try:
            info = await client.status(task_id, include_payloads=True)
        except TaskNotFoundError:
            return self._error(request, 404, "task_not_found", f"no task {task_id}")
        except TransportError as exc:
            return self._action_unreachable(request, client, exc)
        detail = task_detail_view(info)
        if not detail["can_retry"]:
            return self._error(
                request,
                409,
                "not_retryable",
                f"task {short_id(task_id)} is {info.status.value}: only failed or cancelled tasks "
                "can be retried",
            )
        args, kwargs = detail["args"], detail["kwargs"]
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            return self._error(
                request,
                422,
                "undecodable",
                f"the arguments of task {short_id(task_id)} are unreadable",
            )
        call = TaskCall(
            info.name,
            args=list(args),  # pyright: ignore[reportUnknownArgumentType]
            kwargs={str(k): v for k, v in kwargs.items()},  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            priority=info.priority,
            # One retry per task, however many clicks or tabs: the control plane answers
            # a second POST with the first retry's id.
            idempotency_key=f"{RETRY_KEY_PREFIX}{task_id}",
        )
        try:
            # delay_many, not delay: a task keyword named like one of delay's options
            # (priority, timeout, ...) must reach the task.
            (new_id,) = await client.delay_many([call])
        except TransportError as exc:
            return self._action_unreachable(request, client, exc)
        except RejectedError as exc:
            return self._error(request, 409, exc.remote_code, f"retry refused: {exc}")
        link = self.url(request, "task", task_id=new_id)
        if _is_htmx(request):
            return self._toast(
                request,
                "ok",
                f"Resubmitted {info.name} as {short_id(new_id)}.",
                link=link,
                link_text="open",
            )
        return self._json({"task_id": task_id, "new_task_id": new_id, "url": link})

    def _dead_letter_action(
        self, act: Callable[[DashboardSource, str | None], Awaitable[dead_letters.Outcome]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """The handler of a retry or purge of one dead letter (by ``task_id`` in the path)
        or of all (no ``task_id``)."""

        async def handler(request: Request) -> Response:
            refused = self._refuse(request)
            if refused is not None:
                return refused
            client = self.client()
            try:
                done = await act(client, request.path_params.get("task_id"))
            except TransportError as exc:
                return self._action_unreachable(request, client, exc)
            link = None
            if done.new_task_id is not None:
                link = self.url(request, "task", task_id=done.new_task_id)
            if _is_htmx(request):
                return self._toast(request, done.kind, done.message, link=link, link_text="open")
            url = {} if link is None else {"url": link}
            return self._json({**done.answer, **url, "message": done.message}, done.status)

        return handler

    def _action_unreachable(
        self, request: Request, client: DashboardSource, exc: Exception
    ) -> Response:
        message = f"control plane unreachable at {client.address}"
        if _is_htmx(request):
            return self._toast(request, "error", message + "; nothing was done")
        return self._json(
            {"error": "control_plane_unreachable", "message": message, "detail": str(exc)}, 503
        )


# --- public API --------------------------------------------------------------------------


def create_router(
    client: DashboardSource | Callable[[], DashboardSource], *, access_token: str | None = None
) -> APIRouter:
    """The dashboard as a router to mount in your own FastAPI app.

    ``client`` is a started :class:`~fastworker.client.Client`, or a function returning
    one (called on every request, so the client may be created later, e.g. in the app's
    lifespan). The router does not start or stop it. Mount it under any prefix::

        app.include_router(create_router(client), prefix="/fastworker")

    With ``access_token``, every view asks for it (``?token=`` once, which sets a cookie,
    or an ``Authorization: Bearer`` header) and answers 401 otherwise.
    """
    return _Dashboard(client, access_token).router


def create_app(
    control_plane_address: str | None = None,
    *,
    access_token: str | None = None,
    auth_token: str | None = None,
    tls: TLSOptions | None = None,
) -> FastAPI:
    """A standalone dashboard app whose lifespan starts and stops one client of the
    control plane at ``control_plane_address`` (default: ``$FASTWORKER_ADDRESS``, then
    ``tcp://127.0.0.1:5555``).

    ``access_token`` guards the dashboard itself (see :func:`create_router`);
    ``auth_token`` is the control plane's shared secret, which the client presents
    (default: ``$FASTWORKER_AUTH_TOKEN``); ``tls``, for a ``tls+tcp://`` control plane, the
    certificate authority to trust (default: ``$FASTWORKER_TLS_CA`` and its siblings). The
    app starts even when the control plane is not there yet: it shows that, and keeps
    trying to connect.
    """
    connection = _Connection(control_plane_address, auth_token, tls)
    dashboard = _Dashboard(
        lambda: connection.client,
        access_token,
        keep_sampling=True,
        connection_problem=lambda: connection.problem,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncGenerator[None, None]:
        keeper = asyncio.get_running_loop().create_task(
            connection.keep(dashboard.sampler), name="fastworker-dashboard-connection"
        )
        dashboard.sampler.touch()
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await dashboard.sampler.stop()
            await connection.client.stop()

    app = FastAPI(
        title="fastworker dashboard",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(dashboard.router)
    return app


class _Connection:
    """The standalone app's client, replaced by a fresh one when the control plane has
    not answered for :data:`FRESH_CONNECTION_AFTER` seconds: a client keeps what it could
    not send for a control plane that is away, and a new connection drops that backlog
    instead of replaying stale queries when the control plane returns."""

    def __init__(self, address: str | None, auth_token: str | None, tls: TLSOptions | None) -> None:
        self.address = address
        self.auth_token = auth_token
        self.tls = tls
        self.problem: str | None = None
        """Why the last attempt to connect failed, when it was not just silence."""
        self.client = self._new_client()

    def _new_client(self) -> Client:
        return Client(
            self.address,
            request_timeout=REQUEST_TIMEOUT,
            name=f"dashboard@{socket.gethostname()}:{os.getpid()}",
            auth_token=self.auth_token,
            tls=self.tls,
        )

    async def keep(self, sampler: Sampler) -> None:
        while True:
            if not await self._connect():
                return
            sampler.last_answer = time.monotonic()
            while True:  # a periodic check of the sampler's last answer
                await asyncio.sleep(1.0)
                if time.monotonic() - sampler.last_answer > FRESH_CONNECTION_AFTER:
                    break
            log.warning(
                "the control plane at %s has not answered for %.0f s; connecting afresh",
                self.client.address,
                FRESH_CONNECTION_AFTER,
            )
            old, self.client = self.client, self._new_client()
            await old.stop()

    async def _connect(self) -> bool:
        """Start the client, trying again until the control plane answers; False when
        the address itself is wrong."""
        client = self.client
        for attempt in itertools.count():
            try:
                await client.start()
            except TransportError as exc:
                if attempt == 0:
                    log.warning("control plane at %s not reachable yet: %s", client.address, exc)
                await asyncio.sleep(_RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)])
                continue
            except ConfigurationError as exc:
                self.problem = str(exc)
                log.error("the dashboard cannot connect to %r: %s", client.address, exc)
                return False
            except FastworkerError as exc:
                # Refused (a wrong shared secret) or another protocol version: say so on
                # the page and keep trying slowly, in case the control plane changes.
                if self.problem != str(exc):
                    log.error(
                        "the control plane at %s refused the dashboard: %s", client.address, exc
                    )
                self.problem = str(exc)
                await asyncio.sleep(_REFUSED_RETRY)
                continue
            self.problem = None
            if get_default_client() is client:  # pyright: ignore[reportUnnecessaryComparison]
                # Client.start makes the first client the process default for task
                # handles; the dashboard's client must not take that role in someone
                # else's process.
                set_default_client(None)
            log.info("connected to the control plane at %s", client.address)
            return True
        return False  # pragma: no cover - the loop only ends by returning
