"""The core's records of tasks and subworkers: plain data, no I/O."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from msgspec import Raw

from fastworker.protocol import FastworkerError, TaskPriority, TaskStatus, WorkerState
from fastworker.protocol import messages as m

from .metrics import NameMetrics

__all__ = [
    "LOCAL_WORKER_ID",
    "Connection",
    "TaskState",
    "WorkerRecord",
    "error_info",
    "failed_outcome",
]

LOCAL_WORKER_ID = "control-plane"


class Connection(Protocol):
    """What the core knows of a connection: its id and its peer's address."""

    @property
    def id(self) -> int: ...

    @property
    def address(self) -> str: ...

    @property
    def certificate(self) -> str:
        """The common name of the peer's verified TLS certificate; empty without one."""
        ...


@dataclasses.dataclass(eq=False)
class TaskState:
    """The control plane's record of one task. Times named ``*_at`` are wall-clock
    seconds (what users see); ``leased``, ``renewed`` and ``done`` are monotonic."""

    task_id: str
    name: str
    priority: TaskPriority
    args: Raw
    kwargs: Raw
    timeout: float | None
    queued_at: float
    idempotency_key: str | None = None
    status: TaskStatus = TaskStatus.QUEUED
    worker_id: str = ""
    """Who runs it (or ran it, once finished)."""
    last_holder: str = ""
    """Whose lease was taken back last: its late outcome still counts while the task
    waits to run again."""
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    """Dispatches that counted: a hand-back from a draining subworker does not."""
    order: int = 0
    """Place within its priority level (smaller first); what the journal restores."""
    outcome: m.TaskOutcome | None = None
    ready: float = 0.0
    """When it last joined the line (submitted, due, taken back, restored; monotonic):
    where its queue wait starts."""
    leased: float = 0.0
    renewed: float = 0.0
    """When the holder last said it runs this task (heartbeat), or when it was leased."""
    done: float = 0.0
    """When it finished, for the result cache's time to live."""
    watchers: set[int] = dataclasses.field(default_factory=set[int])
    """Connections to push the outcome to."""
    retry: m.RetryPolicy | None = None
    retries_used: int = 0
    """Failed attempts that were followed by another: ``attempts - retries_used`` of the
    attempts were lost with their worker, which ``--max-attempts`` bounds."""
    not_before: float | None = None
    """Wall-clock time a scheduled task becomes due (its ETA, or its next attempt)."""
    due: float | None = None
    """The same, monotonic, while the task waits in the timers; None otherwise."""
    last_error: m.ErrorInfo | None = None
    """Why its last attempt failed, while it waits for the next."""
    dead: int = 0
    """Its place in the dead-letter list (larger is newer); 0 when not in it."""
    retry_of: str = ""
    """The dead letter it was submitted again for."""
    schedule: str = ""
    """The periodic task's schedule it is a run of."""
    fire_time: float | None = None
    """For a run of a schedule: the time it was due (Unix)."""
    metrics: NameMetrics | None = None
    """Its name's entry in the metrics, found once when the core learns of the task."""
    headers: dict[str, str] = dataclasses.field(default_factory=dict[str, str])
    """The submission's headers (trace context), passed on to every attempt."""

    @property
    def retries_left(self) -> bool:
        return self.retry is not None and self.retries_used < self.retry.retries

    @property
    def lost(self) -> int:
        """Attempts that ended with their worker lost, not with an outcome."""
        return self.attempts - self.retries_used

    def info(self, *, payloads: bool) -> m.TaskInfo:
        outcome = self.outcome
        return m.TaskInfo(
            task_id=self.task_id,
            name=self.name,
            priority=self.priority,
            status=self.status,
            queued_at=self.queued_at,
            worker_id=self.worker_id,
            started_at=self.started_at,
            finished_at=self.finished_at,
            attempts=self.attempts,
            error=self.last_error if outcome is None else outcome.error,
            args=self.args if payloads else m.NIL,
            kwargs=self.kwargs if payloads else m.NIL,
            value=outcome.value if payloads and outcome is not None else m.NIL,
            not_before=self.not_before if self.status is TaskStatus.SCHEDULED else None,
            retry_of=self.retry_of,
            schedule=self.schedule,
            fire_time=self.fire_time,
        )


@dataclasses.dataclass(eq=False)
class WorkerRecord:
    """A connected subworker, or the control plane's own local slot pool."""

    worker_id: str
    peer_id: int | None
    """The connection it speaks on; None for the local pool."""
    address: str
    slots: int
    task_names: frozenset[str]
    host: str
    pid: int
    connected_at: float
    last_heard: float
    """Monotonic time of its last frame: silence past the lease timeout loses it."""
    last_heartbeat: float
    """Wall-clock time of the same, for the admin view."""
    renews_leases: bool = False
    """It lists the tasks it runs in each heartbeat, so each lease has its own deadline."""
    cancels: bool = False
    """It stops a running task on ``StopTasks`` (``FEATURE_CANCEL``)."""
    state: WorkerState = WorkerState.CONNECTED
    assigned: set[str] = dataclasses.field(default_factory=set[str])
    tasks_done: int = 0
    tasks_failed: int = 0
    order: int = 0
    """Rank in the round-robin that breaks load ties."""
    prefetch: int = 0
    """Tasks it holds beyond its slots, waiting there to start (``--prefetch``)."""

    @property
    def free(self) -> int:
        """Tasks it may be given now: its slots and prefetch less what it holds."""
        if self.state is not WorkerState.CONNECTED:
            return 0
        return self.slots + self.prefetch - len(self.assigned)

    def info(self) -> m.WorkerInfo:
        return m.WorkerInfo(
            worker_id=self.worker_id,
            state=self.state,
            address=self.address,
            host=self.host,
            pid=self.pid,
            load=len(self.assigned),
            slots=self.slots,
            connected_at=self.connected_at,
            last_heartbeat=self.last_heartbeat,
            tasks_done=self.tasks_done,
            tasks_failed=self.tasks_failed,
            task_names=sorted(self.task_names),
            prefetch=self.prefetch,
        )


def error_info(exc: FastworkerError) -> m.ErrorInfo:
    """An error as it crosses the wire."""
    return m.ErrorInfo(code=exc.remote_code, message=exc.message)


def failed_outcome(task: TaskState, error: FastworkerError, wall: float) -> m.TaskOutcome:
    """The outcome of a task the control plane itself fails (its workers kept dying)."""
    return m.TaskOutcome(
        task_id=task.task_id,
        status=TaskStatus.FAILED,
        error=error_info(error),
        worker_id=task.worker_id,
        finished_at=wall,
    )
