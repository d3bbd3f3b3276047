"""Cross-site requests are refused; the optional access token guards every view."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dashboard_fakes import ORIGIN, FakeSource, csrf_token
from fastapi.testclient import TestClient

from fastworker.protocol import TaskStatus

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def queued(fake: FakeSource) -> str:
    return fake.add("add", status=TaskStatus.QUEUED)


def _cancel(http: TestClient, task_id: str, headers: dict[str, str]) -> int:
    return http.post(f"/actions/cancel/{task_id}", headers=headers).status_code


def test_a_post_without_the_token_is_refused(
    http: TestClient, fake: FakeSource, queued: str
) -> None:
    response = http.post(f"/actions/cancel/{queued}", headers={"Origin": ORIGIN})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "missing CSRF token" in response.json()["message"]
    assert http.post(f"/actions/retry/{queued}", headers={"Origin": ORIGIN}).status_code == 403
    assert fake.cancelled == []


@pytest.mark.parametrize(
    "path",
    [
        "/actions/retry-dead/{id}",
        "/actions/retry-dead-all",
        "/actions/purge-dead/{id}",
        "/actions/purge-dead-all",
    ],
)
def test_a_dead_letter_action_is_guarded_like_the_others(
    make_http: Callable[..., TestClient], fake: FakeSource, path: str
) -> None:
    dead = fake.add_dead_letter()
    http = make_http(access_token="s3cret")
    url = path.format(id=dead)
    bearer = {"Authorization": "Bearer s3cret"}
    token = csrf_token(http.get("/", headers=bearer).text)
    for headers in (
        {"Origin": ORIGIN, **bearer},  # no CSRF token
        {"X-CSRF-Token": token, "Origin": "http://evil.example", **bearer},
    ):
        response = http.post(url, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error"] == "forbidden"
    refused = http.post(url, headers={"X-CSRF-Token": token, "Origin": ORIGIN})
    assert refused.status_code == 401  # no access token
    assert http.get(url, headers=bearer).status_code == 405
    assert fake.dead == [dead]
    assert fake.retried_dead == {}
    headers = {"X-CSRF-Token": token, "Origin": ORIGIN, **bearer}
    assert http.post(url, headers=headers).status_code == 200
    assert fake.dead == []


def test_a_post_with_a_wrong_token_is_refused(
    http: TestClient, fake: FakeSource, queued: str
) -> None:
    token = csrf_token(http.get("/").text)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert _cancel(http, queued, {"X-CSRF-Token": forged, "Origin": ORIGIN}) == 403
    assert _cancel(http, queued, {"X-CSRF-Token": "", "Origin": ORIGIN}) == 403
    assert fake.cancelled == []


def test_a_post_from_another_origin_is_refused_even_with_the_token(
    http: TestClient, fake: FakeSource, queued: str
) -> None:
    token = csrf_token(http.get("/").text)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "http://testserver:8080"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {},  # neither Origin nor Referer
    ):
        assert _cancel(http, queued, {"X-CSRF-Token": token, **headers}) == 403, headers
    assert fake.cancelled == []
    # The same request from the page's own origin goes through.
    assert _cancel(http, queued, {"X-CSRF-Token": token, "Origin": ORIGIN}) == 200
    assert _cancel(http, queued, {"X-CSRF-Token": token, "Referer": f"{ORIGIN}/"}) == 200
    assert fake.cancelled == [queued, queued]


def test_the_token_of_another_dashboard_is_refused(
    make_http: Callable[..., TestClient], queued: str
) -> None:
    one, other = make_http(), make_http()
    token = csrf_token(one.get("/").text)
    assert _cancel(other, queued, {"X-CSRF-Token": token, "Origin": ORIGIN}) == 403


def test_get_never_acts(http: TestClient, fake: FakeSource, queued: str) -> None:
    assert http.get(f"/actions/cancel/{queued}").status_code == 405
    assert fake.cancelled == []


def test_the_access_token_guards_every_view(
    make_http: Callable[..., TestClient], fake: FakeSource, queued: str
) -> None:
    http = make_http(prefix="/fw", access_token="s3cret")
    page = http.get("/fw/")
    assert page.status_code == 401
    assert "Access token needed" in page.text
    assert "s3cret" not in page.text
    assert http.get("/fw/api/overview").status_code == 401
    assert http.get("/fw/api/overview").json()["error"] == "unauthorized"
    assert http.get("/fw/?token=wrong").status_code == 401
    assert http.get("/fw/api/overview", headers={"Authorization": "Bearer nope"}).status_code == 401
    # Static files need no token: the 401 page uses the stylesheet.
    assert http.get("/fw/static/dashboard.css").status_code == 200

    # A bearer header works for scripts, and ?token= for scripts of the JSON twins.
    bearer = {"Authorization": "Bearer s3cret"}
    assert http.get("/fw/api/overview", headers=bearer).status_code == 200
    assert http.get("/fw/api/overview?token=s3cret").status_code == 200

    # ?token= once on a page: a cookie, and the same address without the token.
    entry = http.get("/fw/?status=queued&token=s3cret", follow_redirects=False)
    assert entry.status_code == 303
    assert entry.headers["location"] == "/fw/?status=queued"
    cookie = entry.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/fw" in cookie
    assert "s3cret" not in cookie
    assert http.get("/fw/").status_code == 200  # the TestClient kept the cookie
    assert http.get("/fw/api/history").status_code == 200

    # With the cookie a POST still needs the CSRF token.
    assert http.post(f"/fw/actions/cancel/{queued}", headers={"Origin": ORIGIN}).status_code == 403
    token = csrf_token(http.get("/fw/").text)
    headers = {"X-CSRF-Token": token, "Origin": ORIGIN}
    assert http.post(f"/fw/actions/cancel/{queued}", headers=headers).status_code == 200
    http.cookies.clear()
    assert http.post(f"/fw/actions/cancel/{queued}", headers=headers).status_code == 401


def test_an_empty_access_token_is_a_mistake(fake: FakeSource) -> None:
    from dashboard_fakes import make_app

    with pytest.raises(ValueError, match="must not be empty"):
        make_app(fake, access_token="")
