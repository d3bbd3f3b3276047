"""Delivery under restarts and forged reports, with real processes: a draining subworker
fails nothing, a rolling restart fails nothing, and only a task's lease holder decides
its outcome."""

from __future__ import annotations

import asyncio
import random
import signal
import time

from fastworker.client import Client
from fastworker.client._transport import Dialer
from fastworker.protocol import TaskStatus, encode_value
from fastworker.protocol import messages as m
from fw_processes import Processes, connect, wait_for_workers
from fw_waits import wait_for_overview

WAIT = 60.0
"""Seconds any batch of results may take on a loaded machine before the test fails."""


async def _statuses(client: Client, task_ids: list[str]) -> dict[str, m.TaskInfo]:
    infos = await asyncio.gather(*(client.status(task_id) for task_id in task_ids))
    return {info.task_id: info for info in infos}


async def _wait_until_running(client: Client, task_ids: list[str], count: int) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        infos = (await _statuses(client, task_ids)).values()
        if sum(info.status is TaskStatus.RUNNING for info in infos) >= count:
            return
        assert time.monotonic() < deadline, "tasks did not start"
        await asyncio.sleep(0.05)


async def test_sigterm_to_one_of_two_subworkers_fails_nothing(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        big = processes.subworker(address, "big", "--concurrency", "4", "--drain-timeout", "0.5")
        processes.subworker(address, "small", "--concurrency", "1")
        await wait_for_workers(client, 2)
        rng = random.Random(11)
        # Mostly short tasks, and a few that outlast the drain timeout, so the draining
        # worker hands back both tasks on the way to it and tasks it was running.
        durations = [rng.choice((0.05, 0.1, 0.2, 0.3)) for _ in range(56)] + [1.5] * 4
        task_ids = [await client.delay("block", seconds) for seconds in durations]
        await _wait_until_running(client, task_ids, 5)
        big.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(big.wait, WAIT) == 0
        results = [await client.result(task_id, timeout=WAIT) for task_id in task_ids]
        assert results == durations
        infos = await _statuses(client, task_ids)
        assert all(info.attempts == 1 for info in infos.values())
        overview = await client.overview()
        assert overview.counters.failed == 0
    finally:
        await client.stop()


async def test_a_rolling_restart_of_three_subworkers_under_load_fails_nothing(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        workers = {
            f"w{n}": processes.subworker(address, f"w{n}", "--concurrency", "2") for n in range(3)
        }
        await wait_for_workers(client, 3)
        task_ids: list[str] = []
        expected: list[float] = []
        stop_submitting = asyncio.Event()

        async def submit_steadily() -> None:
            rng = random.Random(7)
            while not stop_submitting.is_set() and len(task_ids) < 2000:
                seconds = rng.choice((0.01, 0.05, 0.1))
                task_ids.append(await client.delay("block", seconds))
                expected.append(seconds)
                await asyncio.sleep(0.01)

        submitter = asyncio.create_task(submit_steadily())
        for worker_id, process in list(workers.items()):
            deadline = time.monotonic() + WAIT
            while len(task_ids) < 20:  # some load before each restart
                assert time.monotonic() < deadline, "no tasks were submitted"
                await asyncio.sleep(0.01)
            # Restart it while it runs tasks. (Waiting for one of the newest tasks to be
            # seen running could miss them all: 10 ms tasks can finish between looks.)
            await wait_for_overview(
                client,
                lambda o, worker_id=worker_id: any(
                    w.worker_id == worker_id and w.load > 0 for w in o.workers
                ),
            )
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, WAIT) == 0
            workers[worker_id] = processes.subworker(address, worker_id, "--concurrency", "2")
            await wait_for_workers(client, 3)
        stop_submitting.set()
        await asyncio.wait_for(submitter, WAIT)
        results = [await client.result(task_id, timeout=WAIT) for task_id in task_ids]
        assert results == expected
        assert (await client.overview()).counters.failed == 0
    finally:
        await client.stop()


class RawConnection:
    """A connection that speaks the wire protocol directly, as a forger would."""

    def __init__(self, address: str) -> None:
        self.messages: asyncio.Queue[m.Message] = asyncio.Queue(maxsize=1000)
        self.connected = asyncio.Event()
        self.dialer = Dialer(
            address,
            loop=asyncio.get_running_loop(),
            on_message=self.messages.put_nowait,
            on_connect=self.connected.set,
            on_disconnect=lambda: None,
            name="forger",
        )
        self.dialer.open()

    async def reply(self) -> m.Message:
        return await asyncio.wait_for(self.messages.get(), WAIT)

    def send(self, message: m.Message) -> None:
        self.dialer.outbox.put(message)

    def close(self) -> None:
        self.dialer.close()


def _forged(task_id: str) -> m.TasksDone:
    outcome = m.TaskOutcome(
        task_id=task_id, status=TaskStatus.SUCCEEDED, value=encode_value("forged")
    )
    return m.TasksDone(outcomes=[outcome])


async def test_forged_outcomes_for_running_and_queued_tasks_change_nothing(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    forger = RawConnection(address)
    try:
        processes.subworker(address, "honest", "--concurrency", "1")
        await wait_for_workers(client, 1)
        running = await client.delay("block", 1.0)
        queued = await client.delay("add", 2, 3)
        await _wait_until_running(client, [running], 1)
        await asyncio.wait_for(forger.connected.wait(), WAIT)

        # As a plain connection: refused with a typed error, each time.
        for task_id in (running, queued):
            forger.send(_forged(task_id))
            reply = await forger.reply()
            assert isinstance(reply, m.ErrorReply)
            assert reply.error.code == "lease"
        forger.send(m.HandBack(task_ids=[running]))
        reply = await forger.reply()
        assert isinstance(reply, m.ErrorReply)
        assert reply.error.code == "lease"

        # As a registered subworker that does not hold the leases: ignored and counted.
        forger.send(m.WorkerHello(request_id=1, worker_id="forger", concurrency=1, task_names=[]))
        assert isinstance(await forger.reply(), m.WorkerWelcome)
        forger.send(_forged(running))
        forger.send(_forged(queued))
        forger.send(m.HandBack(task_ids=[running, queued]))
        deadline = time.monotonic() + WAIT
        while (await client.overview()).counters.fenced < 7:
            assert time.monotonic() < deadline, "the forged reports were not counted"
            await asyncio.sleep(0.05)

        statuses = await _statuses(client, [running, queued])
        assert statuses[running].status is TaskStatus.RUNNING
        assert statuses[running].worker_id == "honest"
        assert statuses[queued].status is TaskStatus.QUEUED
        assert await client.result(running, timeout=WAIT) == 1.0
        assert await client.result(queued, timeout=WAIT) == 5
    finally:
        forger.close()
        await client.stop()


async def test_a_stopped_subworker_loses_its_lease_and_the_task_runs_elsewhere(
    processes: Processes,
) -> None:
    address = processes.address()
    lease = ("--lease-timeout", "1.0", "--heartbeat-interval", "0.25")
    processes.control_plane(address, "--no-local-execution", *lease)
    client = await connect(address)
    try:
        frozen = processes.subworker(address, "frozen", "--concurrency", "1")
        await wait_for_workers(client, 1)
        task_id = await client.delay("block", 3.0)
        await _wait_until_running(client, [task_id], 1)
        processes.subworker(address, "thawed", "--concurrency", "1")
        await wait_for_workers(client, 2)
        frozen.send_signal(signal.SIGSTOP)  # silent, connection still open
        try:
            deadline = time.monotonic() + WAIT
            while (await client.status(task_id)).worker_id != "thawed":
                assert time.monotonic() < deadline, "the lease was never taken back"
                await asyncio.sleep(0.05)
        finally:
            frozen.send_signal(signal.SIGCONT)
        # Back from the pause while the task runs again elsewhere, the paused subworker
        # ends its own run and reports it (the control plane closed its connection, so
        # the report comes on a new one). It is fenced: it changes nothing.
        deadline = time.monotonic() + WAIT
        while (await client.overview()).counters.fenced < 1:
            assert time.monotonic() < deadline, "the late outcome never arrived"
            await asyncio.sleep(0.05)
        assert await client.result(task_id, timeout=WAIT) == 3.0
        info = await client.status(task_id)
        assert info.worker_id == "thawed"
        assert info.attempts == 2  # the lost lease counts
    finally:
        await client.stop()


async def test_a_subworker_reconnects_when_its_control_plane_goes_silent(
    processes: Processes,
) -> None:
    address = processes.address()
    lease = ("--lease-timeout", "1.0", "--heartbeat-interval", "0.25")
    # No local execution: the task below can only run on the subworker once it is back.
    plane = processes.control_plane(address, "--no-local-execution", *lease)
    client = await connect(address)
    try:
        patient = processes.subworker(address, "patient", "--concurrency", "1")
        await wait_for_workers(client, 1)
        plane.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + WAIT
            while "was silent" not in processes.log("subworker-patient"):
                assert time.monotonic() < deadline, "the subworker never noticed"
                await asyncio.sleep(0.05)
        finally:
            plane.send_signal(signal.SIGCONT)
        assert await client.run("where", timeout=WAIT) == str(patient.pid)
    finally:
        await client.stop()
