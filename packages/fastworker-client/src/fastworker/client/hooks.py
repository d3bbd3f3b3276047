"""Hooks: code that runs around every submission and every run of a task, in every
process of this one, the way Dramatiq's middleware and taskiq's middlewares do.

Subclass :class:`Hook`, override what you need, and register an instance with
:func:`add_hook` (in the web app for submissions, in a task module for runs: task
modules are imported by every subworker and by the control plane). Tracing is a hook
like any other (:mod:`fastworker.client.tracing`).

- ``before_submit`` and ``after_submit`` run in the caller's context (its asyncio task,
  or the thread that called a ``SyncClient``), around the request that submits the task;
  ``before_submit`` may add to :attr:`Submission.headers`, which travel with the task to
  every attempt of it.
- ``before_run`` and ``after_run`` run where the task runs, in its own context: for a
  sync task in its thread, for an async one in its asyncio task. A context variable set
  in ``before_run`` is what the task's code sees.
- ``dispatched`` runs in the control plane when a task leaves the queue for a worker.

A hook that raises is logged and skipped: an observer's bug never loses a task. With no
hook registered, the only cost on the hot path is one test of an empty tuple.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from typing import Any, Final

from fastworker.protocol import (
    MAX_HEADER_NAME,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    ConfigurationError,
    TaskPriority,
    TaskStatus,
)

__all__ = [
    "TRACING_MODES",
    "Dispatched",
    "Hook",
    "Submission",
    "TaskRun",
    "active_hooks",
    "add_hook",
    "check_headers",
    "install_tracing",
    "remove_hook",
]

log = logging.getLogger(__name__)

TRACING_MODES: Final = ("auto", "on", "off")
"""``auto``: trace when ``opentelemetry-api`` is installed; ``on``: it must be; ``off``."""


@dataclasses.dataclass(eq=False, slots=True)
class Submission:
    """One task as a client submits it, for the submit hooks."""

    name: str
    task_id: str
    priority: TaskPriority
    headers: dict[str, str]
    """Sent with the task; a ``before_submit`` hook may add to it (text only, at most
    ``MAX_HEADERS`` entries)."""
    state: dict[str, Any] = dataclasses.field(default_factory=dict[str, Any])
    """Each hook's own, from ``before_submit`` to ``after_submit``."""


@dataclasses.dataclass(eq=False, slots=True)
class TaskRun:
    """One attempt of a task, for the run hooks."""

    name: str
    task_id: str
    priority: TaskPriority
    attempt: int
    worker_id: str
    headers: dict[str, str]
    """As the submission carried them."""
    status: TaskStatus = TaskStatus.RUNNING
    """How the attempt ended, for ``after_run``: succeeded, failed or cancelled."""
    exception: BaseException | None = None
    """What the task raised, for ``after_run``; None when it returned (or did not run)."""
    retry: bool = False
    """For ``after_run``: the attempt failed and asked for another."""
    state: dict[str, Any] = dataclasses.field(default_factory=dict[str, Any])
    """Each hook's own, from ``before_run`` to ``after_run``."""


@dataclasses.dataclass(frozen=True)
class Dispatched:
    """A task that left the control plane's queue for a worker."""

    name: str
    task_id: str
    priority: TaskPriority
    attempt: int
    worker_id: str
    headers: dict[str, str]
    queued_at: float
    """When it was accepted (Unix time)."""
    dispatched_at: float
    """When it left the queue (Unix time)."""


class Hook:
    """Override the methods you need; the others do nothing."""

    def before_submit(self, submission: Submission) -> None:
        """Before the request that submits the task is sent."""

    def after_submit(self, submission: Submission, error: BaseException | None) -> None:
        """After the control plane accepted (``error`` None) or refused the task."""

    def before_run(self, run: TaskRun) -> None:
        """Before the task's function is called."""

    def after_run(self, run: TaskRun) -> None:
        """After it returned or raised (``run.status``, ``run.exception``)."""

    def dispatched(self, dispatched: Dispatched) -> None:
        """In the control plane, when a task is handed to a worker."""


_hooks: tuple[Hook, ...] = ()


def active_hooks() -> tuple[Hook, ...]:
    """The registered hooks, in the order they were added."""
    return _hooks


def add_hook(hook: Hook) -> None:
    """Register ``hook`` for this process (again: nothing happens)."""
    global _hooks
    if not isinstance(hook, Hook):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ConfigurationError(f"a hook must be a fastworker.client.hooks.Hook, not {hook!r}")
    if hook not in _hooks:
        _hooks = (*_hooks, hook)


def remove_hook(hook: Hook) -> None:
    """Unregister ``hook``; one that is not registered is ignored."""
    global _hooks
    _hooks = tuple(h for h in _hooks if h is not hook)


def call_hooks(hooks: tuple[Hook, ...], method: str, *args: object) -> None:
    """Call ``method`` of every hook; one that raises is logged and the next runs."""
    for hook in hooks:
        try:
            getattr(hook, method)(*args)
        except Exception:
            log.exception("hook %r failed in %s; going on without it", hook, method)


def check_headers(headers: object) -> dict[str, str]:
    """``headers`` if the wire can carry them: at most ``MAX_HEADERS`` text entries,
    names of 1 to ``MAX_HEADER_NAME`` characters, values of at most ``MAX_HEADER_VALUE``.

    Raises:
        ConfigurationError: anything else (checked here: the control plane refuses a frame
            that breaks the schema as a whole).
    """
    if not isinstance(headers, dict):
        raise ConfigurationError(f"headers must be a dict of str to str, not {headers!r}")
    if len(headers) > MAX_HEADERS:  # pyright: ignore[reportUnknownArgumentType]
        raise ConfigurationError(
            f"a task carries at most {MAX_HEADERS} headers, got {len(headers)}"  # pyright: ignore[reportUnknownArgumentType]
        )
    for name, value in headers.items():  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(name, str) or not 0 < len(name) <= MAX_HEADER_NAME:
            raise ConfigurationError(
                f"header name {name!r} must be text of 1 to {MAX_HEADER_NAME} characters"
            )
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
            raise ConfigurationError(
                f"header {name!r} must be text of at most {MAX_HEADER_VALUE} characters, "
                f"not {value!r:.80}"
            )
    return headers  # pyright: ignore[reportUnknownVariableType]


_tracing_decided = False


def install_tracing(mode: str = "auto") -> bool:
    """Register the OpenTelemetry hook once per process, as ``mode`` says (see
    :data:`TRACING_MODES`); whether tracing is on. The first call decides: a client,
    a subworker and the control plane each call it as they start.

    Raises:
        ConfigurationError: an unknown mode, or ``on`` without ``opentelemetry-api``.
    """
    global _tracing_decided
    if mode not in TRACING_MODES:
        raise ConfigurationError(f"tracing must be one of {', '.join(TRACING_MODES)}, not {mode!r}")
    if _tracing_decided:
        return any(type(h).__name__ == "TracingHook" for h in _hooks)
    if mode == "off":
        _tracing_decided = True
        return False
    # find_spec of a top-level name looks on the path without importing anything.
    if importlib.util.find_spec("opentelemetry") is None:
        if mode == "on":
            raise ConfigurationError(
                "tracing is on but opentelemetry-api is not installed: "
                "pip install 'fastworker-client[otel]'"
            )
        _tracing_decided = True
        return False
    try:
        from .tracing import TracingHook
    except ImportError as exc:
        if mode == "on":
            raise ConfigurationError(f"tracing is on but cannot start: {exc}") from exc
        log.warning("opentelemetry is installed but tracing cannot start: %s", exc)
        _tracing_decided = True
        return False
    _tracing_decided = True
    add_hook(TracingHook())
    return True
