"""The commands that talk to a control plane as a client: ``submit``, ``status``,
``cancel``, ``dead-letters``, ``schedules``, ``list``. Their settings are those of every
client (the ``client`` table of the configuration file); the options here are what one
invocation asks, so they have no variable and no file entry."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastworker.client import Client
from fastworker.client.config import ExitCode, non_negative_int, positive_float, positive_int
from fastworker.protocol import ConfigurationError, TaskPriority

from .services import tls_options

__all__ = ["CLIENT_COMMANDS", "Subcommand"]


@dataclass(frozen=True)
class Subcommand:
    """One command of ``fastworker``: what it does, its own options, how it runs."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
    add_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def _priority(text: str) -> TaskPriority:
    try:
        return TaskPriority.parse(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` with its ValueError shown by argparse as the reason."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _client(options: argparse.Namespace) -> Client:
    return Client(
        options.address,
        request_timeout=options.request_timeout,
        auth_token=options.auth_token,
        tls=tls_options(options),
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
            return ExitCode.OK
        result = await client.wait(task_id, timeout=options.wait_timeout)
        if result.error is not None:
            print(f"{task_id} {result.status.value}: {result.error}", file=sys.stderr)
            return ExitCode.TASK_FAILED
        print(json.dumps(result.value, default=repr))
        return ExitCode.OK


async def _status(options: argparse.Namespace) -> int:
    async with _client(options) as client:
        info = await client.status(options.task_id)
    import msgspec

    print(msgspec.json.encode(info).decode())
    return ExitCode.OK


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
    return ExitCode.OK if not reply.not_cancelled and not reply.unknown else ExitCode.REFUSED


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
            return ExitCode.REFUSED if missing else ExitCode.OK
        else:
            purged = await client.purge_dead(*ids, all=every)
            print(f"{purged} dead letters dropped")
            if ids and purged < len(set(ids)):
                return ExitCode.REFUSED
    return ExitCode.OK


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
    return ExitCode.OK


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
        prefetch = f" + prefetch {worker.prefetch}" if worker.prefetch else ""
        print(
            f"  {worker.worker_id}  {worker.state.value}  "
            f"load {worker.load}/{worker.slots}{prefetch}  "
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
    return ExitCode.OK


async def _ping(options: argparse.Namespace) -> int:
    """One overview round trip per --count on one connection (the hello before them
    proves the credentials), each line with its time."""
    options.address = options.target or options.address
    async with _client(options) as client:
        for turn in range(options.count):
            if turn:
                await asyncio.sleep(options.interval)
            sent = time.perf_counter()
            overview = await client.overview()
            took = (time.perf_counter() - sent) * 1000
            print(
                f"{client.address}: ok in {took:.1f} ms (control plane "
                f"{overview.control_plane_id}, fastworker {overview.library_version or '?'})",
                flush=True,
            )
    return ExitCode.OK


def _submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the task's registered name")
    parser.add_argument(
        "args",
        nargs="*",
        help="positional arguments, each read as JSON (1, 2.5, true, null, '[1,2]', '\"text\"'); "
        "a word that is not JSON is taken as a string",
    )
    parser.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    parser.add_argument("--priority", type=_priority, default=TaskPriority.NORMAL)
    parser.add_argument("--timeout", type=_checked(positive_float), help="seconds the task may run")
    parser.add_argument("--wait", action="store_true", help="wait for the result and print it")
    parser.add_argument(
        "--wait-timeout",
        type=_checked(positive_float),
        default=60.0,
        help="seconds to wait with --wait (default: %(default)s)",
    )


def _status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_id")


def _cancel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_ids", nargs="+")


def _dead_letters_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "show", "retry", "purge"],
        help="list (the default), show ID, retry ID... or --all, purge ID... or --all",
    )
    parser.add_argument("task_ids", nargs="*", metavar="ID")
    parser.add_argument("--all", action="store_true", help="retry or purge every dead letter")
    parser.add_argument("--offset", type=_checked(non_negative_int), default=0, help="for list")
    parser.add_argument(
        "--limit", type=_checked(positive_int), default=50, help="for list (at most 1000)"
    )


def _ping_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        nargs="?",
        metavar="ADDRESS",
        help="the control plane to ping, in place of --address",
    )
    parser.add_argument(
        "--count", type=_checked(positive_int), default=1, help="round trips to make (default: 1)"
    )
    parser.add_argument(
        "--interval",
        type=_checked(positive_float),
        default=1.0,
        help="seconds between round trips, with --count (default: %(default)s)",
    )


CLIENT_COMMANDS = (
    Subcommand("submit", "submit a task", _submit, _submit_options),
    Subcommand("status", "show a task's record", _status, _status_options),
    Subcommand("cancel", "cancel queued tasks, stop running ones", _cancel, _cancel_options),
    Subcommand(
        "dead-letters",
        "list, show, retry or purge tasks that failed for good",
        _dead_letters,
        _dead_letters_options,
    ),
    Subcommand("schedules", "list periodic tasks with their next and last run", _schedules),
    Subcommand("list", "list registered tasks and connected subworkers", _list),
    Subcommand("ping", "check that a control plane answers, and how fast", _ping, _ping_options),
)
