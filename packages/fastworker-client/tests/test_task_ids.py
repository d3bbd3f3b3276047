"""Client-chosen task ids are unique, also across processes forked from one another."""

from __future__ import annotations

import os

from fastworker.client.client import _new_task_id  # pyright: ignore[reportPrivateUsage]


def test_ids_are_unique_within_a_process() -> None:
    ids = {_new_task_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(0 < len(task_id) <= 128 for task_id in ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    before = _new_task_id()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write_end, _new_task_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read_end, 200).decode()
    os.close(read_end)
    os.close(write_end)
    from_parent = _new_task_id()
    assert from_child != from_parent
    assert from_child[:20] != before[:20]  # the child drew its own random prefix
