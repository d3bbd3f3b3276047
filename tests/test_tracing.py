"""Traces across real processes: a client, a control plane and a subworker, each with the
OpenTelemetry SDK and its in-memory exporter (``fw_traced_tasks``). One trace runs from
the caller's span through ``delay()``, the queue wait and the run to the span the task
opens, with each parent link where it belongs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from fw_processes import START_TIMEOUT, TESTS_DIR, Processes, connect, wait_for_workers

Span = dict[str, Any]


def _collect(folder: Path) -> dict[str, list[Span]]:
    """Every process's spans by the process's name (its dump file's pid)."""
    return {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}


def _one(spans: list[Span], name: str, trace_id: str) -> Span:
    found = [s for s in spans if s["name"] == name and s["trace_id"] == trace_id]
    assert len(found) == 1, f"{len(found)} spans {name!r} in trace {trace_id}: {spans}"
    return found[0]


async def test_one_trace_runs_from_delay_to_the_span_inside_the_task(
    processes: Processes, tmp_path: Path
) -> None:
    folder = tmp_path / "spans"
    folder.mkdir()
    env = {"FW_SPANS": str(folder), "FASTWORKER_TRACING": "on"}
    address = processes.address()
    plane = processes.fastworker(
        "control-plane",
        "--task-modules",
        "fw_traced_tasks",
        "--address",
        address,
        "--no-dashboard",
        "--no-local-execution",
        name="control-plane",
        env=env,
    )
    worker = processes.fastworker(
        "subworker",
        "--worker-id",
        "w1",
        "--control-plane-address",
        address,
        "--task-modules",
        "fw_traced_tasks",
        "--concurrency",
        "2",
        "--log-format",
        "json",
        name="subworker",
        env=env,
    )
    watcher = await connect(address)
    try:
        await wait_for_workers(watcher, 1)
    finally:
        await watcher.stop()

    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(TESTS_DIR / "fw_traced_client.py"), address],
        cwd=TESTS_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT * 3,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    ids = json.loads(run.stdout)
    for process in (worker, plane):  # a drain: each writes its spans as it exits
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=START_TIMEOUT) == 0
    by_process = _collect(folder)
    plane_spans = by_process.pop(str(plane.pid))
    worker_spans = by_process.pop(str(worker.pid))
    (client_spans,) = by_process.values()  # the client script's

    # The client: the request's span is the parent of the PRODUCER span of delay().
    request = next(s for s in client_spans if s["name"] == "request traced")
    trace_id = request["trace_id"]
    send = _one(client_spans, "send traced", trace_id)
    assert send["kind"] == "PRODUCER"
    assert send["parent_id"] == request["span_id"]
    assert send["attributes"] == {
        "messaging.system": "fastworker",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "traced",
        "messaging.message.id": ids["traced"],
        "fastworker.task.priority": "HIGH",
    }

    # The control plane: the queue wait, a child of the caller's span.
    wait = _one(plane_spans, "wait traced", trace_id)
    assert wait["parent_id"] == send["span_id"]
    assert wait["attributes"]["fastworker.worker.id"] == "w1"
    assert wait["attributes"]["messaging.message.id"] == ids["traced"]
    assert wait["start"] <= wait["end"]

    # The subworker: the CONSUMER span, a child of the caller's, and the task's own span
    # inside it.
    process = _one(worker_spans, "process traced", trace_id)
    assert process["kind"] == "CONSUMER"
    assert process["parent_id"] == send["span_id"]
    assert process["status"] == "UNSET"
    assert process["attributes"]["messaging.operation.type"] == "process"
    assert process["attributes"]["fastworker.task.attempt"] == 1
    assert process["attributes"]["fastworker.task.priority"] == "HIGH"
    assert process["attributes"]["fastworker.worker.id"] == "w1"
    assert process["attributes"]["fastworker.task.status"] == "succeeded"
    inside = _one(worker_spans, "inside", trace_id)
    assert inside["parent_id"] == process["span_id"]
    # The task's own log line names the run's trace and span.
    lines = [json.loads(line) for line in processes.log("subworker").splitlines()]
    (logged,) = [line for line in lines if line["message"] == "doubling 21"]
    assert (logged["trace_id"], logged["span_id"]) == (trace_id, process["span_id"])
    assert (logged["task_id"], logged["worker_id"]) == (ids["traced"], "w1")

    # An async task: its own span is a child of the run's too.
    request = next(s for s in client_spans if s["name"] == "request traced_async")
    send = _one(client_spans, "send traced_async", request["trace_id"])
    process = _one(worker_spans, "process traced_async", request["trace_id"])
    assert process["parent_id"] == send["span_id"]
    inside = _one(worker_spans, "inside-async", request["trace_id"])
    assert inside["parent_id"] == process["span_id"]

    # A task that raises: the exception is recorded on its run's span.
    request = next(s for s in client_spans if s["name"] == "request broken")
    process = _one(worker_spans, "process broken", request["trace_id"])
    assert process["status"] == "ERROR"
    (event,) = process["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "boom"

    # A SyncClient called from the app's thread carries that thread's span.
    request = next(s for s in client_spans if s["name"] == "request sync")
    send = _one(client_spans, "send traced", request["trace_id"])
    assert send["parent_id"] == request["span_id"]
    assert send["attributes"]["messaging.message.id"] == ids["sync"]
    process = _one(worker_spans, "process traced", request["trace_id"])
    assert process["parent_id"] == send["span_id"]
