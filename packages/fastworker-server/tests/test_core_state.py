"""The control plane's core, driven directly: no sockets, no processes, a fake clock.

Each test feeds messages and ticks with explicit times and checks what the core decided:
the messages it queued for each connection and the state it reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest

from fastworker.client.tasks import Task, TaskRegistry
from fastworker.protocol import (
    FEATURE_LEASES,
    StorageError,
    TaskPriority,
    TaskStatus,
    WorkerState,
    encode_value,
)
from fastworker.protocol import messages as m
from fastworker.server.core import ControlPlaneCore
from fastworker.server.journal import Journal, ScheduleRecord, TaskRecord, open_journal
from fastworker.server.settings import ControlPlaneSettings

LEASE = 3.0


@dataclasses.dataclass(frozen=True)
class Conn:
    id: int
    address: str = "test"
    certificate: str = ""


CLIENT = Conn(1, "client")
OTHER_CLIENT = Conn(2, "other-client")
A = Conn(10, "worker-a")
B = Conn(11, "worker-b")


def add(x: int, y: int) -> int:
    return x + y


class Harness:
    """A core and the connections around it, with the time in the test's hands."""

    def __init__(self, journal: Journal | None = None, **settings: object) -> None:
        registry = TaskRegistry()
        registry.register(Task(add))
        options: dict[str, object] = {"local_execution": False, "lease_timeout": LEASE}
        options.update(settings)
        self.now = 1000.0
        self.core = ControlPlaneCore(
            registry,
            ControlPlaneSettings(**options),  # pyright: ignore[reportArgumentType]
            control_plane_id="cp-test",
            library_version="0",
            now=self.now,
            wall_offset=0.0,
            journal=journal,
        )
        self._request = 0

    def send(self, conn: Conn, *messages: m.Message) -> None:
        """As the shell does in one turn: the messages, then dispatch and one commit."""
        for message in messages:
            self.core.handle(conn, message, self.now)
        self.core.end_turn(self.now)

    def sent(self, conn: Conn) -> list[m.Message]:
        """Messages queued for ``conn`` since the last call (for any connection)."""
        mine = [message for peer_id, message in self.core.sends if peer_id == conn.id]
        self.core.sends[:] = [(p, msg) for p, msg in self.core.sends if p != conn.id]
        return mine

    def worker(
        self, conn: Conn, worker_id: str, slots: int = 1, *, leases: bool = True, prefetch: int = 0
    ) -> None:
        hello = m.WorkerHello(
            request_id=1,
            worker_id=worker_id,
            concurrency=slots,
            task_names=["add", "remote_only"],
            features=[FEATURE_LEASES] if leases else [],
            prefetch=prefetch,
        )
        self.send(conn, hello)
        sent = self.sent(conn)
        assert isinstance(sent[0], m.WorkerWelcome)
        self.core.sends += [(conn.id, message) for message in sent[1:]]  # the rest stays

    def submit(self, *names: str, conn: Conn = CLIENT, **options: object) -> list[str]:
        self._request += 1
        requests = [
            m.TaskRequest(name=name, args=encode_value([1, 2]), **options)  # pyright: ignore[reportArgumentType]
            for name in names
        ]
        self.send(conn, m.SubmitBatch(request_id=self._request, tasks=requests))
        replies = [msg for msg in self.sent(conn) if not isinstance(msg, m.Results)]
        assert len(replies) == 1, replies
        reply = replies[0]
        assert isinstance(reply, m.Accepted), reply
        return reply.task_ids

    def refused(self, conn: Conn, message: m.Message) -> m.ErrorInfo:
        self.send(conn, message)
        replies = [msg for msg in self.sent(conn) if isinstance(msg, m.ErrorReply)]
        assert len(replies) == 1
        return replies[0].error

    def dispatched(self, conn: Conn) -> list[str]:
        return [
            assignment.task_id
            for message in self.sent(conn)
            if isinstance(message, m.Dispatch)
            for assignment in message.tasks
        ]

    def done(self, conn: Conn, task_id: str, value: object = 3) -> None:
        outcome = m.TaskOutcome(
            task_id=task_id, status=TaskStatus.SUCCEEDED, value=encode_value(value)
        )
        self.send(conn, m.TasksDone(outcomes=[outcome]))

    def status(self, task_id: str) -> m.TaskInfo:
        self.send(CLIENT, m.StatusQuery(request_id=999, task_ids=[task_id]))
        (reply,) = [msg for msg in self.sent(CLIENT) if isinstance(msg, m.StatusReply)]
        (info,) = reply.tasks
        return info

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.core.tick(self.now)
        self.core.end_turn(self.now)

    def wait(self, seconds: int, *alive: Conn) -> None:
        """Let ``seconds`` pass a second at a time, the ``alive`` workers heartbeating."""
        for _ in range(seconds):
            for conn in alive:
                self.heartbeat(conn)
            self.tick(1.0)

    def heartbeat(self, conn: Conn, *running: str, draining: bool = False) -> None:
        beat = m.Heartbeat(sent_at=self.now, draining=draining, running=list(running))
        self.send(conn, beat)


# --- fencing ------------------------------------------------------------------------------


def test_a_client_connection_cannot_report_outcomes_or_hand_back() -> None:
    h = Harness()
    h.worker(A, "a")
    running, queued = h.submit("add", "add")
    assert h.dispatched(A) == [running]
    for task_id in (running, queued):
        error = h.refused(
            OTHER_CLIENT,
            m.TasksDone(outcomes=[m.TaskOutcome(task_id=task_id, status=TaskStatus.SUCCEEDED)]),
        )
        assert error.code == "lease"
    assert h.refused(OTHER_CLIENT, m.HandBack(task_ids=[running])).code == "lease"
    assert h.status(running).status is TaskStatus.RUNNING
    assert h.status(queued).status is TaskStatus.QUEUED
    assert h.core.counters.fenced == 3
    h.done(A, running)
    assert h.status(running).status is TaskStatus.SUCCEEDED


def test_a_worker_cannot_report_a_task_leased_to_another() -> None:
    h = Harness()
    h.worker(A, "a")
    (task_id,) = h.submit("add")
    assert h.dispatched(A) == [task_id]
    h.worker(B, "b")
    h.done(B, task_id, value=666)
    h.send(B, m.HandBack(task_ids=[task_id]))
    assert h.status(task_id).status is TaskStatus.RUNNING
    assert h.core.counters.fenced == 2
    assert h.sent(B) == []  # refused quietly: an old subworker treats an error as fatal
    h.done(A, task_id)
    assert h.status(task_id).status is TaskStatus.SUCCEEDED


def test_a_late_outcome_counts_until_the_task_runs_again() -> None:
    h = Harness()
    h.worker(A, "a")
    first, second = h.submit("add", "add")
    assert h.dispatched(A) == [first]
    h.tick(LEASE + 1)  # A is silent: lost, its task requeued
    assert h.status(first).status is TaskStatus.QUEUED
    # A comes back on a new connection with its report, before anyone ran the task again.
    a_again = Conn(20)
    late = m.TaskOutcome(task_id=first, status=TaskStatus.SUCCEEDED, value=encode_value(3))
    hello = m.WorkerHello(request_id=1, worker_id="a", concurrency=1, task_names=["add"])
    h.core.handle(a_again, hello, h.now)
    h.core.handle(a_again, m.TasksDone(outcomes=[late]), h.now)
    h.core.dispatch(h.now)
    assert h.dispatched(a_again) == [second]  # the queued copy of `first` is gone
    assert h.status(first).status is TaskStatus.SUCCEEDED
    h.send(a_again, m.Goodbye())
    h.worker(B, "b")
    assert h.dispatched(B) == [second]
    h.tick(LEASE + 1)  # B is lost too; then C takes the task
    c = Conn(12)
    h.worker(c, "c")
    assert h.dispatched(c) == [second]
    h.done(B, second, value=666)  # too late: it runs again on C
    assert h.status(second).status is TaskStatus.RUNNING
    h.done(c, second)
    assert h.status(second).status is TaskStatus.SUCCEEDED


# --- drains -------------------------------------------------------------------------------


def test_a_draining_worker_gets_nothing_and_its_hand_backs_do_not_count() -> None:
    h = Harness()
    h.worker(A, "a", slots=2)
    h.worker(B, "b", slots=1)
    tasks = h.submit("add", "add", "add", "add")
    on_a = h.dispatched(A)
    on_b = h.dispatched(B)
    assert len(on_a) == 2
    assert len(on_b) == 1
    h.heartbeat(A, on_a[0], draining=True)
    assert h.core.workers["a"].state is WorkerState.DRAINING
    h.send(A, m.HandBack(task_ids=[on_a[1]]))
    h.done(A, on_a[0])
    assert h.dispatched(A) == []
    handed = h.status(on_a[1])
    assert handed.status is TaskStatus.QUEUED
    assert handed.attempts == 0
    h.done(B, on_b[0])
    # The handed-back task was first in line again, ahead of the one never dispatched.
    assert h.dispatched(B) == [on_a[1]]
    h.done(B, on_a[1])
    assert h.dispatched(B) == [tasks[3]]
    assert h.status(on_a[1]).attempts == 1


def test_a_hand_back_from_an_old_subworker_marks_it_draining() -> None:
    h = Harness()
    h.worker(A, "a", slots=1, leases=False)
    (task_id,) = h.submit("add")
    assert h.dispatched(A) == [task_id]
    h.send(A, m.HandBack(task_ids=[task_id]))
    assert h.core.workers["a"].state is WorkerState.DRAINING
    assert h.dispatched(A) == []  # not sent straight back
    assert h.status(task_id).status is TaskStatus.QUEUED


def test_the_control_plane_does_not_run_tasks_itself_while_a_worker_drains() -> None:
    h = Harness(local_execution=True, local_concurrency=2)
    h.worker(A, "a")
    h.heartbeat(A, draining=True)
    (task_id,) = h.submit("add")
    assert h.core.local_starts == []
    assert h.status(task_id).status is TaskStatus.QUEUED
    h.send(A, m.Goodbye())
    assert [a.task_id for a in h.core.local_starts] == [task_id]


# --- leases -------------------------------------------------------------------------------


def test_a_lease_not_renewed_by_heartbeats_is_taken_back() -> None:
    h = Harness()
    h.worker(A, "a", slots=2)
    kept, lost = h.submit("add", "add")
    assert sorted(h.dispatched(A)) == sorted([kept, lost])
    for _ in range(4):
        h.heartbeat(A, kept)  # A is alive but never mentions `lost`
        h.tick(1.0)
    assert h.status(kept).status is TaskStatus.RUNNING
    info = h.status(lost)
    assert info.status is TaskStatus.RUNNING  # leased again, to A: the slot is free
    assert info.attempts == 2
    assert h.dispatched(A) == [lost]
    assert h.core.counters.requeued == 1


def test_an_old_subworker_lease_expires_only_past_the_time_limit() -> None:
    h = Harness()
    h.worker(A, "a", slots=2, leases=False)
    limited = h.submit("add", timeout=5.0)[0]
    unlimited = h.submit("add")[0]
    assert sorted(h.dispatched(A)) == sorted([limited, unlimited])
    for _ in range(7):
        h.heartbeat(A)
        h.tick(1.0)
    assert h.status(unlimited).status is TaskStatus.RUNNING
    assert h.status(unlimited).attempts == 1
    assert h.status(limited).attempts == 1
    for _ in range(2):
        h.heartbeat(A)
        h.tick(1.0)  # now past 5 s + the lease timeout
    assert h.status(limited).attempts == 2


def test_a_silent_worker_is_lost_by_the_monotonic_clock() -> None:
    h = Harness()
    h.worker(A, "a")
    (task_id,) = h.submit("add")
    h.tick(LEASE - 0.5)
    assert "a" in h.core.workers
    h.tick(1.0)
    assert "a" not in h.core.workers
    assert h.status(task_id).status is TaskStatus.QUEUED


def test_a_task_lost_max_attempts_times_fails_with_worker_lost() -> None:
    h = Harness(max_attempts=2)
    h.worker(A, "a")
    (task_id,) = h.submit("add")
    for number, conn in enumerate((A, B)):
        if number:
            h.worker(conn, "b")
        assert h.dispatched(conn) == [task_id]
        h.tick(LEASE + 1)
    results = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.Results)]
    assert [o.task_id for r in results for o in r.outcomes] == [task_id]
    info = h.status(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.error is not None
    assert info.error.code == "worker_lost"


def test_requeueing_a_lost_workers_tasks_never_overflows_the_limit() -> None:
    h = Harness(max_queued_tasks=2)
    h.worker(A, "a", slots=2)
    tasks = h.submit("add", "add")
    assert len(h.dispatched(A)) == 2
    request = m.TaskRequest(name="add", args=encode_value([1, 2]))
    error = h.refused(CLIENT, m.SubmitTask(request_id=50, task=request))
    assert error.code == "queue_full"  # running tasks count toward the limit
    h.tick(LEASE + 1)  # A lost: both go back
    assert h.core.scheduler.depth().total == 2
    h.worker(B, "b", slots=2)
    assert sorted(h.dispatched(B)) == sorted(tasks)
    h.heartbeat(B, *tasks)
    h.tick(1.0)  # housekeeping goes on: B gets its heartbeat
    assert any(isinstance(msg, m.Heartbeat) for msg in h.sent(B))


def test_the_same_connection_announcing_itself_again_keeps_its_leases() -> None:
    h = Harness()
    h.worker(A, "a", slots=1)
    (task_id,) = h.submit("add")
    assert h.dispatched(A) == [task_id]
    h.worker(A, "a", slots=1)
    h.done(A, task_id)
    assert h.status(task_id).status is TaskStatus.SUCCEEDED
    assert h.core.counters.running == 0


def test_a_second_worker_with_a_connected_id_is_refused() -> None:
    h = Harness()
    h.worker(A, "a")
    error = h.refused(B, m.WorkerHello(request_id=1, worker_id="a", concurrency=1, task_names=[]))
    assert error.code == "duplicate_worker"
    assert h.core.workers["a"].peer_id == A.id


@pytest.mark.parametrize("how", ["disconnected", "said goodbye"])
def test_a_replacement_with_the_id_of_a_gone_worker_registers_at_once(how: str) -> None:
    # A supervisor's replacement child keeps its slot's id and dials on a new connection.
    h = Harness()
    h.worker(A, "a")
    (task_id,) = h.submit("add")
    assert h.dispatched(A) == [task_id]
    if how == "disconnected":
        h.core.disconnected(A.id, h.now)
    else:
        h.send(A, m.HandBack(task_ids=[task_id]), m.Goodbye(reason="recycling"))
    replacement = Conn(30, "worker-a-again")
    h.worker(replacement, "a")
    assert h.core.workers["a"].peer_id == replacement.id
    assert h.dispatched(replacement) == [task_id]
    h.done(replacement, task_id)
    assert h.status(task_id).status is TaskStatus.SUCCEEDED


# --- placement ----------------------------------------------------------------------------


def test_without_prefetch_a_worker_holds_no_more_than_its_slots() -> None:
    h = Harness()
    h.worker(A, "a", slots=2)
    ids = h.submit("add", "add", "add")
    assert h.dispatched(A) == ids[:2]
    assert h.status(ids[2]).status is TaskStatus.QUEUED
    h.done(A, ids[0])
    assert h.dispatched(A) == [ids[2]]


def test_a_prefetching_worker_holds_its_slots_and_prefetch_and_load_stays_least_first() -> None:
    h = Harness()
    h.worker(A, "a", slots=1, prefetch=2)
    h.worker(B, "b", slots=1)
    ids = h.submit("add", "add", "add", "add", "add")
    # Least-loaded by what each holds; ties to the one picked least recently: a, b, then
    # only a has room (1 slot + 2 prefetched), and the fifth waits in the queue.
    assert h.dispatched(A) == [ids[0], ids[2], ids[3]]
    assert h.dispatched(B) == [ids[1]]
    assert h.status(ids[4]).status is TaskStatus.QUEUED
    (a_info,) = [w for w in h.core.overview().workers if w.worker_id == "a"]
    assert (a_info.load, a_info.slots, a_info.prefetch) == (3, 1, 2)
    # Prefetched leases renew with the heartbeat that lists them, like running ones.
    for _ in range(int(LEASE) + 2):
        h.heartbeat(A, ids[0], ids[2], ids[3])
        h.heartbeat(B, ids[1])
        h.tick(1.0)
    assert {h.status(i).status for i in (ids[0], ids[2], ids[3])} == {TaskStatus.RUNNING}


# --- submission ---------------------------------------------------------------------------


def test_a_batch_with_a_duplicate_id_is_refused_whole() -> None:
    h = Harness()
    args = encode_value([1, 2])
    batch = m.SubmitBatch(
        request_id=7,
        tasks=[
            m.TaskRequest(name="add", args=args, task_id="x1"),
            m.TaskRequest(name="add", args=args, task_id="x2"),
            m.TaskRequest(name="add", args=args, task_id="x1"),
        ],
    )
    assert h.refused(CLIENT, batch).code == "invalid_arguments"
    assert h.core.scheduler.depth().total == 0
    assert h.core.counters.submitted == 0
    h.submit("add", task_id="x1")  # the id was never taken


def test_a_batch_with_an_unknown_task_is_refused_whole() -> None:
    h = Harness()
    args = encode_value([1, 2])
    batch = m.SubmitBatch(
        request_id=7, tasks=[m.TaskRequest(name="add", args=args), m.TaskRequest(name="nope")]
    )
    assert h.refused(CLIENT, batch).code == "unknown_task"
    assert h.core.scheduler.depth().total == 0


def test_one_idempotency_key_twice_in_a_batch_is_one_task() -> None:
    h = Harness()
    first, again = h.submit("add", "add", idempotency_key="order-1")
    assert first == again
    assert h.core.counters.submitted == 1


# --- the result cache ---------------------------------------------------------------------


def _finish_all(h: Harness, conn: Conn, count: int, key: str | None = None) -> list[str]:
    ids: list[str] = []
    for _ in range(count):
        (task_id,) = h.submit("add", idempotency_key=key)
        assert h.dispatched(conn) == [task_id]
        h.done(conn, task_id)
        ids.append(task_id)
    return ids


def test_the_result_cache_evicts_the_least_recently_used() -> None:
    h = Harness(result_cache_size=2)
    h.worker(A, "a")
    one, two = _finish_all(h, A, 2)
    h.send(CLIENT, m.WatchResults(request_id=3, task_ids=[one]))  # a use: `two` is older now
    h.sent(CLIENT)
    _finish_all(h, A, 1)
    h.send(CLIENT, m.StatusQuery(request_id=4, task_ids=[one, two]))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.StatusReply)]
    assert [t.task_id for t in reply.tasks] == [one]
    assert reply.unknown == [two]


def test_results_expire_after_their_time_to_live_even_when_used_later() -> None:
    h = Harness(result_ttl=10.0, heartbeat_interval=1.0)
    h.worker(A, "a")
    (old,) = _finish_all(h, A, 1)
    h.wait(6, A)
    (young,) = _finish_all(h, A, 1)
    h.send(CLIENT, m.WatchResults(request_id=3, task_ids=[old]))  # used, but still old
    h.sent(CLIENT)
    h.wait(5, A)
    assert h.core.admission.lookup(old) is None
    assert h.core.admission.lookup(young) is not None


def test_an_evicted_tasks_idempotency_key_is_free_again() -> None:
    h = Harness(result_cache_size=1)
    h.worker(A, "a")
    (first,) = _finish_all(h, A, 1, key="k")
    assert h.submit("add", idempotency_key="k") == [first]  # still remembered
    _finish_all(h, A, 1)  # pushes `first` out
    (second,) = h.submit("add", idempotency_key="k")
    assert second != first


# --- cancelling ---------------------------------------------------------------------------


def test_cancel_after_dispatch_is_refused_and_the_task_runs() -> None:
    h = Harness()
    h.worker(A, "a")
    (task_id,) = h.submit("add")
    h.send(CLIENT, m.CancelTasks(request_id=5, task_ids=[task_id]))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.CancelReply)]
    assert reply.not_cancelled == [task_id]
    assert h.dispatched(A) == [task_id]
    h.done(A, task_id)
    assert h.status(task_id).status is TaskStatus.SUCCEEDED


def test_cancel_a_parked_and_a_handed_back_task() -> None:
    h = Harness()
    h.worker(A, "a", slots=1)
    running, parked = h.submit("add", "add")
    assert h.dispatched(A) == [running]
    h.send(A, m.Goodbye())  # A leaves; nobody else runs `add`: both park
    assert h.status(running).status is TaskStatus.QUEUED
    h.send(CLIENT, m.CancelTasks(request_id=5, task_ids=[running, parked]))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.CancelReply)]
    assert sorted(reply.cancelled) == sorted([running, parked])
    assert h.core.scheduler.depth().total == 0
    h.worker(B, "b")
    assert h.dispatched(B) == []


def test_cancel_between_hand_back_and_the_next_dispatch() -> None:
    h = Harness()
    h.worker(A, "a", slots=1)
    (task_id,) = h.submit("add")
    assert h.dispatched(A) == [task_id]
    h.core.handle(A, m.HandBack(task_ids=[task_id]), h.now)  # no dispatch in between
    h.send(CLIENT, m.CancelTasks(request_id=5, task_ids=[task_id]))
    (reply,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.CancelReply)]
    assert reply.cancelled == [task_id]


@pytest.mark.parametrize("priority", list(TaskPriority))
def test_strict_priority_holds_for_each_level(priority: TaskPriority) -> None:
    h = Harness()
    low = h.submit("add", priority=TaskPriority.LOW)[0]
    urgent = h.submit("add", priority=priority)[0]
    h.worker(A, "a", slots=1)
    assert h.dispatched(A) == [urgent if priority is not TaskPriority.LOW else low]


# --- the journal --------------------------------------------------------------------------


class FlakyJournal:
    """A journal kept in a dict, which refuses writes while ``failing`` is set."""

    path = "flaky.sqlite3"
    sync = "normal"
    commit_times = None

    def __init__(self) -> None:
        self.rows: dict[str, TaskRecord] = {}
        self.schedules: dict[str, ScheduleRecord] = {}
        self.failing = False
        self.writes = 0
        """Calls that stored something."""

    def load(self) -> list[TaskRecord]:
        return list(self.rows.values())

    def load_schedules(self) -> list[ScheduleRecord]:
        return list(self.schedules.values())

    def write(
        self,
        upserts: Sequence[TaskRecord],
        deletes: Sequence[str],
        schedules: Sequence[ScheduleRecord] = (),
        schedule_deletes: Sequence[str] = (),
    ) -> None:
        if self.failing:
            raise StorageError("no space left on device")
        self.writes += 1
        self.rows.update((record.task_id, record) for record in upserts)
        for task_id in deletes:
            self.rows.pop(task_id, None)
        self.schedules.update((record.name, record) for record in schedules)
        for name in schedule_deletes:
            self.schedules.pop(name, None)

    def size(self) -> int:
        return len(self.rows)

    def close(self) -> None:
        pass


def _restart(h: Harness, journal: Journal, **settings: object) -> Harness:
    """A new core on the same journal, as after the process was killed."""
    again = Harness(journal=journal, **settings)
    again.now = h.now + 30.0
    again.core.restore(again.now)
    again.core.commit(again.now)
    return again


def test_a_restart_restores_the_queue_leases_results_and_keys(tmp_path: Path) -> None:
    journal = open_journal(str(tmp_path / "journal.sqlite3"))
    h = Harness(journal=journal)
    h.worker(A, "a", slots=2)
    done, running = h.submit("add", "add")
    h.done(A, done, value=42)
    assert h.dispatched(A) == [done, running]
    low = h.submit("add", priority=TaskPriority.LOW)[0]
    normal = h.submit("add", idempotency_key="order-7")[0]
    high = h.submit("add", priority=TaskPriority.HIGH)[0]
    journal.close()

    journal = open_journal(str(tmp_path / "journal.sqlite3"))
    h = _restart(h, journal)
    assert h.status(done).status is TaskStatus.SUCCEEDED
    h.send(CLIENT, m.WatchResults(request_id=1, task_ids=[done]))
    (pushed,) = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.Results)]
    assert pushed.outcomes[0].value == encode_value(42)
    assert h.submit("add", idempotency_key="order-7") == [normal]
    leased = h.status(running)
    assert leased.status is TaskStatus.QUEUED
    assert leased.attempts == 1  # the attempt the stop interrupted counts
    h.worker(B, "b", slots=1)
    order: list[str] = []
    for _ in range(4):
        (task_id,) = h.dispatched(B)
        order.append(task_id)
        h.done(B, task_id)
    # The interrupted task was first in line again, then strict priority, FIFO.
    assert order == [high, running, normal, low]
    journal.close()


def test_a_task_interrupted_too_often_fails_at_restart() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal, max_attempts=1)
    h.worker(A, "a")
    (task_id,) = h.submit("add")
    assert h.dispatched(A) == [task_id]
    h = _restart(h, journal, max_attempts=1)
    info = h.status(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.error is not None
    assert info.error.code == "worker_lost"


def test_the_holder_may_report_a_task_after_a_restart() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal)
    h.worker(A, "a")
    (task_id,) = h.submit("add")
    assert h.dispatched(A) == [task_id]
    h = _restart(h, journal)
    # The subworker reconnects with its report in the same frame as its hello.
    late = m.TaskOutcome(task_id=task_id, status=TaskStatus.SUCCEEDED, value=encode_value(3))
    hello = m.WorkerHello(request_id=1, worker_id="a", concurrency=1, task_names=["add"])
    h.core.handle(A, hello, h.now)
    h.core.handle(A, m.TasksDone(outcomes=[late]), h.now)
    h.core.commit(h.now)
    h.core.dispatch(h.now)
    assert h.dispatched(A) == []  # not run a second time
    assert h.status(task_id).status is TaskStatus.SUCCEEDED


def test_nothing_is_accepted_that_the_journal_did_not_store() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal)
    h.worker(A, "a")
    (first,) = h.submit("add")
    journal.failing = True
    request = m.TaskRequest(name="add", args=encode_value([1, 2]), idempotency_key="k")
    error = h.refused(CLIENT, m.SubmitTask(request_id=77, task=request))
    assert error.code == "storage"
    assert h.core.counters.submitted == 1
    assert h.status(first).status is TaskStatus.RUNNING  # queries keep working
    journal.failing = False
    (second,) = h.submit("add", idempotency_key="k")  # the key was never taken
    assert h.dispatched(A) == [first]
    h.done(A, first)
    assert set(journal.rows) == {first, second}
    assert journal.rows[first].status is TaskStatus.SUCCEEDED


def _submit_task(request_id: int) -> m.SubmitTask:
    return m.SubmitTask(
        request_id=request_id, task=m.TaskRequest(name="add", args=encode_value([1, 2]))
    )


def test_a_turn_is_one_write_and_its_submissions_are_accepted_only_after_it() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal)
    h.worker(A, "a", slots=2)
    writes = journal.writes
    h.core.handle(CLIENT, _submit_task(1), h.now)
    h.core.handle(OTHER_CLIENT, _submit_task(2), h.now)
    h.core.handle(CLIENT, _submit_task(3), h.now)
    assert not any(isinstance(message, m.Accepted) for _, message in h.core.sends)
    assert journal.rows == {}
    h.core.end_turn(h.now)
    assert journal.writes == writes + 1
    accepted = [msg for msg in h.sent(CLIENT) if isinstance(msg, m.Accepted)]
    (other,) = [msg for msg in h.sent(OTHER_CLIENT) if isinstance(msg, m.Accepted)]
    assert [reply.request_id for reply in accepted] == [1, 3]
    first, second, third = (reply.task_ids[0] for reply in [accepted[0], other, accepted[1]])
    # The two dispatched were stored with their leases, in the same write.
    assert h.dispatched(A) == [first, second]
    assert journal.rows[first].status is TaskStatus.RUNNING
    assert journal.rows[first].attempts == 1
    assert journal.rows[second].worker_id == "a"
    assert journal.rows[third].status is TaskStatus.QUEUED


def test_a_failed_write_refuses_every_submission_of_the_turn_and_sends_none_of_them() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal)
    (stored,) = h.submit("add")  # queued: no subworker yet
    journal.failing = True
    hello = m.WorkerHello(request_id=1, worker_id="a", concurrency=3, task_names=["add"])
    h.core.handle(A, hello, h.now)
    h.core.handle(CLIENT, _submit_task(1), h.now)
    h.core.handle(OTHER_CLIENT, _submit_task(2), h.now)
    h.core.end_turn(h.now)
    for conn in (CLIENT, OTHER_CLIENT):
        (reply,) = h.sent(conn)
        assert isinstance(reply, m.ErrorReply)
        assert reply.error.code == "storage"
    # The stored task's lease stands (stored with a later commit); the refused ones
    # never reach the subworker, nor count against its slots.
    assert h.dispatched(A) == [stored]
    assert h.core.counters.running == 1
    assert h.core.counters.submitted == 1
    (worker,) = h.core.overview().workers
    assert worker.load == 1
    journal.failing = False
    h.tick(1.0)
    assert journal.rows[stored].status is TaskStatus.RUNNING
    again = h.submit("add", "add")
    assert h.dispatched(A) == again


def test_a_failed_write_starts_none_of_its_submissions_locally() -> None:
    journal = FlakyJournal()
    h = Harness(journal=journal, local_execution=True, local_concurrency=2)
    journal.failing = True
    error = h.refused(CLIENT, _submit_task(1))
    assert error.code == "storage"
    assert h.core.local_starts == []
    assert h.core.local is not None
    assert h.core.local.assigned == set()
    assert h.core.counters.running == 0
    journal.failing = False
    (task_id,) = h.submit("add")
    assert [assignment.task_id for assignment in h.core.local_starts] == [task_id]


def test_the_journal_holds_only_unfinished_tasks_and_the_cache(tmp_path: Path) -> None:
    journal = open_journal(str(tmp_path / "journal.sqlite3"))
    h = Harness(journal=journal, result_cache_size=10)
    h.worker(A, "a")
    _finish_all(h, A, 50)
    h.submit("add", "add", "add")  # one running, two queued
    assert len(journal.load()) == 10 + 3
    journal.close()
