"""FastAPI integration: one line wires a fastworker client into an app.

::

    from fastapi import FastAPI
    from fastworker.client.fastapi import FastWorker

    app = FastAPI()
    fw = FastWorker(app)  # started and stopped with the app's lifespan
    app.include_router(fw.task_routes())  # GET /tasks/{id}, /tasks/{id}/result, /tasks/{id}/events


    @app.post("/orders/{order_id}/charge", status_code=202)
    async def charge(order_id: int, request: Request):
        task_id = await fw.delay("charge_card", order_id, priority="critical")
        return fw.accepted(request, task_id)

fastapi is imported here and only here: ``import fastworker.client`` never pulls it in.
Install it with ``pip install "fastworker-client[fastapi]"``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

import msgspec
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from fastworker.protocol import (
    DEFAULT_REQUEST_TIMEOUT,
    ConfigurationError,
    FastworkerError,
    ResultTimeoutError,
    TaskNotFoundError,
    TaskPriority,
    TransportError,
)
from fastworker.protocol import messages as m

from .client import Client, CompletionCallback, TaskCall
from .results import TaskResult
from .tls import TLSOptions

__all__ = ["FastWorker", "get_client", "get_fastworker"]

MAX_RESULT_WAIT = 60.0
"""Longest a result or events route holds a request open (seconds)."""


class FastWorker:
    """A fastworker client bound to a FastAPI app's lifespan.

    ``FastWorker(app)`` starts the client when the app starts and stops it when the app
    shuts down, around whatever lifespan (or startup and shutdown handlers) the app
    already has. Every client call is available on it (``await fw.delay(...)``); the
    client itself is ``fw.client``.
    """

    def __init__(
        self,
        app: FastAPI | None = None,
        *,
        address: str | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        auth_token: str | None = None,
        tls: TLSOptions | None = None,
        client: Client | None = None,
    ) -> None:
        self.client = client or Client(
            address, request_timeout=request_timeout, auth_token=auth_token, tls=tls
        )
        self._routes_prefix = "/tasks"
        if app is not None:
            self.init_app(app)

    def init_app(self, app: FastAPI) -> None:
        """Chain the client's start and stop into ``app``'s lifespan."""
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app_: Any) -> AsyncGenerator[Any, None]:
            await self.client.start()
            try:
                async with inner(app_) as state:
                    yield state
            finally:
                await self.client.stop()

        app.router.lifespan_context = lifespan
        app.state.fastworker = self

    # --- the client's calls ---------------------------------------------------------------

    async def delay(
        self,
        name: str,
        /,
        *args: Any,
        priority: TaskPriority | str | None = None,
        timeout: float | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        on_complete: CompletionCallback | None = None,
        **kwargs: Any,
    ) -> str:
        """Submit a task; see :meth:`Client.delay`."""
        return await self.client.delay(
            name,
            *args,
            priority=priority,
            timeout=timeout,
            task_id=task_id,
            idempotency_key=idempotency_key,
            on_complete=on_complete,
            **kwargs,
        )

    async def delay_many(self, calls: Iterable[TaskCall]) -> list[str]:
        """Submit a batch; see :meth:`Client.delay_many`."""
        return await self.client.delay_many(calls)

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for a task's value; see :meth:`Client.result`."""
        return await self.client.result(task_id, timeout=timeout)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskResult:
        """Wait for a task's outcome without raising its error; see :meth:`Client.wait`."""
        return await self.client.wait(task_id, timeout=timeout)

    async def cancel(self, *task_ids: str) -> m.CancelReply:
        """Cancel queued tasks; see :meth:`Client.cancel`."""
        return await self.client.cancel(*task_ids)

    async def status(self, task_id: str) -> m.TaskInfo:
        """A task's record; see :meth:`Client.status`."""
        return await self.client.status(task_id)

    # --- helpers for web endpoints --------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Whether the control plane answers, and how many subworkers are connected. Never
        raises: an unreachable control plane is reported, not thrown."""
        try:
            overview = await self.client.overview()
        except FastworkerError as exc:
            return {"ok": False, "control_plane": "unreachable", "error": str(exc)}
        connected = [w for w in overview.workers if w.state is m.WorkerState.CONNECTED]
        return {
            "ok": True,
            "control_plane": "reachable",
            "subworkers": sum(1 for w in connected if w.address != "local"),
            "queued": overview.queue_depth.total,
            "running": overview.counters.running,
        }

    def accepted(self, request: Request, task_id: str) -> _JSONResponse:
        """The 202 answer for "submitted, come back for the result": the task id, where to
        watch it, and a Location header pointing at its status."""
        status_url = str(request.url_for("fastworker_task_status", task_id=task_id))
        body = {
            "task_id": task_id,
            "status_url": status_url,
            "result_url": str(request.url_for("fastworker_task_result", task_id=task_id)),
            "events_url": str(request.url_for("fastworker_task_events", task_id=task_id)),
        }
        return _JSONResponse(body, status_code=202, headers={"Location": status_url})

    def task_routes(self, prefix: str = "/tasks") -> APIRouter:
        """Routes to follow a task from a browser or script:

        - ``GET {prefix}/{task_id}``: its record as JSON.
        - ``GET {prefix}/{task_id}/result?wait=S``: long poll, holding the request up to
          ``S`` seconds (at most 60); 200 with the outcome, or 202 while it runs.
        - ``GET {prefix}/{task_id}/events``: server-sent events, one ``status`` event per
          change and a final ``result`` event.
        """
        router = APIRouter(prefix=prefix)
        router.add_api_route(
            "/{task_id}", self._status_route, methods=["GET"], name="fastworker_task_status"
        )
        router.add_api_route(
            "/{task_id}/result", self._result_route, methods=["GET"], name="fastworker_task_result"
        )
        router.add_api_route(
            "/{task_id}/events", self._events_route, methods=["GET"], name="fastworker_task_events"
        )
        return router

    def mount_dashboard(
        self, app: FastAPI, prefix: str = "/fastworker", *, access_token: str | None = None
    ) -> None:
        """Serve the fastworker dashboard under ``prefix`` of ``app``, through this
        client. Needs the fastworker-dashboard package."""
        try:
            from fastworker.dashboard import create_router
        except ImportError as exc:
            raise ConfigurationError(
                "the dashboard needs the fastworker-dashboard package: "
                "pip install fastworker-dashboard"
            ) from exc
        app.include_router(create_router(self.client, access_token=access_token), prefix=prefix)

    async def _status_route(self, task_id: str) -> dict[str, Any]:
        return _task_json(await self._status_or_404(task_id))

    async def _result_route(self, task_id: str, wait: float = 0.0) -> _JSONResponse:
        await self._status_or_404(task_id)
        try:
            result = await self.client.wait(task_id, timeout=_bounded(wait))
        except ResultTimeoutError:
            return _JSONResponse({"task_id": task_id, "status": "pending"}, status_code=202)
        return _JSONResponse(_result_json(result))

    async def _events_route(self, task_id: str) -> StreamingResponse:
        await self._status_or_404(task_id)
        return StreamingResponse(self._events(task_id), media_type="text/event-stream")

    async def _events(self, task_id: str) -> AsyncIterator[str]:
        deadline = time.monotonic() + MAX_RESULT_WAIT
        last_status: str | None = None
        while time.monotonic() < deadline:
            info = await self.client.status(task_id)
            if info.status.value != last_status:
                last_status = info.status.value
                yield _event("status", {"task_id": task_id, "status": last_status})
            if info.status.is_final:
                result = await self.client.wait(task_id, timeout=MAX_RESULT_WAIT)
                yield _event("result", _result_json(result))
                return
            with contextlib.suppress(ResultTimeoutError):
                # Wake at once when it finishes, and at least every second for status.
                await self.client.wait(task_id, timeout=1.0)
        yield _event("timeout", {"task_id": task_id, "status": last_status})

    async def _status_or_404(self, task_id: str) -> m.TaskInfo:
        try:
            return await self.client.status(task_id)
        except TaskNotFoundError:
            raise HTTPException(status_code=404, detail=f"no task {task_id}") from None
        except TransportError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None


class _JSONResponse(Response):
    """JSON through msgspec, which carries what task results may hold (datetimes, UUIDs,
    bytes as base64) where the standard library's json would fail."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def get_fastworker(request: Request) -> FastWorker:
    """Dependency: the app's :class:`FastWorker` (``Depends(get_fastworker)``)."""
    fastworker: FastWorker | None = getattr(request.app.state, "fastworker", None)
    if fastworker is None:
        raise ConfigurationError("no FastWorker on this app: call FastWorker(app) at startup")
    return fastworker


def get_client(request: Request) -> Client:
    """Dependency: the app's started :class:`Client` (``Depends(get_client)``)."""
    return get_fastworker(request).client


def _bounded(wait: float) -> float:
    if not wait >= 0:  # also refuses NaN
        raise HTTPException(status_code=422, detail="wait must be a non-negative number of seconds")
    return min(wait, MAX_RESULT_WAIT)


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {msgspec.json.encode(data).decode()}\n\n"


def _task_json(info: m.TaskInfo) -> dict[str, Any]:
    return {
        "task_id": info.task_id,
        "name": info.name,
        "priority": info.priority.name.lower(),
        "status": info.status.value,
        "worker_id": info.worker_id or None,
        "queued_at": info.queued_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "attempts": info.attempts,
        "error": None
        if info.error is None
        else {"type": info.error.remote_type, "message": info.error.message},
    }


def _result_json(result: TaskResult) -> dict[str, Any]:
    body: dict[str, Any] = {"task_id": result.task_id, "status": result.status.value}
    if result.error is None:
        body["result"] = result.value
    else:
        body["error"] = {"code": result.error.remote_code, "message": str(result.error)}
    return body
