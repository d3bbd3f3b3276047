"""fastworker.client: what a web app installs to submit tasks and get their results.

It depends only on fastworker-protocol and pynng. The names a caller needs, the task
priorities and the errors it may catch, are importable from here.
"""

from __future__ import annotations

from fastworker.protocol import (
    ConnectionClosedError,
    FastworkerError,
    InvalidArgumentsError,
    NotConnectedError,
    QueueFullError,
    RequestTimeoutError,
    ResultTimeoutError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
    TaskTimeoutError,
    UnknownTaskError,
    UnsupportedValueError,
    WorkerLostError,
)

from ._version import __version__

__all__ = [
    "ConnectionClosedError",
    "FastworkerError",
    "InvalidArgumentsError",
    "NotConnectedError",
    "QueueFullError",
    "RequestTimeoutError",
    "ResultTimeoutError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskPriority",
    "TaskStatus",
    "TaskTimeoutError",
    "UnknownTaskError",
    "UnsupportedValueError",
    "WorkerLostError",
    "__version__",
]
