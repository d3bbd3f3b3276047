"""The control plane's durable journal: the record of one task and the interface a store
implements. The control-plane core owns this interface; the embedded SQLite store lives
in :mod:`fastworker.server.sqlite_journal`, and a shared store can take its place later.

The core calls :meth:`Journal.write` once per turn of its event loop with every task that
changed in that turn (group commit), and :meth:`Journal.load` once at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from fastworker.protocol import ConfigurationError, TaskPriority
from fastworker.protocol.messages import ErrorInfo, RetryPolicy, TaskOutcome, TaskStatus

from .histograms import Histogram

__all__ = [
    "DEFAULT_JOURNAL_PATH",
    "JOURNAL_SYNC_MODES",
    "MEMORY_JOURNAL_PATH",
    "Journal",
    "MemoryJournal",
    "ScheduleRecord",
    "TaskRecord",
    "check_sync_mode",
    "open_journal",
]

MEMORY_JOURNAL_PATH = ":memory:"

DEFAULT_JOURNAL_PATH = "fastworker-journal.sqlite3"
"""In the working directory, as ``celery beat`` keeps its schedule file."""

JOURNAL_SYNC_MODES = ("normal", "full")
"""``normal`` survives the control plane being killed; ``full`` also survives power loss."""


class TaskRecord(msgspec.Struct, array_like=True, kw_only=True, gc=False):
    """The durable form of one task. Stored as a msgpack array, so the wire rule applies:
    new fields go at the end, with defaults; nothing is reordered or removed."""

    task_id: str
    name: str
    priority: TaskPriority
    args: msgspec.Raw
    """msgpack as the client sent it; stored and given back without being decoded."""
    kwargs: msgspec.Raw
    timeout: float | None
    queued_at: float
    idempotency_key: str | None
    status: TaskStatus
    attempts: int
    order: int
    """Position within its priority level: smaller goes first. A task put back at the front
    of its level gets a number smaller than all others, one put at the back a larger one."""
    worker_id: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    outcome: TaskOutcome | None = None
    retry: RetryPolicy | None = None
    retries_used: int = 0
    not_before: float | None = None
    """Wall-clock time a scheduled task becomes due."""
    last_error: ErrorInfo | None = None
    dead: int = 0
    """Its place in the dead-letter list (larger is newer), which keeps it past the result
    cache; 0 when not in it."""
    retry_of: str = ""
    schedule: str = ""
    """The periodic task's schedule this task is a run of."""
    fire_time: float | None = None
    """For a run of a schedule: the time it was due."""
    headers: dict[str, str] = {}
    """The submission's headers (trace context)."""


class ScheduleRecord(msgspec.Struct, array_like=True, kw_only=True, gc=False):
    """Where one periodic task's schedule stands. Stored as a msgpack array: new fields
    go at the end, with defaults."""

    name: str
    schedule: str
    """Its definition as text; a stored schedule whose definition changed starts anew."""
    next_fire: float
    """Unix time of its next run: if that passed while the control plane was down, the
    run was missed."""
    last_fire: float | None = None
    last_task_id: str = ""


class Journal(Protocol):
    """Where the control plane keeps its tasks so that a restart loses none of them."""

    path: str
    """The store's location; ``":memory:"`` for none."""
    sync: str
    """One of :data:`JOURNAL_SYNC_MODES`."""

    @property
    def commit_times(self) -> Histogram | None:
        """How long each :meth:`write` that stored something took, for the metrics;
        None for a store that does not measure (no journal)."""
        ...

    def load(self) -> list[TaskRecord]:
        """Every stored task, in no particular order. Raises StorageError for a record
        that cannot be read, naming its task."""
        ...

    def load_schedules(self) -> list[ScheduleRecord]:
        """Every stored schedule. Raises StorageError for one that cannot be read."""
        ...

    def write(
        self,
        upserts: Sequence[TaskRecord],
        deletes: Sequence[str],
        schedules: Sequence[ScheduleRecord] = (),
        schedule_deletes: Sequence[str] = (),
    ) -> None:
        """Store ``upserts`` (replacing records with the same task id), then remove the
        tasks ``deletes`` names, and the same for schedules by name, in one transaction.
        Raises StorageError on any failure, and then nothing of this call is applied; a
        later call may succeed again."""
        ...

    def size(self) -> int:
        """Bytes the store takes on disk."""
        ...

    def close(self) -> None:
        """Release the store. Closing twice is harmless."""
        ...


class MemoryJournal:
    """No journal: nothing is stored, so a restart starts empty."""

    def __init__(self, *, sync: str = "normal") -> None:
        self.path = MEMORY_JOURNAL_PATH
        self.sync = check_sync_mode(sync)
        self.commit_times: Histogram | None = None

    def load(self) -> list[TaskRecord]:
        return []

    def load_schedules(self) -> list[ScheduleRecord]:
        return []

    def write(
        self,
        upserts: Sequence[TaskRecord],
        deletes: Sequence[str],
        schedules: Sequence[ScheduleRecord] = (),
        schedule_deletes: Sequence[str] = (),
    ) -> None:
        pass

    def size(self) -> int:
        return 0

    def close(self) -> None:
        pass


def check_sync_mode(sync: str) -> str:
    """``sync`` if it is one of :data:`JOURNAL_SYNC_MODES`; ConfigurationError if not."""
    if sync not in JOURNAL_SYNC_MODES:
        raise ConfigurationError(
            f"journal sync mode {sync!r} is not one of {', '.join(JOURNAL_SYNC_MODES)}"
        )
    return sync


def open_journal(path: str, *, sync: str = "normal") -> Journal:
    """The journal at ``path``: ``":memory:"`` for none, anything else a SQLite file,
    created if missing. Raises ConfigurationError for an unknown ``sync`` and
    StorageError for a file that cannot be used."""
    check_sync_mode(sync)
    if path == MEMORY_JOURNAL_PATH:
        return MemoryJournal(sync=sync)
    # Imported here so that running without a journal never loads sqlite3.
    from .sqlite_journal import SqliteJournal

    return SqliteJournal(path, sync=sync)
