"""Retries and scheduled tasks in the control plane's core, with a fake clock: backoff
and its cap, jitter, when a task becomes due, cancelling and restoring a scheduled task,
and what a protocol 1.0 peer is told."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_core_state import CLIENT, A, FlakyJournal, Harness, _restart  # pyright: ignore[reportPrivateUsage]

from fastworker.protocol import (
    FEATURE_CANCEL,
    FEATURE_DEAD_LETTERS,
    FEATURE_DELAY,
    FEATURE_LEASES,
    FEATURE_METRICS,
    FEATURE_RETRIES,
    FEATURE_SCHEDULES,
    TaskPriority,
    TaskStatus,
)
from fastworker.protocol import messages as m
from fastworker.server.core.records import TaskState
from fastworker.server.core.timers import Timers, backoff

POLICY = m.RetryPolicy(retries=3, retry_on=["builtins.Exception"], backoff=2.0, backoff_max=5.0)


def _fail(
    h: Harness, conn: object, task_id: str, *, retry: bool = True, delay: float | None = None
) -> None:
    outcome = m.TaskOutcome(
        task_id=task_id,
        status=TaskStatus.FAILED,
        error=m.ErrorInfo(code="task_failed", message="flaky", remote_type="builtins.OSError"),
        retry=retry,
        retry_delay=delay,
        finished_at=h.now,  # wall_offset is 0 in the harness
    )
    h.send(conn, m.TasksDone(outcomes=[outcome]))  # pyright: ignore[reportArgumentType]


# --- backoff ------------------------------------------------------------------------------


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    steady = m.RetryPolicy(
        retries=100, retry_on=["builtins.Exception"], backoff=0.5, backoff_max=30.0, jitter=False
    )
    rng = random.Random(1)
    assert [backoff(steady, n, rng) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(steady, 10_000, rng) == 30.0  # no overflow far past the cap
    never = m.RetryPolicy(retries=2, retry_on=["builtins.Exception"], backoff=0.0, jitter=False)
    assert backoff(never, 5, rng) == 0.0


def test_full_jitter_stays_between_zero_and_the_capped_backoff() -> None:
    jittered = m.RetryPolicy(
        retries=100, retry_on=["builtins.Exception"], backoff=1.0, backoff_max=8.0, jitter=True
    )
    rng = random.Random(42)
    for retry, ceiling in ((1, 1.0), (3, 4.0), (9, 8.0)):
        draws = [backoff(jittered, retry, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.9 * ceiling  # spread over the whole range, not stuck low
        assert min(draws) < 0.1 * ceiling


def test_timers_release_in_due_order_and_forget_what_was_cancelled() -> None:
    counters = m.Counters()
    timers = Timers(counters)
    h = Harness()
    tasks: dict[str, TaskState] = {}
    for label, due in (("late", 30.0), ("early", 10.0), ("tie-1", 20.0), ("tie-2", 20.0)):
        (task_id,) = h.submit("add")
        tasks[label] = h.core.admission.active[task_id]
        h.core.scheduler.unqueue(tasks[label])
        timers.add(tasks[label], due)
    assert (len(timers), counters.scheduled, timers.next_due()) == (4, 4, 10.0)
    assert timers.discard(tasks["early"])
    assert not timers.discard(tasks["early"])
    assert timers.next_due() == 20.0
    assert timers.pop_due(19.9) == []
    assert timers.pop_due(25.0) == [tasks["tie-1"], tasks["tie-2"]]
    assert (len(timers), counters.scheduled) == (1, 1)
    assert timers.pop_due(1e9) == [tasks["late"]]
    assert timers.next_due() is None


# --- retries -------------------------------------------------------------------------------


def test_a_failed_attempt_waits_its_backoff_in_the_control_plane_then_runs_again() -> None:
    h = Harness()
    h.worker(A, "a")
    steady = m.RetryPolicy(
        retries=2, retry_on=["builtins.OSError"], backoff=2.0, backoff_max=60.0, jitter=False
    )
    (task_id,) = h.submit("add", retry=steady)
    (first,) = [msg for msg in h.sent(A) if isinstance(msg, m.Dispatch)]
    assert first.tasks[0].retry_on == ["builtins.OSError"]
    _fail(h, A, task_id)
    info = h.status(task_id)
    assert (info.status, info.attempts, info.not_before) == (TaskStatus.SCHEDULED, 1, h.now + 2.0)
    assert info.error is not None
    assert info.error.message == "flaky"  # the last error shows while it waits
    assert h.core.counters.scheduled == 1
    assert h.core.next_due() == h.now + 2.0
    assert not [msg for msg in h.sent(CLIENT) if isinstance(msg, m.Results)]  # still waiting

    h.heartbeat(A)
    h.tick(1.9)
    assert h.dispatched(A) == []  # the slot is free, but it is not time yet
    h.tick(0.1)
    (second,) = [msg for msg in h.sent(A) if isinstance(msg, m.Dispatch)]
    assert (second.tasks[0].attempt, second.tasks[0].retry_on) == (2, ["builtins.OSError"])
    _fail(h, A, task_id)
    h.wait(3, A)
    assert h.dispatched(A) == []
    h.wait(1, A)  # 2 * 2 ** 1 s after the second failure
    (third,) = [msg for msg in h.sent(A) if isinstance(msg, m.Dispatch)]
    assert third.tasks[0].retry_on == []  # the last attempt: nothing more to ask for
    h.done(A, task_id, value=9)
    (pushed,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.Results)]
    assert pushed.outcomes[0].status is TaskStatus.SUCCEEDED  # the only result pushed
    info = h.status(task_id)
    assert (info.status, info.attempts) == (TaskStatus.SUCCEEDED, 3)
    assert h.core.counters.retried == 2


def test_out_of_retries_or_not_asked_to_retry_fails_for_good() -> None:
    h = Harness()
    h.worker(A, "a")
    once = m.RetryPolicy(retries=1, retry_on=["builtins.OSError"], jitter=False, backoff=1.0)
    exhausted, unmatched, no_policy = h.submit("add", "add", "add", retry=once)
    h.core.admission.active[no_policy].retry = None
    assert h.dispatched(A) == [exhausted]
    _fail(h, A, exhausted)  # its one retry, in 1 s; meanwhile the next runs
    assert h.dispatched(A) == [unmatched]
    _fail(h, A, unmatched, retry=False)  # its exception is not in retry_on
    assert h.dispatched(A) == [no_policy]
    _fail(h, A, no_policy)  # Retry raised, but the task has no retries
    h.wait(1, A)
    assert h.dispatched(A) == [exhausted]
    _fail(h, A, exhausted)
    for task_id in (exhausted, unmatched, no_policy):
        info = h.status(task_id)
        assert info.status is TaskStatus.FAILED, task_id
        assert info.error is not None
        assert info.error.remote_type == "builtins.OSError"
    assert h.core.counters.retried == 1


def test_a_task_may_name_its_own_delay_and_a_lost_worker_is_its_own_rule() -> None:
    h = Harness(max_attempts=2)
    h.worker(A, "a")
    (task_id,) = h.submit("add", retry=POLICY)
    assert h.dispatched(A) == [task_id]
    _fail(h, A, task_id, delay=30.0)  # raise Retry(countdown=30)
    assert h.status(task_id).not_before == h.now + 30.0
    h.wait(30, A)
    assert h.dispatched(A) == [task_id]
    # Two retries used, then the worker is lost twice: --max-attempts counts losses only.
    h.tick(LEASE_SILENCE)
    assert h.status(task_id).status is TaskStatus.QUEUED
    a_again = type(A)(30, "worker-a-again")
    h.worker(a_again, "a")
    assert h.dispatched(a_again) == [task_id]
    h.tick(LEASE_SILENCE)
    info = h.status(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.error is not None
    assert info.error.code == "worker_lost"


OLD = type(A)(31, "worker-old")
"""A subworker without FEATURE_CANCEL."""
LEASE_SILENCE = 4.0
"""Past the harness's lease timeout of 3 s: a silent subworker is lost."""


# --- scheduled tasks -----------------------------------------------------------------------


def test_a_countdown_holds_a_task_until_due_then_strict_priority_decides() -> None:
    h = Harness()
    h.worker(A, "a")
    blocker = h.submit("add")[0]
    assert h.dispatched(A) == [blocker]
    later_low = h.submit("add", priority=TaskPriority.LOW, countdown=5.0)[0]
    later_critical = h.submit("add", priority=TaskPriority.CRITICAL, countdown=10.0)[0]
    now_high = h.submit("add", priority=TaskPriority.HIGH)[0]
    now_normal = h.submit("add")[0]
    assert h.status(later_low).status is TaskStatus.SCHEDULED
    depth = h.core.overview().queue_depth
    assert (depth.low, depth.critical, depth.high, depth.normal) == (0, 0, 1, 1)
    assert h.core.overview().counters.scheduled == 2
    for _ in range(10):  # both fall due; the worker is still busy with the blocker
        h.heartbeat(A, blocker)
        h.tick(1.0)
    assert h.status(later_low).status is TaskStatus.QUEUED
    h.done(A, blocker)
    order: list[str] = []
    for _ in range(4):
        (task_id,) = h.dispatched(A)
        order.append(task_id)
        h.done(A, task_id)
    assert order == [later_critical, now_high, now_normal, later_low]


def test_an_eta_in_the_past_runs_at_once_and_a_scheduled_task_can_be_cancelled() -> None:
    h = Harness()
    h.worker(A, "a", slots=2)
    past = h.submit("add", eta=h.now - 60.0)[0]
    assert h.dispatched(A) == [past]
    future = h.submit("add", eta=h.now + 3600.0)[0]
    h.send(CLIENT, m.CancelTasks(request_id=5, task_ids=[future]))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.CancelReply)]
    assert reply.cancelled == [future]
    assert h.status(future).status is TaskStatus.CANCELLED
    assert h.core.counters.scheduled == 0
    assert h.core.next_due() is None
    h.tick(3600.0)
    assert h.dispatched(A) == []


def test_both_a_countdown_and_an_eta_are_refused() -> None:
    h = Harness()
    request = m.TaskRequest(name="add", countdown=1.0, eta=h.now + 5)
    error = h.refused(CLIENT, m.SubmitTask(request_id=1, task=request))
    assert error.code == "invalid_arguments"


def test_a_scheduled_task_and_its_retries_survive_a_restart() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal)
    h.worker(A, "a")
    soon = h.submit("add", countdown=20.0)[0]
    overdue = h.submit("add", countdown=10.0)[0]
    retried = h.submit("add", retry=POLICY)[0]
    assert h.dispatched(A) == [retried]
    _fail(h, A, retried, delay=100.0)
    h = _restart(h, journal)  # 30 s later
    # 20 s and 10 s after submission passed while it was down: both are due at once.
    assert h.status(soon).status is TaskStatus.QUEUED
    assert h.status(overdue).status is TaskStatus.QUEUED
    assert h.core.counters.scheduled == 1
    info = h.status(retried)
    assert (info.status, info.attempts, info.error is not None) == (TaskStatus.SCHEDULED, 1, True)
    h.worker(A, "a", slots=3)
    assert h.dispatched(A) == [overdue, soon]  # in the order they fell due
    h.done(A, overdue)
    h.done(A, soon)
    h.wait(69, A)
    assert h.dispatched(A) == []
    h.wait(1, A)  # 100 s after the failure, 30 of them while the control plane was down
    assert h.dispatched(A) == [retried]
    assert h.core.admission.active[retried].retries_used == 1


# --- what peers are told ------------------------------------------------------------------


def test_clients_hear_of_the_features_and_a_1_0_peer_never_of_scheduled() -> None:
    h = Harness()
    h.send(CLIENT, m.ClientHello(request_id=1))
    (welcome,) = h.sent(CLIENT)
    assert isinstance(welcome, m.Welcome)
    assert set(welcome.features) == {
        FEATURE_DELAY,
        FEATURE_RETRIES,
        FEATURE_DEAD_LETTERS,
        FEATURE_SCHEDULES,
        FEATURE_METRICS,
    }
    (task_id,) = h.submit("add", countdown=60.0)
    assert h.status(task_id).status is TaskStatus.SCHEDULED
    h.core.peers.speaks_minor(CLIENT.id, 0)
    assert h.status(task_id).status is TaskStatus.QUEUED
    h.send(CLIENT, m.HistoryQuery(request_id=2))
    (page,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.HistoryReply)]
    assert [t.status for t in page.tasks] == [TaskStatus.QUEUED]
    h.core.disconnected(CLIENT.id, h.now)
    assert h.status(task_id).status is TaskStatus.SCHEDULED  # a new connection on that id


@pytest.mark.parametrize("countdown", [0.0, 1e-9])
def test_a_countdown_of_nothing_queues_at_once(countdown: float) -> None:
    h = Harness()
    (task_id,) = h.submit("add", countdown=countdown)
    assert h.status(task_id).status is (
        TaskStatus.QUEUED if countdown == 0 else TaskStatus.SCHEDULED
    )


# --- cancelling a running task --------------------------------------------------------------


def test_cancelling_a_running_task_asks_a_subworker_that_can_stop_it() -> None:
    h = Harness()
    for conn, worker_id, features in (
        (A, "a", [FEATURE_LEASES, FEATURE_CANCEL]),
        (OLD, "old", [FEATURE_LEASES]),
    ):
        hello = m.WorkerHello(
            request_id=1, worker_id=worker_id, concurrency=1, task_names=["add"], features=features
        )
        h.send(conn, hello)
        h.sent(conn)
    old = OLD
    stoppable, unstoppable = h.submit("add", "add")
    running_on = {tid: h.status(tid).worker_id for tid in (stoppable, unstoppable)}
    if running_on[stoppable] != "a":
        stoppable, unstoppable = unstoppable, stoppable
    h.sent(A)
    h.sent(old)
    h.send(CLIENT, m.CancelTasks(request_id=7, task_ids=[stoppable, unstoppable]))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.CancelReply)]
    assert (reply.stopping, reply.not_cancelled, reply.cancelled) == (
        [stoppable],
        [unstoppable],
        [],
    )
    assert h.sent(A) == [m.StopTasks(task_ids=[stoppable])]
    assert h.sent(old) == []  # a subworker without FEATURE_CANCEL is never sent one
    assert h.status(stoppable).status is TaskStatus.RUNNING  # until its outcome comes
    stopped = m.TaskOutcome(
        task_id=stoppable,
        status=TaskStatus.CANCELLED,
        error=m.ErrorInfo(code="task_cancelled", message="cancelled while it ran"),
    )
    h.send(A, m.TasksDone(outcomes=[stopped]))
    assert h.status(stoppable).status is TaskStatus.CANCELLED
    assert h.core.counters.cancelled == 1


def test_cancelling_a_task_the_control_plane_runs_itself_stops_its_local_run() -> None:
    h = Harness(local_execution=True)
    (task_id,) = h.submit("add")
    (start,) = h.core.local_starts
    h.core.local_starts.clear()
    h.send(CLIENT, m.CancelTasks(request_id=8, task_ids=[start.task_id]))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.CancelReply)]
    assert reply.stopping == [task_id]
    assert h.core.local_stops == [task_id]


# --- dead letters ---------------------------------------------------------------------------


def _dead_page(h: Harness, offset: int = 0, limit: int = 50) -> m.DeadLettersReply:
    h.send(CLIENT, m.DeadLettersQuery(request_id=40, offset=offset, limit=limit))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.DeadLettersReply)]
    return reply


def test_failed_tasks_land_in_the_dead_letter_list_and_cancelled_ones_do_not() -> None:
    h = Harness(max_attempts=1)
    h.worker(A, "a")
    failed, lost, cancelled, succeeded = h.submit("add", "add", "add", "add")
    _fail(h, A, failed, retry=False)
    assert h.dispatched(A) == [failed, lost]
    h.tick(LEASE_SILENCE)  # lost with its only worker: WorkerLostError at max_attempts=1
    h.send(CLIENT, m.CancelTasks(request_id=41, task_ids=[cancelled]))
    a_again = type(A)(32, "worker-a-again")
    h.worker(a_again, "a")
    assert h.dispatched(a_again) == [succeeded]
    h.done(a_again, succeeded)
    page = _dead_page(h)
    assert [t.task_id for t in page.tasks] == [failed, lost]
    assert (page.total, page.dropped) == (2, 0)
    assert [t.error.code for t in page.tasks if t.error] == ["task_failed", "worker_lost"]
    assert h.core.counters.dead_letters == 2


def test_the_dead_letter_list_is_bounded_and_counts_what_it_dropped() -> None:
    h = Harness(dead_letters=2, result_cache_size=1)
    h.worker(A, "a", slots=3)
    ids = h.submit("add", "add", "add")
    for task_id in ids:
        _fail(h, A, task_id, retry=False)
    page = _dead_page(h)
    assert [t.task_id for t in page.tasks] == ids[1:]  # the oldest went
    assert page.dropped == 1
    # Out of the result cache (size 1), a dead letter still answers status().
    assert h.status(ids[1]).status is TaskStatus.FAILED


def test_a_dead_letter_retried_runs_again_as_a_new_task_that_names_it() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal)
    h.worker(A, "a")
    first, second = h.submit("add", "add", retry=m.RetryPolicy(retries=1, retry_on=["x.Y"]))
    for task_id in (first, second):
        assert h.dispatched(A) == [task_id]
        _fail(h, A, task_id, retry=False)
    h.send(CLIENT, m.RetryDead(request_id=42, task_ids=[first, "nope"]))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.RetriedDead)]
    assert (reply.task_ids, reply.unknown) == ([first], ["nope"])
    (new_id,) = reply.new_ids
    assert new_id != first
    again = h.status(new_id)
    assert (again.retry_of, again.status) == (first, TaskStatus.RUNNING)
    assert h.core.admission.active[new_id].retry is not None  # its options came along
    assert [t.task_id for t in _dead_page(h).tasks] == [second]
    assert journal.rows[new_id].retry_of == first
    h.done(A, new_id)
    assert h.status(new_id).status is TaskStatus.SUCCEEDED
    # The rest, by "all"; then the list is empty, and a purge finds nothing.
    h.send(CLIENT, m.RetryDead(request_id=43, all=True))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.RetriedDead)]
    assert (reply.task_ids, reply.remaining) == ([second], 0)
    h.send(CLIENT, m.PurgeDead(request_id=44, all=True))
    (purged,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.PurgedDead)]
    assert purged.purged == 0


def test_dead_letters_survive_a_restart_and_a_purge_drops_them() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal, result_cache_size=1)
    h.worker(A, "a", slots=2)
    doomed, kept = h.submit("add", "add")
    _fail(h, A, doomed, retry=False)
    h.heartbeat(A, kept)
    h.tick(1.0)  # so that the cache of one keeps the newer, and doomed is only dead
    _fail(h, A, kept, retry=False)
    h = _restart(h, journal, result_cache_size=1)
    assert [t.task_id for t in _dead_page(h).tasks] == [doomed, kept]
    h.send(CLIENT, m.PurgeDead(request_id=45, task_ids=[doomed, "nope"]))
    (purged,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.PurgedDead)]
    assert (purged.purged, purged.unknown) == (1, ["nope"])
    assert doomed not in journal.rows  # neither cached nor dead: deleted
    assert journal.rows[kept].dead


# --- headers ------------------------------------------------------------------------------

TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def _assignments(h: Harness, conn: object) -> list[m.TaskAssignment]:
    return [
        assignment
        for message in h.sent(conn)  # pyright: ignore[reportArgumentType]
        if isinstance(message, m.Dispatch)
        for assignment in message.tasks
    ]


def test_headers_and_priority_reach_every_attempt_and_survive_a_restart(tmp_path: Path) -> None:
    from fastworker.server.journal import open_journal

    journal = open_journal(str(tmp_path / "journal.sqlite3"))
    try:
        h = Harness(journal=journal)
        (task_id,) = h.submit("add", headers=TRACE, priority=TaskPriority.HIGH)
        h = _restart(h, journal)
        h.worker(A, "a")
        (first,) = _assignments(h, A)
        assert (first.task_id, first.headers, first.priority) == (
            task_id,
            TRACE,
            TaskPriority.HIGH,
        )
        h.send(A, m.Goodbye(reason="stopping"))  # its lease goes back to the queue
        h.worker(A, "a")
        (second,) = _assignments(h, A)
        assert (second.attempt, second.headers, second.priority) == (2, TRACE, TaskPriority.HIGH)
    finally:
        journal.close()
