"""The control plane's state and every transition of it, without sockets or clocks.

The shell (``control_plane.py``) feeds it messages, disconnections and timer ticks with
the time as an argument; it answers by appending to :attr:`ControlPlaneCore.sends` (a
message for a connection), :attr:`~ControlPlaneCore.local_starts` (a task for the
control plane to run itself) and :attr:`~ControlPlaneCore.closes` (a connection to drop).
The shell carries those out. ``now`` is always monotonic seconds; wall-clock times for
records are ``now + wall_offset``.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable

import msgspec

from fastworker.client._limiter import LogLimiter
from fastworker.client.tasks import TaskRegistry
from fastworker.protocol import (
    FEATURE_DEAD_LETTERS,
    FEATURE_DELAY,
    FEATURE_METRICS,
    FEATURE_RETRIES,
    FEATURE_SCHEDULES,
    MAX_MESSAGES_PER_FRAME,
    METRICS_BUCKETS,
    AuthenticationError,
    ConnectionLimitError,
    FastworkerError,
    ProtocolError,
    TaskPriority,
    TaskStatus,
    WorkerState,
    in_chunks,
)
from fastworker.protocol import messages as m

from ..journal import MEMORY_JOURNAL_PATH, Journal, MemoryJournal
from ..settings import ControlPlaneSettings
from .admission import Admission
from .cache import ResultCache
from .durability import Durability
from .fleet import Fleet
from .metrics import TaskMetricsBook
from .peers import WORKER_ONLY, Peers
from .records import LOCAL_WORKER_ID, Connection, TaskState, WorkerRecord, error_info
from .scheduler import Scheduler
from .schedules import Fire, Schedules, configured_schedules
from .timers import backoff

__all__ = ["CLIENT_FEATURES", "Connection", "ControlPlaneCore"]

log = logging.getLogger("fastworker.control_plane")

_WAITING = frozenset({TaskStatus.QUEUED, TaskStatus.SCHEDULED})
_SCHEDULES_PEER = -1
"""Who submits the runs of periodic tasks: no connection (no one watches them)."""
CLIENT_FEATURES = [
    FEATURE_DELAY,
    FEATURE_RETRIES,
    FEATURE_DEAD_LETTERS,
    FEATURE_SCHEDULES,
    FEATURE_METRICS,
]
"""What this control plane does for clients beyond protocol 1.0 (``Welcome.features``)."""


class ControlPlaneCore:
    """Queue, leases, load counts, result cache and idempotency keys of one control plane."""

    def __init__(
        self,
        registry: TaskRegistry,
        settings: ControlPlaneSettings,
        *,
        control_plane_id: str,
        library_version: str,
        now: float,
        wall_offset: float,
        journal: Journal | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        """Jitter of retry backoffs; a test passes a seeded one."""

        self.id = control_plane_id
        self.library_version = library_version
        self.wall_offset = wall_offset
        self.started_at = now + wall_offset
        self.counters = m.Counters()
        self.cache = ResultCache(settings.result_cache_size, settings.result_ttl)
        self.metrics = TaskMetricsBook()
        self.scheduler = Scheduler(self.counters, set(), self.metrics)
        self.workers: dict[str, WorkerRecord] = {}
        self.admission = Admission(
            registry, settings, self.scheduler, self.cache, self.counters, self.workers
        )
        self.schedules = Schedules(configured_schedules(registry, settings.schedules))
        self.durability = Durability(
            journal or MemoryJournal(),
            self.admission,
            self.scheduler,
            self.cache,
            self.counters,
            self.schedules,
        )
        path = self.durability.journal.path
        self.journal_path = path if path == MEMORY_JOURNAL_PATH else os.path.abspath(path)
        """As the overview shows it: a file's absolute path, or ``:memory:``."""
        self._fenced_log = LogLimiter(log, interval=10.0)
        self._schedule_log = LogLimiter(log, interval=10.0)
        self.local: WorkerRecord | None = None
        if settings.local_execution:
            self.local = WorkerRecord(
                worker_id=LOCAL_WORKER_ID,
                peer_id=None,
                address="local",
                slots=settings.local_concurrency,
                task_names=frozenset(registry.names()),
                host="",
                pid=0,
                connected_at=self.started_at,
                last_heard=now,
                last_heartbeat=self.started_at,
            )
        self.sends: list[tuple[int, m.Message]] = []
        """Messages to send: the shell empties this list, never replaces it."""
        self.local_starts: list[m.TaskAssignment] = []
        self.local_stops: list[str] = []
        """Tasks the control plane runs itself that a client cancelled."""
        self.closes: list[int] = []
        self.refused: list[int] = []
        """Connections to drop once the reply that says why has left (a refused hello);
        ``closes`` are dropped at once, so that a subworker declared lost cannot send
        anything more on its old connection."""
        self.peers = Peers(settings, self.counters, self.sends, self._fenced_log)
        self._auth_log = LogLimiter(log, interval=10.0)
        self._refusal_log = LogLimiter(log, interval=10.0, level=logging.INFO)
        """Refusals are the sender's to handle (it gets the error); the log keeps a
        sample, so a flood of bad requests cannot flood it."""
        self.fleet = Fleet(
            settings,
            control_plane_id=control_plane_id,
            wall_offset=wall_offset,
            admission=self.admission,
            scheduler=self.scheduler,
            counters=self.counters,
            local=self.local,
            workers=self.workers,
            sends=self.sends,
            closes=self.closes,
            finish=self._finish,
        )

    # --- messages in --------------------------------------------------------------------

    def handle(self, peer: Connection, message: m.Message, now: float) -> None:
        """One message from a connection; a refusal becomes an ErrorReply to it."""
        try:
            self._handle(peer, message, now)
        except FastworkerError as exc:
            request_id: int | None = getattr(message, "request_id", None)
            self.sends.append((peer.id, m.ErrorReply(request_id=request_id, error=error_info(exc))))
            if isinstance(exc, AuthenticationError | ConnectionLimitError):
                # A refused connection: the reply says why, then the connection goes.
                self.refused.append(peer.id)
                self._auth_log.log(
                    now, "refused %s from %s: %s", type(message).__name__, peer.address, exc
                )
            else:
                self._refusal_log.log(
                    now, "refused %s from %s: %s", type(message).__name__, peer.address, exc
                )

    def _handle(self, peer: Connection, message: m.Message, now: float) -> None:
        self.peers.check(peer, message)
        if isinstance(message, WORKER_ONLY):
            worker = self.fleet.by_peer.get(peer.id)
            if worker is None:
                self.peers.refuse_non_worker(peer, message, now)
                return
            worker.last_heard = now
            worker.last_heartbeat = now + self.wall_offset
        match message:
            case m.SubmitTask(request_id=request_id, task=request):
                self._submit(peer, request_id, [request], now)
            case m.SubmitBatch(request_id=request_id, tasks=requests):
                self._submit(peer, request_id, requests, now)
            case m.TasksDone(outcomes=outcomes):
                worker = self.fleet.by_peer[peer.id]
                for outcome in outcomes:
                    self._outcome(worker, outcome, now)
            case m.Heartbeat():
                self.fleet.heartbeat(self.fleet.by_peer[peer.id], message, now)
            case m.HandBack(task_ids=task_ids):
                worker = self.fleet.by_peer[peer.id]
                if worker.state is WorkerState.CONNECTED:
                    # Only a stopping subworker hands work back (one of protocol 1.0
                    # says so in no other way): send it nothing more.
                    self.fleet.start_drain(worker)
                self.fleet.take_back(worker, task_ids, counted=False, now=now)
            case m.WatchResults(request_id=request_id, task_ids=task_ids):
                unknown = self._watch(peer.id, task_ids)
                self.sends.append((peer.id, m.Watching(request_id=request_id, unknown=unknown)))
            case m.CancelTasks(request_id=request_id, task_ids=task_ids):
                self.sends.append((peer.id, self._cancel(request_id, task_ids, now)))
            case m.StatusQuery(request_id=request_id, task_ids=task_ids):
                reply = self._status(request_id, task_ids, message.include_payloads)
                self.sends.append((peer.id, self.peers.decodable(peer.id, reply)))
            case m.OverviewQuery(request_id=request_id):
                self.sends.append((peer.id, self.overview(request_id)))
            case m.DeadLettersQuery(request_id=request_id, offset=offset, limit=limit):
                dead = self.admission.dead
                page = [task.info(payloads=False) for task in dead.page(offset, limit)]
                reply = m.DeadLettersReply(
                    request_id=request_id, total=len(dead), tasks=page, dropped=dead.dropped
                )
                self.sends.append((peer.id, reply))
            case m.RetryDead():
                reply, fresh = self.admission.retry_dead(
                    peer.id, message, now, now + self.wall_offset
                )
                self.durability.accepted(peer.id, reply, fresh, self.sends)
            case m.PurgeDead():
                self.sends.append((peer.id, self.admission.purge_dead(message)))
            case m.SchedulesQuery(request_id=request_id):
                reply = m.SchedulesReply(request_id=request_id, schedules=self.schedules.infos())
                self.sends.append((peer.id, reply))
            case m.MetricsQuery(request_id=request_id):
                self.sends.append((peer.id, self.metrics_reply(request_id)))
            case m.HistoryQuery():
                self.sends.append(
                    (peer.id, self.peers.decodable(peer.id, self.admission.history(message)))
                )
            case m.ClientHello(request_id=request_id):
                welcome = m.Welcome(
                    request_id=request_id,
                    control_plane_id=self.id,
                    library_version=self.library_version,
                    task_names=self.admission.known_task_names(),
                    features=CLIENT_FEATURES,
                )
                self.sends.append((peer.id, welcome))
            case m.WorkerHello():
                self.fleet.hello(peer, message, now)
            case m.Goodbye():
                worker = self.fleet.by_peer.get(peer.id)
                if worker is not None:
                    self.fleet.gone(worker, "said goodbye", now)
            case _:
                raise ProtocolError(f"{type(message).__name__} is not a request to a control plane")

    def _submit(
        self, peer: Connection, request_id: int, requests: list[m.TaskRequest], now: float
    ) -> None:
        ids, new_ids = self.admission.submit(peer.id, requests, now, now + self.wall_offset)
        reply = m.Accepted(request_id=request_id, task_ids=ids)
        self.durability.accepted(peer.id, reply, new_ids, self.sends)

    def end_turn(self, now: float) -> None:
        """Once per turn of the shell's loop, after every event of the turn: dispatch,
        then commit, so that the turn's leases are stored in the same transaction as the
        submissions and outcomes (often in the same row write)."""
        self.dispatch(now)
        self.commit(now)

    def commit(self, now: float) -> None:
        """Store what changed since the last commit; then the replies that waited for it
        go out. A submission the journal refused is taken back, dispatched or not."""
        taken_back = self.durability.commit(now, self.sends)
        if taken_back:
            self.fleet.withdraw(taken_back, self.local_starts)
            for task in taken_back:  # a dead letter whose new submission was refused
                old = self.admission.lookup(task.retry_of) if task.retry_of else None
                if old is not None and not old.dead:
                    self.admission.dead.add(old)

    def restore(self, now: float) -> None:
        """Read the journal back; call once, before the first message."""
        wall = now + self.wall_offset
        for task in self.durability.restore(now, self.wall_offset, self.settings.max_attempts):
            self._finish(task, self.durability.lost_outcome(task, wall), now)
        stored = self.durability.journal.load_schedules()
        self._fire(self.schedules.start(stored, wall), now)
        self.scheduler.release_due(now)  # what fell due while the control plane was down

    # --- dispatch -----------------------------------------------------------------------

    def dispatch(self, now: float) -> None:
        """Hand queued tasks to free slots: highest priority first, each to the
        least-loaded worker that can run it, ties broken round-robin. Scheduled tasks
        whose time has come join their levels first, after the periodic tasks due."""
        if self.schedules.entries:
            self._fire(self.schedules.due(now + self.wall_offset), now)
        self.scheduler.release_due(now)
        candidates = self._candidates()
        batches = self.scheduler.dispatch(candidates, now, now + self.wall_offset)
        for worker, assignments in batches:
            if worker.peer_id is None:
                self.local_starts.extend(assignments)
                continue
            # A subworker may have more free slots than one message may list.
            for chunk in in_chunks(assignments, MAX_MESSAGES_PER_FRAME):
                self.sends.append((worker.peer_id, m.Dispatch(tasks=chunk)))

    def _fire(self, fires: list[Fire], now: float) -> None:
        """Submit the runs of periodic tasks that are due: each with no arguments, the
        task's own options where the control plane imports it, and a key that no other
        run of its schedule has. A run the queue refuses is skipped (and counted)."""
        wall = now + self.wall_offset
        registry = self.admission.registry
        for fire in fires:
            task = registry.get(fire.name)
            request = m.TaskRequest(
                name=fire.name,
                priority=task.priority if task is not None else TaskPriority.NORMAL,
                timeout=task.timeout if task is not None else None,
                idempotency_key=f"schedule:{fire.name}:{fire.when!r}",
                notify=False,
            )
            try:
                ids, fresh = self.admission.submit(
                    _SCHEDULES_PEER, [request], now, wall, any_name=True
                )
            except FastworkerError as exc:
                self.schedules.refused(fire)
                self._schedule_log.log(now, "schedule %s: run skipped: %s", fire.name, exc)
                continue
            if fresh:
                run = self.admission.active[fresh[0]]
                run.schedule = fire.name
                run.fire_time = fire.when
            self.schedules.fired(fire, ids[0])

    def _candidates(self) -> list[WorkerRecord]:
        """Who may be given work now. The control plane runs tasks itself only while no
        subworker is connected at all: one that drains still counts."""
        if self.workers or self.local is None:
            return [w for w in self.workers.values() if w.state is WorkerState.CONNECTED]
        return [self.local]

    # --- outcomes -----------------------------------------------------------------------

    def local_done(self, outcome: m.TaskOutcome, now: float) -> None:
        """A task the control plane ran itself ended."""
        assert self.local is not None
        self._outcome(self.local, outcome, now)

    def _outcome(self, worker: WorkerRecord, outcome: m.TaskOutcome, now: float) -> None:
        task_id = outcome.task_id
        task = self.admission.active.get(task_id)
        if task_id in worker.assigned:
            worker.assigned.discard(task_id)
            self.counters.running -= 1
            if outcome.status is TaskStatus.SUCCEEDED:
                worker.tasks_done += 1
            else:
                worker.tasks_failed += 1
        elif (
            task is not None
            and task.status is TaskStatus.QUEUED
            and task.last_holder == worker.worker_id
        ):
            # Its lease was taken back, but the task has not started again: the first
            # outcome stands, and the queued copy goes.
            self.scheduler.unqueue(task)
        else:
            self.counters.fenced += 1
            if task is None or task.last_holder != worker.worker_id:
                self._fenced_log.log(
                    now,
                    "ignored an outcome for task %s from subworker %s, which does not hold it",
                    task_id,
                    worker.worker_id,
                    extra={"task_id": task_id, "worker_id": worker.worker_id},
                )
            return  # otherwise a late outcome after the task ran again: the first stands
        assert task is not None
        started, finished = outcome.started_at, outcome.finished_at
        # The runner's own clock when it gave both: no network, no clock skew.
        ran = (
            finished - started
            if started is not None and finished is not None
            else now - task.leased
        )
        self.metrics.of_task(task).ran(task.priority, ran)
        if started is not None:
            task.started_at = started
        if outcome.worker_id:
            task.worker_id = outcome.worker_id
        if outcome.retry and outcome.status is TaskStatus.FAILED and task.retries_left:
            self._retry(task, outcome, now)
            return
        self._finish(task, outcome, now)

    def _retry(self, task: TaskState, outcome: m.TaskOutcome, now: float) -> None:
        """A failed attempt with a retry left: wait in the timers, not in a slot. Its
        watchers keep waiting; they hear of the final outcome only."""
        assert task.retry is not None
        task.retries_used += 1
        task.last_error = outcome.error
        task.last_holder = ""
        delay = outcome.retry_delay
        if delay is None:
            delay = backoff(task.retry, task.retries_used, self._rng)
        self.counters.retried += 1
        self.metrics.of_task(task).retried += 1
        self.scheduler.schedule(task, now + delay, now + self.wall_offset + delay)

    def _finish(self, task: TaskState, outcome: m.TaskOutcome, now: float) -> None:
        self.admission.finish(task, outcome, now)
        for peer_id in task.watchers:
            self.sends.append((peer_id, m.Results(outcomes=[outcome])))
        task.watchers.clear()

    # --- watching, cancelling, queries ----------------------------------------------------

    def _watch(self, peer_id: int, task_ids: Iterable[str]) -> list[str]:
        unknown: list[str] = []
        for task_id in task_ids:
            task = self.admission.active.get(task_id)
            if task is not None:
                task.watchers.add(peer_id)
                continue
            done = self.cache.use(task_id)
            if done is not None and done.outcome is not None:
                self.sends.append((peer_id, m.Results(outcomes=[done.outcome])))
            else:
                unknown.append(task_id)
        return unknown

    def _cancel(self, request_id: int, task_ids: list[str], now: float) -> m.CancelReply:
        reply = m.CancelReply(request_id=request_id)
        for task_id in task_ids:
            task = self.admission.active.get(task_id)
            if task is not None and task.status in _WAITING:
                self.scheduler.unqueue(task)
                outcome = m.TaskOutcome(
                    task_id=task_id,
                    status=TaskStatus.CANCELLED,
                    error=m.ErrorInfo(
                        code="task_cancelled", message=f"task {task_id} was cancelled"
                    ),
                    finished_at=now + self.wall_offset,
                )
                self._finish(task, outcome, now)
                reply.cancelled.append(task_id)
            elif task is not None and task.status is TaskStatus.RUNNING and self._stop(task):
                reply.stopping.append(task_id)
            elif task is not None or self.admission.lookup(task_id) is not None:
                reply.not_cancelled.append(task_id)
            else:
                reply.unknown.append(task_id)
        return reply

    def _stop(self, task: TaskState) -> bool:
        """Ask whoever runs ``task`` to stop it; False if it cannot (a 1.0 subworker).
        Its outcome, ``cancelled``, comes back like any other."""
        worker = self.workers.get(task.worker_id)
        if worker is None and self.local is not None and task.worker_id == self.local.worker_id:
            self.local_stops.append(task.task_id)
            return True
        if worker is None or not worker.cancels or worker.peer_id is None:
            return False
        self.sends.append((worker.peer_id, m.StopTasks(task_ids=[task.task_id])))
        return True

    def _status(self, request_id: int, task_ids: list[str], payloads: bool) -> m.StatusReply:
        reply = m.StatusReply(request_id=request_id, tasks=[])
        for task_id in task_ids:
            task = self.admission.lookup(task_id)
            if task is None:
                reply.unknown.append(task_id)
            else:
                reply.tasks.append(task.info(payloads=payloads))
        return reply

    def next_due(self) -> float | None:
        """When the earliest scheduled task or periodic run is due (monotonic), for the
        shell's one timer; None when none waits."""
        due = self.scheduler.timers.next_due()
        fire = self.schedules.next_fire()
        if fire is None:
            return due
        fire -= self.wall_offset
        return fire if due is None else min(due, fire)

    def overview(self, request_id: int = 0) -> m.Overview:
        """Queue depth, subworkers (connected, then recently lost), tasks and counters."""
        journal = self.durability.journal
        workers = [w.info() for w in self.workers.values()]
        workers += [w.info() for w in self.fleet.lost if w.worker_id not in self.workers]
        if self.local is not None and not self.workers:
            workers.append(self.local.info())
        return m.Overview(
            request_id=request_id,
            control_plane_id=self.id,
            started_at=self.started_at,
            queue_depth=self.scheduler.depth(),
            counters=msgspec.structs.replace(self.counters),
            workers=workers,
            task_names=self.admission.known_task_names(),
            library_version=self.library_version,
            local_execution=self.settings.local_execution,
            journal=self.journal_path,
            journal_sync=journal.sync,
            journal_bytes=journal.size(),
        )

    def metrics_reply(self, request_id: int = 0) -> m.MetricsReply:
        """Counts per task name since the start, their histograms, and the gauges of now:
        a copy, which later events do not change."""
        commits = self.durability.journal.commit_times
        workers = [
            m.WorkerLoad(
                worker_id=w.worker_id,
                state=w.state,
                load=len(w.assigned),
                slots=w.slots,
                prefetch=w.prefetch,
            )
            for w in self.workers.values()
        ]
        return m.MetricsReply(
            request_id=request_id,
            buckets=list(METRICS_BUCKETS),
            tasks=self.metrics.samples(),
            queue_depth=self.scheduler.depth(),
            running=self.counters.running,
            scheduled=self.counters.scheduled,
            requeued=self.counters.requeued,
            dead_letters=self.counters.dead_letters,
            dead_letters_dropped=self.admission.dead.dropped,
            workers=workers[:MAX_MESSAGES_PER_FRAME],
            journal_commits=None if commits is None else commits.sample(),
        )

    # --- subworkers and time ------------------------------------------------------------

    def disconnected(self, peer_id: int, now: float) -> None:
        """A connection is gone."""
        self.peers.gone(peer_id)
        self.fleet.disconnected(peer_id, now)

    def tick(self, now: float) -> None:
        """Once a heartbeat interval: heartbeats out, silent subworkers and expired
        leases taken back, expired results dropped."""
        self.fleet.tick(now)
        self.admission.expire(now)
