"""The subworker's prefetched tasks: the order they start in, cancels and drains."""

from __future__ import annotations

from fastworker.protocol import TaskPriority, encode_value
from fastworker.protocol import messages as m
from fastworker.server.subworker import Prefetched


def _assignment(task_id: str, priority: TaskPriority = TaskPriority.NORMAL) -> m.TaskAssignment:
    return m.TaskAssignment(
        task_id=task_id, name="add", args=encode_value([1, 2]), priority=priority
    )


def _ids(prefetched: Prefetched) -> list[str]:
    started: list[str] = []
    while (assignment := prefetched.pop()) is not None:
        started.append(assignment.task_id)
    return started


def test_prefetched_tasks_start_by_priority_then_in_arrival_order() -> None:
    prefetched = Prefetched()
    prefetched.push(_assignment("low", TaskPriority.LOW))
    prefetched.push(_assignment("normal-1"))
    prefetched.push(_assignment("critical", TaskPriority.CRITICAL))
    prefetched.push(_assignment("normal-2"))
    assert len(prefetched) == 4
    assert sorted(prefetched.task_ids()) == ["critical", "low", "normal-1", "normal-2"]
    assert _ids(prefetched) == ["critical", "normal-1", "normal-2", "low"]
    assert len(prefetched) == 0
    assert prefetched.pop() is None


def test_a_removed_task_never_starts_and_the_rest_keep_their_order() -> None:
    prefetched = Prefetched()
    for task_id in ("a", "b", "c"):
        prefetched.push(_assignment(task_id))
    removed = prefetched.remove("b")
    assert removed is not None
    assert removed.task_id == "b"
    assert prefetched.remove("b") is None
    assert prefetched.task_ids() == ["a", "c"]
    assert _ids(prefetched) == ["a", "c"]


def test_clear_takes_everything_in_start_order() -> None:
    prefetched = Prefetched()
    prefetched.push(_assignment("normal"))
    prefetched.push(_assignment("high", TaskPriority.HIGH))
    assert [a.task_id for a in prefetched.clear()] == ["high", "normal"]
    assert len(prefetched) == 0
    assert prefetched.clear() == []
