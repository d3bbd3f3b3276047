"""The shop's background work, at all four priorities: what the example app and the demo run."""

from __future__ import annotations

import asyncio
import random
import time

from fastworker.client import TaskPriority, every, task


@task(priority=TaskPriority.CRITICAL, timeout=10)
async def charge_card(order_id: int, amount_cents: int) -> dict[str, object]:
    """Charge the customer: the one thing that must never wait behind bulk work."""
    await asyncio.sleep(random.uniform(0.005, 0.02))
    return {"order_id": order_id, "charged": amount_cents, "status": "approved"}


@task(priority=TaskPriority.HIGH, timeout=30)
async def send_receipt_email(order_id: int, email: str) -> str:
    """Send the receipt soon after the charge."""
    await asyncio.sleep(random.uniform(0.01, 0.05))
    return f"receipt for order {order_id} sent to {email}"


@task(priority=TaskPriority.NORMAL)
def record_purchase_metric(order_id: int, amount_cents: int) -> None:
    """Record the sale for reporting; a sync task, run in a worker thread."""
    time.sleep(random.uniform(0.002, 0.01))


@task(priority=TaskPriority.LOW, timeout=120)
def archive_old_logs(day: int) -> int:
    """Bulk housekeeping that may queue up for a while."""
    time.sleep(random.uniform(0.05, 0.2))
    return day


@task(priority=TaskPriority.LOW, schedule=every(seconds=30))
def refresh_sales_report() -> str:
    """A periodic task: the control plane runs it every 30 seconds by itself."""
    time.sleep(random.uniform(0.01, 0.05))
    return "sales report refreshed"
