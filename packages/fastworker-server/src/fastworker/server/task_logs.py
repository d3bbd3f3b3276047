"""The log line of a task that failed where it ran (a subworker, or the control plane
running it itself), with the fields ``--log-format json`` shows: ``task_id``,
``task_name``, ``worker_id`` and the task's traceback as ``exception``."""

from __future__ import annotations

from fastworker.client._limiter import LogLimiter
from fastworker.protocol import TaskStatus
from fastworker.protocol.messages import TaskAssignment, TaskOutcome

__all__ = ["FAILURE_LOG_INTERVAL", "log_failure", "task_fields"]

FAILURE_LOG_INTERVAL = 1.0
"""Seconds between two failure lines: a burst of failing tasks (or a peer sending
garbage assignments) must not flood the log; the next line says how many were held."""


def task_fields(task_id: str, task_name: str, worker_id: str = "") -> dict[str, str]:
    """The ``extra=`` of a log line about one task."""
    fields = {"task_id": task_id, "task_name": task_name}
    if worker_id:
        fields["worker_id"] = worker_id
    return fields


def log_failure(
    log: LogLimiter, assignment: TaskAssignment, outcome: TaskOutcome, now: float
) -> None:
    """A warning for a failed outcome (a task that raised, ran past its limit, or could
    not start), at most one per :data:`FAILURE_LOG_INTERVAL`; nothing for the others.
    One line in text: the traceback is for JSON readers and ``fastworker status``."""
    error = outcome.error
    if outcome.status is not TaskStatus.FAILED or error is None:
        return
    extra: dict[str, str] = task_fields(assignment.task_id, assignment.name, outcome.worker_id)
    if error.traceback:
        extra["exception"] = error.traceback
    log.log(
        now,
        "task %s %s failed%s: %s: %s",
        assignment.name,
        assignment.task_id,
        ", asking for a retry" if outcome.retry else "",
        error.remote_type or error.code,
        error.message,
        extra=extra,
    )
