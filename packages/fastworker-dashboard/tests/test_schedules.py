"""The schedules card, its JSON twin and a periodic run's task page, against the stand-in
client."""

from __future__ import annotations

import datetime
import re

import pytest
from dashboard_fakes import FakeSource
from fastapi.testclient import TestClient

from fastworker.protocol import TaskStatus
from fastworker.protocol import messages as m

pytestmark = pytest.mark.timeout(60)

NEXT = 1_900_000_000.0
LAST = 1_899_999_999.25


def _shown(moment: float) -> str:
    """A time as the page shows it: local date and time to the millisecond."""
    value = datetime.datetime.fromtimestamp(moment)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-schedule="([^"]+)"', html)


def _with_two_schedules(fake: FakeSource) -> str:
    """``tick``, run 12 times (3 skipped), its last run a task; ``nightly``, not run yet."""
    last = fake.add("tick", task_id="tick/run-12", schedule="tick", fire_time=LAST)
    fake.periodic = [
        m.ScheduleInfo(
            name="tick",
            schedule="every:1;missed=all",
            next_fire=NEXT,
            last_fire=LAST,
            last_task_id=last,
            runs=12,
            skipped=3,
        ),
        m.ScheduleInfo(name="nightly", schedule="cron:0 3 * * *;tz=Europe/Berlin", next_fire=NEXT),
    ]
    return last


def test_the_card_lists_each_schedule_with_its_times_counts_and_last_task(
    http: TestClient, fake: FakeSource
) -> None:
    _with_two_schedules(fake)
    html = http.get("/").text
    assert 'id="schedules"' in html
    assert _rows(html) == ["nightly", "tick"]  # as the control plane lists them, by name
    tick = html[html.index('<tr data-schedule="tick"') :]
    tick = tick[: tick.index("</tr>")]
    assert 'data-runs="12" data-skipped="3"' in tick
    assert "every:1;missed=all" in tick
    assert f">{_shown(NEXT)}</time>" in tick
    assert f">{_shown(LAST)}</time>" in tick
    assert '<a href="/tasks/tick%2Frun-12" title="tick/run-12">' in tick
    nightly = html[html.index('<tr data-schedule="nightly"') :]
    nightly = nightly[: nightly.index("</tr>")]
    assert "cron:0 3 * * *;tz=Europe/Berlin" in nightly
    assert "not run yet" in nightly
    assert "<a " not in nightly
    # The card polls its own fragment, as the other cards do, which shows the same.
    card = re.search(r'<section id="schedules"[^>]*>', html)
    assert card is not None
    assert 'hx-get="/fragments/schedules"' in card.group(0)
    assert 'hx-trigger="every 1s' in card.group(0)
    fragment = http.get("/fragments/schedules", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert _rows(fragment.text) == ["nightly", "tick"]


def test_the_card_follows_the_control_plane(http: TestClient, fake: FakeSource) -> None:
    _with_two_schedules(fake)
    assert 'data-runs="12"' in http.get("/fragments/schedules").text
    tick = fake.periodic[1]
    fake.periodic[1] = m.ScheduleInfo(
        name=tick.name, schedule=tick.schedule, last_fire=NEXT, next_fire=NEXT + 1, runs=13
    )
    assert 'data-runs="13"' in http.get("/fragments/schedules").text


def test_the_json_twin_answers_what_the_card_shows(http: TestClient, fake: FakeSource) -> None:
    last = _with_two_schedules(fake)
    answer = http.get("/api/schedules")
    assert answer.status_code == 200
    assert answer.json() == {
        "total": 2,
        "schedules": [
            {
                "name": "nightly",
                "schedule": "cron:0 3 * * *;tz=Europe/Berlin",
                "next_fire": NEXT,
                "last_fire": None,
                "last_task_id": None,
                "last_task_short_id": None,
                "runs": 0,
                "skipped": 0,
            },
            {
                "name": "tick",
                "schedule": "every:1;missed=all",
                "next_fire": NEXT,
                "last_fire": LAST,
                "last_task_id": last,
                "last_task_short_id": last,
                "runs": 12,
                "skipped": 3,
            },
        ],
    }


def test_no_schedules_says_none_are_configured(http: TestClient, fake: FakeSource) -> None:
    html = http.get("/fragments/schedules").text
    assert "No periodic tasks are configured." in html
    assert "docs/scheduling.md" in html
    assert _rows(html) == []
    assert http.get("/api/schedules").json() == {"total": 0, "schedules": []}


def test_an_older_control_plane_is_said_plainly_and_the_api_answers_501(
    http: TestClient, fake: FakeSource
) -> None:
    fake.schedules_supported = False
    page = http.get("/")
    assert page.status_code == 200
    assert (
        "Periodic tasks are not available from this control plane; it runs an older release."
        in page.text
    )
    assert "Control plane unreachable" not in page.text
    assert 'data-unsupported="schedules"' in http.get("/fragments/schedules").text
    answer = http.get("/api/schedules")
    assert answer.status_code == 501
    assert answer.json() == {
        "error": "unsupported_feature",
        "message": "periodic tasks are not available from this control plane; it runs an "
        "older release",
    }


def test_an_unreachable_control_plane_leaves_the_card_saying_so(
    http: TestClient, fake: FakeSource
) -> None:
    _with_two_schedules(fake)
    fake.down = True
    fragment = http.get("/fragments/schedules").text
    assert "Schedules unavailable: control plane unreachable" in fragment
    assert http.get("/api/schedules").status_code == 503


def test_a_run_of_a_schedule_names_it_and_when_it_was_due(
    http: TestClient, fake: FakeSource
) -> None:
    run = _with_two_schedules(fake)
    html = http.get(f"/tasks/{run}").text
    assert re.search(
        r'run of schedule <a href="/#schedules">tick</a>, due at <time[^>]*>'
        + re.escape(_shown(LAST))
        + "</time>",
        html,
    ), html
    answer = http.get(f"/api/tasks/{run}").json()
    assert (answer["schedule"], answer["fire_time"]) == ("tick", LAST)
    # A task submitted by hand is no run of a schedule.
    plain = fake.add("tick", status=TaskStatus.QUEUED)
    assert "run of schedule" not in http.get(f"/tasks/{plain}").text
    answer = http.get(f"/api/tasks/{plain}").json()
    assert (answer["schedule"], answer["fire_time"]) == (None, None)
