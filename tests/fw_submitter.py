"""A client process for the crash tests: submits ``add(i, offset)`` for i in range(count)
and writes ``task_id expected`` for each task whose submission returned, retrying a
submission the control plane did not answer (with the same idempotency key)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from fastworker.client import Client
from fastworker.protocol import TransportError

RETRY_FOR = 60.0
"""Seconds one submission may keep failing (the control plane restarting) before the
process gives up with exit code 1."""


async def main(address: str, out: TextIO, count: int, offset: int) -> int:
    async with Client(address, request_timeout=2.0) as client:
        for i in range(count):
            deadline = time.monotonic() + RETRY_FOR
            while True:
                try:
                    task_id = await client.delay("add", i, offset, idempotency_key=f"{offset}-{i}")
                    break
                except TransportError as exc:
                    if time.monotonic() > deadline:
                        print(f"gave up on add({i}, {offset}) after {RETRY_FOR} s: {exc!r}")
                        return 1
                    await asyncio.sleep(0.05)
            out.write(f"{task_id} {i + offset}\n")
    return 0


if __name__ == "__main__":
    address, out_path, count, offset = sys.argv[1:5]
    with open(out_path, "a", buffering=1) as lines:  # one line a task, flushed at once
        sys.exit(asyncio.run(main(address, lines, int(count), int(offset))))
