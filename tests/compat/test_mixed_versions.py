"""A control plane, subworkers, a web app's client and the dashboard, each possibly of
another release (see conftest.py): what a team mixing versions in the field relies on."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from compat_roles import Side

from fastworker.client import Client, TaskPriority, TaskStatus
from fw_processes import Processes, connect, wait_for_workers
from fw_waits import Gate, wait_for_task
from test_dashboard_browser import start_dashboard

pytestmark = pytest.mark.timeout(120)

COMPAT_DIR = Path(__file__).parent
CLIENT_BOUND = 90.0
"""Seconds one run of the client script may take: it has its own bounds inside."""


async def run_client(client: Side, command: str, address: str, *args: str) -> dict[str, Any]:
    """Run the web app's side, ``compat_client.py``, with the client role's release."""
    argv = [client.python, str(COMPAT_DIR / "compat_client.py"), command, address, *args]
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=CLIENT_BOUND, cwd=COMPAT_DIR
    )
    assert done.returncode == 0, f"{client}: {command} failed:\n{done.stderr}"
    return json.loads(done.stdout)


class Cluster(NamedTuple):
    address: str
    client: Client
    subworkers: list[subprocess.Popen[bytes]]


async def _cluster(
    processes: Processes, sides: dict[str, Side], *cp_args: str, workers: int = 1
) -> Cluster:
    """A control plane and ``workers`` one-slot subworkers of their roles' releases, and
    a client of this environment to arrange and observe the test."""
    address = processes.address()
    processes.control_plane(address, *cp_args, python=sides["control_plane"].python)
    client = await connect(address)
    subworkers = [
        processes.subworker(
            address, f"sw-{number}", "--concurrency", "1", python=sides["subworker"].python
        )
        for number in range(1, workers + 1)
    ]
    await wait_for_workers(client, workers)
    return Cluster(address, client, subworkers)


async def test_tasks_results_and_errors_cross_versions(
    processes: Processes, sides: dict[str, Side]
) -> None:
    address, client, _ = await _cluster(processes, sides)
    try:
        out = await run_client(sides["client"], "roundtrip", address)
    finally:
        await client.stop()
    assert out["results"] == {
        "CRITICAL": {"value": 20},
        "HIGH": {"value": 21},
        "NORMAL": {"value": 22},
        "LOW": {"value": 23},
    }
    assert out["batch"] == [{"value": 2 * i} for i in range(20)]
    assert out["failed"]["error"] == "TaskFailedError"
    assert "broken on purpose" in out["failed"]["message"]
    assert out["unknown"] == "UnknownTaskError"
    assert (out["status"], out["worker"], out["attempts"]) == ("succeeded", "sw-1", 1)


async def test_strict_priority_and_cancel_across_versions(
    processes: Processes, sides: dict[str, Side]
) -> None:
    address, client, _ = await _cluster(processes, sides)
    gate = Gate(processes.tmp_path)
    try:
        # The only slot is held, so what the web app submits waits in the queue.
        held = await client.delay("hold", gate.path, priority=TaskPriority.CRITICAL)
        await wait_for_task(client, held, TaskStatus.RUNNING, worker_id="sw-1")
        order = ("LOW", "NORMAL", "HIGH", "CRITICAL")
        ids = {
            level: (
                await run_client(
                    sides["client"],
                    "submit",
                    address,
                    "--task",
                    "stamp",
                    "--args",
                    json.dumps([level]),
                    "--priority",
                    level,
                )
            )["ids"][0]
            for level in order
        }
        victim = (await run_client(sides["client"], "submit", address))["ids"][0]
        cancelled = await run_client(sides["client"], "cancel", address, victim)
        gate.open()
        out = await run_client(sides["client"], "results", address, *ids.values())
    finally:
        gate.open()
        await client.stop()
    assert cancelled["cancelled"] == [victim]
    assert cancelled["outcomes"][0]["error"] == "TaskCancelledError"
    started = dict(zip(ids, (o["value"] for o in out["outcomes"]), strict=True))
    assert sorted(started, key=started.__getitem__) == ["CRITICAL", "HIGH", "NORMAL", "LOW"]


async def test_a_task_longer_than_the_lease_timeout_runs_once(
    processes: Processes, sides: dict[str, Side]
) -> None:
    # Heartbeats keep the lease, whichever side is older.
    address, client, _ = await _cluster(
        processes, sides, "--lease-timeout", "1.0", "--heartbeat-interval", "0.2"
    )
    try:
        (task_id,) = (
            await run_client(
                sides["client"], "submit", address, "--task", "block", "--args", "[2.5]"
            )
        )["ids"]
        out = await run_client(sides["client"], "results", address, task_id)
        info = await client.status(task_id)
    finally:
        await client.stop()
    assert out["outcomes"] == [{"value": 2.5}]
    assert (info.status, info.attempts) == (TaskStatus.SUCCEEDED, 1)


@pytest.mark.needs(control_plane="drain")
async def test_a_draining_subworker_fails_nothing(
    processes: Processes, sides: dict[str, Side]
) -> None:
    address, client, (leaving, _) = await _cluster(
        processes, sides, "--no-local-execution", workers=2
    )
    gate = Gate(processes.tmp_path)
    try:
        held = [await client.delay("hold", gate.path) for _ in range(2)]
        for task_id in held:
            await wait_for_task(client, task_id, TaskStatus.RUNNING)
        queued = (await run_client(sides["client"], "submit", address, "--count", "6"))["ids"]
        leaving.send_signal(signal.SIGTERM)
        gate.open()
        out = await run_client(sides["client"], "results", address, *held, *queued)
        assert await asyncio.to_thread(leaving.wait, 30) == 0
    finally:
        gate.open()
        await client.stop()
    assert out["outcomes"] == [{"value": "released"}] * 2 + [{"value": 3}] * 6


@pytest.mark.needs(control_plane="journal")
async def test_what_an_older_client_submitted_survives_a_restart(
    processes: Processes, sides: dict[str, Side], tmp_path: Path
) -> None:
    journal = str(tmp_path / "restart.sqlite3")
    address = processes.address()
    python = sides["control_plane"].python
    first = processes.control_plane(
        address, "--journal", journal, "--no-local-execution", python=python
    )
    ids = (await run_client(sides["client"], "submit", address, "--count", "5"))["ids"]
    first.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait, 30) == 0
    processes.control_plane(address, "--journal", journal, python=python)
    processes.subworker(address, "sw-after", python=sides["subworker"].python)
    out = await run_client(sides["client"], "results", address, *ids)
    assert out["outcomes"] == [{"value": 3}] * 5


@pytest.mark.needs(client="batch-idempotency-keys")
async def test_idempotency_keys_in_batches(processes: Processes, sides: dict[str, Side]) -> None:
    address, client, _ = await _cluster(processes, sides)
    try:
        out = await run_client(sides["client"], "batch-keys", address)
    finally:
        await client.stop()
    assert out["first"] == out["second"]
    assert out["outcome"] == {"value": 3}


@pytest.mark.needs(client="delay")
async def test_a_countdown_runs_late_or_is_refused_by_an_older_control_plane(
    processes: Processes, sides: dict[str, Side]
) -> None:
    address, client, _ = await _cluster(processes, sides)
    try:
        out = await run_client(sides["client"], "countdown", address)
    finally:
        await client.stop()
    if "delay" in sides["control_plane"].features:
        assert "value" in out["outcome"]
        assert out["waited"] >= 1.0
    else:  # it would have run at once: refused before anything was sent
        assert out["error"] == "UnsupportedFeatureError"
        assert "does not offer" in out["message"]


@pytest.mark.needs(client="dead-letters")
async def test_dead_letters_are_listed_or_refused_by_an_older_control_plane(
    processes: Processes, sides: dict[str, Side]
) -> None:
    address, client, _ = await _cluster(processes, sides)
    try:
        out = await run_client(sides["client"], "dead-letters", address)
    finally:
        await client.stop()
    if "dead-letters" in sides["control_plane"].features:
        assert out["listed"] == [out["task_id"]]
    else:
        assert out["error"] == "UnsupportedFeatureError"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def test_the_dashboard_shows_the_control_plane(
    processes: Processes, sides: dict[str, Side]
) -> None:
    address, client, _ = await _cluster(processes, sides, "--no-local-execution")
    gate = Gate(processes.tmp_path)
    try:
        held = await client.delay("hold", gate.path)
        await wait_for_task(client, held, TaskStatus.RUNNING)
        await client.delay("add", 1, 2, priority=TaskPriority.LOW)
        url = await asyncio.to_thread(
            start_dashboard, processes, address, python=sides["dashboard"].python
        )
        overview = await asyncio.to_thread(_get_json, url + "api/overview")
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        gate.open()
    finally:
        gate.open()
        await client.stop()
    assert overview["queue_depth"]["low"] == 1
    (worker,) = overview["workers"]
    assert (worker["worker_id"], worker["state"]) == ("sw-1", "connected")
    assert b"sw-1" in page
    if {"journal"} <= sides["dashboard"].features & sides["control_plane"].features:
        assert overview["journal"]["path"].endswith(".sqlite3")


@pytest.mark.needs(client="schedules")
async def test_schedules_are_listed_or_refused_by_an_older_control_plane(
    processes: Processes, sides: dict[str, Side]
) -> None:
    fires = "schedules" in sides["control_plane"].features
    flags = ("--schedule", "hourly_report=every:3600") if fires else ()
    address, client, _ = await _cluster(processes, sides, *flags)
    try:
        out = await run_client(sides["client"], "schedules", address)
    finally:
        await client.stop()
    if fires:
        assert out["schedules"] == [["hourly_report", "every:3600"]]
    else:
        assert out["error"] == "UnsupportedFeatureError"
        assert "does not offer" in out["message"]


@pytest.mark.needs(client="metrics")
async def test_metrics_are_read_or_refused_by_an_older_control_plane(
    processes: Processes, sides: dict[str, Side]
) -> None:
    address, client, _ = await _cluster(processes, sides)
    try:
        out = await run_client(sides["client"], "metrics", address)
    finally:
        await client.stop()
    if "metrics" in sides["control_plane"].features:
        assert out["succeeded"]["add"] == 1
    else:
        assert out["error"] == "UnsupportedFeatureError"
        assert "does not offer" in out["message"]
