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
