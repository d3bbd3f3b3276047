"""What a workload measures: numbers, their targets, and the statistics behind them."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Literal

__all__ = ["Measurement", "Target", "median", "percentile"]


@dataclasses.dataclass(frozen=True)
class Target:
    """A bound a number should meet: ``value OP bound``. ``aim`` is the hoped-for value
    beyond the bound, shown but not judged."""

    op: Literal["<=", ">=", "<"]
    bound: float
    aim: float | None = None

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the bound."""
        if self.op == "<=":
            return value <= self.bound
        if self.op == "<":
            return value < self.bound
        return value >= self.bound


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One number of the report.

    ``value`` is the median of ``runs`` when there were several runs. ``verified``
    counts the task results the workload checked for this number (every one is checked;
    a wrong one raises instead of being measured).
    """

    workload: str
    setup: str
    metric: str
    unit: str
    value: float
    runs: tuple[float, ...] = ()
    target: Target | None = None
    verified: int = 0
    note: str = ""

    @property
    def passed(self) -> bool | None:
        """Whether the target is met; None without a target."""
        return None if self.target is None else self.target.met(self.value)

    @classmethod
    def of_runs(
        cls,
        workload: str,
        setup: str,
        metric: str,
        unit: str,
        runs: Sequence[float],
        *,
        target: Target | None = None,
        verified: int = 0,
        note: str = "",
    ) -> Measurement:
        """The median of several runs, keeping each run's number."""
        return cls(
            workload=workload,
            setup=setup,
            metric=metric,
            unit=unit,
            value=median(runs),
            runs=tuple(runs),
            target=target,
            verified=verified,
            note=note,
        )


def median(values: Sequence[float]) -> float:
    """The median; raises ValueError for no values."""
    if not values:
        raise ValueError("the median of no values")
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 for p99) of ``values``."""
    if not values:
        raise ValueError("a percentile of no values")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered))
    return ordered[rank - 1]
