"""Tasks the cross-package tests run in real control planes and subworkers."""

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
