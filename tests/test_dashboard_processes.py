"""The dashboard's JSON twins against a real control plane, with the dashboard in its own
process (no browser needed): the numbers it serves are the control plane's, it presents
the control plane's shared secret, and it says why when it cannot connect."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from fastworker.client import TaskCall, TaskPriority, TaskStatus
from fw_processes import Processes, connect, wait_for_workers
from fw_waits import SLACK, Gate
from test_dashboard_browser import start_dashboard

pytestmark = pytest.mark.timeout(120)

SECRET = "dashboard test secret"


def _get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def _wait_for_status(url: str, status: int, *, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got, body = await asyncio.to_thread(_get_json, url)
        if got == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} answered {got} {body}, not {status}")
        await asyncio.sleep(0.2)


async def test_the_json_twins_show_what_the_control_plane_reports(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        processes.subworker(address, "solo", "--concurrency", "1")
        await wait_for_workers(client, 1)
        url = await asyncio.to_thread(start_dashboard, processes, address)
        # Holds the only slot until the checks are done, so the rest stays queued.
        gate = Gate(processes.tmp_path)
        blocker = await client.delay("hold", gate.path, priority=TaskPriority.CRITICAL)
        await client.delay_many([TaskCall("add", (i, i), priority="low") for i in range(30)])
        await client.delay_many([TaskCall("add", (i, i), priority="high") for i in range(7)])

        overview = await _wait_for_status(url + "api/overview", 200)
        assert overview["queue_depth"]["low"] == 30
        assert overview["queue_depth"]["high"] == 7
        assert overview["counters"]["submitted"] == 38
        (worker,) = overview["workers"]
        assert (worker["worker_id"], worker["state"], worker["slots"]) == ("solo", "connected", 1)
        assert "add" in overview["task_names"]

        status, page = await asyncio.to_thread(_get_json, url + "api/history?priority=high&limit=5")
        assert status == 200
        assert page["total"] == 7
        assert len(page["tasks"]) == 5
        assert {t["priority"] for t in page["tasks"]} == {"high"}

        status, task = await asyncio.to_thread(_get_json, url + f"api/tasks/{blocker}")
        assert status == 200
        assert task["name"] == "hold"
        assert task["args"] == [gate.path]
        assert task["status"] == "running"
        gate.open()
    finally:
        await client.stop()


async def _get_text(url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    return await asyncio.to_thread(get)


async def test_the_schedules_card_shows_a_schedule_the_control_plane_fires(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(
        address, "--schedule", "chime=every:1", task_modules="fw_periodic_tasks"
    )
    client = await connect(address)
    try:
        url = await asyncio.to_thread(start_dashboard, processes, address)
        deadline = time.monotonic() + 30
        while True:
            status, body = await asyncio.to_thread(_get_json, url + "api/schedules")
            listed = {s["name"]: s for s in body["schedules"]} if status == 200 else {}
            chime = listed.get("chime")
            if chime is not None and chime["runs"] > 0:
                break
            assert time.monotonic() < deadline, (status, body)
            await asyncio.sleep(0.2)
        assert chime["schedule"].startswith("every:1")
        assert chime["last_fire"] is not None
        assert chime["next_fire"] > chime["last_fire"]
        assert "tick" in listed  # the module's own schedule, next to the command line's
        run = chime["last_task_id"]
        info = await client.status(run)
        assert (info.schedule, info.fire_time) == ("chime", chime["last_fire"])

        # The card on the page, and the run's own page, say the same.
        card = await _get_text(url + "fragments/schedules")
        runs = re.search(r'<tr data-schedule="chime" data-runs="(\d+)"', card)
        assert runs is not None, card
        assert int(runs.group(1)) >= chime["runs"]
        assert 'data-schedule="tick"' in card
        page = await _get_text(url + f"tasks/{run}")
        assert 'run of schedule <a href="/#schedules">chime</a>, due at <time' in page
    finally:
        await client.stop()


def _post(url: str, origin: str, csrf: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, method="POST", headers={"X-CSRF-Token": csrf, "Origin": origin}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_two_retries_of_one_failed_task_make_one_task(processes: Processes) -> None:
    # Two tabs, or a double click: both POSTs arrive while neither has been answered.
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        processes.subworker(address, "solo", "--concurrency", "1")
        await wait_for_workers(client, 1)
        url = await asyncio.to_thread(start_dashboard, processes, address)
        failed = await client.delay("fail", "once")
        assert (await client.wait(failed, timeout=30)).status is TaskStatus.FAILED
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', await _get_text(url))
        assert found is not None
        retry = f"{url}actions/retry/{failed}"
        answers = await asyncio.gather(
            *(asyncio.to_thread(_post, retry, url.rstrip("/"), found.group(1)) for _ in range(2))
        )
        assert [status for status, _body in answers] == [200, 200], answers
        new_ids = {body["new_task_id"] for _status, body in answers}
        assert len(new_ids) == 1, new_ids
        (retried,) = new_ids
        assert retried != failed
        assert (await client.history(name="fail")).total == 2  # the failed task and one retry
        assert (await client.wait(retried, timeout=30)).status is TaskStatus.FAILED
    finally:
        await client.stop()


async def test_the_dashboard_presents_the_shared_secret(processes: Processes) -> None:
    address = processes.address()
    processes.fastworker(
        *("control-plane", "--task-modules", "fw_tasks", "--address", address),
        *("--auth-token", SECRET),
        name="control-plane",
        env={"FASTWORKER_DASHBOARD": "0"},
    )
    client = await connect(address, auth_token=SECRET)
    await client.stop()
    with_secret = await asyncio.to_thread(
        start_dashboard, processes, address, "--auth-token", SECRET
    )
    overview = await _wait_for_status(with_secret + "api/overview", 200)
    assert overview["counters"]["submitted"] == 0

    without = await asyncio.to_thread(start_dashboard, processes, address)
    refused = await _wait_for_status(without + "api/overview", 503)
    assert refused["error"] == "control_plane_unreachable"
    deadline = time.monotonic() + 30
    while "cannot connect" not in refused["detail"]:
        assert time.monotonic() < deadline, refused
        await asyncio.sleep(0.2)
        refused = await _wait_for_status(without + "api/overview", 503)
    assert "secret" in refused["detail"]


async def test_the_standalone_app_reconnects_afresh_after_a_long_silence(
    processes: Processes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A client keeps what it could not send while the control plane is away; the app
    # replaces it after a long silence rather than replay a backlog of stale queries.
    from fastapi.testclient import TestClient

    from fastworker.dashboard import app as dashboard_app
    from fastworker.dashboard import create_app

    fresh_after = 1.5
    monkeypatch.setattr(dashboard_app, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(dashboard_app, "FRESH_CONNECTION_AFTER", fresh_after)
    address = processes.address()
    args = ("control-plane", "--task-modules", "fw_tasks", "--address", address)
    env = {"FASTWORKER_DASHBOARD": "0"}
    first = processes.fastworker(*args, name="control-plane", env=env)
    async with await connect(address) as client:
        await client.delay_many([TaskCall("add", (i, i)) for i in range(5)])

    def status_within(http: TestClient, status: int, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            answer = http.get("/api/overview")
            if answer.status_code == status:
                return answer.json()
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)

    def connecting_afresh() -> bool:
        return any("connecting afresh" in r.getMessage() for r in caplog.records)

    def scenario() -> None:
        http = TestClient(create_app(address))
        with http:
            assert status_within(http, 200, 30)["counters"]["submitted"] == 5
            first.kill()
            first.wait(timeout=10)
            status_within(http, 503, 30)
            # The app checks its last answer once a second.
            deadline = time.monotonic() + fresh_after + 1.0 + SLACK
            while not connecting_afresh():
                assert time.monotonic() < deadline, "the app kept its silent client"
                time.sleep(0.05)
            processes.fastworker(*args, name="control-plane-2", env=env)
            # What the page shows now is the new control plane's: it has seen one task.
            asyncio.run(_submit_one(address))
            assert status_within(http, 200, 30)["counters"]["submitted"] == 1

    caplog.set_level("WARNING", logger="fastworker.dashboard")
    await asyncio.to_thread(scenario)


async def _submit_one(address: str) -> None:
    async with await connect(address) as client:
        await client.delay("add", 1, 1)
