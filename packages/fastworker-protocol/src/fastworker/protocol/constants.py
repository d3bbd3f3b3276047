"""Default addresses, timings and limits, in one place so every package agrees on them.

Every buffer in fastworker has a limit and every wait a bound; the defaults live here.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_CONTROL_PLANE_ADDRESS",
    "DEFAULT_DASHBOARD_HOST",
    "DEFAULT_DASHBOARD_PORT",
    "DEFAULT_DEAD_LETTERS",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_QUEUED_TASKS",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_RESULT_CACHE_SIZE",
    "DEFAULT_RESULT_TTL",
    "DEFAULT_TASK_HISTORY_SIZE",
    "ENV_PREFIX",
    "FEATURE_CANCEL",
    "FEATURE_DEAD_LETTERS",
    "FEATURE_DELAY",
    "FEATURE_LEASES",
    "FEATURE_METRICS",
    "FEATURE_RETRIES",
    "FEATURE_SCHEDULES",
    "MAX_FRAME_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_NAME",
    "MAX_HEADER_VALUE",
    "MAX_IDS_PER_MESSAGE",
    "MAX_MESSAGES_PER_FRAME",
    "MAX_PAYLOAD_BYTES",
    "MAX_SCHEDULES",
    "METRICS_BUCKETS",
    "METRICS_MAX_TASK_NAMES",
    "METRICS_OTHER_TASK",
]

ENV_PREFIX: Final = "FASTWORKER_"
"""Every command-line flag can also be set as ``FASTWORKER_<FLAG_NAME>``."""

DEFAULT_CONTROL_PLANE_ADDRESS: Final = "tcp://127.0.0.1:5555"
"""Where the control plane listens for clients and subworkers (loopback only by default)."""

DEFAULT_DASHBOARD_HOST: Final = "127.0.0.1"
DEFAULT_DASHBOARD_PORT: Final = 8080

MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
"""Largest frame any socket accepts; larger ones are refused before decoding."""

MAX_PAYLOAD_BYTES: Final = MAX_FRAME_BYTES - 64 * 1024
"""Largest encoded arguments (or result) of one task: one task must fit in one frame
with room for its envelope."""

MAX_MESSAGES_PER_FRAME: Final = 4096
"""Senders split larger batches; receivers refuse frames holding more. It also bounds
the tasks, assignments or outcomes listed in one message."""

MAX_IDS_PER_MESSAGE: Final = MAX_MESSAGES_PER_FRAME * 4
"""Task ids one message may list (watch, cancel, status, hand back); senders split
longer lists over several messages."""

MAX_HEADERS: Final = 32
"""Headers one task may carry (trace context and the like, written by hooks)."""

MAX_HEADER_NAME: Final = 128
"""Characters of one header's name."""

MAX_HEADER_VALUE: Final = 2048
"""Characters of one header's value: room for a W3C ``traceparent``, ``tracestate``
(at most 512) and a modest ``baggage``."""

DEFAULT_REQUEST_TIMEOUT: Final = 10.0
"""Seconds a client waits for the control plane to answer one request."""

DEFAULT_HEARTBEAT_INTERVAL: Final = 1.0
"""Seconds between heartbeats in each direction between a subworker and its control plane."""

DEFAULT_LEASE_TIMEOUT: Final = 3.0
"""Seconds without a heartbeat after which a subworker is presumed dead and its tasks
go back to the queue."""

DEFAULT_MAX_ATTEMPTS: Final = 3
"""Dispatches of one task whose subworkers keep dying before it fails with WorkerLostError."""

DEFAULT_DRAIN_TIMEOUT: Final = 3.0
"""Seconds a stopping subworker lets running tasks finish before handing them back."""

DEFAULT_RESULT_CACHE_SIZE: Final = 10_000
"""Finished results the control plane keeps (least recently used are evicted first)."""

DEFAULT_RESULT_TTL: Final = 3600.0
"""Seconds a finished result stays queryable."""

DEFAULT_TASK_HISTORY_SIZE: Final = 10_000
"""Recent tasks the control plane remembers for status queries and the dashboard."""

DEFAULT_DEAD_LETTERS: Final = 10_000
"""Failed tasks the dead-letter list keeps (the oldest are dropped past it, counted)."""

DEFAULT_MAX_QUEUED_TASKS: Final = 1_000_000
"""Tasks the control plane holds before refusing new ones with QueueFullError."""

DEFAULT_MAX_CONNECTIONS: Final = 4096
"""Connections (clients and subworkers) a control plane serves at once; past it, a new
one is refused with ConnectionLimitError. Each takes a file descriptor."""

FEATURE_LEASES: Final = "leases"
"""A subworker that lists its running tasks in each heartbeat (so every lease has its own
deadline) and announces a drain before it stops; a control plane that fences outcomes to
the lease holder and takes no work to a draining subworker. Protocol 1.1."""

FEATURE_DELAY: Final = "delay"
"""A control plane that holds a task until its ``countdown`` or ``eta`` (and reports it
``scheduled``). Protocol 1.1."""

FEATURE_RETRIES: Final = "retries"
"""A control plane that retries a task by its :class:`~fastworker.protocol.messages.RetryPolicy`,
and a subworker that reports which failures to retry. Protocol 1.1."""

FEATURE_CANCEL: Final = "cancel"
"""A subworker that stops a running task on :class:`~fastworker.protocol.messages.StopTasks`.
Protocol 1.1."""

FEATURE_SCHEDULES: Final = "schedules"
"""A control plane that fires periodic tasks and lists their schedules. Protocol 1.1."""

MAX_SCHEDULES: Final = 1000
"""The most periodic tasks one control plane fires (one reply lists them all)."""

FEATURE_DEAD_LETTERS: Final = "dead-letters"
"""A control plane that keeps failed tasks in a dead-letter list clients can list, retry
and purge. Protocol 1.1."""

FEATURE_METRICS: Final = "metrics"
"""A control plane that answers :class:`~fastworker.protocol.messages.MetricsQuery` with
its counters, histograms and gauges. Protocol 1.1."""

METRICS_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    60.0,
)
"""Upper bounds, in seconds, of the buckets of every duration histogram (queue wait, run
time, journal commit); one more bucket counts what is longer. A reply carries the bounds
it was counted with, so a receiver never assumes its own."""

METRICS_MAX_TASK_NAMES: Final = 1000
"""Task names the control plane keeps metrics for; the names past it share the series of
:data:`METRICS_OTHER_TASK`, so the number of series stays bounded."""

METRICS_OTHER_TASK: Final = "_other"
"""The ``task`` label of every name past :data:`METRICS_MAX_TASK_NAMES`."""
