"""``fastworker subworker --processes N``: a real supervisor, its child processes and a
control plane, with children killed, recycled and drained under a stream of tasks."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Client, TaskCall
from fastworker.protocol.messages import Overview
from fw_processes import Processes, connect
from fw_waits import SLACK, wait_for_overview

pytestmark = pytest.mark.timeout(120)

TASKS = "fw_supervised_tasks"
DRAIN = 5.0
STOP_MARGIN = 5.0
"""The supervisor's: seconds past the drain timeout before it SIGKILLs a child."""


def children(overview: Overview, worker_id: str = "fast-1") -> dict[str, int]:
    """The connected children of ``worker_id``: their ids and pids."""
    return {
        w.worker_id: w.pid
        for w in overview.workers
        if w.worker_id.startswith(f"{worker_id}.") and w.state.value == "connected"
    }


async def supervised(
    processes: Processes, count: int, *extra: str
) -> tuple[Client, subprocess.Popen[bytes], dict[str, int]]:
    """A control plane that never runs tasks itself, a supervisor of ``count`` children
    connected to it, and a client; returns the children's ids and pids once all are up."""
    address = processes.address()
    processes.control_plane(address, "--no-local-execution", task_modules=TASKS)
    client = await connect(address)
    supervisor = processes.subworker(
        address,
        "fast-1",
        "--processes",
        str(count),
        "--drain-timeout",
        str(DRAIN),
        *extra,
        task_modules=TASKS,
    )
    overview = await wait_for_overview(client, lambda o: len(children(o)) == count)
    return client, supervisor, children(overview)


def parent_of(pid: int) -> int | None:
    """The parent of ``pid``, where /proc says."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; an exited orphan that no one reaped yet does not."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def files_in(folder: Path) -> int:
    return len(list(folder.iterdir()))


async def wait_for_files(folder: Path, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while files_in(folder) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{files_in(folder)} of {count} files in {timeout} s")
        await asyncio.sleep(0.02)  # a file has no event to wait on; the bound is above


async def results(client: Client, task_ids: list[str]) -> list[Any]:
    return await asyncio.wait_for(
        asyncio.gather(*(client.result(task_id) for task_id in task_ids)), 60
    )


async def test_processes_3_runs_three_children_with_their_slot_ids(processes: Processes) -> None:
    client, supervisor, pids = await supervised(processes, 3, "--concurrency", "1")
    assert sorted(pids) == ["fast-1.1", "fast-1.2", "fast-1.3"]
    assert len(set(pids.values())) == 3
    assert {parent_of(pid) for pid in pids.values()} <= {supervisor.pid, None}
    await client.stop()


async def test_a_child_killed_mid_stream_is_replaced_within_2_s_and_no_task_is_lost(
    processes: Processes,
) -> None:
    client, _supervisor, pids = await supervised(processes, 3, "--concurrency", "2")
    calls = [TaskCall("slow_double", (i, 0.01)) for i in range(600)]
    task_ids = await client.delay_many(calls)
    # Mid-stream: a sixth done, the victim busy.
    await wait_for_overview(
        client,
        lambda o: (
            sum(w.tasks_done for w in o.workers) >= 100
            and any(w.worker_id == "fast-1.2" and w.load > 0 for w in o.workers)
        ),
    )
    victim = pids["fast-1.2"]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    overview = await wait_for_overview(
        client, lambda o: children(o).get("fast-1.2", victim) != victim, timeout=2.0
    )
    replaced_in = time.monotonic() - killed
    assert replaced_in < 2.0
    assert len(children(overview)) == 3
    values = await results(client, task_ids)
    assert [value[1] for value in values] == [2 * i for i in range(600)]
    assert victim in {value[0] for value in values}
    await client.stop()


async def test_max_tasks_per_child_recycles_children_under_a_stream(
    processes: Processes,
) -> None:
    limit, concurrency, count = 50, 2, 500
    client, supervisor, _pids = await supervised(
        processes, 2, "--concurrency", str(concurrency), "--max-tasks-per-child", str(limit)
    )
    task_ids = await client.delay_many([TaskCall("double", (i,)) for i in range(count)])
    values = await results(client, task_ids)
    assert [value[1] for value in values] == [2 * i for i in range(count)]
    per_process = collections.Counter(value[0] for value in values)
    # A child stops taking work at its limit; what it already ran may still finish.
    assert max(per_process.values()) <= limit + concurrency - 1
    assert len(per_process) >= count // (limit + concurrency - 1)
    assert "exited to be recycled" in processes.log("subworker-fast-1")
    assert supervisor.poll() is None
    await client.stop()


async def test_sigterm_drains_every_child_and_the_supervisor_exits_0(
    processes: Processes, tmp_path: Path
) -> None:
    client, supervisor, pids = await supervised(processes, 2, "--concurrency", "1")
    started_dir = tmp_path / "started"
    started_dir.mkdir()
    task_ids = [await client.delay("pause", 1.0, str(started_dir)) for _ in range(2)]
    # Running in the children, not only dispatched: one not yet started is handed back.
    await wait_for_files(started_dir, 2)
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(supervisor.wait, DRAIN + STOP_MARGIN + SLACK)
    took = time.monotonic() - started
    assert code == 0
    assert took < DRAIN  # the tasks finished in their drain: nobody was killed
    assert not [pid for pid in pids.values() if alive(pid)]
    values = await results(client, task_ids)
    assert sorted(values) == sorted(pids.values())  # each ran where it started
    await client.stop()


async def test_sighup_recycles_the_children_one_at_a_time_under_a_stream(
    processes: Processes,
) -> None:
    client, supervisor, old = await supervised(processes, 2, "--concurrency", "2")
    task_ids = await client.delay_many([TaskCall("slow_double", (i, 0.01)) for i in range(400)])
    supervisor.send_signal(signal.SIGHUP)
    fewest = len(old)
    deadline = time.monotonic() + 2 * (DRAIN + SLACK)
    while True:
        now = children(await client.overview())
        fewest = min(fewest, len(now))
        if len(now) == len(old) and not set(now.values()) & set(old.values()):
            break
        assert time.monotonic() < deadline, f"not every child was recycled: {now}"
        await asyncio.sleep(0.02)
    assert fewest >= len(old) - 1  # one at a time
    values = await results(client, task_ids)
    assert [value[1] for value in values] == [2 * i for i in range(400)]
    await client.stop()


async def test_children_of_a_killed_supervisor_drain_and_exit(processes: Processes) -> None:
    client, supervisor, pids = await supervised(processes, 2, "--concurrency", "1")
    supervisor.send_signal(signal.SIGKILL)
    await asyncio.to_thread(supervisor.wait, SLACK)
    await wait_for_overview(client, lambda o: not children(o), timeout=DRAIN + SLACK)
    deadline = time.monotonic() + DRAIN + SLACK
    while [pid for pid in pids.values() if alive(pid)]:
        assert time.monotonic() < deadline, "a child outlived its supervisor"
        await asyncio.sleep(0.05)
    assert "its supervisor is gone" in processes.log("subworker-fast-1")
    await client.stop()


async def test_two_cpu_bound_sync_tasks_run_at_once_with_processes_2(
    processes: Processes,
) -> None:
    client, _supervisor, _pids = await supervised(processes, 2, "--concurrency", "1")
    spin = TaskCall("spin", (5_000_000,))  # about 0.3 s here, GIL held throughout
    values = await results(client, await client.delay_many([spin, spin]))
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = values
    # Two processes, and each started before the other ended: they ran at once, each in
    # a process (and a GIL) of its own; a child has one slot, so it could not run both.
    assert pid_a != pid_b
    assert max(start_a, start_b) < min(end_a, end_b), values
    await client.stop()
