"""A control plane with a shared secret refuses clients and subworkers without it, and
one that would listen beyond loopback refuses to start without one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from fastworker.client import Client
from fastworker.protocol import AuthenticationError, ConnectionLimitError
from fw_processes import TESTS_DIR, Processes, connect, wait_for_workers

pytestmark = pytest.mark.timeout(60)

SECRET = "correct horse battery staple"


async def test_clients_need_the_shared_secret(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--auth-token", SECRET)
    client = await connect(address, auth_token=SECRET)
    try:
        assert await client.run("add", 1, 2, wait=10) == 3
        with pytest.raises(AuthenticationError, match="wrong secret for a client"):
            await Client(address, auth_token="guess").start()
        with pytest.raises(AuthenticationError):
            await Client(address).start()
    finally:
        await client.stop()


async def test_a_subworker_with_a_wrong_secret_is_refused_and_exits(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--auth-token", SECRET, "--no-local-execution")
    client = await connect(address, auth_token=SECRET)
    try:
        impostor = processes.subworker(address, "impostor", "--auth-token", "guess")
        assert await asyncio.to_thread(impostor.wait, 20) == 4
        assert "wrong secret for a subworker" in processes.log("subworker-impostor")
        processes.subworker(address, "member", "--auth-token", SECRET)
        await wait_for_workers(client, 1)
        overview = await client.overview()
        assert [w.worker_id for w in overview.workers] == ["member"]
    finally:
        await client.stop()


WORKER_SECRET = "only for subworkers"
CLIENT_SECRET = "only for clients"


async def test_workers_and_clients_have_credentials_of_their_own(
    processes: Processes, tmp_path: Path
) -> None:
    address = processes.address()
    client_file = tmp_path / "client-token"
    client_file.write_text(CLIENT_SECRET + "\n")
    processes.control_plane(
        address,
        "--no-local-execution",
        "--worker-token",
        WORKER_SECRET,
        "--client-token-file",
        str(client_file),
    )
    client = await connect(address, auth_token=CLIENT_SECRET)
    try:
        # A client's credential never registers a subworker, so a web app's secret
        # cannot receive other apps' task arguments.
        impostor = processes.subworker(address, "impostor", "--auth-token", CLIENT_SECRET)
        assert await asyncio.to_thread(impostor.wait, 20) == 4
        assert "this secret is a client's" in processes.log("subworker-impostor")
        with pytest.raises(AuthenticationError, match="this secret is a subworker's"):
            await Client(address, auth_token=WORKER_SECRET).start()
        worker_file = tmp_path / "worker-token"
        worker_file.write_text(WORKER_SECRET)
        processes.subworker(address, "member", "--auth-token-file", str(worker_file))
        await wait_for_workers(client, 1)
        assert await client.run("add", 2, 3, wait=10) == 5
        overview = await client.overview()
        assert [w.worker_id for w in overview.workers] == ["member"]
    finally:
        await client.stop()


def test_a_secret_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastworker.server.cli",
            "control-plane",
            "--worker-token-file",
            str(tmp_path / "missing"),
        ],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--worker-token-file: cannot read" in result.stderr


def test_listening_beyond_loopback_without_a_secret_is_refused() -> None:
    # 192.0.2.1 is a documentation address no host here has: even a broken check could
    # not expose anything.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastworker.server.cli",
            "control-plane",
            "--address",
            "tcp://192.0.2.1:5555",
        ],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--auth-token" in result.stderr


async def test_a_connection_past_the_limit_gets_a_typed_refusal(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--max-connections", "1")
    client = await connect(address)
    try:
        with pytest.raises(ConnectionLimitError, match="--max-connections"):
            await Client(address, request_timeout=5.0).start()
        assert await client.run("add", 1, 1, wait=10) == 2  # the one inside is served
    finally:
        await client.stop()
    again = await connect(address)  # the slot is free again once the first one left
    await again.stop()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("localhost", True),
        ("[::1]", True),
        ("127.example.com", False),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
    ],
)
def test_only_loopback_hosts_count_as_loopback(host: str, loopback: bool) -> None:
    from fastworker.server.control_plane import _is_loopback  # pyright: ignore[reportPrivateUsage]

    assert _is_loopback(host) is loopback
