"""The journal as an embedded SQLite file: WAL, one table, one commit per call.

One row per task: its id and its :class:`~fastworker.server.journal.TaskRecord` as msgpack,
under an integer key given in order of last write. Each write of a task appends its new
row at the end of the table and deletes the old one, so a commit fills a few pages at the
end and frees rows elsewhere; rewriting a row in place, where it grows from queued to
finished, splits pages all over the tasks in flight. The journal keeps each task's key in
memory, so no index on the task id is needed. The caller batches a whole event-loop turn
into one :meth:`SqliteJournal.write` (group commit), so the cost of a commit is shared by
every task that changed in that turn.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from itertools import chain
from typing import Any, TypeVar

import msgspec

from fastworker.protocol import StorageError

from .histograms import Histogram
from .journal import ScheduleRecord, TaskRecord, check_sync_mode

__all__ = ["SCHEMA_VERSION", "SqliteJournal", "ignore_file_size_signal"]

SCHEMA_VERSION = 2
"""Stored in ``PRAGMA user_version``; a file with a higher one was written by a newer
fastworker and is refused rather than misread. Version 1 had no ``schedules`` table; it
is added when such a file is opened."""

# SQLite checkpoints the WAL into the database every 1,000 pages (4 MiB at the default page
# size) and then cuts the file back to this size, so a busy journal's WAL stays a few MiB.
_WAL_AUTOCHECKPOINT_PAGES = 1000
_WAL_SIZE_LIMIT = 4 * 1024 * 1024

_SCHEMA = "CREATE TABLE tasks (id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, record BLOB NOT NULL)"
_SCHEDULES_SCHEMA = "CREATE TABLE schedules (name TEXT PRIMARY KEY, record BLOB NOT NULL)"
_UPSERT_SCHEDULE = "INSERT OR REPLACE INTO schedules (name, record) VALUES (?, ?)"
_DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = ?"
# Rows go to SQLite _CHUNK to a statement, the rest one by one: stepping a statement per
# row costs about as much as storing the row.
_CHUNK = 64
_INSERT = "INSERT INTO tasks (id, task_id, record) VALUES (?, ?, ?)"
_INSERT_CHUNK = _INSERT.replace("(?, ?, ?)", ", ".join(["(?, ?, ?)"] * _CHUNK))
_DELETE = "DELETE FROM tasks WHERE id = ?"
_DELETE_CHUNK = f"DELETE FROM tasks WHERE id IN ({', '.join('?' * _CHUNK)})"

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(TaskRecord)
_SCHEDULE_DECODER = msgspec.msgpack.Decoder(ScheduleRecord)

_MOVE_ASIDE = "move it aside (or use another --journal file) to start with an empty journal"


def ignore_file_size_signal() -> None:
    """Make a write past the process's file-size limit (``ulimit -f``) fail with an error
    the journal reports as StorageError, instead of SIGXFSZ killing the process. Call it
    once, from the main thread, at start."""
    if sys.platform != "win32":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


class SqliteJournal:
    """A journal in one SQLite file, used by one control plane at a time.

    Not thread-safe: calls must not overlap, but they may come from any one thread at a
    time (the control plane may move writes off its event loop).
    """

    def __init__(self, path: str, *, sync: str = "normal") -> None:
        self.path = path
        self.sync = check_sync_mode(sync)
        self.commit_times = Histogram()
        """Seconds each write that stored something took, encoding to commit."""
        self._wal_path = path + "-wal"
        self._pid_path = path + "-pid"
        connection = _open(path, sync, self._pid_path)
        try:
            # Each stored task's key; write() keeps it in step with the table.
            self._keys = _read_keys(connection, path)
        except StorageError:
            connection.close()
            raise
        self._next_key = max(self._keys.values(), default=0) + 1
        self._connection: sqlite3.Connection | None = connection
        # A hint for the message a second control plane gets; the lock itself is SQLite's.
        with contextlib.suppress(OSError), open(self._pid_path, "w") as pid_file:
            pid_file.write(f"{os.getpid()}\n")

    def load(self) -> list[TaskRecord]:
        sql = "SELECT task_id, record FROM tasks ORDER BY id"
        records = _load(self._require_open(), self.path, sql, _DECODER, "task")
        for task_id, record in records:
            if record.task_id != task_id:
                raise StorageError(
                    f"journal {self.path} stores task {record.task_id!r} under the id"
                    f" {task_id!r}; {_MOVE_ASIDE}"
                )
        return [record for _, record in records]

    def load_schedules(self) -> list[ScheduleRecord]:
        sql = "SELECT name, record FROM schedules ORDER BY name"
        records = _load(self._require_open(), self.path, sql, _SCHEDULE_DECODER, "schedule")
        return [record for _, record in records]

    def write(
        self,
        upserts: Sequence[TaskRecord],
        deletes: Sequence[str],
        schedules: Sequence[ScheduleRecord] = (),
        schedule_deletes: Sequence[str] = (),
    ) -> None:
        connection = self._require_open()
        if not upserts and not deletes and not schedules and not schedule_deletes:
            return
        started = time.perf_counter()
        try:
            blobs = [_ENCODER.encode(record) for record in upserts]
            schedule_rows = [(record.name, _ENCODER.encode(record)) for record in schedules]
        except (TypeError, ValueError) as exc:  # msgspec.EncodeError is a ValueError
            raise StorageError(f"could not encode a task for journal {self.path}: {exc}") from exc
        keys = self._keys
        next_key = self._next_key
        # (task id, its key before or None), in the order changed: what undoes this call.
        undo: list[tuple[str, int | None]] = []
        rows: list[tuple[int, str, bytes]] = []
        removals: list[int] = []  # keys of the rows replaced or deleted
        try:
            for record, blob in zip(upserts, blobs, strict=True):
                task_id = record.task_id
                old = keys.get(task_id)
                if old is not None:
                    removals.append(old)
                undo.append((task_id, old))
                keys[task_id] = next_key
                rows.append((next_key, task_id, blob))
                next_key += 1
            for task_id in deletes:
                old = keys.pop(task_id, None)
                if old is not None:
                    undo.append((task_id, old))
                    removals.append(old)
            removals.sort()  # neighbouring rows go together, page by page
            connection.execute("BEGIN")
            _execute(connection, _INSERT_CHUNK, _INSERT, rows)
            _execute(connection, _DELETE_CHUNK, _DELETE, [(key,) for key in removals])
            if schedule_rows or schedule_deletes:
                connection.executemany(_UPSERT_SCHEDULE, schedule_rows)
                connection.executemany(_DELETE_SCHEDULE, [(name,) for name in schedule_deletes])
            connection.execute("COMMIT")
        except (sqlite3.Error, TypeError) as exc:  # TypeError: a task id that is no str
            # SQLite rolls back by itself after an I/O error; after any other, we do.
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            for task_id, old in reversed(undo):
                if old is None:
                    keys.pop(task_id, None)
                else:
                    keys[task_id] = old
            raise StorageError(
                f"could not write to journal {self.path}: {_describe(exc)}; nothing was stored"
            ) from exc
        self._next_key = next_key
        self.commit_times.observe(time.perf_counter() - started)

    def size(self) -> int:
        return _file_size(self.path) + _file_size(self._wal_path)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self._pid_path)
        try:
            connection.close()  # checkpoints the WAL into the database and removes it
        except sqlite3.Error as exc:
            raise StorageError(f"could not close journal {self.path}: {exc}") from exc

    def _require_open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StorageError(f"journal {self.path} is closed")
        return self._connection


def _open(path: str, sync: str, pid_path: str) -> sqlite3.Connection:
    """A connection that holds the file's lock until it is closed, on a checked file of
    our schema. Raises StorageError saying what is wrong and what to do."""
    _check_access(path)
    _create_private(path)
    try:
        # timeout=0: a file in use is refused at once rather than waited for.
        connection = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _open_error(path, exc, pid_path) from exc
    try:
        _prepare(connection, path, sync)
    except sqlite3.Error as exc:
        connection.close()
        raise _open_error(path, exc, pid_path) from exc
    except StorageError:
        connection.close()
        raise
    return connection


def _execute(
    connection: sqlite3.Connection, chunk_sql: str, row_sql: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run ``row_sql`` for each row in order, as ``chunk_sql`` (the same for _CHUNK rows)
    where it can."""
    whole = len(rows) - len(rows) % _CHUNK
    for start in range(0, whole, _CHUNK):
        connection.execute(chunk_sql, list(chain.from_iterable(rows[start : start + _CHUNK])))
    if whole < len(rows):
        connection.executemany(row_sql, rows[whole:])


def _select(connection: sqlite3.Connection, path: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of one query; StorageError if SQLite cannot read them."""
    try:
        return connection.execute(sql).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"could not read journal {path}: {exc}") from exc


_Record = TypeVar("_Record", TaskRecord, ScheduleRecord)


def _load(
    connection: sqlite3.Connection,
    path: str,
    sql: str,
    decoder: msgspec.msgpack.Decoder[_Record],
    kind: str,
) -> list[tuple[str, _Record]]:
    """``(key, record)`` for each row ``sql`` selects as (key, msgpack blob), decoded;
    StorageError naming the first row that cannot be read."""
    records: list[tuple[str, _Record]] = []
    for key, blob in _select(connection, path, sql):
        try:
            records.append((key, decoder.decode(blob)))
        except (msgspec.DecodeError, UnicodeDecodeError, TypeError) as exc:
            raise StorageError(
                f"journal {path} holds an unreadable record for {kind} {key!r}"
                f" ({exc}); {_MOVE_ASIDE}"
            ) from exc
    return records


def _read_keys(connection: sqlite3.Connection, path: str) -> dict[str, int]:
    rows: list[tuple[int, str]] = _select(connection, path, "SELECT id, task_id FROM tasks")
    keys: dict[str, int] = {}
    for key, task_id in rows:
        if task_id in keys:
            raise StorageError(f"journal {path} holds task {task_id!r} twice; {_MOVE_ASIDE}")
        keys[task_id] = key
    return keys


def _check_access(path: str) -> None:
    # SQLite opens a file it may not write read-only and fails later with a vaguer error.
    if os.path.isdir(path):
        raise StorageError(f"journal {path} is a directory; give the path of a file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StorageError(f"journal {path} cannot be created: {directory} does not exist")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StorageError(
            f"journal {path} is read-only to this process; give it read and write access"
            " or use another --journal file"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StorageError(
            f"journal {path} is in a directory this process cannot write ({directory});"
            " SQLite keeps its WAL beside the file, so the directory must be writable"
        )


def _prepare(connection: sqlite3.Connection, path: str, sync: str) -> None:
    # Exclusive locking: SQLite keeps a POSIX lock on the database file from the first
    # transaction until close. The kernel drops it when the process dies (kill -9
    # included), a forked child does not inherit it, and it covers every path to the
    # same file; SQLite also refuses a second connection from the same process.
    connection.execute("PRAGMA locking_mode=EXCLUSIVE")
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()
    if mode is None or mode[0] != "wal":
        raise StorageError(f"journal {path} could not be put in WAL mode (it stayed {mode})")
    connection.execute(f"PRAGMA synchronous={sync.upper()}")
    connection.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
    connection.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
    # A write transaction takes the exclusive lock now, not at the first task.
    connection.execute("BEGIN IMMEDIATE")
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"journal {path} was written by a newer fastworker (schema {version}, this one"
            f" reads up to {SCHEMA_VERSION}); upgrade, or start with --journal :memory:"
            " or another file"
        )
    problems: list[str] = [row[0] for row in connection.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        found = "; ".join(problems).replace("\n", "; ")
        raise StorageError(f"journal {path} is corrupt ({found}); {_MOVE_ASIDE}")
    if version == 0:
        if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StorageError(
                f"{path} is a SQLite database but not a fastworker journal; give another path"
            )
        connection.execute(_SCHEMA)
        connection.execute(_SCHEDULES_SCHEMA)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    elif version == 1:
        connection.execute(_SCHEDULES_SCHEMA)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    connection.execute("COMMIT")


def _create_private(path: str) -> None:
    """Create a missing journal readable by its owner only: it holds every task's
    arguments and results. SQLite gives its WAL and shared-memory files the same mode."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return  # an existing file keeps the mode its owner gave it
    except OSError as exc:
        raise StorageError(f"journal {path} cannot be created: {exc}") from exc
    os.close(descriptor)


def _open_error(path: str, exc: sqlite3.Error, pid_path: str) -> StorageError:
    reason = _reason(exc)
    if reason == "busy":
        holder = _live_pid(pid_path)
        by = "" if holder is None else f" (pid {holder})"
        if holder == os.getpid():
            by = " (in this process)"
        return StorageError(
            f"journal {path} is in use by another control plane{by}; stop it, or give"
            " this one another --journal file"
        )
    if reason in ("notadb", "corrupt"):
        return StorageError(f"journal {path} is not a usable SQLite file ({exc}); {_MOVE_ASIDE}")
    if reason in ("readonly", "cantopen", "perm"):
        return StorageError(
            f"journal {path} cannot be written ({exc}): this process needs write access to"
            " the file and to its directory (SQLite keeps its WAL beside it)"
        )
    return StorageError(f"could not open journal {path}: {_describe(exc)}")


def _reason(exc: Exception) -> str:
    """The kind of SQLite failure: its primary result code, lower case without prefix."""
    name: str | None = getattr(exc, "sqlite_errorname", None)  # Python 3.11+
    if name:
        return name.removeprefix("SQLITE_").split("_")[0].lower()
    # Python 3.10: SQLite's own wording of each primary code.
    message = str(exc)
    for text, reason in _MESSAGES:
        if text in message:
            return reason
    return ""


_MESSAGES = (
    ("database is locked", "busy"),
    ("file is not a database", "notadb"),
    ("malformed", "corrupt"),
    ("readonly database", "readonly"),
    ("unable to open database file", "cantopen"),
    ("disk is full", "full"),
    ("disk I/O error", "ioerr"),
)


def _describe(exc: Exception) -> str:
    if _reason(exc) in ("full", "ioerr"):
        return f"{exc} (is the disk full, or the file at the process's size limit?)"
    if _reason(exc) == "readonly":
        return f"{exc} (this process needs write access to the file and its directory)"
    return str(exc)


def _live_pid(pid_path: str) -> int | None:
    """The pid a running control plane left beside the journal, if that process lives."""
    try:
        with open(pid_path) as pid_file:
            pid = int(pid_file.read().strip())
    except (OSError, ValueError):
        return None
    if sys.platform == "win32":
        return pid  # os.kill would end the process there, not probe it
    try:
        os.kill(pid, 0)
    except PermissionError:
        return pid  # alive, under another user
    except OSError:
        return None  # left by a control plane that was killed
    return pid


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
