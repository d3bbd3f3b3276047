"""Tasks from submission to the result cache: admission checks, idempotency keys, the
bounded history window, and what finishing a task does to the books."""

from __future__ import annotations

import collections
import uuid

from fastworker.client.tasks import TaskRegistry
from fastworker.protocol import (
    MAX_IDS_PER_MESSAGE,
    InvalidArgumentsError,
    QueueFullError,
    TaskStatus,
    UnknownTaskError,
    decode_value,
)
from fastworker.protocol import messages as m

from ..settings import ControlPlaneSettings
from .cache import ResultCache
from .dead_letters import DeadLetters
from .records import TaskState, WorkerRecord
from .scheduler import Scheduler

__all__ = ["Admission"]


class Admission:
    """Every task the control plane knows: active (queued or running) or finished."""

    def __init__(
        self,
        registry: TaskRegistry,
        settings: ControlPlaneSettings,
        scheduler: Scheduler,
        cache: ResultCache,
        counters: m.Counters,
        workers: dict[str, WorkerRecord],
    ) -> None:
        self.registry = registry
        self._workers = workers
        """The connected subworkers (the core's own dict): whose names count as known."""
        self.limit = settings.max_queued_tasks
        """Tasks not yet finished (queued, parked or running) held at most."""
        self.active: dict[str, TaskState] = {}
        self.idempotency: dict[str, str] = {}
        self.recent: collections.deque[TaskState] = collections.deque(maxlen=settings.history_size)
        """The latest submitted tasks, oldest first: what history queries search."""
        self._scheduler = scheduler
        self.dirty = scheduler.dirty
        self.metrics = scheduler.metrics
        self.dead = DeadLetters(settings.dead_letters, counters, self.dirty)
        self._cache = cache
        self._counters = counters
        self._names: list[str] | None = None
        self._name_set: frozenset[str] = frozenset()

    def submit(
        self,
        peer_id: int,
        requests: list[m.TaskRequest],
        now: float,
        wall: float,
        *,
        any_name: bool = False,
    ) -> tuple[list[str], list[str]]:
        """Queue tasks (or schedule those with a countdown or an ETA still ahead); their
        ids in request order, and the ids of those that are new (not known by
        idempotency key). A batch is checked whole before anything changes, so it is
        accepted whole or refused whole. ``any_name`` admits a task no one connected can
        run yet (it waits, parked, for a subworker that can)."""
        plan: list[tuple[m.TaskRequest, str, bool]] = []
        """(request, task id, whether it is new)."""
        keys: dict[str, str] = {}
        new_ids: set[str] = set()
        for request in requests:
            key = request.idempotency_key
            if key is not None:
                known = self.idempotency.get(key) or keys.get(key)
                if known is not None:
                    plan.append((request, known, False))
                    continue
            self.check(request, any_name=any_name)
            task_id = request.task_id or uuid.uuid4().hex
            if task_id in new_ids or self.lookup(task_id) is not None:
                raise InvalidArgumentsError(f"task id {task_id} is already in use")
            new_ids.add(task_id)
            if key is not None:
                keys[key] = task_id
            plan.append((request, task_id, True))
        if len(self.active) + len(new_ids) > self.limit:
            raise QueueFullError(
                f"the control plane holds {len(self.active)} unfinished tasks of at most "
                f"{self.limit}; retry later"
            )
        ids: list[str] = []
        fresh: list[str] = []
        for request, task_id, new in plan:
            ids.append(task_id)
            if not new:
                continue
            fresh.append(task_id)
            task = TaskState(
                task_id=task_id,
                name=request.name,
                priority=request.priority,
                args=request.args,
                kwargs=request.kwargs,
                timeout=request.timeout,
                queued_at=wall,
                idempotency_key=request.idempotency_key,
                retry=request.retry if request.retry is not None else self._own_retry(request.name),
                headers=request.headers,
            )
            if request.notify:
                task.watchers.add(peer_id)
            self.restore(task)
            self.dirty.add(task_id)
            self._counters.submitted += 1
            self.metrics.of_task(task).submitted += 1
            start = _start(request, wall)
            if start > wall:
                self._scheduler.schedule(task, now + (start - wall), start)
            else:
                self._scheduler.enqueue(task, now)
        return ids, fresh

    def retry_dead(
        self, peer_id: int, message: m.RetryDead, now: float, wall: float
    ) -> tuple[m.RetriedDead, list[str]]:
        """Submit dead letters again, all or none (as a batch), as new tasks that name
        them in ``retry_of``; they leave the list. The reply, and the new ids to store
        before it goes."""
        dead = self.dead
        asked = dead.oldest(MAX_IDS_PER_MESSAGE) if message.all else message.task_ids
        known = [task_id for task_id in dict.fromkeys(asked) if task_id in dead]
        unknown = [task_id for task_id in asked if task_id not in dead]
        requests = [_again(dead.get(task_id)) for task_id in known]
        new_ids: list[str] = []
        fresh: list[str] = []
        if requests:
            new_ids, fresh = self.submit(peer_id, requests, now, wall)
        for old, new in zip(known, new_ids, strict=True):
            self.active[new].retry_of = old
            dead.remove(old)
        reply = m.RetriedDead(
            request_id=message.request_id,
            task_ids=known,
            new_ids=new_ids,
            unknown=unknown,
            remaining=len(dead) if message.all else 0,
        )
        return reply, fresh

    def purge_dead(self, message: m.PurgeDead) -> m.PurgedDead:
        dead = self.dead
        reply = m.PurgedDead(request_id=message.request_id)
        for task_id in dead.oldest(len(dead)) if message.all else message.task_ids:
            if dead.remove(task_id) is None:
                reply.unknown.append(task_id)
            else:
                reply.purged += 1
        return reply

    def restore(self, task: TaskState) -> None:
        """Know a task: a new one, or one read back at start. An unfinished one counts
        as active; a finished one goes to the cache with :meth:`restore_finished`."""
        task.metrics = self.metrics.of(task.name)
        if not task.status.is_final:
            self.active[task.task_id] = task
        self.recent.append(task)
        if task.idempotency_key is not None:
            self.idempotency[task.idempotency_key] = task.task_id

    def restore_finished(self, task: TaskState) -> None:
        """Put a finished task read back at start into the result cache, oldest first."""
        for evicted in self._cache.add(task):
            self._forget(evicted)

    def check(self, request: m.TaskRequest, *, any_name: bool = False) -> None:
        """Refuse a request no one can run, or whose arguments do not fit the task."""
        if request.countdown is not None and request.eta is not None:
            raise InvalidArgumentsError(
                f"task {request.name!r} has both a countdown and an eta; give one"
            )
        if request.name not in self._known() and not any_name:
            known = ", ".join(self.known_task_names()) or "none"
            raise UnknownTaskError(f"no task named {request.name!r}; registered: {known}")
        task = self.registry.get(request.name)
        if task is None:
            return  # only subworkers know it; they check the arguments
        args = decode_value(request.args)
        kwargs = decode_value(request.kwargs)
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise InvalidArgumentsError("arguments must be a list and keyword arguments a map")
        task.check_arguments(args, kwargs)  # pyright: ignore[reportUnknownArgumentType]

    def _own_retry(self, name: str) -> m.RetryPolicy | None:
        """The retry policy of a task this control plane imports, for a submission by
        name that carries none (a web app that does not import the task module)."""
        task = self.registry.get(name)
        if task is None or task.retry is None:
            return None
        return task.retry.policy()

    def known_task_names(self) -> list[str]:
        """Names the control plane or a connected subworker can run, sorted; cached until
        a subworker joins or leaves (:meth:`names_changed`)."""
        if self._names is None:
            names = set(self.registry.names())
            for worker in self._workers.values():
                names |= worker.task_names
            self._names = sorted(names)
            self._name_set = frozenset(names)
        return self._names

    def _known(self) -> frozenset[str]:
        self.known_task_names()
        return self._name_set

    def names_changed(self) -> None:
        self._names = None

    def finish(self, task: TaskState, outcome: m.TaskOutcome, now: float) -> None:
        """Record a task's final outcome and move it to the result cache."""
        task.status = outcome.status
        task.outcome = outcome
        if outcome.finished_at is not None:
            task.finished_at = outcome.finished_at
        task.done = now
        self.active.pop(task.task_id, None)
        self.dirty.add(task.task_id)
        metrics = self.metrics.of_task(task)
        if outcome.status is TaskStatus.SUCCEEDED:
            self._counters.succeeded += 1
            metrics.succeeded += 1
        elif outcome.status is TaskStatus.CANCELLED:
            self._counters.cancelled += 1
            metrics.cancelled += 1
        else:
            self._counters.failed += 1
            metrics.failed += 1
            self.dead.add(task)
        for evicted in self._cache.add(task):
            self._forget(evicted)

    def expire(self, now: float) -> None:
        for expired in self._cache.expire(now):
            self._forget(expired)

    def _forget(self, task: TaskState) -> None:
        self.dirty.add(task.task_id)  # to be deleted from the journal
        key = task.idempotency_key
        if key is not None and self.idempotency.get(key) == task.task_id:
            del self.idempotency[key]

    def lookup(self, task_id: str) -> TaskState | None:
        return self.active.get(task_id) or self._cache.get(task_id) or self.dead.get(task_id)

    def history(self, query: m.HistoryQuery) -> m.HistoryReply:
        # A scan of the bounded window of recent tasks, newest first: its cost does not
        # grow with the backlog, so a dashboard polling every second stays cheap.
        matching = [
            t
            for t in reversed(self.recent)
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


def _start(request: m.TaskRequest, wall: float) -> float:
    """When the task may start, on the wall clock: now, unless it says otherwise."""
    if request.countdown is not None:
        return wall + request.countdown
    if request.eta is not None:
        return request.eta
    return wall


def _again(task: TaskState | None) -> m.TaskRequest:
    """A dead letter as a new submission: same task, arguments and options."""
    assert task is not None
    return m.TaskRequest(
        name=task.name,
        args=task.args,
        kwargs=task.kwargs,
        priority=task.priority,
        timeout=task.timeout,
        retry=task.retry,
        notify=False,
        headers=task.headers,
    )
