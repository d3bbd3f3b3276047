"""Periodic tasks with real processes: a control plane with its journal fires them, and
kill -9 and a restart neither double nor skip a run."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastworker.client import Client
from fastworker.protocol.messages import ScheduleInfo
from fw_processes import START_TIMEOUT, Processes, connect

pytestmark = pytest.mark.timeout(180)

MODULES = "fw_periodic_tasks"


async def _fire_times(client: Client) -> list[float]:
    """When each run of ``tick`` the control plane knows was due, in order."""
    page = await client.history(name="tick", limit=1000)
    return sorted(info.fire_time for info in page.tasks if info.fire_time is not None)


async def _wait_for_runs(client: Client, count: int) -> list[float]:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            times = await _fire_times(client)
        except Exception:  # the control plane is starting again: ask once more
            times = []
        if len(times) >= count:
            return times
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(times)} runs of tick, not {count}, in {START_TIMEOUT} s")
        await asyncio.sleep(0.1)


async def test_an_every_second_schedule_survives_kill_9_without_a_missed_or_doubled_run(
    processes: Processes, tmp_path: Path
) -> None:
    journal = str(tmp_path / "periodic.sqlite3")
    address = processes.address()
    plane = processes.control_plane(address, "--journal", journal, task_modules=MODULES)
    client = await connect(address)
    try:
        runs = 0
        for _ in range(2):
            runs = len(await _wait_for_runs(client, runs + 3))
            plane.send_signal(signal.SIGKILL)
            await asyncio.to_thread(plane.wait, 30)
            # Down across several fire times: runs are missed, and all of them run.
            await asyncio.sleep(3.0)
            plane = processes.control_plane(address, "--journal", journal, task_modules=MODULES)
        times = await _wait_for_runs(client, runs + 3)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        # One run per second of the grid from the first to the last: none twice (a gap
        # of 0), none left out (a gap of 2 or more), across two kills.
        assert gaps == [1.0] * len(gaps), times
        (info,) = [s for s in await client.schedules() if s.name == "tick"]
        assert info.last_fire is not None
        assert info.last_fire >= times[-1]  # a later run may have fired since
        assert (info.last_fire - times[0]).is_integer()
    finally:
        await client.stop()


async def test_schedules_from_the_command_line_are_listed_with_their_next_run(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(
        address,
        "--journal",
        ":memory:",
        "--schedule",
        "chime=cron:0 3 * * *;tz=Europe/Berlin",
        "--schedule",
        "tick=every:3600;missed=skip",
        task_modules=MODULES,
    )
    client = await connect(address)
    try:
        schedules: list[ScheduleInfo] = await client.schedules()
    finally:
        await client.stop()
    assert [(s.name, s.schedule) for s in schedules] == [
        ("chime", "cron:0 3 * * *;tz=Europe/Berlin"),
        ("tick", "every:3600;missed=skip"),
    ]
    listing = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fastworker.server.cli", "schedules", "--address", address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("chime  cron:0 3 * * *;tz=Europe/Berlin  next ")
    assert "not run yet" in lines[0]
    assert lines[-1] == "2 periodic tasks"


def test_a_cron_expression_that_cannot_be_read_stops_the_control_plane_with_a_clear_error(
    processes: Processes,
) -> None:
    plane = processes.control_plane(
        processes.address(), "--schedule", "chime=cron:61 * * * *", task_modules=MODULES
    )
    assert plane.wait(timeout=60) == 2
    assert "task 'chime': '61 * * * *' is not a cron expression" in processes.log("control-plane")
