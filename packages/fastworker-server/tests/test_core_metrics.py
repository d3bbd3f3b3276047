"""The core's metrics, driven with a fake clock: exact counts per task name, durations in
the buckets they belong to, the bound on names, and the reply that carries them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_core_state import CLIENT, A, Conn, FlakyJournal, Harness

from fastworker.protocol import (
    METRICS_BUCKETS,
    METRICS_MAX_TASK_NAMES,
    METRICS_OTHER_TASK,
    TaskPriority,
    TaskStatus,
    WorkerState,
    decode_frame,
    encode_frame,
    encode_value,
)
from fastworker.protocol import messages as m
from fastworker.server.histograms import Histogram
from fastworker.server.journal import open_journal

RETRY_ONCE = m.RetryPolicy(retries=1, retry_on=["builtins.Exception"], backoff=2.0, jitter=False)


def _bucket(seconds: float) -> int:
    """Index of the bucket ``seconds`` belongs to, found by hand (no bisect)."""
    for index, bound in enumerate(METRICS_BUCKETS):
        if seconds <= bound:
            return index
    return len(METRICS_BUCKETS)


def _counts(*seconds: float) -> list[int]:
    counts = [0] * (len(METRICS_BUCKETS) + 1)
    for value in seconds:
        counts[_bucket(value)] += 1
    return counts


def _metrics(h: Harness) -> m.MetricsReply:
    """Ask as a client does; the reply must also survive the wire's own checks."""
    h.send(CLIENT, m.MetricsQuery(request_id=77))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.MetricsReply)]
    assert reply.request_id == 77
    (decoded,) = decode_frame(encode_frame([reply])).messages
    assert decoded == reply
    return reply


def _task(reply: m.MetricsReply, name: str) -> m.TaskMetrics:
    (entry,) = [entry for entry in reply.tasks if entry.name == name]
    return entry


def _latency(entry: m.TaskMetrics, priority: TaskPriority) -> m.LatencyHistograms:
    (latency,) = [latency for latency in entry.latency if latency.priority is priority]
    return latency


def _outcome(
    h: Harness,
    conn: Conn,
    task_id: str,
    status: TaskStatus = TaskStatus.SUCCEEDED,
    *,
    ran: float | None = None,
    retry: bool = False,
) -> None:
    """``task_id`` ends as ``status``; with ``ran``, the runner says it ran that long
    (durations in the tests sit well inside their buckets: the clock is a float)."""
    outcome = m.TaskOutcome(
        task_id=task_id,
        status=status,
        value=encode_value(3) if status is TaskStatus.SUCCEEDED else m.NIL,
        error=None
        if status is TaskStatus.SUCCEEDED
        else m.ErrorInfo(code="task_failed", message="no", remote_type="builtins.OSError"),
        started_at=None if ran is None else 5000.0,
        finished_at=None if ran is None else 5000.0 + ran,
        retry=retry,
    )
    h.send(conn, m.TasksDone(outcomes=[outcome]))


def test_the_buckets_count_up_to_and_including_their_bound() -> None:
    histogram = Histogram()
    for seconds in (0.0, 0.0005, 0.00050001, 0.001, 60.0, 60.5, -1.0):
        histogram.observe(seconds)
    counts = histogram.sample().counts
    assert counts[0] == 3  # 0, exactly the first bound, and a negative one taken as 0
    assert counts[1] == 2  # just past the first bound, and exactly the second
    assert counts[len(METRICS_BUCKETS) - 1] == 1  # exactly 60 s, the last bound
    assert counts[-1] == 1  # past every bound
    assert histogram.count == 7
    assert histogram.sum == pytest.approx(0.0005 + 0.00050001 + 0.001 + 60.0 + 60.5)


def test_queue_wait_and_run_time_per_name_and_priority_on_a_fake_clock() -> None:
    h = Harness()
    h.worker(A, "a", slots=1)
    first, second = h.submit("add", "add", priority=TaskPriority.HIGH)
    assert h.dispatched(A) == [first]  # at once: waited 0 s
    h.now += 0.003
    _outcome(h, A, first, ran=0.2)  # the runner's own clock: 0.2 s
    assert h.dispatched(A) == [second]  # after 3 ms in the queue
    h.now += 1.5
    _outcome(h, A, second)  # no times from the runner: from dispatch to the outcome here
    (third,) = h.submit("remote_only", priority=TaskPriority.LOW)
    assert h.dispatched(A) == [third]

    reply = _metrics(h)
    assert reply.buckets == list(METRICS_BUCKETS)
    add = _task(reply, "add")
    assert (add.submitted, add.succeeded, add.failed, add.retried, add.cancelled) == (2, 2, 0, 0, 0)
    assert [latency.priority for latency in add.latency] == [TaskPriority.HIGH]
    high = _latency(add, TaskPriority.HIGH)
    assert high.queue_wait.counts == _counts(0.0, 0.003)
    assert high.queue_wait.sum == pytest.approx(0.003)
    assert high.run.counts == _counts(0.2, 1.5)
    assert high.run.sum == pytest.approx(1.7)
    remote = _task(reply, "remote_only")
    assert (remote.submitted, remote.succeeded) == (1, 0)
    low = _latency(remote, TaskPriority.LOW)
    assert low.queue_wait.counts == _counts(0.0)
    assert sum(low.run.counts) == 0  # still running
    assert reply.running == 1
    assert reply.workers == [
        m.WorkerLoad(worker_id="a", state=WorkerState.CONNECTED, load=1, slots=1)
    ]


def test_retries_failures_cancellations_and_dead_letters_are_counted_by_name() -> None:
    h = Harness()
    h.worker(A, "a", slots=1)
    (flaky,) = h.submit("add", retry=RETRY_ONCE)
    assert h.dispatched(A) == [flaky]
    queued, later = h.submit("add", "add")
    (cancelled,) = h.submit("remote_only", countdown=30.0)
    h.send(CLIENT, m.CancelTasks(request_id=5, task_ids=[cancelled, later]))
    _outcome(h, A, flaky, TaskStatus.FAILED, ran=0.008, retry=True)  # retried in 2 s
    assert h.dispatched(A) == [queued]
    reply = _metrics(h)
    assert reply.scheduled == 1  # the retry, waiting for its backoff
    assert reply.queue_depth == m.QueueDepth()
    _outcome(h, A, queued, TaskStatus.FAILED, ran=0.02)  # no retry policy: fails for good
    h.wait(2, A)
    assert h.dispatched(A) == [flaky]  # its backoff is over
    _outcome(h, A, flaky, TaskStatus.FAILED, ran=0.04, retry=True)  # no retry left

    reply = _metrics(h)
    add = _task(reply, "add")
    assert (add.submitted, add.succeeded, add.failed, add.retried, add.cancelled) == (3, 0, 2, 1, 1)
    normal = _latency(add, TaskPriority.NORMAL)
    assert normal.run.counts == _counts(0.008, 0.02, 0.04)  # each attempt, the retried one too
    assert sum(normal.queue_wait.counts) == 3  # three dispatches
    remote = _task(reply, "remote_only")
    assert (remote.submitted, remote.cancelled, remote.latency) == (1, 1, [])
    assert (reply.dead_letters, reply.dead_letters_dropped, reply.scheduled) == (2, 0, 0)


def test_a_task_taken_back_from_a_lost_worker_waits_again_from_then() -> None:
    h = Harness()
    h.worker(A, "a", slots=1)
    (task_id,) = h.submit("add")
    assert h.dispatched(A) == [task_id]
    h.tick(4.0)  # A silent past the lease timeout: lost, its task requeued (no one to run it)
    b = Conn(12, "worker-b")
    h.now += 0.02
    h.worker(b, "b")
    assert h.dispatched(b) == [task_id]
    reply = _metrics(h)
    assert reply.requeued == 1
    wait = _latency(_task(reply, "add"), TaskPriority.NORMAL).queue_wait
    assert wait.counts == _counts(0.0, 0.02)  # from its requeue, not from its submission


def test_names_past_the_bound_share_one_entry() -> None:
    h = Harness()
    names = [f"job_{index:04}" for index in range(METRICS_MAX_TASK_NAMES + 200)]
    hello = m.WorkerHello(request_id=1, worker_id="many", concurrency=1, task_names=names)
    h.send(A, hello)
    h.sent(A)
    for chunk in range(0, len(names), 400):
        h.submit(*names[chunk : chunk + 400])
    h.submit(names[0], names[-1])  # a tracked name stays itself; a late one goes on sharing

    reply = _metrics(h)
    assert len(reply.tasks) == METRICS_MAX_TASK_NAMES + 1
    tracked = {entry.name for entry in reply.tasks} - {METRICS_OTHER_TASK}
    assert tracked == set(names[:METRICS_MAX_TASK_NAMES])
    assert _task(reply, names[0]).submitted == 2
    assert _task(reply, METRICS_OTHER_TASK).submitted == 201
    assert sum(entry.submitted for entry in reply.tasks) == len(names) + 2


def test_a_submission_the_journal_refused_is_not_counted() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal)
    journal.failing = True
    h.send(
        CLIENT,
        m.SubmitTask(request_id=1, task=m.TaskRequest(name="add", args=encode_value([1, 2]))),
    )
    (error,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.ErrorReply)]
    assert error.error.code == "storage"
    journal.failing = False
    h.submit("add")
    assert h.core.counters.submitted == 1
    assert _task(_metrics(h), "add").submitted == 1


def test_commit_times_come_from_the_journal_and_none_without_one(tmp_path: Path) -> None:
    assert _metrics(Harness()).journal_commits is None
    journal = open_journal(str(tmp_path / "journal.sqlite3"))
    try:
        h = Harness(journal=journal)
        commits = _metrics(h).journal_commits
        assert commits is not None
        before = sum(commits.counts)
        h.submit("add")  # parked (nobody runs it), stored in one commit
        h.submit("add")
        commits = _metrics(h).journal_commits
        assert commits is not None
        assert sum(commits.counts) == before + 2
        assert commits.sum > 0
    finally:
        journal.close()
