"""With no control plane, every view says so clearly, and recovers when it returns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dashboard_fakes import FakeSource
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastworker.client import Client
from fastworker.dashboard import app as dashboard_app
from fastworker.dashboard import create_app, create_router
from fastworker.protocol import messages as m

pytestmark = pytest.mark.timeout(60)


def _nothing_listens(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/nobody-here.sock"


def test_the_standalone_app_shows_the_banner_and_answers_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_app, "REQUEST_TIMEOUT", 0.2)
    address = _nothing_listens(tmp_path)
    started = time.monotonic()
    http = TestClient(create_app(address))
    with http:
        page = http.get("/")
        assert page.status_code == 503
        assert "Control plane unreachable at" in page.text
        assert address in page.text
        assert 'data-testid="unreachable-banner"' in page.text
        # The page keeps polling: the fragment answers 200 so htmx swaps the banner in.
        live = http.get("/fragments/live", headers={"HX-Request": "true"})
        assert live.status_code == 200
        assert "Control plane unreachable at" in live.text
        assert "is-down" in live.text
        for path in ("/api/overview", "/api/history", "/api/tasks/some-id"):
            answer = http.get(path)
            assert answer.status_code == 503, path
            body = answer.json()
            assert body["error"] == "control_plane_unreachable"
            assert body["address"] == address
            assert body["message"] == f"control plane unreachable at {address}"
    assert time.monotonic() - started < 30


def test_a_router_with_a_client_that_is_not_connected(tmp_path: Path) -> None:
    client = Client(_nothing_listens(tmp_path), request_timeout=0.2)  # never started
    app = FastAPI()
    app.include_router(create_router(client))
    http = TestClient(app)
    with http:
        page = http.get("/")
        assert page.status_code == 503
        assert "Control plane unreachable at" in page.text
        assert "not connected yet" in page.text
        history = http.get("/fragments/history")
        assert history.status_code == 200
        assert "Task history unavailable" in history.text
        task = http.get("/tasks/abc")
        assert task.status_code == 503
        assert "Control plane unreachable at" in task.text


def test_the_page_recovers_when_the_control_plane_returns(
    http: TestClient, fake: FakeSource
) -> None:
    fake.depth = m.QueueDepth(low=17)
    assert "Control plane unreachable" not in http.get("/fragments/live").text
    fake.down = True
    fake.depth = m.QueueDepth(low=99)  # what it would say now, if it answered
    down = http.get("/fragments/live").text
    assert "Control plane unreachable at" in down
    # What it last reported stays visible, dimmed and dated.
    assert "is-stale" in down
    assert 'data-priority="low" data-depth="17"' in down
    assert http.get("/api/overview").status_code == 503
    fake.down = False
    up = http.get("/fragments/live").text
    assert "Control plane unreachable" not in up
    assert "is-up" in up
    assert 'data-priority="low" data-depth="99"' in up
    assert http.get("/api/overview").status_code == 200
