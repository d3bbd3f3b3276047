"""The report: one table of every measurement beside its target, the machine it ran on,
and the same as JSON."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.metrics import Measurement, Target

__all__ = ["Machine", "render", "to_json"]

_COLUMNS = ("workload", "setup", "metric", "value", "runs", "target", "", "note")


@dataclasses.dataclass(frozen=True)
class Machine:
    """Where the numbers were measured."""

    cpus: int
    cpu_model: str
    python: str
    system: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] | None = None

    @classmethod
    def here(cls) -> Machine:
        """This machine, now."""
        return cls(
            cpus=len(os.sched_getaffinity(0)),
            cpu_model=_cpu_model(),
            python=f"{platform.python_implementation()} {platform.python_version()}",
            system=f"{platform.system()} {platform.release()} {platform.machine()}",
            load_before=os.getloadavg(),
        )

    def finished(self) -> Machine:
        """The same, with the load average at the end of the run."""
        return dataclasses.replace(self, load_after=os.getloadavg())

    def describe(self) -> str:
        """One line for the top of the report."""
        load = f"load average {_load(self.load_before)} at start"
        if self.load_after is not None:
            load += f", {_load(self.load_after)} at end"
        return f"{self.cpus} CPUs ({self.cpu_model}), {self.python}, {self.system}; {load}"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown CPU"


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in load)


def _number(value: float, unit: str) -> str:
    if unit in ("tasks/s", "tasks"):
        return f"{value:,.0f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:.2f}"


def _with_unit(value: float, unit: str) -> str:
    return f"{_number(value, unit)} {unit}"


def _target(target: Target | None, unit: str) -> str:
    if target is None:
        return ""
    text = f"{target.op} {_with_unit(target.bound, unit)}"
    if target.aim is not None:
        text += f" (aim {_number(target.aim, unit)})"
    return text


def _row(m: Measurement) -> tuple[str, ...]:
    runs = " / ".join(_number(run, m.unit) for run in m.runs) if len(m.runs) > 1 else ""
    verdict = {None: "", True: "pass", False: "MISS"}[m.passed]
    value = _with_unit(m.value, m.unit)
    target = _target(m.target, m.unit)
    return (m.workload, m.setup, m.metric, value, runs, target, verdict, m.note)


def render(measurements: Sequence[Measurement], machine: Machine, *, mode: str) -> str:
    """The table, with a header naming the machine and a line counting passes."""
    rows = [_COLUMNS, *(_row(m) for m in measurements)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    header, *body = [line(row).rstrip() for row in rows]
    rule = "-" * max(len(text) for text in (header, *body))
    judged = [m for m in measurements if m.passed is not None]
    met = sum(1 for m in judged if m.passed)
    return "\n".join(
        [
            f"fastworker benchmarks ({mode}) on {machine.describe()}",
            "value: the median of the runs listed, if several; "
            "CPU us/task: CPU time of each process (client = this one) per task",
            rule,
            header,
            rule,
            *body,
            rule,
            f"{met} of {len(judged)} targets met (targets are reported, not asserted)",
        ]
    )


def to_json(
    measurements: Sequence[Measurement],
    machine: Machine,
    *,
    mode: str,
    sizes: Mapping[str, object],
) -> dict[str, Any]:
    """Everything in the table, plus each run's number and the workload sizes."""
    return {
        "mode": mode,
        "machine": dataclasses.asdict(machine),
        "python_executable": sys.executable,
        "sizes": dict(sizes),
        "measurements": [{**dataclasses.asdict(m), "passed": m.passed} for m in measurements],
    }
