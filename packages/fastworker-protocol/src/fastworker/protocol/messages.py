"""Every message fastworker sends, as tagged ``msgspec.Struct`` types.

Wire rules, the contract between all four packages:

- A frame is a :class:`Frame`: the protocol version, then a list of messages. Whenever
  several messages are ready for the same peer they travel in one frame.
- Structs encode as msgpack arrays (``array_like``); a tagged message's first element is
  its tag. Field order is therefore part of the format: a minor version may only
  append fields that have defaults, and a receiver ignores trailing fields it does not
  know. Anything else is a new major version.
- Task arguments and results are :class:`msgspec.Raw`: msgpack the sender encoded with
  :func:`fastworker.protocol.encode_value`. The control plane forwards them without
  decoding; only the subworker and the caller turn them back into values.
- Requests carry a ``request_id`` chosen by the sender, unique among its requests in
  flight; the answer carries the same id. Pushed messages (results, dispatches,
  heartbeats) carry none.
- Times are seconds since the Unix epoch, as floats.
"""

from __future__ import annotations

import enum
from typing import Annotated

from msgspec import Meta, Raw, Struct

from .constants import (
    MAX_HEADER_NAME,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_IDS_PER_MESSAGE,
    MAX_MESSAGES_PER_FRAME,
    MAX_SCHEDULES,
    METRICS_MAX_TASK_NAMES,
)
from .priority import TaskPriority

__all__ = [
    "EMPTY_ARGS",
    "EMPTY_KWARGS",
    "NIL",
    "Accepted",
    "CancelReply",
    "CancelTasks",
    "ClientHello",
    "Counters",
    "DeadLettersQuery",
    "DeadLettersReply",
    "Dispatch",
    "ErrorInfo",
    "ErrorReply",
    "Frame",
    "Goodbye",
    "HandBack",
    "Heartbeat",
    "Histogram",
    "HistoryQuery",
    "HistoryReply",
    "LatencyHistograms",
    "Message",
    "MetricsQuery",
    "MetricsReply",
    "Overview",
    "OverviewQuery",
    "PurgeDead",
    "PurgedDead",
    "QueueDepth",
    "Results",
    "RetriedDead",
    "RetryDead",
    "RetryPolicy",
    "ScheduleInfo",
    "SchedulesQuery",
    "SchedulesReply",
    "StatusQuery",
    "StatusReply",
    "StopTasks",
    "SubmitBatch",
    "SubmitTask",
    "TaskAssignment",
    "TaskInfo",
    "TaskMetrics",
    "TaskOutcome",
    "TaskRequest",
    "TaskStatus",
    "TasksDone",
    "WatchResults",
    "Watching",
    "Welcome",
    "WorkerHello",
    "WorkerInfo",
    "WorkerLoad",
    "WorkerState",
    "WorkerWelcome",
]

# Bounds checked while decoding, so a hostile or buggy peer cannot make us hold more.
TaskId = Annotated[str, Meta(min_length=1, max_length=128)]
TaskName = Annotated[str, Meta(min_length=1, max_length=256)]
PeerId = Annotated[str, Meta(min_length=1, max_length=128)]
Text = Annotated[str, Meta(max_length=64 * 1024)]
RequestId = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, Meta(ge=0)]
AuthToken = Annotated[str, Meta(max_length=1024)]
Count = Annotated[int, Meta(ge=0)]
IdList = Annotated[list[TaskId], Meta(max_length=MAX_IDS_PER_MESSAGE)]
NameList = Annotated[list[TaskName], Meta(max_length=MAX_MESSAGES_PER_FRAME)]
Headers = Annotated[
    dict[
        Annotated[str, Meta(min_length=1, max_length=MAX_HEADER_NAME)],
        Annotated[str, Meta(max_length=MAX_HEADER_VALUE)],
    ],
    Meta(max_length=MAX_HEADERS),
]
FeatureList = Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=64)]

EMPTY_ARGS = Raw(b"\x90")
"""``[]`` as msgpack: the encoded form of no positional arguments."""
EMPTY_KWARGS = Raw(b"\x80")
"""``{}`` as msgpack: the encoded form of no keyword arguments."""
NIL = Raw(b"\xc0")
"""``None`` as msgpack. msgspec cannot decode ``Raw | None``, so optional payloads
default to this instead; whether a payload is meaningful follows from the status."""


class TaskStatus(str, enum.Enum):
    """Where a task is in its life: scheduled (if it waits for a time) or queued, running
    (which it leaves back to queued if its worker is lost, or to scheduled for a retry),
    then one of the three final states."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    """Waiting in the control plane for its time: a countdown or ETA, or the backoff
    before a retry. Protocol 1.1: a 1.0 peer is told ``queued``."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Whether the task has finished and has an outcome."""
        return self in _FINAL_STATUSES


_FINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class WorkerState(str, enum.Enum):
    """A subworker as the control plane sees it."""

    CONNECTED = "connected"
    DRAINING = "draining"
    """Finishing what it runs; takes no new work."""
    LOST = "lost"
    """Stopped heartbeating or dropped its connection; its tasks were requeued."""


class _Body(Struct, array_like=True, kw_only=True, gc=False):
    """Untagged structs that travel inside messages."""


class _Message(Struct, array_like=True, kw_only=True, gc=False):
    """Base of every tagged message."""


# --- shared bodies ----------------------------------------------------------------------


class ErrorInfo(_Body):
    """An error as it crosses the wire. ``code`` names a class of the error tree
    (:func:`fastworker.protocol.error_from_code` rebuilds it); for a task that raised,
    ``remote_type`` is the exception's qualified class name and ``traceback`` its text."""

    code: Annotated[str, Meta(max_length=64)]
    message: Text
    remote_type: Annotated[str, Meta(max_length=256)] = ""
    traceback: Text = ""


class RetryPolicy(_Body):
    """How the control plane retries a task that raised. Protocol 1.1.

    Attempt ``n`` (counting from 1) that fails is followed, while fewer than ``retries``
    retries were made, by a wait of ``min(backoff_max, backoff * 2 ** (n - 1))`` seconds,
    or a uniformly random part of it with ``jitter`` ("full jitter")."""

    retries: Annotated[int, Meta(ge=1, le=10_000)]
    retry_on: Annotated[NameList, Meta(min_length=1)]
    """Qualified names of the exception classes that are retried (``module.QualName``;
    ``builtins.Exception`` for any); the subworker matches the raised exception's classes,
    base classes included."""
    backoff: Annotated[float, Meta(ge=0, le=1e9)] = 2.0
    backoff_max: Annotated[float, Meta(ge=0, le=1e9)] = 600.0
    jitter: bool = True


class TaskRequest(_Body):
    """One task as a client submits it."""

    name: TaskName
    args: Raw = EMPTY_ARGS
    """msgpack array of positional arguments."""
    kwargs: Raw = EMPTY_KWARGS
    """msgpack map of keyword arguments."""
    priority: TaskPriority = TaskPriority.NORMAL
    task_id: Annotated[str, Meta(max_length=128)] = ""
    """Chosen by the client, or empty for the control plane to assign one."""
    timeout: Annotated[float, Meta(gt=0)] | None = None
    """Seconds the task may run; None uses the task's own default."""
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    """Submitting again with a key the control plane still remembers returns the first
    task's id instead of queueing a second task."""
    notify: bool = True
    """Push the outcome to the submitting connection when the task finishes."""
    retry: RetryPolicy | None = None
    """Protocol 1.1: retry the task when it raises; ``None``: it fails at once."""
    countdown: Annotated[float, Meta(ge=0, le=1e9)] | None = None
    """Protocol 1.1: seconds after its acceptance before the task may start."""
    eta: Seconds | None = None
    """Protocol 1.1: when the task may start, as Unix time. At most one of ``countdown``
    and ``eta``; a time already past means at once."""
    headers: Headers = {}
    """Protocol 1.1: text the task carries to its run and nobody reads on the way: the
    W3C trace context (``traceparent``, ``tracestate``) and what submit hooks add. The
    control plane stores it with the task and passes it on in the assignment."""


class TaskOutcome(_Body):
    """How a task ended: a value, or an error."""

    task_id: TaskId
    status: TaskStatus
    value: Raw = NIL
    """msgpack of the return value, when ``status`` is SUCCEEDED."""
    error: ErrorInfo | None = None
    """Why it failed, when ``status`` is FAILED or CANCELLED."""
    worker_id: Annotated[str, Meta(max_length=128)] = ""
    started_at: Seconds | None = None
    finished_at: Seconds | None = None
    retry: bool = False
    """Protocol 1.1: the subworker asks for another attempt: the task raised an exception
    its retry policy names, or raised ``Retry``. The control plane decides whether one is
    left."""
    retry_delay: Annotated[float, Meta(ge=0, le=1e9)] | None = None
    """Protocol 1.1: seconds to wait before that attempt, when the task said (``Retry``);
    ``None`` uses the policy's backoff."""


class TaskAssignment(_Body):
    """One task leased to a subworker."""

    task_id: TaskId
    name: TaskName
    args: Raw = EMPTY_ARGS
    kwargs: Raw = EMPTY_KWARGS
    timeout: Annotated[float, Meta(gt=0)] | None = None
    attempt: Annotated[int, Meta(ge=1)] = 1
    """1 on the first dispatch; higher after a lost worker's lease was taken back."""
    retry_on: NameList = []
    """Protocol 1.1: the exception classes (qualified names) after which the subworker
    asks for a retry (:attr:`TaskOutcome.retry`); empty when no retry is left."""
    headers: Headers = {}
    """Protocol 1.1: the submission's :attr:`TaskRequest.headers`, as they came."""
    priority: TaskPriority = TaskPriority.NORMAL
    """Protocol 1.1: the task's priority, for the worker's hooks, traces and logs."""


class TaskInfo(_Body):
    """A task's record for status queries, history and the dashboard."""

    task_id: TaskId
    name: TaskName
    priority: TaskPriority
    status: TaskStatus
    queued_at: Seconds
    worker_id: Annotated[str, Meta(max_length=128)] = ""
    started_at: Seconds | None = None
    finished_at: Seconds | None = None
    attempts: Count = 0
    error: ErrorInfo | None = None
    args: Raw = NIL
    """Arguments, return value: :data:`NIL` unless the query asked for payloads."""
    kwargs: Raw = NIL
    value: Raw = NIL
    not_before: Seconds | None = None
    """Protocol 1.1: when a scheduled task becomes due (its ETA, or its next attempt), as
    Unix time."""
    retry_of: Annotated[str, Meta(max_length=128)] = ""
    """Protocol 1.1: the dead letter this task was submitted again for."""
    schedule: Annotated[str, Meta(max_length=256)] = ""
    """Protocol 1.1: the periodic task's schedule this task is a run of, by name."""
    fire_time: Seconds | None = None
    """Protocol 1.1: for a run of a schedule, the time it was due (Unix time); two runs
    of one schedule never share it."""


class ScheduleInfo(_Body):
    """A periodic task's schedule, for :class:`SchedulesReply`. Protocol 1.1."""

    name: TaskName
    """The task it runs (one schedule per task)."""
    schedule: Annotated[str, Meta(max_length=512)]
    """As text: ``cron:EXPRESSION;tz=ZONE`` or ``every:SECONDS``, with ``;missed=...``."""
    next_fire: Seconds | None = None
    last_fire: Seconds | None = None
    last_task_id: Annotated[str, Meta(max_length=128)] = ""
    runs: Count = 0
    """Runs fired since the control plane started."""
    skipped: Count = 0
    """Runs not fired since it started: missed while it was down (by the schedule's
    ``missed`` policy), or refused (a full queue)."""


class WorkerInfo(_Body):
    """A subworker's record for the admin view."""

    worker_id: PeerId
    state: WorkerState
    address: Annotated[str, Meta(max_length=256)]
    """The subworker's end of the connection, as the control plane sees it."""
    host: Annotated[str, Meta(max_length=256)]
    pid: Count
    load: Count
    """Tasks assigned to it now."""
    slots: Count
    """Its declared concurrency: it runs at most this many tasks at once."""
    connected_at: Seconds
    last_heartbeat: Seconds
    tasks_done: Count = 0
    tasks_failed: Count = 0
    task_names: NameList = []
    prefetch: Count = 0
    """Tasks it may hold beyond its slots, waiting to start (protocol 1.1): it is never
    given more than ``slots + prefetch`` tasks at once."""


class QueueDepth(_Body):
    """Tasks waiting in the queue, per priority."""

    critical: Count = 0
    high: Count = 0
    normal: Count = 0
    low: Count = 0

    @property
    def total(self) -> int:
        """All waiting tasks."""
        return self.critical + self.high + self.normal + self.low


class Counters(_Body):
    """Totals since the control plane started."""

    submitted: Count = 0
    succeeded: Count = 0
    failed: Count = 0
    cancelled: Count = 0
    requeued: Count = 0
    """Tasks taken back from a lost or draining worker and queued again."""
    running: Count = 0
    fenced: Count = 0
    """Outcomes and hand-backs refused because the sender did not hold the task's lease
    (protocol 1.1)."""
    scheduled: Count = 0
    """Tasks waiting for their time now: a countdown, an ETA or a retry's backoff
    (protocol 1.1)."""
    retried: Count = 0
    """Attempts that failed and were scheduled again (protocol 1.1)."""
    dead_letters: Count = 0
    """Tasks in the dead-letter list now (protocol 1.1)."""


class Histogram(_Body):
    """Durations counted into the buckets of :attr:`MetricsReply.buckets` (protocol 1.1).
    ``counts[i]`` counts those at most ``buckets[i]`` and above ``buckets[i - 1]``, the
    last one those above every bound: not cumulative, one more count than bounds."""

    counts: Annotated[list[Count], Meta(max_length=64)]
    sum: Annotated[float, Meta(ge=0)] = 0.0
    """Seconds, all observations together."""


class LatencyHistograms(_Body):
    """One task name's durations at one priority (protocol 1.1)."""

    priority: TaskPriority
    queue_wait: Histogram
    """From joining the queue (submitted, due, or taken back from a lost worker) to being
    dispatched; one observation per dispatch."""
    run: Histogram
    """From start to end of an attempt, as whoever ran it reported (one observation per
    outcome received, retried failures included)."""


class TaskMetrics(_Body):
    """Counts since the control plane started, and durations, of one task name (protocol
    1.1). Names past :data:`~fastworker.protocol.METRICS_MAX_TASK_NAMES` share the entry
    named :data:`~fastworker.protocol.METRICS_OTHER_TASK`."""

    name: TaskName
    submitted: Count = 0
    succeeded: Count = 0
    failed: Count = 0
    """Ended failed: every one also entered the dead-letter list."""
    retried: Count = 0
    """Attempts that failed and were scheduled again."""
    cancelled: Count = 0
    latency: Annotated[list[LatencyHistograms], Meta(max_length=len(TaskPriority))] = []
    """The priorities with any observation, most urgent first."""


class WorkerLoad(_Body):
    """A connected subworker's load, for :class:`MetricsReply` (protocol 1.1)."""

    worker_id: PeerId
    state: WorkerState
    load: Count
    slots: Count
    prefetch: Count = 0
    """As :attr:`WorkerInfo.prefetch`."""


# --- client -> control plane ------------------------------------------------------------


class ClientHello(_Message, tag="hello"):
    """First request on a client connection; answered by :class:`Welcome`."""

    request_id: RequestId
    client_name: Annotated[str, Meta(max_length=256)] = ""
    library_version: Annotated[str, Meta(max_length=64)] = ""
    auth_token: AuthToken = ""
    """The control plane's shared secret, when it has one."""


class SubmitTask(_Message, tag="submit"):
    """Queue one task; answered by :class:`Accepted`."""

    request_id: RequestId
    task: TaskRequest


class SubmitBatch(_Message, tag="submit_batch"):
    """Queue several tasks at once; answered by one :class:`Accepted`. Each task is
    accepted or the whole batch is refused."""

    request_id: RequestId
    tasks: Annotated[list[TaskRequest], Meta(min_length=1, max_length=MAX_MESSAGES_PER_FRAME)]


class WatchResults(_Message, tag="watch"):
    """Ask for these tasks' outcomes to be pushed to this connection as :class:`Results`,
    at once for finished tasks, later for the others. Answered by :class:`Watching`."""

    request_id: RequestId
    task_ids: IdList


class CancelTasks(_Message, tag="cancel"):
    """Cancel queued tasks; answered by :class:`CancelReply`."""

    request_id: RequestId
    task_ids: IdList


class StatusQuery(_Message, tag="status"):
    """Ask for tasks' records; answered by :class:`StatusReply`."""

    request_id: RequestId
    task_ids: IdList
    include_payloads: bool = False
    """Also return arguments and return values."""


class OverviewQuery(_Message, tag="overview"):
    """Ask for queue depth, subworkers, registered tasks and counters; answered by
    :class:`Overview`."""

    request_id: RequestId


class HistoryQuery(_Message, tag="history"):
    """Ask for a page of recent tasks, newest first; answered by :class:`HistoryReply`."""

    request_id: RequestId
    offset: Count = 0
    limit: Annotated[int, Meta(ge=1, le=1000)] = 50
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    name: Annotated[str, Meta(max_length=256)] | None = None


# --- control plane -> client ------------------------------------------------------------


class DeadLettersQuery(_Message, tag="dead_letters"):
    """A page of the dead-letter list, oldest first; answered by
    :class:`DeadLettersReply`. Protocol 1.1 (``FEATURE_DEAD_LETTERS``)."""

    request_id: RequestId
    offset: Count = 0
    limit: Annotated[int, Meta(ge=1, le=1000)] = 50


class RetryDead(_Message, tag="retry_dead"):
    """Submit dead letters again, each as a new task that names it in ``retry_of``, and
    take them off the list; ``all`` takes the oldest, as many as one reply lists.
    Answered by :class:`RetriedDead`. Protocol 1.1."""

    request_id: RequestId
    task_ids: IdList = []
    all: bool = False


class PurgeDead(_Message, tag="purge_dead"):
    """Drop dead letters (``all``: every one). Answered by :class:`PurgedDead`.
    Protocol 1.1."""

    request_id: RequestId
    task_ids: IdList = []
    all: bool = False


class SchedulesQuery(_Message, tag="schedules"):
    """Every periodic task's schedule; answered by :class:`SchedulesReply`. Protocol 1.1
    (``FEATURE_SCHEDULES``)."""

    request_id: RequestId


class MetricsQuery(_Message, tag="metrics"):
    """Counters, histograms and gauges for monitoring; answered by :class:`MetricsReply`.
    Protocol 1.1 (``FEATURE_METRICS``)."""

    request_id: RequestId


class Welcome(_Message, tag="welcome"):
    """Answer to :class:`ClientHello`."""

    request_id: RequestId
    control_plane_id: PeerId
    library_version: Annotated[str, Meta(max_length=64)] = ""
    task_names: NameList = []
    features: FeatureList = []
    """Protocol 1.1: what this control plane does beyond 1.0 for clients
    (:data:`~fastworker.protocol.FEATURE_DELAY`, :data:`~fastworker.protocol.FEATURE_RETRIES`);
    a client refuses to send an option it lacks."""


class Accepted(_Message, tag="accepted"):
    """The submitted tasks are stored and queued; their ids in submission order."""

    request_id: RequestId
    task_ids: IdList


class Results(_Message, tag="results"):
    """Outcomes of finished tasks, pushed to whoever asked for them."""

    outcomes: Annotated[list[TaskOutcome], Meta(max_length=MAX_MESSAGES_PER_FRAME)]


class Watching(_Message, tag="watching"):
    """Answer to :class:`WatchResults`. Ids in ``unknown`` will never get an outcome."""

    request_id: RequestId
    unknown: IdList = []


class CancelReply(_Message, tag="cancelled"):
    """Answer to :class:`CancelTasks`."""

    request_id: RequestId
    cancelled: IdList = []
    """Were queued or scheduled and will never run."""
    not_cancelled: IdList = []
    """Already finished, or running where they cannot be stopped (a 1.0 subworker)."""
    unknown: IdList = []
    stopping: IdList = []
    """Protocol 1.1: running; their subworkers were asked to stop them, and each ends
    ``cancelled`` (the outcome says how)."""


class StatusReply(_Message, tag="status_reply"):
    """Answer to :class:`StatusQuery`."""

    request_id: RequestId
    tasks: Annotated[list[TaskInfo], Meta(max_length=MAX_MESSAGES_PER_FRAME * 4)]
    unknown: IdList = []


class Overview(_Message, tag="overview_reply"):
    """Answer to :class:`OverviewQuery`: the state of the whole control plane."""

    request_id: RequestId
    control_plane_id: PeerId
    started_at: Seconds
    queue_depth: QueueDepth
    counters: Counters
    workers: Annotated[list[WorkerInfo], Meta(max_length=MAX_MESSAGES_PER_FRAME)]
    task_names: NameList
    library_version: Annotated[str, Meta(max_length=64)] = ""
    local_execution: bool = True
    """Whether the control plane runs tasks itself when no subworker is connected."""
    journal: Annotated[str, Meta(max_length=4096)] = ""
    """Where it journals: a file's absolute path, or ``:memory:`` (protocol 1.1; empty
    from a 1.0 control plane)."""
    journal_sync: Annotated[str, Meta(max_length=16)] = ""
    """The journal's sync mode, ``normal`` or ``full`` (protocol 1.1)."""
    journal_bytes: Count = 0
    """The journal's size on disk (protocol 1.1)."""


class HistoryReply(_Message, tag="history_reply"):
    """Answer to :class:`HistoryQuery`: one page, and how many tasks match in all."""

    request_id: RequestId
    total: Count
    tasks: Annotated[list[TaskInfo], Meta(max_length=1000)]


class DeadLettersReply(_Message, tag="dead_letters_reply"):
    """Answer to :class:`DeadLettersQuery`: one page, how many dead letters there are,
    and how many were dropped past the list's bound since the control plane started."""

    request_id: RequestId
    total: Count
    tasks: Annotated[list[TaskInfo], Meta(max_length=1000)]
    dropped: Count = 0


class RetriedDead(_Message, tag="retried_dead"):
    """Answer to :class:`RetryDead`: ``task_ids[i]`` was submitted again as
    ``new_ids[i]``; ``remaining`` dead letters are left after an ``all``."""

    request_id: RequestId
    task_ids: IdList = []
    new_ids: IdList = []
    unknown: IdList = []
    remaining: Count = 0


class PurgedDead(_Message, tag="purged_dead"):
    """Answer to :class:`PurgeDead`."""

    request_id: RequestId
    purged: Count = 0
    unknown: IdList = []


class SchedulesReply(_Message, tag="schedules_reply"):
    """Answer to :class:`SchedulesQuery`, sorted by name."""

    request_id: RequestId
    schedules: Annotated[list[ScheduleInfo], Meta(max_length=MAX_SCHEDULES)] = []


class MetricsReply(_Message, tag="metrics_reply"):
    """Answer to :class:`MetricsQuery`: counts since the control plane started and what
    holds now. Protocol 1.1."""

    request_id: RequestId
    buckets: Annotated[list[Annotated[float, Meta(gt=0)]], Meta(max_length=63)]
    """Upper bounds (seconds, increasing) of every :class:`Histogram` in this reply."""
    tasks: Annotated[list[TaskMetrics], Meta(max_length=METRICS_MAX_TASK_NAMES + 1)]
    """Per task name, sorted by name."""
    queue_depth: QueueDepth
    running: Count
    scheduled: Count
    """Waiting for their time: a countdown, an ETA or a retry's backoff."""
    requeued: Count
    """Tasks taken back from a lost or draining subworker since the start."""
    dead_letters: Count
    """In the dead-letter list now."""
    dead_letters_dropped: Count
    """Dropped past the dead-letter list's bound since the start."""
    workers: Annotated[list[WorkerLoad], Meta(max_length=MAX_MESSAGES_PER_FRAME)]
    """Connected subworkers, draining ones included."""
    journal_commits: Histogram | None = None
    """Durations of the journal's transactions; None without a journal."""


class ErrorReply(_Message, tag="error"):
    """A request was refused or could not be read. ``request_id`` is None when the
    frame was unreadable and the request it carried is unknown."""

    request_id: RequestId | None
    error: ErrorInfo


# --- subworker <-> control plane --------------------------------------------------------


class WorkerHello(_Message, tag="worker_hello"):
    """First request on a subworker connection; answered by :class:`WorkerWelcome`, or
    an :class:`ErrorReply` (for example a duplicate id)."""

    request_id: RequestId
    worker_id: PeerId
    concurrency: Annotated[int, Meta(ge=1, le=100_000)]
    task_names: NameList
    host: Annotated[str, Meta(max_length=256)] = ""
    pid: Count = 0
    library_version: Annotated[str, Meta(max_length=64)] = ""
    auth_token: AuthToken = ""
    """The control plane's shared secret, when it has one."""
    features: FeatureList = []
    """What this subworker does beyond protocol 1.0 (protocol 1.1): see
    :data:`fastworker.protocol.FEATURE_LEASES`."""
    prefetch: Annotated[int, Meta(ge=0, le=100_000)] = 0
    """Tasks to lease it beyond ``concurrency``, which wait there to start (protocol
    1.1). A control plane of protocol 1.0 ignores it and leases ``concurrency``."""


class WorkerWelcome(_Message, tag="worker_welcome"):
    """The control plane registered the subworker and tells it the timing to keep."""

    request_id: RequestId
    control_plane_id: PeerId
    heartbeat_interval: Annotated[float, Meta(gt=0)]
    lease_timeout: Annotated[float, Meta(gt=0)]
    features: FeatureList = []
    """What this control plane does beyond protocol 1.0 (protocol 1.1)."""


class Heartbeat(_Message, tag="heartbeat"):
    """Sent both ways between a subworker and its control plane; silence past the
    lease timeout means the other side is gone."""

    sent_at: Seconds
    load: Count = 0
    draining: bool = False
    """From a subworker: it is stopping, so it takes no new tasks (protocol 1.1)."""
    running: IdList = []
    """From a subworker with :data:`~fastworker.protocol.FEATURE_LEASES`: the tasks it
    runs, which renews their leases. One that runs more tasks than a message may list
    sends several heartbeats (protocol 1.1)."""


class Dispatch(_Message, tag="dispatch"):
    """Tasks leased to a subworker. It never receives more than its free slots."""

    tasks: Annotated[list[TaskAssignment], Meta(min_length=1, max_length=MAX_MESSAGES_PER_FRAME)]


class TasksDone(_Message, tag="done"):
    """Outcomes of tasks a subworker ran; each frees one slot."""

    outcomes: Annotated[list[TaskOutcome], Meta(min_length=1, max_length=MAX_MESSAGES_PER_FRAME)]


class HandBack(_Message, tag="hand_back"):
    """Leased tasks a draining subworker will not run (or stopped running); they go
    back to the front of their level without counting as an attempt."""

    task_ids: IdList


class StopTasks(_Message, tag="stop"):
    """Control plane to a subworker that listed :data:`~fastworker.protocol.FEATURE_CANCEL`:
    stop these running tasks (cancelled by a client). Each ends with a ``cancelled``
    outcome: an async task at its next ``await``, a sync one when it returns (it can see
    the request through ``is_cancelled()``). Protocol 1.1."""

    task_ids: IdList


class Goodbye(_Message, tag="goodbye"):
    """A peer is closing its connection on purpose."""

    reason: Text = ""


Message = (
    ClientHello
    | SubmitTask
    | SubmitBatch
    | WatchResults
    | CancelTasks
    | StatusQuery
    | OverviewQuery
    | HistoryQuery
    | DeadLettersQuery
    | RetryDead
    | PurgeDead
    | SchedulesQuery
    | MetricsQuery
    | Welcome
    | Accepted
    | Results
    | Watching
    | CancelReply
    | StatusReply
    | Overview
    | HistoryReply
    | DeadLettersReply
    | RetriedDead
    | PurgedDead
    | SchedulesReply
    | MetricsReply
    | ErrorReply
    | WorkerHello
    | WorkerWelcome
    | Heartbeat
    | Dispatch
    | TasksDone
    | HandBack
    | StopTasks
    | Goodbye
)
"""Any message that may appear in a frame."""


class Frame(Struct, array_like=True, gc=False):
    """What one NNG message carries: the sender's protocol version, how many frames it
    has received from this peer on this connection, and its messages.

    ``acked`` is the flow-control credit. The control plane's socket gives each peer a
    send queue of only two frames and drops what does not fit, so the control plane
    keeps at most two frames unacknowledged per peer, and clients and subworkers
    acknowledge every frame (in their next frame, or in an empty one).
    """

    major: int
    minor: int
    acked: Annotated[int, Meta(ge=0)]
    messages: Annotated[list[Message], Meta(max_length=MAX_MESSAGES_PER_FRAME)]
