"""Retries and scheduled tasks with real processes: a control plane with its journal, a
subworker and a client, over ipc://."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastworker.client import TaskCancelledError, TaskFailedError, TaskStatus
from fw_processes import Processes, connect, plane_with_workers, wait_for_workers
from fw_waits import SLACK, wait_for_task

pytestmark = pytest.mark.timeout(120)

MODULES = "fw_tasks,fw_lifecycle_tasks"
"""fw_tasks for stamp, nap and add; fw_lifecycle_tasks for the rest."""


async def test_a_flaky_task_is_retried_after_its_backoff_and_returns_its_value(
    processes: Processes, tmp_path: Path
) -> None:
    _address, client = await plane_with_workers(processes, "sw-1", task_modules=MODULES)
    try:
        attempts = tmp_path / "attempts.txt"
        task_id = await client.delay("flaky", str(attempts), 2)
        assert await client.result(task_id, timeout=30) == 3
        info = await client.status(task_id)
        assert (info.status, info.attempts) == (TaskStatus.SUCCEEDED, 3)
        starts = [float(line) for line in attempts.read_text().split()]
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        # retry_backoff=0.3 without jitter: 0.3 s, then 0.6 s, at least.
        assert gaps[0] >= 0.3
        assert gaps[1] >= 0.6
        # Out of retries: the last error is what the caller gets.
        doomed = await client.delay("flaky", str(tmp_path / "doomed.txt"), 10)
        with pytest.raises(TaskFailedError, match="planned failures"):
            await client.result(doomed, timeout=30)
        assert (await client.status(doomed)).attempts == 4
        assert (await client.overview()).counters.retried == 2 + 3
    finally:
        await client.stop()


async def test_a_countdown_task_starts_after_its_countdown(processes: Processes) -> None:
    _address, client = await plane_with_workers(processes, "sw-1", task_modules=MODULES)
    try:
        submitted = time.time()
        task_id = await client.delay("stamp", "later", countdown=1.0)
        info = await client.status(task_id)
        assert info.status is TaskStatus.SCHEDULED
        assert info.not_before is not None
        assert info.not_before == pytest.approx(submitted + 1.0, abs=0.5)
        started = await client.result(task_id, timeout=30)
        # The floor is exact; how late it may be on a loaded machine is the bench's.
        assert 1.0 <= started - submitted < 1.0 + SLACK
    finally:
        await client.stop()


async def test_an_eta_task_survives_kill_9_of_the_control_plane(
    processes: Processes, tmp_path: Path
) -> None:
    journal = str(tmp_path / "eta.sqlite3")
    address = processes.address()
    first = processes.control_plane(
        address, "--journal", journal, "--no-local-execution", task_modules=MODULES
    )
    client = await connect(address)
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
    try:
        task_id = await client.delay("stamp", "eta", eta=when)
        soon = await client.delay("stamp", "soon", countdown=0.2)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 30)
        processes.control_plane(
            address, "--journal", journal, "--no-local-execution", task_modules=MODULES
        )
        processes.subworker(address, "sw-1", task_modules=MODULES)
        await wait_for_workers(client, 1)
        await wait_for_task(client, task_id, TaskStatus.SCHEDULED)  # restored, still waiting
        started = await client.result(task_id, timeout=30)
        assert started >= when.timestamp()
        assert await client.result(soon, timeout=30) > 0  # its time passed while down
        assert (await client.status(task_id)).attempts == 1  # ran once, not twice
    finally:
        await client.stop()


@pytest.mark.parametrize(
    ("task", "how"),
    [("nap", "interrupted at its next await"), ("polite", "a sync task is not interrupted")],
)
async def test_cancelling_a_running_task_stops_it_and_says_how(
    processes: Processes, task: str, how: str
) -> None:
    _address, client = await plane_with_workers(processes, "sw-1", task_modules=MODULES)
    try:
        task_id = await client.delay(task, 60.0)
        await wait_for_task(client, task_id, TaskStatus.RUNNING)
        asked = time.monotonic()
        reply = await client.cancel(task_id)
        assert reply.stopping == [task_id]
        with pytest.raises(TaskCancelledError, match=how):
            await client.result(task_id, timeout=30)
        assert time.monotonic() - asked < 1.0  # a task of 60 s, stopped at once
        info = await client.status(task_id)
        assert (info.status, info.worker_id) == (TaskStatus.CANCELLED, "sw-1")
        # The slot is free again: the next task runs.
        assert await client.run("add", 1, 2, wait=30) == 3
    finally:
        await client.stop()


async def test_a_poison_task_lands_in_the_dead_letters_and_runs_again_from_there(
    processes: Processes, tmp_path: Path
) -> None:
    address, client = await plane_with_workers(processes, "sw-1", task_modules=MODULES)
    try:
        cure = tmp_path / "cure"
        task_id = await client.delay("poison", str(cure))
        with pytest.raises(TaskFailedError, match="is missing"):
            await client.result(task_id, timeout=30)
        page = await client.dead_letters()
        assert [t.task_id for t in page.tasks] == [task_id]
        listed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "fastworker.server.cli", "dead-letters", "--address", address],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert task_id in listed.stdout
        cure.touch()
        retried = await client.retry_dead(task_id)
        new_id = retried[task_id]
        assert await client.result(new_id, timeout=30) == "cured"
        assert (await client.status(new_id)).retry_of == task_id
        assert (await client.dead_letters()).total == 0
    finally:
        await client.stop()
