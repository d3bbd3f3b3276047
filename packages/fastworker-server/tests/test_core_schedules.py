"""Periodic tasks in the control plane's core, with a fake clock: next fire times (a
daylight-saving change included), what a restart does to missed runs, and the journal
keeping a restart from doubling or skipping a run."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_core_state import CLIENT, FlakyJournal, Harness, add

from fastworker.client import Cron, Every, Task, TaskRegistry, cron, every
from fastworker.client.schedules import MISSED_RUNS_LIMIT, parse_schedule
from fastworker.protocol import ConfigurationError, TaskStatus
from fastworker.protocol import messages as m
from fastworker.server.core import ControlPlaneCore
from fastworker.server.core.schedules import Fire, Schedules, next_fire_function
from fastworker.server.journal import ScheduleRecord

BERLIN = ZoneInfo("Europe/Berlin")


def _at(*parts: int, tz: ZoneInfo = BERLIN, fold: int = 0) -> float:
    return datetime.datetime(*parts, tzinfo=tz, fold=fold).timestamp()  # pyright: ignore[reportArgumentType]


def _local(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, BERLIN).isoformat()


def _fires(name: str, schedule: Cron | Every, start: float, count: int) -> list[str]:
    following = next_fire_function(name, schedule)
    times: list[str] = []
    when = start
    for _ in range(count):
        when = following(when, when)
        times.append(_local(when))
    return times


# --- next fire times ------------------------------------------------------------------------


def test_a_time_skipped_when_clocks_go_forward_runs_once_right_after() -> None:
    # 29 March 2026, 02:00 CET becomes 03:00 CEST: 02:30 does not exist that night.
    start = _at(2026, 3, 28, 12, 0)
    assert _fires("report", cron("30 2 * * *", tz="Europe/Berlin"), start, 3) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_fixed_time_that_happens_twice_when_clocks_go_back_runs_once() -> None:
    # 25 October 2026, 03:00 CEST becomes 02:00 CET: 02:30 happens twice.
    start = _at(2026, 10, 24, 12, 0)
    assert _fires("report", cron("30 2 * * *", tz="Europe/Berlin"), start, 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_an_hourly_schedule_keeps_running_every_real_hour_when_clocks_go_back() -> None:
    start = _at(2026, 10, 25, 1, 30)
    assert _fires("sweep", cron("@hourly", tz="Europe/Berlin"), start, 3) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_cron_times_are_strictly_after_the_start_and_read_in_utc_by_default() -> None:
    on_a_match = _at(2026, 1, 1, 0, 5, tz=ZoneInfo("UTC"))
    following = next_fire_function("t", cron("*/5 * * * *"))
    assert following(on_a_match, on_a_match) == on_a_match + 300
    assert following(on_a_match - 0.5, 0.0) == on_a_match


def test_an_interval_keeps_to_its_grid_whatever_time_it_is_asked_from() -> None:
    following = next_fire_function("t", every(seconds=10))
    assert following(1003.0, 1000.0) == 1010.0
    assert following(1010.0, 1000.0) == 1020.0  # strictly after
    assert following(1047.5, 1010.0) == 1050.0


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (cron("61 * * * *"), "'61 \\* \\* \\* \\*' is not a cron expression"),
        (cron("* * * * *", tz="Mars/Olympus"), "'Mars/Olympus' is not a timezone"),
    ],
)
def test_a_schedule_that_cannot_be_read_names_its_task(schedule: Cron, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"task 'report': {message}"):
        next_fire_function("report", schedule)


@pytest.mark.parametrize(
    ("text", "described"),
    [
        ("cron:0 3 * * *", "cron:0 3 * * *"),
        (
            "cron:  0  3 * * * ;tz=Europe/Berlin;missed=all",
            "cron:0 3 * * *;tz=Europe/Berlin;missed=all",
        ),
        ("every:30", "every:30"),
        ("every:0.5;missed=skip", "every:0.5;missed=skip"),
    ],
)
def test_a_schedule_as_text_reads_back_as_it_describes_itself(text: str, described: str) -> None:
    assert parse_schedule(text).describe() == described
    assert parse_schedule(described) == parse_schedule(text)


@pytest.mark.parametrize(
    "text", ["hourly", "cron:", "every:soon", "every:0", "every:5;tz=UTC", "cron:* * * * *;x=1"]
)
def test_a_schedule_text_that_is_wrong_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_schedule(text)


def test_a_scheduled_task_must_take_no_arguments() -> None:
    def needs(x: int) -> int:
        return x

    with pytest.raises(ConfigurationError, match="run with no arguments"):
        Task(needs, schedule=every(seconds=1))


# --- starting and missed runs -----------------------------------------------------------


def _started(
    schedule: Cron | Every, stored: ScheduleRecord | None, wall: float
) -> tuple[Schedules, list[float]]:
    schedules = Schedules({"tick": schedule})
    fires = schedules.start([stored] if stored else [], wall)
    assert all(fire.name == "tick" for fire in fires)
    return schedules, [fire.when for fire in fires]


def _stored(schedule: Cron | Every, next_fire: float) -> ScheduleRecord:
    text = schedule.describe()
    return ScheduleRecord(name="tick", schedule=text, next_fire=next_fire, last_fire=next_fire - 10)


def test_a_new_schedule_first_fires_one_interval_after_the_start() -> None:
    schedules, fires = _started(every(seconds=10), None, 1000.0)
    assert fires == []
    assert schedules.next_fire() == 1010.0


def test_missed_runs_are_coalesced_into_one_by_default() -> None:
    schedule = every(seconds=10)
    schedules, fires = _started(schedule, _stored(schedule, 1010.0), 1095.0)
    assert fires == [1010.0]
    assert schedules.next_fire() == 1100.0  # still on the grid


def test_missed_runs_can_be_skipped() -> None:
    schedule = every(seconds=10, missed="skip")
    schedules, fires = _started(schedule, _stored(schedule, 1010.0), 1095.0)
    assert fires == []
    assert schedules.next_fire() == 1100.0
    assert schedules.infos()[0].skipped == 1


def test_missed_runs_can_all_run_up_to_the_limit() -> None:
    schedule = every(seconds=10, missed="all")
    _, fires = _started(schedule, _stored(schedule, 1010.0), 1095.0)
    assert fires == [1010.0 + 10 * i for i in range(9)]
    schedule = every(seconds=1, missed="all")
    schedules, fires = _started(
        schedule, _stored(schedule, 1010.0), 1010.0 + 10 * MISSED_RUNS_LIMIT
    )
    assert fires == [1010.0 + i for i in range(MISSED_RUNS_LIMIT)]  # the earliest
    assert schedules.next_fire() == 1011.0 + 10 * MISSED_RUNS_LIMIT


def test_a_stored_next_fire_still_ahead_is_kept() -> None:
    schedule = every(seconds=10)
    schedules, fires = _started(schedule, _stored(schedule, 1010.0), 1004.0)
    assert fires == []
    assert schedules.next_fire() == 1010.0


def test_a_schedule_whose_definition_changed_starts_from_now() -> None:
    stored = _stored(every(seconds=10), 1010.0)
    schedules, fires = _started(every(seconds=60), stored, 1095.0)
    assert fires == []
    assert schedules.next_fire() == 1155.0


def test_a_stored_schedule_no_longer_configured_is_deleted() -> None:
    schedules = Schedules({})
    schedules.start([_stored(every(seconds=10), 1010.0)], 1000.0)
    assert schedules.take_changes() == ([], ["tick"])


def test_a_paused_process_fires_a_late_schedule_once() -> None:
    schedules, _ = _started(every(seconds=10), None, 1000.0)
    assert schedules.due(1009.9) == []
    assert schedules.due(1010.2) == [Fire("tick", 1010.0)]
    assert schedules.due(1055.0) == [Fire("tick", 1020.0)]
    assert schedules.next_fire() == 1060.0


# --- in the core, with a journal ------------------------------------------------------------


def _tick() -> str:
    return "tock"


def _harness(journal: FlakyJournal, now: float = 1000.0, **settings: object) -> Harness:
    """A harness whose core also imports the periodic task ``tick`` (every 5 s), started
    at ``now`` from what ``journal`` holds, as a control plane starts."""
    h = Harness(journal, **settings)
    registry = TaskRegistry()
    registry.register(Task(add))
    registry.register(Task(_tick, name="tick", schedule=every(seconds=5)))
    h.now = now
    h.core = ControlPlaneCore(
        registry,
        h.core.settings,
        control_plane_id="cp-test",
        library_version="0",
        now=now,
        wall_offset=0.0,
        journal=journal,
    )
    h.core.restore(now)
    h.core.commit(now)
    return h


def _runs(h: Harness) -> list[float]:
    """Fire times of the runs the core knows, in order."""
    reply = h.core.admission.history(m.HistoryQuery(request_id=1, name="tick", limit=1000))
    return sorted(info.fire_time for info in reply.tasks if info.fire_time is not None)


def _advance(h: Harness, seconds: float) -> None:
    h.now += seconds
    h.core.end_turn(h.now)


def test_runs_are_submitted_when_due_as_tasks_that_name_their_schedule() -> None:
    h = _harness(FlakyJournal())
    assert h.core.next_due() == 1005.0
    _advance(h, 4.9)
    assert _runs(h) == []
    _advance(h, 0.2)
    _advance(h, 5.0)
    assert _runs(h) == [1005.0, 1010.0]
    (info,) = h.core.schedules.infos()
    assert (info.name, info.schedule, info.runs, info.next_fire) == ("tick", "every:5", 2, 1015.0)
    run = h.core.admission.lookup(info.last_task_id)
    assert run is not None
    assert (run.schedule, run.fire_time, run.status) == ("tick", 1010.0, TaskStatus.QUEUED)


def test_a_restart_neither_doubles_nor_skips_a_run() -> None:
    journal = FlakyJournal()
    h = _harness(journal)
    _advance(h, 5.1)  # fires 1005
    h.now += 1.0  # 1006.1: the control plane is killed, and starts again at once
    h = _harness(journal, h.now)
    assert _runs(h) == [1005.0]  # not again
    _advance(h, 4.0)  # 1010.1
    assert _runs(h) == [1005.0, 1010.0]


def test_a_run_the_journal_did_not_store_is_fired_after_a_restart() -> None:
    journal = FlakyJournal()
    h = _harness(journal)
    journal.failing = True
    _advance(h, 5.1)  # fired, but neither the run nor the schedule was stored
    assert _runs(h) == [1005.0]
    journal.failing = False
    h.now += 1.0
    h = _harness(journal, h.now)
    assert _runs(h) == [1005.0]  # missed while down, so run now


def test_a_run_the_queue_refuses_is_skipped_and_counted() -> None:
    h = _harness(FlakyJournal(), max_queued_tasks=1)
    h.submit("add")  # the queue is full
    _advance(h, 5.1)
    (info,) = h.core.schedules.infos()
    assert (info.runs, info.skipped) == (0, 1)
    assert info.next_fire == 1010.0


def test_clients_can_list_the_schedules() -> None:
    h = _harness(FlakyJournal())
    h.send(CLIENT, m.SchedulesQuery(request_id=9))
    (reply,) = h.sent(CLIENT)
    assert isinstance(reply, m.SchedulesReply)
    assert [(s.name, s.schedule, s.next_fire) for s in reply.schedules] == [
        ("tick", "every:5", 1005.0)
    ]


def test_a_schedule_flag_takes_the_place_of_the_tasks_own() -> None:
    journal = FlakyJournal()
    h = _harness(
        journal, schedules=(("tick", every(seconds=60)), ("remote_only", cron("0 * * * *")))
    )
    names = {info.name: info.schedule for info in h.core.schedules.infos()}
    assert names == {"tick": "every:60", "remote_only": "cron:0 * * * *"}


def test_a_schedule_flag_for_a_task_that_needs_arguments_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="'add' has a schedule, so it is run with no"):
        _harness(FlakyJournal(), schedules=(("add", every(seconds=5)),))
