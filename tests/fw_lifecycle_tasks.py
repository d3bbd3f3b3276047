"""Tasks of the retry, scheduling, cancelling and dead-letter tests: they use the task
API of protocol 1.1 (``@task(retries=...)``, ``is_cancelled``), so they are kept apart
from fw_tasks, which releases as old as 0.1.0 must import."""

from __future__ import annotations

import os
import time

from fastworker.client import is_cancelled, task


@task(retries=3, retry_backoff=0.3, retry_jitter=False, retry_on=(ConnectionError,))
def flaky(attempts_file: str, failures: int) -> int:
    """Fail with ConnectionError ``failures`` times, then succeed; each attempt appends
    its start time to ``attempts_file``. Returns the number of the attempt that worked."""
    with open(attempts_file, "a") as out:
        out.write(f"{time.time()}\n")
    with open(attempts_file) as attempts:
        count = sum(1 for _ in attempts)
    if count <= failures:
        raise ConnectionError(f"attempt {count} of {failures} planned failures")
    return count


@task
def polite(bound: float) -> str:
    """A sync task that looks at ``is_cancelled()`` between steps of at most 10 ms."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if is_cancelled():
            return "stopped early"
        time.sleep(0.01)
    return "ran to its end"


@task
def poison(cure_file: str) -> str:
    """Fail until ``cure_file`` exists: a task that fails for good until someone fixes
    what it needs, then is retried from the dead-letter list."""
    if not os.path.exists(cure_file):
        raise RuntimeError(f"{cure_file} is missing")
    return "cured"
