"""The OpenTelemetry SDK with an exporter that drops every span: what tracing costs a
process that records spans, without the cost of a collector. Imported by the control
plane and subworkers of the traced runs (``--task-modules bench_tasks,bench_tracing``)
and by the suite itself for its clients."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class DropSpans(SpanExporter):
    """Accepts every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
trace.set_tracer_provider(_provider)
