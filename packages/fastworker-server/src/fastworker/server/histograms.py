"""A duration histogram over the protocol's fixed buckets: a bisect and two additions per
observation, and a copy for the wire. Pure; used by the core and by the journal."""

from __future__ import annotations

from bisect import bisect_left

from fastworker.protocol import METRICS_BUCKETS
from fastworker.protocol import messages as m

__all__ = ["Histogram"]


class Histogram:
    """Seconds counted into :data:`~fastworker.protocol.METRICS_BUCKETS` (each bucket
    counts what is at most its bound, as Prometheus's ``le``), and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(METRICS_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        if seconds < 0.0:
            seconds = 0.0  # a clock that stepped back on the reporting host
        self.counts[bisect_left(METRICS_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def sample(self) -> m.Histogram:
        """A copy for the wire: later observations do not change it."""
        return m.Histogram(counts=list(self.counts), sum=self.sum)
