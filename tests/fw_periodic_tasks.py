"""Periodic tasks for the cross-package tests: a control plane that imports this module
fires them by itself."""

from __future__ import annotations

import time

from fastworker.client import every, task


@task(schedule=every(seconds=1, missed="all"))
def tick() -> float:
    """Every second; after a restart, each run missed while down runs."""
    return time.time()


@task
def chime() -> str:
    """No schedule of its own: tests give it one with --schedule."""
    return "chime"
