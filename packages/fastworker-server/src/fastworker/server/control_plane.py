"""The control plane: the queue, the dispatcher, the result cache and the admin view.

Everything runs on one asyncio loop, so the state needs no locks. Frames arrive in bulk
from the listener; every reply and push goes through the peer's outbox and leaves in one
frame per peer per turn of the loop. Dispatch runs once per turn too, after all arrivals
of that turn are in, so a burst of submissions is dispatched as one batch per subworker.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable

import msgspec
from msgspec import Raw

from fastworker.client.tasks import TaskRegistry
from fastworker.protocol import (
    DEFAULT_CONTROL_PLANE_ADDRESS,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_QUEUED_TASKS,
    DEFAULT_RESULT_CACHE_SIZE,
    DEFAULT_RESULT_TTL,
    DEFAULT_TASK_HISTORY_SIZE,
    MAX_MESSAGES_PER_FRAME,
    AuthenticationError,
    ConfigurationError,
    DuplicateWorkerError,
    FastworkerError,
    InvalidArgumentsError,
    ProtocolError,
    QueueFullError,
    TaskPriority,
    TaskStatus,
    UnknownTaskError,
    WorkerLostError,
    WorkerState,
    decode_value,
    in_chunks,
)
from fastworker.protocol import messages as m

from ._transport import Listener, Peer
from ._version import __version__
from .queue import PriorityQueue
from .runner import Run, TaskRunner

__all__ = ["ControlPlane", "ControlPlaneSettings"]

log = logging.getLogger("fastworker.control_plane")

LOCAL_WORKER_ID = "control-plane"


@dataclasses.dataclass(frozen=True)
class ControlPlaneSettings:
    """How a control plane runs; every field has a command-line flag."""

    address: str = DEFAULT_CONTROL_PLANE_ADDRESS
    local_execution: bool = True
    """Run tasks in the control plane itself while no subworker is connected."""
    local_concurrency: int = max(os.cpu_count() or 1, 1)
    result_cache_size: int = DEFAULT_RESULT_CACHE_SIZE
    result_ttl: float = DEFAULT_RESULT_TTL
    max_queued_tasks: int = DEFAULT_MAX_QUEUED_TASKS
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Dispatches of one task before a lost worker fails it with WorkerLostError."""
    history_size: int = DEFAULT_TASK_HISTORY_SIZE
    """Latest tasks kept for history queries and the dashboard, whatever their state."""
    auth_token: str | None = None
    """Shared secret every client and subworker must present in its hello."""
    allow_unauthenticated: bool = False
    """Listen beyond loopback without a shared secret (for networks you trust entirely)."""


@dataclasses.dataclass(eq=False)
class _Task:
    """The control plane's record of one task."""

    task_id: str
    name: str
    priority: TaskPriority
    args: Raw
    kwargs: Raw
    timeout: float | None
    queued_at: float
    idempotency_key: str | None = None
    status: TaskStatus = TaskStatus.QUEUED
    worker_id: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    outcome: m.TaskOutcome | None = None
    watchers: set[int] = dataclasses.field(default_factory=set[int])
    """Peers (by connection id) to push the outcome to."""

    def info(self, *, payloads: bool) -> m.TaskInfo:
        outcome = self.outcome
        return m.TaskInfo(
            task_id=self.task_id,
            name=self.name,
            priority=self.priority,
            status=self.status,
            queued_at=self.queued_at,
            worker_id=self.worker_id,
            started_at=self.started_at,
            finished_at=self.finished_at,
            attempts=self.attempts,
            error=None if outcome is None else outcome.error,
            args=self.args if payloads else m.NIL,
            kwargs=self.kwargs if payloads else m.NIL,
            value=outcome.value if payloads and outcome is not None else m.NIL,
        )


@dataclasses.dataclass(eq=False)
class _Worker:
    """A connected subworker, or the control plane's own local slot pool."""

    worker_id: str
    peer: Peer | None
    """None for the local pool."""
    slots: int
    task_names: frozenset[str]
    host: str
    pid: int
    connected_at: float
    last_heartbeat: float
    state: WorkerState = WorkerState.CONNECTED
    assigned: set[str] = dataclasses.field(default_factory=set[str])
    tasks_done: int = 0
    tasks_failed: int = 0
    order: int = 0
    """Rank in the round-robin that breaks load ties."""

    @property
    def free(self) -> int:
        return self.slots - len(self.assigned) if self.state is WorkerState.CONNECTED else 0

    def info(self) -> m.WorkerInfo:
        return m.WorkerInfo(
            worker_id=self.worker_id,
            state=self.state,
            address=self.peer.address if self.peer is not None else "local",
            host=self.host,
            pid=self.pid,
            load=len(self.assigned),
            slots=self.slots,
            connected_at=self.connected_at,
            last_heartbeat=self.last_heartbeat,
            tasks_done=self.tasks_done,
            tasks_failed=self.tasks_failed,
            task_names=sorted(self.task_names),
        )


class ControlPlane:
    """Holds the queue and dispatches tasks to subworkers (or runs them itself)."""

    def __init__(
        self, registry: TaskRegistry, settings: ControlPlaneSettings | None = None
    ) -> None:
        self.registry = registry
        self.settings = settings or ControlPlaneSettings()
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = time.time()
        self._queue: PriorityQueue[_Task] = PriorityQueue(self.settings.max_queued_tasks)
        self._active: dict[str, _Task] = {}
        """Queued and running tasks."""
        self._finished: collections.OrderedDict[str, _Task] = collections.OrderedDict()
        """Finished tasks, least recently used first; bounded by count and TTL."""
        self._idempotency: dict[str, str] = {}
        self._workers: dict[str, _Worker] = {}
        self._worker_by_peer: dict[int, _Worker] = {}
        self._authenticated: set[int] = set()
        self._task_names: list[str] | None = None
        self._task_name_set: frozenset[str] = frozenset()
        self._recent: collections.deque[_Task] = collections.deque(
            maxlen=self.settings.history_size
        )
        """The latest submitted tasks, oldest first: what history queries search."""
        self._parked: dict[str, dict[str, _Task]] = {}
        """Queued tasks no connected subworker can run, by task name, in queue order."""
        self._lost_workers: collections.deque[_Worker] = collections.deque(maxlen=32)
        self._rr = itertools.count()
        self._counters = m.Counters()
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatch_scheduled = False
        self._local: _Worker | None = None
        self._runner: TaskRunner | None = None
        self._local_runs: dict[str, Run] = {}
        self._housekeeping: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the address and start serving.

        Raises:
            ConfigurationError: the address is reachable from other hosts and no shared
                secret is set (unless ``allow_unauthenticated``), or it cannot be bound.
        """
        _check_exposure(self.settings)
        self._loop = asyncio.get_running_loop()
        now = time.time()
        if self.settings.local_execution:
            self._runner = TaskRunner(
                self.registry,
                worker_id=LOCAL_WORKER_ID,
                threads=self.settings.local_concurrency,
                loop=self._loop,
            )
            self._local = _Worker(
                worker_id=LOCAL_WORKER_ID,
                peer=None,
                slots=self.settings.local_concurrency,
                task_names=frozenset(self.registry.names()),
                host=socket.gethostname(),
                pid=os.getpid(),
                connected_at=now,
                last_heartbeat=now,
            )
        self._listener = Listener(
            self.settings.address,
            loop=self._loop,
            on_frames=self._on_frames,
            on_disconnect=self._on_disconnect,
        )
        self._listener.open()
        self._housekeeping = self._loop.create_task(self._keep_house())
        log.info("control plane %s listening on %s", self.id, self.settings.address)

    async def stop(self) -> None:
        """Stop serving: say goodbye to every peer and close the socket."""
        if self._listener is None:
            return
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for worker in self._workers.values():
            if worker.peer is not None:
                worker.peer.outbox.put(m.Goodbye(reason="control plane stopping"))
                worker.peer.outbox.flush()
        for run in self._local_runs.values():
            run.discard()
        self._local_runs.clear()
        listener, self._listener = self._listener, None
        listener.close()
        if self._runner is not None:
            self._runner.close()
        self.closed.set()

    @property
    def threads_busy(self) -> int:
        """Local sync tasks still running in threads after stop()."""
        return 0 if self._runner is None else self._runner.threads_busy

    # --- frames in ----------------------------------------------------------------------

    def _on_frames(self, frames: list[tuple[Peer, bytes]]) -> None:
        for peer, data in frames:
            try:
                frame = peer.outbox.receive(data)
            except ProtocolError as exc:
                log.warning("refused a frame from %s: %s", peer.address, exc)
                peer.outbox.put(m.ErrorReply(request_id=None, error=_info(exc)))
                continue
            for message in frame.messages:
                try:
                    self._handle(peer, message)
                except FastworkerError as exc:
                    request_id: int | None = getattr(message, "request_id", None)
                    log.info("refused %s from %s: %s", type(message).__name__, peer.address, exc)
                    peer.outbox.put(m.ErrorReply(request_id=request_id, error=_info(exc)))
        self._schedule_dispatch()

    def _handle(self, peer: Peer, message: m.Message) -> None:
        if self.settings.auth_token is not None and peer.id not in self._authenticated:
            self._authenticate(peer, message)
        match message:
            case m.SubmitTask(request_id=request_id, task=request):
                ids = self._submit(peer, [request])
                peer.outbox.put(m.Accepted(request_id=request_id, task_ids=ids))
            case m.SubmitBatch(request_id=request_id, tasks=requests):
                ids = self._submit(peer, requests)
                peer.outbox.put(m.Accepted(request_id=request_id, task_ids=ids))
            case m.TasksDone(outcomes=outcomes):
                worker = self._worker_by_peer.get(peer.id)
                for outcome in outcomes:
                    self._task_done(worker, outcome)
            case m.Heartbeat():
                worker = self._worker_by_peer.get(peer.id)
                if worker is not None:
                    worker.last_heartbeat = time.time()
            case m.WatchResults(request_id=request_id, task_ids=task_ids):
                unknown = self._watch(peer, task_ids)
                peer.outbox.put(m.Watching(request_id=request_id, unknown=unknown))
            case m.CancelTasks(request_id=request_id, task_ids=task_ids):
                peer.outbox.put(self._cancel(request_id, task_ids))
            case m.StatusQuery(request_id=request_id, task_ids=task_ids):
                peer.outbox.put(self._status(request_id, task_ids, message.include_payloads))
            case m.OverviewQuery(request_id=request_id):
                peer.outbox.put(self.overview(request_id))
            case m.HistoryQuery():
                peer.outbox.put(self._history(message))
            case m.ClientHello(request_id=request_id):
                peer.outbox.put(
                    m.Welcome(
                        request_id=request_id,
                        control_plane_id=self.id,
                        library_version=__version__,
                        task_names=self._known_task_names(),
                    )
                )
            case m.WorkerHello():
                self._worker_hello(peer, message)
            case m.HandBack(task_ids=task_ids):
                worker = self._worker_by_peer.get(peer.id)
                if worker is not None:
                    self._take_back(worker, task_ids, front=True)
            case m.Goodbye():
                worker = self._worker_by_peer.get(peer.id)
                if worker is not None:
                    self._worker_gone(worker, "said goodbye")
            case _:
                raise ProtocolError(f"{type(message).__name__} is not a request to a control plane")

    def _authenticate(self, peer: Peer, message: m.Message) -> None:
        token = self.settings.auth_token
        assert token is not None
        presented = (
            message.auth_token if isinstance(message, m.ClientHello | m.WorkerHello) else None
        )
        if presented is None:
            raise AuthenticationError(
                "this control plane requires a shared secret: start with a hello that "
                "carries it (--auth-token or FASTWORKER_AUTH_TOKEN)"
            )
        if not hmac.compare_digest(presented.encode(), token.encode()):
            raise AuthenticationError("wrong shared secret")
        self._authenticated.add(peer.id)

    # --- submitting ---------------------------------------------------------------------

    def _submit(self, peer: Peer, requests: list[m.TaskRequest]) -> list[str]:
        # Check everything first: a batch is accepted whole or refused whole.
        fresh = [r for r in requests if r.idempotency_key not in self._idempotency]
        if len(fresh) > self._queue.room() - self._parked_count():
            raise QueueFullError(
                f"the queue holds {len(self._queue)} of at most {self._queue.limit} tasks; "
                "retry later"
            )
        for request in fresh:
            self._check_request(request)
        now = time.time()
        ids: list[str] = []
        for request in requests:
            key = request.idempotency_key
            if key is not None and key in self._idempotency:
                ids.append(self._idempotency[key])
                continue
            task_id = request.task_id or uuid.uuid4().hex
            if task_id in self._active or task_id in self._finished:
                raise InvalidArgumentsError(f"task id {task_id} is already in use")
            task = _Task(
                task_id=task_id,
                name=request.name,
                priority=request.priority,
                args=request.args,
                kwargs=request.kwargs,
                timeout=request.timeout,
                queued_at=now,
                idempotency_key=key,
            )
            if request.notify:
                task.watchers.add(peer.id)
            self._queue.push(task_id, task.priority, task)
            self._active[task_id] = task
            self._recent.append(task)
            if key is not None:
                self._idempotency[key] = task_id
            self._counters.submitted += 1
            ids.append(task_id)
        return ids

    def _check_request(self, request: m.TaskRequest) -> None:
        if not self._is_known_task(request.name):
            known = ", ".join(self._known_task_names()) or "none"
            raise UnknownTaskError(f"no task named {request.name!r}; registered: {known}")
        task = self.registry.get(request.name)
        if task is None:
            return  # only subworkers know it; they check the arguments
        args = decode_value(request.args)
        kwargs = decode_value(request.kwargs)
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise InvalidArgumentsError("arguments must be a list and keyword arguments a map")
        task.check_arguments(args, kwargs)  # pyright: ignore[reportUnknownArgumentType]

    def _known_task_names(self) -> list[str]:
        """Names the control plane or a connected subworker can run, sorted; cached until
        a subworker joins or leaves."""
        if self._task_names is None:
            names = set(self.registry.names())
            for worker in self._workers.values():
                names |= worker.task_names
            self._task_names = sorted(names)
            self._task_name_set = frozenset(names)
        return self._task_names

    def _is_known_task(self, name: str) -> bool:
        self._known_task_names()
        return name in self._task_name_set

    # --- dispatch -----------------------------------------------------------------------

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled and self._loop is not None:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Hand queued tasks to free slots: highest priority first, each to the
        least-loaded worker that can run it, ties broken round-robin."""
        self._dispatch_scheduled = False
        batches: dict[str, list[m.TaskAssignment]] = {}
        while True:
            task = self._queue.peek()
            if task is None:
                return self._send_batches(batches)
            worker = self._pick_worker(task.name)
            if worker is None:
                if not self._anyone_can_run(task.name):
                    # Nobody connected can run it: set it aside until a subworker that
                    # can joins, rather than let it block every task behind it.
                    self._queue.pop()
                    self._parked.setdefault(task.name, {})[task.task_id] = task
                    continue
                return self._send_batches(batches)  # strict priority: wait for a slot
            self._queue.pop()
            task.status = TaskStatus.RUNNING
            task.worker_id = worker.worker_id
            task.started_at = time.time()
            task.attempts += 1
            worker.assigned.add(task.task_id)
            self._counters.running += 1
            assignment = m.TaskAssignment(
                task_id=task.task_id,
                name=task.name,
                args=task.args,
                kwargs=task.kwargs,
                timeout=task.timeout,
                attempt=task.attempts,
            )
            if worker.peer is None:
                self._run_locally(assignment)
            else:
                batches.setdefault(worker.worker_id, []).append(assignment)

    def _send_batches(self, batches: dict[str, list[m.TaskAssignment]]) -> None:
        for worker_id, assignments in batches.items():
            peer = self._workers[worker_id].peer
            assert peer is not None
            # A subworker may have more free slots than one message may list.
            for chunk in in_chunks(assignments, MAX_MESSAGES_PER_FRAME):
                peer.outbox.put(m.Dispatch(tasks=chunk))

    def _candidates(self) -> list[_Worker]:
        remote = [w for w in self._workers.values() if w.state is WorkerState.CONNECTED]
        if remote or self._local is None:
            return remote
        return [self._local]

    def _pick_worker(self, name: str) -> _Worker | None:
        best: _Worker | None = None
        for worker in self._candidates():
            if worker.free <= 0 or name not in worker.task_names:
                continue
            if best is None or (len(worker.assigned), worker.order) < (
                len(best.assigned),
                best.order,
            ):
                best = worker
        if best is not None:
            best.order = next(self._rr)  # goes to the back of the tie-break line
        return best

    def _parked_count(self) -> int:
        return sum(len(tasks) for tasks in self._parked.values())

    def _unpark(self, names: Iterable[str]) -> None:
        """Queue again the parked tasks a newly joined subworker can run. They go to the
        front of their level, in their original order: they were in line first."""
        for name in names:
            for task in reversed(list(self._parked.pop(name, {}).values())):
                self._queue.push(task.task_id, task.priority, task, front=True)

    def _queue_depth(self) -> m.QueueDepth:
        depth = self._queue.depth()
        for tasks in self._parked.values():
            for task in tasks.values():
                level = task.priority.name.lower()
                setattr(depth, level, getattr(depth, level) + 1)
        return depth

    def _anyone_can_run(self, name: str) -> bool:
        return any(name in worker.task_names for worker in self._candidates())

    def _run_locally(self, assignment: m.TaskAssignment) -> None:
        assert self._runner is not None
        self._local_runs[assignment.task_id] = self._runner.start(assignment, self._local_run_done)

    def _local_run_done(self, outcome: m.TaskOutcome) -> None:
        self._local_runs.pop(outcome.task_id, None)
        self._task_done(self._local, outcome)
        self._schedule_dispatch()

    # --- outcomes -----------------------------------------------------------------------

    def _task_done(self, worker: _Worker | None, outcome: m.TaskOutcome) -> None:
        task = self._active.get(outcome.task_id)
        if worker is not None and outcome.task_id in worker.assigned:
            worker.assigned.discard(outcome.task_id)
            self._counters.running -= 1
            if outcome.status is TaskStatus.SUCCEEDED:
                worker.tasks_done += 1
            else:
                worker.tasks_failed += 1
        if task is None:
            # Already finished (a late result from a worker presumed dead, whose task ran
            # again elsewhere): the first outcome stands.
            log.debug("ignoring a second outcome for task %s", outcome.task_id)
            return
        if task.status is TaskStatus.QUEUED:
            self._queue.remove(task.task_id)  # requeued, but this late outcome is final
        task.started_at = outcome.started_at or task.started_at
        if outcome.worker_id:
            task.worker_id = outcome.worker_id
        self._finish(task, outcome)

    def _finish(self, task: _Task, outcome: m.TaskOutcome) -> None:
        task.status = outcome.status
        task.outcome = outcome
        task.finished_at = outcome.finished_at or time.time()
        self._active.pop(task.task_id, None)
        self._finished[task.task_id] = task
        if outcome.status is TaskStatus.SUCCEEDED:
            self._counters.succeeded += 1
        elif outcome.status is TaskStatus.CANCELLED:
            self._counters.cancelled += 1
        else:
            self._counters.failed += 1
        for peer_id in task.watchers:
            self._push(peer_id, outcome)
        task.watchers.clear()
        self._evict()

    def _push(self, peer_id: int, outcome: m.TaskOutcome) -> None:
        listener = self._listener
        peer = listener.peers.get(peer_id) if listener is not None else None
        if peer is not None:
            peer.outbox.put(m.Results(outcomes=[outcome]))

    def _evict(self) -> None:
        finished = self._finished
        while len(finished) > self.settings.result_cache_size:
            self._forget(finished.popitem(last=False)[1])
        deadline = time.time() - self.settings.result_ttl
        while finished:
            oldest = next(iter(finished.values()))
            if (oldest.finished_at or 0) >= deadline:
                break
            self._forget(finished.popitem(last=False)[1])

    def _forget(self, task: _Task) -> None:
        if task.idempotency_key is not None:
            self._idempotency.pop(task.idempotency_key, None)

    # --- watching, cancelling, queries ----------------------------------------------------

    def _watch(self, peer: Peer, task_ids: Iterable[str]) -> list[str]:
        unknown: list[str] = []
        for task_id in task_ids:
            task = self._active.get(task_id)
            if task is not None:
                task.watchers.add(peer.id)
                continue
            done = self._finished.get(task_id)
            if done is not None and done.outcome is not None:
                self._finished.move_to_end(task_id)
                peer.outbox.put(m.Results(outcomes=[done.outcome]))
            else:
                unknown.append(task_id)
        return unknown

    def _cancel(self, request_id: int, task_ids: list[str]) -> m.CancelReply:
        reply = m.CancelReply(request_id=request_id)
        for task_id in task_ids:
            task = self._active.get(task_id)
            parked = self._parked.get(task.name, {}) if task is not None else {}
            if task is not None and (
                self._queue.remove(task_id) is not None or parked.pop(task_id, None) is not None
            ):
                outcome = m.TaskOutcome(
                    task_id=task_id,
                    status=TaskStatus.CANCELLED,
                    error=m.ErrorInfo(
                        code="task_cancelled", message=f"task {task_id} was cancelled"
                    ),
                    finished_at=time.time(),
                )
                self._finish(task, outcome)
                reply.cancelled.append(task_id)
            elif task is not None or task_id in self._finished:
                reply.not_cancelled.append(task_id)
            else:
                reply.unknown.append(task_id)
        return reply

    def _lookup(self, task_id: str) -> _Task | None:
        return self._active.get(task_id) or self._finished.get(task_id)

    def _status(self, request_id: int, task_ids: list[str], payloads: bool) -> m.StatusReply:
        reply = m.StatusReply(request_id=request_id, tasks=[])
        for task_id in task_ids:
            task = self._lookup(task_id)
            if task is None:
                reply.unknown.append(task_id)
            else:
                reply.tasks.append(task.info(payloads=payloads))
        return reply

    def overview(self, request_id: int = 0) -> m.Overview:
        """Queue depth, subworkers (connected, then recently lost), tasks and counters."""
        workers = [w.info() for w in self._workers.values()]
        workers += [w.info() for w in self._lost_workers if w.worker_id not in self._workers]
        if self._local is not None and not self._workers:
            workers.append(self._local.info())
        return m.Overview(
            request_id=request_id,
            control_plane_id=self.id,
            started_at=self.started_at,
            queue_depth=self._queue_depth(),
            counters=msgspec.structs.replace(self._counters),
            workers=workers,
            task_names=self._known_task_names(),
            library_version=__version__,
            local_execution=self.settings.local_execution,
        )

    def _history(self, query: m.HistoryQuery) -> m.HistoryReply:
        # A scan of the bounded window of recent tasks, newest first: its cost does not
        # grow with the backlog, so a dashboard polling every second stays cheap.
        matching = [
            t
            for t in reversed(self._recent)
            if (query.status is None or t.status is query.status)
            and (query.priority is None or t.priority is query.priority)
            and (query.name is None or t.name == query.name)
        ]
        page = matching[query.offset : query.offset + query.limit]
        return m.HistoryReply(
            request_id=query.request_id,
            total=len(matching),
            tasks=[t.info(payloads=False) for t in page],
        )

    # --- subworkers ---------------------------------------------------------------------

    def _worker_hello(self, peer: Peer, hello: m.WorkerHello) -> None:
        existing = self._workers.get(hello.worker_id)
        if existing is not None and existing.peer is not None and existing.peer.id != peer.id:
            raise DuplicateWorkerError(
                f"a subworker with id {hello.worker_id!r} is already connected"
            )
        now = time.time()
        worker = _Worker(
            worker_id=hello.worker_id,
            peer=peer,
            slots=hello.concurrency,
            task_names=frozenset(hello.task_names),
            host=hello.host,
            pid=hello.pid,
            connected_at=now,
            last_heartbeat=now,
            order=next(self._rr),
        )
        self._workers[worker.worker_id] = worker
        self._worker_by_peer[peer.id] = worker
        self._task_names = None
        peer.outbox.put(
            m.WorkerWelcome(
                request_id=hello.request_id,
                control_plane_id=self.id,
                heartbeat_interval=self.settings.heartbeat_interval,
                lease_timeout=self.settings.lease_timeout,
            )
        )
        log.info(
            "subworker %s joined from %s with %d slots",
            worker.worker_id,
            peer.address,
            worker.slots,
        )
        self._unpark(worker.task_names)

    def _on_disconnect(self, peer: Peer) -> None:
        self._authenticated.discard(peer.id)
        worker = self._worker_by_peer.get(peer.id)
        if worker is not None:
            self._worker_gone(worker, "dropped its connection")
        self._schedule_dispatch()

    def _worker_gone(self, worker: _Worker, why: str) -> None:
        if worker.peer is not None:
            self._worker_by_peer.pop(worker.peer.id, None)
        if self._workers.get(worker.worker_id) is worker:
            del self._workers[worker.worker_id]
            self._task_names = None
        worker.state = WorkerState.LOST
        self._lost_workers.append(worker)
        if worker.assigned:
            log.warning(
                "subworker %s %s; requeueing %d tasks", worker.worker_id, why, len(worker.assigned)
            )
        else:
            log.info("subworker %s %s", worker.worker_id, why)
        self._take_back(worker, list(worker.assigned), front=True)
        if worker.peer is not None:
            worker.peer.close()
        self._schedule_dispatch()

    def _take_back(self, worker: _Worker, task_ids: list[str], *, front: bool) -> None:
        for task_id in task_ids:
            if task_id not in worker.assigned:
                continue
            worker.assigned.discard(task_id)
            self._counters.running -= 1
            task = self._active.get(task_id)
            if task is None:
                continue
            if task.attempts >= self.settings.max_attempts:
                self._finish(
                    task,
                    _failed_outcome(
                        task,
                        WorkerLostError(
                            f"task {task_id} was lost with {task.attempts} workers; giving up"
                        ),
                    ),
                )
                continue
            task.status = TaskStatus.QUEUED
            task.worker_id = ""
            self._counters.requeued += 1
            self._queue.push(task_id, task.priority, task, front=front)

    async def _keep_house(self) -> None:
        """Heartbeats out, silent workers declared lost, expired results evicted."""
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for worker in list(self._workers.values()):
                if now - worker.last_heartbeat > self.settings.lease_timeout:
                    self._worker_gone(worker, f"was silent for {now - worker.last_heartbeat:.1f} s")
                elif worker.peer is not None:
                    worker.peer.outbox.put(m.Heartbeat(sent_at=now, load=len(worker.assigned)))
            self._evict()


_LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")


def _check_exposure(settings: ControlPlaneSettings) -> None:
    """Refuse to listen beyond loopback without a shared secret."""
    address = settings.address
    if not address.startswith(("tcp://", "tls+tcp://", "ws://")):
        return  # ipc:// and inproc:// are local to this host
    host = address.split("://", 1)[1].rsplit(":", 1)[0]
    if host in _LOOPBACK_HOSTS or host.startswith("127."):
        return
    if settings.auth_token is None and not settings.allow_unauthenticated:
        raise ConfigurationError(
            f"{address} is reachable from other hosts; set a shared secret with --auth-token "
            "(or FASTWORKER_AUTH_TOKEN) on the control plane, its clients and subworkers, "
            "or pass --allow-unauthenticated on a network you trust entirely"
        )


def _info(exc: FastworkerError) -> m.ErrorInfo:
    return m.ErrorInfo(code=exc.remote_code, message=exc.message)


def _failed_outcome(task: _Task, error: FastworkerError) -> m.TaskOutcome:
    return m.TaskOutcome(
        task_id=task.task_id,
        status=TaskStatus.FAILED,
        error=_info(error),
        worker_id=task.worker_id,
        finished_at=time.time(),
    )
