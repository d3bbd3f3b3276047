"""The control plane's core: every state transition, with no sockets, threads or clocks."""

from .core import Connection, ControlPlaneCore
from .records import LOCAL_WORKER_ID, TaskState, WorkerRecord, error_info

__all__ = [
    "LOCAL_WORKER_ID",
    "Connection",
    "ControlPlaneCore",
    "TaskState",
    "WorkerRecord",
    "error_info",
]
