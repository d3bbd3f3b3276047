"""The journal: real SQLite files, real processes that are killed, refused, or run out of
file size; and the in-memory mode that stores nothing."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from fastworker.protocol import ConfigurationError, StorageError, TaskPriority, encode_value
from fastworker.protocol.messages import ErrorInfo, TaskOutcome, TaskStatus
from fastworker.server.journal import (
    JOURNAL_SYNC_MODES,
    Journal,
    MemoryJournal,
    ScheduleRecord,
    TaskRecord,
    open_journal,
)
from fastworker.server.sqlite_journal import SCHEMA_VERSION, SqliteJournal

WAIT = 60.0
"""Seconds a child process may take before the test fails."""

# A child process builds records the same way the tests do.
RECORD_SOURCE = textwrap.dedent(
    """
    import msgspec
    from fastworker.protocol import TaskPriority, encode_value
    from fastworker.protocol.messages import TaskStatus
    from fastworker.server.journal import TaskRecord

    def record(task_id, payload=b""):
        return TaskRecord(
            task_id=task_id, name="tests.add", priority=TaskPriority.NORMAL,
            args=msgspec.Raw(encode_value([payload])), kwargs=msgspec.Raw(encode_value({})),
            timeout=None, queued_at=1.0, idempotency_key=None, status=TaskStatus.QUEUED,
            attempts=0, order=0,
        )
    """
)


def record(task_id: str, *, order: int = 0, payload: bytes = b"") -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        name="tests.add",
        priority=TaskPriority.NORMAL,
        args=msgspec.Raw(encode_value([payload])),
        kwargs=msgspec.Raw(encode_value({})),
        timeout=None,
        queued_at=1.0,
        idempotency_key=None,
        status=TaskStatus.QUEUED,
        attempts=0,
        order=order,
    )


def full_record() -> TaskRecord:
    """A record with every field away from its default."""
    return TaskRecord(
        task_id="t" * 32,
        name="tests.charge_card",
        priority=TaskPriority.CRITICAL,
        args=msgspec.Raw(encode_value([1, "two", {"three": 3.0}, b"\x00\xff"])),
        kwargs=msgspec.Raw(encode_value({"currency": "EUR", "amounts": [1, 2, 3]})),
        timeout=2.5,
        queued_at=1_700_000_000.25,
        idempotency_key="order-42",
        status=TaskStatus.FAILED,
        attempts=3,
        order=-7,
        worker_id="fast-1",
        started_at=1_700_000_001.5,
        finished_at=1_700_000_002.75,
        outcome=TaskOutcome(
            task_id="t" * 32,
            status=TaskStatus.FAILED,
            error=ErrorInfo(code="task_failed", message="declined", remote_type="x.Declined"),
            worker_id="fast-1",
            started_at=1_700_000_001.5,
            finished_at=1_700_000_002.75,
        ),
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )


def by_id(journal: Journal) -> dict[str, TaskRecord]:
    return {stored.task_id: stored for stored in journal.load()}


def same(a: TaskRecord, b: TaskRecord) -> bool:
    """Field by field, comparing payloads by their bytes."""
    encoder = msgspec.msgpack.Encoder()
    return encoder.encode(a) == encoder.encode(b)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")


@pytest.fixture
def journal(path: str) -> Iterator[Journal]:
    opened = open_journal(path)
    yield opened
    opened.close()


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


# --- storing and reading ----------------------------------------------------------------


def test_every_field_round_trips_and_payload_bytes_stay_identical(journal: Journal) -> None:
    original = full_record()
    journal.write([original], [])
    [loaded] = journal.load()
    assert loaded == original
    assert bytes(loaded.args) == bytes(original.args)
    assert bytes(loaded.kwargs) == bytes(original.kwargs)
    assert loaded.outcome is not None
    assert loaded.outcome.error == ErrorInfo(
        code="task_failed", message="declined", remote_type="x.Declined"
    )


def test_an_upsert_replaces_the_record_with_the_same_id(journal: Journal) -> None:
    journal.write([record("a", order=1), record("b", order=2)], [])
    running = msgspec.structs.replace(
        record("a", order=1), status=TaskStatus.RUNNING, attempts=1, worker_id="w"
    )
    journal.write([running], [])
    stored = by_id(journal)
    assert sorted(stored) == ["a", "b"]
    assert same(stored["a"], running)


def test_deletes_remove_and_apply_after_the_upserts_of_the_same_call(journal: Journal) -> None:
    journal.write([record("a"), record("b"), record("c")], [])
    journal.write([record("d")], ["a", "d", "never-stored"])
    assert sorted(by_id(journal)) == ["b", "c"]


def test_an_empty_write_changes_nothing(journal: Journal) -> None:
    journal.write([record("a")], [])
    journal.write([], [])
    assert sorted(by_id(journal)) == ["a"]


def test_a_task_upserted_twice_in_one_call_keeps_the_later_record(journal: Journal) -> None:
    journal.write([record("known")], [])
    # 130 upserts: SQLite gets them 64 to a statement, so the repeats cross statements.
    filler = [record(f"filler-{i}") for i in range(127)]
    upserts = [record("new", order=1), record("known", order=1), *filler]
    upserts[100:100] = [record("new", order=2)]
    upserts.append(record("known", order=2))
    journal.write(upserts, [])
    journal.write([record("new", order=3)], [])
    stored = journal.load()
    assert len(stored) == 129  # one row per task
    assert {task.task_id: task.order for task in stored}["new"] == 3
    assert {task.task_id: task.order for task in stored}["known"] == 2


def test_a_task_upserted_and_deleted_in_one_call_is_gone(journal: Journal) -> None:
    journal.write([record("old")], [])
    journal.write([record("new"), record("old", order=1)], ["new", "old"])
    assert journal.load() == []
    journal.write([record("new"), record("old")], [])
    assert sorted(task.task_id for task in journal.load()) == ["new", "old"]


def refuse_deleting(journal: Journal, task_id: str) -> None:
    """Make SQLite fail the transaction that deletes ``task_id``, after its other work."""
    assert isinstance(journal, SqliteJournal)
    connection = journal._require_open()  # pyright: ignore[reportPrivateUsage]
    connection.execute(
        f"CREATE TEMP TRIGGER refuse BEFORE DELETE ON tasks WHEN old.task_id = '{task_id}'"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )


def test_a_failing_write_applies_nothing_and_the_next_one_works(journal: Journal) -> None:
    journal.write([record("kept"), record("refused")], [])
    refuse_deleting(journal, "refused")
    # The upserts and the first delete run inside the transaction before it fails.
    new = [record(f"new-{i}") for i in range(100)]
    with pytest.raises(StorageError, match="refused by the test; nothing was stored"):
        journal.write([*new, record("kept", order=9)], ["kept", "refused"])
    stored = journal.load()
    assert sorted(task.task_id for task in stored) == ["kept", "refused"]
    assert by_id(journal)["kept"].order == 0
    # The failed call's tasks are new again, and "kept" is still the task it replaces.
    journal.write([*new, record("kept", order=5)], [])
    stored = journal.load()
    assert len(stored) == 102
    assert by_id(journal)["kept"].order == 5
    journal.write([], ["kept", "new-0"])
    assert "kept" not in by_id(journal)
    assert len(journal.load()) == 100


def test_a_task_id_that_is_not_a_string_is_refused_and_nothing_is_applied(
    journal: Journal,
) -> None:
    journal.write([record("kept")], [])
    unhashable = cast("list[str]", [["not", "an", "id"]])
    with pytest.raises(StorageError, match="nothing was stored"):
        journal.write([record("new")], ["kept", *unhashable])
    journal.write([record("new"), record("kept", order=1)], [])
    stored = journal.load()
    assert sorted(task.task_id for task in stored) == ["kept", "new"]
    assert by_id(journal)["kept"].order == 1


def test_a_record_that_cannot_be_encoded_is_refused_and_nothing_is_applied(
    journal: Journal,
) -> None:
    bad = msgspec.structs.replace(record("bad"), name=cast("Any", object()))
    with pytest.raises(StorageError, match="encode"):
        journal.write([record("good"), bad], [])
    assert journal.load() == []


def test_schedules_are_stored_with_tasks_in_one_transaction(journal: Journal) -> None:
    tick = ScheduleRecord(name="tick", schedule="every:5", next_fire=1010.0, last_fire=1005.0)
    journal.write([record("run-1")], [], [tick])
    assert journal.load_schedules() == [tick]
    later = ScheduleRecord(name="tick", schedule="every:5", next_fire=1015.0, last_fire=1010.0)
    refuse_deleting(journal, "run-1")
    with pytest.raises(StorageError):
        journal.write([record("run-2")], ["run-1"], [later])
    assert journal.load_schedules() == [tick]  # neither the run nor the schedule moved
    assert sorted(by_id(journal)) == ["run-1"]
    journal.write([], [], [], ["tick", "never-stored"])
    assert journal.load_schedules() == []


def test_a_schema_1_file_gets_the_schedules_table_and_keeps_its_tasks(path: str) -> None:
    stored = record("old-task")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE tasks"
            " (id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, record BLOB NOT NULL)"
        )
        connection.execute(
            "INSERT INTO tasks VALUES (1, 'old-task', ?)", (msgspec.msgpack.encode(stored),)
        )
        connection.execute("PRAGMA user_version = 1")
    connection.close()
    journal = open_journal(path)
    try:
        assert [task.task_id for task in journal.load()] == ["old-task"]
        assert journal.load_schedules() == []
        tick = ScheduleRecord(name="tick", schedule="every:5", next_fire=1.0)
        journal.write([], [], [tick])
        assert journal.load_schedules() == [tick]
    finally:
        journal.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    connection.close()


def test_data_survives_close_and_reopen(path: str) -> None:
    first = open_journal(path)
    first.write([full_record(), *(record(f"task-{i}", order=i) for i in range(1000))], [])
    first.write([], ["task-0", "task-999"])
    first.close()
    second = open_journal(path)
    stored = by_id(second)
    assert len(stored) == 999
    assert same(stored["t" * 32], full_record())
    assert "task-0" not in stored
    assert stored["task-998"].order == 998
    # After reopening, an upsert still replaces the stored task and deletes still find it.
    second.write([record("task-1", order=-1), record("task-999"), record("task-1000")], [])
    second.write([], ["task-2"])
    stored = by_id(second)
    assert len(second.load()) == len(stored) == 1000
    assert stored["task-1"].order == -1
    assert "task-2" not in stored
    second.close()


def test_each_write_of_a_task_moves_its_row_to_the_end(path: str) -> None:
    journal = open_journal(path)
    journal.write([record("c"), record("a"), record("d")], [])
    journal.write([record("b"), record("a", order=1)], ["c"])
    journal.close()
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT id, task_id FROM tasks ORDER BY id").fetchall()
    connection.close()
    assert rows == [(3, "d"), (4, "b"), (5, "a")]
    reopened = open_journal(path)
    reopened.write([record("d", order=2)], [])
    assert {task.task_id: task.order for task in reopened.load()} == {"a": 1, "b": 0, "d": 2}
    reopened.close()
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT id, task_id FROM tasks ORDER BY id").fetchall()
    connection.close()
    assert rows == [(4, "b"), (5, "a"), (6, "d")]


def test_an_unreadable_record_is_reported_with_its_task_id(path: str) -> None:
    journal = open_journal(path)
    journal.write([record("good"), record("spoiled")], [])
    journal.close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE tasks SET record = x'c1c1' WHERE task_id = 'spoiled'")
    connection.close()
    journal = open_journal(path)
    with pytest.raises(StorageError, match="'spoiled'"):
        journal.load()
    journal.close()


def test_closing_twice_is_harmless_and_a_closed_journal_refuses_work(path: str) -> None:
    journal = open_journal(path)
    journal.close()
    journal.close()
    with pytest.raises(StorageError, match="closed"):
        journal.write([record("a")], [])
    with pytest.raises(StorageError, match="closed"):
        journal.load()


def test_a_record_stored_under_another_task_id_is_refused(path: str) -> None:
    journal = open_journal(path)
    journal.write([record("a"), record("b")], [])
    journal.close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE tasks SET task_id = 'c' WHERE task_id = 'b'")
    connection.close()
    journal = open_journal(path)
    with pytest.raises(StorageError, match="stores task 'b' under the id 'c'"):
        journal.load()
    journal.close()


def test_a_task_stored_twice_is_refused_at_open(path: str) -> None:
    journal = open_journal(path)
    journal.write([record("a"), record("b")], [])
    journal.close()
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO tasks (task_id, record) SELECT task_id, record FROM tasks")
    connection.close()
    with pytest.raises(StorageError, match=r"holds task '[ab]' twice; move it aside"):
        open_journal(path)


# --- durability across a killed process -------------------------------------------------

KILLED_WRITER = RECORD_SOURCE + textwrap.dedent(
    """
    import sys
    from fastworker.server.journal import open_journal
    journal = open_journal(sys.argv[1])
    for batch in range(1_000_000):
        journal.write([record(f"{batch}-{i}") for i in range(10)], [f"{batch - 50}-0"])
        print(batch, flush=True)
    """
)


def test_every_write_committed_before_a_kill_9_is_there_after_reopening(path: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, path], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        reported = -1
        try:
            while reported < 300:
                line = child.stdout.readline()
                assert line, "the writer ended before it was killed"
                reported = int(line)
        finally:
            child.kill()  # SIGKILL: no close, no final checkpoint
            child.wait(timeout=WAIT)
    assert child.returncode == -9
    journal = open_journal(path)
    stored = set(by_id(journal))
    journal.close()
    last = max(int(task_id.split("-")[0]) for task_id in stored)
    assert last >= reported
    # Each write is whole or absent: batch b's first task went with write b + 50.
    expected = {f"{batch}-{i}" for batch in range(last + 1) for i in range(1, 10)}
    expected |= {f"{batch}-0" for batch in range(max(0, last - 49), last + 1)}
    assert stored == expected


# --- files that cannot be used ----------------------------------------------------------


def test_a_file_from_a_newer_schema_is_refused(path: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(
        StorageError,
        match=rf"newer fastworker \(schema {SCHEMA_VERSION + 1},"
        rf" this one reads up to {SCHEMA_VERSION}\)",
    ):
        open_journal(path)


def test_garbage_bytes_are_refused_and_left_alone(path: str) -> None:
    garbage = b"not a database, just a file someone pointed us at\n" * 100
    Path(path).write_bytes(garbage)
    with pytest.raises(StorageError, match=r"not a usable SQLite file.*move it aside") as refused:
        open_journal(path)
    assert path in str(refused.value)
    assert Path(path).read_bytes() == garbage


def test_a_truncated_journal_is_refused(path: str) -> None:
    journal = open_journal(path)
    journal.write([record(f"task-{i}", payload=b"x" * 200) for i in range(5000)], [])
    journal.close()
    whole = Path(path).read_bytes()
    Path(path).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StorageError, match="move it aside"):
        open_journal(path)


def test_damaged_pages_are_found_by_the_check_at_open(path: str) -> None:
    journal = open_journal(path)
    journal.write([record(f"task-{i}", payload=b"x" * 200) for i in range(5000)], [])
    journal.close()
    damaged = bytearray(Path(path).read_bytes())
    middle = len(damaged) // 2 // 4096 * 4096
    damaged[middle : middle + 4096] = bytes(range(256)) * 16
    Path(path).write_bytes(bytes(damaged))
    with pytest.raises(StorageError, match=r"corrupt|not a usable"):
        open_journal(path)


def test_another_programs_database_is_not_taken_over(path: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    connection.close()
    with pytest.raises(StorageError, match="not a fastworker journal"):
        open_journal(path)
    with sqlite3.connect(path) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
    connection.close()
    assert tables == [("invoices",)]


def test_a_directory_or_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a directory"):
        open_journal(str(tmp_path))
    with pytest.raises(StorageError, match="does not exist"):
        open_journal(str(tmp_path / "missing" / "journal.db"))


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's own are private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="fastworker-journal-"))
    directory.chmod(0o755)
    yield directory
    for child in directory.iterdir():
        child.chmod(0o755)
    shutil.rmtree(directory)


READ_ONLY_OPENER = textwrap.dedent(
    """
    import os, sys
    from fastworker.protocol import StorageError
    from fastworker.server.journal import open_journal
    import fastworker.server.sqlite_journal
    if os.geteuid() == 0:  # root writes anywhere; become nobody once everything is imported
        os.setgid(65534)
        os.setuid(65534)
    try:
        open_journal(sys.argv[1]).close()
    except StorageError as exc:
        print(exc)
    else:
        print("opened")
    """
)


def test_a_read_only_file_is_refused_at_open(shared_dir: Path) -> None:
    path = shared_dir / "journal.db"
    open_journal(str(path)).close()
    shared_dir.chmod(0o777)
    path.chmod(0o444)
    child = run_child(READ_ONLY_OPENER, str(path))
    assert child.stdout.startswith(f"journal {path} is read-only"), child.stderr


def test_a_journal_in_a_read_only_directory_is_refused_at_open(shared_dir: Path) -> None:
    writable = shared_dir / "ro"
    writable.mkdir()
    open_journal(str(writable / "journal.db")).close()
    (writable / "journal.db").chmod(0o666)
    writable.chmod(0o555)
    for name in ("journal.db", "new.db"):
        child = run_child(READ_ONLY_OPENER, str(writable / name))
        assert "in a directory this process cannot write" in child.stdout, child.stderr


# --- one control plane per file ---------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from fastworker.server.journal import open_journal
    journal = open_journal(sys.argv[1])
    print("open", flush=True)
    sys.stdin.read()
    """
)

OPENER = textwrap.dedent(
    """
    import sys
    from fastworker.protocol import StorageError
    from fastworker.server.journal import open_journal
    try:
        open_journal(sys.argv[1])
    except StorageError as exc:
        print(exc)
    else:
        print("opened")
    """
)


def test_a_second_process_is_refused_while_the_first_holds_the_journal(path: str) -> None:
    journal = open_journal(path)
    journal.write([record("a")], [])
    child = run_child(OPENER, path)
    assert child.stdout.startswith(
        f"journal {path} is in use by another control plane (pid {os.getpid()})"
    ), child.stderr
    assert sorted(by_id(journal)) == ["a"]
    journal.close()
    assert run_child(OPENER, path).stdout == "opened\n"


def test_the_lock_goes_with_a_process_killed_with_kill_9(path: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline() == "open\n"
            with pytest.raises(StorageError, match=rf"in use by another .*\(pid {holder.pid}\)"):
                open_journal(path)
        finally:
            holder.kill()
            holder.wait(timeout=WAIT)
    journal = open_journal(path)
    assert journal.load() == []
    journal.close()


def test_a_second_journal_in_the_same_process_is_refused(journal: Journal, path: str) -> None:
    with pytest.raises(StorageError, match=r"in use .*\(in this process\)"):
        open_journal(path)
    journal.write([record("still-works")], [])
    assert sorted(by_id(journal)) == ["still-works"]


def test_another_path_to_the_same_file_is_refused(journal: Journal, path: str) -> None:
    link = path + ".link"
    os.symlink(path, link)
    with pytest.raises(StorageError, match="in use"):
        open_journal(link)


# --- a full disk ------------------------------------------------------------------------

FILE_SIZE_LIMITED = RECORD_SOURCE + textwrap.dedent(
    """
    import os, resource, sys
    from fastworker.protocol import StorageError
    from fastworker.server.journal import open_journal
    from fastworker.server.sqlite_journal import ignore_file_size_signal

    path = sys.argv[1]
    ignore_file_size_signal()
    journal = open_journal(path)
    journal.write([record(f"before-{i}") for i in range(100)], [])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    largest = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 8192, hard))
    try:
        journal.write([record(f"big-{i}", b"x" * 2000) for i in range(2000)], ["before-0"])
    except StorageError as exc:
        print("refused:", exc)
    assert sorted(r.task_id for r in journal.load()) == sorted(
        f"before-{i}" for i in range(100)
    )
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    journal.write([record(f"after-{i}", b"x" * 2000) for i in range(2000)], ["before-0"])
    journal.close()
    print("done")
    """
)


def test_a_write_past_the_file_size_limit_fails_cleanly_and_later_ones_work(path: str) -> None:
    child = run_child(FILE_SIZE_LIMITED, path)
    assert child.returncode == 0, child.stderr
    refused, done = child.stdout.splitlines()
    assert refused.startswith(f"refused: could not write to journal {path}: ")
    assert "nothing was stored" in refused
    assert done == "done"
    journal = open_journal(path)
    stored = set(by_id(journal))
    journal.close()
    expected = {f"before-{i}" for i in range(1, 100)} | {f"after-{i}" for i in range(2000)}
    assert stored == expected


# --- size on disk -----------------------------------------------------------------------

# SQLite checkpoints every 1,000 pages (4 MiB) and then restarts the WAL; past that it
# holds at most the commit that crossed the line (a few hundred KiB here), so 6 MiB.
WAL_BOUND = 6 * 1024 * 1024


def test_the_wal_stays_bounded_through_100_000_upserts_and_deletes(path: str) -> None:
    journal = open_journal(path)
    empty = journal.size()
    largest_wal = 0
    previous: list[str] = []
    for batch in range(100):
        ids = [f"{batch}-{i}" for i in range(1000)]
        journal.write([record(task_id, payload=b"x" * 100) for task_id in ids], previous)
        previous = ids
        largest_wal = max(largest_wal, os.path.getsize(path + "-wal"))
        if batch == 0:
            assert journal.size() > empty
    assert largest_wal < WAL_BOUND
    # 1,000 live records of ~200 bytes: freed pages are reused, the file does not grow.
    assert journal.size() < 2 * 1024 * 1024 + WAL_BOUND
    assert os.path.getsize(path) < 2 * 1024 * 1024
    assert len(journal.load()) == 1000
    journal.close()
    assert not os.path.exists(path + "-wal")  # the last close checkpoints it away


# --- modes and settings -----------------------------------------------------------------


def test_the_memory_journal_stores_nothing() -> None:
    journal = open_journal(":memory:")
    assert isinstance(journal, MemoryJournal)
    assert journal.path == ":memory:"
    journal.write([record("a")], [])
    assert journal.load() == []
    assert journal.size() == 0
    journal.close()
    journal.close()


@pytest.mark.parametrize("sync", JOURNAL_SYNC_MODES)
def test_each_sync_mode_sets_sqlite_synchronous(path: str, sync: str) -> None:
    journal = open_journal(path, sync=sync)
    assert isinstance(journal, SqliteJournal)
    assert journal.sync == sync
    connection = journal._require_open()  # pyright: ignore[reportPrivateUsage]
    assert connection.execute("PRAGMA synchronous").fetchone() == ({"normal": 1, "full": 2}[sync],)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    journal.close()


@pytest.mark.parametrize("target", [":memory:", "journal.db"])
def test_an_unknown_sync_mode_is_a_configuration_error(tmp_path: Path, target: str) -> None:
    path = target if target == ":memory:" else str(tmp_path / target)
    with pytest.raises(ConfigurationError, match="'off' is not one of normal, full"):
        open_journal(path, sync="off")
    assert not (tmp_path / "journal.db").exists()


def test_a_new_journal_is_readable_by_its_owner_only(path: str) -> None:
    journal = open_journal(path)
    try:
        journal.write([record("private")], [])
        for name in (path, path + "-wal"):
            assert os.stat(name).st_mode & 0o077 == 0, oct(os.stat(name).st_mode)
    finally:
        journal.close()
