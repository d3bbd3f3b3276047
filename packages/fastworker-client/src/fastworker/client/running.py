"""What a task can ask about its own run, from inside it: whether it was cancelled.

A running async task that is cancelled gets ``asyncio.CancelledError`` at its next
``await``. Python cannot interrupt a sync function, so a sync task that may run long
should look at :func:`is_cancelled` between steps and return early; whatever it returns
then, its outcome is ``cancelled``.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Protocol

__all__ = ["CancelFlag", "current_run", "enter_run", "is_cancelled", "leave_run"]


class CancelFlag(Protocol):
    """What the subworker's runner exposes of a run to the task's code."""

    @property
    def cancel_requested(self) -> bool: ...


_current: ContextVar[CancelFlag | None] = ContextVar("fastworker_current_run", default=None)


def is_cancelled() -> bool:
    """Whether the task running here was asked to stop. False outside a task (and when
    the task is called directly, in tests)."""
    run = _current.get()
    return run is not None and run.cancel_requested


def current_run() -> CancelFlag | None:
    """The run of the task whose code runs here, or None. The server's runs also carry
    ``assignment.task_id``, ``assignment.name`` and ``worker_id``, which
    :mod:`fastworker.client.logs` puts on every log line emitted during the run."""
    return _current.get()


def enter_run(run: CancelFlag) -> Token[CancelFlag | None]:
    """For the runner: what :func:`is_cancelled` reads while the task's code runs here
    (a thread, or an asyncio task's context). Undo with :func:`leave_run`."""
    return _current.set(run)


def leave_run(token: Token[CancelFlag | None]) -> None:
    _current.reset(token)
