"""``GET /metrics``: the control plane's metrics as Prometheus text, behind the access
guard, and what a scrape gets from an older or absent control plane."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dashboard_fakes import FakeSource
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fastworker.protocol import TaskPriority, WorkerState
from fastworker.protocol import messages as m

pytestmark = pytest.mark.timeout(60)


def _with_metrics(fake: FakeSource) -> None:
    fake.task_metrics = [
        m.TaskMetrics(
            name="add",
            submitted=5,
            succeeded=4,
            failed=1,
            latency=[
                m.LatencyHistograms(
                    priority=TaskPriority.HIGH,
                    queue_wait=m.Histogram(counts=[5, 0, 0], sum=0.05),
                    run=m.Histogram(counts=[1, 3, 1], sum=6.0),
                )
            ],
        )
    ]
    fake.depth = m.QueueDepth(normal=7)
    fake.workers = [
        m.WorkerInfo(
            worker_id="sw-1",
            state=WorkerState.CONNECTED,
            address="127.0.0.1:1",
            host="h",
            pid=1,
            load=2,
            slots=8,
            connected_at=0.0,
            last_heartbeat=0.0,
        )
    ]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_reads_the_control_planes_metrics(http: TestClient, fake: FakeSource) -> None:
    _with_metrics(fake)
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = _samples(response.text)
    assert samples["fastworker_tasks_submitted_total", (("task", "add"),)] == 5
    assert samples["fastworker_tasks_failed_total", (("task", "add"),)] == 1
    labels = (("priority", "high"), ("task", "add"))
    assert samples["fastworker_task_run_seconds_count", labels] == 5
    assert samples["fastworker_task_run_seconds_bucket", (("le", "1.0"), *labels)] == 4
    assert samples["fastworker_queue_depth", (("priority", "normal"),)] == 7
    assert samples["fastworker_subworker_slots", (("worker", "sw-1"),)] == 8
    assert fake.metrics_queries == 1


def test_an_older_control_plane_is_501_and_an_absent_one_503(
    http: TestClient, fake: FakeSource
) -> None:
    fake.metrics_supported = False
    response = http.get("/metrics")
    assert response.status_code == 501
    assert response.json()["error"] == "unsupported_feature"
    fake.metrics_supported = True
    fake.down = True
    response = http.get("/metrics")
    assert response.status_code == 503
    assert response.json()["error"] == "control_plane_unreachable"


def test_with_an_access_token_a_scrape_needs_the_bearer_header(
    make_http: Callable[..., TestClient], fake: FakeSource
) -> None:
    http = make_http(prefix="/fw", access_token="s3cret")
    refused = http.get("/fw/metrics", follow_redirects=False)
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"  # JSON for a program, not the HTML page
    assert fake.metrics_queries == 0
    wrong = http.get("/fw/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    allowed = http.get("/fw/metrics", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200
    assert "fastworker_queue_depth" in allowed.text
    # A ?token= works too, without the page's trade for a cookie (a scraper keeps none).
    by_query = http.get("/fw/metrics?token=s3cret", follow_redirects=False)
    assert by_query.status_code == 200
    assert "set-cookie" not in by_query.headers
