"""The task runner and its thread lane: outcomes of sync and async tasks, time limits,
discarding, and the bound on threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from fastworker.client import Retry, is_cancelled
from fastworker.client.hooks import Hook, TaskRun, add_hook, remove_hook
from fastworker.client.tasks import Task, TaskRegistry
from fastworker.protocol import TaskStatus, decode_value, encode_value
from fastworker.protocol.messages import TaskAssignment, TaskOutcome
from fastworker.server.runner import TaskRunner
from fastworker.server.threads import ThreadLane

WAIT = 10.0
"""Seconds any outcome may take to arrive before the test fails."""

release = threading.Event()


def add(x: int, y: int) -> int:
    return x + y


async def add_async(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


def boom() -> None:
    raise ValueError("no luck")


class FlakyError(ConnectionError):
    """A subclass: retry_on names a base class, and the subworker matches it."""


def flaky() -> None:
    raise FlakyError("connection reset")


async def asks_again(countdown: float) -> None:
    try:
        raise KeyError("not yet")
    except KeyError as exc:
        raise Retry(countdown=countdown) from exc


def polite() -> str:
    """A sync task that looks at the cancel flag between steps."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if is_cancelled():
            return "stopped early"
        time.sleep(0.005)
    return "ran to its end"


def wait_for_release() -> str:
    release.wait(WAIT)
    return "released"


async def sleep_long() -> None:
    await asyncio.sleep(WAIT)


class _Concurrency:
    """How many count_concurrent tasks run at this moment, and the most there were."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0


concurrency = _Concurrency()


def count_concurrent() -> None:
    with concurrency.lock:
        concurrency.now += 1
        concurrency.peak = max(concurrency.peak, concurrency.now)
    try:
        release.wait(WAIT)
    finally:
        with concurrency.lock:
            concurrency.now -= 1


seen_by_task: contextvars.ContextVar[str] = contextvars.ContextVar("seen_by_task", default="")


def reads_the_hooks_context() -> str:
    return seen_by_task.get()


async def reads_the_hooks_context_async() -> str:
    await asyncio.sleep(0)
    return seen_by_task.get()


def _registry() -> TaskRegistry:
    registry = TaskRegistry()
    registry.register(Task(add))
    registry.register(Task(add_async))
    registry.register(Task(boom))
    registry.register(Task(flaky))
    registry.register(Task(polite))
    registry.register(Task(asks_again))
    registry.register(Task(wait_for_release))
    registry.register(Task(sleep_long))
    registry.register(Task(count_concurrent))
    registry.register(Task(reads_the_hooks_context))
    registry.register(Task(reads_the_hooks_context_async))
    return registry


def _assignment(
    name: str,
    *args: object,
    timeout: float | None = None,
    retry_on: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> TaskAssignment:
    return TaskAssignment(
        headers=headers or {},
        task_id=f"{name}-{time.monotonic_ns()}",
        name=name,
        args=encode_value(list(args)),
        kwargs=encode_value({}),
        timeout=timeout,
        retry_on=retry_on or [],
    )


class _Outcomes:
    """Collects outcomes and lets a test wait for a number of them, with a bound."""

    def __init__(self) -> None:
        self.items: list[TaskOutcome] = []
        self._changed = asyncio.Event()

    def __call__(self, outcome: TaskOutcome) -> None:
        self.items.append(outcome)
        self._changed.set()

    async def wait(self, count: int) -> list[TaskOutcome]:
        async def enough() -> None:
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), WAIT)
        return self.items


@pytest.fixture
async def runner() -> AsyncIterator[TaskRunner]:
    release.clear()
    concurrency.peak = 0
    runner = TaskRunner(_registry(), worker_id="w", threads=4, loop=asyncio.get_running_loop())
    yield runner
    release.set()
    runner.close()


async def test_sync_and_async_tasks_report_their_values(runner: TaskRunner) -> None:
    outcomes = _Outcomes()
    for i in range(50):
        runner.start(_assignment("add", i, 1), outcomes)
        runner.start(_assignment("add_async", i, 2), outcomes)
    done = await outcomes.wait(100)
    assert all(o.status is TaskStatus.SUCCEEDED for o in done)
    values = sorted(decode_value(o.value) for o in done)
    assert values == sorted([i + 1 for i in range(50)] + [i + 2 for i in range(50)])


async def test_an_exception_becomes_a_failed_outcome_with_its_type(runner: TaskRunner) -> None:
    outcomes = _Outcomes()
    runner.start(_assignment("boom"), outcomes)
    (outcome,) = await outcomes.wait(1)
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.remote_type == "builtins.ValueError"
    assert "no luck" in outcome.error.message


async def test_unknown_task_and_bad_arguments_fail_without_running(runner: TaskRunner) -> None:
    outcomes = _Outcomes()
    runner.start(_assignment("nope"), outcomes)
    runner.start(_assignment("add", 1), outcomes)
    codes = sorted(o.error.code for o in await outcomes.wait(2) if o.error is not None)
    assert codes == ["invalid_arguments", "unknown_task"]


async def test_a_sync_task_past_its_limit_is_reported_at_once_and_its_late_value_dropped(
    runner: TaskRunner,
) -> None:
    outcomes = _Outcomes()
    runner.start(_assignment("wait_for_release", timeout=0.05), outcomes)
    (outcome,) = await outcomes.wait(1)
    assert outcome.error is not None
    assert outcome.error.code == "task_timeout"
    assert outcome.started_at is not None
    assert outcome.finished_at is not None
    assert outcome.finished_at - outcome.started_at >= 0.04  # when the limit passed
    assert runner.threads_busy == 1  # Python cannot stop the thread
    release.set()
    await asyncio.wait_for(_until(lambda: runner.threads_busy == 0), WAIT)
    await asyncio.sleep(0)  # a late value would be delivered on this turn
    assert len(outcomes.items) == 1


async def test_an_async_task_past_its_limit_is_cancelled(runner: TaskRunner) -> None:
    outcomes = _Outcomes()
    runner.start(_assignment("sleep_long", timeout=0.05), outcomes)
    (outcome,) = await outcomes.wait(1)
    assert outcome.error is not None
    assert outcome.error.code == "task_timeout"


async def test_a_discarded_run_reports_nothing(runner: TaskRunner) -> None:
    outcomes = _Outcomes()
    runner.start(_assignment("sleep_long"), outcomes).discard()
    runner.start(_assignment("wait_for_release"), outcomes).discard()
    runner.start(_assignment("add", 1, 1), outcomes)
    release.set()
    (outcome,) = await outcomes.wait(1)
    assert decode_value(outcome.value) == 2
    await asyncio.wait_for(_until(lambda: runner.threads_busy == 0), WAIT)
    await asyncio.sleep(0)
    assert len(outcomes.items) == 1


async def test_sync_tasks_never_use_more_threads_than_the_limit(runner: TaskRunner) -> None:
    # Three times as many held tasks as threads: without the limit all would run at once.
    outcomes = _Outcomes()
    for _ in range(12):
        runner.start(_assignment("count_concurrent"), outcomes)
    await asyncio.wait_for(_until(lambda: concurrency.now >= 4), WAIT)
    release.set()
    done = await outcomes.wait(12)
    assert all(o.status is TaskStatus.SUCCEEDED for o in done)
    assert concurrency.peak == 4


async def test_a_closed_lane_runs_nothing_more() -> None:
    release.clear()
    lane: ThreadLane[int] = ThreadLane(asyncio.get_running_loop(), threads=1, name="t")
    results: list[int] = []
    started = threading.Event()

    def hold() -> int:
        started.set()
        release.wait(WAIT)
        return 1

    lane.submit(hold, results.append)
    assert await asyncio.to_thread(started.wait, WAIT)
    lane.submit(lambda: 2, results.append)  # queued behind the running one
    lane.close()
    release.set()
    await asyncio.wait_for(_until(lambda: lane.running == 0), WAIT)
    await asyncio.sleep(0)  # a result would be delivered on this turn
    assert results == []


async def _until(condition: Callable[[], bool]) -> None:
    # Polls: the counters are changed by threads, which have no event to await.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def test_a_failure_asks_for_a_retry_only_when_its_class_is_named(
    runner: TaskRunner,
) -> None:
    outcomes = _Outcomes()
    cases = {
        "matched": _assignment("flaky", retry_on=["builtins.ConnectionError"]),
        "other class": _assignment("flaky", retry_on=["builtins.TimeoutError"]),
        "none left": _assignment("flaky"),  # no retry left: nothing is named
        "any exception": _assignment("boom", retry_on=["builtins.Exception"]),
    }
    for assignment in cases.values():
        runner.start(assignment, outcomes)
    by_id = {o.task_id: o for o in await outcomes.wait(len(cases))}  # in any order: threads
    asked = {case: by_id[a.task_id].retry for case, a in cases.items()}
    assert asked == {
        "matched": True,
        "other class": False,
        "none left": False,
        "any exception": True,
    }
    matched = by_id[cases["matched"].task_id]
    assert all(o.status is TaskStatus.FAILED and o.retry_delay is None for o in outcomes.items)
    assert matched.error is not None
    assert matched.error.remote_type == f"{__name__}.FlakyError"


async def test_retry_raised_by_a_task_asks_with_its_countdown_and_its_cause(
    runner: TaskRunner,
) -> None:
    outcomes = _Outcomes()
    runner.start(_assignment("asks_again", 7.5), outcomes)  # no policy needed to ask
    (outcome,) = await outcomes.wait(1)
    assert (outcome.status, outcome.retry, outcome.retry_delay) == (TaskStatus.FAILED, True, 7.5)
    assert outcome.error is not None
    assert outcome.error.remote_type == "builtins.KeyError"  # what it was raised from


async def test_a_cancelled_async_task_stops_at_its_next_await(runner: TaskRunner) -> None:
    outcomes = _Outcomes()
    run = runner.start(_assignment("sleep_long"), outcomes)
    await asyncio.sleep(0)  # let it reach its await
    run.cancel()
    (outcome,) = await outcomes.wait(1)
    assert outcome.status is TaskStatus.CANCELLED
    assert outcome.error is not None
    assert outcome.error.code == "task_cancelled"
    assert "interrupted at its next await" in outcome.error.message


async def test_a_cancelled_sync_task_sees_the_flag_and_ends_cancelled(
    runner: TaskRunner,
) -> None:
    outcomes = _Outcomes()
    run = runner.start(_assignment("polite"), outcomes)
    run.cancel()
    (outcome,) = await outcomes.wait(1)
    assert outcome.status is TaskStatus.CANCELLED  # whatever it returned
    assert outcome.error is not None
    assert "a sync task is not interrupted" in outcome.error.message
    assert not is_cancelled()  # the flag belongs to the task's own run only


async def test_cancelling_a_finished_run_changes_nothing(runner: TaskRunner) -> None:
    outcomes = _Outcomes()
    run = runner.start(_assignment("add", 1, 2), outcomes)
    (outcome,) = await outcomes.wait(1)
    run.cancel()
    assert outcome.status is TaskStatus.SUCCEEDED
    assert not run.cancel_requested


class _Recorder(Hook):
    """Records each run as ``after_run`` sees it, and sets a context variable in
    ``before_run`` that the task's code reads."""

    def __init__(self) -> None:
        self.runs: list[TaskRun] = []

    def before_run(self, run: TaskRun) -> None:
        run.state["token"] = seen_by_task.set(f"{run.name}/{run.headers.get('k', '')}")

    def after_run(self, run: TaskRun) -> None:
        seen_by_task.reset(run.state.pop("token"))
        self.runs.append(run)


class _Broken(Hook):
    def before_run(self, run: TaskRun) -> None:
        raise RuntimeError("a hook with a bug")

    def after_run(self, run: TaskRun) -> None:
        raise RuntimeError("a hook with a bug")


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    hook = _Recorder()
    add_hook(hook)
    yield hook
    remove_hook(hook)


async def test_run_hooks_wrap_each_task_in_its_own_context(
    runner: TaskRunner, recorder: _Recorder
) -> None:
    outcomes = _Outcomes()
    runner.start(_assignment("reads_the_hooks_context", headers={"k": "sync"}), outcomes)
    runner.start(_assignment("reads_the_hooks_context_async", headers={"k": "async"}), outcomes)
    runner.start(_assignment("boom"), outcomes)
    done = await outcomes.wait(3)
    values = {decode_value(o.value) for o in done if o.status is TaskStatus.SUCCEEDED}
    assert values == {"reads_the_hooks_context/sync", "reads_the_hooks_context_async/async"}
    by_name = {run.name: run for run in recorder.runs}
    assert set(by_name) == {"reads_the_hooks_context", "reads_the_hooks_context_async", "boom"}
    assert by_name["reads_the_hooks_context"].status is TaskStatus.SUCCEEDED
    assert by_name["reads_the_hooks_context"].exception is None
    failed = by_name["boom"]
    assert failed.status is TaskStatus.FAILED
    assert isinstance(failed.exception, ValueError)
    assert failed.worker_id == "w"
    assert failed.attempt == 1
    assert seen_by_task.get() == ""  # nothing leaked into the loop's own context


async def test_a_discarded_async_run_still_ends_its_hooks(
    runner: TaskRunner, recorder: _Recorder
) -> None:
    outcomes = _Outcomes()
    run = runner.start(_assignment("sleep_long"), outcomes)
    await asyncio.sleep(0)  # let it start
    run.discard()
    assert run.async_task is not None
    await asyncio.gather(run.async_task, return_exceptions=True)
    (ended,) = recorder.runs
    assert ended.status is TaskStatus.CANCELLED
    assert outcomes.items == []


async def test_a_hook_that_raises_is_skipped_and_the_task_still_runs(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    broken = _Broken()
    add_hook(broken)
    try:
        outcomes = _Outcomes()
        runner.start(_assignment("add", 1, 2), outcomes)
        runner.start(_assignment("add_async", 3, 4), outcomes)
        done = await outcomes.wait(2)
    finally:
        remove_hook(broken)
    assert sorted(decode_value(o.value) for o in done) == [3, 7]
    failures = [
        r.getMessage().split(" failed in ")[1]
        for r in caplog.records
        if " failed in " in r.getMessage()
    ]
    assert (
        sorted(failures)
        == ["after_run; going on without it"] * 2 + ["before_run; going on without it"] * 2
    )
