"""The dead-letter card, its retry and purge actions and their JSON twins, against the
stand-in client."""

from __future__ import annotations

import re

import pytest
from dashboard_fakes import FakeSource
from fastapi.testclient import TestClient

from fastworker.protocol import TaskStatus

pytestmark = pytest.mark.timeout(60)


def test_a_retried_task_links_to_the_dead_letter_it_retries(
    http: TestClient, fake: FakeSource
) -> None:
    dead = fake.add_dead_letter("fail", task_id="dead/1")
    again = fake.add("fail", status=TaskStatus.QUEUED, retry_of=dead)
    html = http.get(f"/tasks/{again}").text
    assert "Retry of" in html
    assert re.search(r'<dd[^>]*><a href="/tasks/dead%2F1">dead/1</a>', html)
    assert http.get(f"/api/tasks/{again}").json()["retry_of"] == dead
    # A task submitted the first time says nothing of the sort.
    assert "Retry of" not in http.get(f"/tasks/{dead}").text
    assert http.get(f"/api/tasks/{dead}").json()["retry_of"] is None


def test_the_overview_counts_dead_letters(http: TestClient, fake: FakeSource) -> None:
    fake.add_dead_letter()
    fake.add_dead_letter()
    assert http.get("/api/overview").json()["counters"]["dead_letters"] == 2


def _rows(html: str) -> list[str]:
    return re.findall(r'data-dead-letter="([^"]+)"', html)


def test_the_card_lists_dead_letters_oldest_first_with_total_and_dropped(
    http: TestClient, fake: FakeSource
) -> None:
    fake.dead_letter_bound = 3
    ids = [fake.add_dead_letter(f"job{i}") for i in range(5)]
    fake.add("add")  # a task that did not fail is no dead letter
    html = http.get("/").text
    assert 'id="dead-letters"' in html
    assert 'data-total="3" data-dropped="2"' in html
    assert "3 in the list · 2 dropped past its bound" in html
    assert _rows(html) == ids[2:]
    assert f'<a href="/tasks/{ids[2]}" title="{ids[2]}">' in html
    assert "ValueError: boom" in html
    # The card polls its own fragment, which shows the same.
    fragment = http.get("/fragments/dead-letters", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert _rows(fragment.text) == ids[2:]


def test_the_card_pages_and_its_json_twin_answers_the_same(
    http: TestClient, fake: FakeSource
) -> None:
    ids = [fake.add_dead_letter() for _ in range(30)]
    fragment = http.get("/fragments/dead-letters?offset=25&limit=25").text
    assert fake.dead_letter_queries[-1] == (25, 25)
    assert _rows(fragment) == ids[25:]
    assert "26\N{EN DASH}30 of 30" in fragment
    assert "/fragments/dead-letters?offset=0&amp;limit=25" in fragment  # back a page
    # The HTML view clamps what it does not allow; the JSON twin refuses it.
    http.get("/fragments/dead-letters?offset=-4&limit=100000")
    assert fake.dead_letter_queries[-1] == (0, 100)
    assert http.get("/api/dead-letters?limit=100000").status_code == 400
    assert http.get("/api/dead-letters?offset=-1").status_code == 400
    answer = http.get("/api/dead-letters?offset=28&limit=5").json()
    assert {k: answer[k] for k in ("offset", "limit", "total", "dropped")} == {
        "offset": 28,
        "limit": 5,
        "total": 30,
        "dropped": 0,
    }
    assert [t["task_id"] for t in answer["tasks"]] == ids[28:]
    assert answer["tasks"][0]["error"]["remote_type"] == "ValueError"


def test_an_older_control_plane_is_said_plainly_and_the_api_answers_501(
    http: TestClient, fake: FakeSource
) -> None:
    fake.dead_letters_supported = False
    page = http.get("/")
    assert page.status_code == 200
    assert "This control plane keeps no dead-letter list; it runs an older release." in page.text
    assert "Control plane unreachable" not in page.text
    fragment = http.get("/fragments/dead-letters").text
    assert 'data-unsupported="dead-letters"' in fragment
    answer = http.get("/api/dead-letters")
    assert answer.status_code == 501
    assert answer.json() == {
        "error": "unsupported_feature",
        "message": "this control plane keeps no dead-letter list; it runs an older release",
    }


def test_an_unreachable_control_plane_leaves_the_card_saying_so(
    http: TestClient, fake: FakeSource
) -> None:
    fake.add_dead_letter()
    fake.down = True
    fragment = http.get("/fragments/dead-letters").text
    assert "Dead letters unavailable: control plane unreachable" in fragment
    assert http.get("/api/dead-letters").status_code == 503
