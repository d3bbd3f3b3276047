"""How a control plane runs: one frozen value, every field a command-line flag."""

from __future__ import annotations

import dataclasses
import os

from fastworker.client.schedules import Cron, Every
from fastworker.protocol import (
    DEFAULT_CONTROL_PLANE_ADDRESS,
    DEFAULT_DEAD_LETTERS,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_QUEUED_TASKS,
    DEFAULT_RESULT_CACHE_SIZE,
    DEFAULT_RESULT_TTL,
    DEFAULT_TASK_HISTORY_SIZE,
)

from .journal import DEFAULT_JOURNAL_PATH

__all__ = ["ControlPlaneSettings"]


@dataclasses.dataclass(frozen=True)
class ControlPlaneSettings:
    """How a control plane runs; every field has a command-line flag."""

    address: str = DEFAULT_CONTROL_PLANE_ADDRESS
    local_execution: bool = True
    """Run tasks in the control plane itself while no subworker is connected."""
    local_concurrency: int = max(os.cpu_count() or 1, 1)
    result_cache_size: int = DEFAULT_RESULT_CACHE_SIZE
    result_ttl: float = DEFAULT_RESULT_TTL
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections served at once; a new one past it is refused (ConnectionLimitError)."""
    max_queued_tasks: int = DEFAULT_MAX_QUEUED_TASKS
    """Unfinished tasks (queued or running) held before new ones are refused."""
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Dispatches of one task lost with their worker before it fails with WorkerLostError."""
    history_size: int = DEFAULT_TASK_HISTORY_SIZE
    """Latest tasks kept for history queries and the dashboard, whatever their state."""
    dead_letters: int = DEFAULT_DEAD_LETTERS
    """Tasks that failed for good kept in the dead-letter list; 0 keeps none."""
    auth_token: str | None = None
    """Shared secret every client and subworker must present in its hello, unless its
    role has a credential of its own."""
    worker_token: str | None = None
    """The credential a subworker presents to register; ``auth_token`` if unset."""
    client_token: str | None = None
    """The credential a client presents (submit, wait, cancel, query); it can never
    register a subworker. ``auth_token`` if unset."""
    tls_cert: str | None = None
    """The control plane's certificate (PEM, with its chain), for a ``tls+tcp://`` address."""
    tls_key: str | None = None
    """Its private key (PEM)."""
    tls_ca: str | None = None
    """The certificate authority client and subworker certificates must chain to, with
    ``tls_require_client_cert``."""
    tls_require_client_cert: bool = False
    """Mutual TLS: refuse a peer without a certificate signed by ``tls_ca``. It then
    authenticates every peer in place of a shared secret (not their role)."""
    tls_cert_roles: bool = False
    """With mutual TLS: a certificate whose common name starts with ``subworker:`` or
    ``client:`` gives that role, in place of the role's secret."""
    allow_unauthenticated: bool = False
    """Listen beyond loopback without a shared secret (for networks you trust entirely)."""
    journal: str = DEFAULT_JOURNAL_PATH
    """The SQLite file that keeps tasks across restarts; ``:memory:`` keeps none."""
    journal_sync: str = "normal"
    """``normal`` survives the control plane being killed, ``full`` also power loss."""
    schedules: tuple[tuple[str, Cron | Every], ...] = ()
    """Periodic tasks by task name, beside (or in place of) the ``@task(schedule=...)``
    of the task modules: for tasks only subworkers import."""
