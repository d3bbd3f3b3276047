"""Tasks that open spans, and an OpenTelemetry SDK with its in-memory exporter.

Imported by the control plane and the subworker (``--task-modules fw_traced_tasks``) and
by the client script ``fw_traced_client.py``. With ``FW_SPANS`` naming a directory, each
process writes the spans it finished to ``<dir>/<pid>.json`` as it exits, so a test can
collect the spans of every process and check how they link.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastworker.client import task

exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(_provider)
tracer = trace.get_tracer("fw_traced_tasks")
log = logging.getLogger("fw_traced_tasks")


def span_record(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if parent is None else f"{parent.span_id:016x}",
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": event.name, "attributes": dict(event.attributes or {})}
            for event in span.events
        ],
        "status": span.status.status_code.name,
        "start": span.start_time,
        "end": span.end_time,
    }


def _dump() -> None:
    folder = os.environ.get("FW_SPANS")
    if folder:
        spans = [span_record(span) for span in exporter.get_finished_spans()]
        (Path(folder) / f"{os.getpid()}.json").write_text(json.dumps(spans))


atexit.register(_dump)


@task
def traced(x: int) -> int:
    log.info("doubling %d", x)  # with --log-format json, it carries the run's trace id
    with tracer.start_as_current_span("inside"):
        return x * 2


@task
async def traced_async(x: int) -> int:
    with tracer.start_as_current_span("inside-async"):
        await asyncio.sleep(0)
        return x * 3


@task
def broken() -> None:
    raise ValueError("boom")
