"""The dead-letter card, its retry and purge actions and their JSON twins, against the
stand-in client."""

from __future__ import annotations

import re
from typing import Any

import pytest
from dashboard_fakes import ORIGIN, FakeSource, csrf_token
from fastapi.testclient import TestClient

from fastworker.protocol import TaskPriority, TaskStatus

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


def _post(http: TestClient, path: str, *, htmx: bool = False) -> tuple[int, Any]:
    """POST as the page does; (status, JSON answer or, for htmx, the toast's HTML)."""
    headers = {"X-CSRF-Token": csrf_token(http.get("/").text), "Origin": ORIGIN}
    if htmx:
        headers["HX-Request"] = "true"
    response = http.post(path, headers=headers)
    return response.status_code, response.text if htmx else response.json()


def test_retry_of_one_answers_with_the_new_task(http: TestClient, fake: FakeSource) -> None:
    keep = fake.add_dead_letter("other")
    dead = fake.add_dead_letter("fail", priority=TaskPriority.HIGH, args=["x"], kwargs={"n": 2})
    html = http.get("/").text
    assert f'hx-post="/actions/retry-dead/{dead}"' in html
    status, answer = _post(http, f"/actions/retry-dead/{dead}")
    assert status == 200, answer
    new_id = fake.retried_dead[dead]
    assert answer["outcome"] == "retried"
    assert (answer["task_id"], answer["new_task_id"]) == (dead, new_id)
    assert answer["url"] == f"/tasks/{new_id}"
    assert "Resubmitted dead letter" in answer["message"]
    assert fake.dead == [keep]
    again = fake.tasks[new_id]
    assert (again.name, again.priority, again.retry_of) == ("fail", TaskPriority.HIGH, dead)
    assert fake.payloads[new_id][:2] == (["x"], {"n": 2})
    # The page's own button, posted as htmx posts it: a toast that links to the new task.
    status, toast = _post(http, f"/actions/retry-dead/{keep}", htmx=True)
    assert status == 200
    assert 'data-kind="ok"' in toast
    assert f'href="/tasks/{fake.retried_dead[keep]}"' in toast
    assert fake.dead == []


def test_retry_all_resubmits_every_dead_letter(http: TestClient, fake: FakeSource) -> None:
    ids = [fake.add_dead_letter() for _ in range(3)]
    assert 'hx-post="/actions/retry-dead-all"' in http.get("/").text
    status, answer = _post(http, "/actions/retry-dead-all")
    assert status == 200, answer
    assert answer["outcome"] == "retried"
    assert answer["retried"] == fake.retried_dead
    assert sorted(answer["retried"]) == sorted(ids)
    assert answer["message"] == "Resubmitted 3 dead letters."
    assert fake.dead == []
    # Nothing left: said so, and the buttons are gone from the card.
    status, answer = _post(http, "/actions/retry-dead-all")
    assert (status, answer["outcome"]) == (200, "nothing")
    assert "retry-dead-all" not in http.get("/").text


def test_purge_all_asks_first_and_drops_every_dead_letter(
    http: TestClient, fake: FakeSource
) -> None:
    for _ in range(4):
        fake.add_dead_letter()
    html = http.get("/").text
    button = re.search(r'<button[^>]*data-action="purge-dead-all"[^>]*>', html)
    assert button is not None
    assert 'hx-confirm="Purge all 4 dead letters?' in button.group(0)
    status, toast = _post(http, "/actions/purge-dead-all", htmx=True)
    assert status == 200
    assert "Purged 4 dead letters." in toast
    assert fake.dead == []
    assert fake.retried_dead == {}
    assert 'data-total="0"' in http.get("/fragments/dead-letters").text


def test_purge_of_one_drops_only_it(http: TestClient, fake: FakeSource) -> None:
    one, two = fake.add_dead_letter(), fake.add_dead_letter()
    status, answer = _post(http, f"/actions/purge-dead/{one}")
    assert (status, answer["outcome"], answer["purged"]) == (200, "purged", 1)
    assert fake.dead == [two]


@pytest.mark.parametrize("action", ["retry-dead", "purge-dead"])
def test_an_id_not_in_the_list_is_a_404(http: TestClient, fake: FakeSource, action: str) -> None:
    fake.add_dead_letter()
    ordinary = fake.add("add", status=TaskStatus.FAILED)  # failed, but retried or purged
    for task_id in ("nope", ordinary):
        status, answer = _post(http, f"/actions/{action}/{task_id}")
        assert status == 404
        assert (answer["error"], answer["outcome"]) == ("task_not_found", "not_found")
        assert "holds no task" in answer["message"]
    assert len(fake.dead) == 1
    assert fake.retried_dead == {}


def test_a_refused_retry_submits_nothing(http: TestClient, fake: FakeSource) -> None:
    dead = fake.add_dead_letter()
    fake.refuse_submissions = True
    status, answer = _post(http, "/actions/retry-dead-all")
    assert status == 409
    assert (answer["outcome"], answer["error"]) == ("refused", "unknown_task")
    assert fake.dead == [dead]


@pytest.mark.parametrize(
    "path",
    [
        "/actions/retry-dead/{id}",
        "/actions/retry-dead-all",
        "/actions/purge-dead/{id}",
        "/actions/purge-dead-all",
    ],
)
def test_an_older_control_plane_answers_the_actions_501(
    http: TestClient, fake: FakeSource, path: str
) -> None:
    dead = fake.add_dead_letter()
    fake.dead_letters_supported = False
    status, answer = _post(http, path.format(id=dead))
    assert status == 501
    assert (answer["outcome"], answer["error"]) == ("unsupported", "unsupported_feature")
    assert "keeps no dead-letter list" in answer["message"]
    status, toast = _post(http, path.format(id=dead), htmx=True)
    assert 'data-kind="error"' in toast
    assert "keeps no dead-letter list" in toast
    assert fake.dead == [dead]
