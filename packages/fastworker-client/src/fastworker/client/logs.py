"""Logging for every fastworker command: ``--log-format text`` or ``json``.

:func:`configure_logging` is the one place a command sets up logging. ``text`` is a
human-readable line (time, level, logger, message). ``json`` is one JSON object per line
on stderr, encoded with msgspec:

- ``time`` (RFC 3339, UTC, milliseconds), ``level`` (lower case), ``logger``,
  ``message``;
- ``task_id``, ``task_name``, ``worker_id`` of the task the line is about: given with
  ``extra=``, or else taken from the task whose code is running where the line was
  emitted (:func:`fastworker.client.running.current_run`), so a task's own log calls
  carry them without asking;
- ``trace_id`` (32 hex digits) and ``span_id`` (16) of OpenTelemetry's current span,
  only when the process has imported ``opentelemetry`` already (this module never
  imports it) and the span is valid;
- every other ``extra=`` field, as msgspec encodes it; a value msgspec cannot encode is
  written as its ``repr()`` rather than refused, since a log line must not be lost;
- ``exception`` (the formatted traceback) and ``stack`` when present.

The fields the context supplies are added by :class:`TaskContextFilter` on the handler,
so they are read in the thread and asyncio task that emitted the line. A handler that
formats elsewhere (a ``QueueHandler``) needs the filter on itself.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, TextIO

import msgspec

from .running import current_run

__all__ = [
    "LOG_FORMATS",
    "TEXT_FORMAT",
    "JSONFormatter",
    "LogFormat",
    "TaskContextFilter",
    "configure_logging",
    "report_failure",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
"""The ``text`` format: what every command printed before ``--log-format`` existed."""

_CONTEXT_FIELDS = ("task_id", "task_name", "worker_id", "trace_id", "span_id")
_RECORD_ATTRIBUTES = frozenset(
    (*vars(logging.LogRecord("", 0, "", 0, "", (), None)), "message", "asctime", "taskName")
)
"""What every LogRecord has; the rest of a record's attributes are ``extra=`` fields."""


class TaskContextFilter(logging.Filter):
    """Adds the running task's ``task_id``, ``task_name`` and ``worker_id``, and the
    current OpenTelemetry span's ``trace_id`` and ``span_id``, to each record that does
    not carry them already. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = vars(record)
        run: Any = current_run()
        if run is not None:
            assignment: Any = getattr(run, "assignment", None)
            for name, value in (
                ("task_id", getattr(assignment, "task_id", None)),
                ("task_name", getattr(assignment, "name", None)),
                ("worker_id", getattr(run, "worker_id", None) or None),
            ):
                if value is not None and name not in fields:
                    fields[name] = value
        if "trace_id" not in fields:
            span = _current_span_ids()
            if span is not None:
                fields["trace_id"], fields["span_id"] = span
        return True


def _current_span_ids() -> tuple[str, str] | None:
    """(trace id, span id) of OpenTelemetry's current span, if it is in use and valid."""
    trace: Any = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None  # not imported by anyone: tracing is not in use, and we do not start it
    context: Any = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object; repr() failed>"


class JSONFormatter(logging.Formatter):
    """One JSON object per record (see the module's description of the fields)."""

    _encoder = msgspec.json.Encoder(enc_hook=_repr)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _rfc3339(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = vars(record)
        for name in _CONTEXT_FIELDS:
            value = fields.get(name)
            if value is not None:
                line[name] = value
        extras = {
            name: value
            for name, value in fields.items()
            if name not in _RECORD_ATTRIBUTES and name not in line
        }
        line.update(extras)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return self._encoder.encode(line).decode()
        except Exception:
            # Something the hook cannot reach (a cycle, say): every extra as its repr().
            line.update((name, _repr(value)) for name, value in extras.items())
            return self._encoder.encode(line).decode()


def _rfc3339(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[TextIO]
else:  # subscriptable at run time only from Python 3.11
    _StreamHandler = logging.StreamHandler


class _CommandHandler(_StreamHandler):
    """The handler :func:`configure_logging` installs, told apart from others' handlers."""


def configure_logging(
    level: str, log_format: LogFormat = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Log at ``level`` and above to ``stream`` (stderr) in ``log_format``, through one
    handler on the root logger. Calling it again replaces the handler it installed;
    handlers others installed stay."""
    handler = _CommandHandler(sys.stderr if stream is None else stream)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
        handler.addFilter(TaskContextFilter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [old for old in root.handlers if isinstance(old, _CommandHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def report_failure(logger: logging.Logger, log_format: str, text: str) -> None:
    """A command's last word on why it stopped: the plain stderr line it always was,
    or, with ``json``, an error record like every other line, so stderr stays JSON."""
    if log_format == "json":
        logger.error("%s", text)
    else:
        print(text, file=sys.stderr)
