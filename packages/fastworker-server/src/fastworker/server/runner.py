"""Running one leased task: decode its arguments, call the function, encode the outcome.

Shared by subworkers and by the control plane when it runs tasks itself. Async tasks run
on the event loop; sync tasks run in a bounded thread pool so they never block it. A
task past its time limit is reported as TaskTimeoutError at once: an async task is
cancelled; a sync one cannot be interrupted by Python, so its thread finishes on its own
and its late value is discarded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
import traceback
from collections.abc import Awaitable
from typing import Any, cast

from fastworker.client.tasks import TaskRegistry
from fastworker.protocol import (
    MAX_PAYLOAD_BYTES,
    FastworkerError,
    FrameTooLargeError,
    InvalidArgumentsError,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
    UnknownTaskError,
    decode_value,
    encode_value,
)
from fastworker.protocol.messages import ErrorInfo, TaskAssignment, TaskOutcome

__all__ = ["TaskRunner"]

_TRACEBACK_LIMIT = 32 * 1024


class TaskRunner:
    """Runs assignments against a registry of tasks."""

    def __init__(self, registry: TaskRegistry, *, worker_id: str, threads: int) -> None:
        self.registry = registry
        self.worker_id = worker_id
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"fastworker-{worker_id}"
        )
        # The pool's own futures: they finish when the thread does, unlike the asyncio
        # wrappers, which finish as soon as the caller stops waiting.
        self._in_threads: set[concurrent.futures.Future[Any]] = set()

    @property
    def threads_busy(self) -> int:
        """Sync tasks still running in threads, including ones whose caller gave up."""
        return len(self._in_threads)

    def close(self) -> None:
        """Stop the thread pool; running sync tasks finish in their threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, assignment: TaskAssignment) -> TaskOutcome:
        """Run one task to its outcome. Never raises for anything the task does."""
        started = time.time()
        try:
            value = await self._call(assignment)
            encoded = encode_value(value)
            if len(encoded) > MAX_PAYLOAD_BYTES:
                raise FrameTooLargeError(
                    f"the result of task {assignment.name!r} takes {len(encoded)} bytes "
                    f"encoded; the limit is {MAX_PAYLOAD_BYTES}"
                )
        except FastworkerError as exc:
            return self._failed(assignment, started, _error_info(exc))
        except Exception as exc:
            return self._failed(assignment, started, _raised(exc))
        return TaskOutcome(
            task_id=assignment.task_id,
            status=TaskStatus.SUCCEEDED,
            value=encoded,
            worker_id=self.worker_id,
            started_at=started,
            finished_at=time.time(),
        )

    async def _call(self, assignment: TaskAssignment) -> Any:
        task = self.registry.get(assignment.name)
        if task is None:
            raise UnknownTaskError(f"worker {self.worker_id} has no task named {assignment.name!r}")
        args = decode_value(assignment.args)
        kwargs = decode_value(assignment.kwargs)
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise InvalidArgumentsError("arguments must be a list and keyword arguments a map")
        task.check_arguments(args, kwargs)  # pyright: ignore[reportUnknownArgumentType]
        limit = assignment.timeout if assignment.timeout is not None else task.timeout
        call: Awaitable[Any]
        if task.is_async:
            call = cast("Awaitable[Any]", task.fn(*args, **kwargs))  # pyright: ignore[reportUnknownArgumentType]
        else:
            function = functools.partial(task.fn, *args, **kwargs)  # pyright: ignore[reportUnknownArgumentType]
            in_thread = self._pool.submit(function)
            self._in_threads.add(in_thread)
            in_thread.add_done_callback(self._in_threads.discard)
            call = asyncio.wrap_future(in_thread)
        if limit is None:
            return await call  # no wrapping task: this is every task's hot path
        try:
            return await asyncio.wait_for(call, limit)
        except asyncio.TimeoutError:
            raise TaskTimeoutError(
                f"task {assignment.name!r} ran past its time limit of {limit} s"
            ) from None

    def _failed(self, assignment: TaskAssignment, started: float, error: ErrorInfo) -> TaskOutcome:
        return TaskOutcome(
            task_id=assignment.task_id,
            status=TaskStatus.FAILED,
            error=error,
            worker_id=self.worker_id,
            started_at=started,
            finished_at=time.time(),
        )


def _error_info(exc: FastworkerError) -> ErrorInfo:
    return ErrorInfo(code=exc.remote_code, message=exc.message[:_TRACEBACK_LIMIT])


def _raised(exc: BaseException) -> ErrorInfo:
    cls = type(exc)
    text = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    return ErrorInfo(
        code=TaskFailedError.code,
        message=str(exc)[:_TRACEBACK_LIMIT],
        remote_type=f"{cls.__module__}.{cls.__qualname__}"[:256],
        traceback=text[-_TRACEBACK_LIMIT:],
    )
