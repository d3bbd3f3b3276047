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
    UnsupportedFeatureError,
    WorkerState,
    encode_value,
)
from fastworker.protocol import messages as m

ORIGIN = "http://testserver"


class FakeSource:
    """A :class:`DashboardSource` that answers from what the test put in it: tasks added
    with :meth:`add`, workers with :meth:`add_worker`, and the queue depth, counters and
    task names set on it. ``down`` makes every call fail as an unreachable control plane.

    Its dead-letter list behaves like the control plane's: oldest first, bounded by
    ``dead_letter_bound`` (the oldest dropped and counted past it); a retry submits a new
    task naming the old one in ``retry_of`` and takes it off the list, a purge drops it.
    ``dead_letters_supported = False`` makes it an older control plane without the list.

    ``periodic`` is its list of schedules, as the control plane reports them (by name);
    ``schedules_supported = False`` makes it an older control plane without them, and
    ``metrics_supported = False`` one without metrics."""

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
        self.dead: list[str] = []
        """Ids in the dead-letter list, oldest first."""
        self.dead_letter_bound = 10_000
        self.dropped = 0
        self.dead_letters_supported = True
        self.retried_dead: dict[str, str] = {}
        """Every dead letter retried so far: {old id: new id}."""
        self.dead_letter_queries: list[tuple[int, int]] = []
        """(offset, limit) of each dead-letter page asked for."""
        self.periodic: list[m.ScheduleInfo] = []
        self.schedules_supported = True
        self.task_metrics: list[m.TaskMetrics] = []
        """What ``metrics()`` reports per task name (histograms over ``[0.1, 1.0]``)."""
        self.metrics_supported = True
        self.metrics_queries = 0

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
        retry_of: str = "",
        schedule: str = "",
        fire_time: float | None = None,
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
            retry_of=retry_of,
            schedule=schedule,
            fire_time=fire_time,
        )
        self.payloads[task_id] = (list(args), dict(kwargs or {}), value)
        return task_id

    def add_dead_letter(self, name: str = "fail", **options: Any) -> str:
        """A task that failed for good, in the dead-letter list (``options`` as for
        :meth:`add`)."""
        options.setdefault(
            "error", m.ErrorInfo(code="task_failed", message="boom", remote_type="ValueError")
        )
        task_id = self.add(name, status=TaskStatus.FAILED, **options)
        self.dead.append(task_id)
        if len(self.dead) > self.dead_letter_bound:
            del self.dead[0]
            self.dropped += 1
        return task_id

    def add_worker(
        self,
        worker_id: str,
        *,
        state: WorkerState = WorkerState.CONNECTED,
        load: int = 0,
        slots: int = 1,
        heartbeat_ago: float = 0.3,
        prefetch: int = 0,
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
                prefetch=prefetch,
                connected_at=now - 100,
                last_heartbeat=now - heartbeat_ago,
            )
        )

    async def overview(self) -> m.Overview:
        self._check()
        counters = self.counters
        if self.dead_letters_supported:
            counters = msgspec.structs.replace(counters, dead_letters=len(self.dead))
        return m.Overview(
            request_id=1,
            control_plane_id=self.control_plane_id,
            started_at=self.started_at,
            queue_depth=self.depth,
            counters=counters,
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

    def _check_dead_letters(self) -> None:
        self._check()
        if not self.dead_letters_supported:
            raise UnsupportedFeatureError(
                f"the control plane at {self.address} does not offer a dead-letter list "
                "('dead-letters' is not among its features: it runs an older release)"
            )

    async def dead_letters(self, *, offset: int = 0, limit: int = 50) -> m.DeadLettersReply:
        self._check_dead_letters()
        self.dead_letter_queries.append((offset, limit))
        page = self.dead[offset : offset + limit]
        return m.DeadLettersReply(
            request_id=1,
            total=len(self.dead),
            tasks=[self.tasks[task_id] for task_id in page],
            dropped=self.dropped,
        )

    async def retry_dead(self, *task_ids: str, all: bool = False) -> dict[str, str]:
        self._check_dead_letters()
        chosen = list(self.dead) if all else [t for t in task_ids if t in self.dead]
        if chosen and self.refuse_submissions:  # a batch is refused whole
            raise UnknownTaskError("no connected worker can run it")
        retried: dict[str, str] = {}
        for old in chosen:
            info = self.tasks[old]
            args, kwargs, _value = self.payloads[old]
            retried[old] = self.add(
                info.name,
                status=TaskStatus.QUEUED,
                priority=info.priority,
                args=args,
                kwargs=kwargs,
                retry_of=old,
            )
            self.dead.remove(old)
        self.retried_dead.update(retried)
        return retried

    async def purge_dead(self, *task_ids: str, all: bool = False) -> int:
        self._check_dead_letters()
        chosen = set(self.dead) if all else set(task_ids) & set(self.dead)
        self.dead = [t for t in self.dead if t not in chosen]
        return len(chosen)

    async def schedules(self) -> list[m.ScheduleInfo]:
        self._check()
        if not self.schedules_supported:
            raise UnsupportedFeatureError(
                f"this asks for periodic tasks, which the control plane at {self.address} "
                "does not offer ('schedules' is not among its features: it runs an older "
                "release)"
            )
        return sorted(self.periodic, key=lambda s: s.name)

    async def metrics(self) -> m.MetricsReply:
        self._check()
        if not self.metrics_supported:
            raise UnsupportedFeatureError(
                f"this asks for metrics, which the control plane at {self.address} does not "
                "offer ('metrics' is not among its features: it runs an older release)"
            )
        self.metrics_queries += 1
        return m.MetricsReply(
            request_id=0,
            buckets=[0.1, 1.0],
            tasks=self.task_metrics,
            queue_depth=self.depth,
            running=self.counters.running,
            scheduled=self.counters.scheduled,
            requeued=self.counters.requeued,
            dead_letters=len(self.dead),
            dead_letters_dropped=self.dropped,
            workers=[
                m.WorkerLoad(worker_id=w.worker_id, state=w.state, load=w.load, slots=w.slots)
                for w in self.workers
            ],
        )


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
