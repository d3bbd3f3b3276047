"""Health checks of real processes: the probes of a control plane and a subworker,
``fastworker ping`` and its exit codes, and the dashboard's ``/healthz``."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from fastworker.client import TaskStatus
from fw_processes import START_TIMEOUT, TESTS_DIR, Processes, connect
from fw_waits import SLACK, Gate, wait_for_task
from test_dashboard_browser import start_dashboard

pytestmark = pytest.mark.timeout(120)

SECRET = "health test secret"


def _get(url: str) -> tuple[int, Any]:
    """Status and JSON body; 0 and the error while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError as exc:
        return 0, str(exc)


async def _wait_for(url: str, status: int, *, timeout: float = START_TIMEOUT) -> Any:
    """Poll ``url`` until it answers ``status``; return the body."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = await asyncio.to_thread(_get, url)
        if got == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} answered {got} {body}, not {status}")
        await asyncio.sleep(0.1)


async def _health_url(processes: Processes, name: str) -> str:
    """The base URL a process started with ``--health-port 0`` logged."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        found = re.search(
            r"health checks on (http://127\.0\.0\.1:\d+)/healthz", processes.log(name)
        )
        if found:
            return found.group(1)
        assert time.monotonic() < deadline, processes.log(name)
        await asyncio.sleep(0.05)


def _ping(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastworker.server.cli", "ping", *args],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_a_control_plane_is_healthy_and_ready_once_up(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--health-port", "0")
    base = await _health_url(processes, "control-plane")
    assert await _wait_for(base + "/healthz", 200) == {"status": "ok"}
    assert await _wait_for(base + "/readyz", 200) == {"status": "ok"}
    async with await connect(address):
        pass  # and it answers clients meanwhile


async def test_a_subworker_is_ready_while_registered_and_not_while_draining(
    processes: Processes,
) -> None:
    address = processes.address()
    worker = processes.subworker(
        address, "probed", "--health-port", "0", "--concurrency", "1", "--drain-timeout", "60"
    )
    base = await _health_url(processes, "subworker-probed")
    assert await _wait_for(base + "/healthz", 200) == {"status": "ok"}
    assert await _wait_for(base + "/readyz", 503) == {
        "status": "not ready",
        "reason": f"not registered with {address}",
    }

    processes.control_plane(address, "--no-local-execution")
    assert await _wait_for(base + "/readyz", 200) == {"status": "ok"}

    # A task keeps the drain going while the probe looks.
    async with await connect(address) as client:
        gate = Gate(processes.tmp_path)
        held = await client.delay("hold", gate.path)
        await wait_for_task(client, held, TaskStatus.RUNNING, worker_id="probed")
        worker.send_signal(signal.SIGTERM)
        body = await _wait_for(base + "/readyz", 503)
        assert body == {"status": "not ready", "reason": "draining"}
        assert await _wait_for(base + "/healthz", 200) == {"status": "ok"}
        gate.open()
        assert (await client.wait(held, timeout=30)).value == "released"
    assert await asyncio.to_thread(worker.wait, 30) == 0
    got, _body = await asyncio.to_thread(_get, base + "/healthz")
    assert got == 0  # gone with the process


async def test_ping_exits_0_when_the_control_plane_answers(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address)
    async with await connect(address):
        pass  # up before the ping
    result = await asyncio.to_thread(_ping, address)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"{re.escape(address)}: ok in \d+\.\d ms \(control plane \S+, fastworker \S+\)\n",
        result.stdout,
    ), result.stdout


async def test_ping_counts_round_trips(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address)
    async with await connect(address):
        pass
    result = await asyncio.to_thread(
        _ping, "--address", address, "--count", "3", "--interval", "0.05"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok in ") == 3


async def test_ping_exits_3_within_its_bound_when_nothing_listens(processes: Processes) -> None:
    started = time.monotonic()
    result = await asyncio.to_thread(_ping, processes.address(), "--request-timeout", "0.5")
    assert result.returncode == 3, result.stderr
    assert "did not answer within 0.5 s" in result.stderr
    assert time.monotonic() - started < 0.5 + SLACK


async def test_ping_exits_4_with_a_wrong_secret(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--auth-token", SECRET)
    async with await connect(address, auth_token=SECRET):
        pass
    result = await asyncio.to_thread(_ping, address, "--auth-token", "not the secret")
    assert result.returncode == 4, result.stderr
    assert "refused" in result.stderr
    right = await asyncio.to_thread(_ping, address, "--auth-token", SECRET)
    assert right.returncode == 0, right.stderr


async def test_the_dashboard_healthz_follows_its_control_plane(processes: Processes) -> None:
    address = processes.address()
    plane = processes.control_plane(address)
    async with await connect(address):
        pass
    url = await asyncio.to_thread(start_dashboard, processes, address)
    assert await _wait_for(url + "healthz", 200) == {"status": "ok", "control_plane": "ok"}
    plane.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(plane.wait, 30) == 0
    body = await _wait_for(url + "healthz", 503)
    assert body["control_plane"] == "down"
    assert body["address"] == address  # served on loopback without a token: the detail too


async def test_a_supervisor_answers_the_probes_for_its_children(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    # In the environment, which the children inherit: still only the supervisor serves.
    processes.subworker(address, "fast-1", "--processes", "2", env={"FASTWORKER_HEALTH_PORT": "0"})
    url = await _health_url(processes, "subworker-fast-1")
    assert (await _wait_for(url + "/readyz", 200))["status"] == "ok"
    status, _body = await asyncio.to_thread(_get, url + "/healthz")
    assert status == 200
    # The children write to the same log: one port, the supervisor's.
    assert processes.log("subworker-fast-1").count("health checks on") == 1
