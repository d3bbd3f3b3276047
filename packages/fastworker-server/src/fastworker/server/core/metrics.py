"""The control plane's metrics per task name: counts and duration histograms, kept for a
bounded set of names. A task looks its name's entry up once (``TaskState.metrics``);
each observation is then an addition and, for a duration, a bisect."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastworker.protocol import METRICS_MAX_TASK_NAMES, METRICS_OTHER_TASK, TaskPriority
from fastworker.protocol import messages as m

from ..histograms import Histogram

if TYPE_CHECKING:
    from .records import TaskState

__all__ = ["NameMetrics", "TaskMetricsBook"]

_LEVELS = len(TaskPriority)


class NameMetrics:
    """Counts since the start and durations per priority of one task name."""

    __slots__ = ("cancelled", "failed", "queue_wait", "retried", "run", "submitted", "succeeded")

    def __init__(self) -> None:
        self.submitted = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.cancelled = 0
        self.queue_wait: list[Histogram | None] = [None] * _LEVELS
        """By priority; made at a level's first observation."""
        self.run: list[Histogram | None] = [None] * _LEVELS

    def waited(self, priority: TaskPriority, seconds: float) -> None:
        histogram = self.queue_wait[priority]
        if histogram is None:
            histogram = self.queue_wait[priority] = Histogram()
        histogram.observe(seconds)

    def ran(self, priority: TaskPriority, seconds: float) -> None:
        histogram = self.run[priority]
        if histogram is None:
            histogram = self.run[priority] = Histogram()
        histogram.observe(seconds)

    def sample(self, name: str) -> m.TaskMetrics:
        latency: list[m.LatencyHistograms] = []
        for priority in TaskPriority:
            wait, run = self.queue_wait[priority], self.run[priority]
            if wait is None and run is None:
                continue
            latency.append(
                m.LatencyHistograms(
                    priority=priority,
                    queue_wait=(wait or Histogram()).sample(),
                    run=(run or Histogram()).sample(),
                )
            )
        return m.TaskMetrics(
            name=name,
            submitted=self.submitted,
            succeeded=self.succeeded,
            failed=self.failed,
            retried=self.retried,
            cancelled=self.cancelled,
            latency=latency,
        )


class TaskMetricsBook:
    """:class:`NameMetrics` for the first ``limit`` task names seen; every name after
    those shares the entry :data:`~fastworker.protocol.METRICS_OTHER_TASK`. Names come
    from the registry and subworkers' announcements, which are not bounded by much, and
    every name is a series in the monitoring system: so the bound."""

    def __init__(self, limit: int = METRICS_MAX_TASK_NAMES) -> None:
        self.limit = limit
        self.by_name: dict[str, NameMetrics] = {}

    def of(self, name: str) -> NameMetrics:
        """The entry that counts ``name``."""
        entry = self.by_name.get(name)
        if entry is None:
            entry = self._track(name)
        return entry

    def of_task(self, task: TaskState) -> NameMetrics:
        """The entry that counts ``task``'s name, found once and kept on the task."""
        entry = task.metrics
        if entry is None:
            entry = task.metrics = self.of(task.name)
        return entry

    def _track(self, name: str) -> NameMetrics:
        by_name = self.by_name
        if len(by_name) >= self.limit:
            name = METRICS_OTHER_TASK
            entry = by_name.get(name)
            if entry is not None:
                return entry
        entry = by_name[name] = NameMetrics()
        return entry

    def samples(self) -> list[m.TaskMetrics]:
        """Every entry for the wire, by name."""
        return [self.by_name[name].sample(name) for name in sorted(self.by_name)]
