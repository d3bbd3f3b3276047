"""``--metrics-port``'s server: a real HTTP server on loopback in front of a real control
plane in this process, answered from the event loop, and the command's usage error
without prometheus-client."""

from __future__ import annotations

import asyncio
import builtins
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastworker.client.config import ExitCode
from fastworker.client.tasks import Task, TaskRegistry
from fastworker.protocol import encode_value
from fastworker.protocol import messages as m
from fastworker.server import health
from fastworker.server.cli import main
from fastworker.server.control_plane import ControlPlane, ControlPlaneSettings
from fastworker.server.metrics_http import MetricsServer

pytestmark = pytest.mark.timeout(60)


def add(x: int, y: int) -> int:
    return x + y


class _Peer:
    id = 1
    address = "test"
    certificate = ""


def _get(url: str, method: str = "GET", host: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_scrape_reads_the_core_from_the_loop(tmp_path: Path) -> None:
    registry = TaskRegistry()
    registry.register(Task(add))
    settings = ControlPlaneSettings(
        address=f"ipc://{tmp_path}/cp.sock", journal=str(tmp_path / "journal.sqlite3")
    )
    plane = ControlPlane(registry, settings)
    with MetricsServer("127.0.0.1", 0, plane.metrics) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, _type, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 503  # not started: nothing to read yet
        assert "not been started" in body
        await plane.start()
        try:
            # Two submissions, handed to the core on its loop as the shell would.
            request = m.TaskRequest(name="add", args=encode_value([1, 2]), notify=False)
            plane.core.handle(
                _Peer(), m.SubmitBatch(request_id=1, tasks=[request, request]), time.monotonic()
            )
            plane.core.end_turn(time.monotonic())

            status, media_type, body = await asyncio.to_thread(_get, base + "/metrics")
            assert status == 200
            assert media_type == "text/plain; version=0.0.4; charset=utf-8"
            samples = _samples(body)
            assert samples["fastworker_tasks_submitted_total", (("task", "add"),)] == 2
            assert samples["fastworker_journal_commit_seconds_count", ()] >= 1
            assert (await asyncio.to_thread(_get, base + "/metrics", "POST"))[0] == 405
            # On loopback, only to loopback names: no reading it through DNS rebinding.
            rebound = await asyncio.to_thread(_get, base + "/metrics", "GET", "rebound.example")
            assert rebound[0] == 403
            for name in (f"localhost:{server.port}", f"[::1]:{server.port}"):
                assert (await asyncio.to_thread(_get, base + "/metrics", "GET", name))[0] == 200
            assert (await asyncio.to_thread(_get, base + "/healthz"))[0] == 404

            # A loop that does not turn gives no metrics, and says so.
            answers: list[tuple[int, str, str]] = []
            scrape = threading.Thread(target=lambda: answers.append(_get(base + "/metrics")))
            scrape.start()
            time.sleep(health.LOOP_ANSWER_TIMEOUT + 0.5)  # noqa: ASYNC251 (wedges the loop on purpose)
            await asyncio.to_thread(scrape.join, 10)
            ((status, _type, body),) = answers
            assert status == 503
            assert "did not answer within 1.0 s" in body
        finally:
            await plane.stop()


def test_metrics_port_without_prometheus_client_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real_import = builtins.__import__

    def without_prometheus(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("prometheus_client"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_prometheus)
    monkeypatch.delitem(sys.modules, "fastworker.server.metrics_http", raising=False)
    monkeypatch.delitem(sys.modules, "fastworker.client.prometheus", raising=False)
    monkeypatch.chdir(tmp_path)
    code = main(["control-plane", "--metrics-port", "0", "--address", f"ipc://{tmp_path}/cp.sock"])
    assert code == ExitCode.USAGE
    assert "pip install 'fastworker-server[metrics]'" in capsys.readouterr().err
