"""The ``fastworker`` command line.

Every flag can also be set through the environment as ``FASTWORKER_<FLAG>`` (dashes
become underscores: ``--task-modules`` is ``FASTWORKER_TASK_MODULES``); a flag on the
command line wins. Exit codes: 0 success, 1 the task failed, 2 usage or configuration
error, 3 the control plane could not be reached, 4 the control plane refused, 5 a
subworker drained past --max-tasks-per-child or --max-memory-per-child (start it again).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from fastworker.client import Client
from fastworker.client._secrets import read_secret
from fastworker.client.schedules import Cron, Every, parse_schedule
from fastworker.client.tasks import TaskRegistry, default_registry
from fastworker.client.tls import TLSOptions
from fastworker.protocol import (
    DEFAULT_CONTROL_PLANE_ADDRESS,
    DEFAULT_DASHBOARD_HOST,
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_DEAD_LETTERS,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_QUEUED_TASKS,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RESULT_CACHE_SIZE,
    DEFAULT_RESULT_TTL,
    DEFAULT_TASK_HISTORY_SIZE,
    ENV_PREFIX,
    PROTOCOL_VERSION,
    ConfigurationError,
    FastworkerError,
    RejectedError,
    StorageError,
    TaskPriority,
    TransportError,
)

from ._version import __version__
from .journal import DEFAULT_JOURNAL_PATH, JOURNAL_SYNC_MODES
from .supervised import take_supervisor_fd
from .supervisor import processes_flag, supervise

if TYPE_CHECKING:
    from .control_plane import ControlPlane

_CPU_COUNT = max(os.cpu_count() or 1, 1)
_GC_YOUNG_THRESHOLD = 50_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4

log = logging.getLogger("fastworker")


# --- parser ------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _priority(text: str) -> TaskPriority:
    try:
        return TaskPriority.parse(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _schedule(text: str) -> tuple[str, Cron | Every]:
    name, equals, schedule = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=SCHEDULE")
    try:
        return name.strip(), parse_schedule(schedule)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _modules(text: str) -> list[str]:
    return [name for name in text.replace(",", " ").split() if name]


_SECRETS = ("auth_token", "worker_token", "client_token")
"""Options that hold a secret, each with a ``*_file`` twin that reads it from a file
(so it is not in ``ps`` output or the environment)."""


def _add_secret(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    parser.add_argument(flag, help=help)
    parser.add_argument(
        f"{flag}-file",
        metavar="PATH",
        help=f"read {flag} from this file (its first line), instead of the command line",
    )


def _add_auth_token(parser: argparse.ArgumentParser) -> None:
    _add_secret(
        parser,
        "--auth-token",
        "the control plane's shared secret; required when it listens beyond loopback",
    )


def _read_secrets(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    """Put each secret given as a file in its option; both, or a file that cannot be
    read, is a usage error."""
    for dest in _SECRETS:
        path = getattr(options, f"{dest}_file", None)
        if path is None:
            continue
        flag = "--" + dest.replace("_", "-")
        if getattr(options, dest, None) is not None:
            parser.error(f"give {flag} or {flag}-file, not both")
        try:
            setattr(options, dest, read_secret(f"{flag}-file", path))
        except ConfigurationError as exc:
            parser.error(str(exc))


def _add_tls_peer_flags(parser: argparse.ArgumentParser) -> None:
    """TLS of a client or subworker, for a tls+tcp:// control plane."""
    parser.add_argument(
        "--tls-ca",
        metavar="PATH",
        help="for a tls+tcp:// control plane: the certificate authority (PEM) its "
        "certificate must chain to",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="PATH",
        help="this side's certificate (PEM, with its chain), for mutual TLS",
    )
    parser.add_argument("--tls-key", metavar="PATH", help="the key of --tls-cert (PEM)")
    parser.add_argument(
        "--tls-server-name",
        help="the name the control plane's certificate must carry (default: the host of "
        "its address)",
    )


def _tls_options(options: argparse.Namespace) -> TLSOptions | None:
    """The TLS options the flags give; None leaves them to FASTWORKER_TLS_*."""
    return TLSOptions.from_flags(
        options.tls_ca, options.tls_cert, options.tls_key, options.tls_server_name
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default: info)",
    )


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=DEFAULT_CONTROL_PLANE_ADDRESS,
        help=f"the control plane to talk to (default: {DEFAULT_CONTROL_PLANE_ADDRESS})",
    )
    parser.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=DEFAULT_REQUEST_TIMEOUT,
        help="seconds to wait for the control plane to answer (default: %(default)s)",
    )
    _add_auth_token(parser)
    _add_tls_peer_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastworker`` command."""
    parser = argparse.ArgumentParser(
        prog="fastworker",
        description="fastworker: a brokerless task queue. Runs control planes and subworkers "
        "and talks to them. Every flag can be set as FASTWORKER_<FLAG> in the environment.",
    )
    major, minor = PROTOCOL_VERSION
    parser.add_argument(
        "--version",
        action="version",
        version=f"fastworker-server {__version__} (protocol {major}.{minor})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    cp = commands.add_parser("control-plane", help="run a control plane")
    cp.add_argument(
        "--task-modules",
        type=_modules,
        default=[],
        help="modules whose @task functions to register, comma or space separated",
    )
    cp.add_argument(
        "--address",
        "--base-address",
        dest="address",
        default=DEFAULT_CONTROL_PLANE_ADDRESS,
        help="where to listen for clients and subworkers (default: %(default)s)",
    )
    cp.add_argument(
        "--no-local-execution",
        dest="local_execution",
        action="store_false",
        help="never run tasks here, even with no subworker connected",
    )
    cp.add_argument(
        "--local-concurrency",
        type=_positive_int,
        default=_CPU_COUNT,
        help="tasks run at once here when no subworker is connected (default: %(default)s)",
    )
    cp.add_argument(
        "--result-cache-size",
        type=_positive_int,
        default=DEFAULT_RESULT_CACHE_SIZE,
        help="finished results kept, least recently used evicted first (default: %(default)s)",
    )
    cp.add_argument(
        "--result-ttl",
        "--result-cache-ttl",
        dest="result_ttl",
        type=_positive_float,
        default=DEFAULT_RESULT_TTL,
        help="seconds a finished result stays queryable (default: %(default)s)",
    )
    cp.add_argument(
        "--history-size",
        type=_positive_int,
        default=DEFAULT_TASK_HISTORY_SIZE,
        help="latest tasks kept for history and the dashboard (default: %(default)s)",
    )
    cp.add_argument(
        "--dead-letters",
        type=_non_negative_int,
        default=DEFAULT_DEAD_LETTERS,
        help="tasks that failed for good kept in the dead-letter list, 0 for none "
        "(default: %(default)s)",
    )
    cp.add_argument(
        "--max-connections",
        type=_positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="clients and subworkers served at once; a new one past it is refused with "
        "ConnectionLimitError (default: %(default)s; each takes a file descriptor)",
    )
    cp.add_argument(
        "--max-queued-tasks",
        type=_positive_int,
        default=DEFAULT_MAX_QUEUED_TASKS,
        help="unfinished tasks held before new ones are refused with QueueFullError "
        "(default: %(default)s)",
    )
    cp.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        help="seconds between heartbeats to and from subworkers (default: %(default)s)",
    )
    cp.add_argument(
        "--lease-timeout",
        type=_positive_float,
        default=DEFAULT_LEASE_TIMEOUT,
        help="seconds of silence before a subworker is lost and its tasks requeued "
        "(default: %(default)s)",
    )
    cp.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="dispatches of a task whose workers keep dying before it fails (default: %(default)s)",
    )
    cp.add_argument(
        "--dashboard-host",
        default=DEFAULT_DASHBOARD_HOST,
        help="where the dashboard listens, when fastworker-dashboard is installed "
        "(default: %(default)s)",
    )
    cp.add_argument(
        "--dashboard-port",
        type=int,
        default=DEFAULT_DASHBOARD_PORT,
        help="the dashboard's port, 0 for any free one (default: %(default)s)",
    )
    cp.add_argument(
        "--dashboard-token",
        help="access token the dashboard asks visitors for; required off loopback",
    )
    cp.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        help="do not serve the dashboard even when fastworker-dashboard is installed",
    )
    cp.add_argument(
        "--schedule",
        dest="schedules",
        action="append",
        type=_schedule,
        default=[],
        metavar="NAME=SCHEDULE",
        help="run task NAME periodically: 'NAME=cron:*/5 * * * *' or 'NAME=every:30', "
        "optionally with ';tz=Europe/Berlin' (cron) and ';missed=coalesce|skip|all'; "
        "repeat for more; in place of the task's own @task(schedule=...). In the "
        "environment, one per line",
    )
    cp.add_argument(
        "--journal",
        default=DEFAULT_JOURNAL_PATH,
        help="the SQLite file that keeps queued tasks, leases and results across restarts; "
        "':memory:' keeps nothing (default: %(default)s, in the working directory)",
    )
    cp.add_argument(
        "--journal-sync",
        choices=JOURNAL_SYNC_MODES,
        default="normal",
        help="normal: what was acknowledged survives the control plane being killed; "
        "full: it also survives power loss, at an fsync per commit (default: %(default)s)",
    )
    _add_auth_token(cp)
    _add_secret(
        cp,
        "--worker-token",
        "the credential subworkers present to register, in place of --auth-token for them",
    )
    _add_secret(
        cp,
        "--client-token",
        "the credential clients present (submit, wait, cancel, query; never register a "
        "subworker), in place of --auth-token for them",
    )
    cp.add_argument(
        "--tls-cert",
        metavar="PATH",
        help="for a tls+tcp:// address: the control plane's certificate (PEM, with its chain)",
    )
    cp.add_argument("--tls-key", metavar="PATH", help="the key of --tls-cert (PEM)")
    cp.add_argument(
        "--tls-ca",
        metavar="PATH",
        help="with --tls-require-client-cert: the certificate authority (PEM) client and "
        "subworker certificates must chain to",
    )
    cp.add_argument(
        "--tls-require-client-cert",
        action="store_true",
        help="mutual TLS: refuse a peer without a certificate from --tls-ca; it then "
        "authenticates peers beyond loopback in place of a shared secret",
    )
    cp.add_argument(
        "--tls-cert-roles",
        action="store_true",
        help="with mutual TLS: a certificate whose common name is subworker:NAME or "
        "client:NAME has that role, in place of the role's secret",
    )
    cp.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen beyond loopback without a shared secret (only on a network you trust)",
    )
    _add_common(cp)

    sw = commands.add_parser(
        "subworker", help="run a subworker that takes tasks from a control plane"
    )
    sw.add_argument("--worker-id", required=True, help="this subworker's unique id")
    sw.add_argument(
        "--control-plane-address",
        default=DEFAULT_CONTROL_PLANE_ADDRESS,
        help="the control plane to connect to (default: %(default)s)",
    )
    sw.add_argument(
        "--task-modules", type=_modules, default=[], help="modules with @task functions"
    )
    sw.add_argument(
        "--concurrency",
        type=_positive_int,
        default=_CPU_COUNT,
        help="tasks run at once (default: %(default)s)",
    )
    sw.add_argument(
        "--drain-timeout",
        type=_positive_float,
        default=DEFAULT_DRAIN_TIMEOUT,
        help="seconds to let running tasks finish on SIGTERM before handing them back",
    )
    sw.add_argument(
        "--processes",
        type=processes_flag,
        default=1,
        help="subworker processes to run, or auto for one per CPU; past 1 this process "
        "supervises them, as ID.1 to ID.N (default: %(default)s)",
    )
    sw.add_argument(
        "--max-tasks-per-child",
        type=_positive_int,
        help="drain and exit with code 5, to be started again, after this many tasks",
    )
    sw.add_argument(
        "--max-memory-per-child",
        type=_positive_int,
        metavar="MB",
        help="drain and exit with code 5, to be started again, when resident memory "
        "exceeds this many MiB after a task",
    )
    sw.add_argument(
        "--base-address",
        help="accepted for compatibility and ignored: subworkers connect out to the control "
        "plane and listen on nothing",
    )
    _add_auth_token(sw)
    _add_tls_peer_flags(sw)
    _add_common(sw)

    submit = commands.add_parser("submit", help="submit a task")
    submit.add_argument("name", help="the task's registered name")
    submit.add_argument(
        "args",
        nargs="*",
        help="positional arguments, each read as JSON (1, 2.5, true, null, '[1,2]', '\"text\"'); "
        "a word that is not JSON is taken as a string",
    )
    submit.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    submit.add_argument("--priority", type=_priority, default=TaskPriority.NORMAL)
    submit.add_argument("--timeout", type=_positive_float, help="seconds the task may run")
    submit.add_argument("--wait", action="store_true", help="wait for the result and print it")
    submit.add_argument(
        "--wait-timeout", type=_positive_float, default=60.0, help="seconds to wait with --wait"
    )
    _add_client_flags(submit)
    _add_common(submit)

    status = commands.add_parser("status", help="show a task's record")
    status.add_argument("task_id")
    _add_client_flags(status)
    _add_common(status)

    cancel = commands.add_parser("cancel", help="cancel queued tasks")
    cancel.add_argument("task_ids", nargs="+")
    _add_client_flags(cancel)
    _add_common(cancel)

    dead = commands.add_parser(
        "dead-letters", help="list, show, retry or purge tasks that failed for good"
    )
    dead.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "show", "retry", "purge"],
        help="list (the default), show ID, retry ID... or --all, purge ID... or --all",
    )
    dead.add_argument("task_ids", nargs="*", metavar="ID")
    dead.add_argument("--all", action="store_true", help="retry or purge every dead letter")
    dead.add_argument("--offset", type=_non_negative_int, default=0, help="for list")
    dead.add_argument("--limit", type=_positive_int, default=50, help="for list (at most 1000)")
    _add_client_flags(dead)
    _add_common(dead)

    schedules = commands.add_parser(
        "schedules", help="list periodic tasks with their next and last run"
    )
    _add_client_flags(schedules)
    _add_common(schedules)

    listing = commands.add_parser("list", help="list registered tasks and connected subworkers")
    _add_client_flags(listing)
    _add_common(listing)

    for sub in (cp, sw, submit, status, cancel, dead, schedules, listing):
        _defaults_from_environment(sub)
    return parser


def command_flags() -> list[tuple[str, str]]:
    """Every (command, flag) pair of the command line, for references and completion."""
    parser = build_parser()
    choices: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:  # pyright: ignore[reportPrivateUsage]
        if isinstance(action.choices, dict):  # the subcommands
            choices = cast("dict[str, argparse.ArgumentParser]", action.choices)  # pyright: ignore[reportUnknownMemberType]
    return [
        (name, flag)
        for name, sub in choices.items()
        for action in sub._actions  # pyright: ignore[reportPrivateUsage]
        for flag in action.option_strings
        if flag not in ("-h", "--help")
    ]


def _defaults_from_environment(parser: argparse.ArgumentParser) -> None:
    """Take each optional flag's default from FASTWORKER_<FLAG> when that is set."""
    for action in parser._actions:  # pyright: ignore[reportPrivateUsage]
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        flag = action.option_strings[0].lstrip("-").replace("-", "_").upper()
        if flag.startswith("NO_"):
            flag = flag[3:]
        raw = os.environ.get(f"{ENV_PREFIX}{flag}")
        if raw is None:
            continue
        if isinstance(action, argparse._StoreFalseAction | argparse._StoreTrueAction):  # pyright: ignore[reportPrivateUsage]
            truthy = raw.strip().lower()
            if truthy not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                parser.error(f"{ENV_PREFIX}{flag}={raw!r} is not a boolean")
            parser.set_defaults(**{action.dest: truthy in ("1", "true", "yes", "on")})
            continue
        try:
            if isinstance(action, argparse._AppendAction):  # pyright: ignore[reportPrivateUsage]
                # One item per line; flags given as well add to them.
                lines = [line for line in raw.splitlines() if line.strip()]
                value = [action.type(line) if callable(action.type) else line for line in lines]
                parser.set_defaults(**{action.dest: value})
                continue
            value = action.type(raw) if callable(action.type) else raw
        except (ValueError, argparse.ArgumentTypeError) as exc:
            parser.error(f"{ENV_PREFIX}{flag}={raw!r}: {exc}")
        if action.choices is not None and value not in action.choices:
            parser.error(f"{ENV_PREFIX}{flag}={raw!r} is not one of {list(action.choices)}")
        parser.set_defaults(**{action.dest: value})
        action.required = False


# --- commands ----------------------------------------------------------------------------


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
) -> int:
    """Run until SIGTERM or SIGINT, or until the service ends itself with an exit code,
    stop, and return the exit code.

    A sync task still running in a thread cannot be interrupted. Its work was handed back
    (subworker) or goes with the in-memory queue (control plane), so the process exits
    without waiting for the thread."""
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
        print(f"fastworker: refused by the control plane: {error.message}", file=sys.stderr)
        return EXIT_REFUSED
    code = ending.result() if ending is not None and ending.done() else EXIT_OK
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


async def _control_plane(options: argparse.Namespace) -> int:
    from .control_plane import ControlPlane, ControlPlaneSettings

    registry = _load_tasks(options.task_modules)
    settings = ControlPlaneSettings(
        address=options.address,
        local_execution=options.local_execution,
        local_concurrency=options.local_concurrency,
        result_cache_size=options.result_cache_size,
        result_ttl=options.result_ttl,
        history_size=options.history_size,
        dead_letters=options.dead_letters,
        max_connections=options.max_connections,
        max_queued_tasks=options.max_queued_tasks,
        heartbeat_interval=options.heartbeat_interval,
        lease_timeout=options.lease_timeout,
        max_attempts=options.max_attempts,
        auth_token=options.auth_token,
        worker_token=options.worker_token,
        client_token=options.client_token,
        tls_cert=options.tls_cert,
        tls_key=options.tls_key,
        tls_ca=options.tls_ca,
        tls_require_client_cert=options.tls_require_client_cert,
        tls_cert_roles=options.tls_cert_roles,
        allow_unauthenticated=options.allow_unauthenticated,
        journal=options.journal,
        journal_sync=options.journal_sync,
        schedules=tuple(options.schedules),
    )
    plane = ControlPlane(registry, settings)
    log.info("tasks: %s", ", ".join(registry.names()) or "none")
    try:
        return await _serve_until_signalled(_WithDashboard(plane, options))
    except StorageError as exc:
        # At start only: later, a write the journal refuses refuses its submissions.
        print(f"fastworker: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _subworker(options: argparse.Namespace) -> int:
    from .subworker import Subworker, SubworkerSettings

    if options.base_address:
        log.warning(
            "--base-address is ignored: subworkers connect out to the control plane at %s",
            options.control_plane_address,
        )
    registry = _load_tasks(options.task_modules)
    if options.processes > 1:
        return await supervise(options)
    worker = Subworker(
        registry,
        SubworkerSettings(
            worker_id=options.worker_id,
            control_plane_address=options.control_plane_address,
            concurrency=options.concurrency,
            drain_timeout=options.drain_timeout,
            auth_token=options.auth_token,
            tls=_tls_options(options),
            max_tasks_per_child=options.max_tasks_per_child,
            max_memory_per_child=options.max_memory_per_child,
            supervisor_fd=take_supervisor_fd(),
        ),
    )
    log.info("subworker %s: tasks %s", options.worker_id, ", ".join(registry.names()) or "none")
    return await _serve_until_signalled(
        worker, lambda: worker.refused, lambda: worker.exit_requested
    )


def _client(options: argparse.Namespace) -> Client:
    return Client(
        options.address,
        request_timeout=options.request_timeout,
        auth_token=options.auth_token,
        tls=_tls_options(options),
    )


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


async def _submit(options: argparse.Namespace) -> int:
    kwargs = json.loads(options.kwargs)
    if not isinstance(kwargs, dict):
        raise ConfigurationError("--kwargs must be a JSON object")
    async with _client(options) as client:
        task_id = await client.delay(
            options.name,
            *[_json_arg(arg) for arg in options.args],
            priority=options.priority,
            timeout=options.timeout,
            **kwargs,  # pyright: ignore[reportUnknownArgumentType]
        )
        if not options.wait:
            print(task_id)
            return EXIT_OK
        result = await client.wait(task_id, timeout=options.wait_timeout)
        if result.error is not None:
            print(f"{task_id} {result.status.value}: {result.error}", file=sys.stderr)
            return EXIT_TASK_FAILED
        print(json.dumps(result.value, default=repr))
        return EXIT_OK


async def _status(options: argparse.Namespace) -> int:
    async with _client(options) as client:
        info = await client.status(options.task_id)
    import msgspec

    print(msgspec.json.encode(info).decode())
    return EXIT_OK


async def _cancel(options: argparse.Namespace) -> int:
    async with _client(options) as client:
        reply = await client.cancel(*options.task_ids)
    for task_id in reply.cancelled:
        print(f"{task_id} cancelled")
    for task_id in reply.stopping:
        print(f"{task_id} running: its worker was asked to stop it")
    for task_id in reply.not_cancelled:
        print(f"{task_id} not cancelled: finished, or running on a worker that cannot stop it")
    for task_id in reply.unknown:
        print(f"{task_id} unknown")
    return EXIT_OK if not reply.not_cancelled and not reply.unknown else EXIT_REFUSED


async def _dead_letters(options: argparse.Namespace) -> int:
    action, ids, every = options.action, options.task_ids, options.all
    if action in ("list", "show") and every:
        raise ConfigurationError(f"--all is for retry and purge, not {action}")
    if action == "show" and len(ids) != 1:
        raise ConfigurationError("show takes one task id")
    if action in ("retry", "purge") and not (ids or every):
        raise ConfigurationError(f"{action} takes task ids, or --all")
    if action in ("retry", "purge") and ids and every:
        raise ConfigurationError(f"{action} takes task ids or --all, not both")
    async with _client(options) as client:
        if action == "list":
            page = await client.dead_letters(offset=options.offset, limit=min(options.limit, 1000))
            for info in page.tasks:
                error = info.error.message if info.error is not None else ""
                print(f"{info.task_id}  {info.name}  attempts {info.attempts}  {error}")
            print(f"{page.total} dead letters ({page.dropped} dropped past the bound)")
        elif action == "show":
            (task_id,) = ids
            info = await client.status(task_id, include_payloads=True)
            import msgspec

            print(msgspec.json.encode(info).decode())
        elif action == "retry":
            retried = await client.retry_dead(*ids, all=every)
            for old, new in retried.items():
                print(f"{old} submitted again as {new}")
            missing = [task_id for task_id in ids if task_id not in retried]
            for task_id in missing:
                print(f"{task_id} is not a dead letter")
            return EXIT_REFUSED if missing else EXIT_OK
        else:
            purged = await client.purge_dead(*ids, all=every)
            print(f"{purged} dead letters dropped")
            if ids and purged < len(set(ids)):
                return EXIT_REFUSED
    return EXIT_OK


async def _schedules(options: argparse.Namespace) -> int:
    async with _client(options) as client:
        schedules = await client.schedules()
    for info in schedules:
        last = (
            f"last {_time(info.last_fire)} ({info.last_task_id})"
            if info.last_fire
            else "not run yet"
        )
        print(
            f"{info.name}  {info.schedule}  next {_time(info.next_fire)}  {last}"
            f"  runs {info.runs}  skipped {info.skipped}"
        )
    print(f"{len(schedules)} periodic tasks")
    return EXIT_OK


def _time(when: float | None) -> str:
    if when is None or not math.isfinite(when):
        return "never"
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


async def _list(options: argparse.Namespace) -> int:
    async with _client(options) as client:
        overview = await client.overview()
    print("tasks:")
    for name in overview.task_names:
        print(f"  {name}")
    print("subworkers:")
    for worker in overview.workers:
        print(
            f"  {worker.worker_id}  {worker.state.value}  load {worker.load}/{worker.slots}  "
            f"{worker.address}  done {worker.tasks_done}"
        )
    depth = overview.queue_depth
    print(
        f"queued: critical {depth.critical}, high {depth.high}, "
        f"normal {depth.normal}, low {depth.low}"
    )
    if overview.journal:
        sync, size = overview.journal_sync, overview.journal_bytes
        print(f"journal: {overview.journal} (sync {sync}, {size} bytes)")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "control-plane": _control_plane,
    "subworker": _subworker,
    "submit": _submit,
    "status": _status,
    "cancel": _cancel,
    "dead-letters": _dead_letters,
    "schedules": _schedules,
    "list": _list,
}


_EXIT_CODES: tuple[tuple[type[Exception], int, str], ...] = (
    # First match wins: the more specific errors come before FastworkerError.
    (ConfigurationError, EXIT_USAGE, ""),
    (json.JSONDecodeError, EXIT_USAGE, "invalid JSON: "),
    (TransportError, EXIT_UNREACHABLE, ""),
    (RejectedError, EXIT_REFUSED, "refused: "),
    (FastworkerError, EXIT_TASK_FAILED, ""),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    options = parser.parse_args(argv)
    _read_secrets(parser, options)
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(COMMANDS[options.command](options))
    except (FastworkerError, json.JSONDecodeError) as exc:
        code, prefix = next(
            (code, prefix) for kind, code, prefix in _EXIT_CODES if isinstance(exc, kind)
        )
        print(f"fastworker: {prefix}{exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
