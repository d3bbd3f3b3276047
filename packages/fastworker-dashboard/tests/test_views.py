"""The pages, fragments and their JSON twins, against a stand-in client."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest
from dashboard_fakes import ORIGIN, FakeSource, csrf_token
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastworker.dashboard import create_app
from fastworker.protocol import TaskPriority, TaskStatus, WorkerState
from fastworker.protocol import messages as m

pytestmark = pytest.mark.timeout(60)


def _queries(fake: FakeSource) -> list[dict[str, object]]:
    """History queries of the page, without the sampler's (succeeded, limit 100)."""
    return [
        q
        for q in fake.history_queries
        if not (q["limit"] == 100 and q["status"] is TaskStatus.SUCCEEDED and not q["offset"])
    ]


def _depths(html: str) -> dict[str, int]:
    return {
        name: int(depth)
        for name, depth in re.findall(r'data-priority="(\w+)" data-depth="(\d+)"', html)
    }


def _bar_widths(html: str) -> dict[str, float]:
    found = re.findall(r'class="fill fill-(\w+)" style="width: ([\d.]+)%"', html)
    return {name: float(width) for name, width in found}


def _worker_rows(html: str) -> dict[str, tuple[str, str, float, bool]]:
    """Each worker row's (state, load text, load bar width, whether the bar shows full)."""
    rows = re.findall(
        r'data-worker-id="([^"]+)" data-state="(\w+)">.*?'
        r'class="load-fill( is-full)?" style="width: ([\d.]+)%".*?'
        r'class="load-num">([^<]+)<',
        html,
        flags=re.S,
    )
    return {w: (state, text, float(width), bool(full)) for w, state, full, width, text in rows}


def test_the_page_shows_queues_counters_workers_and_tasks(
    http: TestClient, fake: FakeSource
) -> None:
    fake.depth = m.QueueDepth(critical=1, high=5, normal=0, low=20)
    fake.counters = m.Counters(submitted=44, succeeded=12, failed=3, cancelled=5, running=4)
    fake.add_worker("w1", load=3, slots=4)
    fake.add_worker("w2", load=1, slots=1)
    fake.add_worker("gone", state=WorkerState.LOST, slots=8)
    fake.add_worker("eager", load=3, slots=2, prefetch=1)
    fake.add("add")
    fake.add("fail", status=TaskStatus.FAILED)
    page = http.get("/")
    assert page.status_code == 200
    html = page.text
    assert _depths(html) == {"critical": 1, "high": 5, "normal": 0, "low": 20}
    # Each bar is sized against the longest queue.
    assert _bar_widths(html) == {"critical": 5.0, "high": 25.0, "normal": 0.0, "low": 100.0}
    for counter, value in [("submitted", 44), ("running", 4), ("succeeded", 12)]:
        assert f'data-counter="{counter}" data-value="{value}"' in html
    assert 'data-counter="requeued" data-value="0"' in html
    # Running out of the slots of connected workers; a lost worker's slots are gone.
    assert "of 7 slots" in html
    # Failed as a share of the tasks that ran to an end (12 + 3; cancelled ones never ran).
    assert "20.0 % of finished" in html
    assert _worker_rows(html) == {
        "w1": ("connected", "3/4", 75.0, False),
        "w2": ("connected", "1/1", 100.0, True),
        "gone": ("lost", "0/8", 0.0, False),
        "eager": ("connected", "3/2 ", 100.0, True),
    }
    # A prefetching worker holds more than its slots: the extra is shown as such.
    assert 'title="prefetch: tasks leased beyond its slots, waiting there to start">+1<' in html
    assert html.count("data-task-id=") == 2
    assert "Control plane unreachable" not in html
    # It polls its fragments; nothing comes from another site.
    assert 'hx-trigger="every 1s"' in html
    assert "https://" not in html


def test_fragments_and_json_twins_show_the_same_data(http: TestClient, fake: FakeSource) -> None:
    fake.depth = m.QueueDepth(critical=2, high=0, normal=7, low=1)
    fake.counters = m.Counters(submitted=9, failed=4)
    fake.add_worker("w1")
    fake.add_worker("w2", state=WorkerState.LOST)
    fake.task_names = ["fail", "add", "echo"]
    task_id = fake.add("echo", args=["hello"], value={"a": [1, 2]})
    live = http.get("/fragments/live", headers={"HX-Request": "true"})
    assert live.status_code == 200
    assert "<html" not in live.text
    assert 'id="cp-status" class="cp-status is-up" hx-swap-oob="true"' in live.text
    assert _depths(live.text) == {"critical": 2, "high": 0, "normal": 7, "low": 1}
    overview = http.get("/api/overview").json()
    assert overview["queue_depth"] == {
        "critical": 2,
        "high": 0,
        "normal": 7,
        "low": 1,
        "total": 10,
    }
    assert [q["percent"] for q in overview["queues"]] == [28.6, 0.0, 100.0, 14.3]
    assert overview["counters"]["failed"] == 4
    assert [w["worker_id"] for w in overview["workers"]] == ["w1", "w2"]
    assert overview["task_names"] == ["add", "echo", "fail"]  # sorted for the page
    assert "throughput" in overview
    assert "series" in overview
    history = http.get("/api/history").json()
    assert history["total"] == 1
    assert history["tasks"][0]["task_id"] == task_id
    detail = http.get(f"/api/tasks/{task_id}").json()
    assert detail["args"] == ["hello"]
    assert detail["value"] == {"a": [1, 2]}
    assert detail["status"] == "succeeded"


def test_history_filters_and_pages_are_bounded(http: TestClient, fake: FakeSource) -> None:
    for i in range(60):
        fake.add("add", priority=TaskPriority.LOW if i % 2 else TaskPriority.HIGH)
    page = http.get("/fragments/history?status=succeeded&priority=low&name=add&page=2&size=25")
    assert page.status_code == 200
    assert _queries(fake)[-1] == {
        "offset": 25,
        "limit": 25,
        "status": TaskStatus.SUCCEEDED,
        "priority": TaskPriority.LOW,
        "name": "add",
    }
    assert "26\N{EN DASH}30 of 30" in page.text
    assert "page 2 of 2" in page.text
    # The HTML view clamps what it does not allow; the JSON twin refuses it.
    http.get("/fragments/history?size=100000&page=-3&status=bogus")
    assert _queries(fake)[-1]["limit"] == 100
    assert _queries(fake)[-1]["offset"] == 0
    assert _queries(fake)[-1]["status"] is None
    assert http.get("/api/history?limit=100000").status_code == 400
    assert http.get("/api/history?status=bogus").status_code == 400
    assert http.get("/api/history?priority=urgent").status_code == 400
    assert http.get("/api/history?offset=-1").status_code == 400
    ok = http.get("/api/history?limit=500&offset=10&priority=HIGH")
    assert ok.status_code == 200
    assert _queries(fake)[-1]["priority"] is TaskPriority.HIGH
    # A filter the user picks is kept in the address bar.
    nav = http.get("/fragments/history?status=failed&nav=1", headers={"HX-Request": "true"})
    assert nav.headers["HX-Replace-Url"] == "/?status=failed"


def test_task_detail_shows_payloads_escaped(http: TestClient, fake: FakeSource) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    task_id = fake.add(
        "fail",
        status=TaskStatus.FAILED,
        args=[hostile, b"\x00\xff", 1.5],
        kwargs={"note": "</pre><script>alert(2)</script>"},
        error=m.ErrorInfo(
            code="task_failed",
            message="boom <b>",
            remote_type="ValueError",
            traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: boom <b>',
        ),
    )
    page = http.get(f"/tasks/{task_id}")
    assert page.status_code == 200
    html = page.text
    assert hostile not in html
    assert "<script>alert" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;/pre&gt;&lt;script&gt;" in html
    assert "ValueError" in html
    assert "Traceback (most recent call last)" in html
    assert "bytes(2) base64: AP8=" in html
    assert 'data-action="retry"' in html
    # A finished task's fragment stops polling.
    fragment = http.get(f"/fragments/tasks/{task_id}").text
    assert "every 1s" not in fragment.split("</div>")[0]


def test_an_unknown_task_is_a_404(http: TestClient) -> None:
    assert http.get("/tasks/nope").status_code == 404
    assert http.get("/api/tasks/nope").json()["error"] == "task_not_found"


def test_task_ids_with_odd_characters_round_trip(http: TestClient, fake: FakeSource) -> None:
    task_id = fake.add("add", task_id="a/b?c#d %e")
    html = http.get("/").text
    link = re.search(r'<a href="([^"]+)" title="a/b\?c#d %e"', html)
    assert link is not None
    assert link.group(1) == "/tasks/a%2Fb%3Fc%23d%20%25e"
    assert http.get(link.group(1)).status_code == 200
    assert http.get("/api/tasks/a%2Fb%3Fc%23d%20%25e").json()["task_id"] == task_id


def _post(http: TestClient, path: str, *, htmx: bool = False) -> tuple[int, str]:
    token = csrf_token(http.get("/").text)
    headers = {"X-CSRF-Token": token, "Origin": ORIGIN}
    if htmx:
        headers["HX-Request"] = "true"
    response = http.post(path, headers=headers)
    return response.status_code, response.text


def test_cancel_answers_for_each_outcome(http: TestClient, fake: FakeSource) -> None:
    queued = fake.add("add", status=TaskStatus.QUEUED)
    running = fake.add("add", status=TaskStatus.RUNNING)
    assert _post(http, f"/actions/cancel/{queued}")[0] == 200
    assert fake.cancelled == [queued]
    assert _post(http, f"/actions/cancel/{running}")[0] == 409
    assert _post(http, "/actions/cancel/unknown")[0] == 404
    status, html = _post(http, f"/actions/cancel/{queued}", htmx=True)
    assert status == 200
    assert "toast" in html
    assert "Cancelled task" in html


def test_cancelling_a_running_task_says_its_worker_was_asked_to_stop_it(
    http: TestClient, fake: FakeSource
) -> None:
    running = fake.add("add", status=TaskStatus.RUNNING)
    assert _post(http, f"/actions/cancel/{running}")[0] == 409  # a worker that cannot
    fake.workers_stop_tasks = True
    status, body = _post(http, f"/actions/cancel/{running}")
    answer = json.loads(body)
    assert (status, answer["outcome"]) == (202, "stopping")
    assert "asked to stop" in answer["message"]


def test_a_scheduled_task_shows_when_it_runs_and_can_be_cancelled(
    http: TestClient, fake: FakeSource
) -> None:
    fake.counters = m.Counters(submitted=3, scheduled=2, retried=5)
    when = time.time() + 600
    task_id = fake.add("add", status=TaskStatus.SCHEDULED, not_before=when)
    html = http.get("/").text
    assert 'data-counter="scheduled" data-value="2"' in html
    assert 'data-counter="retried" data-value="5"' in html
    detail = http.get(f"/api/tasks/{task_id}").json()
    assert (detail["status"], detail["not_before"], detail["can_cancel"]) == (
        "scheduled",
        when,
        True,
    )
    assert "Runs at" in http.get(f"/tasks/{task_id}").text
    assert _post(http, f"/actions/cancel/{task_id}")[0] == 200
    assert fake.cancelled == [task_id]


def test_retry_resubmits_name_arguments_and_priority(http: TestClient, fake: FakeSource) -> None:
    failed = fake.add(
        "fail",
        status=TaskStatus.FAILED,
        priority=TaskPriority.HIGH,
        args=["boom", 2],
        kwargs={"priority": "not the option", "timeout": 3},
    )
    status, body = _post(http, f"/actions/retry/{failed}")
    assert status == 200, body
    (call,) = fake.submitted
    assert (call.name, list(call.args), dict(call.kwargs), call.priority) == (
        "fail",
        ["boom", 2],
        {"priority": "not the option", "timeout": 3},
        TaskPriority.HIGH,
    )
    # Keyed by the failed task, so the control plane makes one retry of it, not one a POST.
    assert call.idempotency_key == f"retry-of:{failed}"
    cancelled = fake.add("add", status=TaskStatus.CANCELLED)
    status, html = _post(http, f"/actions/retry/{cancelled}", htmx=True)
    assert status == 200
    assert "Resubmitted add" in html
    succeeded = fake.add("add")
    assert _post(http, f"/actions/retry/{succeeded}")[0] == 409
    fake.refuse_submissions = True
    status, body = _post(http, f"/actions/retry/{failed}")
    assert status == 409
    assert "retry refused" in body


def test_everything_works_under_a_prefix(
    make_http: Callable[..., TestClient], fake: FakeSource
) -> None:
    fake.add("add")
    queued = fake.add("add", status=TaskStatus.QUEUED)
    http = make_http(prefix="/ops/fastworker")
    html = http.get("/ops/fastworker/").text
    urls = [u.replace("&amp;", "&") for u in re.findall(r'(?:href|src|hx-get)="([^"]+)"', html)]
    actions = re.findall(r'hx-post="([^"]+)"', html)
    assert len(urls) > 5
    assert actions == [f"/ops/fastworker/actions/cancel/{queued}"]
    for url in urls:
        assert url.startswith("/ops/fastworker/"), url
        assert http.get(url).status_code == 200, url
    # The page's own action, posted as htmx posts it.
    headers = {"X-CSRF-Token": csrf_token(html), "Origin": ORIGIN, "HX-Request": "true"}
    assert http.post(actions[0], headers=headers).status_code == 200
    assert fake.cancelled == [queued]
    assert http.get("/ops/fastworker/api/overview").status_code == 200


def test_the_standalone_app_works_mounted_under_a_path() -> None:
    outer = FastAPI()
    outer.mount("/dash", create_app("ipc:///nonexistent/fastworker-test.sock"))
    http = TestClient(outer)
    with http:
        # Starlette runs no lifespan of a mounted app, so its client never starts: the
        # page says so instead of failing (embed with create_router to own the client).
        assert "Control plane unreachable" in http.get("/dash/fragments/live").text
        page = http.get("/dash/api/history")
        assert page.status_code == 503
        static = re.findall(r'href="([^"]+\.css[^"]*)"', http.get("/dash/").text)
        assert static
        assert static[0].startswith("/dash/static/")
        assert http.get(static[0]).status_code == 200


def test_pages_carry_security_headers(http: TestClient) -> None:
    page = http.get("/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    static = http.get(re.findall(r'src="([^"]+htmx[^"]+)"', page.text)[0])
    assert static.status_code == 200
    assert static.headers["content-type"].startswith("text/javascript")
    assert "immutable" in static.headers["Cache-Control"]
    assert http.get("/static/../app.py").status_code == 404
    assert http.get("/static/nothing.js").status_code == 404


@pytest.mark.parametrize(
    ("journal", "shown"),
    [
        (("/srv/fw/journal.sqlite3", "full", 3 * 1024 * 1024), "sync full, 3.0 MiB"),
        ((":memory:", "normal", 0), "a restart of the control plane forgets every task"),
    ],
)
def test_the_page_says_where_the_control_plane_journals(
    http: TestClient, fake: FakeSource, journal: tuple[str, str, int], shown: str
) -> None:
    fake.journal = journal
    html = http.get("/").text
    assert f'data-journal="{journal[0]}"' in html
    assert shown in html


def test_a_control_plane_of_protocol_1_0_shows_no_journal_line(
    http: TestClient, fake: FakeSource
) -> None:
    assert "data-journal=" not in http.get("/").text
