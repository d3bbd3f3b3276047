"""The workloads: each drives a running cluster through the public client API (or the
``fastworker`` command), checks every result, and returns what it measured.

A wrong result raises :class:`BenchError` rather than being measured. Every wait is
bounded: each result by RESULT_TIMEOUT, each command by CLI_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.metrics import Measurement, percentile
from bench.processes import BENCH_DIR, BenchError, Cluster, cpu_seconds, rss_mb

from fastworker.client import Client, TaskCall, TaskNotFoundError, TaskPriority, TaskResult

__all__ = [
    "cli_submit",
    "countdown_lateness",
    "fan_out",
    "fastworker_command",
    "latency",
    "memory",
    "priority_under_load",
    "throughput",
]

RESULT_TIMEOUT = 120.0
"""Seconds to wait for any one task's result."""
CLI_TIMEOUT = 30.0
"""Seconds one ``fastworker submit --wait`` may take before it is killed."""
SUBMIT_CHUNK = 1000
"""Tasks per ``delay_many`` call where a workload only needs to enqueue many tasks."""
WARMUP_TASKS = 500
"""Tasks run before measuring throughput (first-use costs: imports, thread pools)."""
WARMUP_CALLS = 20
"""Sequential calls run before measuring latency."""


# --- running tasks ---------------------------------------------------------------------


async def _collect(client: Client, task_ids: Sequence[str]) -> list[TaskResult]:
    """Wait for every task, concurrently."""
    return await asyncio.gather(*(client.wait(tid, timeout=RESULT_TIMEOUT) for tid in task_ids))


async def _run_each(client: Client, calls: Sequence[TaskCall]) -> list[TaskResult]:
    """Submit every call by its own ``delay()``, all at once, and wait for every result."""
    task_ids = await asyncio.gather(
        *(client.delay(c.name, *c.args, priority=c.priority, **c.kwargs) for c in calls)
    )
    return await _collect(client, task_ids)


async def _run_batched(
    client: Client, calls: Sequence[TaskCall], *, chunk: int, in_flight: int
) -> list[TaskResult]:
    """Submit the calls with ``delay_many`` in chunks, at most ``in_flight`` chunks
    unfinished at once, and wait for every result."""
    gate = asyncio.Semaphore(in_flight)

    async def run_chunk(part: Sequence[TaskCall]) -> list[TaskResult]:
        async with gate:
            return await _collect(client, await client.delay_many(part))

    parts = [calls[start : start + chunk] for start in range(0, len(calls), chunk)]
    done = await asyncio.gather(*(run_chunk(part) for part in parts))
    return [result for part in done for result in part]


async def _count_known(client: Client, task_ids: Sequence[str]) -> int:
    """How many of these tasks the control plane still knows (asked concurrently)."""

    async def known(task_id: str) -> bool:
        try:
            await client.status(task_id)
        except TaskNotFoundError:
            return False
        return True

    return sum(await asyncio.gather(*(known(task_id) for task_id in task_ids)))


def _check(results: Sequence[TaskResult], expected: Sequence[Any], what: str) -> int:
    """Raise BenchError unless every task succeeded with its expected value; return how
    many results were checked."""
    if len(results) != len(expected):
        raise BenchError(f"{what}: {len(results)} results for {len(expected)} tasks")
    for index, (result, value) in enumerate(zip(results, expected, strict=True)):
        if not result.ok:
            raise BenchError(f"{what}: task {index} ended {result.status.value}: {result.error}")
        if result.value != value:
            raise BenchError(f"{what}: task {index} returned {result.value!r}, not {value!r}")
    return len(results)


def _adds(count: int, offset: int) -> tuple[list[TaskCall], list[int]]:
    """``count`` calls of the no-op ``add`` task and the values they must return."""
    calls = [TaskCall("add", (index, offset)) for index in range(count)]
    return calls, [index + offset for index in range(count)]


def _cpu(cluster: Cluster) -> dict[str, float]:
    """CPU seconds used so far by this process (the client), the control plane (cp) and
    the subworkers together (sw)."""
    used = {
        "client": cpu_seconds(os.getpid()),
        "cp": cpu_seconds(cluster.control_plane.pid),
    }
    if cluster.subworkers:
        used["sw"] = sum(cpu_seconds(worker.pid) for worker in cluster.subworkers)
    return used


def _cpu_note(before: dict[str, float], after: dict[str, float], tasks: int) -> str:
    """Where the CPU went, per task: ``CPU us/task: client 95, cp 40, sw 60`` (from
    /proc, in clock ticks of 10 ms: meaningful over thousands of tasks)."""
    parts = [f"{name} {(after[name] - before[name]) / tasks * 1e6:.0f}" for name in before]
    return "CPU us/task: " + ", ".join(parts)


# --- workloads -------------------------------------------------------------------------


async def throughput(
    cluster: Cluster, *, tasks: int, repeats: int, chunk: int | None = None
) -> list[Measurement]:
    """W1: ``tasks`` no-op tasks in flight at once, each submitted by its own ``delay()``
    (or, with ``chunk``, by ``delay_many`` in chunks of that size, all chunks at once),
    timed from the first submission to the last result; the median of ``repeats`` runs."""
    client = cluster.client
    calls, expected = _adds(min(tasks, WARMUP_TASKS), -1)
    _check(await _run_each(client, calls), expected, "W1 warm-up")
    runs: list[float] = []
    verified = 0
    cpu_before = _cpu(cluster)
    for run in range(repeats):
        calls, expected = _adds(tasks, run)
        started = time.perf_counter()
        if chunk is None:
            results = await _run_each(client, calls)
        else:
            results = await _run_batched(client, calls, chunk=chunk, in_flight=len(calls))
        elapsed = time.perf_counter() - started
        verified += _check(results, expected, "W1")
        runs.append(tasks / elapsed)
    note = _cpu_note(cpu_before, _cpu(cluster), tasks * repeats)
    api = "delay()" if chunk is None else f"delay_many({chunk:,})"
    return [
        Measurement.of_runs(
            "W1",
            f"{cluster.spec.describe()}, {api} x {tasks:,}",
            "throughput",
            "tasks/s",
            runs,
            verified=verified,
            note=note,
        )
    ]


async def latency(cluster: Cluster, *, calls: int, repeats: int) -> list[Measurement]:
    """W2: ``calls`` sequential ``await client.run("add", i, 1)``; p50, p99 and max of
    each run, then the median of each over ``repeats`` runs."""
    client = cluster.client
    for index in range(WARMUP_CALLS):
        if await client.run("add", index, 1, wait=RESULT_TIMEOUT) != index + 1:
            raise BenchError("W2 warm-up: wrong result")
    stats: dict[str, list[float]] = {"p50": [], "p99": [], "max": []}
    cpu_before = _cpu(cluster)
    for _run in range(repeats):
        times: list[float] = []
        for index in range(calls):
            started = time.perf_counter()
            value = await client.run("add", index, 1, wait=RESULT_TIMEOUT)
            times.append((time.perf_counter() - started) * 1000)
            if value != index + 1:
                raise BenchError(f"W2: add({index}, 1) returned {value!r}")
        stats["p50"].append(percentile(times, 0.50))
        stats["p99"].append(percentile(times, 0.99))
        stats["max"].append(max(times))
    notes = {"p50": _cpu_note(cpu_before, _cpu(cluster), calls * repeats)}
    setup = f"{cluster.spec.describe()}, run() x {calls:,}"
    return [
        Measurement.of_runs(
            "W2",
            setup,
            f"{name} of run()",
            "ms",
            runs,
            verified=calls * repeats,
            note=notes.get(name, ""),
        )
        for name, runs in stats.items()
    ]


async def countdown_lateness(
    cluster: Cluster, *, tasks: int, countdown: float, repeats: int
) -> list[Measurement]:
    """``tasks`` stamps submitted together with ``countdown``: how late each started after
    its due time (submission plus the countdown), p50 and p99 of each run, medians."""
    client = cluster.client
    stats: dict[str, list[float]] = {"p50": [], "p99": []}
    for _run in range(repeats):
        calls = [TaskCall("stamp", (i,), countdown=countdown) for i in range(tasks)]
        submitted = time.time()
        ids = await client.delay_many(calls)
        started = [r.get() for r in await _collect(client, ids)]
        late = [(start - submitted - countdown) * 1000 for start in started]
        if min(late) < 0:
            raise BenchError(f"a countdown task started {-min(late):.1f} ms early")
        stats["p50"].append(percentile(late, 0.50))
        stats["p99"].append(percentile(late, 0.99))
    setup = f"{cluster.spec.describe()}, {tasks} x countdown {countdown:g} s"
    return [
        Measurement.of_runs(
            "delay", setup, f"{name} start after due", "ms", runs, verified=tasks * repeats
        )
        for name, runs in stats.items()
    ]


async def fan_out(cluster: Cluster, *, tasks: int, seconds: float) -> list[Measurement]:
    """W3: ``tasks`` tasks that each block ``seconds``, submitted at once; the makespan
    from the first submission to the last result, against the ideal of perfect spreading
    over the cluster's slots. Checks that every subworker took its share."""
    client = cluster.client
    slots = cluster.spec.subworkers * cluster.spec.concurrency
    calls = [TaskCall("block", (seconds,)) for _ in range(tasks)]
    started = time.perf_counter()
    results = await _run_each(client, calls)
    makespan = time.perf_counter() - started
    verified = _check(results, [seconds] * tasks, "W3")
    workers = {result.worker_id for result in results}
    if len(workers) != cluster.spec.subworkers:
        raise BenchError(f"W3: {cluster.spec.subworkers} subworkers but only {workers} ran tasks")
    ideal = tasks * seconds / slots
    return [
        Measurement(
            "W3",
            f"{cluster.spec.describe()}, {tasks:,} x {seconds * 1000:g} ms",
            "makespan",
            "s",
            makespan,
            verified=verified,
            note=f"ideal {ideal:.2f} s",
        )
    ]


async def priority_under_load(
    cluster: Cluster, *, low: int, low_seconds: float, critical: int, spacing: float
) -> list[Measurement]:
    """CRITICAL tasks submitted one at a time behind a backlog of ``low`` LOW tasks on a
    busy cluster: the time from submitting each to its start (the task returns
    ``time.time()`` when it starts), p50 and p99. Also reports how many LOW tasks were
    still queued after the last CRITICAL one (the backlog must persist for the numbers
    to mean anything) and how fast the backlog drained."""
    client = cluster.client
    calls = [
        TaskCall("backlog", (index, low_seconds), priority=TaskPriority.LOW) for index in range(low)
    ]
    started = time.perf_counter()
    low_ids: list[str] = []
    for start in range(0, low, SUBMIT_CHUNK):
        low_ids += await client.delay_many(calls[start : start + SUBMIT_CHUNK])
    delays: list[float] = []
    for index in range(critical):
        submitted = time.time()
        began = await client.run(
            "stamp", index, priority=TaskPriority.CRITICAL, wait=RESULT_TIMEOUT
        )
        if not isinstance(began, float) or began < submitted - 0.001:
            raise BenchError(f"priority: CRITICAL task {index} returned {began!r}")
        delays.append((began - submitted) * 1000)
        await asyncio.sleep(spacing)
    left = (await client.overview()).queue_depth.low
    verified = _check(await _collect(client, low_ids), list(range(low)), "priority LOW")
    drain = low / (time.perf_counter() - started)
    setup = f"{cluster.spec.describe()}, {low:,} LOW x {low_seconds * 1000:g} ms"
    measure = functools.partial(Measurement, "priority", setup)
    return [
        measure("CRITICAL submit->start p50", "ms", percentile(delays, 0.50), verified=critical),
        measure("CRITICAL submit->start p99", "ms", percentile(delays, 0.99), verified=critical),
        measure("LOW left after last CRITICAL", "tasks", left),
        measure("LOW drain rate", "tasks/s", drain, verified=verified),
    ]


async def memory(
    cluster: Cluster, *, cache_size: int, warm: int, measured: int, chunk: int
) -> list[Measurement]:
    """Idle RSS of the control plane and of a subworker, then the control plane's RSS
    growth over ``measured`` tasks once ``warm`` tasks have filled its result cache
    (``cache_size``, the control plane's ``--result-cache-size``), per 100,000 tasks."""
    client = cluster.client
    idle_plane = rss_mb(cluster.control_plane.pid)
    idle_worker = rss_mb(cluster.subworkers[0].pid)
    calls, expected = _adds(warm, 0)
    results = await _run_batched(client, calls, chunk=chunk, in_flight=4)
    verified = _check(results, expected, "memory warm-up")
    kept = await _count_known(client, [result.task_id for result in results])
    if kept != cache_size:
        raise BenchError(f"memory: the control plane keeps {kept} finished tasks, not {cache_size}")
    before = rss_mb(cluster.control_plane.pid)
    calls, expected = _adds(measured, 1)
    verified += _check(
        await _run_batched(client, calls, chunk=chunk, in_flight=4), expected, "memory"
    )
    after = rss_mb(cluster.control_plane.pid)
    overview = await client.overview()
    counters = overview.counters
    if counters.succeeded < warm + measured:
        raise BenchError(f"memory: the control plane counted {counters.succeeded} successes")
    setup = f"{cluster.spec.describe()}, cache {cache_size:,}"
    note = f"{before:.1f} -> {after:.1f} MB over {measured:,} tasks"
    growth = (after - before) * 100_000 / measured
    measure = functools.partial(Measurement, "memory", setup)
    return [
        measure("control plane RSS idle", "MB", idle_plane),
        measure("subworker RSS idle", "MB", idle_worker),
        measure("control plane RSS growth/100k", "MB", growth, verified=verified, note=note),
        measure(
            f"journal file after {warm + measured:,}",
            "MB",
            overview.journal_bytes / 1e6,
            note=f"sync {overview.journal_sync}" if overview.journal_sync else "no journal",
        ),
    ]


def fastworker_command() -> list[str]:
    """The ``fastworker`` console script next to this interpreter, else
    ``python -m fastworker.server.cli``."""
    script = shutil.which("fastworker", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "fastworker.server.cli"]


async def cli_submit(cluster: Cluster, *, runs: int) -> list[Measurement]:
    """``fastworker submit add 1 2 --wait --address ADDR``: wall time of the whole
    command (interpreter start, imports, connect, submit, wait), the median of ``runs``."""
    command = [*fastworker_command(), "submit", "add", "1", "2", "--wait"]
    command += ["--address", cluster.address]
    times: list[float] = []
    for _run in range(runs):
        started = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run, command, cwd=BENCH_DIR, capture_output=True, timeout=CLI_TIMEOUT
        )
        times.append((time.perf_counter() - started) * 1000)
        if done.returncode != 0 or done.stdout.strip() != b"3":
            raise BenchError(
                f"fastworker submit exited {done.returncode}: "
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
            )
    return [
        Measurement.of_runs(
            "CLI",
            cluster.spec.describe(),
            "`fastworker submit --wait`",
            "ms",
            times,
            verified=runs,
        )
    ]
