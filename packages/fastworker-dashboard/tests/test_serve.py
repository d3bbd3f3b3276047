"""serve() runs uvicorn inside a loop someone else owns; the command line binds
loopback by default and refuses to expose the dashboard without a token."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fastworker.dashboard import serve
from fastworker.dashboard.cli import main
from fastworker.dashboard.server import (
    SHUTDOWN_TIMEOUT,
    _serve,  # pyright: ignore[reportPrivateUsage]
    bind,
    is_loopback,
)
from fastworker.protocol import ConfigurationError

pytestmark = pytest.mark.timeout(60)

SLACK = 10.0
"""Seconds a loaded machine may add to a bound derived from a configured timeout."""


def _get(url: str, *, wait: float = 10.0) -> tuple[int, str]:
    """GET ``url``, retrying while nothing listens yet; (status, body)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _status(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_serve_runs_in_the_running_loop_and_stops_when_cancelled(tmp_path: Path) -> None:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    announced: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(
        _serve(
            f"ipc://{tmp_path}/nobody.sock",
            "127.0.0.1",
            0,
            access_token=None,
            announce=announced.put_nowait,
        )
    )
    try:
        message = await asyncio.wait_for(announced.get(), 10)
        assert "bound to loopback only" in message
        url = message.split(" listening on ", 1)[1].split(" ", 1)[0]
        status, body = await asyncio.to_thread(_get, url + "api/overview")
        assert status == 503
        assert '"control_plane_unreachable"' in body
        # Without a token it answers only to loopback names: not to a page that made a
        # name of its own resolve to 127.0.0.1.
        port = url.rsplit(":", 1)[1].split("/", 1)[0]
        for name, expected in ((f"localhost:{port}", 503), ("rebound.example", 400)):
            request = urllib.request.Request(url + "api/overview", headers={"Host": name})
            assert await asyncio.to_thread(_status, request) == expected, name
        # uvicorn installed no signal handler of its own in our loop's thread.
        assert {s: signal.getsignal(s) for s in handlers} == handlers
    finally:
        task.cancel()  # it serves until cancelled, also when a check above failed
    # serve() gives open requests SHUTDOWN_TIMEOUT, then waits two seconds more at most.
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, SHUTDOWN_TIMEOUT + 2 + SLACK)


async def test_serve_refuses_other_hosts_without_a_token() -> None:
    with pytest.raises(ConfigurationError, match="access token"):
        await serve(None, "0.0.0.0", 0)


def test_a_taken_port_is_an_os_error_not_an_exit() -> None:
    taken = bind("127.0.0.1", 0)
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"):
            bind("127.0.0.1", port).close()
    finally:
        taken.close()


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")


def test_the_command_line_refuses_to_expose_the_dashboard_without_a_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "access token" in capsys.readouterr().err


def test_the_command_line_reads_its_secrets_from_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "dashboard-token"
    token.write_text("s3cret\n")
    # Read from the file, the token lets the dashboard listen beyond loopback; the
    # address is a documentation one no host here has, so the bind itself fails.
    assert main(["--host", "192.0.2.1", "--port", "0", "--access-token-file", str(token)]) == 2
    assert "access token" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--auth-token-file", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "--auth-token-file: cannot read" in capsys.readouterr().err


def test_the_command_line_checks_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "70000"])
    assert exit_info.value.code == 2
    monkeypatch.setenv("FASTWORKER_DASHBOARD_PORT", "http")
    with pytest.raises(SystemExit):
        main([])


def test_the_command_runs_says_where_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FASTWORKER_ADDRESS": f"ipc://{tmp_path}/nobody.sock",
        "FASTWORKER_DASHBOARD_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "fastworker.dashboard", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert "listening on http://127.0.0.1:" in line
            assert "bound to loopback only" in line
            url = line.split(" listening on ", 1)[1].split(" ", 1)[0]
            status, _body = _get(url + "api/overview")
            assert status == 503
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)


def test_the_address_variable_is_the_one_every_command_reads(tmp_path: Path) -> None:
    from fastworker.dashboard.cli import parse_command_line

    address = f"ipc://{tmp_path}/cp.sock"
    assert parse_command_line([], {"FASTWORKER_ADDRESS": address}, tmp_path).address == address
    old = parse_command_line([], {"FASTWORKER_CONTROL_PLANE": address}, tmp_path)
    assert old.address == address  # the 0.1 variable, still read when the new one is unset
    flag = parse_command_line(["--control-plane", "tcp://127.0.0.1:1"], {}, tmp_path)
    assert flag.address == "tcp://127.0.0.1:1"
