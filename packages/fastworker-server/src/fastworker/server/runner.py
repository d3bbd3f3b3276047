"""Running one leased task: decode its arguments, call the function, encode the outcome.

Shared by subworkers and by the control plane when it runs tasks itself. Async tasks run
on the event loop; sync tasks run whole (arguments, call, encoding) on a bounded set of
threads so they never block it. Outcomes go to a callback on the loop thread rather
than through a future per task: a subworker gathers them into one frame. A task past
its time limit is reported as TaskTimeoutError at once: an async task is cancelled; a
sync one cannot be interrupted by Python, so its thread finishes on its own and its late
value is discarded.
"""

from __future__ import annotations

import asyncio
import functools
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastworker.client.hooks import Hook, TaskRun, active_hooks, call_hooks
from fastworker.client.options import Retry, exception_name
from fastworker.client.running import enter_run, leave_run
from fastworker.client.tasks import Task, TaskRegistry
from fastworker.protocol import (
    MAX_PAYLOAD_BYTES,
    FastworkerError,
    FrameTooLargeError,
    InvalidArgumentsError,
    TaskCancelledError,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
    UnknownTaskError,
    decode_value,
    encode_value,
)
from fastworker.protocol.messages import ErrorInfo, TaskAssignment, TaskOutcome

from .threads import ThreadLane

__all__ = ["OutcomeCallback", "Run", "TaskRunner"]

_TRACEBACK_LIMIT = 32 * 1024


OutcomeCallback = Callable[[TaskOutcome], None]


class Run:
    """One task started by :meth:`TaskRunner.start`; its outcome reaches the callback
    once, unless the run is discarded first."""

    __slots__ = (
        "_on_done",
        "assignment",
        "async_task",
        "cancel_requested",
        "finished",
        "timer",
        "worker_id",
    )

    def __init__(
        self, assignment: TaskAssignment, on_done: OutcomeCallback, worker_id: str = ""
    ) -> None:
        self.assignment = assignment
        self.worker_id = worker_id
        self.finished = False
        self.cancel_requested = False
        """Set by :meth:`cancel`; the task's code reads it through ``is_cancelled()``."""
        self._on_done = on_done
        self.timer: asyncio.TimerHandle | None = None
        """Reports the time limit's outcome for a sync task, unless it finishes first."""
        self.async_task: asyncio.Task[Any] | None = None

    def discard(self) -> None:
        """Forget this run: no outcome is reported. An async task is cancelled; a sync
        one finishes on its thread (Python cannot interrupt it)."""
        self.finished = True
        self._stop_timer()
        if self.async_task is not None:
            self.async_task.cancel()

    def cancel(self) -> None:
        """Stop the task for a client that cancelled it: an async one gets
        ``CancelledError`` at its next await; a sync one cannot be interrupted, so it
        sees ``is_cancelled()`` and its outcome is ``cancelled`` whenever it returns."""
        if self.finished or self.cancel_requested:
            return
        self.cancel_requested = True
        if self.async_task is not None:
            self.async_task.cancel()

    def report(self, outcome: TaskOutcome) -> None:
        """Hand the outcome to the callback, if nothing has ended the run yet."""
        if self.finished:
            return  # timed out or discarded already: a late value is dropped
        self.finished = True
        self._stop_timer()
        if self.cancel_requested and outcome.status is not TaskStatus.CANCELLED:
            how = "a sync task is not interrupted: it ran until it returned"
            outcome = _stopped(outcome.task_id, outcome.worker_id, outcome.started_at, how)
        self._on_done(outcome)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class TaskRunner:
    """Runs assignments against a registry of tasks: async ones on the event loop, sync
    ones on a :class:`ThreadLane` of ``threads`` threads."""

    def __init__(
        self,
        registry: TaskRegistry,
        *,
        worker_id: str,
        threads: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.registry = registry
        self.worker_id = worker_id
        self._loop = loop
        self._threads: ThreadLane[TaskOutcome] = ThreadLane(
            loop, threads=threads, name=f"fastworker-{worker_id}"
        )

    @property
    def threads_busy(self) -> int:
        """Sync tasks still running in threads, including ones whose outcome is dropped."""
        return self._threads.running

    def close(self) -> None:
        """Start nothing more; running sync tasks finish in their threads."""
        self._threads.close()

    def start(self, assignment: TaskAssignment, on_done: OutcomeCallback) -> Run:
        """Start one task; ``on_done`` gets its outcome on the loop thread, never before
        this returns, whatever the task does (raising, running past its limit), unless
        the run is discarded."""
        run = Run(assignment, on_done, self.worker_id)
        started = time.time()
        task = self.registry.get(assignment.name)
        if task is None:
            error = UnknownTaskError(
                f"worker {self.worker_id} has no task named {assignment.name!r}"
            )
            # Reported on the next turn, like every outcome: the caller records the run
            # after start() returns.
            self._loop.call_soon(run.report, self._failed(assignment, started, _error_info(error)))
            return run
        limit = assignment.timeout if assignment.timeout is not None else task.timeout
        hooks = active_hooks()
        if task.is_async:
            run.async_task = self._loop.create_task(
                self._run_async(task, run, started, limit, hooks)
            )
            return run
        if limit is not None:
            run.timer = self._loop.call_later(limit, self._expire, run, started, limit)
        self._threads.submit(
            functools.partial(self._run_sync, task, run, started, hooks),
            run.report,
        )
        return run

    def _expire(self, run: Run, started: float, limit: float) -> None:
        """A sync task's time limit passed: report it now (built now, so the outcome
        says when it ended); the thread's late value will be dropped."""
        error = _error_info(_timed_out(run.assignment, limit))
        run.report(self._failed(run.assignment, started, error))

    def _run_sync(
        self, task: Task[..., object], run: Run, started: float, hooks: tuple[Hook, ...]
    ) -> TaskOutcome:
        """The whole of a sync task, on its thread: arguments, call, encoded value."""
        assignment = run.assignment
        token = enter_run(run)
        observed = self._before_run(hooks, assignment) if hooks else None
        outcome: TaskOutcome | None = None
        try:
            args, kwargs = _arguments(task, assignment)
            value = task.fn(*args, **kwargs)
            outcome = self._succeeded(assignment, started, value)
        except FastworkerError as exc:
            outcome = self._failed(assignment, started, _error_info(exc))
            if observed is not None:
                observed.exception = exc
        except Exception as exc:
            outcome = self._raised(assignment, started, exc)
            if observed is not None:
                observed.exception = exc
        finally:
            if observed is not None:
                _after_run(hooks, observed, outcome)
            leave_run(token)
        return outcome  # pyright: ignore[reportReturnType]  # set unless it raised

    def _before_run(self, hooks: tuple[Hook, ...], assignment: TaskAssignment) -> TaskRun:
        observed = TaskRun(
            assignment.name,
            assignment.task_id,
            assignment.priority,
            assignment.attempt,
            self.worker_id,
            assignment.headers,
        )
        call_hooks(hooks, "before_run", observed)
        return observed

    async def _run_async(
        self,
        task: Task[..., object],
        run: Run,
        started: float,
        limit: float | None,
        hooks: tuple[Hook, ...],
    ) -> None:
        assignment = run.assignment
        enter_run(run)  # this asyncio task's own context: nothing to reset
        if hooks:
            observed = self._before_run(hooks, assignment)
            outcome: TaskOutcome | None = None
            try:
                outcome = await self._call_async(task, run, started, limit, observed)
            finally:
                _after_run(hooks, observed, outcome)
            return
        await self._call_async(task, run, started, limit, None)

    async def _call_async(
        self,
        task: Task[..., object],
        run: Run,
        started: float,
        limit: float | None,
        observed: TaskRun | None,
    ) -> TaskOutcome:
        assignment = run.assignment
        try:
            args, kwargs = _arguments(task, assignment)
            call = cast("Awaitable[Any]", task.fn(*args, **kwargs))
            if limit is None:
                value = await call  # no wrapping task: this is every async task's hot path
            else:
                try:
                    value = await asyncio.wait_for(call, limit)
                except asyncio.TimeoutError:
                    raise _timed_out(assignment, limit) from None
            outcome = self._succeeded(assignment, started, value)
        except asyncio.CancelledError:
            if not run.cancel_requested:
                raise  # discarded (a drain, a stop): nothing is reported
            how = "an async task is interrupted at its next await"
            outcome = _stopped(assignment.task_id, self.worker_id, started, how)
        except FastworkerError as exc:
            outcome = self._failed(assignment, started, _error_info(exc))
            if observed is not None:
                observed.exception = exc
        except Exception as exc:
            outcome = self._raised(assignment, started, exc)
            if observed is not None:
                observed.exception = exc
        run.report(outcome)
        return outcome

    def _succeeded(self, assignment: TaskAssignment, started: float, value: object) -> TaskOutcome:
        encoded = encode_value(value)
        if len(encoded) > MAX_PAYLOAD_BYTES:
            raise FrameTooLargeError(
                f"the result of task {assignment.name!r} takes {len(encoded)} bytes "
                f"encoded; the limit is {MAX_PAYLOAD_BYTES}"
            )
        return TaskOutcome(
            task_id=assignment.task_id,
            status=TaskStatus.SUCCEEDED,
            value=encoded,
            worker_id=self.worker_id,
            started_at=started,
            finished_at=time.time(),
        )

    def _raised(self, assignment: TaskAssignment, started: float, exc: Exception) -> TaskOutcome:
        """The outcome of a task that raised: failed, and asking for another attempt when
        it raised ``Retry`` or an exception its retry policy names. Whether one is left,
        and when it runs, is the control plane's to decide."""
        if isinstance(exc, Retry):
            cause = exc.__cause__
            error = _raised(cause if isinstance(cause, Exception) else exc)
            outcome = self._failed(assignment, started, error)
            outcome.retry = True
            outcome.retry_delay = exc.delay(time.time())
            return outcome
        outcome = self._failed(assignment, started, _raised(exc))
        if assignment.retry_on and _matches(exc, assignment.retry_on):
            outcome.retry = True
        return outcome

    def _failed(self, assignment: TaskAssignment, started: float, error: ErrorInfo) -> TaskOutcome:
        return TaskOutcome(
            task_id=assignment.task_id,
            status=TaskStatus.FAILED,
            error=error,
            worker_id=self.worker_id,
            started_at=started,
            finished_at=time.time(),
        )


def _after_run(hooks: tuple[Hook, ...], observed: TaskRun, outcome: TaskOutcome | None) -> None:
    """The run hooks' end; without an outcome the run was stopped (a drain, a stop)."""
    if outcome is None:
        observed.status = TaskStatus.CANCELLED
    else:
        observed.status = outcome.status
        observed.retry = outcome.retry
    call_hooks(hooks, "after_run", observed)


def _arguments(
    task: Task[..., object], assignment: TaskAssignment
) -> tuple[list[Any], dict[str, Any]]:
    args = decode_value(assignment.args)
    kwargs = decode_value(assignment.kwargs)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidArgumentsError("arguments must be a list and keyword arguments a map")
    task.check_arguments(args, kwargs)  # pyright: ignore[reportUnknownArgumentType]
    return args, kwargs  # pyright: ignore[reportUnknownVariableType]


def _timed_out(assignment: TaskAssignment, limit: float) -> TaskTimeoutError:
    return TaskTimeoutError(f"task {assignment.name!r} ran past its time limit of {limit} s")


def _error_info(exc: FastworkerError) -> ErrorInfo:
    return ErrorInfo(code=exc.remote_code, message=exc.message[:_TRACEBACK_LIMIT])


def _stopped(task_id: str, worker_id: str, started: float | None, how: str) -> TaskOutcome:
    """The outcome of a run a client cancelled: ``cancelled``, saying how it stopped."""
    error = TaskCancelledError(f"task {task_id} was cancelled while it ran; {how}")
    return TaskOutcome(
        task_id=task_id,
        status=TaskStatus.CANCELLED,
        error=_error_info(error),
        worker_id=worker_id,
        started_at=started,
        finished_at=time.time(),
    )


def _matches(exc: BaseException, names: list[str]) -> bool:
    """Whether the exception is of one of the named classes, base classes included: a
    task module the control plane never imports is matched by name on the subworker."""
    wanted = set(names)
    return any(exception_name(cls) in wanted for cls in type(exc).__mro__)


def _raised(exc: BaseException) -> ErrorInfo:
    cls = type(exc)
    text = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    return ErrorInfo(
        code=TaskFailedError.code,
        message=str(exc)[:_TRACEBACK_LIMIT],
        remote_type=f"{cls.__module__}.{cls.__qualname__}"[:256],
        traceback=text[-_TRACEBACK_LIMIT:],
    )
