"""The task module the deployment examples load (``--task-modules tasks``).

Replace it with your own: the control plane and every subworker import the same modules,
so build them into the one image (or install them on every host) at the same version.
"""

from __future__ import annotations

import asyncio

from fastworker.client import task


@task
def add(a: int, b: int) -> int:
    """A sync task: runs in one of the subworker's threads."""
    return a + b


@task(timeout=30)
async def greet(name: str) -> str:
    """An async task: runs on the subworker's event loop."""
    await asyncio.sleep(0.01)
    return f"hello, {name}"
