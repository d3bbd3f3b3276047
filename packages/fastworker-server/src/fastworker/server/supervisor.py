"""``fastworker subworker --processes N``: a supervisor of N subworker processes.

It starts the children, starts a dead one again (with a backoff when one keeps dying
as it starts), recycles them one at a time on SIGHUP, and drains them all on SIGTERM or
SIGINT. Child K of ``--worker-id ID`` is ``ID.K``; a replacement keeps its slot's id.

Each child is a fresh interpreter running this same command with ``--processes 1``:
nothing of the supervisor's state (event loop, NNG threads) is inherited the way a fork
would, a child is exactly what a single-process subworker is, and its settings show in
``ps``. Only the secret travels in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence

from . import health
from .supervised import EXIT_RECYCLE, SUPERVISOR_FD_ENV

__all__ = ["RestartPolicy", "Supervisor", "child_command", "supervise"]

log = logging.getLogger("fastworker.supervisor")

STOP_MARGIN = 5.0
"""Seconds past the drain timeout a child gets to exit on SIGTERM before SIGKILL."""
START_BOUND = 30.0
"""Seconds a SIGHUP waits for a replacement to register before it goes on to the next."""

_FORWARDED = (
    "control_plane_address",
    "task_modules",
    "concurrency",
    "prefetch",
    "drain_timeout",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_server_name",
    "log_level",
    "tracing",
    "log_format",
    "max_tasks_per_child",
    "max_memory_per_child",
)
"""The subworker options a child gets on its command line. Not here: the worker id and
process count (the child has its own), the secret (in its environment), and
``--base-address`` (ignored anyway)."""


def child_command(options: argparse.Namespace, worker_id: str) -> list[str]:
    """The command line of the child with ``worker_id``."""
    argv = [sys.executable, "-m", "fastworker.server.cli", "subworker"]
    argv += ["--processes", "1", "--worker-id", worker_id]
    for dest in _FORWARDED:
        value = getattr(options, dest, None)
        if value is None or value == []:
            continue
        text = ",".join(value) if isinstance(value, list) else str(value)  # pyright: ignore[reportUnknownArgumentType]
        argv += ["--" + dest.replace("_", "-"), text]
    return argv


def child_environment(options: argparse.Namespace, fd: int) -> dict[str, str]:
    """The supervisor's environment with the secret (already read from its file, so the
    child does not read it again) and the child's end of its socket pair."""
    env = dict(os.environ)
    env.pop("FASTWORKER_AUTH_TOKEN_FILE", None)
    if options.auth_token is not None:
        env["FASTWORKER_AUTH_TOKEN"] = options.auth_token
    env[SUPERVISOR_FD_ENV] = str(fd)
    return env


@dataclasses.dataclass
class RestartPolicy:
    """How long a slot waits before its next process starts, from how the last one
    ended. A child that lived ``min_uptime`` seconds, or asked to be recycled, is
    started again at once; one that died sooner is too the first time, then after
    ``base_delay`` doubling up to ``max_delay``, until one lives long enough.

    Pure: the caller says what time it is, so a fake clock drives it in tests."""

    min_uptime: float = 5.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    started_at: float = 0.0
    quick_deaths: int = 0
    """Consecutive deaths within ``min_uptime`` of a start."""

    def started(self, now: float) -> None:
        self.started_at = now

    def exited(self, code: int | None, now: float) -> float:
        """Seconds to wait before starting the slot's next process."""
        if code == EXIT_RECYCLE or now - self.started_at >= self.min_uptime:
            self.quick_deaths = 0
            return 0.0
        self.quick_deaths += 1
        if self.quick_deaths == 1:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** (self.quick_deaths - 2))


@dataclasses.dataclass
class _Slot:
    worker_id: str
    policy: RestartPolicy
    process: asyncio.subprocess.Process | None = None
    up: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set while the slot's process is registered with the control plane."""
    recycling: bool = False
    """The supervisor asked the process to go (SIGHUP): start the next one at once."""


class Supervisor:
    """Runs one child process per slot until told to stop."""

    def __init__(
        self,
        worker_ids: Sequence[str],
        command: Callable[[str], list[str]],
        environment: Callable[[int], dict[str, str]],
        *,
        drain_timeout: float,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = [_Slot(worker_id, policy()) for worker_id in worker_ids]
        self._command = command
        self._environment = environment
        self._drain_timeout = drain_timeout
        self._clock = clock
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        """A second SIGTERM or SIGINT: kill the children now."""
        self._roll: asyncio.Task[None] | None = None

    def readiness(self) -> str | None:
        """For ``/readyz``: ready while not stopping and at least one child is
        registered (a recycle or a restart of one leaves the others taking work)."""
        if self._stopping.is_set():
            return "stopping"
        registered = sum(slot.up.is_set() for slot in self._slots)
        if not registered:
            return f"none of {len(self._slots)} subworker processes registered"
        return None

    async def run(self) -> int:
        """Supervise until SIGTERM or SIGINT, drain the children, and return 0."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop_requested)
        loop.add_signal_handler(signal.SIGHUP, self._recycle_requested)
        keepers = [loop.create_task(self._keep_running(slot)) for slot in self._slots]
        log.info("supervising %d subworker processes", len(self._slots))
        await self._stopping.wait()
        if self._roll is not None:
            self._roll.cancel()
        await self._drain(keepers)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        return 0

    def _stop_requested(self) -> None:
        if self._stopping.is_set():
            self._hurry.set()
        self._stopping.set()

    def _recycle_requested(self) -> None:
        if self._stopping.is_set() or (self._roll is not None and not self._roll.done()):
            return  # a recycle already under way covers this one
        self._roll = asyncio.get_running_loop().create_task(self._recycle_all())

    async def _keep_running(self, slot: _Slot) -> None:
        while not self._stopping.is_set():
            process = await self._start(slot)
            code = await process.wait()
            slot.up.clear()
            if self._stopping.is_set():
                return
            if slot.recycling or code == EXIT_RECYCLE:
                slot.recycling = False
                slot.policy.exited(EXIT_RECYCLE, self._clock())
                log.info("subworker %s exited to be recycled", slot.worker_id)
                continue
            delay = slot.policy.exited(code, self._clock())
            log.warning(
                "subworker %s (pid %d) exited with %s; starting it again%s",
                slot.worker_id,
                process.pid,
                code,
                f" in {delay:.1f} s" if delay else "",
            )
            if delay:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _start(self, slot: _Slot) -> asyncio.subprocess.Process:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(slot.worker_id),
                env=self._environment(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        slot.process = process
        slot.policy.started(self._clock())
        if self._stopping.is_set():
            process.terminate()  # started as the stop arrived: it drains with the rest
        asyncio.get_running_loop().create_task(self._listen(slot, ours, process))
        return process

    async def _listen(
        self, slot: _Slot, ours: socket.socket, process: asyncio.subprocess.Process
    ) -> None:
        """Mark the slot up each time its process says it registered, until it closes
        its end (it exited)."""
        loop = asyncio.get_running_loop()
        ours.setblocking(False)
        try:
            while True:
                try:
                    data = await loop.sock_recv(ours, 16)
                except OSError:
                    return
                if not data:
                    return
                if slot.process is process:
                    slot.up.set()
        finally:
            ours.close()  # a child that outlives a killed supervisor reads end of file

    async def _recycle_all(self) -> None:
        """One at a time: ask a child to drain, wait until it exited and its replacement
        registered, then the next; capacity never drops by more than one child."""
        log.info("recycling %d subworker processes one at a time", len(self._slots))
        for slot in self._slots:
            process = slot.process
            if process is None or process.returncode is not None:
                continue
            slot.recycling = True
            slot.up.clear()
            process.terminate()
            bound = self._drain_timeout + STOP_MARGIN + START_BOUND
            try:
                await asyncio.wait_for(slot.up.wait(), bound)
            except asyncio.TimeoutError:
                log.warning("subworker %s did not come back within %.0f s", slot.worker_id, bound)
        log.info("recycled every subworker process")

    async def _drain(self, keepers: list[asyncio.Task[None]]) -> None:
        """SIGTERM every child, wait for their drain, SIGKILL what is left."""
        alive = [s.process for s in self._slots if s.process and s.process.returncode is None]
        log.info("stopping %d subworker processes", len(alive))
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        waits = [asyncio.ensure_future(process.wait()) for process in alive]
        hurry = asyncio.ensure_future(self._hurry.wait())
        if waits:
            await asyncio.wait(
                [asyncio.gather(*waits), hurry],
                timeout=self._drain_timeout + STOP_MARGIN,
                return_when=asyncio.FIRST_COMPLETED,
            )
        hurry.cancel()
        for slot in self._slots:
            process = slot.process
            if process is not None and process.returncode is None:
                log.warning("subworker %s did not stop in time; killing it", slot.worker_id)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.gather(*keepers, return_exceptions=True)


async def supervise(options: argparse.Namespace) -> int:
    """Run ``options.processes`` subworker processes under a supervisor."""
    ids = [f"{options.worker_id}.{index}" for index in range(1, options.processes + 1)]
    supervisor = Supervisor(
        ids,
        lambda worker_id: child_command(options, worker_id),
        lambda fd: child_environment(options, fd),
        drain_timeout=options.drain_timeout,
    )
    with health.serving(options.health_host, options.health_port, supervisor.readiness):
        return await supervisor.run()
