"""Real processes for the cross-package tests: control planes and subworkers started
with the ``fastworker`` command line on loopback or ipc addresses, ended by their PID."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastworker.client import Client, TLSOptions
from fastworker.protocol import AuthenticationError, ConnectionClosedError, RequestTimeoutError

TESTS_DIR = Path(__file__).parent
START_TIMEOUT = 20.0


class Processes:
    """Starts fastworker processes and ends each one it started."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []
        self._count = 0

    def address(self) -> str:
        self._count += 1
        return f"ipc://{self.tmp_path}/cp-{self._count}.sock"

    def spawn(
        self,
        argv: list[str],
        *,
        name: str,
        cwd: Path = TESTS_DIR,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start any process, its output in ``<tmp>/<name>.log``; it is ended at teardown."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with (self.tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=full_env
            )
        self.started.append(process)
        return process

    def fastworker(
        self,
        *args: str,
        name: str,
        env: dict[str, str] | None = None,
        cwd: Path = TESTS_DIR,
        python: str = sys.executable,
    ) -> subprocess.Popen[bytes]:
        """Run the ``fastworker`` command of ``python``'s environment (the cross-version
        tests pass another release's); task modules import from ``cwd``. A control
        plane journals to a file of its own in the test's directory unless ``--journal``
        says otherwise: tests run in parallel from one working directory."""
        self._count += 1
        journal = str(self.tmp_path / f"journal-{self._count}.sqlite3")
        argv = [python, "-m", "fastworker.server.cli", *args]
        return self.spawn(
            argv, name=name, cwd=cwd, env={"FASTWORKER_JOURNAL": journal, **(env or {})}
        )

    def control_plane(
        self,
        address: str,
        *extra: str,
        task_modules: str = "fw_tasks",
        cwd: Path = TESTS_DIR,
        python: str = sys.executable,
    ) -> subprocess.Popen[bytes]:
        return self.fastworker(
            "control-plane",
            "--task-modules",
            task_modules,
            "--address",
            address,
            "--no-dashboard",  # tests run in parallel: none of them may take port 8080
            *extra,
            name="control-plane",
            cwd=cwd,
            python=python,
        )

    def subworker(
        self,
        address: str,
        worker_id: str,
        *extra: str,
        env: dict[str, str] | None = None,
        task_modules: str = "fw_tasks",
        cwd: Path = TESTS_DIR,
        python: str = sys.executable,
    ) -> subprocess.Popen[bytes]:
        return self.fastworker(
            "subworker",
            "--worker-id",
            worker_id,
            "--control-plane-address",
            address,
            "--task-modules",
            task_modules,
            *extra,
            name=f"subworker-{worker_id}",
            env=env,
            cwd=cwd,
            python=python,
        )

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.started:
            process.wait(timeout=10)


async def connect(
    address: str,
    *,
    timeout: float = START_TIMEOUT,
    auth_token: str | None = None,
    tls: TLSOptions | None = None,
) -> Client:
    """A started client of the control plane at ``address``, once it answers."""
    client = Client(address, request_timeout=2.0, auth_token=auth_token, tls=tls)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.start()
            return client
        except AuthenticationError:
            raise  # answered, and refused: waiting longer will not help
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def wait_for_workers(client: Client, count: int, *, timeout: float = START_TIMEOUT) -> None:
    """Wait until ``count`` subworkers are connected. A control plane that is starting
    again may drop or not answer a query: that is asked again, within the bound."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            overview = await client.overview()
        except (ConnectionClosedError, RequestTimeoutError):
            connected = []
        else:
            connected = [
                w for w in overview.workers if w.state.value == "connected" and w.address != "local"
            ]
        if len(connected) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(connected)} of {count} subworkers connected")
        await asyncio.sleep(0.05)


async def plane_with_workers(
    processes: Processes,
    *workers: str,
    concurrency: int = 1,
    extra: tuple[str, ...] = (),
    task_modules: str = "fw_tasks",
) -> tuple[str, Client]:
    """A control plane that never runs tasks itself, the named subworkers connected to
    it, and a started client of it."""
    address = processes.address()
    processes.control_plane(address, "--no-local-execution", *extra, task_modules=task_modules)
    client = await connect(address)
    for worker_id in workers:
        processes.subworker(
            address, worker_id, "--concurrency", str(concurrency), task_modules=task_modules
        )
    await wait_for_workers(client, len(workers))
    return address, client
