"""Metrics end to end: a control plane and a subworker as processes run known work, and
Prometheus's view of it is scraped over real HTTP from the dashboard (uvicorn, its own
process) and from the control plane's ``--metrics-port``, then parsed with
prometheus-client's own parser and checked to the unit."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastworker.client import (
    Client,
    TaskCall,
    TaskPriority,
    TaskStatus,
    UnknownTaskError,
    UnsupportedFeatureError,
)
from fw_processes import START_TIMEOUT, Processes, connect, wait_for_workers
from fw_waits import SLACK
from test_dashboard_browser import start_dashboard

pytestmark = pytest.mark.timeout(120)

MODULES = "fw_tasks,fw_lifecycle_tasks"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _metrics_url(processes: Processes) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        found = re.search(
            r"metrics on (http://127\.0\.0\.1:\d+/metrics)", processes.log("control-plane")
        )
        if found:
            return found.group(1)
        assert time.monotonic() < deadline, processes.log("control-plane")
        await asyncio.sleep(0.05)


async def _scrape(http: httpx.AsyncClient, url: str) -> Samples:
    """The metrics at ``url``, once it answers 200 (the dashboard's client connects in
    the background after its start)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        response = await http.get(url)
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            return _samples(response.text)
        assert time.monotonic() < deadline, f"{url}: {response.status_code} {response.text}"
        await asyncio.sleep(0.1)


async def _run_known_work(client: Client, tmp_path: Path) -> None:
    """7 ``add`` at HIGH that succeed; 3 ``fail`` at NORMAL that fail; one ``flaky`` that
    fails twice, is retried twice and succeeds; one ``add`` at LOW that waits for its
    countdown and is cancelled before it runs."""
    adds = await client.delay_many(
        [TaskCall("add", (i, 1), priority=TaskPriority.HIGH) for i in range(7)]
    )
    fails = [await client.delay("fail", f"planned {i}") for i in range(3)]
    flaky = await client.delay("flaky", str(tmp_path / "attempts.txt"), 2)
    later = await client.delay("add", 1, 1, priority=TaskPriority.LOW, countdown=600.0)
    reply = await client.cancel(later)
    assert reply.cancelled == [later]
    with pytest.raises(UnknownTaskError):  # refused: never counted, never a series
        await client.delay("no_such_task")
    results = [await client.wait(task_id, timeout=30 + SLACK) for task_id in adds + fails]
    assert [r.status for r in results] == [TaskStatus.SUCCEEDED] * 7 + [TaskStatus.FAILED] * 3
    assert await client.result(flaky, timeout=30 + SLACK) == 3


def _check(samples: Samples) -> None:
    def counter(metric: str, task: str) -> float:
        return samples[f"fastworker_tasks_{metric}_total", (("task", task),)]

    def count(metric: str, task: str, priority: str) -> float:
        labels = (("priority", priority), ("task", task))
        return samples[f"fastworker_task_{metric}_seconds_count", labels]

    assert [counter(name, "add") for name in ("submitted", "succeeded", "failed")] == [8, 7, 0]
    assert [counter(name, "add") for name in ("retried", "cancelled")] == [0, 1]
    assert [counter(name, "fail") for name in ("submitted", "succeeded", "failed")] == [3, 0, 3]
    assert [counter(name, "flaky") for name in ("submitted", "succeeded", "retried")] == [1, 1, 2]
    assert counter("failed", "flaky") == 0
    # One queue wait per dispatch and one run time per outcome, the retried ones too.
    assert count("queue_wait", "add", "high") == 7
    assert count("run", "add", "high") == 7
    assert count("queue_wait", "fail", "normal") == count("run", "fail", "normal") == 3
    assert count("queue_wait", "flaky", "normal") == count("run", "flaky", "normal") == 3
    add_bucket = (("le", "+Inf"), ("priority", "high"), ("task", "add"))
    assert samples["fastworker_task_run_seconds_bucket", add_bucket] == 7
    # The cancelled one never ran, and no other name or priority appeared.
    tasks = {dict(labels).get("task") for _name, labels in samples} - {None}
    assert tasks == {"add", "fail", "flaky"}
    assert ("fastworker_task_run_seconds_count", (("priority", "low"), ("task", "add"))) not in (
        samples
    )
    for level in ("critical", "high", "normal", "low"):
        assert samples["fastworker_queue_depth", (("priority", level),)] == 0
    assert samples["fastworker_dead_letters", ()] == 3
    assert samples["fastworker_scheduled_tasks", ()] == 0
    assert samples["fastworker_tasks_running", ()] == 0
    assert samples["fastworker_subworkers", (("state", "connected"),)] == 1
    assert samples["fastworker_subworkers", (("state", "draining"),)] == 0
    assert samples["fastworker_subworker_slots", (("worker", "sw-1"),)] == 4
    assert samples["fastworker_subworker_load", (("worker", "sw-1"),)] == 0
    assert samples["fastworker_journal_commit_seconds_count", ()] >= 1


async def test_the_dashboard_and_the_metrics_port_show_exactly_the_work_done(
    processes: Processes, tmp_path: Path
) -> None:
    address = processes.address()
    processes.control_plane(
        address, "--no-local-execution", "--metrics-port", "0", task_modules=MODULES
    )
    client = await connect(address)
    try:
        processes.subworker(address, "sw-1", "--concurrency", "4", task_modules=MODULES)
        await wait_for_workers(client, 1)
        metrics_url = await _metrics_url(processes)
        dashboard_url = await asyncio.to_thread(start_dashboard, processes, address)
        await _run_known_work(client, tmp_path)

        async with httpx.AsyncClient(timeout=10) as http:
            from_port = await _scrape(http, metrics_url)
            from_dashboard = await _scrape(http, dashboard_url + "metrics")
        _check(from_port)
        _check(from_dashboard)
        # Nothing ran in between: the two agree on every counter and histogram.
        moving = ("fastworker_journal_commit_seconds",)
        assert {k: v for k, v in from_port.items() if not k[0].startswith(moving)} == {
            k: v for k, v in from_dashboard.items() if not k[0].startswith(moving)
        }

        reply = await client.metrics()
        assert {entry.name for entry in reply.tasks} == {"add", "fail", "flaky"}
        client.features = frozenset()  # as from a control plane of an older release
        with pytest.raises(UnsupportedFeatureError, match="metrics"):
            await client.metrics()
    finally:
        await client.stop()
