"""The health checks: what each state answers, the event loop as the source of the
answer, and one real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from fastworker.client.tasks import TaskRegistry
from fastworker.server import health
from fastworker.server.control_plane import ControlPlane, ControlPlaneSettings
from fastworker.server.health import HealthServer, NoAnswer, answer, ask_loop
from fastworker.server.subworker import Subworker, SubworkerSettings

pytestmark = pytest.mark.timeout(60)


# --- state -> answer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "verdict", "status", "body"),
    [
        ("GET", "/healthz", None, 200, {"status": "ok"}),
        ("GET", "/healthz", "draining", 200, {"status": "ok"}),
        ("HEAD", "/healthz?verbose=1", None, 200, {"status": "ok"}),
        ("GET", "/readyz", None, 200, {"status": "ok"}),
        ("GET", "/readyz", "draining", 503, {"status": "not ready", "reason": "draining"}),
        ("GET", "/healthz", NoAnswer("stuck"), 503, {"status": "unhealthy", "reason": "stuck"}),
        ("GET", "/readyz", NoAnswer("stuck"), 503, {"status": "unhealthy", "reason": "stuck"}),
    ],
)
def test_each_state_answers(
    method: str, target: str, verdict: health.Verdict, status: int, body: dict[str, str]
) -> None:
    assert answer(method, target, verdict) == (status, body)


def test_other_paths_are_not_found_and_other_methods_not_allowed() -> None:
    assert answer("GET", "/", None)[0] == 404
    assert answer("POST", "/metrics", None)[0] == 404
    assert answer("POST", "/healthz", None)[0] == 405
    assert answer("DELETE", "/readyz", "draining")[0] == 405


# --- the event loop gives the answer --------------------------------------------------------


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_the_loop_runs_the_check(loop_thread: asyncio.AbstractEventLoop) -> None:
    ran_on: list[asyncio.AbstractEventLoop] = []

    def check() -> str | None:
        ran_on.append(asyncio.get_running_loop())
        return "not registered"

    assert ask_loop(loop_thread, check) == "not registered"
    assert ran_on == [loop_thread]
    assert ask_loop(loop_thread, lambda: None) is None


def test_a_check_that_raises_is_not_ready(loop_thread: asyncio.AbstractEventLoop) -> None:
    def check() -> str | None:
        raise ValueError("boom")

    assert ask_loop(loop_thread, check) == "the readiness check failed: boom"


def test_a_wedged_loop_gives_no_answer_within_the_bound(
    loop_thread: asyncio.AbstractEventLoop,
) -> None:
    release = threading.Event()
    loop_thread.call_soon_threadsafe(release.wait, 10)  # blocks the loop
    try:
        started = time.monotonic()
        verdict = ask_loop(loop_thread, lambda: None, timeout=0.2)
        assert time.monotonic() - started < 2
    finally:
        release.set()
    assert verdict == NoAnswer("the event loop did not answer within 0.2 s")


def test_a_closed_loop_gives_no_answer() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    assert ask_loop(loop, lambda: None) == NoAnswer("the event loop is closed")


# --- what each role calls ready -------------------------------------------------------------


async def test_a_control_plane_is_ready_only_between_start_and_stop() -> None:
    plane = ControlPlane(TaskRegistry(), ControlPlaneSettings(address="ipc:///nowhere/cp.sock"))
    assert plane.readiness() == "starting: not listening on ipc:///nowhere/cp.sock yet"
    await plane.stop()
    assert plane.readiness() == "stopping"


async def test_a_subworker_is_ready_once_registered_and_not_while_draining() -> None:
    worker = Subworker(
        TaskRegistry(),
        SubworkerSettings(worker_id="w", control_plane_address="ipc:///nowhere/cp.sock"),
    )
    assert worker.readiness() == "not registered with ipc:///nowhere/cp.sock"
    await worker.stop()
    assert worker.readiness() == "draining"


# --- over HTTP ------------------------------------------------------------------------------


def _get(url: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_a_real_server_on_loopback() -> None:
    why: list[str | None] = ["not registered with tcp://127.0.0.1:5555"]
    with HealthServer("127.0.0.1", 0, lambda: why[0]) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert await asyncio.to_thread(_get, base + "/healthz") == (200, {"status": "ok"})
        assert await asyncio.to_thread(_get, base + "/readyz") == (
            503,
            {"status": "not ready", "reason": "not registered with tcp://127.0.0.1:5555"},
        )
        why[0] = None
        assert await asyncio.to_thread(_get, base + "/readyz") == (200, {"status": "ok"})
        status, _body = await asyncio.to_thread(_get, base + "/readyz", "POST")
        assert status == 405
        status, _body = await asyncio.to_thread(_get, base + "/nothing")
        assert status == 404

        reply = await asyncio.to_thread(_raw, server.port, b"garbage\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 400 "), reply
        assert b'"status": "bad request"' in reply
        reply = await asyncio.to_thread(_raw, server.port, b"BREW /readyz HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 405 "), reply
        # It keeps serving after those.
        assert await asyncio.to_thread(_get, base + "/healthz") == (200, {"status": "ok"})

        # A loop that does not turn reads unhealthy, from the server's own thread.
        answers: list[tuple[int, Any]] = []
        probe = threading.Thread(target=lambda: answers.append(_get(base + "/healthz")))
        probe.start()
        time.sleep(health.LOOP_ANSWER_TIMEOUT + 0.5)  # noqa: ASYNC251 (wedges the loop on purpose)
        await asyncio.to_thread(probe.join, 10)
        assert answers == [
            (503, {"status": "unhealthy", "reason": "the event loop did not answer within 1.0 s"})
        ]
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(_get, base + "/healthz")


async def test_connections_past_the_limit_are_closed_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "MAX_CONNECTIONS", 1)
    with HealthServer("127.0.0.1", 0, lambda: None) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            # Accepted, then closed at once while the one slot is taken.
            deadline = time.monotonic() + 10
            while True:
                reply = await asyncio.to_thread(_raw, server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
                if reply == b"" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)  # the idle one may not have been taken in yet
            assert reply == b""
        finally:
            idle.close()
        # Once it is gone, the slot is free again.
        url = f"http://127.0.0.1:{server.port}/healthz"
        deadline = time.monotonic() + 10
        while True:
            try:
                status = (await asyncio.to_thread(_get, url))[0]
            except OSError:
                status = 0
            if status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert status == 200


def test_a_port_in_use_is_a_configuration_error() -> None:
    from fastworker.protocol import ConfigurationError

    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(ConfigurationError, match=re.escape("cannot listen on 127.0.0.1")):
                HealthServer("127.0.0.1", taken.getsockname()[1], lambda: None).start()

    asyncio.run(scenario())
