"""A subworker: connects to a control plane, announces what it can run, runs what it is
leased, and heartbeats. NNG redials by itself; after a reconnect the subworker announces
itself again, so a restarted control plane learns about it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time

from fastworker.client._transport import Dialer
from fastworker.client.tasks import TaskRegistry
from fastworker.protocol import (
    DEFAULT_CONTROL_PLANE_ADDRESS,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LEASE_TIMEOUT,
    MAX_IDS_PER_MESSAGE,
    MAX_MESSAGES_PER_FRAME,
    ConfigurationError,
    in_chunks,
)
from fastworker.protocol import messages as m

from ._version import __version__
from .runner import Run, TaskRunner

__all__ = ["Subworker", "SubworkerSettings"]

log = logging.getLogger("fastworker.subworker")


@dataclasses.dataclass(frozen=True)
class SubworkerSettings:
    """How a subworker runs; every field has a command-line flag."""

    worker_id: str
    control_plane_address: str = DEFAULT_CONTROL_PLANE_ADDRESS
    concurrency: int = max(os.cpu_count() or 1, 1)
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    auth_token: str | None = None
    """The control plane's shared secret, when it has one."""
    """Seconds a stopping subworker lets running tasks finish before handing them back."""


class Subworker:
    """Runs tasks leased by one control plane."""

    def __init__(self, registry: TaskRegistry, settings: SubworkerSettings) -> None:
        if settings.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if not settings.worker_id:
            raise ConfigurationError("a subworker needs a worker id")
        self.registry = registry
        self.settings = settings
        self._runner: TaskRunner | None = None
        self._dialer: Dialer | None = None
        self._running: dict[str, Run] = {}
        self._idle = asyncio.Event()
        """Set while no task runs: what a draining stop waits for."""
        self._idle.set()
        self._outcomes: list[m.TaskOutcome] = []
        """Finished this turn of the loop; they leave together in one TasksDone."""
        self._heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self._lease_timeout = DEFAULT_LEASE_TIMEOUT
        self._welcomed = asyncio.Event()
        self._draining = False
        self.refused: asyncio.Future[m.ErrorInfo] | None = None
        """Set when the control plane refuses this subworker (for example a duplicate id)."""
        self._heartbeats: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start dialing the control plane; returns at once."""
        loop = asyncio.get_running_loop()
        self.refused = loop.create_future()
        self._runner = TaskRunner(
            self.registry,
            worker_id=self.settings.worker_id,
            threads=self.settings.concurrency,
            loop=loop,
        )
        self._dialer = Dialer(
            self.settings.control_plane_address,
            loop=loop,
            on_message=self._on_message,
            on_connect=self._hello,
            on_disconnect=self._welcomed.clear,
            name=f"fastworker-{self.settings.worker_id}",
        )
        self._dialer.open()
        self._heartbeats = loop.create_task(self._heartbeat())

    async def wait_registered(self, timeout: float) -> None:
        """Wait until the control plane has accepted this subworker."""
        await asyncio.wait_for(self._welcomed.wait(), timeout)

    async def stop(self) -> None:
        """Drain: take no more work, let running tasks finish within the drain timeout,
        hand back the rest, say goodbye, close."""
        self._draining = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout)
        self._send_outcomes()
        if self._running:
            unfinished = list(self._running.values())
            self._running.clear()
            for run in unfinished:
                run.discard()
            if self._dialer is not None:
                task_ids = [run.assignment.task_id for run in unfinished]
                for chunk in in_chunks(task_ids, MAX_IDS_PER_MESSAGE):
                    self._dialer.outbox.put(m.HandBack(task_ids=chunk))
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        if self._dialer is not None:
            self._dialer.outbox.put(m.Goodbye(reason="subworker stopping"))
            self._dialer.outbox.flush()
            dialer, self._dialer = self._dialer, None
            # Give NNG a moment to put the last frame on the wire before closing.
            await asyncio.sleep(0.05)
            dialer.close()
        if self._runner is not None:
            self._runner.close()

    @property
    def threads_busy(self) -> int:
        """Sync tasks still running in threads after stop(): Python cannot interrupt them."""
        return 0 if self._runner is None else self._runner.threads_busy

    def _hello(self) -> None:
        if self._dialer is None:
            return
        self._dialer.outbox.put(
            m.WorkerHello(
                request_id=1,
                worker_id=self.settings.worker_id,
                concurrency=self.settings.concurrency,
                task_names=self.registry.names(),
                host=socket.gethostname(),
                pid=os.getpid(),
                library_version=__version__,
                auth_token=self.settings.auth_token or "",
            )
        )

    def _on_message(self, message: m.Message) -> None:
        match message:
            case m.Dispatch(tasks=assignments):
                for assignment in assignments:
                    self._start(assignment)
            case m.WorkerWelcome():
                self._heartbeat_interval = message.heartbeat_interval
                self._lease_timeout = message.lease_timeout
                self._welcomed.set()
                log.info("registered with control plane %s", message.control_plane_id)
            case m.ErrorReply(error=error):
                log.error("the control plane refused: %s", error.message)
                if self.refused is not None and not self.refused.done():
                    self.refused.set_result(error)
            case _:
                pass  # heartbeats and goodbyes: hearing anything is what counts

    def _start(self, assignment: m.TaskAssignment) -> None:
        if self._draining and self._dialer is not None:
            self._dialer.outbox.put(m.HandBack(task_ids=[assignment.task_id]))
            return
        assert self._runner is not None
        self._idle.clear()
        self._running[assignment.task_id] = self._runner.start(assignment, self._finished)

    def _finished(self, outcome: m.TaskOutcome) -> None:
        self._running.pop(outcome.task_id, None)
        if not self._running:
            self._idle.set()
        if not self._outcomes:
            asyncio.get_running_loop().call_soon(self._send_outcomes)
        self._outcomes.append(outcome)

    def _send_outcomes(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if self._dialer is not None:
            # More tasks may end in one turn than one message may list.
            for chunk in in_chunks(outcomes, MAX_MESSAGES_PER_FRAME):
                self._dialer.outbox.put(m.TasksDone(outcomes=chunk))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            if self._dialer is not None and self._welcomed.is_set():
                self._dialer.outbox.put(m.Heartbeat(sent_at=time.time(), load=len(self._running)))
