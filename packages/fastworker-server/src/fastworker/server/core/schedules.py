"""Periodic tasks: when each schedule fires next, what a restart does to the runs it
missed, and the record the journal keeps of each.

All times here are Unix (wall-clock) seconds: a schedule names times of day. The core
turns the earliest :meth:`Schedules.next_fire` into monotonic time for the shell's one
timer and calls :meth:`Schedules.due` when it rings; each run fired is a task submitted
with the schedule's name and its due time (:attr:`Fire.when`), which no two runs of one
schedule share. The schedule's record goes to the journal in the same transaction as the
task, so after a crash either both are stored or neither is: a restart neither doubles
nor skips a run.

Cron expressions are read with cronsim (the server's ``cron`` extra), imported only when
a cron schedule is configured. cronsim follows Debian's cron across daylight-saving
changes: a time skipped when clocks go forward runs once, right after the change; a time
that happens twice when they go back runs once, the first time, when the expression names
a fixed hour (one that runs every hour runs in both).
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastworker.client.schedules import MISSED_RUNS_LIMIT, Cron, Every
from fastworker.client.tasks import TaskRegistry
from fastworker.protocol import MAX_SCHEDULES, ConfigurationError, InvalidArgumentsError
from fastworker.protocol import messages as m

from ..journal import ScheduleRecord

__all__ = ["Fire", "ScheduleEntry", "Schedules", "configured_schedules", "next_fire_function"]

log = logging.getLogger("fastworker.control_plane")

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

NextFire = Callable[[float, float], float]
"""``(after, anchor)``: the first time strictly after ``after`` (Unix seconds) that a
schedule fires; ``anchor`` is a time it fired or was due, which an interval keeps to."""


@dataclasses.dataclass(frozen=True)
class Fire:
    """One run to submit: the schedule's task, due at ``when``."""

    name: str
    when: float


@dataclasses.dataclass
class ScheduleEntry:
    """One schedule and where it stands."""

    name: str
    schedule: Cron | Every
    text: str
    next_after: NextFire
    next_fire: float = 0.0
    last_fire: float | None = None
    last_task_id: str = ""
    runs: int = 0
    skipped: int = 0

    def record(self) -> ScheduleRecord:
        return ScheduleRecord(
            name=self.name,
            schedule=self.text,
            next_fire=self.next_fire,
            last_fire=self.last_fire,
            last_task_id=self.last_task_id,
        )

    def info(self) -> m.ScheduleInfo:
        return m.ScheduleInfo(
            name=self.name,
            schedule=self.text,
            next_fire=self.next_fire,
            last_fire=self.last_fire,
            last_task_id=self.last_task_id,
            runs=self.runs,
            skipped=self.skipped,
        )


class Schedules:
    """Every periodic task of one control plane, by task name."""

    def __init__(self, schedules: Mapping[str, Cron | Every]) -> None:
        if len(schedules) > MAX_SCHEDULES:
            raise ConfigurationError(
                f"{len(schedules)} periodic tasks are configured; at most {MAX_SCHEDULES}"
            )
        self.entries: dict[str, ScheduleEntry] = {
            name: ScheduleEntry(
                name, schedule, schedule.describe(), next_fire_function(name, schedule)
            )
            for name, schedule in sorted(schedules.items())
        }
        self.dirty: set[str] = set()
        """Schedules whose record the journal has yet to store."""
        self.removed: list[str] = []
        """Stored schedules no longer configured, for the journal to delete."""
        self.started = False
        """Whether :meth:`start` ran: nothing fires before."""

    def start(self, stored: Iterable[ScheduleRecord], wall: float) -> list[Fire]:
        """Take up where the journal left off, at Unix time ``wall``; the runs to fire at
        once for those missed while the control plane was down, by each schedule's
        ``missed`` policy. A schedule that is new, or whose definition changed, starts
        from now."""
        self.started = True
        records = {record.name: record for record in stored}
        self.removed = sorted(name for name in records if name not in self.entries)
        fires: list[Fire] = []
        for name, entry in self.entries.items():
            record = records.get(name)
            self.dirty.add(name)
            if record is None or record.schedule != entry.text:
                entry.next_fire = _first_fire(entry, record, wall)
                continue
            entry.last_fire = record.last_fire
            entry.last_task_id = record.last_task_id
            fires += self._missed(entry, record.next_fire, wall)
        return fires

    def _missed(self, entry: ScheduleEntry, first: float, wall: float) -> list[Fire]:
        """The runs of ``entry`` from ``first`` up to ``wall`` by its policy; moves its
        next fire past ``wall``."""
        if first > wall:
            entry.next_fire = first
            return []
        missed = [first]
        policy = entry.schedule.missed
        if policy == "all":
            when = first
            while len(missed) < MISSED_RUNS_LIMIT:
                when = entry.next_after(when, when)
                if when > wall:
                    break
                missed.append(when)
        entry.next_fire = entry.next_after(wall, first)
        if policy == "skip":
            entry.skipped += 1
            log.info("schedule %s: runs missed since %s skipped", entry.name, _iso(first))
            return []
        last = missed[-1]
        if (
            policy == "all"
            and len(missed) == MISSED_RUNS_LIMIT
            and entry.next_after(last, last) <= wall
        ):
            log.warning(
                "schedule %s: more than %d runs were missed since %s; the first %d run",
                entry.name,
                MISSED_RUNS_LIMIT,
                _iso(first),
                MISSED_RUNS_LIMIT,
            )
        elif policy == "coalesce" and entry.next_after(first, first) <= wall:
            log.info("schedule %s: runs missed since %s run once", entry.name, _iso(first))
        return [Fire(entry.name, when) for when in missed]

    def due(self, wall: float) -> list[Fire]:
        """The runs due at Unix time ``wall``, one per schedule: a schedule whose time
        passed more than once since it last fired (the process was paused) runs once."""
        fires: list[Fire] = []
        if not self.started:
            return fires
        for entry in self.entries.values():
            if entry.next_fire <= wall:
                fires.append(Fire(entry.name, entry.next_fire))
                entry.next_fire = entry.next_after(wall, entry.next_fire)
                self.dirty.add(entry.name)
        return fires

    def fired(self, fire: Fire, task_id: str) -> None:
        """A run was submitted as task ``task_id``."""
        entry = self.entries[fire.name]
        entry.last_fire = fire.when
        entry.last_task_id = task_id
        entry.runs += 1
        self.dirty.add(fire.name)

    def refused(self, fire: Fire) -> None:
        """A run could not be submitted (the queue is full): it is skipped."""
        self.entries[fire.name].skipped += 1

    def next_fire(self) -> float | None:
        """The earliest next fire time (Unix), or None without schedules."""
        if not self.started:
            return None
        return min((entry.next_fire for entry in self.entries.values()), default=None)

    @property
    def changed(self) -> bool:
        """Whether the journal has anything of the schedules to store."""
        return bool(self.dirty or self.removed)

    def take_changes(self) -> tuple[list[ScheduleRecord], list[str]]:
        """The records to store and the names to delete since the last call."""
        records = [self.entries[name].record() for name in sorted(self.dirty)]
        removed, self.removed = self.removed, []
        self.dirty.clear()
        return records, removed

    def give_back(self, records: list[ScheduleRecord], removed: list[str]) -> None:
        """A write of :meth:`take_changes` failed: try them again with the next."""
        self.dirty.update(record.name for record in records)
        self.removed = sorted({*self.removed, *removed})

    def infos(self) -> list[m.ScheduleInfo]:
        return [entry.info() for entry in self.entries.values()]


def configured_schedules(
    registry: TaskRegistry, flags: Iterable[tuple[str, Cron | Every]]
) -> dict[str, Cron | Every]:
    """The schedules of the tasks in ``registry`` (``@task(schedule=...)``), with those
    given as flags (``--schedule NAME=...``) in place of or beside them."""
    schedules: dict[str, Cron | Every] = {}
    for name in registry.names():
        task = registry[name]
        if task.schedule is not None:
            schedules[name] = task.schedule
    schedules.update(flags)
    for name in schedules:
        task = registry.get(name)
        if task is None:
            continue  # only subworkers import it: they check its arguments
        try:
            task.check_arguments((), {})
        except InvalidArgumentsError as exc:
            raise ConfigurationError(
                f"task {name!r} has a schedule, so it is run with no arguments, but {exc}"
            ) from None
    return schedules


def _first_fire(entry: ScheduleEntry, record: ScheduleRecord | None, wall: float) -> float:
    if record is not None:
        log.info(
            "schedule %s changed from %s to %s; it starts from now",
            entry.name,
            record.schedule,
            entry.text,
        )
    return entry.next_after(wall, wall)


def next_fire_function(name: str, schedule: Cron | Every) -> NextFire:
    """How ``schedule`` (of the task ``name``) goes on from a given time.

    Raises:
        ConfigurationError: a cron expression or timezone that cannot be read, or a cron
            schedule without the ``cron`` extra installed.
    """
    if isinstance(schedule, Every):
        return _interval(schedule.seconds)
    return _cron(name, schedule)


def _interval(seconds: float) -> NextFire:
    # An interval keeps to one grid, whole multiples of it after an earlier fire time
    # (the anchor), so a late fire or a restart does not shift the fires after it.
    def following(after: float, anchor: float) -> float:
        when = anchor + seconds * (math.floor((after - anchor) / seconds) + 1)
        return when if when > after else when + seconds

    return following


def _cron(name: str, schedule: Cron) -> NextFire:
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise ConfigurationError(
            f"task {name!r} has a cron schedule, which needs the cron extra:"
            ' pip install "fastworker-server[cron]"'
        ) from None
    try:
        zone = ZoneInfo(schedule.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"task {name!r}: {schedule.tz!r} is not a timezone this machine knows"
            " (an IANA name such as 'Europe/Berlin'; install tzdata if none is known)"
        ) from None
    expression = _ALIASES.get(schedule.expression.lower(), schedule.expression)
    start = datetime.datetime.now(zone)
    try:
        CronSim(expression, start)
    except CronSimError as exc:
        raise ConfigurationError(
            f"task {name!r}: {schedule.expression!r} is not a cron expression ({exc})"
        ) from None

    def following(after: float, anchor: float) -> float:
        times = CronSim(expression, datetime.datetime.fromtimestamp(after, zone))
        # cronsim can give a time not after the start in a repeated hour: go past it.
        for when in itertools.islice(times, 4):
            if when.timestamp() > after:
                return when.timestamp()
        return math.inf  # a date that never comes, such as 30 February

    return following


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
