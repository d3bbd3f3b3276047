"""A control plane's metrics as Prometheus metric families (the ``prometheus`` extra:
``pip install 'fastworker-client[prometheus]'``).

:meth:`Client.metrics() <fastworker.client.Client.metrics>` returns a
:class:`~fastworker.protocol.messages.MetricsReply`; :func:`families` turns one into
prometheus-client's metric families, :class:`ControlPlaneCollector` does so on every
scrape of a registry it is registered with, and :func:`render` writes the text format::

    from prometheus_client import REGISTRY
    from fastworker.client import SyncClient
    from fastworker.client.prometheus import ControlPlaneCollector

    client = SyncClient()
    REGISTRY.register(ControlPlaneCollector(client.metrics))

Every metric this module writes is declared once, in :data:`METRICS`; the table in
docs/observability.md is checked against it. This module imports prometheus_client, so
the client package never imports it by itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Final, Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from fastworker.protocol import TaskPriority, WorkerState
from fastworker.protocol import messages as m

__all__ = [
    "CONTENT_TYPE",
    "METRICS",
    "ControlPlaneCollector",
    "MetricSpec",
    "families",
    "render",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of what :func:`render` writes (Prometheus's text format 0.0.4)."""


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric as a scrape shows it: its name (a counter's ends in ``_total``), type,
    labels and meaning."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...]
    help: str


SUBMITTED = MetricSpec(
    "fastworker_tasks_submitted_total", "counter", ("task",), "Tasks accepted for the queue."
)
SUCCEEDED = MetricSpec(
    "fastworker_tasks_succeeded_total", "counter", ("task",), "Tasks that ended succeeded."
)
FAILED = MetricSpec(
    "fastworker_tasks_failed_total",
    "counter",
    ("task",),
    "Tasks that ended failed (out of retries, timed out, lost too often); each also "
    "entered the dead-letter list.",
)
RETRIED = MetricSpec(
    "fastworker_tasks_retried_total",
    "counter",
    ("task",),
    "Attempts that failed and were scheduled again by the task's retry policy.",
)
CANCELLED = MetricSpec(
    "fastworker_tasks_cancelled_total", "counter", ("task",), "Tasks that ended cancelled."
)
REQUEUED = MetricSpec(
    "fastworker_tasks_requeued_total",
    "counter",
    (),
    "Tasks taken back from a lost or draining subworker and queued again.",
)
QUEUE_WAIT = MetricSpec(
    "fastworker_task_queue_wait_seconds",
    "histogram",
    ("task", "priority"),
    "Seconds from joining the queue (submission, due time, requeue) to dispatch; one "
    "observation per dispatch.",
)
RUN = MetricSpec(
    "fastworker_task_run_seconds",
    "histogram",
    ("task", "priority"),
    "Seconds an attempt ran, as its runner measured; one observation per outcome, retried "
    "failures included.",
)
QUEUE_DEPTH = MetricSpec(
    "fastworker_queue_depth",
    "gauge",
    ("priority",),
    "Tasks waiting in the queue now (parked ones included, scheduled ones not).",
)
RUNNING = MetricSpec("fastworker_tasks_running", "gauge", (), "Tasks running now.")
SCHEDULED = MetricSpec(
    "fastworker_scheduled_tasks",
    "gauge",
    (),
    "Tasks waiting for their time now: a countdown, an ETA or a retry's backoff.",
)
DEAD_LETTERS = MetricSpec(
    "fastworker_dead_letters", "gauge", (), "Tasks in the dead-letter list now."
)
DEAD_LETTERS_DROPPED = MetricSpec(
    "fastworker_dead_letters_dropped_total",
    "counter",
    (),
    "Dead letters dropped past the list's bound (`--dead-letters`).",
)
SUBWORKERS = MetricSpec(
    "fastworker_subworkers",
    "gauge",
    ("state",),
    "Subworkers connected now, `connected` or `draining`.",
)
SUBWORKER_LOAD = MetricSpec(
    "fastworker_subworker_load", "gauge", ("worker",), "Tasks assigned to the subworker now."
)
SUBWORKER_SLOTS = MetricSpec(
    "fastworker_subworker_slots",
    "gauge",
    ("worker",),
    "The subworker's declared concurrency: it never gets more tasks than this.",
)
JOURNAL_COMMIT = MetricSpec(
    "fastworker_journal_commit_seconds",
    "histogram",
    (),
    "Seconds each journal transaction took, encoding to commit (absent without a journal).",
)

METRICS: Final = (
    SUBMITTED,
    SUCCEEDED,
    FAILED,
    RETRIED,
    CANCELLED,
    REQUEUED,
    QUEUE_WAIT,
    RUN,
    QUEUE_DEPTH,
    RUNNING,
    SCHEDULED,
    DEAD_LETTERS,
    DEAD_LETTERS_DROPPED,
    SUBWORKERS,
    SUBWORKER_LOAD,
    SUBWORKER_SLOTS,
    JOURNAL_COMMIT,
)
"""Every metric :func:`families` writes, in its order."""

_SUBWORKER_STATES: Final = (WorkerState.CONNECTED, WorkerState.DRAINING)


def _counter(spec: MetricSpec) -> CounterMetricFamily:
    # prometheus-client takes the name without ``_total`` and adds it to the sample.
    return CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=spec.labels)


def _gauge(spec: MetricSpec, value: float | None = None) -> GaugeMetricFamily:
    if value is not None:
        return GaugeMetricFamily(spec.name, spec.help, value=value)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def _buckets(bounds: list[float], histogram: m.Histogram) -> list[tuple[str, float]]:
    """Prometheus's cumulative buckets from the wire's one count per bucket."""
    cumulative: list[tuple[str, float]] = []
    total = 0
    labels = [repr(float(bound)) for bound in bounds] + ["+Inf"]  # as prometheus-client's own
    for label, count in zip(labels, histogram.counts, strict=True):
        total += count
        cumulative.append((label, total))
    return cumulative


def families(reply: m.MetricsReply) -> list[Metric]:
    """Every metric of :data:`METRICS` for one reply (the journal's histogram only when
    the control plane has a journal)."""
    counters = {spec: _counter(spec) for spec in (SUBMITTED, SUCCEEDED, FAILED, RETRIED, CANCELLED)}
    queue_wait = HistogramMetricFamily(QUEUE_WAIT.name, QUEUE_WAIT.help, labels=QUEUE_WAIT.labels)
    run = HistogramMetricFamily(RUN.name, RUN.help, labels=RUN.labels)
    bounds = reply.buckets
    for entry in reply.tasks:
        name = [entry.name]
        counters[SUBMITTED].add_metric(name, entry.submitted)
        counters[SUCCEEDED].add_metric(name, entry.succeeded)
        counters[FAILED].add_metric(name, entry.failed)
        counters[RETRIED].add_metric(name, entry.retried)
        counters[CANCELLED].add_metric(name, entry.cancelled)
        for latency in entry.latency:
            labels = [entry.name, latency.priority.name.lower()]
            for family, histogram in ((queue_wait, latency.queue_wait), (run, latency.run)):
                family.add_metric(labels, _buckets(bounds, histogram), histogram.sum)
    requeued = _counter(REQUEUED)
    requeued.add_metric([], reply.requeued)
    depth = _gauge(QUEUE_DEPTH)
    for priority in TaskPriority:
        level = priority.name.lower()
        depth.add_metric([level], getattr(reply.queue_depth, level))
    dropped = _counter(DEAD_LETTERS_DROPPED)
    dropped.add_metric([], reply.dead_letters_dropped)
    subworkers = _gauge(SUBWORKERS)
    for state in _SUBWORKER_STATES:
        subworkers.add_metric([state.value], sum(w.state is state for w in reply.workers))
    load, slots = _gauge(SUBWORKER_LOAD), _gauge(SUBWORKER_SLOTS)
    for worker in reply.workers:
        load.add_metric([worker.worker_id], worker.load)
        slots.add_metric([worker.worker_id], worker.slots)
    result: list[Metric] = [
        *counters.values(),
        requeued,
        queue_wait,
        run,
        depth,
        _gauge(RUNNING, reply.running),
        _gauge(SCHEDULED, reply.scheduled),
        _gauge(DEAD_LETTERS, reply.dead_letters),
        dropped,
        subworkers,
        load,
        slots,
    ]
    commits = reply.journal_commits
    if commits is not None:
        journal = HistogramMetricFamily(JOURNAL_COMMIT.name, JOURNAL_COMMIT.help)
        journal.add_metric([], _buckets(bounds, commits), commits.sum)
        result.append(journal)
    return result


class ControlPlaneCollector:
    """A prometheus-client collector that asks ``source`` for a reply on every scrape
    (``SyncClient.metrics``, or a function returning a reply fetched already). It
    describes no metrics up front, so registering it asks the control plane nothing."""

    def __init__(self, source: Callable[[], m.MetricsReply]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from families(self._source())


def render(reply: m.MetricsReply) -> bytes:
    """One reply in Prometheus's text format (:data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(lambda: reply))
    return generate_latest(registry)
