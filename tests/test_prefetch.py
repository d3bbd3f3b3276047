"""``--prefetch``: a subworker leased tasks beyond its slots, with real processes over
ipc://. The prefetched tasks wait on it and start as its slots free; a cancel ends one
without running it; a drain hands the unstarted ones back."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fastworker.client import Client, TaskCancelledError, TaskStatus
from fastworker.protocol.messages import Overview
from fw_processes import Processes, connect, wait_for_workers
from fw_waits import SLACK, Gate, wait_for_overview, wait_for_task

pytestmark = pytest.mark.timeout(120)

WAIT = 30.0


def _held_by(worker_id: str, load: int) -> Callable[[Overview], bool]:
    def check(overview: Overview) -> bool:
        return any(w.worker_id == worker_id and w.load == load for w in overview.workers)

    return check


@dataclasses.dataclass
class Busy:
    address: str
    client: Client
    subworker: subprocess.Popen[bytes]
    gate: Gate
    held: str
    """A task that runs on the subworker's one slot until the gate opens."""


async def _busy_prefetcher(processes: Processes, tmp_path: Path, *flags: str) -> Busy:
    """A control plane that never runs tasks itself, and subworker ``pre`` with one
    slot, given ``flags``, running a held task."""
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        pre = processes.subworker(address, "pre", "--concurrency", "1", *flags)
        await wait_for_workers(client, 1)
        gate = Gate(tmp_path)
        held = await client.delay("hold", gate.path)
        await wait_for_task(client, held, TaskStatus.RUNNING, worker_id="pre")
    except BaseException:
        await client.stop()
        raise
    return Busy(address, client, pre, gate, held)


async def test_prefetched_tasks_wait_on_the_subworker_and_start_as_its_slot_frees(
    processes: Processes, tmp_path: Path
) -> None:
    busy = await _busy_prefetcher(processes, tmp_path, "--prefetch", "1")
    client, gate, held = busy.client, busy.gate, busy.held
    try:
        prefetched = await client.delay("add", 1, 2)
        queued = await client.delay("add", 2, 3)
        # One running, one prefetched onto the busy subworker, and the third waits in the
        # control plane's queue: slots plus prefetch bound what a subworker holds.
        overview = await wait_for_overview(client, _held_by("pre", 2))
        (pre,) = overview.workers
        assert (pre.slots, pre.prefetch) == (1, 1)
        assert overview.queue_depth.normal == 1
        assert (await client.status(queued)).status is TaskStatus.QUEUED
        gate.open()
        assert await client.result(held, timeout=WAIT) == "released"
        assert await client.result(prefetched, timeout=WAIT) == 3
        assert await client.result(queued, timeout=WAIT) == 5
        for task_id in (prefetched, queued):
            info = await client.status(task_id)
            assert (info.worker_id, info.attempts) == ("pre", 1)
    finally:
        await client.stop()


async def test_a_cancelled_prefetched_task_never_runs_and_a_drain_hands_back_the_rest(
    processes: Processes, tmp_path: Path
) -> None:
    busy = await _busy_prefetcher(processes, tmp_path, "--prefetch", "2", "--drain-timeout", "60")
    client, gate, held, pre = busy.client, busy.gate, busy.held, busy.subworker
    try:
        never = Gate(tmp_path, "never")  # never opened: had it started, it would still run
        cancelled = await client.delay("hold", never.path)
        handed_back = await client.delay("add", 1, 2)
        await wait_for_overview(client, _held_by("pre", 3))

        reply = await client.cancel(cancelled)
        assert reply.stopping == [cancelled]  # leased, so the subworker is asked
        with pytest.raises(TaskCancelledError, match="before it started"):
            await client.result(cancelled, timeout=WAIT)

        # A drain hands back what has not started at once, and waits for what runs.
        pre.send_signal(signal.SIGTERM)
        await wait_for_task(client, handed_back, TaskStatus.QUEUED, timeout=WAIT)
        processes.subworker(busy.address, "other", "--concurrency", "1")
        assert await client.result(handed_back, timeout=WAIT) == 3
        info = await client.status(handed_back)
        assert (info.worker_id, info.attempts) == ("other", 1)  # a hand-back does not count
        gate.open()
        assert await client.result(held, timeout=WAIT) == "released"
        assert (await client.status(held)).worker_id == "pre"
        assert pre.wait(timeout=WAIT + SLACK) == 0
    finally:
        await client.stop()
