"""The wire messages turned into plain data: what the templates render and the /api
twins return, so both always show the same thing."""

from __future__ import annotations

import base64
import datetime
import json
import math
from collections.abc import Mapping
from typing import Any, Final

from msgspec import Raw

from fastworker.protocol import TaskPriority, TaskStatus, decode_value
from fastworker.protocol import messages as m

__all__ = [
    "PRIORITIES",
    "STATUSES",
    "dead_letters_view",
    "overview_view",
    "pretty",
    "schedules_view",
    "short_id",
    "task_detail_view",
    "task_view",
]

PRIORITIES: Final = [p.name.lower() for p in TaskPriority]
"""Priority names in drain order: critical, high, normal, low."""
STATUSES: Final = [s.value for s in TaskStatus]
PRETTY_LIMIT: Final = 64 * 1024
"""Characters of a payload shown in the page; the JSON twin has all of it."""
_RETRYABLE: Final = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})
_CANCELLABLE: Final = frozenset({TaskStatus.QUEUED, TaskStatus.SCHEDULED, TaskStatus.RUNNING})


def overview_view(overview: m.Overview, now: float) -> dict[str, Any]:
    """The control plane's overview as plain data."""
    depth = overview.queue_depth
    depths = {
        "critical": depth.critical,
        "high": depth.high,
        "normal": depth.normal,
        "low": depth.low,
    }
    scale = max(max(depths.values()), 1)
    counters = overview.counters
    return {
        "control_plane_id": overview.control_plane_id,
        "started_at": overview.started_at,
        "uptime": max(now - overview.started_at, 0.0),
        "library_version": overview.library_version,
        "local_execution": overview.local_execution,
        "journal": {
            "path": overview.journal,
            "sync": overview.journal_sync,
            "bytes": overview.journal_bytes,
        },
        "queue_depth": {**depths, "total": depth.total},
        "queues": [
            {
                "priority": name,
                "depth": depths[name],
                "percent": round(100.0 * depths[name] / scale, 1),
            }
            for name in PRIORITIES
        ],
        "counters": {
            "submitted": counters.submitted,
            "running": counters.running,
            "succeeded": counters.succeeded,
            "failed": counters.failed,
            "cancelled": counters.cancelled,
            "requeued": counters.requeued,
            "fenced": counters.fenced,
            "scheduled": counters.scheduled,
            "retried": counters.retried,
            "dead_letters": counters.dead_letters,
        },
        "workers": [_worker_view(w, now) for w in overview.workers],
        "task_names": sorted(overview.task_names),
    }


def _worker_view(worker: m.WorkerInfo, now: float) -> dict[str, Any]:
    local = worker.address == "local"
    return {
        "worker_id": worker.worker_id,
        "state": worker.state.value,
        "local": local,
        "address": worker.address,
        "host": worker.host,
        "pid": worker.pid,
        "load": worker.load,
        "slots": worker.slots,
        "prefetch": worker.prefetch,
        "load_percent": round(100.0 * min(worker.load / worker.slots, 1.0), 1)
        if worker.slots
        else 0.0,
        "connected_at": worker.connected_at,
        "last_heartbeat": worker.last_heartbeat,
        "heartbeat_ago": max(now - worker.last_heartbeat, 0.0),
        "tasks_done": worker.tasks_done,
        "tasks_failed": worker.tasks_failed,
        "task_names": list(worker.task_names),
    }


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(end - start, 0.0)


def short_id(task_id: str) -> str:
    """A task id short enough for a table cell that still tells tasks apart, whether ids
    are random (uuid4) or a per-client prefix and a counter: both ends, ``7ee4…2882f4``."""
    if len(task_id) <= 12:
        return task_id
    return f"{task_id[:4]}\N{HORIZONTAL ELLIPSIS}{task_id[-6:]}"


def task_view(info: m.TaskInfo) -> dict[str, Any]:
    """One task's record as plain data (no payloads)."""
    error = info.error
    return {
        "task_id": info.task_id,
        "short_id": short_id(info.task_id),
        "name": info.name,
        "priority": info.priority.name.lower(),
        "status": info.status.value,
        "final": info.status.is_final,
        "worker_id": info.worker_id,
        "queued_at": info.queued_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "wait": _span(info.queued_at, info.started_at),
        "duration": _span(info.started_at, info.finished_at),
        "latency": _span(info.queued_at, info.finished_at),
        "attempts": info.attempts,
        "not_before": info.not_before,
        "retry_of": info.retry_of or None,
        "schedule": info.schedule or None,
        "fire_time": info.fire_time,
        "error": None
        if error is None
        else {
            "code": error.code,
            "message": error.message,
            "remote_type": error.remote_type,
            "traceback": error.traceback,
        },
        "can_cancel": info.status in _CANCELLABLE,
        "can_retry": info.status in _RETRYABLE,
    }


def dead_letters_view(reply: m.DeadLettersReply, offset: int, limit: int) -> dict[str, Any]:
    """A page of the dead-letter list as plain data, oldest first."""
    return {
        "offset": offset,
        "limit": limit,
        "total": reply.total,
        "dropped": reply.dropped,
        "tasks": [task_view(t) for t in reply.tasks],
    }


def schedules_view(schedules: list[m.ScheduleInfo]) -> dict[str, Any]:
    """The control plane's periodic tasks as plain data, in its order (by task name)."""
    return {
        "total": len(schedules),
        "schedules": [
            {
                "name": s.name,
                "schedule": s.schedule,
                "next_fire": s.next_fire,
                "last_fire": s.last_fire,
                "last_task_id": s.last_task_id or None,
                "last_task_short_id": short_id(s.last_task_id) if s.last_task_id else None,
                "runs": s.runs,
                "skipped": s.skipped,
            }
            for s in schedules
        ],
    }


def _decode(raw: Raw) -> tuple[bool, Any]:
    try:
        return True, decode_value(raw)
    except Exception as exc:  # a payload we cannot read is shown as such, not a crash
        return False, f"<undecodable payload: {exc}>"


def task_detail_view(info: m.TaskInfo) -> dict[str, Any]:
    """One task with its decoded arguments, keyword arguments and result (queried with
    ``include_payloads=True``)."""
    view = task_view(info)
    payloads: dict[str, Any] = {}
    ok_args, args = _decode(info.args)
    ok_kwargs, kwargs = _decode(info.kwargs)
    payloads["args"] = args
    payloads["kwargs"] = kwargs
    has_value = info.status is TaskStatus.SUCCEEDED
    ok_value, value = _decode(info.value) if has_value else (True, None)
    payloads["value"] = value
    view.update(
        args=args,
        kwargs=kwargs,
        value=value,
        has_value=has_value,
        args_text=pretty(args) if ok_args else str(args),
        kwargs_text=pretty(kwargs) if ok_kwargs else str(kwargs),
        value_text=pretty(value) if ok_value else str(value),
    )
    return view


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` made of JSON types, for display: bytes, dates and the rest as text."""
    if depth > 64:
        return "…"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
        shown = data[:256]
        try:
            text = shown.decode("utf-8")
            label = f"bytes({len(data)}): {text!r}"
        except UnicodeDecodeError:
            label = f"bytes({len(data)}) base64: {base64.b64encode(shown).decode()}"
        return label + ("…" if len(data) > len(shown) else "")
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        items: Mapping[Any, Any] = value  # pyright: ignore[reportUnknownVariableType]
        return {str(k): _plain(v, depth + 1) for k, v in items.items()}
    if isinstance(value, list | tuple):
        seq: list[Any] | tuple[Any, ...] = value  # pyright: ignore[reportUnknownVariableType]
        return [_plain(v, depth + 1) for v in seq]
    return repr(value)


def pretty(value: Any, limit: int = PRETTY_LIMIT) -> str:
    """Indented JSON-like text of a decoded payload, cut at ``limit`` characters. The
    templates escape it; nothing here is trusted markup."""
    text = json.dumps(_plain(value), indent=2, ensure_ascii=False)
    if len(text) > limit:
        return text[:limit] + f"\n… cut at {limit:,} of {len(text):,} characters"
    return text


def jsonable(value: Any) -> Any:
    """Fallback for the JSON encoder: values msgpack carries that JSON does not."""
    return _plain(value)
