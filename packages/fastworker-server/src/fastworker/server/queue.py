"""The control plane's queue: four strict priority levels, FIFO within a level."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Generic, TypeVar

from fastworker.protocol import TaskPriority
from fastworker.protocol.messages import QueueDepth

__all__ = ["PriorityQueue"]

T = TypeVar("T")


class PriorityQueue(Generic[T]):
    """Items keyed by id, taken oldest-first from the highest non-empty level.

    Removal by id (cancel) is O(1): the id is forgotten and its queue slot is skipped
    when reached. It has no limit of its own: the control plane bounds the tasks it
    admits, and a task taken back from a lost worker must always fit again.
    """

    def __init__(self) -> None:
        self._levels: list[collections.deque[str]] = [collections.deque() for _ in TaskPriority]
        self._items: dict[str, tuple[TaskPriority, T]] = {}
        self._counts = [0] * len(TaskPriority)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def push(self, item_id: str, priority: TaskPriority, item: T, *, front: bool = False) -> None:
        """Add an item at the back of its level, or at the front (for tasks handed back,
        which were already first in line once)."""
        self._items[item_id] = (priority, item)
        self._counts[priority] += 1
        level = self._levels[priority]
        if front:
            level.appendleft(item_id)
        else:
            level.append(item_id)

    def peek(self) -> T | None:
        """The next item, without taking it."""
        for level in self._levels:
            while level:
                entry = self._items.get(level[0])
                if entry is not None:
                    return entry[1]
                level.popleft()  # removed earlier; drop its slot now
        return None

    def pop(self) -> T | None:
        """Take the oldest item of the highest non-empty level."""
        for level in self._levels:
            while level:
                entry = self._items.pop(level.popleft(), None)
                if entry is not None:
                    self._counts[entry[0]] -= 1
                    return entry[1]
        return None

    def remove(self, item_id: str) -> T | None:
        """Take an item out wherever it is; None if it is not queued."""
        entry = self._items.pop(item_id, None)
        if entry is None:
            return None
        self._counts[entry[0]] -= 1
        return entry[1]

    def depth(self) -> QueueDepth:
        """Items waiting, per priority."""
        critical, high, normal, low = self._counts
        return QueueDepth(critical=critical, high=high, normal=normal, low=low)

    def __iter__(self) -> Iterator[T]:
        """Queued items in no particular order."""
        return (item for _priority, item in self._items.values())
