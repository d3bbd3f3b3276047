"""The subworkers as the control plane sees them: who joined, who drains, who went
silent, and the leases each holds, with their deadlines."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from fastworker.protocol import (
    FEATURE_CANCEL,
    FEATURE_LEASES,
    DuplicateWorkerError,
    TaskStatus,
    WorkerLostError,
    WorkerState,
)
from fastworker.protocol import messages as m

from ..settings import ControlPlaneSettings
from .admission import Admission
from .records import LOCAL_WORKER_ID, Connection, TaskState, WorkerRecord, failed_outcome
from .scheduler import Scheduler

__all__ = ["Fleet"]

log = logging.getLogger("fastworker.control_plane")

Finish = Callable[[TaskState, m.TaskOutcome, float], None]


class Fleet:
    """Connected subworkers by id and by connection, and the last ones lost."""

    def __init__(
        self,
        settings: ControlPlaneSettings,
        *,
        control_plane_id: str,
        wall_offset: float,
        admission: Admission,
        scheduler: Scheduler,
        counters: m.Counters,
        local: WorkerRecord | None,
        workers: dict[str, WorkerRecord],
        sends: list[tuple[int, m.Message]],
        closes: list[int],
        finish: Finish,
    ) -> None:
        self.settings = settings
        self.id = control_plane_id
        self.wall_offset = wall_offset
        self.admission = admission
        self.scheduler = scheduler
        self.counters = counters
        self.local = local
        self.sends = sends
        """The core's list of messages to send (shared, never replaced)."""
        self.closes = closes
        self._finish = finish
        self.workers = workers
        """Connected subworkers by id (the dict Admission reads names from)."""
        self.by_peer: dict[int, WorkerRecord] = {}
        self.lost: list[WorkerRecord] = []
        """The last subworkers lost, for the admin view."""

    def hello(self, peer: Connection, hello: m.WorkerHello, now: float) -> None:
        existing = self.workers.get(hello.worker_id)
        if existing is not None and existing.peer_id != peer.id:
            raise DuplicateWorkerError(
                f"a subworker with id {hello.worker_id!r} is already connected"
            )
        if existing is None:
            worker = WorkerRecord(
                worker_id=hello.worker_id,
                peer_id=peer.id,
                address=peer.address,
                slots=hello.concurrency,
                task_names=frozenset(hello.task_names),
                host=hello.host,
                pid=hello.pid,
                connected_at=now + self.wall_offset,
                last_heard=now,
                last_heartbeat=now + self.wall_offset,
                renews_leases=FEATURE_LEASES in hello.features,
                cancels=FEATURE_CANCEL in hello.features,
                order=self.scheduler.next_turn(),
                prefetch=hello.prefetch,
            )
            self.workers[worker.worker_id] = worker
            self.by_peer[peer.id] = worker
        else:
            # The same connection announcing itself again keeps what it holds.
            worker = existing
            worker.slots = hello.concurrency
            worker.prefetch = hello.prefetch
            worker.task_names = frozenset(hello.task_names)
            worker.renews_leases = FEATURE_LEASES in hello.features
            worker.cancels = FEATURE_CANCEL in hello.features
        self.admission.names_changed()
        self.sends.append(
            (
                peer.id,
                m.WorkerWelcome(
                    request_id=hello.request_id,
                    control_plane_id=self.id,
                    heartbeat_interval=self.settings.heartbeat_interval,
                    lease_timeout=self.settings.lease_timeout,
                    features=[FEATURE_LEASES],
                ),
            )
        )
        log.info(
            "subworker %s joined from %s with %d slots%s",
            worker.worker_id,
            peer.address,
            worker.slots,
            f" and a prefetch of {worker.prefetch}" if worker.prefetch else "",
        )
        self.scheduler.unpark(worker.task_names)

    def heartbeat(self, worker: WorkerRecord, beat: m.Heartbeat, now: float) -> None:
        if beat.draining and worker.state is WorkerState.CONNECTED:
            self.start_drain(worker)
        active = self.admission.active
        for task_id in beat.running:
            if task_id in worker.assigned:
                active[task_id].renewed = now

    def start_drain(self, worker: WorkerRecord) -> None:
        worker.state = WorkerState.DRAINING
        log.info(
            "subworker %s is draining; %d tasks still running there",
            worker.worker_id,
            len(worker.assigned),
        )

    def disconnected(self, peer_id: int, now: float) -> None:
        """A connection is gone."""
        worker = self.by_peer.get(peer_id)
        if worker is not None:
            self.gone(worker, "dropped its connection", now)

    def gone(self, worker: WorkerRecord, why: str, now: float) -> None:
        if worker.peer_id is not None:
            self.by_peer.pop(worker.peer_id, None)
            self.closes.append(worker.peer_id)
        if self.workers.get(worker.worker_id) is worker:
            del self.workers[worker.worker_id]
            self.admission.names_changed()
            if not self.workers and self.local is not None:
                self.scheduler.unpark(self.local.task_names)  # it runs them itself now
        worker.state = WorkerState.LOST
        self.lost = [*self.lost[-31:], worker]
        if worker.assigned:
            log.warning(
                "subworker %s %s; requeueing %d tasks", worker.worker_id, why, len(worker.assigned)
            )
        else:
            log.info("subworker %s %s", worker.worker_id, why)
        self.take_back(worker, list(worker.assigned), counted=True, now=now)

    def take_back(
        self, worker: WorkerRecord, task_ids: Iterable[str], *, counted: bool, now: float
    ) -> None:
        """Leases end without an outcome. ``counted``: the attempt counts (the worker was
        lost); otherwise the worker handed the task back and it is as if never sent."""
        taken: list[TaskState] = []
        for task_id in task_ids:
            if task_id not in worker.assigned:
                if not counted:
                    self.counters.fenced += 1
                continue
            worker.assigned.discard(task_id)
            self.counters.running -= 1
            taken.append(self.admission.active[task_id])
        # Front of their levels, in the order they were first queued.
        for task in sorted(taken, key=_queue_order, reverse=True):
            if not counted:
                task.attempts -= 1
            elif task.lost >= self.settings.max_attempts:
                error = WorkerLostError(
                    f"task {task.task_id} was lost with {task.lost} workers; giving up"
                )
                self._finish(task, failed_outcome(task, error, now + self.wall_offset), now)
                continue
            self.scheduler.requeue(task, now)

    def withdraw(self, tasks: list[TaskState], local_starts: list[m.TaskAssignment]) -> None:
        """Undo the leases of tasks forgotten before their Dispatch left (their submission
        could not be stored): out of their holder's load and out of the messages."""
        ids: set[str] = set()
        for task in tasks:
            if task.status is not TaskStatus.RUNNING:
                continue
            holder = self.local if task.worker_id == LOCAL_WORKER_ID else None
            holder = holder or self.workers.get(task.worker_id)
            if holder is not None and task.task_id in holder.assigned:
                holder.assigned.discard(task.task_id)
                self.counters.running -= 1
            ids.add(task.task_id)
        if not ids:
            return
        local_starts[:] = [a for a in local_starts if a.task_id not in ids]
        kept: list[tuple[int, m.Message]] = []
        for peer_id, message in self.sends:
            if isinstance(message, m.Dispatch):
                message.tasks = [a for a in message.tasks if a.task_id not in ids]
                if not message.tasks:
                    continue
            kept.append((peer_id, message))
        self.sends[:] = kept

    def tick(self, now: float) -> None:
        """Once a heartbeat interval: heartbeats out, silent subworkers and expired
        leases taken back."""
        timeout = self.settings.lease_timeout
        for worker in list(self.workers.values()):
            silent = now - worker.last_heard
            if silent > timeout:
                self.gone(worker, f"was silent for {silent:.1f} s", now)
                continue
            expired = [
                task_id
                for task_id in worker.assigned
                if _lease_expired(self.admission.active[task_id], worker, now, timeout)
            ]
            if expired:
                log.warning(
                    "subworker %s holds %d tasks past their lease; taking them back",
                    worker.worker_id,
                    len(expired),
                )
                self.take_back(worker, expired, counted=True, now=now)
            assert worker.peer_id is not None
            beat = m.Heartbeat(sent_at=now + self.wall_offset, load=len(worker.assigned))
            self.sends.append((worker.peer_id, beat))


def _lease_expired(task: TaskState, worker: WorkerRecord, now: float, timeout: float) -> bool:
    if worker.renews_leases:
        return now - task.renewed > timeout
    # A subworker of protocol 1.0 does not say what it runs: only a task with a time
    # limit has a deadline (the subworker reports the limit's outcome itself).
    return task.timeout is not None and now - task.leased > task.timeout + timeout


def _queue_order(task: TaskState) -> int:
    return task.order
