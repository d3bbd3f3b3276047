"""A web app's side of the tracing test, as its own process: each call under a span of
its own, as a request handler would be. Usage: python fw_traced_client.py ADDRESS.
Prints the task ids as JSON; the spans go to ``$FW_SPANS`` at exit."""

from __future__ import annotations

import asyncio
import json
import sys

from fastworker.client import Client, SyncClient, TaskFailedError, TaskPriority
from fw_traced_tasks import tracer


async def _async_calls(address: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    async with Client(address, request_timeout=5.0) as client:
        with tracer.start_as_current_span("request traced"):
            ids["traced"] = await client.delay("traced", 21, priority=TaskPriority.HIGH)
            assert await client.result(ids["traced"], timeout=30) == 42
        with tracer.start_as_current_span("request traced_async"):
            ids["traced_async"] = await client.delay("traced_async", 2)
            assert await client.result(ids["traced_async"], timeout=30) == 6
        with tracer.start_as_current_span("request broken"):
            ids["broken"] = await client.delay("broken")
            try:
                await client.result(ids["broken"], timeout=30)
            except TaskFailedError:
                pass
            else:
                raise AssertionError("broken did not fail")
    return ids


def _sync_call(address: str) -> str:
    with (
        SyncClient(address, request_timeout=5.0) as client,
        tracer.start_as_current_span("request sync"),
    ):
        task_id = client.delay("traced", 5)
        assert client.result(task_id, timeout=30) == 10
    return task_id


def main() -> None:
    address = sys.argv[1]
    ids = asyncio.run(_async_calls(address))
    ids["sync"] = _sync_call(address)
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
