"""Who runs what next: the queue, the parked tasks and the least-loaded pick."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from fastworker.protocol import TaskStatus
from fastworker.protocol import messages as m

from ..queue import PriorityQueue
from .metrics import TaskMetricsBook
from .records import TaskState, WorkerRecord
from .timers import Timers

__all__ = ["Scheduler"]


class Scheduler:
    """Queued tasks in strict priority order, FIFO within a level. A task no candidate
    can run is parked: still queued (counted, cancellable) but out of line. A task that
    waits for a time is in :attr:`timers` and joins the back of its level when due."""

    def __init__(self, counters: m.Counters, dirty: set[str], metrics: TaskMetricsBook) -> None:
        self.dirty = dirty
        """Ids of tasks changed since the journal last heard (shared with Admission)."""
        self.metrics = metrics
        """Counts and durations per task name (shared with Admission and the core)."""
        self.queue: PriorityQueue[TaskState] = PriorityQueue()
        self.parked: dict[str, dict[str, TaskState]] = {}
        """Parked tasks by name, in queue order."""
        self.timers = Timers(counters)
        self._counters = counters
        self._back = 0
        self._front = 0
        """Queue places handed out at each end of a level (``TaskState.order``)."""
        self._turns = itertools.count()

    def next_turn(self) -> int:
        """A rank at the back of the round-robin that breaks load ties."""
        return next(self._turns)

    def enqueue(self, task: TaskState, now: float) -> None:
        """A new task, at the back of its level."""
        task.ready = now
        self._back += 1
        task.order = self._back
        self.queue.push(task.task_id, task.priority, task)

    def requeue(self, task: TaskState, now: float) -> None:
        """A task whose lease ended without an outcome, at the front of its level: it was
        first in line once."""
        task.ready = now
        task.status = TaskStatus.QUEUED
        task.last_holder = task.worker_id
        task.worker_id = ""
        self._counters.requeued += 1
        self.dirty.add(task.task_id)
        self._front -= 1
        task.order = self._front
        self.queue.push(task.task_id, task.priority, task, front=True)

    def restore(self, tasks: Iterable[TaskState], now: float) -> None:
        """Queued tasks read back at start, each keeping its place."""
        ordered = sorted(tasks, key=lambda task: task.order)
        for task in ordered:
            task.ready = now
            self.queue.push(task.task_id, task.priority, task)
        if ordered:
            self._front = min(self._front, ordered[0].order)
            self._back = max(self._back, ordered[-1].order)

    def schedule(self, task: TaskState, due: float, not_before: float) -> None:
        """Hold a task until monotonic time ``due`` (``not_before`` on the wall clock)."""
        task.not_before = not_before
        self.timers.add(task, due)
        self.dirty.add(task.task_id)

    def release_due(self, now: float) -> None:
        """Queue the scheduled tasks whose time has come, at the back of their levels in
        the order they fell due: from here on, strict priority decides."""
        for task in self.timers.pop_due(now):
            task.status = TaskStatus.QUEUED
            self.dirty.add(task.task_id)
            self.enqueue(task, now)

    def unqueue(self, task: TaskState) -> bool:
        """Take a queued, parked or scheduled task out of line; whether it was there."""
        if self.timers.discard(task):
            return True
        if self.queue.remove(task.task_id) is not None:
            return True
        return self.parked.get(task.name, {}).pop(task.task_id, None) is not None

    def unpark(self, names: Iterable[str]) -> None:
        """Queue again the parked tasks a newly joined subworker can run, at the front of
        their level in their original order: they were in line first."""
        for name in names:
            for task in reversed(list(self.parked.pop(name, {}).values())):
                self.queue.push(task.task_id, task.priority, task, front=True)

    def depth(self) -> m.QueueDepth:
        depth = self.queue.depth()
        for tasks in self.parked.values():
            for task in tasks.values():
                level = task.priority.name.lower()
                setattr(depth, level, getattr(depth, level) + 1)
        return depth

    def dispatch(
        self, candidates: list[WorkerRecord], now: float, wall: float
    ) -> list[tuple[WorkerRecord, list[m.TaskAssignment]]]:
        """Lease queued tasks to free slots of ``candidates``, each to the least-loaded
        one that runs its name, ties to the one picked least recently. The oldest task of
        the highest level waits for a slot rather than let a lower one overtake it."""
        batches: dict[str, tuple[WorkerRecord, list[m.TaskAssignment]]] = {}
        queue = self.queue
        metrics = self.metrics
        while True:
            task = queue.peek()
            if task is None:
                break
            worker = self._pick(candidates, task.name)
            if worker is None:
                if any(task.name in w.task_names for w in candidates):
                    break  # strict priority: wait for a slot
                # Nobody connected can run it: set it aside until a subworker that can
                # joins, rather than let it block every task behind it.
                queue.pop()
                self.parked.setdefault(task.name, {})[task.task_id] = task
                continue
            queue.pop()
            metrics.of_task(task).waited(task.priority, now - task.ready)
            task.status = TaskStatus.RUNNING
            task.worker_id = worker.worker_id
            task.started_at = wall
            task.attempts += 1
            task.leased = task.renewed = now
            worker.assigned.add(task.task_id)
            self.dirty.add(task.task_id)
            self._counters.running += 1
            assignment = m.TaskAssignment(
                task_id=task.task_id,
                name=task.name,
                args=task.args,
                kwargs=task.kwargs,
                timeout=task.timeout,
                attempt=task.attempts,
                retry_on=task.retry.retry_on
                if task.retry is not None and task.retries_left
                else [],
                headers=task.headers,
                priority=task.priority,
            )
            entry = batches.get(worker.worker_id)
            if entry is None:
                batches[worker.worker_id] = (worker, [assignment])
            else:
                entry[1].append(assignment)
        return list(batches.values())

    def _pick(self, candidates: list[WorkerRecord], name: str) -> WorkerRecord | None:
        best: WorkerRecord | None = None
        for worker in candidates:
            if worker.free <= 0 or name not in worker.task_names:
                continue
            if best is None or (len(worker.assigned), worker.order) < (
                len(best.assigned),
                best.order,
            ):
                best = worker
        if best is not None:
            best.order = next(self._turns)  # to the back of the tie-break line
        return best
