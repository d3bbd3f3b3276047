"""The control plane process's shell around its core: the socket, the timers and the
local runner. The state and every decision live in :mod:`fastworker.server.core`.

Everything runs on one asyncio loop, so the state needs no locks. Frames arrive in bulk
from the listener; every reply and push goes through the peer's outbox and leaves in one
frame per peer per turn of the loop. Each event only changes the core; once per turn,
after all arrivals of that turn are in, the core dispatches and commits (one
transaction for everything that changed), so a burst of submissions is dispatched as one
batch per subworker and stored in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time

from fastworker.client._limiter import LogLimiter
from fastworker.client.hooks import Dispatched, Hook, active_hooks, call_hooks
from fastworker.client.tasks import TaskRegistry
from fastworker.protocol import (
    PROTOCOL_VERSION,
    ConfigurationError,
    FastworkerError,
    NotConnectedError,
    ProtocolError,
)
from fastworker.protocol import messages as m

from ._transport import Listener, ListenerTLS, Peer
from ._version import __version__
from .core import LOCAL_WORKER_ID, ControlPlaneCore, error_info
from .journal import MEMORY_JOURNAL_PATH, Journal, open_journal
from .runner import Run, TaskRunner
from .settings import ControlPlaneSettings
from .sqlite_journal import ignore_file_size_signal
from .task_logs import FAILURE_LOG_INTERVAL, log_failure

__all__ = ["ControlPlane", "ControlPlaneSettings"]

log = logging.getLogger("fastworker.control_plane")

_MINOR = PROTOCOL_VERSION[1]


class ControlPlane:
    """Holds the queue and dispatches tasks to subworkers (or runs them itself)."""

    def __init__(
        self, registry: TaskRegistry, settings: ControlPlaneSettings | None = None
    ) -> None:
        self.registry = registry
        self.settings = settings or ControlPlaneSettings()
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self._core: ControlPlaneCore | None = None
        self.journal: Journal | None = None
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        """The one timer of the scheduled tasks, at the earliest one's time."""
        self._timer_due: float | None = None
        self._runner: TaskRunner | None = None
        self._local_runs: dict[str, Run] = {}
        self._housekeeping: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self._frame_log = LogLimiter(log, interval=10.0)
        self._handshake_log = LogLimiter(log, interval=10.0)
        self._failure_log = LogLimiter(log, interval=FAILURE_LOG_INTERVAL)
        self._handshakes_failed = 0
        self._stopping = False

    @property
    def core(self) -> ControlPlaneCore:
        """The state; there is one from start() on."""
        if self._core is None:
            raise NotConnectedError("the control plane has not been started")
        return self._core

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the address and start serving.

        Raises:
            ConfigurationError: the address is reachable from other hosts and no shared
                secret is set (unless ``allow_unauthenticated``), or it cannot be bound.
            StorageError: the journal cannot be used (in use, corrupt, newer, read-only).
        """
        _check_exposure(self.settings)
        self._loop = asyncio.get_running_loop()
        self.journal = open_journal(self.settings.journal, sync=self.settings.journal_sync)
        if self.journal.path != MEMORY_JOURNAL_PATH:
            # A file-size limit then fails a write (refused submissions) instead of
            # killing the process; only the main thread may set it.
            with contextlib.suppress(ValueError):
                ignore_file_size_signal()
        now = time.monotonic()
        try:
            core = ControlPlaneCore(
                self.registry,
                self.settings,
                control_plane_id=self.id,
                library_version=__version__,
                now=now,
                wall_offset=time.time() - now,
                journal=self.journal,
            )
            core.restore(now)
            core.commit(now)
        except BaseException:
            self.journal.close()
            raise
        self._core = core
        if core.local is not None:
            core.local.host = socket.gethostname()
            core.local.pid = os.getpid()
            self._runner = TaskRunner(
                self.registry,
                worker_id=LOCAL_WORKER_ID,
                threads=self.settings.local_concurrency,
                loop=self._loop,
            )
        try:
            self._listener = Listener(
                self.settings.address,
                loop=self._loop,
                on_frames=self._on_frames,
                on_disconnect=self._on_disconnect,
                tls=_listener_tls(self.settings),
            )
        except BaseException:
            self.journal.close()
            raise
        try:
            self._listener.open()
        except BaseException:
            self.journal.close()
            raise
        self._housekeeping = self._loop.create_task(self._keep_house())
        self._arm_timer()
        log.info(
            "control plane %s listening on %s; journal %s (sync %s)",
            self.id,
            self.settings.address,
            _describe_journal(core.journal_path),
            self.journal.sync,
        )

    async def stop(self) -> None:
        """Stop serving: say goodbye to every peer and close the socket."""
        self._stopping = True
        if self._listener is None:
            return
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for worker in self.core.workers.values():
            peer = self._peer(worker.peer_id)
            if peer is not None:
                peer.outbox.put(m.Goodbye(reason="control plane stopping"))
                peer.outbox.flush()
        for run in self._local_runs.values():
            run.discard()
        self._local_runs.clear()
        listener, self._listener = self._listener, None
        listener.close()
        if self._runner is not None:
            self._runner.close()
        self.core.commit(time.monotonic())
        if self.journal is not None:
            try:
                self.journal.close()
            except FastworkerError as exc:
                log.error("%s", exc)
        self.closed.set()

    @property
    def threads_busy(self) -> int:
        """Local sync tasks still running in threads after stop()."""
        return 0 if self._runner is None else self._runner.threads_busy

    def readiness(self) -> str | None:
        """None while it serves (listening, its journal open, not stopping); else why
        not, for a readiness probe."""
        if self._stopping:
            return "stopping"
        if self._listener is None or self.journal is None:
            return f"starting: not listening on {self.settings.address} yet"
        return None

    def overview(self, request_id: int = 0) -> m.Overview:
        """Queue depth, subworkers (connected, then recently lost), tasks and counters."""
        return self.core.overview(request_id)

    def metrics(self) -> m.MetricsReply:
        """The core's metrics, copied; call on the control plane's event loop."""
        return self.core.metrics_reply()

    # --- events in ----------------------------------------------------------------------

    def _on_frames(self, frames: list[tuple[Peer, bytes]]) -> None:
        core = self.core
        now = time.monotonic()
        for peer, data in frames:
            try:
                frame = peer.outbox.receive(data)
            except ProtocolError as exc:
                self._frame_log.log(now, "refused a frame from %s: %s", peer.address, exc)
                peer.outbox.put(m.ErrorReply(request_id=None, error=error_info(exc)))
                continue
            if frame.minor < _MINOR:
                core.peers.speaks_minor(peer.id, frame.minor)
            for message in frame.messages:
                core.handle(peer, message, now)
        self._end_turn_soon()

    def _on_disconnect(self, peer: Peer) -> None:
        self.core.disconnected(peer.id, time.monotonic())
        self._end_turn_soon()

    def _local_run_done(self, outcome: m.TaskOutcome) -> None:
        run = self._local_runs.pop(outcome.task_id, None)
        if run is not None:
            log_failure(self._failure_log, run.assignment, outcome, time.monotonic())
        self.core.local_done(outcome, time.monotonic())
        self._end_turn_soon()

    def _end_turn_soon(self) -> None:
        if not self._turn_scheduled and self._loop is not None:
            self._turn_scheduled = True
            self._loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        """After every event of this turn of the loop: dispatch, commit once, then send
        (the replies that waited for the journal too)."""
        self._turn_scheduled = False
        if self._listener is None:
            return  # stopped: nothing more is dispatched or sent
        self.core.end_turn(time.monotonic())
        self._carry_out()
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Keep the one timer at the earliest scheduled task's time."""
        due = self.core.next_due()
        if due == self._timer_due or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due is not None:
            delay = max(0.0, due - time.monotonic())
            self._timer = self._loop.call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._timer_due = None
        self._end_turn_soon()  # the turn's dispatch queues what is due, then re-arms

    async def _keep_house(self) -> None:
        """Heartbeats out, silent workers and expired leases taken back, expired results
        evicted. A failure here is logged, never the end of the loop."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                self.core.tick(time.monotonic())
                self._log_failed_handshakes()
            except Exception:
                log.exception("housekeeping failed; trying again next interval")
            self._end_turn_soon()

    def _log_failed_handshakes(self) -> None:
        # The refused peer learns why on its side; NNG tells the listener only a count.
        if self._listener is None:
            return
        failed = self._listener.failed_handshakes()
        if failed > self._handshakes_failed:
            self._handshake_log.log(
                time.monotonic(),
                "%d connections failed their TLS handshake (a certificate this control plane "
                "does not trust, none where one is required, or a peer that does not speak TLS)",
                failed - self._handshakes_failed,
            )
            self._handshakes_failed = failed

    # --- effects out --------------------------------------------------------------------

    def _carry_out(self) -> None:
        """Do what the core asked for: send, start local runs, drop connections."""
        core = self.core
        hooks = active_hooks()
        if hooks:
            self._dispatched(hooks)
        # The lists are the core's own (shared inside it): emptied, never replaced.
        # Nothing below calls back into the core before it returns.
        if core.sends:
            peers = self._listener.peers if self._listener is not None else {}
            for peer_id, message in core.sends:
                peer = peers.get(peer_id)
                if peer is not None:
                    peer.outbox.put(message)
            core.sends.clear()
        if core.local_starts:
            assert self._runner is not None
            for assignment in core.local_starts:
                run = self._runner.start(assignment, self._local_run_done)
                self._local_runs[assignment.task_id] = run
            core.local_starts.clear()
        if core.local_stops:
            for task_id in core.local_stops:
                run = self._local_runs.get(task_id)
                if run is not None:
                    run.cancel()
            core.local_stops.clear()
        if core.closes:
            for peer_id in core.closes:
                peer = self._peer(peer_id)
                if peer is not None:
                    peer.close()
            core.closes.clear()
        if core.refused:
            for peer_id in core.refused:
                peer = self._peer(peer_id)
                if peer is not None:
                    peer.close_after_sending()
            core.refused.clear()

    def _dispatched(self, hooks: tuple[Hook, ...]) -> None:
        """Tell the hooks of every task this turn handed to a worker, or to itself."""
        core = self.core
        assignments = [
            assignment
            for _peer, message in core.sends
            if isinstance(message, m.Dispatch)
            for assignment in message.tasks
        ]
        assignments += core.local_starts
        for assignment in assignments:
            task = core.admission.lookup(assignment.task_id)
            if task is None or task.started_at is None:
                continue
            dispatched = Dispatched(
                name=task.name,
                task_id=task.task_id,
                priority=task.priority,
                attempt=assignment.attempt,
                worker_id=task.worker_id,
                headers=task.headers,
                queued_at=task.queued_at,
                dispatched_at=task.started_at,
            )
            call_hooks(hooks, "dispatched", dispatched)

    def _peer(self, peer_id: int | None) -> Peer | None:
        if peer_id is None or self._listener is None:
            return None
        return self._listener.peers.get(peer_id)


def _describe_journal(path: str) -> str:
    if path == MEMORY_JOURNAL_PATH:
        return "in memory (a restart loses every task)"
    return path


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost`` or a loopback IP address
    (a name such as ``127.example.com`` is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def _listener_tls(settings: ControlPlaneSettings) -> ListenerTLS | None:
    """The listener's TLS settings, checked for what goes together.

    Raises:
        ConfigurationError: a certificate without its key, a client CA without
            ``tls_require_client_cert`` or the other way round, or either without a
            certificate.
    """
    cert, key, ca = settings.tls_cert, settings.tls_key, settings.tls_ca
    require = settings.tls_require_client_cert
    if cert is None and key is None:
        if ca is not None or require:
            raise ConfigurationError(
                "--tls-ca and --tls-require-client-cert need --tls-cert and --tls-key"
            )
        return None
    if cert is None or key is None:
        raise ConfigurationError("give the control plane's --tls-cert and --tls-key together")
    if require and ca is None:
        raise ConfigurationError(
            "--tls-require-client-cert needs --tls-ca, the authority client certificates chain to"
        )
    if settings.tls_cert_roles and not require:
        raise ConfigurationError("--tls-cert-roles needs --tls-require-client-cert")
    if ca is not None and not require:
        raise ConfigurationError(
            "--tls-ca on the control plane checks client certificates: add "
            "--tls-require-client-cert (every client and subworker then needs one)"
        )
    return ListenerTLS(cert=cert, key=key, client_ca=ca)


def _check_exposure(settings: ControlPlaneSettings) -> None:
    """Refuse to listen beyond loopback without a shared secret or mutual TLS."""
    address = settings.address
    if not address.startswith(("tcp://", "tls+tcp://", "ws://")):
        return  # ipc:// and inproc:// are local to this host
    host = address.split("://", 1)[1].rsplit(":", 1)[0]
    if _is_loopback(host):
        return
    if settings.allow_unauthenticated or settings.tls_require_client_cert:
        return  # mutual TLS authenticates every peer
    open_roles = [
        role
        for role, token in (
            ("subworkers", settings.worker_token),
            ("clients", settings.client_token),
        )
        if token is None and settings.auth_token is None
    ]
    if open_roles:
        raise ConfigurationError(
            f"{address} is reachable from other hosts, and {' and '.join(open_roles)} would "
            "need no credential; set a shared secret with --auth-token (or "
            "FASTWORKER_AUTH_TOKEN), or --worker-token and --client-token, on the control "
            "plane, its clients and subworkers, or pass --allow-unauthenticated on a network "
            "you trust entirely"
        )
