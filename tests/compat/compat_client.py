"""A web app's side of the cross-version tests, run by the interpreter of the release
under test: ``python compat_client.py COMMAND ADDRESS [ARGS...]`` prints one JSON object.

It uses only the client API of the first release (0.1.0), so every later release must
keep it working. Errors are printed as their class names: the tests check that each
side learns why, in the typed error the API promises.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from fastworker.client import Client, FastworkerError, TaskCall
from fastworker.protocol import AuthenticationError, ProtocolVersionError

REQUEST_TIMEOUT = 5.0
RESULT_TIMEOUT = 60.0
CONNECT_BOUND = 20.0
FINAL_ERRORS = (AuthenticationError, ProtocolVersionError)


async def _connect(address: str) -> Client:
    client = Client(address, request_timeout=REQUEST_TIMEOUT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_BOUND
    while True:
        try:
            await client.start()
            return client
        except FINAL_ERRORS:
            raise  # answered, and refused: waiting longer will not help
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _outcome(client: Client, task_id: str) -> Any:
    try:
        return {"value": await client.result(task_id, timeout=RESULT_TIMEOUT)}
    except FastworkerError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


async def roundtrip(client: Client, _: argparse.Namespace) -> dict[str, Any]:
    """One task at each priority, a batch, a failing task and an unknown one."""
    by_priority = {
        level: await client.delay("add", 20, index, priority=level)
        for index, level in enumerate(("CRITICAL", "HIGH", "NORMAL", "LOW"))
    }
    batch = await client.delay_many(TaskCall("add", (i, i)) for i in range(20))
    failing = await client.delay("fail", "broken on purpose")
    try:
        await client.delay("no_such_task")
        unknown = "accepted"
    except FastworkerError as exc:
        unknown = type(exc).__name__
    results = {level: await _outcome(client, tid) for level, tid in by_priority.items()}
    info = await client.status(by_priority["NORMAL"])
    return {
        "results": results,
        "batch": [await _outcome(client, tid) for tid in batch],
        "failed": await _outcome(client, failing),
        "unknown": unknown,
        "status": info.status.value,
        "worker": info.worker_id,
        "attempts": info.attempts,
    }


async def submit(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    ids = [
        await client.delay(args.task, *json.loads(args.args), priority=args.priority)
        for _ in range(args.count)
    ]
    return {"ids": ids}


async def results(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    return {"outcomes": [await _outcome(client, tid) for tid in args.ids]}


async def cancel(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    reply = await client.cancel(*args.ids)
    return {
        "cancelled": sorted(reply.cancelled),
        "outcomes": [await _outcome(client, tid) for tid in args.ids],
    }


async def batch_keys(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """The same idempotency key twice in two batches: one task, one result."""
    calls = [TaskCall("add", (1, 2), idempotency_key=args.key)]
    first = await client.delay_many(calls)
    second = await client.delay_many(calls)
    return {"first": first, "second": second, "outcome": await _outcome(client, first[0])}


async def countdown(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """A task held for a second: run late, or refused by a control plane without delays."""
    loop = asyncio.get_running_loop()
    submitted = loop.time()
    try:
        task_id = await client.delay("stamp", "later", countdown=1.0)
    except FastworkerError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    outcome = await _outcome(client, task_id)
    return {"outcome": outcome, "waited": loop.time() - submitted}


async def dead_letters(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """A task that fails for good, then the dead-letter list (or its refusal)."""
    task_id = await client.delay("fail", "into the dead letters")
    await _outcome(client, task_id)
    try:
        page = await client.dead_letters()
    except FastworkerError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"task_id": task_id, "listed": [t.task_id for t in page.tasks]}


async def schedules(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """The control plane's periodic tasks (or the refusal of an older one)."""
    try:
        listed = await client.schedules()
    except FastworkerError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"schedules": [[info.name, info.schedule] for info in listed]}


async def metrics(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """A task that succeeds, then the metrics (or the refusal of an older control plane)."""
    task_id = await client.delay("add", 1, 2)
    await _outcome(client, task_id)
    try:
        reply = await client.metrics()
    except FastworkerError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"succeeded": {entry.name: entry.succeeded for entry in reply.tasks}}


COMMANDS = {
    "roundtrip": roundtrip,
    "submit": submit,
    "results": results,
    "cancel": cancel,
    "batch-keys": batch_keys,
    "countdown": countdown,
    "dead-letters": dead_letters,
    "schedules": schedules,
    "metrics": metrics,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("address")
    parser.add_argument("ids", nargs="*")
    parser.add_argument("--task", default="add")
    parser.add_argument("--args", default="[1, 2]")
    parser.add_argument("--priority", default="NORMAL")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--key", default="compat-key")
    return parser


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    try:
        client = await _connect(args.address)
    except FINAL_ERRORS as exc:
        return {"connect_error": type(exc).__name__, "message": str(exc)}
    try:
        return await COMMANDS[args.command](client, args)
    finally:
        await client.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(_parser().parse_args()))))
    sys.stdout.flush()
