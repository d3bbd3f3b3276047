"""The supervisor's restart policy, on a fake clock, and what its children are given."""

from __future__ import annotations

import argparse

import pytest

from fastworker.server.cli import parse_command_line
from fastworker.server.cli.settings import processes_flag
from fastworker.server.supervised import EXIT_RECYCLE, RecycleLimits
from fastworker.server.supervisor import RestartPolicy, child_command, child_environment


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def crash_after(policy: RestartPolicy, clock: FakeClock, lived: float, code: int = 1) -> float:
    """Start the slot's process now, let it live ``lived`` seconds, and return the delay
    the policy gives its replacement (which the clock then waits out)."""
    policy.started(clock.now)
    delay = policy.exited(code, clock.advance(lived))
    clock.advance(delay)
    return delay


def test_a_child_that_lived_long_enough_is_restarted_at_once_every_time() -> None:
    policy, clock = RestartPolicy(min_uptime=5.0), FakeClock()
    assert [crash_after(policy, clock, 60.0, code=-9) for _ in range(5)] == [0.0] * 5


def test_a_child_that_keeps_dying_at_start_backs_off_exponentially_up_to_the_cap() -> None:
    policy = RestartPolicy(min_uptime=5.0, base_delay=0.5, max_delay=4.0)
    clock = FakeClock()
    delays = [crash_after(policy, clock, 0.2) for _ in range(7)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_living_long_enough_once_resets_the_backoff() -> None:
    policy, clock = RestartPolicy(min_uptime=5.0, base_delay=0.5), FakeClock()
    assert [crash_after(policy, clock, 1.0) for _ in range(3)] == [0.0, 0.5, 1.0]
    assert crash_after(policy, clock, 5.0) == 0.0
    assert crash_after(policy, clock, 1.0) == 0.0  # a first quick death again
    assert crash_after(policy, clock, 1.0) == 0.5


def test_a_child_that_asked_to_be_recycled_is_restarted_at_once_however_young() -> None:
    policy, clock = RestartPolicy(min_uptime=5.0, base_delay=0.5), FakeClock()
    assert [crash_after(policy, clock, 0.1) for _ in range(3)] == [0.0, 0.5, 1.0]
    assert crash_after(policy, clock, 0.1, code=EXIT_RECYCLE) == 0.0
    assert crash_after(policy, clock, 0.1) == 0.0  # recycling also reset the count


def test_recycle_limits_count_tasks_and_read_resident_memory() -> None:
    assert not RecycleLimits().any
    assert RecycleLimits().reached(10**6) is None
    tasks = RecycleLimits(max_tasks=50)
    assert tasks.reached(49) is None
    assert "50 tasks" in (tasks.reached(50) or "")
    memory = RecycleLimits(max_memory_mb=100)
    assert memory.reached(1, rss=lambda: 100 * 2**20) is None
    assert "101 MiB" in (memory.reached(1, rss=lambda: 101 * 2**20) or "")
    # The real reading: this test process has some resident memory, far below 1 TiB.
    assert RecycleLimits(max_memory_mb=2**20).reached(1) is None
    assert RecycleLimits(max_memory_mb=1).reached(1) is not None


def test_processes_takes_a_count_or_auto() -> None:
    assert processes_flag("3") == 3
    assert processes_flag("auto") >= 1
    for wrong in ("0", "many"):
        with pytest.raises(ValueError, match="at least 1, or auto"):
            processes_flag(wrong)


def _subworker_options(*extra: str) -> argparse.Namespace:
    return parse_command_line(["subworker", "--worker-id", "fast-1", *extra], environ={})


def test_a_child_runs_the_same_subworker_as_one_process_with_its_slot_id() -> None:
    options = _subworker_options(
        "--processes",
        "3",
        "--task-modules",
        "shop.tasks,billing",
        "--concurrency",
        "7",
        "--max-tasks-per-child",
        "50",
        "--auth-token",
        "s3cret",
        "--log-format",
        "json",
    )
    argv = child_command(options, "fast-1.2")
    child = parse_command_line(argv[3:], environ={})  # past "python -m fastworker.server.cli"
    assert (child.worker_id, child.processes) == ("fast-1.2", 1)
    assert child.task_modules == ["shop.tasks", "billing"]
    assert child.concurrency == 7
    assert child.max_tasks_per_child == 50
    assert child.log_format == "json"
    assert child.auth_token is None
    assert "s3cret" not in argv  # not in ps output
    env = child_environment(options, 7)
    assert env["FASTWORKER_AUTH_TOKEN"] == "s3cret"
    assert env["FASTWORKER_SUPERVISOR_FD"] == "7"


def test_every_subworker_flag_reaches_the_children_or_is_left_out_on_purpose() -> None:
    # A flag added to the subworker later must be forwarded, or listed here with why.
    left_out = {
        "help",
        "worker_id",  # each child has its own
        "processes",  # each child is one process
        "base_address",  # ignored
        "auth_token",  # in the environment, out of ps
        "auth_token_file",  # read by the supervisor
        "health_host",  # the supervisor answers the probes
        "health_port",
        "reload",  # a reloader restarts the supervisor, children and all
    }
    options = _subworker_options()
    sentinel = "x"
    for dest in vars(options):
        if dest not in left_out and dest != "command":
            setattr(options, dest, sentinel)
    argv = child_command(options, "fast-1.1")
    forwarded = {argv[i].removeprefix("--").replace("-", "_") for i in range(len(argv))}
    missing = {d for d in vars(options) if d not in left_out and d != "command"} - forwarded
    assert not missing
