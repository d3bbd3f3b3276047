"""Dispatch fairness, cancellation, idempotency, parking and limits, with real processes."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest
from msgspec import Raw

from fastworker.client import (
    Client,
    FastworkerError,
    QueueFullError,
    RequestTimeoutError,
    TaskCall,
    TaskCancelledError,
    TaskNotFoundError,
    TaskStatus,
)
from fastworker.protocol import (
    MAX_FRAME_BYTES,
    MAX_IDS_PER_MESSAGE,
    MAX_MESSAGES_PER_FRAME,
    ConfigurationError,
    FrameTooLargeError,
    decode_frame,
    encode_frame,
)
from fastworker.protocol import messages as m
from fw_processes import Processes, connect, plane_with_workers, wait_for_workers
from fw_waits import SLACK, Gate, wait_for_task

pytestmark = pytest.mark.timeout(120)


async def test_ties_between_idle_subworkers_rotate(processes: Processes) -> None:
    _address, client = await plane_with_workers(processes, "a", "b", "c")
    try:
        ran_on = [await client.run("where", wait=10) for _ in range(9)]
        # Each round of three sequential tasks visits every subworker once.
        for start in range(0, 9, 3):
            assert len(set(ran_on[start : start + 3])) == 3, ran_on
    finally:
        await client.stop()


async def test_a_slow_subworker_gets_fewer_tasks(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        processes.subworker(address, "slow", env={"FW_SLOW": "1"})
        processes.subworker(address, "fast")
        await wait_for_workers(client, 2)
        ids = await client.delay_many([TaskCall("lag") for _ in range(40)])
        done = await asyncio.gather(*(client.wait(t, timeout=60) for t in ids))
        counts = collections.Counter(r.worker_id for r in done)
        assert counts["fast"] > 2 * counts["slow"], counts
    finally:
        await client.stop()


async def test_a_queued_task_can_be_cancelled_and_its_waiter_is_told(processes: Processes) -> None:
    _address, client = await plane_with_workers(processes, "busy")
    try:
        gate = Gate(processes.tmp_path)
        running = await client.delay("hold", gate.path)
        queued = await client.delay("nap", 0.1)
        await wait_for_task(client, running, TaskStatus.RUNNING, worker_id="busy")
        reply = await client.cancel(queued, running, "no-such-task")
        assert reply.cancelled == [queued]
        assert reply.stopping == [running]  # asked to stop; a sync task runs to its end
        assert reply.not_cancelled == []
        assert reply.unknown == ["no-such-task"]
        with pytest.raises(TaskCancelledError):
            await client.result(queued, timeout=10)
        assert (await client.status(queued)).status is m.TaskStatus.CANCELLED
        gate.open()
        with pytest.raises(TaskCancelledError, match="not interrupted"):
            await client.result(running, timeout=10)
    finally:
        await client.stop()


async def test_an_idempotency_key_returns_the_first_task(processes: Processes) -> None:
    _address, client = await plane_with_workers(processes, "one")
    try:
        first = await client.delay("echo", "once", idempotency_key="order-42")
        second = await client.delay("echo", "twice", idempotency_key="order-42")
        assert first == second
        assert await client.result(second, timeout=10) == "once"
        history = await client.history(name="echo")
        assert history.total == 1
    finally:
        await client.stop()


async def test_an_idempotency_key_in_a_batch_returns_the_first_task(
    processes: Processes,
) -> None:
    address, client = await plane_with_workers(processes, "one")
    try:
        first = await client.delay("echo", "once", idempotency_key="order-7")
        async with Client(address) as second:
            other, again = await second.delay_many(
                [
                    TaskCall("echo", ("other",)),
                    TaskCall("echo", ("twice",), idempotency_key="order-7"),
                ]
            )
            assert again == first
            assert other != first
            # The batch's caller gets the first task's result, as the first caller does.
            assert await second.result(again, timeout=10) == "once"
            assert await second.result(other, timeout=10) == "other"
        assert (await client.history(name="echo")).total == 2
    finally:
        await client.stop()


async def test_tasks_wait_for_a_subworker_when_none_is_connected(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        ids = await client.delay_many([TaskCall("add", (i, 1)) for i in range(5)])
        overview = await client.overview()
        assert overview.queue_depth.normal == 5
        processes.subworker(address, "late")
        results = await asyncio.gather(*(client.result(t, timeout=30) for t in ids))
        assert results == [1, 2, 3, 4, 5]
    finally:
        await client.stop()


async def test_a_subworker_with_more_free_slots_than_one_message_lists_gets_them_all(
    processes: Processes,
) -> None:
    # Queued before the subworker joins, the whole backlog is dispatched in one turn:
    # more assignments than one Dispatch may list, and as many outcomes back.
    count = MAX_MESSAGES_PER_FRAME + 904
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        ids: list[str] = []
        for start in range(0, count, 2500):
            calls = [TaskCall("async_add", (i, 1)) for i in range(start, min(start + 2500, count))]
            ids += await client.delay_many(calls)
        processes.subworker(address, "wide", "--concurrency", str(count))
        results = await asyncio.gather(*(client.result(t, timeout=60) for t in ids))
        assert results == [i + 1 for i in range(count)]
    finally:
        await client.stop()


async def test_a_batch_over_the_message_limit_is_refused_before_sending(
    processes: Processes,
) -> None:
    _address, client = await plane_with_workers(processes, "one")
    try:
        pending = asyncio.ensure_future(client.run("nap", 0.2, wait=10))
        too_many = [TaskCall("add", (i, 0)) for i in range(MAX_MESSAGES_PER_FRAME + 1)]
        with pytest.raises(ConfigurationError, match="split the batch"):
            await client.delay_many(too_many)
        with pytest.raises(FrameTooLargeError, match="Split the batch"):
            await client.delay_many([TaskCall("echo", (b"x" * (MAX_FRAME_BYTES // 3),))] * 4)
        assert await pending == 0.2  # a request in flight is untouched
        assert (await client.overview()).counters.submitted == 1
    finally:
        await client.stop()


async def test_cancel_takes_more_ids_than_one_message_lists(processes: Processes) -> None:
    _address, client = await plane_with_workers(processes, "one")
    try:
        gate = Gate(processes.tmp_path)
        running = await client.delay("hold", gate.path)
        queued = await client.delay("add", 1, 1)
        await wait_for_task(client, running, TaskStatus.RUNNING, worker_id="one")
        unknown = [f"no-such-task-{i}" for i in range(MAX_IDS_PER_MESSAGE)]
        reply = await client.cancel(running, *unknown, queued)  # the last in a second part
        assert reply.cancelled == [queued]
        assert reply.stopping == [running]  # from the first part: every list is merged
        assert reply.unknown == unknown
        gate.open()
    finally:
        await client.stop()


async def test_a_full_queue_refuses_new_tasks_and_keeps_the_accepted(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--no-local-execution", "--max-queued-tasks", "3")
    client = await connect(address)
    try:
        accepted = await client.delay_many([TaskCall("add", (i, 0)) for i in range(3)])
        with pytest.raises(QueueFullError):
            await client.delay("add", 9, 9)
        with pytest.raises(QueueFullError):  # a batch is refused whole
            await client.delay_many([TaskCall("add", (1, 1))])
        processes.subworker(address, "drain")
        assert await asyncio.gather(*(client.result(t, timeout=30) for t in accepted)) == [0, 1, 2]
    finally:
        await client.stop()


async def test_unknown_task_ids_get_task_not_found(processes: Processes) -> None:
    _address, client = await plane_with_workers(processes, "one")
    try:
        with pytest.raises(TaskNotFoundError):
            await client.result("never-submitted", timeout=10)
        with pytest.raises(TaskNotFoundError):
            await client.status("never-submitted")
    finally:
        await client.stop()


async def test_oversized_arguments_are_refused_before_sending(processes: Processes) -> None:
    _address, client = await plane_with_workers(processes, "one")
    try:
        with pytest.raises(FrameTooLargeError, match="Pass a reference"):
            await client.delay("echo", b"x" * MAX_FRAME_BYTES)
        assert await client.run("echo", "still serving", wait=10) == "still serving"
    finally:
        await client.stop()


async def test_an_oversized_frame_gets_a_typed_refusal(processes: Processes) -> None:
    import pynng  # pyright: ignore[reportMissingTypeStubs]

    address, client = await plane_with_workers(processes, "one")
    try:
        big = Raw(b"\xc6" + (MAX_FRAME_BYTES).to_bytes(4, "big") + b"\x00" * MAX_FRAME_BYTES)
        frame = encode_frame(
            [m.SubmitTask(request_id=1, task=m.TaskRequest(name="echo", args=big))]
        )
        with pynng.Pair1(dial=address, recv_timeout=10_000) as raw:
            raw.send(frame)  # pyright: ignore[reportUnknownMemberType]
            reply = decode_frame(raw.recv())  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        (error,) = reply.messages
        assert isinstance(error, m.ErrorReply)
        assert error.error.code == "frame_too_large"
        assert await client.run("echo", 1, wait=10) == 1
    finally:
        await client.stop()


async def test_starting_a_client_with_no_control_plane_fails_within_its_bound(
    processes: Processes,
) -> None:
    client = Client(processes.address(), request_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        await client.start()
    assert time.monotonic() - started < client.request_timeout + SLACK


async def test_calls_after_stop_fail_clearly(processes: Processes) -> None:
    _address, client = await plane_with_workers(processes, "one")
    await client.stop()
    with pytest.raises(FastworkerError, match="not started"):
        await client.delay("add", 1, 2)


async def test_history_is_newest_first_filtered_paged_and_bounded(processes: Processes) -> None:
    address = processes.address()
    processes.control_plane(address, "--history-size", "8")
    client = await connect(address)
    try:
        ids = [
            await client.delay("add", i, 0, priority="high" if i % 2 else "low") for i in range(10)
        ]
        await asyncio.gather(*(client.result(t, timeout=30) for t in ids))
        failed = await client.delay("fail", "boom")
        with pytest.raises(FastworkerError):
            await client.result(failed, timeout=30)
        everything = await client.history(limit=100)
        assert everything.total == 8  # the window keeps only the latest tasks
        assert [t.task_id for t in everything.tasks] == [failed, *reversed(ids[-7:])]
        page = await client.history(offset=2, limit=3)
        assert [t.task_id for t in page.tasks] == [t.task_id for t in everything.tasks[2:5]]
        high = await client.history(priority="high", limit=100)
        assert {t.priority for t in high.tasks} == {m.TaskPriority.HIGH}
        failures = await client.history(status=m.TaskStatus.FAILED)
        assert [t.task_id for t in failures.tasks] == [failed]
        assert failures.tasks[0].error is not None
        assert failures.tasks[0].error.remote_type == "builtins.ValueError"
    finally:
        await client.stop()


async def test_a_client_recovers_after_its_control_plane_was_away_for_long(
    processes: Processes,
) -> None:
    address = processes.address()
    plane = processes.control_plane(address)
    client = await connect(address)
    try:
        plane.kill()
        await asyncio.to_thread(plane.wait, 10)
        # Many requests, each in its own turn of the loop so each is its own frame: more
        # than the client's buffers hold while nobody takes them.
        client.request_timeout = 0.5
        pending: list[asyncio.Future[m.Overview]] = []
        for _ in range(2000):
            pending.append(asyncio.ensure_future(client.overview()))
            await asyncio.sleep(0)
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(outcome, FastworkerError) for outcome in outcomes)
        processes.control_plane(address)
        client.request_timeout = 2.0
        deadline = time.monotonic() + 20
        while True:
            try:
                overview = await client.overview()
                break
            except FastworkerError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert overview.queue_depth.total == 0
        assert await client.run("add", 2, 2, wait=10) == 4
    finally:
        await client.stop()
