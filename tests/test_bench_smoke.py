"""The benchmark suite (bench/), run with tiny sizes so it cannot rot: every workload on
real processes, every result checked, the report rendered. Timing is never asserted."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The suite's modules import each other as ``bench.<module>``, from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import references, suite
from bench.metrics import Measurement
from bench.processes import Launcher
from bench.report import Machine, render, to_json

pytestmark = pytest.mark.timeout(120)

TINY = suite.Sizes(
    repeats=1,
    w1_tasks=200,
    w1_concurrency=16,
    chunk=50,
    w2_calls=20,
    w3_tasks=10,
    w3_seconds=0.01,
    low_tasks=200,
    low_seconds=0.0005,
    critical_tasks=5,
    critical_spacing=0.005,
    cache_size=100,
    memory_warm=200,
    memory_tasks=300,
    cli_runs=1,
)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    started = Launcher(tmp_path)
    yield started
    started.stop_all()


def _by_metric(measured: list[Measurement], workload: str) -> dict[str, list[Measurement]]:
    found: dict[str, list[Measurement]] = {}
    for measurement in measured:
        if measurement.workload == workload:
            found.setdefault(measurement.metric, []).append(measurement)
    return found


async def test_every_workload_runs_checks_its_results_and_reports(launcher: Launcher) -> None:
    measured = await suite.run_plan(suite.plan(TINY), launcher, TINY)

    # Each workload checked every one of its task results (a wrong one raises BenchError).
    w1 = _by_metric(measured, "W1")["throughput"]
    # Local; 1 subworker: delay, delay_many, in memory, sync full, traced, prefetch 1;
    # 2 subworkers; ipc; tls.
    assert len(w1) == 10
    assert all(m.verified == TINY.w1_tasks * TINY.repeats for m in w1)
    w2 = _by_metric(measured, "W2")
    assert sorted(w2) == [
        "max of run()",
        "p50 added",
        "p50 of run()",
        "p50 ratio",
        "p99 of run()",
        "p99 ratio",
    ]
    # Local execution, tcp, tcp in memory, sync full, traced, ipc and tls; the differences
    # of tcp and tcp in memory and of traced and not; ratios: tls against tcp, local
    # execution against the 2-hop floor, tcp against both 4-hop floors (p50) and the
    # push/pull one (p99).
    assert [len(w2[metric]) for metric in sorted(w2)] == [7, 2, 7, 4, 7, 1]
    assert all(m.target is None for m in w2["p50 of run()"])
    assert all(
        m.verified == TINY.w2_calls * TINY.repeats
        for metric, ms in w2.items()
        if metric not in ("p50 added", "p50 ratio", "p99 ratio")
        for m in ms
    )
    # The targets are on ratios to the references, measured in the same run.
    refs = {(m.setup, m.metric): m for m in measured if m.workload == "ref"}
    assert len(refs) == 7  # p50 and p99 of three floors, the batched throughput
    assert all(m.value > 0 and m.verified > 0 for m in refs.values())
    floor = refs[(references.FOUR_HOPS_PUSH_PULL, references.CALL_P50)]
    (ours,) = [m for m in w2["p50 of run()"] if m.setup == "tcp, 1 subworker x 16, run() x 20"]
    (ratio,) = [
        m for m in w2["p50 ratio"] if m.setup == f"{ours.setup}: against the 4-hop push/pull floor"
    ]
    assert ratio.value == ours.value / floor.value
    assert ratio.passed is not None  # it has a target
    (local,) = [m for m in w2["p50 ratio"] if "2-hop" in m.setup]
    assert local.target is not None
    (w1_ratio,) = [m for m in measured if m.setup.endswith("against the batched asyncio pipeline")]
    assert w1_ratio.passed is not None  # it has a target
    # The journal's cost, from the twin runs with and without it.
    journal_ratios = _by_metric(measured, "W1")["throughput ratio"]  # and the reference's
    (ratio,) = [m for m in journal_ratios if "journal against in memory" in m.setup]
    (added,) = [m for m in w2["p50 added"] if "journal against in memory" in m.setup]
    assert ratio.value > 0
    assert ratio.passed is not None
    assert added.passed is not None
    # Tracing on against off: derived costs, no targets.
    tracing = [m for m in measured if "tracing on against off" in m.setup]
    assert sorted((m.workload, m.metric) for m in tracing) == [
        ("W1", "throughput ratio"),
        ("W2", "p50 added"),
    ]
    assert all(m.target is None for m in tracing)
    # TLS against tcp: derived ratios, no targets.
    tls_ratios = [m for m in measured if m.setup.startswith("1 subworker x 16: tls against tcp")]
    assert sorted(m.metric for m in tls_ratios) == ["p50 ratio", "throughput ratio"]
    assert all(m.value > 0 and m.target is None for m in tls_ratios)
    w3, w3_prefetch = _by_metric(measured, "W3")["makespan"]
    assert w3.verified == w3_prefetch.verified == TINY.w3_tasks
    assert w3.target is not None
    assert w3_prefetch.setup == "tcp, 2 subworkers x 1, prefetch 1, 10 x 10 ms"
    priority = _by_metric(measured, "priority")
    assert priority["CRITICAL submit->start p99"][0].verified == TINY.critical_tasks
    assert priority["LOW drain rate"][0].verified == TINY.low_tasks
    memory = _by_metric(measured, "memory")
    growth = memory["control plane RSS growth/100k"][0]
    assert growth.verified == TINY.memory_warm + TINY.memory_tasks
    assert memory["control plane RSS idle"][0].value > 0
    assert memory["subworker RSS idle"][0].value > 0
    journal_size = memory[f"journal file after {TINY.memory_warm + TINY.memory_tasks:,}"][0]
    assert journal_size.value > 0
    (cli,) = _by_metric(measured, "CLI")["`fastworker submit --wait`"]
    assert cli.verified == TINY.cli_runs

    # Targets are attached, and judged.
    assert all(m.passed is not None for m in (w3, cli, growth))

    machine = Machine.here().finished()
    table = render(measured, machine, mode="smoke")
    for measurement in measured:
        assert measurement.metric in table
    document = to_json(measured, machine, mode="smoke", sizes={"w1_tasks": TINY.w1_tasks})
    assert len(json.loads(json.dumps(document))["measurements"]) == len(measured)


def test_only_takes_workload_names_in_any_case() -> None:
    options = suite.build_parser().parse_args(["--only", "w1,Priority"])
    assert options.only == frozenset({"W1", "priority"})
    with pytest.raises(SystemExit):
        suite.build_parser().parse_args(["--only", "W9"])


@pytest.mark.parametrize(
    "setup", [references.FOUR_HOPS_PUSH_PULL, references.FOUR_HOPS_PAIR1, references.TWO_HOPS]
)
def test_each_floor_runs_its_pipeline_and_checks_every_reply(setup: str) -> None:
    times = references.call_latency(setup, 50)  # a wrong reply raises
    assert len(times) == 50
    assert all(t > 0 for t in times)


def test_the_batched_reference_runs_every_call_and_checks_every_result() -> None:
    assert references.batched_throughput(300) > 0  # a wrong result raises
