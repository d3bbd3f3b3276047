"""A stand-in for the dashboard's source of data (a Client in production) that answers
from what each test puts in it, and helpers of the dashboard's own tests."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
from fastapi import FastAPI

from fastworker.client import TaskCall
from fastworker.dashboard import DashboardSource, create_router
from fastworker.protocol import (
    RequestTimeoutError,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
    UnknownTaskError,
    WorkerState,
    encode_value,
)
from fastworker.protocol import messages as m

ORIGIN = "http://testserver"


class FakeSource:
    """A :class:`DashboardSource` that answers from what the test put in it: tasks added
    with :meth:`add`, workers with :meth:`add_worker`, and the queue depth, counters and
    task names set on it. ``down`` makes every call fail as an unreachable control plane."""

    def __init__(self) -> None:
        self.address = "ipc:///fake/control-plane.sock"
        self.tasks: dict[str, m.TaskInfo] = {}
        self.payloads: dict[str, tuple[Any, Any, Any]] = {}
        self.submitted: list[TaskCall] = []
        self.cancelled: list[str] = []
        self.history_queries: list[dict[str, Any]] = []
        self.down = False
        self.refuse_submissions = False
        self.control_plane_id = "cp-host:1234"
        self.started_at = time.time() - 3600
        self.depth = m.QueueDepth()
        self.counters = m.Counters()
        self.workers_stop_tasks = False
        """Whether a running task can be cancelled (its subworker has FEATURE_CANCEL)."""
        self.journal: tuple[str, str, int] = ("", "", 0)
        """(path, sync mode, bytes), as the overview reports them."""
        self.workers: list[m.WorkerInfo] = []
        self.task_names: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise RequestTimeoutError(f"the control plane at {self.address} did not answer")

    def add(
        self,
        name: str = "add",
        *,
        status: TaskStatus = TaskStatus.SUCCEEDED,
        priority: TaskPriority = TaskPriority.NORMAL,
        args: Any = (1, 2),
        kwargs: Any = None,
        value: Any = 3,
        error: m.ErrorInfo | None = None,
        task_id: str | None = None,
        not_before: float | None = None,
    ) -> str:
        task_id = task_id or uuid.uuid4().hex
        now = time.time()
        waiting = status in (TaskStatus.QUEUED, TaskStatus.SCHEDULED)
        started = None if waiting else now - 1
        finished = now - 0.5 if status.is_final and status is not TaskStatus.CANCELLED else None
        self.tasks[task_id] = m.TaskInfo(
            task_id=task_id,
            name=name,
            priority=priority,
            status=status,
            queued_at=now - 2 - len(self.tasks) * 0.001,
            worker_id="w1" if started else "",
            started_at=started,
            finished_at=finished,
            attempts=1 if started else 0,
            error=error,
            not_before=not_before,
        )
        self.payloads[task_id] = (list(args), dict(kwargs or {}), value)
        return task_id

    def add_worker(
        self,
        worker_id: str,
        *,
        state: WorkerState = WorkerState.CONNECTED,
        load: int = 0,
        slots: int = 1,
        heartbeat_ago: float = 0.3,
    ) -> None:
        now = time.time()
        self.workers.append(
            m.WorkerInfo(
                worker_id=worker_id,
                state=state,
                address=f"tcp://127.0.0.1:{40000 + len(self.workers)}",
                host="worker-host",
                pid=1000 + len(self.workers),
                load=load,
                slots=slots,
                connected_at=now - 100,
                last_heartbeat=now - heartbeat_ago,
            )
        )

    async def overview(self) -> m.Overview:
        self._check()
        return m.Overview(
            request_id=1,
            control_plane_id=self.control_plane_id,
            started_at=self.started_at,
            queue_depth=self.depth,
            counters=self.counters,
            workers=list(self.workers),
            task_names=list(self.task_names),
            library_version="0.1.0",
            journal=self.journal[0],
            journal_sync=self.journal[1],
            journal_bytes=self.journal[2],
        )

    async def history(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        status: TaskStatus | None = None,
        priority: TaskPriority | str | None = None,
        name: str | None = None,
    ) -> m.HistoryReply:
        self._check()
        self.history_queries.append(
            {"offset": offset, "limit": limit, "status": status, "priority": priority, "name": name}
        )
        matching = [
            t
            for t in sorted(self.tasks.values(), key=lambda t: t.queued_at, reverse=True)
            if (status is None or t.status is status)
            and (priority is None or t.priority is TaskPriority.parse(priority))
            and (name is None or t.name == name)
        ]
        return m.HistoryReply(
            request_id=1, total=len(matching), tasks=matching[offset : offset + limit]
        )

    async def status(self, task_id: str, *, include_payloads: bool = False) -> m.TaskInfo:
        self._check()
        info = self.tasks.get(task_id)
        if info is None:
            raise TaskNotFoundError(f"the control plane knows no task {task_id}")
        if not include_payloads:
            return info
        args, kwargs, value = self.payloads[task_id]
        return msgspec.structs.replace(
            info,
            args=encode_value(args),
            kwargs=encode_value(kwargs),
            value=encode_value(value) if info.status is TaskStatus.SUCCEEDED else m.NIL,
        )

    async def cancel(self, *task_ids: str) -> m.CancelReply:
        self._check()
        reply = m.CancelReply(request_id=1)
        for task_id in task_ids:
            info = self.tasks.get(task_id)
            if info is None:
                reply.unknown.append(task_id)
            elif info.status in (TaskStatus.QUEUED, TaskStatus.SCHEDULED):  # as the core
                self.cancelled.append(task_id)
                reply.cancelled.append(task_id)
            elif info.status is TaskStatus.RUNNING and self.workers_stop_tasks:
                reply.stopping.append(task_id)
            else:
                reply.not_cancelled.append(task_id)
        return reply

    async def delay_many(self, calls: Iterable[TaskCall]) -> list[str]:
        self._check()
        if self.refuse_submissions:
            raise UnknownTaskError("no connected worker can run it")
        calls = list(calls)
        self.submitted.extend(calls)
        return [uuid.uuid4().hex for _ in calls]


def make_app(fake: FakeSource, prefix: str = "", **options: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(create_router(fake, **options), prefix=prefix)
    return app


def csrf_token(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match is not None, "no CSRF token in the page"
    return match.group(1)


_FAKE_IS_A_SOURCE: type[DashboardSource] = FakeSource
"""The stand-in has the client's calls with the client's signatures (checked by pyright)."""
