"""A control plane with a shared secret refuses clients and subworkers without it, and
one that would listen beyond loopback refuses to start without one."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from fastworker.client import Client
from fastworker.protocol import AuthenticationError
from fw_processes import TESTS_DIR, Processes, connect, wait_for_workers

pytestmark = pytest.mark.timeout(60)

SECRET = "correct horse battery staple"


async def test_clients_need_the_shared_secret(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--auth-token", SECRET)
    client = await connect(address, auth_token=SECRET)
    try:
        assert await client.run("add", 1, 2, wait=10) == 3
        with pytest.raises(AuthenticationError, match="wrong shared secret"):
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
        assert "wrong shared secret" in processes.log("subworker-impostor")
        processes.subworker(address, "member", "--auth-token", SECRET)
        await wait_for_workers(client, 1)
        overview = await client.overview()
        assert [w.worker_id for w in overview.workers] == ["member"]
    finally:
        await client.stop()


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
