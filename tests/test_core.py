"""Client -> control plane -> subworkers, end to end, with real processes."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time

import pytest
from msgspec import Raw

from fastworker.client import (
    Client,
    InvalidArgumentsError,
    TaskCall,
    TaskFailedError,
    TaskPriority,
    TaskStatus,
    TaskTimeoutError,
    UnknownTaskError,
    UnsupportedValueError,
)
from fastworker.protocol import decode_frame, encode_frame
from fastworker.protocol import messages as m
from fw_processes import Processes, connect, wait_for_workers
from fw_waits import SLACK, Gate, wait_for_overview, wait_for_task

pytestmark = pytest.mark.timeout(120)

LEASE_TIMEOUT = 2.0
DRAIN_TIMEOUT = 1.0


async def test_the_control_plane_runs_tasks_itself_with_no_subworker(
    control_plane: tuple[str, Client],
) -> None:
    _address, client = control_plane
    assert await client.run("add", 2, 3, wait=10) == 5
    assert await client.run("async_add", 2, 3, wait=10) == 5


async def test_two_thousand_concurrent_tasks_each_get_their_own_result(
    control_plane: tuple[str, Client],
) -> None:
    _address, client = control_plane
    ids = await asyncio.gather(*(client.delay("add", i, i) for i in range(2000)))
    results = await asyncio.gather(*(client.result(task_id, timeout=60) for task_id in ids))
    assert results == [2 * i for i in range(2000)]


def _run_client_processes(address: str, offsets: list[int]) -> list[int]:
    script = (
        "import asyncio, sys\n"
        "from fastworker.client import Client\n"
        "async def main(offset):\n"
        "    async with Client(sys.argv[1]) as c:\n"
        "        ids = await asyncio.gather(*(c.delay('add', offset, i) for i in range(500)))\n"
        "        got = await asyncio.gather(*(c.result(t, timeout=60) for t in ids))\n"
        "        assert got == [offset + i for i in range(500)], 'wrong results'\n"
        "asyncio.run(main(int(sys.argv[2])))\n"
    )
    clients = [
        subprocess.Popen([sys.executable, "-c", script, address, str(offset)]) for offset in offsets
    ]
    try:
        return [process.wait(timeout=90) for process in clients]
    finally:
        for process in clients:
            if process.poll() is None:
                process.kill()


async def test_four_client_processes_at_once_get_their_own_results(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        processes.subworker(address, "one", "--concurrency", "4")
        processes.subworker(address, "two", "--concurrency", "4")
        await wait_for_workers(client, 2)
        exit_codes = await asyncio.to_thread(_run_client_processes, address, [0, 1000, 2000, 3000])
        assert exit_codes == [0, 0, 0, 0]
    finally:
        await client.stop()


async def test_a_batch_is_submitted_in_one_request(control_plane: tuple[str, Client]) -> None:
    _address, client = control_plane
    ids = await client.delay_many([TaskCall("add", (i, 1)) for i in range(100)])
    assert len(set(ids)) == 100
    assert await asyncio.gather(*(client.result(t, timeout=30) for t in ids)) == [
        i + 1 for i in range(100)
    ]


async def test_work_moves_to_a_subworker_when_one_joins(
    processes: Processes, control_plane: tuple[str, Client]
) -> None:
    address, client = control_plane
    alone = await client.wait(await client.delay("add", 1, 1), timeout=10)
    assert alone.worker_id == "control-plane"  # with no subworker, it ran the task itself
    processes.subworker(address, "joiner")
    await wait_for_workers(client, 1)
    joined = await client.wait(await client.delay("add", 1, 1), timeout=10)
    assert joined.worker_id == "joiner"


async def test_results_are_pushed_and_callbacks_fire(control_plane: tuple[str, Client]) -> None:
    _address, client = control_plane
    finished: asyncio.Queue[object] = asyncio.Queue()

    async def on_done(result: object) -> None:
        await finished.put(result)

    task_id = await client.delay("add", 20, 22, on_complete=on_done)
    result = await asyncio.wait_for(finished.get(), 10)
    assert getattr(result, "value", None) == 42
    assert getattr(result, "task_id", None) == task_id


async def test_a_second_client_can_wait_for_a_task_it_did_not_submit(
    control_plane: tuple[str, Client],
) -> None:
    address, client = control_plane
    task_id = await client.delay("nap", 0.3)
    async with Client(address) as other:
        assert await other.result(task_id, timeout=10) == 0.3
        # And later, from the result cache.
        assert await other.result(task_id, timeout=10) == 0.3


async def test_priorities_are_strict_under_load(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        processes.subworker(address, "only", "--concurrency", "1")
        await wait_for_workers(client, 1)
        blocker = await client.delay("block", 1.0)
        low = await client.delay_many(
            [TaskCall("stamp", ("low",), priority="low") for _ in range(200)]
        )
        critical = await client.delay_many(
            [TaskCall("stamp", ("critical",), priority=TaskPriority.CRITICAL) for _ in range(20)]
        )
        await client.result(blocker, timeout=30)
        low_starts = await asyncio.gather(*(client.result(t, timeout=60) for t in low))
        critical_starts = await asyncio.gather(*(client.result(t, timeout=60) for t in critical))
        # Every CRITICAL task started before every LOW task still queued when they came.
        assert max(critical_starts) < min(low_starts)
        # FIFO within a level.
        assert low_starts == sorted(low_starts)
    finally:
        await client.stop()


async def test_work_spreads_by_load_and_a_slow_worker_gets_less(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        processes.subworker(address, "fast-1", "--concurrency", "2")
        processes.subworker(address, "fast-2", "--concurrency", "2")
        # The same slots, but each lag task takes it 20 times as long (see fw_tasks.lag).
        processes.subworker(address, "slow", "--concurrency", "2", env={"FW_SLOW": "1"})
        await wait_for_workers(client, 3)
        # Six tasks that hold their slots: least-loaded dispatch gives each worker two.
        gate = Gate(processes.tmp_path)
        holders = [await client.delay("hold", gate.path) for _ in range(6)]
        overview = await wait_for_overview(client, lambda o: o.counters.running == 6)
        loads = {w.worker_id: w.load for w in overview.workers}
        assert loads == {"fast-1": 2, "fast-2": 2, "slow": 2}
        gate.open()
        await asyncio.gather(*(client.result(t, timeout=30) for t in holders))

        # As slots free up, the next task goes where one is free: the slow worker's stay
        # taken longer, so it runs fewer of them.
        ids = await client.delay_many([TaskCall("lag") for _ in range(60)])
        done = await asyncio.gather(*(client.wait(t, timeout=60) for t in ids))
        counts = collections.Counter(r.worker_id for r in done)
        assert sum(counts.values()) == 60
        assert 2 * counts["slow"] < min(counts["fast-1"], counts["fast-2"]), counts
    finally:
        await client.stop()


async def test_kill_9_of_a_subworker_mid_task_reruns_the_task_elsewhere(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(
        address,
        "--no-local-execution",
        *("--lease-timeout", str(LEASE_TIMEOUT), "--heartbeat-interval", "0.5"),
    )
    client = await connect(address)
    try:
        victim = processes.subworker(address, "victim", "--concurrency", "1")
        await wait_for_workers(client, 1)
        gate = Gate(processes.tmp_path)
        task_id = await client.delay("hold", gate.path)
        await wait_for_task(client, task_id, TaskStatus.RUNNING, worker_id="victim")
        processes.subworker(address, "survivor", "--concurrency", "1")
        await wait_for_workers(client, 2)
        victim.send_signal(signal.SIGKILL)
        # Lost by its dropped connection, or at the latest when its lease runs out.
        info = await wait_for_task(
            client, task_id, TaskStatus.RUNNING, worker_id="survivor", timeout=LEASE_TIMEOUT + SLACK
        )
        assert info.attempts == 2
        gate.open()
        assert await client.result(task_id, timeout=30) == "released"
        overview = await client.overview()
        states = {w.worker_id: (w.state.value, w.load) for w in overview.workers}
        assert states["victim"] == ("lost", 0)
        assert states["survivor"] == ("connected", 0)
        assert overview.counters.running == 0
    finally:
        await client.stop()


async def test_bad_input_gets_typed_errors_and_the_system_keeps_serving(
    control_plane: tuple[str, Client],
) -> None:
    _address, client = control_plane
    with pytest.raises(UnknownTaskError, match="no task named 'nope'"):
        await client.delay("nope")
    with pytest.raises(InvalidArgumentsError):
        await client.delay("add", 1)
    with pytest.raises(UnsupportedValueError):
        await client.delay("add", object(), 1)
    with pytest.raises(TaskFailedError) as failed:
        await client.run("fail", "on purpose", wait=10)
    assert failed.value.remote_type == "builtins.ValueError"
    assert "on purpose" in failed.value.remote_traceback
    with pytest.raises(TaskTimeoutError):
        await client.run("too_slow", wait=10)
    with pytest.raises(UnsupportedValueError):
        await client.run("unencodable", wait=10)
    assert await client.run("add", 1, 1, wait=10) == 2


async def test_garbage_frames_are_refused_and_the_control_plane_keeps_serving(
    control_plane: tuple[str, Client],
) -> None:
    import pynng  # pyright: ignore[reportMissingTypeStubs]

    address, client = control_plane
    garbage_frames = (
        b"\xc1garbage",
        b"\x94\x02\x00\x00\x90",  # another major version
        b"\x94\x01",  # truncated
        encode_frame(
            [
                m.SubmitTask(
                    request_id=1, task=m.TaskRequest(name="add", args=Raw(b"\x91" * 100_000))
                )
            ]
        ),
    )
    with pynng.Pair1(dial=address, recv_timeout=5000) as raw:
        for received, garbage in enumerate(garbage_frames, start=1):
            raw.send(garbage)  # pyright: ignore[reportUnknownMemberType]
            reply = decode_frame(raw.recv())  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            (error,) = reply.messages
            assert isinstance(error, m.ErrorReply)
            assert error.error.code in ("malformed_frame", "protocol_version")
            raw.send(encode_frame([], acked=received))  # pyright: ignore[reportUnknownMemberType]
    assert await client.run("add", 1, 2, wait=10) == 3


@pytest.mark.parametrize("kind", ["control-plane", "subworker"])
async def test_sigterm_exits_cleanly_within_the_drain_timeout(
    processes: Processes, kind: str
) -> None:
    address = processes.address()
    plane = processes.control_plane(address)
    client = await connect(address)
    try:
        target = plane
        if kind == "subworker":
            target = processes.subworker(address, "leaver", "--drain-timeout", str(DRAIN_TIMEOUT))
            await wait_for_workers(client, 1)
        target.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(target.wait, DRAIN_TIMEOUT + SLACK) == 0
    finally:
        await client.stop()


def test_the_cli_runs_across_tcp_addresses_as_on_two_hosts(processes: Processes) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    processes.control_plane(address, "--no-local-execution")
    processes.subworker(address, "remote")
    env = {**os.environ, "FASTWORKER_ADDRESS": address}
    deadline = time.monotonic() + 30
    while True:
        submitted = subprocess.run(
            [
                sys.executable,
                "-m",
                "fastworker.server.cli",
                "submit",
                "add",
                "40",
                "2",
                "--wait",
                "--wait-timeout",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        if submitted.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.strip() == "42"


async def test_sigterm_hands_back_a_long_task_which_finishes_elsewhere(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        leaving = processes.subworker(
            address, "leaving", "--concurrency", "1", "--drain-timeout", str(DRAIN_TIMEOUT)
        )
        await wait_for_workers(client, 1)
        gate = Gate(processes.tmp_path)
        task_id = await client.delay("hold", gate.path)
        await wait_for_task(client, task_id, TaskStatus.RUNNING, worker_id="leaving")
        processes.subworker(address, "staying", "--concurrency", "1")
        await wait_for_workers(client, 2)
        leaving.send_signal(signal.SIGTERM)
        # The held task does not finish within the drain timeout: it is handed back.
        assert await asyncio.to_thread(leaving.wait, DRAIN_TIMEOUT + SLACK) == 0
        info = await wait_for_task(client, task_id, TaskStatus.RUNNING, worker_id="staying")
        # Handed back by a draining worker, which does not count: the attempt on the
        # staying worker is the first.
        assert info.attempts == 1
        gate.open()
        assert await client.result(task_id, timeout=30) == "released"
    finally:
        await client.stop()
