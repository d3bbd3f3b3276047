"""Tasks that log, for the tests of ``--log-format json`` in real processes."""

from __future__ import annotations

import asyncio
import logging

from fastworker.client import task

log = logging.getLogger("fw_log_tasks")


@task
def say(text: str) -> str:
    log.info("saying %s", text, extra={"words": len(text.split())})
    return text


@task
async def say_async(text: str) -> str:
    await asyncio.sleep(0)
    log.info("saying %s", text)
    return text


@task
def explode(message: str) -> None:
    raise ValueError(message)
