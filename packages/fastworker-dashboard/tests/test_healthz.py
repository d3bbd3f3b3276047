"""``/healthz`` says whether the control plane answers; without the access token it
says nothing more than that."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from dashboard_fakes import FakeSource
from fastapi.testclient import TestClient

from fastworker.dashboard import app as dashboard_app
from fastworker.protocol import AuthenticationError
from fastworker.protocol import messages as m

pytestmark = pytest.mark.timeout(60)


def test_ok_while_the_control_plane_answers(http: TestClient) -> None:
    answer = http.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "control_plane": "ok"}
    assert answer.headers["cache-control"] == "no-store"


def test_503_with_the_reason_when_it_does_not(http: TestClient, fake: FakeSource) -> None:
    fake.down = True
    answer = http.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "unavailable",
        "control_plane": "down",
        "reason": "control plane unreachable",
        "address": fake.address,
        "detail": f"the control plane at {fake.address} did not answer",
    }


def test_a_refusal_is_told_apart(
    http: TestClient, fake: FakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse() -> m.Overview:
        raise AuthenticationError("wrong shared secret")

    monkeypatch.setattr(fake, "overview", refuse)
    body = http.get("/healthz").json()
    assert (body["reason"], body["detail"]) == (
        "control plane refused the dashboard",
        "wrong shared secret",
    )


def test_an_answer_that_takes_too_long_is_a_503(
    http: TestClient, fake: FakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_app, "HEALTH_TIMEOUT", 0.1)

    async def hang() -> m.Overview:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    monkeypatch.setattr(fake, "overview", hang)
    answer = http.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["detail"] == "no answer within 0.1 s"


def test_without_the_access_token_it_says_only_up_or_down(
    make_http: Callable[..., TestClient], fake: FakeSource
) -> None:
    http = make_http(prefix="/fw", access_token="s3cret")
    assert http.get("/fw/").status_code == 401  # the rest stays guarded
    assert http.get("/fw/healthz").json() == {"status": "ok", "control_plane": "ok"}
    fake.down = True
    assert http.get("/fw/healthz").json() == {
        "status": "unavailable",
        "control_plane": "down",
        "reason": "control plane unreachable",
    }
    with_token = http.get("/fw/healthz", headers={"Authorization": "Bearer s3cret"}).json()
    assert with_token["address"] == fake.address
