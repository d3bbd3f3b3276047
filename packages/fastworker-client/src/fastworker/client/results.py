"""What a caller gets back for a finished task."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastworker.protocol import (
    FastworkerError,
    TaskCancelledError,
    TaskStatus,
    decode_value,
    error_from_code,
)
from fastworker.protocol.messages import TaskOutcome

__all__ = ["TaskResult"]


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """A finished task: its value, or the error that ended it.

    Completion callbacks receive one of these; :meth:`get` returns the value or raises
    the error, as ``await client.result(task_id)`` does.
    """

    task_id: str
    status: TaskStatus
    value: Any = None
    error: FastworkerError | None = None
    worker_id: str = ""
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the task returned a value."""
        return self.status is TaskStatus.SUCCEEDED

    def get(self) -> Any:
        """The task's return value, or raise the error that ended it."""
        if self.error is not None:
            raise self.error
        return self.value

    @classmethod
    def from_outcome(cls, outcome: TaskOutcome) -> TaskResult:
        """Decode an outcome pushed by the control plane."""
        value: Any = None
        error: FastworkerError | None = None
        if outcome.status is TaskStatus.SUCCEEDED:
            value = decode_value(outcome.value)
        elif outcome.error is not None:
            info = outcome.error
            error = error_from_code(
                info.code,
                info.message,
                remote_type=info.remote_type,
                remote_traceback=info.traceback,
            )
        else:
            error = TaskCancelledError(f"task {outcome.task_id} was cancelled")
        return cls(
            task_id=outcome.task_id,
            status=outcome.status,
            value=value,
            error=error,
            worker_id=outcome.worker_id,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
        )
