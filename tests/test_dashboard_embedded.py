"""The dashboard served by the control plane itself, and mounted in a user's FastAPI app."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastworker.client.fastapi import FastWorker
from fw_processes import Processes

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_control_plane_serves_its_dashboard(processes: Processes) -> None:
    address = processes.address()
    port = _free_port()
    # Not processes.control_plane(), which switches the dashboard off for parallel tests.
    processes.fastworker(
        "control-plane",
        "--task-modules",
        "fw_tasks",
        "--address",
        address,
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(port),
        name="control-plane-with-dashboard",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            overview = httpx.get(f"{base}/api/overview", timeout=2.0)
            if overview.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, processes.log("control-plane-with-dashboard")
        time.sleep(0.1)
    assert "add" in overview.json()["task_names"]
    page = httpx.get(f"{base}/", timeout=5.0)
    assert page.status_code == 200
    assert "htmx" in page.text


def test_a_fastapi_app_mounts_the_dashboard_under_its_prefix(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address)
    app = FastAPI()
    fw = FastWorker(app, address=address)
    fw.mount_dashboard(app, prefix="/ops/queue")
    with TestClient(app) as http:
        overview = http.get("/ops/queue/api/overview")
        assert overview.status_code == 200
        assert "add" in overview.json()["task_names"]
        page = http.get("/ops/queue/")
        assert page.status_code == 200
        assert "/ops/queue/" in page.text  # its links stay under the prefix
