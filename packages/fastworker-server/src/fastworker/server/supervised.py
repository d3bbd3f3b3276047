"""A subworker's side of supervision: when to recycle itself (``--max-tasks-per-child``,
``--max-memory-per-child``), and the socket its supervisor (``--processes N``) gave it,
to say it is up and to notice the supervisor is gone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import sys
from collections.abc import Callable

from fastworker.client.config import ExitCode

__all__ = [
    "EXIT_RECYCLE",
    "SUPERVISOR_FD_ENV",
    "RecycleLimits",
    "SupervisorLink",
    "rss_bytes",
    "take_supervisor_fd",
]

EXIT_RECYCLE = ExitCode.RECYCLE
"""A subworker's exit code after it drained past a recycle limit: start me again."""

SUPERVISOR_FD_ENV = "FASTWORKER_SUPERVISOR_FD"
"""The environment variable that names a supervised child's end of its socket pair."""

_READY = b"r"
_MIB = 1024 * 1024


def rss_bytes() -> int:
    """This process's resident memory. Where there is no /proc, the peak resident size
    instead: the closest the standard library offers."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere


@dataclasses.dataclass(frozen=True)
class RecycleLimits:
    """When a subworker should drain and exit to be started afresh."""

    max_tasks: int | None = None
    max_memory_mb: int | None = None
    """Resident memory in MiB, checked after each task."""

    @property
    def any(self) -> bool:
        return self.max_tasks is not None or self.max_memory_mb is not None

    def reached(self, tasks_done: int, rss: Callable[[], int] = rss_bytes) -> str | None:
        """Why the subworker should recycle now, or None."""
        if self.max_tasks is not None and tasks_done >= self.max_tasks:
            return f"{tasks_done} tasks done (--max-tasks-per-child {self.max_tasks})"
        if self.max_memory_mb is not None:
            resident = rss()
            if resident > self.max_memory_mb * _MIB:
                return (
                    f"{resident / _MIB:.0f} MiB resident "
                    f"(--max-memory-per-child {self.max_memory_mb})"
                )
        return None


def take_supervisor_fd() -> int | None:
    """The socket a supervisor passed this process, taken out of the environment so that
    processes a task starts do not mistake another descriptor for it."""
    raw = os.environ.pop(SUPERVISOR_FD_ENV, None)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


class SupervisorLink:
    """A supervised child's end of the socket pair: one byte out each time the control
    plane welcomes it; end of file in when the supervisor is gone (even killed)."""

    def __init__(
        self, fd: int, loop: asyncio.AbstractEventLoop, on_gone: Callable[[], None]
    ) -> None:
        self._socket = socket.socket(fileno=fd)
        self._socket.setblocking(False)
        self._socket.set_inheritable(False)
        self._loop = loop
        self._on_gone = on_gone
        loop.add_reader(self._socket, self._readable)

    def ready(self) -> None:
        # The supervisor reads every byte: one this small cannot block.
        with contextlib.suppress(OSError):
            self._socket.send(_READY)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._socket)
        self._socket.close()

    def _readable(self) -> None:
        try:
            data = self._socket.recv(16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self._socket)
            self._on_gone()
