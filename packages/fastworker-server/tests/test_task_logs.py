"""JSON log lines about tasks: what a task's own code logs while the real runner runs it
(sync in a thread, async in its asyncio task), and the line of a task that failed."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fastworker.client._limiter import LogLimiter
from fastworker.client.logs import JSONFormatter, TaskContextFilter
from fastworker.client.tasks import Task, TaskRegistry
from fastworker.protocol import TaskStatus, encode_value
from fastworker.protocol.messages import TaskAssignment, TaskOutcome
from fastworker.server.runner import TaskRunner
from fastworker.server.task_logs import FAILURE_LOG_INTERVAL, log_failure

WAIT = 10.0

user_log = logging.getLogger("fw.tasks.user")


def resize(size: int) -> int:
    user_log.info("resizing to %d", size)
    return size


async def resize_async(size: int) -> int:
    await asyncio.sleep(0)
    user_log.info("resizing to %d", size)
    return size


def boom() -> None:
    raise ValueError("no luck")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(TaskContextFilter())
    logger = logging.getLogger("fw.tasks")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def _run(name: str, *args: object) -> tuple[TaskAssignment, TaskOutcome]:
    registry = TaskRegistry()
    registry.register(Task(resize))
    registry.register(Task(resize_async))
    registry.register(Task(boom))
    runner = TaskRunner(registry, worker_id="w-7", threads=1, loop=asyncio.get_running_loop())
    assignment = TaskAssignment(
        task_id=f"{name}-1", name=name, args=encode_value(list(args)), kwargs=encode_value({})
    )
    done: asyncio.Future[TaskOutcome] = asyncio.get_running_loop().create_future()
    runner.start(assignment, done.set_result)
    try:
        return assignment, await asyncio.wait_for(done, WAIT)
    finally:
        runner.close()


@pytest.mark.parametrize("name", ["resize", "resize_async"])
async def test_a_task_s_own_lines_carry_its_id_name_and_worker(
    lines: io.StringIO, name: str
) -> None:
    _assignment, outcome = await _run(name, 64)
    assert outcome.status is TaskStatus.SUCCEEDED
    (line,) = records(lines)
    assert line["message"] == "resizing to 64"
    assert line["logger"] == "fw.tasks.user"
    assert (line["task_id"], line["task_name"], line["worker_id"]) == (f"{name}-1", name, "w-7")


async def test_a_failed_task_is_one_warning_with_its_traceback(lines: io.StringIO) -> None:
    assignment, outcome = await _run("boom")
    assert outcome.status is TaskStatus.FAILED
    limiter = LogLimiter(logging.getLogger("fw.tasks.worker"), interval=FAILURE_LOG_INTERVAL)
    log_failure(limiter, assignment, outcome, now=100.0)
    log_failure(limiter, assignment, outcome, now=100.5)  # held back: a flood is bounded
    log_failure(limiter, assignment, outcome, now=101.0)
    first, second = records(lines)
    assert second["message"].endswith("(1 more like it in the last 1 s)")
    line = first
    assert line["level"] == "warning"
    assert line["message"] == "task boom boom-1 failed: builtins.ValueError: no luck"
    assert (line["task_id"], line["task_name"], line["worker_id"]) == ("boom-1", "boom", "w-7")
    assert line["exception"].endswith("ValueError: no luck\n")


async def test_a_task_that_succeeded_is_not_logged(lines: io.StringIO) -> None:
    assignment, outcome = await _run("resize", 1)
    log_failure(
        LogLimiter(logging.getLogger("fw.tasks.worker"), interval=1.0), assignment, outcome, 0.0
    )
    assert [line["message"] for line in records(lines)] == ["resizing to 1"]
