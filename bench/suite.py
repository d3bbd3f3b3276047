"""The benchmark plan: which clusters to start, which workloads to run on each, the
targets, and the command line of ``bench/run.py``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from bench import references, workloads
from bench.metrics import Measurement, Target
from bench.processes import IN_MEMORY, TRACED, BenchError, Cluster, ClusterSpec, Launcher
from bench.report import Machine, render, to_json

__all__ = [
    "FULL",
    "QUICK",
    "WORKLOADS",
    "Job",
    "Ratio",
    "Sizes",
    "Stage",
    "build_parser",
    "main",
    "plan",
    "run_plan",
    "tls_costs",
]

WORKLOADS = ("ref", "W1", "W2", "W3", "delay", "priority", "memory", "CLI")
"""Workload names, in report order; ``--only`` takes these (any case). ``ref`` is the
naive pipelines (bench/references.py); they run whenever a job's ratio needs them."""
JOB_TIMEOUT = 900.0
"""Seconds one workload may take on its cluster before the run is abandoned."""

# The targets. Reported beside the numbers, never asserted. Where the machine sets the
# pace (throughput, latency), a target is a ratio to a naive pipeline measured in the
# same run on the same sockets (see Ratio), since the floor moves with the machine.
JOURNAL_THROUGHPUT = Target(">=", 0.8)
"""W1 with the journal (the default) against W1 with ``--journal :memory:``."""
JOURNAL_LATENCY = Target("<=", 0.15)
"""Milliseconds the journal may add to W2's p50."""
TLS_RATIOS = {("W1", "throughput"): "throughput ratio", ("W2", "p50 of run()"): "p50 ratio"}
"""The metrics whose tls/tcp ratio is reported (without a target), and the ratio's name."""
PRIORITY_TARGETS = {
    "CRITICAL submit->start p99": Target("<=", 3.0),
    # Not a target of the issue: the CRITICAL numbers only mean something if the LOW
    # backlog was still there when the last CRITICAL task ran.
    "LOW left after last CRITICAL": Target(">=", 1),
}
MEMORY_TARGETS = {
    "control plane RSS idle": Target("<", 60.0),
    "control plane RSS growth/100k": Target("<=", 20.0),
}
CLI_TARGETS = {"`fastworker submit --wait`": Target("<=", 250.0)}
DELAY_TARGETS = {"p99 start after due": Target("<=", 100.0)}
"""A ``countdown=1`` task starts between 1.0 and 1.1 s after its submission."""
FAN_OUT_SLACK = 1.03
"""W3's target: the ideal makespan plus 3% (5.15 s for 200 x 50 ms on 2 slots)."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each workload does."""

    repeats: int = 3
    """Runs of W1 and W2 whose median is reported."""
    w1_tasks: int = 5_000
    w1_concurrency: int = 256
    """Slots per subworker (and local slots) for W1, W2, memory and the CLI: the
    pipeline holds no more tasks than there are slots (no prefetch)."""
    chunk: int = 1_000
    """Tasks per ``delay_many`` call (W1 batch, memory)."""
    w2_calls: int = 500
    w3_tasks: int = 200
    w3_seconds: float = 0.05
    low_tasks: int = 10_000
    low_seconds: float = 0.0005
    critical_tasks: int = 200
    critical_spacing: float = 0.005
    cache_size: int = 10_000
    """The control plane's ``--result-cache-size`` in the memory workload."""
    memory_warm: int = 20_000
    memory_tasks: int = 100_000
    cli_runs: int = 5
    delay_tasks: int = 200
    """Tasks submitted together with a countdown of one second (the delay workload)."""


FULL = Sizes()
QUICK = dataclasses.replace(
    FULL, repeats=1, low_tasks=3_000, memory_warm=12_000, memory_tasks=30_000, cli_runs=3
)

Workload = Callable[[Cluster], Awaitable[list[Measurement]]]


@dataclasses.dataclass(frozen=True)
class Ratio:
    """A number of a job against a reference's measured in the same run (``ours /
    reference``), and the target of that ratio."""

    metric: str
    reference: str
    """The reference's setup, one of the constants of bench/references.py."""
    reference_metric: str
    name: str
    """The ratio's metric in the report, such as ``p50 ratio``."""
    against: str
    """What the reference is, for the report: ``the 4-hop push/pull floor``."""
    target: Target | None = None

    def of(self, ours: Measurement, reference: Measurement) -> Measurement:
        return Measurement(
            ours.workload,
            f"{ours.setup}: against {self.against}",
            self.name,
            "x",
            ours.value / reference.value,
            target=self.target,
            note=f"{reference.value:,.3f} {reference.unit}: {reference.setup}",
        )


@dataclasses.dataclass(frozen=True)
class Job:
    """One workload on a running cluster, the targets of what it measures (by metric
    name), and its ratios to the references."""

    key: str
    run: Workload
    targets: Mapping[str, Target] = dataclasses.field(default_factory=dict[str, Target])
    ratios: tuple[Ratio, ...] = ()


@dataclasses.dataclass(frozen=True)
class Stage:
    """A cluster and the jobs that run on it, one after another."""

    spec: ClusterSpec
    jobs: tuple[Job, ...]


W1_RATIOS = (
    Ratio(
        "throughput",
        references.BATCHED,
        references.THROUGHPUT,
        "throughput ratio",
        "the batched asyncio pipeline",
        Target(">=", 0.8),
    ),
)
W2_RATIOS = (
    Ratio(
        "p50 of run()",
        references.FOUR_HOPS_PUSH_PULL,
        references.CALL_P50,
        "p50 ratio",
        "the 4-hop push/pull floor",
        Target("<=", 1.6),
    ),
    Ratio(
        "p99 of run()",
        references.FOUR_HOPS_PUSH_PULL,
        references.CALL_P99,
        "p99 ratio",
        "the 4-hop push/pull floor",
        Target("<=", 2.5),
    ),
    Ratio(
        "p50 of run()",
        references.FOUR_HOPS_PAIR1,
        references.CALL_P50,
        "p50 ratio",
        "the 4-hop pair1 floor",
    ),
)
W2_LOCAL_RATIOS = (
    Ratio(
        "p50 of run()",
        references.TWO_HOPS,
        references.CALL_P50,
        "p50 ratio",
        "the 2-hop push/pull floor",
        Target("<=", 1.6),
    ),
)


def plan(sizes: Sizes) -> list[Stage]:
    """Every stage of a run. W1 (+1 subworker) and W2 run over tcp, ipc and tls; the
    rest over tcp."""
    s = sizes

    def w1(chunk: int | None = None, ratios: tuple[Ratio, ...] = ()) -> Job:
        return Job(
            "W1",
            lambda c: workloads.throughput(c, tasks=s.w1_tasks, repeats=s.repeats, chunk=chunk),
            ratios=ratios,
        )

    # Through a subworker: four hops, against the naive four-hop pipelines.
    w2 = Job(
        "W2", lambda c: workloads.latency(c, calls=s.w2_calls, repeats=s.repeats), ratios=W2_RATIOS
    )
    # Two hops fewer than through a subworker: against the naive two-hop pipeline.
    w2_local = dataclasses.replace(w2, ratios=W2_LOCAL_RATIOS)
    # The same without the journal: its targets are on the difference (journal_costs).
    w2_memory = dataclasses.replace(w2, ratios=())
    # Tracing has no target of its own: its cost against the same run without is reported.
    w2_traced = dataclasses.replace(w2, ratios=())
    # TLS has no target of its own: its ratio to tcp is reported (tls_costs).
    w2_tls = dataclasses.replace(w2, ratios=())
    w2_ipc = dataclasses.replace(w2, ratios=())
    fan_out = ClusterSpec("tcp", subworkers=2, concurrency=1)
    ideal = s.w3_tasks * s.w3_seconds / (fan_out.subworkers * fan_out.concurrency)
    w3 = Job(
        "W3",
        lambda c: workloads.fan_out(c, tasks=s.w3_tasks, seconds=s.w3_seconds),
        {"makespan": Target("<=", round(ideal * FAN_OUT_SLACK, 3))},
    )
    priority = Job(
        "priority",
        lambda c: workloads.priority_under_load(
            c,
            low=s.low_tasks,
            low_seconds=s.low_seconds,
            critical=s.critical_tasks,
            spacing=s.critical_spacing,
        ),
        PRIORITY_TARGETS,
    )
    memory = Job(
        "memory",
        lambda c: workloads.memory(
            c, cache_size=s.cache_size, warm=s.memory_warm, measured=s.memory_tasks, chunk=s.chunk
        ),
        MEMORY_TARGETS,
    )
    cli = Job("CLI", lambda c: workloads.cli_submit(c, runs=s.cli_runs), CLI_TARGETS)
    delay = Job(
        "delay",
        lambda c: workloads.countdown_lateness(
            c, tasks=s.delay_tasks, countdown=1.0, repeats=s.repeats
        ),
        DELAY_TARGETS,
    )
    slots = s.w1_concurrency
    cache = ("--result-cache-size", str(s.cache_size))
    return [
        Stage(ClusterSpec("tcp", subworkers=0, concurrency=slots), (w1(), w2_local)),
        Stage(
            ClusterSpec("tcp", subworkers=1, concurrency=slots),
            (w1(ratios=W1_RATIOS), w1(chunk=s.chunk), w2, delay, cli),
        ),
        Stage(
            ClusterSpec("tcp", subworkers=1, concurrency=slots, journal=False), (w1(), w2_memory)
        ),
        Stage(
            ClusterSpec("tcp", subworkers=1, concurrency=slots, journal_sync="full"),
            (w1(), w2_memory),
        ),
        Stage(ClusterSpec("tcp", subworkers=1, concurrency=slots, tracing=True), (w1(), w2_traced)),
        Stage(ClusterSpec("tcp", subworkers=2, concurrency=slots), (w1(),)),
        Stage(ClusterSpec("ipc", subworkers=1, concurrency=slots), (w1(), w2_ipc)),
        Stage(ClusterSpec("tls", subworkers=1, concurrency=slots), (w1(), w2_tls)),
        Stage(fan_out, (w3,)),
        # Prefetch trades exact placement for a round trip less per task: W3 and W1 with
        # one task leased ahead per subworker (no targets of their own).
        Stage(dataclasses.replace(fan_out, prefetch=1), (dataclasses.replace(w3, targets={}),)),
        Stage(ClusterSpec("tcp", subworkers=1, concurrency=slots, prefetch=1), (w1(),)),
        Stage(ClusterSpec("tcp", subworkers=1, concurrency=1), (priority,)),
        Stage(
            ClusterSpec("tcp", subworkers=1, concurrency=slots, control_plane_args=cache),
            (memory,),
        ),
    ]


def _with_targets(measured: list[Measurement], targets: Mapping[str, Target]) -> list[Measurement]:
    unused = set(targets) - {m.metric for m in measured}
    if unused:
        raise BenchError(f"targets for metrics nobody measured: {sorted(unused)}")
    return [dataclasses.replace(m, target=targets.get(m.metric, m.target)) for m in measured]


def reference_run(sizes: Sizes) -> list[Measurement]:
    """The naive pipelines: W2's floors with as many calls as W2, W1's reference with as
    many tasks as W1, as many runs as theirs."""
    try:
        return [
            *references.measure_floors(sizes.w2_calls, sizes.repeats),
            *references.measure_batched(sizes.w1_tasks, sizes.repeats),
        ]
    except RuntimeError as exc:
        raise BenchError(f"a reference pipeline failed: {exc}") from exc


async def run_plan(
    stages: Sequence[Stage],
    launcher: Launcher,
    sizes: Sizes,
    *,
    only: frozenset[str] = frozenset(WORKLOADS),
    progress: Callable[[Measurement], None] = lambda _m: None,
) -> list[Measurement]:
    """Run the jobs named in ``only``, one stage's cluster at a time; the measurements
    in report order."""
    measured: list[Measurement] = []
    chosen = [(stage, [job for job in stage.jobs if job.key in only]) for stage in stages]
    if "ref" in only or any(job.ratios for _stage, jobs in chosen for job in jobs):
        for measurement in await asyncio.to_thread(reference_run, sizes):
            progress(measurement)
            measured.append(measurement)
    by_setup = {(m.setup, m.metric): m for m in measured}
    for stage, jobs in chosen:
        if not jobs:
            continue
        async with launcher.cluster(stage.spec) as cluster:
            for job in jobs:
                try:
                    results = await asyncio.wait_for(job.run(cluster), JOB_TIMEOUT)
                except asyncio.TimeoutError:
                    raise BenchError(f"{job.key} took over {JOB_TIMEOUT:.0f} s") from None
                results = _with_targets(results, job.targets)
                for ratio in job.ratios:
                    reference = by_setup[(ratio.reference, ratio.reference_metric)]
                    ours = [m for m in results if m.metric == ratio.metric]
                    results.extend(ratio.of(m, reference) for m in ours)
                for measurement in results:
                    progress(measurement)
                    measured.append(measurement)
    for cost in [*journal_costs(measured), *tracing_costs(measured), *tls_costs(measured)]:
        progress(cost)
        measured.append(cost)
    return sorted(measured, key=lambda m: WORKLOADS.index(m.workload))


def journal_costs(measured: Sequence[Measurement]) -> list[Measurement]:
    """What the journal costs, from each W1 or W2 run in memory and its twin with the
    journal (the same setup otherwise): W1's throughput ratio, W2's added p50."""
    return _twin_costs(
        measured,
        IN_MEMORY,
        ": journal against in memory",
        marked_is_with=False,
        targets=(JOURNAL_THROUGHPUT, JOURNAL_LATENCY),
    )


def tracing_costs(measured: Sequence[Measurement]) -> list[Measurement]:
    """What tracing costs, from each W1 or W2 run with every span recorded and its twin
    without (the same setup otherwise): W1's throughput ratio, W2's added p50."""
    return _twin_costs(measured, TRACED, ": tracing on against off", marked_is_with=True)


def _twin_costs(
    measured: Sequence[Measurement],
    marker: str,
    label: str,
    *,
    marked_is_with: bool,
    targets: tuple[Target | None, Target | None] = (None, None),
) -> list[Measurement]:
    """The cost of what ``marker`` in a setup label marks (or, ``marked_is_with`` false,
    of what it marks as absent), from each W1 or W2 run and its twin without the marker:
    W1's throughput with against without, and the p50 W2 adds with it."""
    by_setup = {(m.workload, m.setup, m.metric): m for m in measured}
    costs: list[Measurement] = []
    for marked in measured:
        if marker not in marked.setup:
            continue
        twin = by_setup.get((marked.workload, marked.setup.replace(marker, ""), marked.metric))
        if twin is None:
            continue
        with_, without = (marked, twin) if marked_is_with else (twin, marked)
        setup = marked.setup.replace(marker, label)
        if marked.workload == "W1" and marked.metric == "throughput":
            ratio = with_.value / without.value
            costs.append(
                Measurement("W1", setup, "throughput ratio", "x", ratio, target=targets[0])
            )
        elif marked.workload == "W2" and marked.metric == "p50 of run()":
            added = with_.value - without.value
            costs.append(Measurement("W2", setup, "p50 added", "ms", added, target=targets[1]))
    return costs


def tls_costs(measured: Sequence[Measurement]) -> list[Measurement]:
    """What TLS costs, from each W1 or W2 run over tls and its twin over tcp (the same
    setup otherwise): the tls/tcp ratio of W1's throughput and of W2's p50."""
    by_setup = {(m.workload, m.setup, m.metric): m for m in measured}
    costs: list[Measurement] = []
    for tls in measured:
        ratio = TLS_RATIOS.get((tls.workload, tls.metric))
        if ratio is None or not tls.setup.startswith("tls, "):
            continue
        rest = tls.setup.removeprefix("tls, ")
        tcp = by_setup.get((tls.workload, f"tcp, {rest}", tls.metric))
        if tcp is None:
            continue
        workers, _, api = rest.partition(", ")
        setup = f"{workers}: tls against tcp, {api}"
        costs.append(Measurement(tls.workload, setup, ratio, "x", tls.value / tcp.value))
    return costs


def _parse_only(text: str) -> frozenset[str]:
    by_name = {name.lower(): name for name in WORKLOADS}
    chosen: set[str] = set()
    for part in text.split(","):
        name = by_name.get(part.strip().lower())
        if name is None:
            raise argparse.ArgumentTypeError(
                f"unknown workload {part.strip()!r}; choose from {', '.join(WORKLOADS)}"
            )
        chosen.add(name)
    return frozenset(chosen)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``bench/run.py``."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark fastworker with real processes on loopback and print one table.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one run of W1/W2 and smaller backlogs"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--only",
        type=_parse_only,
        default=frozenset(WORKLOADS),
        metavar="W1,W2,...",
        help=f"run only these workloads: {', '.join(WORKLOADS)}",
    )
    return parser


@contextlib.contextmanager
def _exit_on_signals() -> Generator[None, None, None]:
    """Turn SIGTERM and SIGHUP into SystemExit, so the caller's cleanup runs."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _progress(m: Measurement) -> None:
    print(f"  {m.workload}: {m.setup}: {m.metric} = {m.value:,.3f} {m.unit}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; returns the exit code (0 also when targets are missed)."""
    options = build_parser().parse_args(argv)
    # The suite's own clients trace only in the traced runs (processes._client_tracing).
    os.environ["FASTWORKER_TRACING"] = "off"
    sizes = QUICK if options.quick else FULL
    mode = "quick" if options.quick else "full"
    run_dir = Path(tempfile.mkdtemp(prefix="fastworker-bench-"))
    launcher = Launcher(run_dir)
    machine = Machine.here()
    print(f"fastworker benchmarks ({mode}); process logs in {run_dir}", file=sys.stderr)
    ok = False
    try:
        with _exit_on_signals():
            measured = asyncio.run(
                run_plan(plan(sizes), launcher, sizes, only=options.only, progress=_progress)
            )
        ok = True
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        launcher.stop_all()
        if ok:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"bench: failed; process logs kept in {run_dir}", file=sys.stderr)
    machine = machine.finished()
    print(render(measured, machine, mode=mode))
    if options.json is not None:
        document = to_json(measured, machine, mode=mode, sizes=dataclasses.asdict(sizes))
        options.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0
