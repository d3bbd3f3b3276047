"""Hooks and the tracing hook, without sockets: the registry, the header bounds, how the
tracing choice is made, and the spans the tracing hook opens and links."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from fastworker.client import hooks
from fastworker.client.hooks import Dispatched, Hook, Submission, TaskRun, check_headers
from fastworker.protocol import (
    MAX_HEADER_NAME,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    ConfigurationError,
    TaskPriority,
    TaskStatus,
)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process where no hook is registered and tracing is not decided yet."""
    monkeypatch.setattr(hooks, "_hooks", ())
    monkeypatch.setattr(hooks, "_tracing_decided", False)


def test_hooks_register_once_in_order_and_unregister(fresh: None) -> None:
    first, second = Hook(), Hook()
    hooks.add_hook(first)
    hooks.add_hook(second)
    hooks.add_hook(first)
    assert hooks.active_hooks() == (first, second)
    hooks.remove_hook(first)
    hooks.remove_hook(first)
    assert hooks.active_hooks() == (second,)


def test_only_a_hook_can_be_registered(fresh: None) -> None:
    with pytest.raises(ConfigurationError, match=r"must be a fastworker\.client\.hooks\.Hook"):
        hooks.add_hook(print)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({f"h{i}": "" for i in range(MAX_HEADERS + 1)}, f"at most {MAX_HEADERS} headers"),
        ({"": "x"}, "header name"),
        ({"x" * (MAX_HEADER_NAME + 1): "x"}, "header name"),
        ({"h": "x" * (MAX_HEADER_VALUE + 1)}, f"at most {MAX_HEADER_VALUE} characters"),
        ({"h": 1}, "must be text"),
        ([("h", "x")], "must be a dict"),
    ],
)
def test_headers_the_wire_cannot_carry_are_refused(headers: object, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        check_headers(headers)


def test_headers_at_the_bounds_pass() -> None:
    headers = {f"h{i}": "v" * MAX_HEADER_VALUE for i in range(MAX_HEADERS)}
    assert check_headers(headers) is headers


def test_tracing_off_registers_nothing_and_the_first_choice_stands(fresh: None) -> None:
    assert hooks.install_tracing("off") is False
    assert hooks.active_hooks() == ()
    assert hooks.install_tracing("on") is False  # decided already


def test_an_unknown_tracing_mode_is_refused(fresh: None) -> None:
    with pytest.raises(ConfigurationError, match="auto, on, off"):
        hooks.install_tracing("yes")


def test_without_opentelemetry_auto_is_off_and_on_is_refused() -> None:
    # A process where opentelemetry cannot be found, installed or not.
    code = (
        "import sys, importlib.util\n"
        "real = importlib.util.find_spec\n"
        "hidden = lambda n, p=None: None if n == 'opentelemetry' else real(n, p)\n"
        "importlib.util.find_spec = hidden\n"
        "from fastworker.client import hooks\n"
        "assert hooks.install_tracing('auto') is False\n"
        "hooks._tracing_decided = False\n"
        "try:\n"
        "    hooks.install_tracing('on')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print(','.join(n for n in sys.modules if n.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    refused, imported = result.stdout.splitlines()
    assert refused.startswith("ConfigurationError tracing is on but opentelemetry-api")
    assert imported == ""


def test_importing_the_client_imports_no_opentelemetry() -> None:
    code = (
        "import sys, fastworker.client\n"
        "print(','.join(n for n in sys.modules if n.startswith('opentelemetry')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


# --- the tracing hook, with the SDK's in-memory exporter -----------------------------


@pytest.fixture
def sdk() -> tuple[Any, Any]:
    """A tracer provider of the SDK of its own (not the global one, which another test
    of this process may have set) and its in-memory exporter."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def test_the_tracing_hook_links_submit_wait_and_run_in_one_trace(sdk: tuple[Any, Any]) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, StatusCode

    from fastworker.client.tracing import TracingHook

    provider, exporter = sdk
    hook = TracingHook(provider)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        submission = Submission("charge", "t1", TaskPriority.CRITICAL, {})
        hook.before_submit(submission)
        hook.after_submit(submission, None)
    assert submission.headers["traceparent"].startswith("00-")
    hook.dispatched(
        Dispatched("charge", "t1", TaskPriority.CRITICAL, 1, "w1", submission.headers, 10.0, 10.5)
    )
    run = TaskRun("charge", "t1", TaskPriority.CRITICAL, 2, "w1", submission.headers)
    hook.before_run(run)
    with tracer.start_as_current_span("inside"):
        pass
    run.status = TaskStatus.FAILED
    run.exception = KeyError("card")
    hook.after_run(run)
    assert trace.get_current_span() is trace.INVALID_SPAN  # the run's context was detached

    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"request", "send charge", "wait charge", "process charge", "inside"}
    trace_id = request.get_span_context().trace_id
    send, wait, process = spans["send charge"], spans["wait charge"], spans["process charge"]

    def ids(name: str) -> tuple[int, int]:
        context = spans[name].get_span_context()
        assert context is not None
        return context.trace_id, context.span_id

    assert {ids(name)[0] for name in spans} == {trace_id}

    def parent(name: str) -> int | None:
        link = spans[name].parent
        return None if link is None else link.span_id

    assert parent("send charge") == request.get_span_context().span_id
    assert parent("wait charge") == ids("send charge")[1]
    assert parent("process charge") == ids("send charge")[1]
    assert parent("inside") == ids("process charge")[1]
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert (wait.start_time, wait.end_time) == (10_000_000_000, 10_500_000_000)
    assert process.attributes is not None
    assert process.attributes["fastworker.task.attempt"] == 2
    assert process.attributes["fastworker.task.priority"] == "CRITICAL"
    assert process.status.status_code is StatusCode.ERROR
    (event,) = process.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "KeyError"


def test_a_refused_submission_ends_its_span_with_the_error(sdk: tuple[Any, Any]) -> None:
    from opentelemetry.trace import StatusCode

    from fastworker.client.tracing import TracingHook

    provider, exporter = sdk
    hook = TracingHook(provider)
    submission = Submission("charge", "t2", TaskPriority.NORMAL, {})
    hook.before_submit(submission)
    hook.after_submit(submission, ConfigurationError("refused"))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.parent is None  # no caller's span: the send starts the trace
