"""The long-running commands: ``fastworker control-plane`` and ``fastworker subworker``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from fastworker.client.config import ExitCode
from fastworker.client.logs import report_failure
from fastworker.client.tasks import TaskRegistry, default_registry
from fastworker.client.tls import TLSOptions
from fastworker.protocol import FastworkerError, StorageError

from .settings import dataclass_from

if TYPE_CHECKING:
    from ..control_plane import ControlPlane

__all__ = ["run_control_plane", "run_subworker", "tls_options"]

_GC_YOUNG_THRESHOLD = 50_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""

log = logging.getLogger("fastworker")


def tls_options(options: argparse.Namespace) -> TLSOptions | None:
    """The TLS options of a client or subworker; None leaves them to FASTWORKER_TLS_*."""
    return TLSOptions.from_flags(
        options.tls_ca, options.tls_cert, options.tls_key, options.tls_server_name
    )


def _load_tasks(modules: Sequence[str]) -> TaskRegistry:
    default_registry.import_modules(modules)
    return default_registry


class _Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def threads_busy(self) -> int: ...


async def _serve_until_signalled(
    service: _Service,
    refused: Callable[[], asyncio.Future[Any] | None] = lambda: None,
    ends_itself: Callable[[], asyncio.Future[int] | None] = lambda: None,
    log_format: str = "text",
) -> int:
    """Run until SIGTERM or SIGINT, or until the service ends itself with an exit code,
    stop, and return the exit code.

    A sync task still running in a thread cannot be interrupted. Its work was handed back
    (subworker) or stays in the journal (control plane), so the process exits without
    waiting for the thread."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await service.start()
    _tune_garbage_collector()
    waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(stopping.wait())}
    refusal = refused()
    if refusal is not None:
        waits.add(refusal)
    ending = ends_itself()
    if ending is not None:
        waits.add(ending)
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping")
    await service.stop()
    if refusal is not None and refusal.done():
        error = refusal.result()
        text = f"fastworker: refused by the control plane: {error.message}"
        report_failure(log, log_format, text)
        return ExitCode.REFUSED
    code = ending.result() if ending is not None and ending.done() else ExitCode.OK
    if service.threads_busy:
        log.warning("exiting with %d sync tasks still running in threads", service.threads_busy)
        logging.shutdown()
        os._exit(code)  # skip the interpreter's join of the pool threads
    return code


def _tune_garbage_collector() -> None:
    """Collect cycles less often in our own long-running processes.

    Every task allocates a few dozen short-lived objects, nearly all freed by reference
    counting; with the default threshold the cycle collector ran every few tasks and
    walked every young object, queued tasks included. Objects alive after start-up
    (modules, the registry) are frozen out of its scans. Cycles are still collected.
    """
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, gen1, gen2)


class _WithDashboard:
    """The control plane, with the dashboard served from the same event loop when the
    fastworker-dashboard package is installed (and not switched off)."""

    def __init__(self, plane: ControlPlane, options: argparse.Namespace) -> None:
        self.plane = plane
        self.options = options
        self._task: asyncio.Task[None] | None = None

    @property
    def threads_busy(self) -> int:
        return self.plane.threads_busy

    async def start(self) -> None:
        await self.plane.start()
        if not self.options.dashboard:
            return
        try:
            from fastworker.dashboard import serve
        except ImportError:
            log.info("no dashboard: pip install fastworker-dashboard to get one")
            return
        options = self.options

        async def run() -> None:
            try:
                await serve(
                    options.address,
                    options.dashboard_host,
                    options.dashboard_port,
                    access_token=options.dashboard_token,
                    # The dashboard is a client of this control plane.
                    auth_token=options.client_token or options.auth_token,
                )
            except (OSError, FastworkerError) as exc:
                log.error("the dashboard is not running: %s", exc)

        self._task = asyncio.get_running_loop().create_task(run(), name="dashboard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.plane.stop()


# The server's modules are imported by the commands that use them: the client commands
# (submit, status, ...) start faster without them.


async def run_control_plane(options: argparse.Namespace) -> int:
    from .. import health
    from ..control_plane import ControlPlane, ControlPlaneSettings

    registry = _load_tasks(options.task_modules)
    settings = dataclass_from(
        ControlPlaneSettings, vars(options), schedules=tuple(options.schedule)
    )
    plane = ControlPlane(registry, settings)
    try:
        metrics = _metrics_server(options, plane)
    except ImportError as exc:
        report_failure(
            log,
            options.log_format,
            f"fastworker: --metrics-port needs prometheus-client ({exc}): "
            "pip install 'fastworker-server[metrics]'",
        )
        return ExitCode.USAGE
    log.info("tasks: %s", ", ".join(registry.names()) or "none")
    try:
        with (
            health.serving(options.health_host, options.health_port, plane.readiness),
            metrics,
        ):
            return await _serve_until_signalled(_WithDashboard(plane, options))
    except StorageError as exc:
        # At start only: later, a write the journal refuses refuses its submissions.
        report_failure(log, options.log_format, f"fastworker: {exc}")
        return ExitCode.USAGE


def _metrics_server(
    options: argparse.Namespace, plane: ControlPlane
) -> contextlib.AbstractContextManager[object]:
    """``--metrics-port``'s server, or one that serves nothing. Raises ImportError without
    prometheus-client (the ``metrics`` extra)."""
    if options.metrics_port is None:
        return contextlib.nullcontext()
    from ..metrics_http import MetricsServer

    return MetricsServer(options.metrics_host, options.metrics_port, plane.metrics)


async def run_subworker(options: argparse.Namespace) -> int:
    from .. import health
    from ..subworker import Subworker, SubworkerSettings
    from ..supervised import take_supervisor_fd
    from ..supervisor import supervise

    if options.base_address:
        log.warning(
            "--base-address is ignored: subworkers connect out to the control plane at %s",
            options.control_plane_address,
        )
    registry = _load_tasks(options.task_modules)
    if options.processes > 1:
        # The supervisor answers the probes; its children inherit no health port.
        return await supervise(options)
    supervisor_fd = take_supervisor_fd()
    worker = Subworker(
        registry,
        dataclass_from(
            SubworkerSettings, vars(options), tls=tls_options(options), supervisor_fd=supervisor_fd
        ),
    )
    log.info("subworker %s: tasks %s", options.worker_id, ", ".join(registry.names()) or "none")
    health_port = None if supervisor_fd is not None else options.health_port
    with health.serving(options.health_host, health_port, worker.readiness):
        return await _serve_until_signalled(
            worker, lambda: worker.refused, lambda: worker.exit_requested, options.log_format
        )
