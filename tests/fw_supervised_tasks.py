"""Tasks of the supervised-subworker tests: each says which process ran it."""

from __future__ import annotations

import asyncio
import os
import time

from fastworker.client import task


@task
def double(x: int) -> list[int]:
    return [os.getpid(), 2 * x]


@task
async def slow_double(x: int, seconds: float) -> list[int]:
    await asyncio.sleep(seconds)
    return [os.getpid(), 2 * x]


@task
def pause(seconds: float, started_dir: str) -> int:
    """Say it started (a file named after this process in ``started_dir``), then sleep."""
    with open(os.path.join(started_dir, str(os.getpid())), "w"):
        pass
    time.sleep(seconds)
    return os.getpid()


@task
def spin(iterations: int) -> list[float]:
    """Pure-Python work that holds the GIL throughout: two at once in one process could
    only take turns. Returns the process and when the work started and ended."""
    started = time.time()
    total = 0
    for i in range(iterations):
        total += i * i
    return [os.getpid(), started, time.time()]
