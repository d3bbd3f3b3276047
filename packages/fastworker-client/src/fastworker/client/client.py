"""The asyncio client: one long-lived connection to a control plane, many requests in
flight on it, results pushed to it."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import inspect
import itertools
import logging
import math
import os
import secrets
import socket
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from fastworker.protocol import (
    DEFAULT_CONTROL_PLANE_ADDRESS,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RESULT_CACHE_SIZE,
    ENV_PREFIX,
    FEATURE_DEAD_LETTERS,
    FEATURE_DELAY,
    FEATURE_METRICS,
    FEATURE_RETRIES,
    FEATURE_SCHEDULES,
    MAX_IDS_PER_MESSAGE,
    MAX_MESSAGES_PER_FRAME,
    MAX_PAYLOAD_BYTES,
    ConfigurationError,
    FastworkerError,
    FrameTooLargeError,
    NotConnectedError,
    ProtocolError,
    RequestTimeoutError,
    ResultTimeoutError,
    TaskNotFoundError,
    TaskPriority,
    UnexpectedReplyError,
    UnsupportedFeatureError,
    encode_value,
    error_from_code,
    in_chunks,
)
from fastworker.protocol import messages as m

from ._transport import Dialer, closed_error
from ._version import __version__
from .hooks import Hook, Submission, active_hooks, call_hooks, check_headers, install_tracing
from .options import Retries, check_retry, check_start
from .results import TaskResult
from .tasks import Submitter, get_default_client, set_default_client
from .tls import TLSOptions, check_tls

__all__ = ["CompletionCallback", "TaskCall"]

log = logging.getLogger("fastworker.client")

CompletionCallback = Callable[[TaskResult], "Awaitable[None] | None"]
"""Called in the client with the finished task; may be sync or async."""

_Reply = TypeVar("_Reply", bound=m.Message)
_MAX_NAME: Final = 256
_MAX_ID: Final = 128


@dataclasses.dataclass(frozen=True)
class TaskCall:
    """One task of a batch for :meth:`Client.delay_many`."""

    name: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict[str, Any])
    priority: TaskPriority | str | None = None
    timeout: float | None = None
    idempotency_key: str | None = None
    """Submitting a key the control plane has seen returns the first task's id instead."""
    countdown: float | None = None
    """Seconds after its acceptance before the task may start."""
    eta: datetime.datetime | None = None
    """When the task may start; a datetime with a timezone."""
    retry: Retries | None = None
    """How the task is retried when it raises; ``None``: it fails at once."""


class Client:
    """An asyncio client of one control plane.

    ``address`` defaults to ``$FASTWORKER_ADDRESS``, then to the local default
    (``tcp://127.0.0.1:5555``); ``auth_token``, the control plane's shared secret if it
    has one, to ``$FASTWORKER_AUTH_TOKEN``; ``tls``, for a ``tls+tcp://`` address, to
    ``$FASTWORKER_TLS_CA`` and its siblings (:class:`~fastworker.client.TLSOptions`).
    Use it as ``async with Client() as client:`` or call
    :meth:`start` and :meth:`stop`. Every call has a bound: ``request_timeout`` seconds
    for the control plane to answer, and the ``timeout`` given to :meth:`result`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        result_cache_size: int = DEFAULT_RESULT_CACHE_SIZE,
        name: str | None = None,
        auth_token: str | None = None,
        tls: TLSOptions | None = None,
    ) -> None:
        self.address = (
            address or os.environ.get(f"{ENV_PREFIX}ADDRESS") or DEFAULT_CONTROL_PLANE_ADDRESS
        )
        self._tls = check_tls(self.address, tls)
        if request_timeout <= 0:
            raise ConfigurationError("request_timeout must be positive")
        self.request_timeout = request_timeout
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._auth_token = auth_token or os.environ.get(f"{ENV_PREFIX}AUTH_TOKEN") or ""
        self._result_cache_size = result_cache_size
        self._dialer: Dialer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._request_ids = itertools.count(1)
        self._requests: dict[int, tuple[type[m.Message], asyncio.Future[Any]]] = {}
        # Results pushed to us, kept (bounded, oldest out) until someone asks for them.
        self._results: collections.OrderedDict[str, TaskResult] = collections.OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[TaskResult]]] = {}
        self._callbacks: dict[str, list[CompletionCallback]] = {}
        # Ids whose outcome this connection will be pushed, and has not had yet.
        self._expected: set[str] = set()
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._deadlines: _Deadlines | None = None
        self.task_names: list[str] = []
        self.features: frozenset[str] = frozenset()
        """What the control plane announced it does beyond protocol 1.0
        (``fastworker.protocol.FEATURE_DELAY``, ``FEATURE_RETRIES``)."""
        """Tasks the control plane could run when the client connected."""

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and shake hands with the control plane.

        Raises:
            RequestTimeoutError: no control plane answered within ``request_timeout``.
            NotConnectedError: the connection could not be set up, and NNG's counters
                say why (a TLS handshake that failed, a peer that does not speak TLS).
            ProtocolVersionError: the control plane speaks another major version.
            ConfigurationError: TLS settings that cannot be used.
        """
        if self._dialer is not None:
            return
        from .config import TRACING  # its argparse is not worth importing with the client

        install_tracing(os.environ.get(TRACING.env) or TRACING.default)
        self._loop = asyncio.get_running_loop()
        self._deadlines = _Deadlines(self._loop)
        self._dialer = Dialer(
            self.address,
            loop=self._loop,
            on_message=self._on_message,
            on_bad_frame=self._fail_requests,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            tls=self._tls,
        )
        self._dialer.open()
        try:
            welcome = await self._hello()
        except BaseException:
            await self.stop()
            raise
        self.task_names = list(welcome.task_names)
        self.features = frozenset(welcome.features)
        if get_default_client() is None:
            # Client takes more keyword options than the Submitter protocol names; task
            # handles never pass those, so the narrower view is safe.
            set_default_client(
                cast("Submitter", self)
            )  # so `await my_task.delay(...)` finds this client

    async def _hello(self) -> m.Welcome:
        try:
            return await self._request(
                lambda rid: m.ClientHello(
                    request_id=rid,
                    client_name=self.name,
                    library_version=__version__,
                    auth_token=self._auth_token,
                ),
                m.Welcome,
            )
        except RequestTimeoutError as exc:
            # No answer: if the connection never came up, NNG's counters say why. A port
            # that refuses may be a control plane still starting: that stays a timeout.
            why = self._dialer.failures() if self._dialer is not None else None
            if why is None:
                raise
            if why.startswith("nothing listens"):
                raise RequestTimeoutError(f"{exc}: {why}") from exc
            raise NotConnectedError(f"could not connect: {why}") from exc

    async def stop(self) -> None:
        """Close the connection. Calls still waiting fail with NotConnectedError."""
        dialer, self._dialer = self._dialer, None
        if dialer is None:
            return
        dialer.close()
        self._fail_everything(NotConnectedError("the client was stopped"))
        if get_default_client() is cast("Submitter", self):
            set_default_client(None)

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- submitting -----------------------------------------------------------------------

    async def delay(
        self,
        name: str,
        /,
        *args: Any,
        priority: TaskPriority | str | None = None,
        timeout: float | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        on_complete: CompletionCallback | None = None,
        countdown: float | None = None,
        eta: datetime.datetime | None = None,
        retry: Retries | None = None,
        **kwargs: Any,
    ) -> str:
        """Submit one task and return its id as soon as the control plane has queued it.

        ``priority`` is a TaskPriority or its name (default NORMAL); ``timeout`` bounds
        the task's run time on the worker. ``countdown`` (seconds) or ``eta`` (a datetime
        with a timezone) holds the task in the control plane until then; ``retry`` says
        how it is retried when it raises. ``on_complete`` is called here, in this
        client, when the task finishes. Task keyword arguments named like these options
        must go through :meth:`delay_many`.

        Raises:
            ConfigurationError: an option out of range, or a naive ``eta``.
            UnsupportedFeatureError: a ``countdown``, ``eta`` or ``retry`` the control plane
                does not offer (it is older); nothing was sent.
            UnsupportedValueError: an argument the wire cannot carry.
            UnknownTaskError, InvalidArgumentsError, QueueFullError: refused by the control plane.
        """
        request = self._offered(
            _task_request(
                name,
                args,
                kwargs,
                priority,
                timeout,
                task_id,
                idempotency_key,
                countdown,
                eta,
                retry,
            )
        )
        hooks = active_hooks()
        submissions = _before_submit(hooks, [request]) if hooks else ()
        if on_complete is not None:
            self._callbacks.setdefault(request.task_id, []).append(on_complete)
        self._expected.add(request.task_id)
        try:
            accepted = await self._request(
                lambda rid: m.SubmitTask(request_id=rid, task=request), m.Accepted
            )
        except BaseException as exc:
            self._expected.discard(request.task_id)
            self._callbacks.pop(request.task_id, None)
            _after_submit(hooks, submissions, exc)
            raise
        _after_submit(hooks, submissions, None)
        (accepted_id,) = accepted.task_ids
        if accepted_id != request.task_id:  # an idempotency key matched an earlier task
            self._expected.discard(request.task_id)
            self._move_callbacks(request.task_id, accepted_id)
            await self._watch([accepted_id])
        return accepted_id

    async def delay_many(self, calls: Iterable[TaskCall]) -> list[str]:
        """Submit a batch in one request; all are queued or none is. Returns the ids in
        the order of ``calls``.

        Raises:
            ConfigurationError: more than ``MAX_MESSAGES_PER_FRAME`` (4,096) calls.
            FrameTooLargeError: the batch's arguments do not fit in one frame.
        """
        requests = [
            self._offered(
                _task_request(
                    c.name,
                    c.args,
                    c.kwargs,
                    c.priority,
                    c.timeout,
                    None,
                    c.idempotency_key,
                    c.countdown,
                    c.eta,
                    c.retry,
                )
            )
            for c in calls
        ]
        if not requests:
            return []
        # Checked here, not left to the control plane: it refuses a frame that breaks the
        # schema as a whole, which fails every request in flight on this connection.
        if len(requests) > MAX_MESSAGES_PER_FRAME:
            raise ConfigurationError(
                f"delay_many takes at most {MAX_MESSAGES_PER_FRAME} tasks per call, got "
                f"{len(requests)}; split the batch (it is then all-or-nothing per part)"
            )
        size = sum(len(r.args) + len(r.kwargs) for r in requests)
        if size > MAX_PAYLOAD_BYTES:
            raise FrameTooLargeError(
                f"the batch's arguments take {size} bytes encoded; one request carries at "
                f"most {MAX_PAYLOAD_BYTES}. Split the batch."
            )
        hooks = active_hooks()
        submissions = _before_submit(hooks, requests) if hooks else ()
        ids = [request.task_id for request in requests]
        self._expected.update(ids)
        try:
            accepted = await self._request(
                lambda rid: m.SubmitBatch(request_id=rid, tasks=requests), m.Accepted
            )
        except BaseException as exc:
            self._expected.difference_update(ids)
            _after_submit(hooks, submissions, exc)
            raise
        _after_submit(hooks, submissions, None)
        accepted_ids = list(accepted.task_ids)
        # A key that matched an earlier task returns that task's id, not ours; result()
        # watches that one when asked.
        self._expected.difference_update(set(ids) - set(accepted_ids))
        return accepted_ids

    def _offered(self, request: m.TaskRequest) -> m.TaskRequest:
        """The request, if the control plane offers what it asks for. An older one would
        run a delayed task at once and a retried one only once: refuse before sending."""
        if request.countdown is not None or request.eta is not None:
            self._check_offered(FEATURE_DELAY, f"task {request.name!r} asks for a countdown or eta")
        if request.retry is not None:
            self._check_offered(FEATURE_RETRIES, f"task {request.name!r} asks for retries")
        return request

    async def run(
        self,
        name: str,
        /,
        *args: Any,
        priority: TaskPriority | str | None = None,
        timeout: float | None = None,
        wait: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Submit a task and wait for its value; ``wait`` bounds the wait (None: wait as
        long as it runs)."""
        task_id = await self.delay(name, *args, priority=priority, timeout=timeout, **kwargs)
        return await self.result(task_id, timeout=wait)

    # --- results --------------------------------------------------------------------------

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for a task's return value. The control plane pushes it; nothing polls.

        Raises:
            TaskFailedError: the task raised (remote type, message and traceback attached).
            TaskTimeoutError, WorkerLostError, TaskCancelledError: how else it ended.
            ResultTimeoutError: ``timeout`` seconds passed first; the task goes on.
            TaskNotFoundError: the control plane does not know the id.
        """
        return (await self.wait(task_id, timeout=timeout)).get()

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskResult:
        """Like :meth:`result` but returns the :class:`TaskResult` instead of raising the
        task's error."""
        cached = self._results.get(task_id)
        if cached is not None:
            return cached
        future: asyncio.Future[TaskResult] = self._running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(future)
        try:
            if task_id not in self._expected:
                await self._watch([task_id])
            if timeout is not None:
                self._bound(future, timeout)
            return await future
        except _Expired:
            raise ResultTimeoutError(
                f"task {task_id} did not finish within {timeout} s; it goes on running"
            ) from None
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[task_id]

    def on_complete(self, task_id: str, callback: CompletionCallback) -> None:
        """Call ``callback`` here when the task finishes (at once if it has)."""
        cached = self._results.get(task_id)
        if cached is not None:
            self._run_callback(callback, cached)
            return
        self._callbacks.setdefault(task_id, []).append(callback)
        if task_id not in self._expected:
            self._running_loop().create_task(self._watch_quietly(task_id))

    async def _watch(self, task_ids: list[str]) -> None:
        unknown_ids: list[str] = []
        for chunk in in_chunks(task_ids, MAX_IDS_PER_MESSAGE):
            watching = await self._request(
                lambda rid, chunk=chunk: m.WatchResults(request_id=rid, task_ids=chunk),
                m.Watching,
            )
            self._expected.update(set(chunk) - set(watching.unknown))
            unknown_ids += watching.unknown
        for unknown in unknown_ids:
            self._finish(
                unknown,
                TaskResult(
                    task_id=unknown,
                    status=m.TaskStatus.FAILED,
                    error=TaskNotFoundError(f"the control plane knows no task {unknown}"),
                ),
            )

    async def _watch_quietly(self, task_id: str) -> None:
        try:
            await self._watch([task_id])
        except FastworkerError as exc:
            log.warning("cannot watch task %s for its callback: %s", task_id, exc)

    # --- queries --------------------------------------------------------------------------

    async def cancel(self, *task_ids: str) -> m.CancelReply:
        """Cancel tasks: queued and scheduled ones never run (``cancelled``); running ones
        are stopped by their subworkers (``stopping``): an async task at its next await,
        a sync one when it returns (it sees ``is_cancelled()``); either way its waiters
        get TaskCancelledError, whose message says which. Finished tasks, and tasks
        running on a subworker too old to stop them, are in ``not_cancelled``."""
        self._running_loop()  # not started: NotConnectedError, even with no ids
        reply = m.CancelReply(request_id=0)
        for chunk in in_chunks(list(task_ids), MAX_IDS_PER_MESSAGE):
            part = await self._request(
                lambda rid, chunk=chunk: m.CancelTasks(request_id=rid, task_ids=chunk),
                m.CancelReply,
            )
            reply.request_id = part.request_id
            reply.cancelled += part.cancelled
            reply.not_cancelled += part.not_cancelled
            reply.unknown += part.unknown
            reply.stopping += part.stopping
        return reply

    async def status(self, task_id: str, *, include_payloads: bool = False) -> m.TaskInfo:
        """The control plane's record of one task.

        Raises:
            TaskNotFoundError: never submitted, or forgotten.
        """
        reply = await self._request(
            lambda rid: m.StatusQuery(
                request_id=rid, task_ids=[task_id], include_payloads=include_payloads
            ),
            m.StatusReply,
        )
        if not reply.tasks:
            raise TaskNotFoundError(f"the control plane knows no task {task_id}")
        return reply.tasks[0]

    async def overview(self) -> m.Overview:
        """Queue depth per priority, subworkers, registered tasks and counters."""
        return await self._request(lambda rid: m.OverviewQuery(request_id=rid), m.Overview)

    async def history(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        status: m.TaskStatus | None = None,
        priority: TaskPriority | str | None = None,
        name: str | None = None,
    ) -> m.HistoryReply:
        """A page of recent tasks, newest first, optionally filtered."""
        level = None if priority is None else TaskPriority.parse(priority)
        return await self._request(
            lambda rid: m.HistoryQuery(
                request_id=rid, offset=offset, limit=limit, status=status, priority=level, name=name
            ),
            m.HistoryReply,
        )

    # --- dead letters ---------------------------------------------------------------------

    async def dead_letters(self, *, offset: int = 0, limit: int = 50) -> m.DeadLettersReply:
        """A page of the dead-letter list (tasks that failed for good), oldest first, with
        the list's length and how many were dropped past its bound.

        Raises:
            UnsupportedFeatureError: the control plane keeps no dead letters (older).
        """
        self._needs(FEATURE_DEAD_LETTERS, "a dead-letter list")
        return await self._request(
            lambda rid: m.DeadLettersQuery(request_id=rid, offset=offset, limit=limit),
            m.DeadLettersReply,
        )

    async def retry_dead(self, *task_ids: str, all: bool = False) -> dict[str, str]:
        """Submit dead letters again, each as a new task (whose ``retry_of`` names the old
        one), and take them off the list. Returns ``{old id: new id}``; ids not in the
        list are left out. ``all=True`` retries every dead letter, in as many requests as
        it takes.

        Raises:
            UnsupportedFeatureError: the control plane keeps no dead letters (older).
            UnknownTaskError, QueueFullError: refused by the control plane; nothing of that
                request was submitted.
        """
        self._needs(FEATURE_DEAD_LETTERS, "a dead-letter list")
        retried: dict[str, str] = {}
        chunks: list[list[str]] = (
            [[]] if all else list(in_chunks(list(task_ids), MAX_IDS_PER_MESSAGE))
        )
        for chunk in chunks:
            rounds: int | None = None
            while True:
                reply = await self._request(
                    lambda rid, chunk=chunk: m.RetryDead(request_id=rid, task_ids=chunk, all=all),
                    m.RetriedDead,
                )
                retried.update(zip(reply.task_ids, reply.new_ids, strict=True))
                if rounds is None:
                    # What was there at the start: tasks that fail again at once rejoin
                    # the list while this runs, and are not chased for ever.
                    rounds = -(-reply.remaining // MAX_IDS_PER_MESSAGE)
                if not (all and reply.remaining and reply.task_ids and rounds > 0):
                    break
                rounds -= 1
        return retried

    async def purge_dead(self, *task_ids: str, all: bool = False) -> int:
        """Drop dead letters (``all=True``: every one); returns how many were dropped.

        Raises:
            UnsupportedFeatureError: the control plane keeps no dead letters (older).
        """
        self._needs(FEATURE_DEAD_LETTERS, "a dead-letter list")
        purged = 0
        chunks: list[list[str]] = (
            [[]] if all else list(in_chunks(list(task_ids), MAX_IDS_PER_MESSAGE))
        )
        for chunk in chunks:
            reply = await self._request(
                lambda rid, chunk=chunk: m.PurgeDead(request_id=rid, task_ids=chunk, all=all),
                m.PurgedDead,
            )
            purged += reply.purged
        return purged

    async def schedules(self) -> list[m.ScheduleInfo]:
        """The control plane's periodic tasks, by name: each one's schedule, next and
        last fire time, and the runs fired and skipped since it started.

        Raises:
            UnsupportedFeatureError: the control plane fires no periodic tasks (older).
        """
        self._needs(FEATURE_SCHEDULES, "periodic tasks")
        reply = await self._request(lambda rid: m.SchedulesQuery(request_id=rid), m.SchedulesReply)
        return reply.schedules

    async def metrics(self) -> m.MetricsReply:
        """The control plane's counters and duration histograms per task name since it
        started, and its gauges now (queue depth, subworkers' load, dead letters), for
        monitoring; :mod:`fastworker.client.prometheus` turns them into Prometheus
        metrics.

        Raises:
            UnsupportedFeatureError: the control plane keeps no metrics (older).
            ProtocolError: a histogram whose counts do not match the reply's buckets.
        """
        self._needs(FEATURE_METRICS, "metrics")
        reply = await self._request(lambda rid: m.MetricsQuery(request_id=rid), m.MetricsReply)
        _check_buckets(reply)
        return reply

    def _needs(self, feature: str, what: str) -> None:
        self._running_loop()  # not started: NotConnectedError first
        self._check_offered(feature, f"this asks for {what}")

    def _check_offered(self, feature: str, asking: str) -> None:
        """Refuse, with UnsupportedFeatureError, what the control plane did not announce."""
        if feature not in self.features:
            raise UnsupportedFeatureError(
                f"{asking}, which the control plane at {self.address} does not offer "
                f"({feature!r} is not among its features: it runs an older release); "
                "upgrade it, or do without"
            )

    # --- plumbing -------------------------------------------------------------------------

    def _bound(self, future: asyncio.Future[Any], timeout: float) -> None:
        """Fail ``future`` with _Expired if it is not done within ``timeout`` seconds.
        (Callers await the future themselves: a coroutine in between would cost a frame
        on every wake-up of the hot path.)"""
        if self._deadlines is None:
            raise NotConnectedError("the client is not started; use `async with Client()`")
        self._deadlines.add(future, timeout)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._dialer is None or self._loop is None:
            raise NotConnectedError("the client is not started; use `async with Client()`")
        return self._loop

    async def _request(
        self,
        build: Callable[[int], m.Message],
        expected: type[_Reply],
        *,
        timeout: float | None = None,
    ) -> _Reply:
        loop = self._running_loop()
        assert self._dialer is not None
        request_id = next(self._request_ids)
        future: asyncio.Future[Any] = loop.create_future()
        self._requests[request_id] = (expected, future)
        bound = self.request_timeout if timeout is None else timeout
        try:
            self._dialer.outbox.put(build(request_id))
            self._bound(future, bound)
            return await future
        except _Expired:
            raise RequestTimeoutError(
                f"the control plane at {self.address} did not answer within {bound} s"
            ) from None
        finally:
            self._requests.pop(request_id, None)

    def _on_message(self, message: m.Message) -> None:
        if isinstance(message, m.Results):
            for outcome in message.outcomes:
                self._finish(outcome.task_id, TaskResult.from_outcome(outcome))
            return
        if isinstance(message, m.ErrorReply) and message.request_id is None:
            # The control plane could not read a frame of ours, so it cannot say which
            # request failed: fail them all rather than let them run into the timeout.
            self._fail_requests(error_from_code(message.error.code, message.error.message))
            return
        request_id = getattr(message, "request_id", None)
        if request_id is None:
            return  # heartbeats and goodbyes need no answer from a client
        pending = self._requests.get(request_id)
        if pending is None:
            log.debug("reply to a request no longer waited for: %r", message)
            return
        expected, future = pending
        if future.done():
            return
        if isinstance(message, m.ErrorReply):
            future.set_exception(error_from_code(message.error.code, message.error.message))
        elif isinstance(message, expected):
            future.set_result(message)
        else:
            future.set_exception(
                UnexpectedReplyError(
                    f"request {request_id} expected {expected.__name__}, "
                    f"got {type(message).__name__}"
                )
            )

    def _finish(self, task_id: str, result: TaskResult) -> None:
        self._expected.discard(task_id)
        self._results[task_id] = result
        self._results.move_to_end(task_id)
        while len(self._results) > self._result_cache_size:
            self._results.popitem(last=False)
        for future in self._waiters.pop(task_id, []):
            if not future.done():
                future.set_result(result)
        for callback in self._callbacks.pop(task_id, []):
            self._run_callback(callback, result)

    def _run_callback(self, callback: CompletionCallback, result: TaskResult) -> None:
        try:
            outcome = callback(result)
        except Exception:
            log.exception("completion callback for task %s raised", result.task_id)
            return
        if inspect.isawaitable(outcome):
            task = self._running_loop().create_task(_await_callback(outcome, result.task_id))
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_tasks.discard)

    def _move_callbacks(self, old: str, new: str) -> None:
        moved = self._callbacks.pop(old, [])
        if moved:
            self._callbacks.setdefault(new, []).extend(moved)

    def _on_connect(self) -> None:
        if self._expected and self._dialer is not None:
            # A control plane that came back may still know these tasks; ask again so no
            # caller waits on a push that will never come.
            self._running_loop().create_task(self._rewatch(sorted(self._expected)))

    async def _rewatch(self, task_ids: list[str]) -> None:
        try:
            await self._watch(task_ids)
        except FastworkerError as exc:
            log.warning("could not re-watch %d tasks after reconnecting: %s", len(task_ids), exc)

    def _on_disconnect(self) -> None:
        if self._dialer is not None:
            self._fail_requests(closed_error(self.address))

    def _fail_requests(self, error: FastworkerError) -> None:
        for _expected, future in self._requests.values():
            if not future.done():
                future.set_exception(error)

    def _fail_everything(self, error: FastworkerError) -> None:
        self._fail_requests(error)
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(error)
        self._waiters.clear()
        self._expected.clear()
        self._callbacks.clear()


async def _await_callback(awaitable: Awaitable[None], task_id: str) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("completion callback for task %s raised", task_id)


class _Expired(Exception):
    """A bounded wait ran out (internal: turned into the caller's typed error)."""


class _Deadlines:
    """Bounds on many waits with one timer per 50 ms of deadlines, not one per wait: a
    client waits twice per task (its acceptance, its result), and per-wait timers were a
    sixth of its time under load. A wait may end up to 50 ms after its bound.

    Buckets hold weak references: a wait that ended long before its bound must not keep
    its future (and the reply in it) alive, nor grow what the cycle collector walks,
    until the bound passes.
    """

    GRANULARITY: Final = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, list[weakref.ref[asyncio.Future[Any]]]] = {}

    def add(self, future: asyncio.Future[Any], timeout: float) -> None:
        """Fail ``future`` with _Expired if it is not done ``timeout`` seconds from now."""
        slot = math.ceil((self._loop.time() + timeout) / self.GRANULARITY)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = []
            self._loop.call_at(slot * self.GRANULARITY, self._expire, slot)
        bucket.append(weakref.ref(future))

    def _expire(self, slot: int) -> None:
        for reference in self._buckets.pop(slot, ()):
            future = reference()
            if future is not None and not future.done():
                future.set_exception(_Expired())


class _TaskIds:
    """Task ids unique across clients and time: 80 random bits drawn once per process,
    then a counter. Cheaper than uuid4, which reads the system's random source per id.
    A forked child (pre-forking web servers) draws its own prefix."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = secrets.token_hex(10)
        self._numbers = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._numbers):x}"


_task_ids = _TaskIds()
_new_task_id = _task_ids.next


def _task_request(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    priority: TaskPriority | str | None,
    timeout: float | None,
    task_id: str | None,
    idempotency_key: str | None,
    countdown: float | None = None,
    eta: datetime.datetime | None = None,
    retry: Retries | None = None,
) -> m.TaskRequest:
    # Checked here because the control plane refuses a whole frame that breaks the
    # schema's bounds, and would not know which request of the frame to answer.
    if timeout is not None and timeout <= 0:
        raise ConfigurationError(f"timeout must be positive, got {timeout}")
    if not 0 < len(name) <= _MAX_NAME:
        raise ConfigurationError(f"task name must be 1 to {_MAX_NAME} characters, got {name!r}")
    if task_id is not None and not 0 < len(task_id) <= _MAX_ID:
        raise ConfigurationError(f"task id must be 1 to {_MAX_ID} characters")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= _MAX_NAME:
        raise ConfigurationError(f"idempotency key must be 1 to {_MAX_NAME} characters")
    policy = check_retry(retry)
    start = check_start(countdown, eta)
    encoded_args = encode_value(list(args))
    encoded_kwargs = encode_value(dict(kwargs))
    size = len(encoded_args) + len(encoded_kwargs)
    if size > MAX_PAYLOAD_BYTES:
        raise FrameTooLargeError(
            f"arguments of task {name!r} take {size} bytes encoded; the limit is "
            f"{MAX_PAYLOAD_BYTES}. Pass a reference (a key, a URL) instead of the data."
        )
    return m.TaskRequest(
        name=name,
        args=encoded_args,
        kwargs=encoded_kwargs,
        priority=TaskPriority.NORMAL if priority is None else TaskPriority.parse(priority),
        task_id=task_id or _new_task_id(),
        timeout=timeout,
        idempotency_key=idempotency_key,
        retry=None if policy is None else policy.policy(),
        countdown=start[0],
        eta=start[1],
    )


def _check_buckets(reply: m.MetricsReply) -> None:
    """Refuse a reply whose histograms cannot be read against its bucket bounds (the
    decoder checks each list's length, not that they agree)."""
    bounds = reply.buckets
    if any(low >= high for low, high in itertools.pairwise(bounds)):
        raise ProtocolError(f"the metrics reply's bucket bounds do not increase: {bounds}")
    histograms = [reply.journal_commits] if reply.journal_commits is not None else []
    for entry in reply.tasks:
        for latency in entry.latency:
            histograms += (latency.queue_wait, latency.run)
    for histogram in histograms:
        if len(histogram.counts) != len(bounds) + 1:
            raise ProtocolError(
                f"a histogram of the metrics reply has {len(histogram.counts)} counts for "
                f"{len(bounds)} bucket bounds"
            )


def _before_submit(hooks: tuple[Hook, ...], requests: list[m.TaskRequest]) -> list[Submission]:
    """Run the submit hooks on each request; the headers they wrote go with it.

    Raises:
        ConfigurationError: a hook wrote headers the wire cannot carry; the hooks of the
            requests already prepared hear of it in ``after_submit``.
    """
    submissions: list[Submission] = []
    for request in requests:
        submission = Submission(
            request.name, request.task_id, request.priority, dict(request.headers)
        )
        submissions.append(submission)
        call_hooks(hooks, "before_submit", submission)
        try:
            request.headers = check_headers(submission.headers)
        except ConfigurationError as exc:
            _after_submit(hooks, submissions, exc)
            raise
    return submissions


def _after_submit(
    hooks: tuple[Hook, ...], submissions: Sequence[Submission], error: BaseException | None
) -> None:
    for submission in submissions:
        call_hooks(hooks, "after_submit", submission, error)
