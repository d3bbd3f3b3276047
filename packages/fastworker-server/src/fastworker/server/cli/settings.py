"""The settings of the ``fastworker`` commands, each declared once (see
:mod:`fastworker.client.config`): flags, environment variables, configuration file keys
and the configuration reference all come from here."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, TypeVar

from fastworker.client.config import (
    ADDRESS,
    AUTH_TOKEN,
    CLIENT_SETTINGS,
    DASHBOARD_HOST,
    DASHBOARD_PORT,
    DASHBOARD_TOKEN,
    LOG_FORMAT,
    LOG_LEVEL,
    TLS_PEER_SETTINGS,
    TRACING,
    Command,
    Setting,
    lines,
    non_negative_int,
    positive_float,
    positive_int,
)
from fastworker.client.schedules import Cron, Every, parse_schedule
from fastworker.protocol import (
    DEFAULT_DEAD_LETTERS,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_QUEUED_TASKS,
    DEFAULT_RESULT_CACHE_SIZE,
    DEFAULT_RESULT_TTL,
    DEFAULT_TASK_HISTORY_SIZE,
    ConfigurationError,
)

from ..journal import DEFAULT_JOURNAL_PATH, JOURNAL_SYNC_MODES

__all__ = [
    "CLIENT",
    "CONTROL_PLANE",
    "RELOAD",
    "SERVER_COMMANDS",
    "SUBWORKER",
    "dataclass_from",
]

CPU_COUNT = max(os.cpu_count() or 1, 1)
LOOPBACK_HOST = "127.0.0.1"
"""Where the health and metrics ports listen unless told otherwise."""


def _schedule(text: str) -> tuple[str, Cron | Every]:
    name, equals, schedule = text.partition("=")
    if not equals or not name.strip():
        raise ValueError("not NAME=SCHEDULE")
    try:
        return name.strip(), parse_schedule(schedule)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


TASK_MODULES = Setting(
    "task_modules",
    "modules whose `@task` functions to register, comma or space separated",
    kind="list",
    default=[],
    metavar="MODULES",
)

RELOAD = Setting(
    "reload",
    "for development: run in a child process and restart it when a Python file under the "
    "working directory changes (needs the `reload` extra: watchfiles)",
    kind="switch",
)


def processes_flag(text: str) -> int:
    """``--processes``: a count, or ``auto`` for one per CPU."""
    if text.strip().lower() == "auto":
        return CPU_COUNT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("must be a count of at least 1, or auto")
    return value


HEALTH_SETTINGS = (
    Setting(
        "health_host",
        "where `--health-port` listens",
        default=LOOPBACK_HOST,
    ),
    Setting(
        "health_port",
        "serve `GET /healthz` (the process is alive) and `GET /readyz` (it is ready) over "
        "plain HTTP on this port, for probes ([operations](operations.md#health-checks)); "
        "0 picks a free one",
        non_negative_int,
        shown_default="off",
    ),
)

METRICS_SETTINGS = (
    Setting(
        "metrics_host",
        "where `--metrics-port` listens",
        default=LOOPBACK_HOST,
    ),
    Setting(
        "metrics_port",
        "serve `GET /metrics` in Prometheus's text format over plain HTTP on this port, for "
        "installs without the dashboard ([observability](observability.md#metrics)); needs "
        "the `metrics` extra (prometheus-client); 0 picks a free one",
        non_negative_int,
        shown_default="off",
    ),
)

CONTROL_PLANE = Command(
    "control-plane",
    (
        TASK_MODULES,
        ADDRESS.with_help(
            "where to listen for clients and subworkers", aliases=("--base-address",)
        ),
        Setting(
            "local_execution",
            "never run tasks in the control plane, even with no subworker connected",
            kind="switch",
            default=True,
        ),
        Setting(
            "local_concurrency",
            "tasks run at once in the control plane while no subworker is connected",
            positive_int,
            CPU_COUNT,
            shown_default="CPU count",
        ),
        Setting(
            "result_cache_size",
            "finished results kept, least recently used evicted first",
            positive_int,
            DEFAULT_RESULT_CACHE_SIZE,
        ),
        Setting(
            "result_ttl",
            "seconds a finished result stays queryable",
            positive_float,
            DEFAULT_RESULT_TTL,
            aliases=("--result-cache-ttl",),
        ),
        Setting(
            "history_size",
            "latest tasks kept for history queries and the dashboard",
            positive_int,
            DEFAULT_TASK_HISTORY_SIZE,
        ),
        Setting(
            "dead_letters",
            "tasks that failed for good kept in the dead-letter list ([retries](retries.md)); "
            "the oldest are dropped past it; 0 keeps none",
            non_negative_int,
            DEFAULT_DEAD_LETTERS,
        ),
        Setting(
            "max_connections",
            "clients and subworkers served at once; a new connection past it gets "
            "`ConnectionLimitError` and is closed (each takes a file descriptor: raise "
            "`ulimit -n` with it)",
            positive_int,
            DEFAULT_MAX_CONNECTIONS,
        ),
        Setting(
            "max_queued_tasks",
            "unfinished tasks (queued or running) held before new ones are refused with "
            "`QueueFullError`",
            positive_int,
            DEFAULT_MAX_QUEUED_TASKS,
        ),
        Setting(
            "heartbeat_interval",
            "seconds between heartbeats to and from subworkers",
            positive_float,
            DEFAULT_HEARTBEAT_INTERVAL,
        ),
        Setting(
            "lease_timeout",
            "seconds of silence before a subworker is lost and its tasks requeued",
            positive_float,
            DEFAULT_LEASE_TIMEOUT,
        ),
        Setting(
            "max_attempts",
            "dispatches of a task lost with their workers before it fails with "
            "`WorkerLostError` (retries of failures do not count)",
            positive_int,
            DEFAULT_MAX_ATTEMPTS,
        ),
        DASHBOARD_HOST.with_help(
            "where the dashboard listens, when fastworker-dashboard is installed; beyond "
            "loopback it needs `--dashboard-token`"
        ),
        DASHBOARD_PORT,
        DASHBOARD_TOKEN,
        Setting(
            "dashboard",
            "do not serve the dashboard even when fastworker-dashboard is installed",
            kind="switch",
            default=True,
        ),
        Setting(
            "schedule",
            "run task NAME periodically ([scheduling](scheduling.md)): `NAME=cron:EXPRESSION` "
            "or `NAME=every:SECONDS`, with `;tz=ZONE` (cron) and `;missed=coalesce|skip|all`; "
            "repeat for more; in place of the task's own `@task(schedule=...)`",
            _schedule,
            default=[],
            kind="list",
            split=lines,
            metavar="NAME=SCHEDULE",
        ),
        Setting(
            "journal",
            "the SQLite file that keeps tasks, leases and results across restarts "
            "([operations](operations.md)); `:memory:` keeps nothing",
            default=DEFAULT_JOURNAL_PATH,
            metavar="PATH",
        ),
        Setting(
            "journal_sync",
            "`normal` survives the control plane being killed, `full` also power loss (an "
            "fsync per commit)",
            default="normal",
            choices=JOURNAL_SYNC_MODES,
        ),
        AUTH_TOKEN.with_help(
            "the shared secret clients and subworkers must present; required beyond "
            "loopback (or the two secrets below, or mutual TLS)"
        ),
        Setting(
            "worker_token",
            "the secret subworkers present to register, in place of `--auth-token` for them; "
            "a client's secret never registers one",
            kind="secret",
            shown_default="`--auth-token`",
            metavar="SECRET",
        ),
        Setting(
            "client_token",
            "the secret clients present to submit, wait, cancel and query, in place of "
            "`--auth-token` for them",
            kind="secret",
            shown_default="`--auth-token`",
            metavar="SECRET",
        ),
        Setting(
            "tls_cert",
            "for a `tls+tcp://` address: the control plane's certificate (PEM, with its "
            "chain) ([TLS](multi-host.md#tls))",
            metavar="PATH",
        ),
        Setting("tls_key", "the key of `--tls-cert` (PEM)", metavar="PATH"),
        TLS_PEER_SETTINGS[0].with_help(
            "with `--tls-require-client-cert`: the certificate authority (PEM) client and "
            "subworker certificates must chain to"
        ),
        Setting(
            "tls_require_client_cert",
            "mutual TLS: refuse a peer without a certificate from `--tls-ca`; it then "
            "authenticates peers beyond loopback in place of a shared secret",
            kind="switch",
        ),
        Setting(
            "tls_cert_roles",
            "with mutual TLS: a certificate whose common name is `subworker:NAME` or "
            "`client:NAME` has that role, in place of the role's secret",
            kind="switch",
        ),
        Setting(
            "allow_unauthenticated",
            "listen beyond loopback without a shared secret (only on a network you trust)",
            kind="switch",
        ),
        *HEALTH_SETTINGS,
        *METRICS_SETTINGS,
        RELOAD,
        LOG_LEVEL,
        TRACING,
        LOG_FORMAT,
    ),
)

SUBWORKER = Command(
    "subworker",
    (
        Setting("worker_id", "this subworker's id, unique among those connected", required=True),
        ADDRESS.with_help("the control plane to connect to", name="control_plane_address"),
        TASK_MODULES.with_help("modules with `@task` functions, comma or space separated"),
        Setting(
            "concurrency",
            "tasks run at once (sync tasks in as many threads)",
            positive_int,
            CPU_COUNT,
            shown_default="CPU count",
        ),
        Setting(
            "prefetch",
            "tasks leased beyond --concurrency, waiting here to start: short tasks start "
            "without a round trip, but one can wait behind a long task while another "
            "subworker is idle ([operations](operations.md#prefetch))",
            non_negative_int,
            0,
        ),
        Setting(
            "drain_timeout",
            "seconds running tasks get to finish on SIGTERM before they are handed back",
            positive_float,
            DEFAULT_DRAIN_TIMEOUT,
        ),
        Setting(
            "base_address",
            "accepted for compatibility with FastWorker 0.3 and ignored: subworkers connect "
            "out to the control plane and listen on nothing",
        ),
        Setting(
            "processes",
            "subworker processes to run, or `auto` for one per CPU; past 1 this process "
            "supervises them, as ID.1 to ID.N, restarting one that dies "
            "([operations](operations.md#supervised-processes))",
            processes_flag,
            1,
        ),
        Setting(
            "max_tasks_per_child",
            "with a supervisor: a child drains and is replaced after this many tasks",
            positive_int,
            shown_default="no limit",
        ),
        Setting(
            "max_memory_per_child",
            "with a supervisor: a child drains and is replaced when its resident memory "
            "exceeds this many MiB after a task",
            positive_int,
            shown_default="no limit",
            metavar="MB",
        ),
        AUTH_TOKEN.with_help("the control plane's shared secret, or its `--worker-token`"),
        *TLS_PEER_SETTINGS,
        *HEALTH_SETTINGS,
        RELOAD,
        LOG_LEVEL,
        TRACING,
        LOG_FORMAT,
    ),
)

CLIENT = Command(
    "client",
    tuple(
        setting.with_help("the control plane's shared secret, or its `--client-token`")
        if setting is AUTH_TOKEN
        else setting
        for setting in (*CLIENT_SETTINGS, TRACING)
    ),
)
"""What every command that talks to a control plane reads: ``submit``, ``list``, ..."""

SERVER_COMMANDS = (CONTROL_PLANE, SUBWORKER, CLIENT)

_Settings = TypeVar("_Settings")


def dataclass_from(kind: type[_Settings], values: dict[str, Any], **more: Any) -> _Settings:
    """A settings dataclass from the values of a command's settings that are its fields."""
    fields = {field.name for field in dataclasses.fields(kind)}  # pyright: ignore[reportArgumentType]
    chosen = {name: value for name, value in values.items() if name in fields}
    return kind(**chosen, **more)
