"""What callers are told when things go wrong: a control plane restarted under a waiter,
a result pushed out of the client's bounded store, a subworker id already taken."""

from __future__ import annotations

import asyncio

import pytest

from fastworker.client import Client, FastworkerError, TaskNotFoundError, TaskStatus
from fw_processes import START_TIMEOUT, Processes, connect, wait_for_workers
from fw_waits import SLACK, Gate, wait_for_overview, wait_for_task

pytestmark = pytest.mark.timeout(120)

RESTARTED_CONTROL_PLANE_ARGS = ("--journal", ":memory:")
"""The control plane of the restart test must forget its tasks when killed."""

EXIT_REFUSED = 4
"""The command line's exit code when the control plane refused it."""


async def test_a_waiter_is_told_when_the_restarted_control_plane_does_not_know_its_task(
    processes: Processes,
) -> None:
    address = processes.address()
    plane = processes.control_plane(address, *RESTARTED_CONTROL_PLANE_ARGS)
    client = await connect(address)
    try:
        gate = Gate(processes.tmp_path)
        task_id = await client.delay("hold", gate.path)
        await wait_for_task(client, task_id, TaskStatus.RUNNING)
        # Bounded far beyond this test's own wait: only being told can end it in time.
        waiter = asyncio.ensure_future(client.result(task_id, timeout=600))
        plane.kill()
        await asyncio.to_thread(plane.wait, 10)
        processes.control_plane(address, *RESTARTED_CONTROL_PLANE_ARGS)
        # The client re-watches what it waits for once it has reconnected.
        with pytest.raises(TaskNotFoundError):
            await asyncio.wait_for(waiter, START_TIMEOUT + SLACK)
    finally:
        await client.stop()


async def test_the_client_keeps_only_its_newest_results(processes: Processes) -> None:
    address = processes.address()
    plane = processes.control_plane(address)
    await (await connect(address)).stop()
    client = Client(address, request_timeout=0.5, result_cache_size=3)
    await client.start()
    try:
        ids = [await client.delay("add", i, 0) for i in range(5)]
        assert [await client.result(t, timeout=10) for t in ids] == [0, 1, 2, 3, 4]
        plane.kill()
        await asyncio.to_thread(plane.wait, 10)
        # With nobody to ask, only what the client kept can answer.
        assert [await client.result(t, timeout=1) for t in ids[2:]] == [2, 3, 4]
        for evicted in ids[:2]:
            with pytest.raises(FastworkerError):
                await client.result(evicted, timeout=1)
    finally:
        await client.stop()


async def test_a_second_subworker_with_a_taken_id_is_refused_and_the_first_keeps_working(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        first = processes.subworker(address, "twin")
        await wait_for_workers(client, 1)
        second = processes.fastworker(
            *("subworker", "--worker-id", "twin", "--task-modules", "fw_tasks"),
            *("--control-plane-address", address),
            name="second-twin",
        )
        assert await asyncio.to_thread(second.wait, START_TIMEOUT) == EXIT_REFUSED
        assert "a subworker with id 'twin' is already connected" in processes.log("second-twin")
        overview = await wait_for_overview(client, lambda o: len(o.workers) == 1)
        (worker,) = overview.workers
        assert (worker.worker_id, worker.state.value, worker.pid) == (
            "twin",
            "connected",
            first.pid,
        )
        done = await client.wait(await client.delay("add", 1, 2), timeout=10)
        assert (done.value, done.worker_id) == (3, "twin")
        assert first.poll() is None
    finally:
        await client.stop()
