"""Finished tasks, kept for queries and watchers: bounded by count (least recently used
go first) and by age."""

from __future__ import annotations

import collections
from collections.abc import Iterator

from .records import TaskState

__all__ = ["ResultCache"]


class ResultCache:
    """Finished tasks by id. ``now`` is monotonic seconds, the same clock as
    :attr:`TaskState.done`."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._tasks: collections.OrderedDict[str, TaskState] = collections.OrderedDict()
        self._by_age: collections.deque[TaskState] = collections.deque()
        """The same tasks in the order they finished (use reorders ``_tasks``, not this);
        entries already evicted are skipped when reached."""

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._tasks

    def __iter__(self) -> Iterator[TaskState]:
        """Least recently used first."""
        return iter(self._tasks.values())

    def get(self, task_id: str) -> TaskState | None:
        """The finished task, without counting as a use."""
        return self._tasks.get(task_id)

    def use(self, task_id: str) -> TaskState | None:
        """The finished task, now the most recently used."""
        task = self._tasks.get(task_id)
        if task is not None:
            self._tasks.move_to_end(task_id)
        return task

    def add(self, task: TaskState) -> list[TaskState]:
        """Keep a task that just finished (``task.done`` set); returns what it pushed out."""
        self._tasks[task.task_id] = task
        self._by_age.append(task)
        if len(self._by_age) > 2 * self.size:
            self._by_age = collections.deque(t for t in self._by_age if self._holds(t))
        evicted: list[TaskState] = []
        while len(self._tasks) > self.size:
            evicted.append(self._tasks.popitem(last=False)[1])
        return evicted

    def remove(self, task_id: str) -> TaskState | None:
        return self._tasks.pop(task_id, None)

    def expire(self, now: float) -> list[TaskState]:
        """Drop the tasks that finished more than ``ttl`` seconds ago."""
        expired: list[TaskState] = []
        deadline = now - self.ttl
        by_age = self._by_age
        while by_age and by_age[0].done <= deadline:
            task = by_age.popleft()
            if self._holds(task):
                del self._tasks[task.task_id]
                expired.append(task)
        return expired

    def _holds(self, task: TaskState) -> bool:
        return self._tasks.get(task.task_id) is task
