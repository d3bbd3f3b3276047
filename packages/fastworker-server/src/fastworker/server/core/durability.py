"""What the journal has yet to hear, the replies that wait for it, and the state read back
from it at start.

Every change of a task marks its id dirty; :meth:`Durability.commit` writes every dirty
task (or deletes it, once forgotten) in one call per event-loop turn, and only then lets
the ``Accepted`` replies of that turn go. A write that fails takes back the submissions
it carried and answers them with the error: nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import contextlib
import logging

from fastworker.client._limiter import LogLimiter
from fastworker.protocol import StorageError, TaskStatus, WorkerLostError
from fastworker.protocol import messages as m

from ..journal import MEMORY_JOURNAL_PATH, Journal, TaskRecord
from .admission import Admission
from .cache import ResultCache
from .records import TaskState, error_info, failed_outcome
from .scheduler import Scheduler
from .schedules import Schedules

__all__ = ["Durability"]

log = logging.getLogger("fastworker.control_plane")


class Durability:
    """The journal's side of the core."""

    def __init__(
        self,
        journal: Journal,
        admission: Admission,
        scheduler: Scheduler,
        cache: ResultCache,
        counters: m.Counters,
        schedules: Schedules,
    ) -> None:
        self.journal = journal
        self.durable = journal.path != MEMORY_JOURNAL_PATH
        self.dirty = admission.dirty
        self._held: list[tuple[int, m.Accepted | m.RetriedDead, list[str]]] = []
        """Accepted replies waiting for their tasks to be stored, with the new ids."""
        self._admission = admission
        self._scheduler = scheduler
        self._cache = cache
        self._counters = counters
        self._schedules = schedules
        self._log = LogLimiter(log, interval=10.0)
        self.failing = False

    def accepted(
        self,
        peer_id: int,
        reply: m.Accepted | m.RetriedDead,
        new_ids: list[str],
        sends: list[tuple[int, m.Message]],
    ) -> None:
        """Send ``reply`` once its tasks are stored (at once without a journal)."""
        if self.durable:
            self._held.append((peer_id, reply, new_ids))
        else:
            sends.append((peer_id, reply))

    def commit(self, now: float, sends: list[tuple[int, m.Message]]) -> list[TaskState]:
        """Store every task changed since the last commit, then release the replies.
        Returns the tasks taken back because the write failed (the caller undoes what
        else it did with them, such as a dispatch)."""
        schedules = self._schedules
        if not self.durable:
            self.dirty.clear()
            schedules.take_changes()
            return []
        if not self.dirty and not self._held and not schedules.changed:
            return []
        upserts: list[TaskRecord] = []
        deletes: list[str] = []
        lookup = self._admission.lookup
        for task_id in self.dirty:
            task = lookup(task_id)
            if task is None:
                deletes.append(task_id)
            else:
                upserts.append(_record(task))
        changed, removed = schedules.take_changes()
        try:
            self.journal.write(upserts, deletes, changed, removed)
        except StorageError as exc:
            schedules.give_back(changed, removed)
            self.failing = True
            self._log.log(now, "the journal refused a write; its submissions are refused: %s", exc)
            held, self._held = self._held, []
            error = error_info(exc)
            taken_back: list[TaskState] = []
            for peer_id, reply, new_ids in held:
                taken_back += self._take_back_submission(new_ids)
                sends.append((peer_id, m.ErrorReply(request_id=reply.request_id, error=error)))
            return taken_back  # what is still dirty is tried again with the next commit
        if self.failing:
            self.failing = False
            log.info("the journal takes writes again")
        self.dirty.clear()
        sends.extend((peer_id, reply) for peer_id, reply, _ in self._held)
        self._held.clear()
        return []

    def _take_back_submission(self, task_ids: list[str]) -> list[TaskState]:
        """Forget tasks whose submission could not be stored: as if never sent."""
        admission = self._admission
        taken_back: list[TaskState] = []
        for task_id in task_ids:
            task = admission.active.pop(task_id, None) or self._cache.remove(task_id)
            if task is None:
                continue
            taken_back.append(task)
            self._scheduler.unqueue(task)
            with contextlib.suppress(ValueError):  # already out of the history window
                admission.recent.remove(task)
            key = task.idempotency_key
            if key is not None and admission.idempotency.get(key) == task_id:
                del admission.idempotency[key]
            self._counters.submitted -= 1
            admission.metrics.of_task(task).submitted -= 1
        return taken_back

    def restore(self, now: float, wall_offset: float, max_attempts: int) -> list[TaskState]:
        """Read the journal back into an empty core. Queued tasks keep their places; tasks
        that were leased when the control plane stopped go to the front of their level
        with that attempt counted, or fail past ``max_attempts``. Returns the tasks that
        failed so (the caller finishes them)."""
        records = sorted(self.journal.load(), key=lambda r: r.queued_at)
        wall = now + wall_offset
        queued: list[TaskState] = []
        leased: list[TaskState] = []
        scheduled: list[TaskState] = []
        finished: list[TaskState] = []
        for record in records:
            task = _task(record)
            if task.status.is_final:
                finished.append(task)
                # Ages carry over: a result keeps its time to live across restarts.
                task.done = now - max(0.0, wall - (task.finished_at or wall))
            elif task.status is TaskStatus.RUNNING:
                leased.append(task)
            elif task.status is TaskStatus.SCHEDULED:
                scheduled.append(task)
            else:
                queued.append(task)
            self._admission.restore(task)
        for task in sorted(finished, key=lambda t: t.done):
            self._admission.restore_finished(task)
        self._admission.dead.restore(t for t in finished if t.dead)
        self._scheduler.restore(queued, now)
        for task in sorted(scheduled, key=lambda t: t.not_before or 0.0):
            # A time that passed while the control plane was down is due at once.
            not_before = task.not_before if task.not_before is not None else wall
            self._scheduler.schedule(task, now + max(0.0, not_before - wall), not_before)
        lost: list[TaskState] = []
        for task in sorted(leased, key=lambda t: t.order, reverse=True):
            self.dirty.add(task.task_id)
            if task.lost >= max_attempts:
                lost.append(task)
            else:
                self._scheduler.requeue(task, now)
        self._admission.expire(now)
        if records:
            log.info(
                "journal %s: %d queued, %d scheduled, %d were running (queued again), %d results",
                self.journal.path,
                len(queued),
                len(scheduled),
                len(leased),
                len(finished),
            )
        return lost

    @staticmethod
    def lost_outcome(task: TaskState, wall: float) -> m.TaskOutcome:
        error = WorkerLostError(
            f"task {task.task_id} was running when the control plane stopped, "
            f"{task.attempts} times; giving up"
        )
        return failed_outcome(task, error, wall)


def _record(task: TaskState) -> TaskRecord:
    return TaskRecord(
        task_id=task.task_id,
        name=task.name,
        priority=task.priority,
        args=task.args,
        kwargs=task.kwargs,
        timeout=task.timeout,
        queued_at=task.queued_at,
        idempotency_key=task.idempotency_key,
        status=task.status,
        attempts=task.attempts,
        order=task.order,
        worker_id=task.worker_id,
        started_at=task.started_at,
        finished_at=task.finished_at,
        outcome=task.outcome,
        retry=task.retry,
        retries_used=task.retries_used,
        not_before=task.not_before,
        last_error=task.last_error,
        dead=task.dead,
        retry_of=task.retry_of,
        schedule=task.schedule,
        fire_time=task.fire_time,
        headers=task.headers,
    )


def _task(record: TaskRecord) -> TaskState:
    return TaskState(
        task_id=record.task_id,
        name=record.name,
        priority=record.priority,
        args=record.args,
        kwargs=record.kwargs,
        timeout=record.timeout,
        queued_at=record.queued_at,
        idempotency_key=record.idempotency_key,
        status=record.status,
        worker_id=record.worker_id,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempts=record.attempts,
        order=record.order,
        outcome=record.outcome,
        retry=record.retry,
        retries_used=record.retries_used,
        not_before=record.not_before,
        last_error=record.last_error,
        dead=record.dead,
        retry_of=record.retry_of,
        schedule=record.schedule,
        fire_time=record.fire_time,
        headers=record.headers,
    )
