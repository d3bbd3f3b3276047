"""An online shop on FastAPI that hands its background work to fastworker.

Run it (three terminals, from this folder):

    fastworker control-plane --task-modules shop_tasks
    fastworker subworker --worker-id fast-1 --task-modules shop_tasks
    uvicorn app:app --port 8000

Then ``curl -X POST localhost:8000/orders -H 'content-type: application/json'
-d '{"amount_cents": 1999, "email": "ada@example.com"}'`` answers 202 with the charge's
task id and where to wait for it.
"""

from __future__ import annotations

import itertools
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from fastworker.client import TaskPriority
from fastworker.client.fastapi import FastWorker

app = FastAPI(title="fastworker shop")
fw = FastWorker(app)  # the client starts and stops with the app
app.include_router(fw.task_routes())  # /tasks/{id}, /tasks/{id}/result, /tasks/{id}/events

_order_ids = itertools.count(1)


class Order(BaseModel):
    amount_cents: int = Field(gt=0)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


@app.post("/orders", status_code=202)
async def place_order(order: Order, request: Request) -> Response:
    """Charge now (CRITICAL); receipt (HIGH) and metrics (NORMAL) follow. Answers at once
    with the charge's task id; the browser waits on its result URL."""
    order_id = next(_order_ids)
    charge = await fw.delay(
        "charge_card", order_id, order.amount_cents, priority=TaskPriority.CRITICAL
    )
    await fw.delay("send_receipt_email", order_id, order.email)
    await fw.delay("record_purchase_metric", order_id, order.amount_cents)
    return fw.accepted(request, charge)


@app.post("/maintenance/archive", status_code=202)
async def archive_logs(request: Request, days: int = 30) -> Response:
    """Queue a month of log archiving at LOW priority: it never delays an order."""
    ids = [await fw.delay("archive_old_logs", day) for day in range(days)]
    return fw.accepted(request, ids[-1])


@app.get("/health")
async def health() -> dict[str, Any]:
    """Is the control plane reachable, and how many subworkers are online."""
    return await fw.health()
