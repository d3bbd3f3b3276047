"""The control plane's queue: strict levels, FIFO within a level, O(1) removal."""

from __future__ import annotations

from fastworker.protocol import TaskPriority
from fastworker.protocol.messages import QueueDepth
from fastworker.server.queue import PriorityQueue

P = TaskPriority


def _filled(*entries: tuple[str, TaskPriority]) -> PriorityQueue[str]:
    queue: PriorityQueue[str] = PriorityQueue()
    for item_id, priority in entries:
        queue.push(item_id, priority, item_id)
    return queue


def _drain(queue: PriorityQueue[str]) -> list[str]:
    taken: list[str] = []
    while (item := queue.pop()) is not None:
        taken.append(item)
    return taken


def test_the_highest_level_drains_first_and_each_level_is_fifo() -> None:
    queue = _filled(
        ("low-1", P.LOW), ("normal-1", P.NORMAL), ("critical-1", P.CRITICAL),
        ("low-2", P.LOW), ("high-1", P.HIGH), ("critical-2", P.CRITICAL),
    )  # fmt: skip
    assert _drain(queue) == ["critical-1", "critical-2", "high-1", "normal-1", "low-1", "low-2"]


def test_a_task_arriving_later_at_a_higher_level_overtakes_the_backlog() -> None:
    queue = _filled(*((f"low-{i}", P.LOW) for i in range(1000)))
    assert queue.pop() == "low-0"
    queue.push("critical", P.CRITICAL, "critical")
    assert queue.pop() == "critical"
    assert queue.pop() == "low-1"


def test_depth_counts_each_level() -> None:
    queue = _filled(("a", P.LOW), ("b", P.LOW), ("c", P.HIGH))
    assert queue.depth() == QueueDepth(critical=0, high=1, normal=0, low=2)
    assert len(queue) == 3


def test_removed_items_are_skipped_and_uncounted() -> None:
    queue = _filled(("a", P.NORMAL), ("b", P.NORMAL), ("c", P.NORMAL))
    assert queue.remove("b") == "b"
    assert queue.remove("b") is None
    assert "b" not in queue
    assert queue.depth().normal == 2
    assert queue.peek() == "a"
    assert _drain(queue) == ["a", "c"]


def test_handed_back_items_go_to_the_front_of_their_level() -> None:
    queue = _filled(("a", P.HIGH), ("b", P.HIGH))
    queue.push("back", P.HIGH, "back", front=True)
    queue.push("critical", P.CRITICAL, "critical")
    assert _drain(queue) == ["critical", "back", "a", "b"]


def test_an_empty_queue_gives_none() -> None:
    queue: PriorityQueue[str] = PriorityQueue()
    assert queue.peek() is None
    assert queue.pop() is None
