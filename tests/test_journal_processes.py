"""The journal with real processes and real files: kill -9 and SIGTERM lose nothing that
was acknowledged, a second control plane and a broken file are refused at start, and a
file that cannot grow refuses submissions without losing what it took."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastworker.client import TaskCall, TaskPriority
from fastworker.protocol import StorageError, TaskStatus
from fw_processes import TESTS_DIR, Processes, connect, wait_for_workers
from fw_waits import SLACK

WAIT = 60.0
"""Seconds a batch of results may take on a loaded machine before the test fails."""

pytestmark = pytest.mark.timeout(240)


def _journal(processes: Processes) -> str:
    return str(processes.tmp_path / "journal.sqlite3")


def _read_submitted(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    return {task_id: int(value) for task_id, value in (line.split() for line in lines)}


async def test_kill_9_five_times_loses_no_acknowledged_task(processes: Processes) -> None:
    address = processes.address()
    journal = _journal(processes)
    plane = processes.control_plane(address, "--no-local-execution", "--journal", journal)
    client = await connect(address)
    try:
        processes.subworker(address, "w1", "--concurrency", "4")
        await wait_for_workers(client, 1)
        before = await client.delay("add", 20, 22)
        assert await client.result(before, timeout=WAIT) == 42
        outputs = [processes.tmp_path / f"submitted-{n}.txt" for n in range(2)]
        submitter = [sys.executable, str(TESTS_DIR / "fw_submitter.py"), address]
        submitters = [
            processes.spawn([*submitter, str(out), "400", str(n * 1000)], name=f"submitter-{n}")
            for n, out in enumerate(outputs)
        ]
        for kill in range(5):
            # Kill while submissions are arriving: wait for more to be acknowledged.
            target = 40 * (kill + 1)
            deadline = time.monotonic() + WAIT
            while sum(len(_read_submitted(out)) for out in outputs) < target:
                assert time.monotonic() < deadline, "the submitters stopped making progress"
                await asyncio.sleep(0.02)
            plane.send_signal(signal.SIGKILL)
            await asyncio.to_thread(plane.wait, WAIT)
            plane = processes.control_plane(address, "--no-local-execution", "--journal", journal)
        for n, submitter in enumerate(submitters):
            code = await asyncio.to_thread(submitter.wait, WAIT * 2)
            assert code == 0, processes.log(f"submitter-{n}")  # what ended it
        submitted: dict[str, int] = {}
        for out in outputs:
            submitted.update(_read_submitted(out))
        assert len(submitted) == 800
        await client.stop()
        client = await connect(address)  # fresh: nothing answered from a local store
        for task_id, expected in submitted.items():
            assert await client.result(task_id, timeout=WAIT) == expected
        info = await client.status(before)
        assert info.status is TaskStatus.SUCCEEDED
        assert await client.result(before, timeout=WAIT) == 42
    finally:
        await client.stop()


async def test_sigterm_with_10000_queued_then_all_run_in_priority_order(
    processes: Processes,
) -> None:
    address = processes.address()
    journal = _journal(processes)
    plane = processes.control_plane(address, "--no-local-execution", "--journal", journal)
    client = await connect(address)
    levels = [TaskPriority.LOW, TaskPriority.NORMAL, TaskPriority.HIGH, TaskPriority.CRITICAL]
    try:
        ids: list[str] = []
        priorities: list[TaskPriority] = []
        for start in range(0, 10_000, 2_000):
            calls = [
                TaskCall("arrival", priority=levels[i % 4]) for i in range(start, start + 2_000)
            ]
            ids += await client.delay_many(calls)
            priorities += [levels[i % 4] for i in range(start, start + 2_000)]
        plane.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(plane.wait, WAIT) == 0
    finally:
        await client.stop()
    processes.control_plane(address, "--no-local-execution", "--journal", journal)
    client = await connect(address)
    try:
        overview = await client.overview()
        assert overview.queue_depth.total == 10_000
        # One subworker with a slot for each: tasks arrive in the order they were
        # dispatched, and each returns its place in that order.
        processes.subworker(address, "all", "--concurrency", "10000")
        arrivals = [await client.result(task_id, timeout=WAIT) for task_id in ids]
        assert sorted(arrivals) == list(range(1, 10_001))
        by_level = sorted(range(10_000), key=lambda i: arrivals[i])
        expected = sorted(range(10_000), key=lambda i: (priorities[i], i))
        assert by_level == expected
    finally:
        await client.stop()


def _run_control_plane(
    args: list[str], *, timeout: float = WAIT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastworker.server.cli", "control-plane", "--no-dashboard", *args],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_a_second_control_plane_on_the_same_journal_refuses_to_start(
    processes: Processes,
) -> None:
    journal = _journal(processes)
    first = processes.address()
    processes.control_plane(first, "--journal", journal)
    client = await connect(first)
    try:
        second = await asyncio.to_thread(
            _run_control_plane, ["--address", processes.address(), "--journal", journal]
        )
        assert second.returncode == 2
        assert "in use by another control plane" in second.stderr
        assert journal in second.stderr
        assert await client.run("add", 1, 2, timeout=WAIT) == 3  # the first one goes on
    finally:
        await client.stop()


def test_a_corrupt_journal_is_refused_at_start_with_what_to_do(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    journal.write_bytes(b"SQLite format 3\x00" + b"\x17" * 8000)
    address = f"ipc://{tmp_path}/cp.sock"
    result = _run_control_plane(["--address", address, "--journal", str(journal)])
    assert result.returncode == 2
    assert str(journal) in result.stderr
    assert "move it aside" in result.stderr


_LIMITED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["fastworker", *sys.argv[2:]]
runpy.run_module("fastworker.server.cli", run_name="__main__")
"""


async def test_a_journal_that_cannot_grow_refuses_submissions_and_loses_none(
    processes: Processes,
) -> None:
    address = processes.address()
    journal = _journal(processes)
    limit = 512 * 1024
    cp_args = ["control-plane", "--task-modules", "fw_tasks", "--address", address]
    cp_args += ["--no-local-execution", "--no-dashboard", "--journal", journal]
    plane = processes.spawn(
        [sys.executable, "-c", _LIMITED, str(limit), *cp_args], name="limited-control-plane"
    )
    client = await connect(address)
    accepted: dict[str, str] = {}
    try:
        payload = "x" * 4000
        refusal: StorageError | None = None
        for i in range(2 * limit // len(payload)):
            try:
                task_id = await client.delay("echo", f"{i}:{payload}")
            except StorageError as exc:
                refusal = exc
                break
            accepted[task_id] = f"{i}:{payload}"
        assert refusal is not None, "the journal never filled up"
        assert len(accepted) > 10
        # Refused, not broken: queries still work.
        assert (await client.overview()).queue_depth.total == len(accepted)
        plane.send_signal(signal.SIGKILL)
        await asyncio.to_thread(plane.wait, WAIT)
    finally:
        await client.stop()
    processes.control_plane(address, "--no-local-execution", "--journal", journal)
    client = await connect(address)
    try:
        processes.subworker(address, "w1", "--concurrency", "4")
        await wait_for_workers(client, 1, timeout=WAIT)
        for task_id, value in accepted.items():
            assert await client.result(task_id, timeout=WAIT + SLACK) == value
    finally:
        await client.stop()
