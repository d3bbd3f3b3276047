"""Throughput from counter deltas, latency from finished tasks, charts from both."""

from __future__ import annotations

import pytest
from dashboard_fakes import FakeSource

from fastworker.dashboard._metrics import Sample, Sampler, nice_ceiling, percentile
from fastworker.protocol import TaskPriority, TaskStatus
from fastworker.protocol import messages as m

pytestmark = pytest.mark.timeout(30)


def _sampler() -> Sampler:
    fake = FakeSource()
    return Sampler(lambda: fake)


def _task(task_id: str, queued: float, finished: float) -> m.TaskInfo:
    return m.TaskInfo(
        task_id=task_id,
        name="add",
        priority=TaskPriority.NORMAL,
        status=TaskStatus.SUCCEEDED,
        queued_at=queued,
        started_at=queued,
        finished_at=finished,
    )


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0


def test_nice_ceilings() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 1, 3, 7, 12, 240, 999)] == [
        1.0,
        1.0,
        1.0,
        5.0,
        10.0,
        20.0,
        250.0,
        1000.0,
    ]


def test_each_finished_task_counts_once() -> None:
    sampler = _sampler()
    # The first look only sets the mark: those tasks finished before anyone watched.
    assert sampler.count_finished([_task("a", 100.0, 101.0)]) == []
    fresh = sampler.count_finished([_task("b", 100.0, 102.5), _task("a", 100.0, 101.0)])
    assert fresh == [2.5]
    assert sampler.count_finished([_task("b", 100.0, 102.5)]) == []
    assert sampler.summary()["latency_p50"] == 2.5


def test_rates_come_from_counter_deltas_with_gaps() -> None:
    sampler = _sampler()
    for at, submitted, finished in [
        (1000.0, 0, 0),
        (1001.0, 100, 50),
        (1002.0, 200, 150),
        (1010.0, 300, 250),  # a long silence: a gap, not a slow second
        (1011.0, 5, 2),  # the control plane restarted: counters went back
        (1012.0, 15, 12),
    ]:
        sampler.samples.append(Sample(at=at, submitted=submitted, finished=finished, failed=0))
    assert sampler.rates() == [
        (1001.0, 50.0, 100.0),
        (1002.0, 100.0, 100.0),
        (1010.0, None, None),
        (1011.0, None, None),
        (1012.0, 10.0, 10.0),
    ]
    chart = sampler.throughput_chart(now=1012.0)
    assert chart.y_max == 100.0
    done = chart.series[0]
    # Two segments: before and after the gap.
    assert done.line.count("M") == 2
    assert done.area.count("Z") == 2
    assert not chart.empty


def test_an_empty_chart_says_so() -> None:
    chart = _sampler().latency_chart(now=1000.0)
    assert chart.empty
    assert chart.y_max == 1.0


async def test_a_sample_counts_what_finished_and_a_silent_control_plane_leaves_a_gap() -> None:
    fake = FakeSource()
    sampler = Sampler(lambda: fake)
    fake.counters = m.Counters(submitted=12, succeeded=7, failed=2, cancelled=1, running=2)
    await sampler.sample_once()
    fake.down = True
    await sampler.sample_once()  # no answer: no sample, no error
    fake.down = False
    fake.counters = m.Counters(submitted=20, succeeded=15, failed=2, cancelled=1)
    await sampler.sample_once()
    assert [(s.submitted, s.finished, s.failed) for s in sampler.samples] == [
        (12, 10, 2),
        (20, 18, 2),
    ]
