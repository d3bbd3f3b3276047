"""Bounded waits of the cross-package tests: on a task's state, on the overview, and on
the ``hold`` tasks of fw_tasks, which run until the test releases them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from fastworker.client import Client, TaskStatus
from fastworker.protocol.messages import Overview, TaskInfo
from fw_processes import START_TIMEOUT

SLACK = 10.0
"""Seconds added to a bound derived from a configured timeout: what a loaded two-core
machine may add to it. The tests check behaviour; speed belongs to the benchmarks."""


class Gate:
    """Releases the ``hold`` tasks given its ``path``: a test keeps a task running for
    exactly as long as its check needs, not for a duration it hopes is enough."""

    def __init__(self, tmp_path: Path, name: str = "gate") -> None:
        self.path = str(tmp_path / f"{name}.released")

    def open(self) -> None:
        Path(self.path).touch()


async def wait_for_task(
    client: Client,
    task_id: str,
    status: TaskStatus,
    *,
    worker_id: str | None = None,
    timeout: float = START_TIMEOUT,
) -> TaskInfo:
    """Wait until the control plane reports ``task_id`` in ``status`` (on ``worker_id``,
    if given); return its record."""
    deadline = time.monotonic() + timeout
    while True:
        info = await client.status(task_id)
        if info.status is status and worker_id in (None, info.worker_id):
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"task {task_id} is {info.status.value} on {info.worker_id!r}, "
                f"not {status.value} on {worker_id!r}, after {timeout} s"
            )
        await asyncio.sleep(0.05)


async def wait_for_overview(
    client: Client, condition: Callable[[Overview], bool], *, timeout: float = START_TIMEOUT
) -> Overview:
    """Wait until the control plane's overview satisfies ``condition``; return it."""
    deadline = time.monotonic() + timeout
    while True:
        overview = await client.overview()
        if condition(overview):
            return overview
        if time.monotonic() > deadline:
            raise TimeoutError(f"the overview did not get there within {timeout} s: {overview}")
        await asyncio.sleep(0.05)
