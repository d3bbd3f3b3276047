"""A subworker: connects to a control plane, announces what it can run, runs what it is
leased, and heartbeats. NNG redials by itself; after a reconnect the subworker announces
itself again, so a restarted control plane learns about it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import os
import socket
import time

from fastworker.client._limiter import LogLimiter
from fastworker.client._transport import Dialer
from fastworker.client.tasks import TaskRegistry
from fastworker.client.tls import TLSOptions
from fastworker.protocol import (
    DEFAULT_CONTROL_PLANE_ADDRESS,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LEASE_TIMEOUT,
    FEATURE_CANCEL,
    FEATURE_LEASES,
    MAX_IDS_PER_MESSAGE,
    MAX_MESSAGES_PER_FRAME,
    ConfigurationError,
    ProtocolError,
    ProtocolVersionError,
    TaskCancelledError,
    TaskStatus,
    in_chunks,
)
from fastworker.protocol import messages as m

from ._version import __version__
from .core.records import error_info
from .runner import Run, TaskRunner
from .supervised import EXIT_RECYCLE, RecycleLimits, SupervisorLink
from .task_logs import FAILURE_LOG_INTERVAL, log_failure

__all__ = ["Prefetched", "Subworker", "SubworkerSettings"]

log = logging.getLogger("fastworker.subworker")

_HELLO_REQUEST_ID = 1


@dataclasses.dataclass(frozen=True)
class SubworkerSettings:
    """How a subworker runs; every field has a command-line flag."""

    worker_id: str
    control_plane_address: str = DEFAULT_CONTROL_PLANE_ADDRESS
    concurrency: int = max(os.cpu_count() or 1, 1)
    prefetch: int = 0
    """Tasks leased beyond ``concurrency``, which wait here to start: a short task then
    starts without a round trip to the control plane, at the price of exact placement
    (a prefetched task can wait behind a long one while another subworker is idle)."""
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    """Seconds a stopping subworker lets running tasks finish before handing them back."""
    auth_token: str | None = None
    """The control plane's shared secret, when it has one."""
    tls: TLSOptions | None = None
    """For a ``tls+tcp://`` control plane: the authority its certificate chains to, and
    this subworker's certificate for mutual TLS (by default from ``FASTWORKER_TLS_*``)."""
    max_tasks_per_child: int | None = None
    """Tasks finished after which the subworker drains and exits with EXIT_RECYCLE."""
    max_memory_per_child: int | None = None
    """Resident MiB past which, after a task, the subworker drains and exits with
    EXIT_RECYCLE."""
    supervisor_fd: int | None = None
    """The socket a ``--processes N`` supervisor passed its child (no flag: the
    supervisor sets it)."""


class Subworker:
    """Runs tasks leased by one control plane."""

    def __init__(self, registry: TaskRegistry, settings: SubworkerSettings) -> None:
        if settings.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if settings.prefetch < 0:
            raise ConfigurationError("prefetch must be 0 or more")
        if not settings.worker_id:
            raise ConfigurationError("a subworker needs a worker id")
        self.registry = registry
        self.settings = settings
        self._runner: TaskRunner | None = None
        self._dialer: Dialer | None = None
        self._running: dict[str, Run] = {}
        self._waiting = Prefetched()
        """Leased past the concurrency (``prefetch``), not started yet."""
        self._idle = asyncio.Event()
        """Set while no task runs: what a draining stop waits for."""
        self._idle.set()
        self._outcomes: list[m.TaskOutcome] = []
        """Finished this turn of the loop; they leave together in one TasksDone."""
        self._heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self._lease_timeout = DEFAULT_LEASE_TIMEOUT
        self._welcomed = asyncio.Event()
        self._last_heard = time.monotonic()
        """When the control plane was last heard from: silence past the lease timeout
        means the connection is dead even if no one closed it."""
        self._draining = False
        self.refused: asyncio.Future[m.ErrorInfo] | None = None
        """Set when the control plane refuses this subworker (for example a duplicate id)."""
        self._heartbeats: asyncio.Task[None] | None = None
        self._connect_log = LogLimiter(log, interval=10.0)
        self._failure_log = LogLimiter(log, interval=FAILURE_LOG_INTERVAL)
        self._limits = RecycleLimits(settings.max_tasks_per_child, settings.max_memory_per_child)
        self._tasks_done = 0
        self._supervisor: SupervisorLink | None = None
        self.exit_requested: asyncio.Future[int] | None = None
        """Set when the subworker decides to end itself, to the exit code for after its
        drain: EXIT_RECYCLE past a limit, 0 when its supervisor is gone."""

    async def start(self) -> None:
        """Start dialing the control plane; returns at once."""
        loop = asyncio.get_running_loop()
        self.refused = loop.create_future()
        self.exit_requested = loop.create_future()
        if self.settings.supervisor_fd is not None:
            self._supervisor = SupervisorLink(
                self.settings.supervisor_fd,
                loop,
                on_gone=lambda: self._end_itself(0, "its supervisor is gone"),
            )
        self._runner = TaskRunner(
            self.registry,
            worker_id=self.settings.worker_id,
            threads=self.settings.concurrency,
            loop=loop,
        )
        self._dialer = Dialer(
            self.settings.control_plane_address,
            loop=loop,
            on_message=self._on_message,
            on_bad_frame=self._on_bad_frame,
            on_connect=self._hello,
            on_disconnect=self._disconnected,
            name=f"fastworker-{self.settings.worker_id}",
            tls=self.settings.tls,
        )
        self._dialer.open()
        self._heartbeats = loop.create_task(self._heartbeat())

    def _on_bad_frame(self, exc: ProtocolError) -> None:
        # A control plane of another major version can never accept this subworker:
        # give up as on a refused hello, instead of dialing it for ever.
        refused = self.refused
        if isinstance(exc, ProtocolVersionError) and refused is not None and not refused.done():
            refused.set_result(m.ErrorInfo(code=exc.remote_code, message=exc.message))

    async def wait_registered(self, timeout: float) -> None:
        """Wait until the control plane has accepted this subworker."""
        await asyncio.wait_for(self._welcomed.wait(), timeout)

    def readiness(self) -> str | None:
        """None while registered with its control plane and not draining; else why not,
        for a readiness probe."""
        address = self.settings.control_plane_address
        if self._draining:
            return "draining"
        if self.refused is not None and self.refused.done():
            return f"refused by {address}: {self.refused.result().message}"
        if not self._welcomed.is_set():
            return f"not registered with {address}"
        return None

    async def stop(self) -> None:
        """Drain: take no more work, let running tasks finish within the drain timeout,
        hand back the rest, say goodbye, close. The control plane hears of the drain at
        once and sends nothing more."""
        self._draining = True
        self._hand_back(self._waiting.clear())  # not started: another subworker runs them
        self._send_heartbeat()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout)
        self._send_outcomes()
        if self._running:
            unfinished = list(self._running.values())
            self._running.clear()
            for run in unfinished:
                run.discard()
            self._hand_back([run.assignment for run in unfinished])
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        if self._dialer is not None:
            self._dialer.outbox.put(m.Goodbye(reason="subworker stopping"))
            self._dialer.outbox.flush()
            dialer, self._dialer = self._dialer, None
            # Give NNG a moment to put the last frame on the wire before closing.
            await asyncio.sleep(0.05)
            dialer.close()
        if self._runner is not None:
            self._runner.close()
        if self._supervisor is not None:
            self._supervisor.close()

    @property
    def threads_busy(self) -> int:
        """Sync tasks still running in threads after stop(): Python cannot interrupt them."""
        return 0 if self._runner is None else self._runner.threads_busy

    def _hello(self) -> None:
        if self._dialer is None:
            return
        self._dialer.outbox.put(
            m.WorkerHello(
                request_id=_HELLO_REQUEST_ID,
                worker_id=self.settings.worker_id,
                concurrency=self.settings.concurrency,
                task_names=self.registry.names(),
                host=socket.gethostname(),
                pid=os.getpid(),
                library_version=__version__,
                auth_token=self.settings.auth_token or "",
                features=[FEATURE_LEASES, FEATURE_CANCEL],
                prefetch=self.settings.prefetch,
            )
        )
        if self._draining:
            self._send_heartbeat()  # a new connection hears of the drain too

    def _on_message(self, message: m.Message) -> None:
        self._last_heard = time.monotonic()
        match message:
            case m.Dispatch(tasks=assignments):
                for assignment in assignments:
                    self._start(assignment)
            case m.StopTasks(task_ids=task_ids):
                for task_id in task_ids:
                    run = self._running.get(task_id)
                    if run is not None:
                        run.cancel()
                    elif (waiting := self._waiting.remove(task_id)) is not None:
                        self._report(_cancelled_before_start(waiting, self.settings.worker_id))
            case m.WorkerWelcome():
                self._heartbeat_interval = message.heartbeat_interval
                self._lease_timeout = message.lease_timeout
                self._welcomed.set()
                log.info("registered with control plane %s", message.control_plane_id)
                if self._supervisor is not None and not self._draining:
                    self._supervisor.ready()
            case m.ErrorReply(request_id=request_id, error=error) if (
                request_id == _HELLO_REQUEST_ID
            ):
                log.error("the control plane refused: %s", error.message)
                if self.refused is not None and not self.refused.done():
                    self.refused.set_result(error)
            case m.ErrorReply(error=error):
                log.warning("the control plane refused a message: %s", error.message)
            case _:
                pass  # heartbeats and goodbyes: hearing anything is what counts

    def _start(self, assignment: m.TaskAssignment) -> None:
        if self._draining:
            self._hand_back([assignment])
            return
        if len(self._running) >= self.settings.concurrency:
            self._waiting.push(assignment)  # prefetched: it starts when a slot frees
            return
        assert self._runner is not None
        self._idle.clear()
        self._running[assignment.task_id] = self._runner.start(assignment, self._finished)

    def _hand_back(self, assignments: list[m.TaskAssignment]) -> None:
        if self._dialer is not None and assignments:
            task_ids = [assignment.task_id for assignment in assignments]
            for chunk in in_chunks(task_ids, MAX_IDS_PER_MESSAGE):
                self._dialer.outbox.put(m.HandBack(task_ids=chunk))

    def _disconnected(self) -> None:
        self._welcomed.clear()
        # The control plane took back every lease of the connection: the prefetched
        # tasks run elsewhere, or here again once leased anew.
        dropped = self._waiting.clear()
        if dropped:
            log.warning("dropped %d prefetched tasks with the connection", len(dropped))

    def _finished(self, outcome: m.TaskOutcome) -> None:
        run = self._running.pop(outcome.task_id, None)
        if run is not None:
            log_failure(self._failure_log, run.assignment, outcome, time.monotonic())
        if not self._draining:
            while len(self._running) < self.settings.concurrency:
                waiting = self._waiting.pop()
                if waiting is None:
                    break
                self._start(waiting)
        if not self._running:
            self._idle.set()
        self._report(outcome)
        self._tasks_done += 1
        if self._limits.any:
            reason = self._limits.reached(self._tasks_done)
            if reason is not None:
                self._end_itself(EXIT_RECYCLE, reason)

    def _report(self, outcome: m.TaskOutcome) -> None:
        if not self._outcomes:
            asyncio.get_running_loop().call_soon(self._send_outcomes)
        self._outcomes.append(outcome)

    def _end_itself(self, code: int, why: str) -> None:
        ending = self.exit_requested
        if ending is not None and not ending.done():
            log.info("subworker %s stopping: %s", self.settings.worker_id, why)
            self._draining = True  # hand back what is dispatched before stop() runs
            ending.set_result(code)

    def _send_outcomes(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if self._dialer is not None:
            # More tasks may end in one turn than one message may list.
            for chunk in in_chunks(outcomes, MAX_MESSAGES_PER_FRAME):
                self._dialer.outbox.put(m.TasksDone(outcomes=chunk))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            if self._dialer is None or not self._welcomed.is_set():
                why = self._dialer.failures() if self._dialer is not None else None
                if why is not None:
                    self._connect_log.log(time.monotonic(), "cannot connect: %s", why)
                continue
            silent = time.monotonic() - self._last_heard
            if silent > self._lease_timeout:
                log.warning(
                    "the control plane was silent for %.1f s; reconnecting to announce "
                    "this subworker again",
                    silent,
                )
                self._welcomed.clear()
                self._last_heard = time.monotonic()
                self._dialer.drop_connection()
                continue
            self._send_heartbeat()

    def _send_heartbeat(self) -> None:
        """Say how loaded this subworker is, whether it drains, and which tasks it runs
        (which renews their leases), over as many heartbeats as the ids need."""
        if self._dialer is None:
            return
        running = [*self._running, *self._waiting.task_ids()]  # prefetched leases too
        for chunk in in_chunks(running, MAX_IDS_PER_MESSAGE) if running else [[]]:
            self._dialer.outbox.put(
                m.Heartbeat(
                    sent_at=time.time(),
                    load=len(running),
                    draining=self._draining,
                    running=chunk,
                )
            )


class Prefetched:
    """Tasks leased past the concurrency, in the order they start: by priority, then as
    they came (the control plane leases in that order, but a CRITICAL task leased later
    goes before a LOW one that waits here)."""

    def __init__(self) -> None:
        self._order: list[tuple[int, int, str]] = []
        self._by_id: dict[str, m.TaskAssignment] = {}
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._by_id)

    def push(self, assignment: m.TaskAssignment) -> None:
        self._by_id[assignment.task_id] = assignment
        entry = (int(assignment.priority), next(self._arrivals), assignment.task_id)
        heapq.heappush(self._order, entry)

    def pop(self) -> m.TaskAssignment | None:
        """The next task to start, or None."""
        while self._order:
            _, _, task_id = heapq.heappop(self._order)
            assignment = self._by_id.pop(task_id, None)
            if assignment is not None:
                return assignment
        return None

    def remove(self, task_id: str) -> m.TaskAssignment | None:
        """Take one task out (its entry in the order goes when it comes up)."""
        assignment = self._by_id.pop(task_id, None)
        if not self._by_id:
            self._order.clear()
        return assignment

    def clear(self) -> list[m.TaskAssignment]:
        """Take every task out, in the order they would have started."""
        ordered: list[m.TaskAssignment] = []
        while (assignment := self.pop()) is not None:
            ordered.append(assignment)
        return ordered

    def task_ids(self) -> list[str]:
        return list(self._by_id)


def _cancelled_before_start(assignment: m.TaskAssignment, worker_id: str) -> m.TaskOutcome:
    """The outcome of a prefetched task cancelled while it waited: it never ran."""
    error = TaskCancelledError(f"task {assignment.task_id} was cancelled before it started")
    return m.TaskOutcome(
        task_id=assignment.task_id,
        status=TaskStatus.CANCELLED,
        error=error_info(error),
        worker_id=worker_id,
        finished_at=time.time(),
    )
