"""The log formats of the fastworker commands: every JSON field, from ``extra=``, from
the running task's context and from OpenTelemetry's current span."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastworker.client.logs import JSONFormatter, TaskContextFilter, configure_logging
from fastworker.client.running import enter_run, leave_run

RFC3339_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the ``fw.test`` logger writes through a JSON handler, like the commands'."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(TaskContextFilter())
    logger = logging.getLogger("fw.test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@dataclass
class _Assignment:
    task_id: str
    name: str


@dataclass
class _Run:
    """What the server's runner enters: the same attributes as its ``Run``."""

    assignment: _Assignment
    worker_id: str
    cancel_requested: bool = field(default=False)


def test_a_line_has_time_level_logger_and_message(lines: io.StringIO) -> None:
    logging.getLogger("fw.test").warning("disk %s is %d%% full", "sda", 93)
    (line,) = records(lines)
    assert list(line) == ["time", "level", "logger", "message"]
    assert RFC3339_UTC_MS.fullmatch(line["time"]), line["time"]
    assert line["level"] == "warning"
    assert line["logger"] == "fw.test"
    assert line["message"] == "disk sda is 93% full"


def test_the_time_is_the_record_s_in_utc_with_milliseconds() -> None:
    record = logging.LogRecord("fw.test", logging.INFO, __file__, 1, "m", (), None)
    record.created, record.msecs = 1_700_000_000.0421, 42.1
    line = json.loads(JSONFormatter().format(record))
    assert line["time"] == "2023-11-14T22:13:20.042Z"


def test_task_fields_and_extras_from_extra(lines: io.StringIO) -> None:
    logging.getLogger("fw.test").info(
        "charged",
        extra={
            "task_id": "t-1",
            "task_name": "charge",
            "worker_id": "w-1",
            "trace_id": "0" * 31 + "1",
            "span_id": "0" * 15 + "2",
            "amount": 12.5,
            "tags": ["a", "b"],
        },
    )
    (line,) = records(lines)
    assert line == {
        "time": line["time"],
        "level": "info",
        "logger": "fw.test",
        "message": "charged",
        "task_id": "t-1",
        "task_name": "charge",
        "worker_id": "w-1",
        "trace_id": "0" * 31 + "1",
        "span_id": "0" * 15 + "2",
        "amount": 12.5,
        "tags": ["a", "b"],
    }


def test_an_exception_is_its_traceback_text(lines: io.StringIO) -> None:
    try:
        raise ValueError("no such card")
    except ValueError:
        logging.getLogger("fw.test").exception("charge failed")
    (line,) = records(lines)
    assert line["level"] == "error"
    assert line["message"] == "charge failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: no such card")


def test_a_stack_is_its_text(lines: io.StringIO) -> None:
    logging.getLogger("fw.test").info("here", stack_info=True)
    (line,) = records(lines)
    assert line["stack"].startswith("Stack (most recent call last):")


class _Opaque:
    def __repr__(self) -> str:
        return "<Opaque 7>"


class _Broken:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_what_msgspec_cannot_encode_is_written_as_its_repr(lines: io.StringIO) -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    log = logging.getLogger("fw.test")
    log.info("one", extra={"thing": _Opaque(), "nested": {"k": [_Opaque()]}, "n": 3})
    log.info("two", extra={"broken": _Broken()})
    log.info("three", extra={"cycle": cycle, "n": 3})
    one, two, three = records(lines)
    assert one["thing"] == "<Opaque 7>"
    assert one["nested"] == {"k": ["<Opaque 7>"]}
    assert one["n"] == 3
    assert two["broken"] == "<_Broken object; repr() failed>"
    assert three["cycle"] == "[[...]]"  # no encoding at all: every extra as its repr()
    assert three["n"] == "3"


def test_the_running_task_s_fields_come_from_its_run(lines: io.StringIO) -> None:
    log = logging.getLogger("fw.test")
    token = enter_run(_Run(_Assignment("t-9", "resize"), "w-3"))
    try:
        log.info("resizing")
        log.info("given wins", extra={"task_id": "other"})
    finally:
        leave_run(token)
    log.info("after")
    inside, given, after = records(lines)
    assert (inside["task_id"], inside["task_name"], inside["worker_id"]) == ("t-9", "resize", "w-3")
    assert given["task_id"] == "other"
    assert given["task_name"] == "resize"
    assert "task_id" not in after
    assert "worker_id" not in after


def test_another_thread_has_its_own_run(lines: io.StringIO) -> None:
    """A sync task runs in a thread, with its run entered there: the loop thread's log
    lines are not the task's."""
    log = logging.getLogger("fw.test")
    entered, release = threading.Event(), threading.Event()

    def task() -> None:
        token = enter_run(_Run(_Assignment("t-thread", "sync_one"), "w-1"))
        entered.set()
        release.wait(10)
        log.info("in the thread")
        leave_run(token)

    thread = threading.Thread(target=task)
    thread.start()
    assert entered.wait(10)
    log.info("outside")
    release.set()
    thread.join(10)
    outside, inside = records(lines)
    assert "task_id" not in outside
    assert inside["task_id"] == "t-thread"


def test_trace_and_span_ids_of_the_current_span(lines: io.StringIO) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("fw.test")
    log = logging.getLogger("fw.test")
    with tracer.start_as_current_span("charge") as span:
        log.info("inside a span")
        context = span.get_span_context()
    log.info("outside any span")
    inside, outside = records(lines)
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert re.fullmatch(r"[0-9a-f]{32}", inside["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", inside["span_id"])
    assert "trace_id" not in outside  # an invalid span: omitted
    assert "span_id" not in outside


def test_logging_never_imports_opentelemetry() -> None:
    code = (
        "import logging, sys\n"
        "from fastworker.client.logs import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "logging.getLogger('x').info('hello')\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr)["message"] == "hello"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_text_is_the_lines_of_before(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("warning", "text", stream)
    logging.getLogger("fw.root.text").info("hidden")
    logging.getLogger("fw.root.text").warning("shown %d", 1, extra={"task_id": "t"})
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING fw\.root\.text shown 1\n", stream.getvalue()
    )


def test_configure_logging_again_replaces_its_handler(root_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    others = len(root_logger.handlers)
    configure_logging("info", "text", first)
    configure_logging("debug", "json", second)
    assert len(root_logger.handlers) == others + 1
    logging.getLogger("fw.root.again").debug("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "once"
