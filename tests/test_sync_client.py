"""The blocking SyncClient against real control plane processes: the same answers and errors
as the async client, shared by threads, callbacks on its loop thread, bounded stops."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fastworker.client import (
    FastworkerError,
    NotConnectedError,
    ResultTimeoutError,
    TaskCall,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskResult,
    TaskStatus,
    UnknownTaskError,
    UnsupportedValueError,
    get_default_client,
)
from fastworker.client.sync import (
    _STOP_TIMEOUT,  # pyright: ignore[reportPrivateUsage]
    LoopThreadError,
    SyncClient,
)
from fastworker.protocol import ConfigurationError, TransportError
from fw_processes import START_TIMEOUT, Processes
from fw_waits import SLACK, Gate

pytestmark = pytest.mark.timeout(120)

_names = itertools.count(1)


def start_client(address: str, *, timeout: float = START_TIMEOUT) -> SyncClient:
    """A started SyncClient of the control plane at ``address``, once it answers. Each
    attempt waits for the handshake (event driven, bounded); a failed one is retried until
    ``timeout``."""
    client = SyncClient(address, request_timeout=5.0, name=f"sync-test-{next(_names)}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.start()
            return client
        except TransportError:
            if time.monotonic() > deadline:
                raise


def loop_threads(client: SyncClient) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"fastworker-sync-client({client.name})"]


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One control plane for the module, running tasks itself one at a time (so a task can
    be held queued behind another)."""
    processes = Processes(tmp_path_factory.mktemp("sync"))
    try:
        address = processes.address()
        processes.control_plane(address, "--local-concurrency", "1")
        start_client(address).stop()
        yield address
    finally:
        processes.stop_all()


@pytest.fixture
def client(address: str) -> Iterator[SyncClient]:
    client = start_client(address)
    yield client
    client.stop()


def test_delay_then_result(client: SyncClient) -> None:
    task_id = client.delay("add", 2, 3)
    assert client.result(task_id, timeout=10) == 5
    assert client.result(task_id, timeout=10) == 5  # from the client's cache
    assert client.result(client.delay("async_add", x=4, y=5), timeout=10) == 9


def test_run_and_a_batch(client: SyncClient) -> None:
    assert client.run("add", 20, 22, wait=10) == 42
    ids = client.delay_many(TaskCall("add", (i, 1)) for i in range(50))
    assert len(set(ids)) == 50
    assert [client.result(t, timeout=30) for t in ids] == [i + 1 for i in range(50)]


def test_a_task_that_raises_gives_task_failed_error_unwrapped(client: SyncClient) -> None:
    with pytest.raises(TaskFailedError) as failed:
        client.run("fail", "boom", wait=10)
    assert type(failed.value) is TaskFailedError
    assert failed.value.remote_type == "builtins.ValueError"
    assert "boom" in str(failed.value)
    assert "ValueError" in failed.value.remote_traceback

    outcome = client.wait(client.delay("fail", "again"), timeout=10)
    assert not outcome.ok
    assert outcome.status is TaskStatus.FAILED
    assert isinstance(outcome.error, TaskFailedError)


def test_refusals_are_the_async_clients_errors(client: SyncClient) -> None:
    with pytest.raises(UnknownTaskError):
        client.delay("no_such_task")
    with pytest.raises(UnsupportedValueError):
        client.delay("add", object(), 1)
    with pytest.raises(TaskNotFoundError):
        client.status("f" * 32)
    with pytest.raises(TaskNotFoundError):
        client.result("f" * 32, timeout=10)


def test_a_result_wait_times_out_within_its_bound_and_the_task_goes_on(
    client: SyncClient, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    task_id = client.delay("hold", gate.path)
    began = time.monotonic()
    with pytest.raises(ResultTimeoutError):
        client.result(task_id, timeout=0.05)
    assert time.monotonic() - began < 0.05 + SLACK
    gate.open()
    assert client.result(task_id, timeout=10) == "released"


def test_eight_threads_share_one_client_and_each_gets_its_own_results(
    client: SyncClient,
) -> None:
    barrier = threading.Barrier(8, timeout=10)

    def work(thread: int) -> tuple[list[str], list[int]]:
        offset = 1000 * thread
        barrier.wait()  # all eight submit at once
        if thread % 2:
            ids = client.delay_many(TaskCall("add", (offset, i)) for i in range(100))
        else:
            ids = [client.delay("add", offset, i) for i in range(100)]
        return ids, [client.result(t, timeout=60) for t in ids]

    with ThreadPoolExecutor(8) as pool:
        outcomes = [f.result(timeout=90) for f in [pool.submit(work, n) for n in range(8)]]
    for thread, (_ids, results) in enumerate(outcomes):
        assert results == [1000 * thread + i for i in range(100)]
    assert len({task_id for ids, _results in outcomes for task_id in ids}) == 800


def test_cancel_status_overview_and_history(client: SyncClient, tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    blocker = client.delay("hold", gate.path)  # holds the control plane's only slot
    queued = client.delay("add", 1, 1)
    reply = client.cancel(queued, "f" * 32)
    assert reply.cancelled == [queued]
    assert reply.unknown == ["f" * 32]
    with pytest.raises(TaskCancelledError):
        client.result(queued, timeout=10)
    assert client.status(queued).status is TaskStatus.CANCELLED

    gate.open()
    assert client.result(blocker, timeout=10) == "released"
    info = client.status(blocker)
    assert info.status is TaskStatus.SUCCEEDED
    assert info.name == "hold"

    overview = client.overview()
    assert "add" in overview.task_names
    assert "add" in client.task_names
    page = client.history(limit=5, name="hold")
    assert page.total >= 1
    assert blocker in [t.task_id for t in page.tasks]


def test_completion_callbacks_fire_on_the_loop_thread(client: SyncClient, address: str) -> None:
    fired = threading.Event()
    seen: list[tuple[TaskResult, str]] = []

    def on_done(result: TaskResult) -> None:
        seen.append((result, threading.current_thread().name))
        fired.set()

    task_id = client.delay("add", 20, 22, on_complete=on_done)
    assert fired.wait(10)
    ((result, thread_name),) = seen
    assert (result.task_id, result.value, result.ok) == (task_id, 42, True)
    assert thread_name == f"fastworker-sync-client({client.name})"

    # Registered after the task finished: called at once.
    again = threading.Event()
    client.on_complete(task_id, lambda _result: again.set())
    assert again.wait(10)

    # A task another client submitted: this one watches it and is called back.
    napping = client.delay("nap", 0.3)
    other = start_client(address)
    try:
        values: list[object] = []
        watched = threading.Event()

        def on_watched(result: TaskResult) -> None:
            values.append(result.value)
            watched.set()

        other.on_complete(napping, on_watched)
        assert watched.wait(10)
        assert values == [0.3]
    finally:
        other.stop()


def test_calling_the_client_from_its_own_callback_raises_instead_of_deadlocking(
    client: SyncClient,
) -> None:
    done = threading.Event()
    errors: list[Exception] = []

    def calls_back(result: TaskResult) -> None:
        calls: list[Callable[[], object]] = [
            lambda: client.result(result.task_id, timeout=5),
            lambda: client.delay("add", 1, 1),
            client.overview,
            client.stop,
            client.start,
        ]
        for call in calls:
            try:
                call()
            except Exception as exc:
                errors.append(exc)
        done.set()

    client.delay("add", 1, 2, on_complete=calls_back)
    assert done.wait(10)
    assert len(errors) == 5
    assert all(isinstance(e, LoopThreadError) for e in errors), errors
    assert isinstance(errors[0], FastworkerError)
    assert "completion callback" in str(errors[0])
    # Nothing was stopped or stuck: the client carries on.
    assert client.started
    assert client.run("add", 2, 2, wait=10) == 4


def test_use_before_start_and_after_stop_raises_not_connected(address: str) -> None:
    client = SyncClient(address)
    assert not client.started
    calls: list[Callable[[], object]] = [
        lambda: client.delay("add", 1, 2),
        lambda: client.delay_many([TaskCall("add", (1, 2))]),
        lambda: client.run("add", 1, 2),
        lambda: client.result("f" * 32),
        lambda: client.wait("f" * 32),
        lambda: client.on_complete("f" * 32, lambda _result: None),
        lambda: client.cancel("f" * 32),
        lambda: client.status("f" * 32),
        client.overview,
        client.history,
    ]
    for call in calls:
        with pytest.raises(NotConnectedError):
            call()
    client.stop()  # stopping a client never started is fine
    with client:
        assert client.run("add", 1, 2, wait=10) == 3
    for call in calls:
        with pytest.raises(NotConnectedError):
            call()


def test_start_is_idempotent_and_keeps_one_daemon_loop_thread(address: str) -> None:
    default_before = get_default_client()
    with SyncClient(address, request_timeout=5.0, name="sync-test-idempotent") as client:
        client.start()
        client.start()
        (thread,) = loop_threads(client)
        assert thread.daemon
        # The async client on the private loop is not made the process-wide default client
        # of `await my_task.delay()`: no other loop may await on it.
        assert get_default_client() is default_before


def test_used_as_a_context_manager(address: str) -> None:
    with SyncClient(address, request_timeout=5.0, name="sync-test-with") as client:
        assert client.started
        assert client.run("add", 1, 2, wait=10) == 3
    assert not client.started
    assert loop_threads(client) == []
    with pytest.raises(NotConnectedError):
        client.delay("add", 1, 2)

    with pytest.raises(ZeroDivisionError), SyncClient(address) as failing:
        _ = 1 / 0
    assert not failing.started


def test_stop_is_idempotent_bounded_and_ends_waits_in_other_threads(
    processes: Processes,
) -> None:
    address = processes.address()
    processes.control_plane(address, "--local-concurrency", "2")
    client = start_client(address)
    gate = Gate(processes.tmp_path)
    task_id = client.delay("hold", gate.path)  # never finishes while the client is up
    about_to_wait = threading.Event()

    def wait_without_bound() -> object:
        about_to_wait.set()
        return client.result(task_id, timeout=None)

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(wait_without_bound)
        assert about_to_wait.wait(10)
        began = time.monotonic()
        client.stop()
        client.stop()
        stopped_in = time.monotonic() - began
        # Before or during its wait, the stop reaches the waiting thread as NotConnectedError.
        with pytest.raises(NotConnectedError):
            waiting.result(timeout=10)
    assert stopped_in < _STOP_TIMEOUT + SLACK
    assert loop_threads(client) == []
    with pytest.raises(NotConnectedError):
        client.overview()

    # A stopped client starts again, with a fresh loop thread.
    client.start()
    try:
        assert len(loop_threads(client)) == 1
        assert client.run("add", 1, 2, wait=10) == 3
    finally:
        client.stop()


def _in_the_forked_child(client: SyncClient, address: str) -> str:
    """What a process forked from one with a started SyncClient sees: "refused" when
    both the inherited client and a new one refuse to touch NNG, else what happened."""
    try:
        client.overview()
    except NotConnectedError as exc:
        if "forked" not in str(exc):
            return f"the inherited client failed otherwise: {exc}"
    else:
        return "the inherited client answered"
    try:
        SyncClient(address).start()
    except ConfigurationError as exc:
        if "forked" not in str(exc):
            return f"a new client failed otherwise: {exc}"
    else:
        return "a new client started"
    return "refused"


def test_a_forked_child_is_refused_and_the_parent_keeps_working(
    client: SyncClient, address: str
) -> None:
    assert client.run("add", 1, 1, wait=10) == 2  # NNG is in use in this process
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Forking a process with threads is what is under test (Python 3.12+ warns).
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits
        code = 1
        try:
            os.close(read_end)
            try:
                report = _in_the_forked_child(client, address)
            except BaseException as exc:
                report = f"the child raised {exc!r}"
            os.write(write_end, report.encode())
            code = 0 if report == "refused" else 1
        finally:
            os._exit(code)  # never back into pytest
    os.close(write_end)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise AssertionError(f"the forked child did not end within {START_TIMEOUT} s")
        time.sleep(0.01)  # a child's exit has no event to wait on here
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    assert report == "refused"
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.run("add", 2, 2, wait=10) == 4
