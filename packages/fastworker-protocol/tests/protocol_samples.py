"""One sample of every message kind at each protocol version.

The golden files in ``golden/<major>.<minor>/`` were encoded from these samples. Do not
edit a sample of an existing version: the golden test proves that today's code still
decodes what peers of that version sent. A new field with a default decodes from old
bytes to its default, so an old sample stays equal. Changing what old bytes mean needs a
new major. A new minor version's samples are the previous ones with the new fields set.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw

from fastworker.protocol import (
    FEATURE_CANCEL,
    FEATURE_DELAY,
    FEATURE_LEASES,
    FEATURE_RETRIES,
    TaskPriority,
    TaskStatus,
    WorkerState,
)
from fastworker.protocol import messages as m

ARGS = Raw(b"\x92\x01\x02")  # [1, 2]
KWARGS = Raw(b"\x81\xa5scale\x03")  # {"scale": 3}
VALUE = Raw(b"\x03")  # 3
ERROR = m.ErrorInfo(
    code="task_failed",
    message="division by zero",
    remote_type="builtins.ZeroDivisionError",
    traceback="Traceback (most recent call last):\n  ...\nZeroDivisionError: division by zero\n",
)
REQUEST = m.TaskRequest(
    name="add",
    args=ARGS,
    kwargs=KWARGS,
    priority=TaskPriority.HIGH,
    task_id="5b0c3f0e2f0a4c5d9a8e7f6a5b4c3d2e",
    timeout=30.0,
    idempotency_key="order-42",
    notify=True,
)
OUTCOME_OK = m.TaskOutcome(
    task_id="5b0c3f0e2f0a4c5d9a8e7f6a5b4c3d2e",
    status=TaskStatus.SUCCEEDED,
    value=VALUE,
    worker_id="fast-1",
    started_at=1_790_000_000.25,
    finished_at=1_790_000_000.5,
)
OUTCOME_FAILED = m.TaskOutcome(
    task_id="a1", status=TaskStatus.FAILED, error=ERROR, worker_id="fast-2"
)
TASK_INFO = m.TaskInfo(
    task_id="5b0c3f0e2f0a4c5d9a8e7f6a5b4c3d2e",
    name="add",
    priority=TaskPriority.LOW,
    status=TaskStatus.SUCCEEDED,
    queued_at=1_790_000_000.0,
    worker_id="fast-1",
    started_at=1_790_000_000.25,
    finished_at=1_790_000_000.5,
    attempts=1,
    args=ARGS,
    kwargs=KWARGS,
    value=VALUE,
)
WORKER_INFO = m.WorkerInfo(
    worker_id="fast-1",
    state=WorkerState.CONNECTED,
    address="127.0.0.1:40312",
    host="web-1",
    pid=4242,
    load=2,
    slots=4,
    connected_at=1_790_000_000.0,
    last_heartbeat=1_790_000_001.0,
    tasks_done=10,
    tasks_failed=1,
    task_names=["add", "charge_card"],
)

SAMPLES: dict[str, m.Message] = {
    "hello": m.ClientHello(
        request_id=1, client_name="web-1:4242", library_version="0.1.0", auth_token="s3cret"
    ),
    "submit": m.SubmitTask(request_id=2, task=REQUEST),
    "submit_batch": m.SubmitBatch(request_id=3, tasks=[REQUEST, m.TaskRequest(name="noop")]),
    "watch": m.WatchResults(request_id=4, task_ids=["a1", "a2"]),
    "cancel": m.CancelTasks(request_id=5, task_ids=["a1"]),
    "status": m.StatusQuery(request_id=6, task_ids=["a1"], include_payloads=True),
    "overview": m.OverviewQuery(request_id=7),
    "history": m.HistoryQuery(
        request_id=8,
        offset=50,
        limit=25,
        status=TaskStatus.FAILED,
        priority=TaskPriority.CRITICAL,
        name="add",
    ),
    "welcome": m.Welcome(
        request_id=1, control_plane_id="cp-1", library_version="0.1.0", task_names=["add"]
    ),
    "accepted": m.Accepted(request_id=2, task_ids=["5b0c3f0e2f0a4c5d9a8e7f6a5b4c3d2e"]),
    "results": m.Results(outcomes=[OUTCOME_OK, OUTCOME_FAILED]),
    "watching": m.Watching(request_id=4, unknown=["a2"]),
    "cancelled": m.CancelReply(
        request_id=5, cancelled=["a1"], not_cancelled=["a3"], unknown=["a4"]
    ),
    "status_reply": m.StatusReply(request_id=6, tasks=[TASK_INFO], unknown=["zz"]),
    "overview_reply": m.Overview(
        request_id=7,
        control_plane_id="cp-1",
        started_at=1_790_000_000.0,
        queue_depth=m.QueueDepth(critical=1, high=2, normal=3, low=400),
        counters=m.Counters(
            submitted=500, succeeded=90, failed=3, cancelled=1, requeued=2, running=4
        ),
        workers=[WORKER_INFO],
        task_names=["add", "charge_card"],
        library_version="0.1.0",
        local_execution=False,
    ),
    "history_reply": m.HistoryReply(request_id=8, total=1, tasks=[TASK_INFO]),
    "error": m.ErrorReply(
        request_id=9, error=m.ErrorInfo(code="unknown_task", message="no task named 'ad'")
    ),
    "worker_hello": m.WorkerHello(
        request_id=1,
        worker_id="fast-1",
        concurrency=4,
        task_names=["add"],
        host="web-1",
        pid=4242,
        library_version="0.1.0",
        auth_token="s3cret",
    ),
    "worker_welcome": m.WorkerWelcome(
        request_id=1, control_plane_id="cp-1", heartbeat_interval=1.0, lease_timeout=3.0
    ),
    "heartbeat": m.Heartbeat(sent_at=1_790_000_001.0, load=2),
    "dispatch": m.Dispatch(
        tasks=[
            m.TaskAssignment(
                task_id="5b0c3f0e2f0a4c5d9a8e7f6a5b4c3d2e",
                name="add",
                args=ARGS,
                kwargs=KWARGS,
                timeout=30.0,
                attempt=2,
            )
        ]
    ),
    "done": m.TasksDone(outcomes=[OUTCOME_OK]),
    "hand_back": m.HandBack(task_ids=["a1", "a2"]),
    "goodbye": m.Goodbye(reason="draining"),
}

_OVERVIEW_1_0 = SAMPLES["overview_reply"]
assert isinstance(_OVERVIEW_1_0, m.Overview)
REQUEST_1_1 = msgspec.structs.replace(
    REQUEST,
    retry=m.RetryPolicy(
        retries=3,
        retry_on=["builtins.ConnectionError", "builtins.TimeoutError"],
        backoff=2.0,
        backoff_max=60.0,
        jitter=True,
    ),
    countdown=5.0,
    headers={
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=1",
    },
)
DELAYED_1_1 = m.TaskRequest(name="report", eta=1_790_000_600.0)
OUTCOME_RETRY_1_1 = msgspec.structs.replace(OUTCOME_FAILED, retry=True, retry_delay=5.0)
TASK_INFO_1_1 = msgspec.structs.replace(
    TASK_INFO,
    status=TaskStatus.SCHEDULED,
    attempts=2,
    error=ERROR,
    value=m.NIL,
    not_before=1_790_000_010.0,
    retry_of="4c1d",
    schedule="nightly_report",
    fire_time=1_789_959_600.0,
)

SAMPLES_1_1: dict[str, m.Message] = {
    **SAMPLES,
    "submit": m.SubmitTask(request_id=2, task=REQUEST_1_1),
    "submit_batch": m.SubmitBatch(request_id=3, tasks=[REQUEST_1_1, DELAYED_1_1]),
    "welcome": m.Welcome(
        request_id=1,
        control_plane_id="cp-1",
        library_version="0.2.0",
        task_names=["add"],
        features=[FEATURE_DELAY, FEATURE_RETRIES],
    ),
    "results": m.Results(outcomes=[OUTCOME_OK, OUTCOME_RETRY_1_1]),
    "status_reply": m.StatusReply(request_id=6, tasks=[TASK_INFO_1_1], unknown=["zz"]),
    "history_reply": m.HistoryReply(request_id=8, total=1, tasks=[TASK_INFO_1_1]),
    "dispatch": m.Dispatch(
        tasks=[
            m.TaskAssignment(
                task_id="5b0c3f0e2f0a4c5d9a8e7f6a5b4c3d2e",
                name="add",
                args=ARGS,
                kwargs=KWARGS,
                timeout=30.0,
                attempt=2,
                retry_on=["builtins.ConnectionError"],
                headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                priority=TaskPriority.HIGH,
            )
        ]
    ),
    "done": m.TasksDone(outcomes=[OUTCOME_RETRY_1_1]),
    "stop": m.StopTasks(task_ids=["a1", "a2"]),
    "dead_letters": m.DeadLettersQuery(request_id=20, offset=10, limit=20),
    "dead_letters_reply": m.DeadLettersReply(
        request_id=20, total=1, tasks=[TASK_INFO_1_1], dropped=3
    ),
    "retry_dead": m.RetryDead(request_id=21, task_ids=["a1"], all=False),
    "retried_dead": m.RetriedDead(
        request_id=21, task_ids=["a1"], new_ids=["b1"], unknown=["zz"], remaining=2
    ),
    "purge_dead": m.PurgeDead(request_id=22, all=True),
    "purged_dead": m.PurgedDead(request_id=22, purged=5, unknown=["zz"]),
    "schedules": m.SchedulesQuery(request_id=23),
    "schedules_reply": m.SchedulesReply(
        request_id=23,
        schedules=[
            m.ScheduleInfo(
                name="nightly_report",
                schedule="cron:0 3 * * *;tz=Europe/Berlin",
                next_fire=1_790_046_000.0,
                last_fire=1_789_959_600.0,
                last_task_id="5b0c3f0e2f0a4c5d9a8e7f6a5b4c3d2e",
                runs=1,
                skipped=2,
            ),
            m.ScheduleInfo(name="tick", schedule="every:30;missed=all"),
        ],
    ),
    "cancelled": m.CancelReply(
        request_id=5, cancelled=["a1"], not_cancelled=["a3"], unknown=["a4"], stopping=["a5"]
    ),
    "overview_reply": msgspec.structs.replace(
        _OVERVIEW_1_0,
        counters=msgspec.structs.replace(_OVERVIEW_1_0.counters, fenced=5, scheduled=7, retried=11),
        journal="/var/lib/fastworker/fastworker-journal.sqlite3",
        journal_sync="normal",
        journal_bytes=4_194_304,
    ),
    "worker_hello": m.WorkerHello(
        request_id=1,
        worker_id="fast-1",
        concurrency=4,
        task_names=["add"],
        host="web-1",
        pid=4242,
        library_version="0.2.0",
        auth_token="s3cret",
        features=[FEATURE_LEASES, FEATURE_CANCEL],
        prefetch=1,
    ),
    "worker_welcome": m.WorkerWelcome(
        request_id=1,
        control_plane_id="cp-1",
        heartbeat_interval=1.0,
        lease_timeout=3.0,
        features=[FEATURE_LEASES],
    ),
    "heartbeat": m.Heartbeat(sent_at=1_790_000_001.0, load=2, draining=True, running=["a1", "a2"]),
    "metrics": m.MetricsQuery(request_id=24),
    "metrics_reply": m.MetricsReply(
        request_id=24,
        buckets=[0.001, 0.01, 0.1, 1.0],
        tasks=[
            m.TaskMetrics(
                name="add",
                submitted=12,
                succeeded=7,
                failed=3,
                retried=2,
                cancelled=1,
                latency=[
                    m.LatencyHistograms(
                        priority=TaskPriority.HIGH,
                        queue_wait=m.Histogram(counts=[9, 2, 1, 0, 0], sum=0.125),
                        run=m.Histogram(counts=[0, 5, 4, 2, 1], sum=3.5),
                    )
                ],
            ),
            m.TaskMetrics(name="_other", submitted=1),
        ],
        queue_depth=m.QueueDepth(critical=1, high=2, normal=3, low=400),
        running=4,
        scheduled=7,
        requeued=2,
        dead_letters=3,
        dead_letters_dropped=1,
        workers=[
            m.WorkerLoad(
                worker_id="fast-1", state=WorkerState.DRAINING, load=2, slots=4, prefetch=1
            )
        ],
        journal_commits=m.Histogram(counts=[10, 20, 1, 0, 0], sum=0.25),
    ),
}

SAMPLES_BY_VERSION: dict[str, dict[str, m.Message]] = {"1.0": SAMPLES, "1.1": SAMPLES_1_1}
"""Every version's samples, keyed like the golden folders."""
