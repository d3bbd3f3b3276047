"""The dead-letter list: tasks that failed for good, kept past the result cache so an
operator can see them, submit them again or drop them.

A task lands here when it ends ``failed``: out of retries, failed without retries, timed
out, or lost with its worker too often. Cancelled tasks do not. The list is bounded: past
``size``, the oldest is dropped and counted (``dropped``).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable

from fastworker.protocol import messages as m

from .records import TaskState

__all__ = ["DeadLetters"]


class DeadLetters:
    """Failed tasks by id, oldest first."""

    def __init__(self, size: int, counters: m.Counters, dirty: set[str]) -> None:
        self.size = size
        self.dropped = 0
        self._places = itertools.count(1)
        self._tasks: collections.OrderedDict[str, TaskState] = collections.OrderedDict()
        self._counters = counters
        self._dirty = dirty

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._tasks

    def get(self, task_id: str) -> TaskState | None:
        return self._tasks.get(task_id)

    def add(self, task: TaskState) -> None:
        """Keep a task that failed for good; past the bound the oldest goes."""
        if self.size <= 0:
            return
        task.dead = next(self._places)
        self._tasks[task.task_id] = task
        self._dirty.add(task.task_id)
        while len(self._tasks) > self.size:
            _, oldest = self._tasks.popitem(last=False)
            self._let_go(oldest)
            self.dropped += 1
        self._counters.dead_letters = len(self._tasks)

    def restore(self, tasks: Iterable[TaskState]) -> None:
        """Dead letters read back at start, in the order they failed."""
        ordered = sorted(tasks, key=lambda t: t.dead)
        for task in ordered:
            self._tasks[task.task_id] = task
        if ordered:
            self._places = itertools.count(ordered[-1].dead + 1)
        self._counters.dead_letters = len(self._tasks)

    def remove(self, task_id: str) -> TaskState | None:
        """Take one off the list (it was submitted again, or purged)."""
        task = self._tasks.pop(task_id, None)
        if task is not None:
            self._let_go(task)
            self._counters.dead_letters = len(self._tasks)
        return task

    def oldest(self, count: int) -> list[str]:
        return list(itertools.islice(self._tasks, count))

    def page(self, offset: int, limit: int) -> list[TaskState]:
        """Oldest first."""
        tasks = list(self._tasks.values())
        return tasks[offset : offset + limit]

    def _let_go(self, task: TaskState) -> None:
        task.dead = 0
        self._dirty.add(task.task_id)  # the journal keeps it only while the cache does
