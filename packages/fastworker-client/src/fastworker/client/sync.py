"""A blocking client for code without an event loop: scripts, Flask and Django views, threads.

:class:`SyncClient` wraps the asyncio :class:`~fastworker.client.Client`. It owns one daemon
thread running a private event loop, where an async client lives; each method hands a
coroutine to that loop (``asyncio.run_coroutine_threadsafe``) and blocks the calling thread,
with a bound, until it is done. So one SyncClient is one connection however many threads
share it (a threaded WSGI server may), and it raises exactly the async client's errors.
Create it at import time if you like (that opens nothing) and start it explicitly at app
start-up: a Flask app factory, Django's ``AppConfig.ready()``. In a pre-forking server start
it in each worker after the fork (gunicorn's ``post_fork`` hook), never in the parent: NNG
cannot be used in a process forked from one that used it. Exit stops a started client::

    from fastworker.client import SyncClient

    fastworker = SyncClient()  # module level: opens nothing yet
    fastworker.start()  # at start-up, in each process; idempotent
    task_id = fastworker.delay("send_email", user_id, priority="high")  # in a view
    value = fastworker.result(task_id, timeout=5)
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import datetime
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from fastworker.protocol import (
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RESULT_CACHE_SIZE,
    MAX_IDS_PER_MESSAGE,
    ConfigurationError,
    FastworkerError,
    LoopThreadError,
    NotConnectedError,
    RequestTimeoutError,
    ResultTimeoutError,
    TaskPriority,
)
from fastworker.protocol import messages as m

from .client import Client, TaskCall
from .options import Retries
from .results import TaskResult
from .tasks import Submitter, get_default_client, set_default_client
from .tls import TLSOptions

__all__ = ["DEFAULT_RESULT_WAIT", "SyncClient", "SyncCompletionCallback"]

log = logging.getLogger("fastworker.client")

T = TypeVar("T")

SyncCompletionCallback = Callable[[TaskResult], None]
"""A completion callback of :class:`SyncClient`: a plain function, called on the client's
event-loop thread. It must be quick (the loop delivers every result and reply while it
runs), thread-safe (it runs beside your own threads), and must not call its SyncClient
(that raises :class:`LoopThreadError`); hand longer work to a queue or an executor."""

DEFAULT_RESULT_WAIT: Final = 60.0
"""Seconds :meth:`SyncClient.result`, :meth:`~SyncClient.wait` and :meth:`~SyncClient.run`
wait by default. ``None`` waits as long as the task runs, and only when asked for."""

_ALL_DEAD_REQUESTS: Final = 8
"""Requests ``retry_dead(all=True)`` is given time for: one per 4,096 dead letters, and
the list holds 10,000 by default."""
_MARGIN: Final = 2.0
"""Seconds a blocking call waits beyond the async call's own bound before giving up on
the loop thread itself (a callback hogging it, say). It should never be reached."""
_PER_TASK: Final = 1e-3
"""Extra seconds per task a batch may take on the loop thread (encoding it)."""
_FORK_ADVICE: Final = (
    "NNG cannot be used in a process forked from one that used it: start the client only "
    "after forking (gunicorn: in the post_fork hook; never in the master process)"
)

_nng_used_in: int | None = None
"""The process in which a SyncClient last opened NNG, so that a process forked from it is
refused with an error instead of being aborted by NNG ("nng is not fork-reentrant safe")."""

_STOP_TIMEOUT: Final = 5.0
"""Seconds :meth:`SyncClient.stop` waits for the loop thread to close the connection and
end (closing the socket takes up to 2 s when the receiver thread is slow to notice)."""


class _LoopThread(threading.Thread):
    """The thread running a SyncClient's event loop; it knows its owner, so calls made
    on it can be refused."""

    def __init__(self, owner: SyncClient, loop: asyncio.AbstractEventLoop, client: Client) -> None:
        super().__init__(name=f"fastworker-sync-client({owner.name})", daemon=True)
        self.owner = owner
        self._loop = loop
        self._client = client

    def run(self) -> None:
        loop = self._loop
        try:
            loop.run_forever()
        finally:
            try:
                # However the loop stopped, the connection closes here, on its own thread:
                # calls still in flight fail with NotConnectedError.
                loop.run_until_complete(self._client.stop())
                _cancel_remaining_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            except Exception:
                log.exception("while closing the event loop of a sync client")
            finally:
                loop.close()


@dataclasses.dataclass(frozen=True)
class _Runner:
    """One started run: the loop, its thread, the async client living on it, and the
    process that started it (a fork copies the object but not the thread)."""

    loop: asyncio.AbstractEventLoop
    thread: _LoopThread
    client: Client
    pid: int


class SyncClient:
    """A blocking client of one control plane, safe to share between threads.

    The constructor takes what :class:`~fastworker.client.Client` takes and opens nothing;
    :meth:`start` starts the loop thread and connects, :meth:`stop` undoes it; or use
    ``with SyncClient() as client:``. Every method but those two, called before
    :meth:`start`, after :meth:`stop`, or in a process forked after :meth:`start`, raises
    :class:`~fastworker.protocol.NotConnectedError`; called from a completion callback (the
    loop thread), :class:`LoopThreadError`.

    The methods are the async client's, with its signatures, blocking. Their errors are
    its errors, unwrapped. Every wait has a bound: a request waits ``request_timeout``
    seconds for the control plane (plus a small margin for the loop thread); a result
    waits ``timeout`` seconds, :data:`DEFAULT_RESULT_WAIT` (60) unless told otherwise,
    where the async client defaults to no bound. Pass ``timeout=None`` (``wait=None`` for
    :meth:`run`) to wait as long as the task runs; :meth:`stop` still ends such a wait.

    Completion callbacks (``on_complete``) are plain functions, called on the loop thread:
    see :data:`SyncCompletionCallback`.
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
        """Resolve and check the settings as :class:`~fastworker.client.Client` does
        (``address`` defaults to ``$FASTWORKER_ADDRESS``, then ``tcp://127.0.0.1:5555``).

        Raises:
            ConfigurationError: ``request_timeout`` is not positive.
        """
        settings = Client(
            address,
            request_timeout=request_timeout,
            result_cache_size=result_cache_size,
            name=name,
            auth_token=auth_token,
            tls=tls,
        )
        self.address: str = settings.address
        self.request_timeout: float = settings.request_timeout
        self.name: str = settings.name
        self._result_cache_size = result_cache_size
        self._auth_token = auth_token
        self._tls = tls
        self._runner: _Runner | None = None
        # Guards _runner and every submission to its loop, so that nothing is handed to a
        # loop after stop() let go of it.
        self._lock = threading.Lock()
        # Serialises start() and stop().
        self._lifecycle = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and connect; returns once the control plane answered.
        Does nothing if already started in this process.

        Raises:
            RequestTimeoutError: no control plane answered in time.
            ProtocolVersionError: the control plane speaks another major version.
            LoopThreadError: called from a completion callback of this client.
            ConfigurationError: this process was forked from one where a SyncClient had
                started (NNG would abort the process).
        """
        self._refuse_loop_thread()
        with self._lifecycle:
            runner = self._runner
            if runner is not None and runner.pid == os.getpid():
                return
            _refuse_forked_child()
            client = Client(
                self.address,
                request_timeout=self.request_timeout,
                result_cache_size=self._result_cache_size,
                name=self.name,
                auth_token=self._auth_token,
                tls=self._tls,
            )
            global _nng_used_in
            _nng_used_in = os.getpid()
            loop = asyncio.new_event_loop()
            thread = _LoopThread(self, loop, client)
            try:
                thread.start()
            except BaseException:
                loop.close()
                raise
            bound = self.request_timeout + _MARGIN  # the handshake is one request
            try:
                _wait(
                    asyncio.run_coroutine_threadsafe(_start_client(client), loop),
                    bound,
                    lambda: RequestTimeoutError(
                        f"the control plane at {self.address} did not answer within {bound} s"
                    ),
                )
            except BaseException:
                _end_loop_thread(loop, thread)
                raise
            with self._lock:
                self._runner = _Runner(loop, thread, client, os.getpid())
            # Before daemon threads are frozen at exit, close the connection cleanly.
            atexit.register(self.stop)

    def stop(self) -> None:
        """Close the connection and end the loop thread. Calls still waiting in other
        threads raise NotConnectedError. Idempotent; returns within about 5 s even when a
        callback hogs the loop thread (which is then left behind, a daemon, and logged).

        Raises:
            LoopThreadError: called from a completion callback of this client.
        """
        self._refuse_loop_thread()
        with self._lifecycle:
            with self._lock:
                runner, self._runner = self._runner, None
            if runner is None or runner.pid != os.getpid():
                return
            atexit.unregister(self.stop)
            _end_loop_thread(runner.loop, runner.thread)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has connected this client in this process and
        :meth:`stop` has not been called since."""
        runner = self._runner
        return runner is not None and runner.pid == os.getpid()

    @property
    def task_names(self) -> list[str]:
        """Tasks the control plane could run when the client connected (empty before)."""
        runner = self._runner
        return [] if runner is None else list(runner.client.task_names)

    def __enter__(self) -> SyncClient:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "started" if self.started else "stopped"
        return f"<SyncClient {self.name!r} of {self.address} {state}>"

    # --- submitting ---------------------------------------------------------------------

    def delay(
        self,
        name: str,
        /,
        *args: Any,
        priority: TaskPriority | str | None = None,
        timeout: float | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        on_complete: SyncCompletionCallback | None = None,
        countdown: float | None = None,
        eta: datetime.datetime | None = None,
        retry: Retries | None = None,
        **kwargs: Any,
    ) -> str:
        """Submit one task and return its id as soon as the control plane has queued it.

        As :meth:`fastworker.client.Client.delay`; ``on_complete`` is a plain function,
        called on the loop thread (see :data:`SyncCompletionCallback`).

        Raises:
            UnsupportedValueError: an argument the wire cannot carry.
            UnknownTaskError, InvalidArgumentsError, QueueFullError: refused by the control plane.
            RequestTimeoutError: the control plane did not answer in time.
        """
        # Two requests when an idempotency key matches an earlier task: submit, then watch.
        return self._request(
            lambda client: client.delay(
                name,
                *args,
                priority=priority,
                timeout=timeout,
                task_id=task_id,
                idempotency_key=idempotency_key,
                on_complete=on_complete,
                countdown=countdown,
                eta=eta,
                retry=retry,
                **kwargs,
            ),
            requests=2,
        )

    def delay_many(self, calls: Iterable[TaskCall]) -> list[str]:
        """Submit a batch in one request; all are queued or none is. Returns the ids in
        the order of ``calls``."""
        batch = list(calls)  # read here, in the caller's thread, not on the loop thread
        return self._request(lambda client: client.delay_many(batch), extra=len(batch) * _PER_TASK)

    def run(
        self,
        name: str,
        /,
        *args: Any,
        priority: TaskPriority | str | None = None,
        timeout: float | None = None,
        wait: float | None = DEFAULT_RESULT_WAIT,
        **kwargs: Any,
    ) -> Any:
        """Submit a task and wait for its value. ``timeout`` bounds its run time on the
        worker, ``wait`` how long this call waits for it (``None``: as long as it runs).

        Raises what :meth:`delay` and :meth:`result` raise.
        """
        return self._await_result(
            lambda client: client.run(
                name, *args, priority=priority, timeout=timeout, wait=wait, **kwargs
            ),
            wait,
        )

    # --- results ------------------------------------------------------------------------

    def result(self, task_id: str, *, timeout: float | None = DEFAULT_RESULT_WAIT) -> Any:
        """Wait for a task's return value, pushed by the control plane; nothing polls.

        ``timeout`` defaults to 60 s; ``None`` waits as long as the task runs.

        Raises:
            TaskFailedError: the task raised (remote type, message and traceback attached).
            TaskTimeoutError, WorkerLostError, TaskCancelledError: how else it ended.
            ResultTimeoutError: ``timeout`` seconds passed first; the task goes on.
            TaskNotFoundError: the control plane does not know the id.
        """
        return self._await_result(lambda client: client.result(task_id, timeout=timeout), timeout)

    def wait(self, task_id: str, *, timeout: float | None = DEFAULT_RESULT_WAIT) -> TaskResult:
        """Like :meth:`result` but returns the :class:`TaskResult` instead of raising the
        task's error."""
        return self._await_result(lambda client: client.wait(task_id, timeout=timeout), timeout)

    def on_complete(self, task_id: str, callback: SyncCompletionCallback) -> None:
        """Call ``callback`` on the loop thread when the task finishes (at once, on that
        thread, if it has). See :data:`SyncCompletionCallback` for what it may do."""

        async def register(client: Client) -> None:
            client.on_complete(task_id, callback)

        self._request(register)

    # --- queries ------------------------------------------------------------------------

    def cancel(self, *task_ids: str) -> m.CancelReply:
        """Cancel queued tasks: they never run and their waiters get TaskCancelledError.
        As :meth:`fastworker.client.Client.cancel`: running tasks are in ``stopping``."""
        return self._request(lambda client: client.cancel(*task_ids))

    def status(self, task_id: str, *, include_payloads: bool = False) -> m.TaskInfo:
        """The control plane's record of one task.

        Raises:
            TaskNotFoundError: never submitted, or forgotten.
        """
        return self._request(
            lambda client: client.status(task_id, include_payloads=include_payloads)
        )

    def overview(self) -> m.Overview:
        """Queue depth per priority, subworkers, registered tasks and counters."""
        return self._request(lambda client: client.overview())

    def history(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        status: m.TaskStatus | None = None,
        priority: TaskPriority | str | None = None,
        name: str | None = None,
    ) -> m.HistoryReply:
        """A page of recent tasks, newest first, optionally filtered."""
        return self._request(
            lambda client: client.history(
                offset=offset, limit=limit, status=status, priority=priority, name=name
            )
        )

    # --- dead letters -------------------------------------------------------------------

    def dead_letters(self, *, offset: int = 0, limit: int = 50) -> m.DeadLettersReply:
        """As :meth:`fastworker.client.Client.dead_letters`."""
        return self._request(lambda client: client.dead_letters(offset=offset, limit=limit))

    def retry_dead(self, *task_ids: str, all: bool = False) -> dict[str, str]:
        """As :meth:`fastworker.client.Client.retry_dead`."""
        chunks = -(-len(task_ids) // MAX_IDS_PER_MESSAGE)
        requests = _ALL_DEAD_REQUESTS if all else max(1, chunks)
        return self._request(
            lambda client: client.retry_dead(*task_ids, all=all), requests=requests
        )

    def purge_dead(self, *task_ids: str, all: bool = False) -> int:
        """As :meth:`fastworker.client.Client.purge_dead`."""
        return self._request(lambda client: client.purge_dead(*task_ids, all=all))

    def schedules(self) -> list[m.ScheduleInfo]:
        """As :meth:`fastworker.client.Client.schedules`."""
        return self._request(lambda client: client.schedules())

    def metrics(self) -> m.MetricsReply:
        """As :meth:`fastworker.client.Client.metrics`."""
        return self._request(lambda client: client.metrics())

    # --- plumbing -----------------------------------------------------------------------

    def _request(
        self,
        call: Callable[[Client], Coroutine[Any, Any, T]],
        *,
        requests: int = 1,
        extra: float = 0.0,
    ) -> T:
        """Run ``call`` on the loop, for a call that makes ``requests`` requests in turn."""
        bound = requests * self.request_timeout + extra + _MARGIN
        return self._call(
            call,
            bound,
            lambda: RequestTimeoutError(
                f"no answer from the control plane at {self.address} within {bound:g} s"
            ),
        )

    def _await_result(
        self, call: Callable[[Client], Coroutine[Any, Any, T]], timeout: float | None
    ) -> T:
        """Run ``call`` on the loop, for a call that waits up to ``timeout`` for a result
        (after at most one request: submitting the task, or watching it)."""
        if timeout is None:
            return self._call(call, None, None)
        bound = timeout + self.request_timeout + _MARGIN
        return self._call(
            call,
            bound,
            lambda: ResultTimeoutError(
                f"no result within {bound:g} s; the client's event-loop thread did not answer"
            ),
        )

    def _call(
        self,
        call: Callable[[Client], Coroutine[Any, Any, T]],
        bound: float | None,
        timeout_error: Callable[[], FastworkerError] | None,
    ) -> T:
        self._refuse_loop_thread()
        with self._lock:
            runner = self._runner
            if runner is None:
                raise NotConnectedError(
                    "the SyncClient is not started; call start() first, "
                    "or use `with SyncClient(...) as client:`"
                )
            if runner.pid != os.getpid():
                raise NotConnectedError(
                    f"this SyncClient was started in process {runner.pid}, which this "
                    f"process was forked from; {_FORK_ADVICE}"
                )
            coroutine = call(runner.client)
            try:
                future = asyncio.run_coroutine_threadsafe(coroutine, runner.loop)
            except RuntimeError:  # the loop is closed; cannot happen while _runner is set
                coroutine.close()
                raise NotConnectedError("the SyncClient's event loop is closed") from None
        return _wait(future, bound, timeout_error)

    def _refuse_loop_thread(self) -> None:
        current = threading.current_thread()
        if isinstance(current, _LoopThread) and current.owner is self:
            raise LoopThreadError(
                f"{self!r} was called on its own event-loop thread, from a completion "
                "callback: the call would wait for the loop that is running the callback, "
                "for ever. Hand the work to another thread (a queue.Queue, an executor) "
                "instead of calling the client from a callback."
            )


def _refuse_forked_child() -> None:
    if _nng_used_in is not None and _nng_used_in != os.getpid():
        raise ConfigurationError(
            f"a SyncClient was started in process {_nng_used_in}, which this process was "
            f"forked from; {_FORK_ADVICE}"
        )


def _wait(
    future: concurrent.futures.Future[T],
    bound: float | None,
    timeout_error: Callable[[], FastworkerError] | None,
) -> T:
    """The outcome of ``future``, waiting at most ``bound`` seconds (``None``: until it is
    done, which :meth:`SyncClient.stop` ensures). Whatever interrupts the wait (the bound,
    KeyboardInterrupt) cancels the call on the loop."""
    if bound is not None and bound > threading.TIMEOUT_MAX:
        bound = None  # longer than a lock can wait: as good as no bound
    try:
        done, _pending = concurrent.futures.wait([future], timeout=bound)
        if not done and future.cancel():
            assert timeout_error is not None  # without a bound, wait() returns when done
            raise timeout_error()
        return future.result()
    except concurrent.futures.CancelledError:
        raise NotConnectedError("the SyncClient was stopped while the call was waiting") from None
    except BaseException:
        future.cancel()
        raise


async def _start_client(client: Client) -> None:
    await client.start()
    # The async client makes itself the process-wide default of `await my_task.delay()` when
    # there is none; this one lives on a private loop nobody else may await on.
    if get_default_client() is cast("Submitter", client):
        set_default_client(None)


def _cancel_remaining_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _end_loop_thread(loop: asyncio.AbstractEventLoop, thread: _LoopThread) -> None:
    """Stop ``loop``; its thread closes the connection and ends. Waits a bounded time."""
    with contextlib.suppress(RuntimeError):  # the loop is closed already
        loop.call_soon_threadsafe(loop.stop)
    thread.join(_STOP_TIMEOUT)
    if thread.is_alive():
        log.warning(
            "the event-loop thread of the sync client %r did not end within %s s "
            "(a completion callback still running?); leaving it behind as a daemon thread",
            thread.owner.name,
            _STOP_TIMEOUT,
        )
