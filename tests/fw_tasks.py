"""Tasks the cross-package tests run in real control planes and subworkers.

Only the task API of the first release (0.1.0) is used here: the cross-version tests
run this module in control planes and subworkers of that release. Tasks that need a
newer API live in fw_lifecycle_tasks."""

from __future__ import annotations

import asyncio
import os
import time

from fastworker.client import TaskPriority, task


@task
def add(x: int, y: int) -> int:
    return x + y


@task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@task
def where() -> str:
    """Which process ran this task."""
    return f"{os.getpid()}"


@task
def block(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@task(priority=TaskPriority.LOW)
def stamp(label: str) -> float:
    """Record when it started; the tests compare start times across priorities."""
    return time.time()


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(timeout=0.2)
async def too_slow() -> None:
    await asyncio.sleep(30)


@task
def unencodable() -> object:
    return object()


@task
def lag() -> str:
    """Slow on a subworker started with FW_SLOW=1, quick elsewhere; returns the worker pid."""
    time.sleep(0.2 if os.environ.get("FW_SLOW") == "1" else 0.01)
    return f"{os.getpid()}"


@task
def echo(value: object) -> object:
    return value


HOLD_BOUND = 60.0
"""Seconds a held task waits for its release before it fails: a test that forgets to
release one must not leave a slot taken for ever."""


@task
def hold(release_file: str) -> str:
    """Run until ``release_file`` exists: a test holds a slot for exactly as long as its
    check needs, then releases it (``Path(release_file).touch()``)."""
    deadline = time.monotonic() + HOLD_BOUND
    while not os.path.exists(release_file):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {release_file} within {HOLD_BOUND} s")
        time.sleep(0.01)  # a file has no event to wait on; the bound is above
    return "released"


_arrivals = 0


@task
async def arrival() -> int:
    """Its place in the order tasks started on this subworker's event loop: with a slot
    for each, the order the control plane dispatched them."""
    global _arrivals
    _arrivals += 1
    return _arrivals
