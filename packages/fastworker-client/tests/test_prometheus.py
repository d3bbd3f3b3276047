"""A control plane's metrics reply as Prometheus metrics: names, labels, cumulative
buckets, and what the client refuses before anything reaches prometheus-client."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastworker.client.client import _check_buckets  # pyright: ignore[reportPrivateUsage]
from fastworker.client.prometheus import METRICS, families, render
from fastworker.protocol import (
    ProtocolError,
    TaskPriority,
    WorkerState,
)
from fastworker.protocol import messages as m

BOUNDS = [0.01, 0.1, 1.0]


def _reply(**changes: object) -> m.MetricsReply:
    options: dict[str, object] = {
        "request_id": 1,
        "buckets": BOUNDS,
        "tasks": [
            m.TaskMetrics(
                name='say "hi"',
                submitted=12,
                succeeded=7,
                failed=3,
                retried=2,
                cancelled=1,
                latency=[
                    m.LatencyHistograms(
                        priority=TaskPriority.CRITICAL,
                        queue_wait=m.Histogram(counts=[4, 3, 2, 1], sum=12.5),
                        run=m.Histogram(counts=[0, 0, 10, 0], sum=4.0),
                    )
                ],
            )
        ],
        "queue_depth": m.QueueDepth(critical=1, low=5),
        "running": 2,
        "scheduled": 3,
        "requeued": 4,
        "dead_letters": 3,
        "dead_letters_dropped": 1,
        "workers": [
            m.WorkerLoad(worker_id="w-1", state=WorkerState.CONNECTED, load=2, slots=4),
            m.WorkerLoad(worker_id="w-2", state=WorkerState.DRAINING, load=0, slots=1),
        ],
        "journal_commits": m.Histogram(counts=[5, 1, 0, 0], sum=0.02),
    }
    options.update(changes)
    return m.MetricsReply(**options)  # pyright: ignore[reportArgumentType]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_reply_renders_as_every_declared_metric_with_exact_values() -> None:
    text = render(_reply()).decode()
    parsed = {family.name: family.type for family in text_string_to_metric_families(text)}
    declared = {spec.name.removesuffix("_total"): spec.kind for spec in METRICS}
    assert parsed == declared
    samples = _samples(text)
    task = frozenset({("task", 'say "hi"')})
    assert samples["fastworker_tasks_submitted_total", task] == 12
    assert samples["fastworker_tasks_succeeded_total", task] == 7
    assert samples["fastworker_tasks_failed_total", task] == 3
    assert samples["fastworker_tasks_retried_total", task] == 2
    assert samples["fastworker_tasks_cancelled_total", task] == 1
    labels = task | {("priority", "critical")}
    buckets = [
        samples["fastworker_task_queue_wait_seconds_bucket", labels | {("le", le)}]
        for le in ("0.01", "0.1", "1.0", "+Inf")
    ]
    assert buckets == [4, 7, 9, 10]  # cumulative
    assert samples["fastworker_task_queue_wait_seconds_count", labels] == 10
    assert samples["fastworker_task_queue_wait_seconds_sum", labels] == 12.5
    assert samples["fastworker_task_run_seconds_count", labels] == 10
    assert samples["fastworker_queue_depth", frozenset({("priority", "low")})] == 5
    assert samples["fastworker_queue_depth", frozenset({("priority", "high")})] == 0
    assert samples["fastworker_subworkers", frozenset({("state", "connected")})] == 1
    assert samples["fastworker_subworkers", frozenset({("state", "draining")})] == 1
    assert samples["fastworker_subworker_slots", frozenset({("worker", "w-1")})] == 4
    assert samples["fastworker_subworker_load", frozenset({("worker", "w-1")})] == 2
    assert samples["fastworker_scheduled_tasks", frozenset()] == 3
    assert samples["fastworker_dead_letters", frozenset()] == 3
    assert samples["fastworker_dead_letters_dropped_total", frozenset()] == 1
    assert samples["fastworker_tasks_requeued_total", frozenset()] == 4
    assert samples["fastworker_tasks_running", frozenset()] == 2
    assert samples["fastworker_journal_commit_seconds_count", frozenset()] == 6


def test_no_journal_no_commit_histogram_and_no_subworkers_reads_zero() -> None:
    names = {metric.name for metric in families(_reply(journal_commits=None, workers=[]))}
    assert "fastworker_journal_commit_seconds" not in names
    samples = _samples(render(_reply(workers=[])).decode())
    assert samples["fastworker_subworkers", frozenset({("state", "connected")})] == 0


def test_histograms_that_do_not_fit_their_bounds_are_refused() -> None:
    _check_buckets(_reply())
    short = m.Histogram(counts=[1, 2], sum=1.0)
    with pytest.raises(ProtocolError, match="2 counts for 3 bucket bounds"):
        _check_buckets(_reply(journal_commits=short))
    with pytest.raises(ProtocolError, match="do not increase"):
        _check_buckets(_reply(buckets=[0.1, 0.1, 1.0]))
