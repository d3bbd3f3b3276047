"""The tasks the benchmark suite runs. Control planes and subworkers import this module
with ``--task-modules bench_tasks`` from their working directory, ``bench/``."""

from __future__ import annotations

import time

from fastworker.client import task


@task
def add(x: int, y: int) -> int:
    """The no-op task of the throughput, latency, memory and CLI workloads."""
    return x + y


@task
def block(seconds: float) -> float:
    """Hold a slot for ``seconds`` without using the CPU (the fan-out workload)."""
    time.sleep(seconds)
    return seconds


@task
def backlog(index: int, seconds: float) -> int:
    """A LOW task of the priority workload: short, so many of them keep the queue full."""
    time.sleep(seconds)
    return index


@task
def stamp(index: int) -> float:
    """A CRITICAL task of the priority workload: returns when it started (epoch seconds)."""
    return time.time()
