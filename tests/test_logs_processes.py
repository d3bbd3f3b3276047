"""``--log-format json`` in real processes: a control plane, a subworker (the format
from the environment), the dashboard; every line on stderr is a JSON object, and the
lines about a task carry its id, name and worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fastworker.client import Client
from fastworker.protocol import TaskFailedError
from fastworker.server.core import LOCAL_WORKER_ID
from fw_processes import START_TIMEOUT, TESTS_DIR, Processes, connect, wait_for_workers

FIELDS = ("time", "level", "logger", "message")


def _start(
    processes: Processes, argv: list[str], name: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A process whose stderr is a file of its own (``<name>.err``), ended at teardown."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    out = processes.tmp_path / f"{name}.out"
    err = processes.tmp_path / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(argv, cwd=TESTS_DIR, stdout=stdout, stderr=stderr, env=full_env)
    processes.started.append(process)
    return process


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=START_TIMEOUT)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path``, each of which must be one JSON object with the fields."""
    lines: list[dict[str, Any]] = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}: not JSON: {text!r}")
        assert isinstance(line, dict), text
        assert all(name in line for name in FIELDS), text
        lines.append(line)  # pyright: ignore[reportUnknownArgumentType]
    assert lines, f"{path.name} is empty"
    return lines


def _about(lines: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("task_id") == task_id]


async def test_control_plane_and_subworker_log_json_lines_about_their_tasks(
    processes: Processes, tmp_path: Path
) -> None:
    address = processes.address()
    fastworker = [sys.executable, "-m", "fastworker.server.cli"]
    plane = _start(
        processes,
        [
            *fastworker,
            "control-plane",
            "--address",
            address,
            "--task-modules",
            "fw_log_tasks",
            "--no-local-execution",
            "--no-dashboard",
            "--journal",
            str(tmp_path / "journal.sqlite3"),
            "--log-format",
            "json",
        ],
        "control-plane",
    )
    worker = _start(
        processes,
        [
            *fastworker,
            "subworker",
            "--worker-id",
            "w-json",
            "--control-plane-address",
            address,
            "--task-modules",
            "fw_log_tasks",
            "--concurrency",
            "2",
        ],
        "subworker",
        env={"FASTWORKER_LOG_FORMAT": "json"},
    )
    client: Client = await connect(address)
    try:
        await wait_for_workers(client, 1)
        said = await client.delay("say", "hello there")
        said_async = await client.delay("say_async", "hi")
        exploded = await client.delay("explode", "kaboom")
        assert await client.result(said, timeout=START_TIMEOUT) == "hello there"
        assert await client.result(said_async, timeout=START_TIMEOUT) == "hi"
        with pytest.raises(TaskFailedError, match="kaboom"):
            await client.result(exploded, timeout=START_TIMEOUT)
    finally:
        await client.stop()
    assert _stop(worker) == 0
    assert _stop(plane) == 0

    worker_lines = _json_lines(tmp_path / "subworker.err")
    (line,) = _about(worker_lines, said)
    assert line["message"] == "saying hello there"
    assert (line["logger"], line["level"]) == ("fw_log_tasks", "info")
    assert (line["task_name"], line["worker_id"], line["words"]) == ("say", "w-json", 2)
    (line,) = _about(worker_lines, said_async)
    assert (line["task_name"], line["worker_id"]) == ("say_async", "w-json")
    (line,) = _about(worker_lines, exploded)
    assert line["level"] == "warning"
    assert (line["task_name"], line["worker_id"]) == ("explode", "w-json")
    assert "ValueError: kaboom" in line["message"]
    assert line["exception"].rstrip().endswith("ValueError: kaboom")
    assert any("registered with control plane" in line["message"] for line in worker_lines)

    plane_lines = _json_lines(tmp_path / "control-plane.err")
    assert any("listening on" in line["message"] for line in plane_lines)
    assert any("subworker w-json joined" in line["message"] for line in plane_lines)


async def test_a_task_run_by_the_control_plane_itself_names_it_as_its_worker(
    processes: Processes, tmp_path: Path
) -> None:
    address = processes.address()
    plane = _start(
        processes,
        [
            *[sys.executable, "-m", "fastworker.server.cli", "control-plane"],
            *["--address", address, "--task-modules", "fw_log_tasks", "--no-dashboard"],
            *["--journal", ":memory:"],
        ],
        "control-plane",
        env={"FASTWORKER_LOG_FORMAT": "json"},
    )
    client = await connect(address)
    try:
        said = await client.delay("say", "locally")
        assert await client.result(said, timeout=START_TIMEOUT) == "locally"
    finally:
        await client.stop()
    assert _stop(plane) == 0
    (line,) = _about(_json_lines(tmp_path / "control-plane.err"), said)
    assert (line["task_name"], line["worker_id"]) == ("say", LOCAL_WORKER_ID)


async def test_the_dashboard_logs_json_lines(
    control_plane: tuple[str, Client], processes: Processes, tmp_path: Path
) -> None:
    address, _client = control_plane
    dashboard = _start(
        processes,
        [
            *[sys.executable, "-m", "fastworker.dashboard", "--port", "0"],
            *["--log-format", "json", "--log-level", "info"],
        ],
        "dashboard",
        # The variable of 0.1 still works, and says it is deprecated: a log line.
        env={"FASTWORKER_CONTROL_PLANE": address},
    )
    out = tmp_path / "dashboard.out"
    listening = await _wait_for_line(out, "listening on http://")
    url = listening.split(" listening on ", 1)[1].split(" ", 1)[0]
    assert await asyncio.to_thread(_status, url + "api/overview") == 200
    assert _stop(dashboard) == 0
    lines = _json_lines(tmp_path / "dashboard.err")
    assert any(
        line["level"] == "warning" and "FASTWORKER_CONTROL_PLANE is deprecated" in line["message"]
        for line in lines
    )


async def _wait_for_line(path: Path, text: str) -> str:
    """The first line of ``path`` holding ``text``, once the process wrote it."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in _text(path).splitlines():
            if text in line:
                return line
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{path.name} has no line with {text!r}: {_text(path)!r}")


def _text(path: Path) -> str:
    return path.read_text()


def _status(url: str) -> int:
    """GET ``url``'s status, asking again while nothing listens yet (the line saying
    where may come just before uvicorn accepts)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=START_TIMEOUT) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "fastworker.server.cli", "control-plane", "--log-format", "xml"],
        [sys.executable, "-m", "fastworker.server.cli", "subworker", "--log-format", "xml"],
        [sys.executable, "-m", "fastworker.server.cli", "ping", "--log-format", "xml"],
        [sys.executable, "-m", "fastworker.dashboard", "--log-format", "xml"],
    ],
    ids=["control-plane", "subworker", "ping", "dashboard"],
)
def test_an_unknown_log_format_is_a_usage_error_naming_the_choices(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--log-format: 'xml' is not one of text, json" in done.stderr


def test_an_unknown_log_format_in_the_environment_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastworker.server.cli", "ping"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FASTWORKER_LOG_FORMAT": "xml"},
    )
    assert done.returncode == 2
    assert "FASTWORKER_LOG_FORMAT: 'xml' is not one of text, json" in done.stderr
