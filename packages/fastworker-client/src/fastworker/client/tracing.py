"""OpenTelemetry traces across processes, as a :class:`~fastworker.client.hooks.Hook`.

Importing this module imports ``opentelemetry-api`` (``pip install
'fastworker-client[otel]'``); nothing else in fastworker does. The SDK, its exporters and
its sampling are the application's: without an SDK every span here is a no-op.

- ``delay()`` opens a PRODUCER span ``send <task>`` in the caller's context and writes
  the W3C trace context into the task's headers.
- The control plane records the queue wait as a span ``wait <task>``, a child of the
  caller's span, from acceptance to dispatch.
- The task runs inside a CONSUMER span ``process <task>``, a child of the caller's span,
  current while the task's code runs, so spans it opens land in the same trace; an
  exception the task raised is recorded on it.

Attributes follow OpenTelemetry's messaging conventions (``messaging.system``,
``messaging.operation.type``, ``messaging.destination.name`` as the task's name,
``messaging.message.id`` as its id) plus ``fastworker.task.priority``,
``fastworker.task.attempt`` and ``fastworker.worker.id``.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import context, propagate, trace
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)

from fastworker.protocol import TaskStatus

from ._version import __version__
from .hooks import Dispatched, Hook, Submission, TaskRun

__all__ = ["SYSTEM", "TracingHook"]

SYSTEM: Final = "fastworker"
"""``messaging.system`` of every span."""

_SPAN: Final = "fastworker.span"
_TOKEN: Final = "fastworker.context"


class TracingHook(Hook):
    """Spans for submissions, queue waits and runs, linked by the W3C trace context
    carried in each task's headers. Uses ``tracer_provider``, else the global one, and
    the global propagator."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("fastworker", __version__, tracer_provider)
        self._sdk = tracer_provider is not None

    def _recording(self) -> bool:
        """Whether an SDK is set up. Until then every span would be a no-op, and skipping
        them keeps a process with opentelemetry-api but no SDK at full speed. An SDK, once
        set, stays: the API lets a process set its provider once."""
        if not self._sdk:
            provider = trace.get_tracer_provider()
            self._sdk = not isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))
        return self._sdk

    def before_submit(self, submission: Submission) -> None:
        if not self._recording():
            return
        span = self._tracer.start_span(
            f"send {submission.name}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": submission.name,
                "messaging.message.id": submission.task_id,
                "fastworker.task.priority": submission.priority.name,
            },
        )
        submission.state[_SPAN] = span
        propagate.inject(submission.headers, context=trace.set_span_in_context(span))

    def after_submit(self, submission: Submission, error: BaseException | None) -> None:
        span = submission.state.pop(_SPAN, None)
        if not isinstance(span, trace.Span):
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def dispatched(self, dispatched: Dispatched) -> None:
        if not self._recording():
            return
        parent = propagate.extract(dispatched.headers)
        span = self._tracer.start_span(
            f"wait {dispatched.name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            start_time=_nanoseconds(dispatched.queued_at),
            attributes=_attributes(dispatched, None),
        )
        span.end(end_time=_nanoseconds(dispatched.dispatched_at))

    def before_run(self, run: TaskRun) -> None:
        if not self._recording():
            return
        parent = propagate.extract(run.headers)
        span = self._tracer.start_span(
            f"process {run.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_attributes(run, "process"),
        )
        run.state[_SPAN] = span
        run.state[_TOKEN] = context.attach(trace.set_span_in_context(span, parent))

    def after_run(self, run: TaskRun) -> None:
        span = run.state.pop(_SPAN, None)
        token = run.state.pop(_TOKEN, None)
        if token is not None:
            context.detach(token)  # pyright: ignore[reportArgumentType]
        if not isinstance(span, trace.Span):
            return
        span.set_attribute("fastworker.task.status", run.status.value)
        if run.exception is not None:
            span.record_exception(run.exception)
        if run.status is not TaskStatus.SUCCEEDED:
            error = run.exception
            why = run.status.value if error is None else f"{type(error).__name__}: {error}"
            span.set_status(Status(StatusCode.ERROR, why))
        span.end()


def _attributes(task: Dispatched | TaskRun, operation: str | None) -> dict[str, str | int]:
    """The attributes of a span of one attempt: a ``process`` or the queue wait (no
    messaging operation: waiting in a queue is none)."""
    attributes: dict[str, str | int] = {"messaging.system": SYSTEM}
    if operation is not None:
        attributes["messaging.operation.type"] = operation
        attributes["messaging.operation.name"] = operation
    attributes["messaging.destination.name"] = task.name
    attributes["messaging.message.id"] = task.task_id
    attributes["fastworker.task.priority"] = task.priority.name
    attributes["fastworker.task.attempt"] = task.attempt
    attributes["fastworker.worker.id"] = task.worker_id
    return attributes


def _nanoseconds(seconds: float) -> int:
    return int(seconds * 1e9)
