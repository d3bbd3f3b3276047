"""The FastAPI integration: the example shop under real uvicorn, and lifespan chaining."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fastworker.client import Client, NotConnectedError
from fastworker.client.fastapi import FastWorker, get_client
from fw_processes import Processes

pytestmark = pytest.mark.timeout(90)

SHOP = Path(__file__).parent.parent / "examples" / "shop"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_healthy(base: str, *, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            health = httpx.get(f"{base}/health", timeout=2.0).json()
            if health.get("ok") and health.get("subworkers") == 1:
                return health
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base} did not become healthy")
        time.sleep(0.1)


@pytest.fixture
def shop(processes: Processes) -> str:
    """The example shop under real uvicorn, with a real control plane and subworker."""
    address = processes.address()
    processes.control_plane(address, "--no-local-execution", task_modules="shop_tasks", cwd=SHOP)
    processes.subworker(address, "shop-1", task_modules="shop_tasks", cwd=SHOP)
    port = _free_port()
    processes.spawn(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)],
        name="uvicorn",
        cwd=SHOP,
        env={"FASTWORKER_ADDRESS": address},
    )
    base = f"http://127.0.0.1:{port}"
    _wait_until_healthy(base)
    return base


def test_an_order_answers_202_and_its_result_can_be_awaited(shop: str) -> None:
    placed = httpx.post(f"{shop}/orders", json={"amount_cents": 1999, "email": "ada@example.com"})
    assert placed.status_code == 202
    body = placed.json()
    assert placed.headers["location"] == body["status_url"]
    result = httpx.get(body["result_url"], params={"wait": 20}, timeout=30).json()
    assert result["status"] == "succeeded"
    assert result["result"]["charged"] == 1999
    status = httpx.get(body["status_url"]).json()
    assert status["name"] == "charge_card"
    assert status["priority"] == "critical"
    assert status["worker_id"] == "shop-1"


def test_the_result_streams_as_server_sent_events(shop: str) -> None:
    placed = httpx.post(
        f"{shop}/orders", json={"amount_cents": 500, "email": "bob@example.com"}
    ).json()
    with httpx.stream("GET", placed["events_url"], timeout=30) as events:
        text = "".join(events.iter_text())
    assert "event: status" in text
    assert "event: result" in text
    assert '"charged":500' in text


def test_bad_orders_and_unknown_tasks_get_http_errors(shop: str) -> None:
    refused = httpx.post(f"{shop}/orders", json={"amount_cents": -1, "email": "not-an-email"})
    assert refused.status_code == 422
    assert httpx.get(f"{shop}/tasks/no-such-task").status_code == 404
    assert httpx.get(f"{shop}/tasks/no-such-task/result").status_code == 404


def test_a_pending_result_answers_202(shop: str) -> None:
    queued = httpx.post(f"{shop}/maintenance/archive", params={"days": 5}).json()
    pending = httpx.get(queued["result_url"], params={"wait": 0})
    assert pending.status_code in (200, 202)  # 200 only if it already finished
    if pending.status_code == 202:
        assert pending.json()["status"] == "pending"
    done = httpx.get(queued["result_url"], params={"wait": 30}, timeout=40)
    assert done.status_code == 200


def test_an_app_with_its_own_lifespan_still_runs_it(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address)
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncGenerator[None, None]:
        events.append("app startup")
        yield
        events.append("app shutdown")

    app = FastAPI(lifespan=lifespan)
    fw = FastWorker(app, address=address)

    @app.get("/add")
    async def add(x: int, y: int, client: Client = Depends(get_client)) -> int:  # noqa: B008
        events.append(f"client started: {bool(client.task_names)}")
        return await client.run("add", x, y, wait=10)

    with TestClient(app) as http:
        assert http.get("/add", params={"x": 2, "y": 3}).json() == 5
    assert events == ["app startup", "client started: True", "app shutdown"]
    with pytest.raises(NotConnectedError):  # stopped with the app
        asyncio.run(fw.client.delay("add", 1, 2))
