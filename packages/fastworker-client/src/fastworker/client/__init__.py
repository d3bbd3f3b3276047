"""fastworker.client: what a web app installs to submit tasks and get their results.

It depends only on fastworker-protocol and pynng. The names a caller needs, the task
priorities and the errors it may catch, are importable from here.
"""

from __future__ import annotations

from fastworker.protocol import (
    AuthenticationError,
    ConnectionClosedError,
    ConnectionLimitError,
    FastworkerError,
    InvalidArgumentsError,
    LoopThreadError,
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
    UnsupportedFeatureError,
    UnsupportedValueError,
    WorkerLostError,
)

from ._version import FEATURES, __version__
from .client import Client, CompletionCallback, TaskCall
from .options import Retries, Retry
from .results import TaskResult
from .running import is_cancelled
from .schedules import Cron, Every, cron, every
from .sync import DEFAULT_RESULT_WAIT, SyncClient, SyncCompletionCallback
from .tasks import (
    Task,
    TaskRegistry,
    current_client,
    default_registry,
    get_default_client,
    set_default_client,
    task,
    use_client,
)
from .tls import TLSOptions

__all__ = [
    "DEFAULT_RESULT_WAIT",
    "FEATURES",
    "AuthenticationError",
    "Client",
    "CompletionCallback",
    "ConnectionClosedError",
    "ConnectionLimitError",
    "Cron",
    "Every",
    "FastworkerError",
    "InvalidArgumentsError",
    "LoopThreadError",
    "NotConnectedError",
    "QueueFullError",
    "RequestTimeoutError",
    "ResultTimeoutError",
    "Retries",
    "Retry",
    "SyncClient",
    "SyncCompletionCallback",
    "TLSOptions",
    "Task",
    "TaskCall",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskPriority",
    "TaskRegistry",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "UnknownTaskError",
    "UnsupportedFeatureError",
    "UnsupportedValueError",
    "WorkerLostError",
    "__version__",
    "cron",
    "current_client",
    "default_registry",
    "every",
    "get_default_client",
    "is_cancelled",
    "set_default_client",
    "task",
    "use_client",
]
