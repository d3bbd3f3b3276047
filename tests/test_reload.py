"""``--reload``: an edited task module is what runs next, and stopping the reloader stops
the process it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from fastworker.protocol import ConnectionClosedError, FastworkerError, RequestTimeoutError
from fw_processes import Processes, connect

pytest.importorskip("watchfiles")

RELOAD_TIMEOUT = 30.0

MODULE = """
import os

from fastworker.client import task


@task
def version() -> list[int]:
    return [{version}, os.getpid()]
"""


async def _version(address: str) -> tuple[int, int]:
    """(version, pid) from whichever process answers now, retried across a restart."""
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while True:
        try:
            client = await connect(address, timeout=5.0)
            try:
                version, pid = await client.result(await client.delay("version"), timeout=5.0)
                return version, pid
            finally:
                await client.stop()
        except (ConnectionClosedError, RequestTimeoutError, FastworkerError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _wait_for_version(address: str, wanted: int) -> int:
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while True:
        version, pid = await _version(address)
        if version == wanted:
            return pid
        assert time.monotonic() < deadline, f"still version {version} after editing the module"
        await asyncio.sleep(0.2)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(120)
async def test_an_edited_task_module_runs_after_a_reload(
    processes: Processes, tmp_path: Path
) -> None:
    workdir = tmp_path / "app"
    workdir.mkdir()
    module = workdir / "reload_tasks.py"
    module.write_text(MODULE.format(version=1))
    address = processes.address()
    reloader = processes.control_plane(
        address, "--reload", "--journal", ":memory:", task_modules="reload_tasks", cwd=workdir
    )
    pids: list[int] = []
    try:
        first = await _wait_for_version(address, 1)
        pids.append(first)
        assert first != reloader.pid  # the tasks run in a child, not in the reloader
        module.write_text(MODULE.format(version=2))
        second = await _wait_for_version(address, 2)
        pids.append(second)
        assert second != first
        assert _gone(first)
        reloader.send_signal(signal.SIGTERM)
        assert reloader.wait(timeout=20) == 0
        deadline = time.monotonic() + 10
        while not _gone(second):
            assert time.monotonic() < deadline, "the child outlived its reloader"
            await asyncio.sleep(0.05)
    finally:
        if reloader.poll() is None:  # a failed test: SIGKILL at teardown would orphan the child
            reloader.send_signal(signal.SIGTERM)
            reloader.wait(timeout=20)
        for pid in pids:  # a child the reloader did not stop: end it, it is ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
