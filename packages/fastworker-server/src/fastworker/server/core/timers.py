"""Tasks that wait for a time: a countdown, an ETA, or the backoff before a retry.

One heap ordered by due time (monotonic seconds); the shell keeps one loop timer at the
earliest of them (:meth:`Timers.next_due`), so nothing polls. A task leaves the heap when
it is due or cancelled; a cancelled one's entry is dropped lazily, and the heap is
rebuilt when such entries outnumber the live ones, so it never holds more than twice the
tasks that wait.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random

from fastworker.protocol import TaskStatus
from fastworker.protocol import messages as m

from .records import TaskState

__all__ = ["Timers", "backoff"]

_COMPACT_AFTER = 1024
"""Stale entries tolerated before a rebuild is considered."""


class Timers:
    """Scheduled tasks by due time; ties keep the order they were scheduled in."""

    def __init__(self, counters: m.Counters) -> None:
        self._heap: list[tuple[float, int, TaskState]] = []
        self._sequence = itertools.count()
        self._live = 0
        self._counters = counters

    def __len__(self) -> int:
        return self._live

    def add(self, task: TaskState, due: float) -> None:
        """Hold ``task`` (marked SCHEDULED) until monotonic time ``due``."""
        task.status = TaskStatus.SCHEDULED
        task.due = due
        heapq.heappush(self._heap, (due, next(self._sequence), task))
        self._live += 1
        self._counters.scheduled += 1

    def discard(self, task: TaskState) -> bool:
        """Stop holding a scheduled task (it was cancelled); whether it was held."""
        if task.status is not TaskStatus.SCHEDULED or task.due is None:
            return False
        task.due = None
        self._live -= 1
        self._counters.scheduled -= 1
        stale = len(self._heap) - self._live
        if stale > _COMPACT_AFTER and stale > self._live:
            self._heap = [entry for entry in self._heap if entry[2].due == entry[0]]
            heapq.heapify(self._heap)
        return True

    def pop_due(self, now: float) -> list[TaskState]:
        """The tasks due at ``now``, earliest first, no longer held."""
        due: list[TaskState] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, task = heapq.heappop(heap)
            if task.due != when:
                continue  # cancelled, or scheduled again for another time
            task.due = None
            self._live -= 1
            self._counters.scheduled -= 1
            due.append(task)
        return due

    def next_due(self) -> float | None:
        """When the earliest held task is due, or None."""
        heap = self._heap
        while heap and heap[0][2].due != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


def backoff(policy: m.RetryPolicy, retry: int, rng: random.Random) -> float:
    """Seconds before retry number ``retry`` (1 for the first):
    ``min(backoff_max, backoff * 2 ** (retry - 1))``, or with jitter a uniformly random
    part of it ("full jitter": retries of many tasks that failed together spread out)."""
    base, cap = policy.backoff, policy.backoff_max
    if base <= 0 or cap <= 0:
        ceiling = 0.0
    elif retry - 1 >= math.log2(cap / base):  # and 2.0 ** 1024 would overflow
        ceiling = cap
    else:
        ceiling = base * 2.0 ** (retry - 1)
    return rng.uniform(0.0, ceiling) if policy.jitter else ceiling
