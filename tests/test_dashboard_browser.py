"""The dashboard in a real browser: a real control plane and subworker (the fastworker
command line), the dashboard in its own process (``python -m fastworker.dashboard``, real
uvicorn on a free loopback port) and headless Chromium driven through Playwright.

Screenshots go to ``artifacts/dashboard/`` at the repository root (ignored by git). With
``FASTWORKER_UPDATE_SCREENSHOT=1`` (or when it is missing) the under-load screenshot is
also copied to ``docs/images/dashboard.png``, the README's picture.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright``
package (``pip install playwright``; its own browser download is not used). Without them
the tests are skipped, except under ``CI=true``, where they fail: a CI run that skipped
the browser would pass without having tested the page.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fastworker.client import Client, TaskCall, TaskPriority, TaskStatus
from fastworker.protocol import decode_value
from fw_processes import Processes, connect, wait_for_workers
from fw_waits import Gate

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

have_playwright = importlib.util.find_spec("playwright") is not None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "artifacts" / "dashboard"
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
WAIT_MS = 20_000
"""Bound of every wait on the page's state, in milliseconds."""

pytestmark = pytest.mark.timeout(180)


def _missing_browser() -> str | None:
    if not CHROMIUM.exists():
        return (
            f"needs Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(as root; .ci/run does this when run as root)"
        )
    if not have_playwright:
        return "needs the playwright package: pip install playwright"
    return None


@pytest.fixture(autouse=True)
def _browser() -> None:
    """Skips a browser test that has no browser, or fails it under CI=true."""
    missing = _missing_browser()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the browser tests cannot run: {missing}", pytrace=False)
    pytest.skip(missing)


# --- helpers ---------------------------------------------------------------------------


def start_dashboard(
    processes: Processes, address: str, *extra: str, python: str = sys.executable
) -> str:
    """Run the dashboard of ``python``'s environment in its own process on a free
    loopback port; return its URL."""
    log_path = processes.tmp_path / "dashboard.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(python, "-m", "fastworker.dashboard"),
                *("--control-plane", address, "--host", "127.0.0.1", "--port", "0"),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    processes.started.append(process)  # ended with the other processes
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+/)", log_path.read_text())
        if found:
            url = found.group(1)
            _wait_until_it_answers(url)
            return url
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"the dashboard did not start:\n{log_path.read_text()}")


def _wait_until_it_answers(url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "static/dashboard.css", timeout=5):
                return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@asynccontextmanager
async def chromium() -> AsyncGenerator[Browser, None]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def wait_for_depths(page: Page, condition: str) -> dict[str, int]:
    """Wait until the page's queue bars satisfy ``condition`` (a JavaScript expression on
    ``d``, the depths by priority), without reloading; return the depths it saw."""
    await page.wait_for_function(
        """() => {
            const d = {};
            for (const e of document.querySelectorAll('.queue[data-priority]')) {
                d[e.dataset.priority] = Number(e.dataset.depth);
            }
            return Object.keys(d).length === 4 && (CONDITION);
        }""".replace("CONDITION", condition),
        timeout=WAIT_MS,
    )
    return await depths(page)


async def depths(page: Page) -> dict[str, int]:
    found: dict[str, int] = {}
    for element in await page.query_selector_all(".queue[data-priority]"):
        priority = await element.get_attribute("data-priority")
        depth = await element.get_attribute("data-depth")
        assert priority is not None
        assert depth is not None
        found[priority] = int(depth)
    return found


@dataclass
class Setup:
    address: str
    client: Client
    url: str


@asynccontextmanager
async def busy_control_plane(processes: Processes) -> AsyncGenerator[Setup, None]:
    """A control plane that runs nothing itself, one subworker of concurrency 1, a
    dashboard, and a client."""
    address = processes.address()
    processes.control_plane(address, "--no-local-execution")
    client = await connect(address)
    try:
        processes.subworker(address, "busy-1", "--concurrency", "1")
        await wait_for_workers(client, 1)
        url = await asyncio.to_thread(start_dashboard, processes, address)
        yield Setup(address, client, url)
    finally:
        await client.stop()


# --- tests -----------------------------------------------------------------------------


async def test_priorities_move_live_in_the_page(processes: Processes) -> None:
    async with busy_control_plane(processes) as setup, chromium() as browser:
        client = setup.client
        page = await browser.new_page(viewport={"width": 1360, "height": 1000})
        response = await page.goto(setup.url)
        assert response is not None
        assert response.status == 200
        assert await page.title() == "fastworker dashboard"
        await page.wait_for_selector('tr[data-worker-id="busy-1"][data-state="connected"]')
        assert await page.is_visible("#cp-status.is-up")
        # Marks this page load: a reload would lose it.
        await page.evaluate("window.__fwSameLoad = true")

        # A little traffic first, so the charts and the history have something to show.
        for wave in range(3):
            calls = [TaskCall("add", (i, wave)) for i in range(150)]
            calls += [TaskCall("fail", (f"wave {wave}",), priority="normal")]
            ids = await client.delay_many(calls)
            await asyncio.gather(*(client.wait(task_id, timeout=30) for task_id in ids))
            await page.wait_for_timeout(700)
        await page.wait_for_selector('.stat[data-counter="succeeded"][data-value="450"]')

        # The only worker slot is held until the test lets go, so everything after queues.
        gate = Gate(processes.tmp_path)
        blocker = await client.delay("hold", gate.path, priority=TaskPriority.CRITICAL)
        await page.wait_for_selector('.stat[data-counter="running"][data-value="1"]')

        # The LOW tasks hold the slot in turn, so LOW cannot drain while the page is looked at.
        low_gate = Gate(processes.tmp_path, "low")
        seen_low: list[int] = []
        for batch in range(3):
            await client.delay_many(
                [TaskCall("hold", (low_gate.path,), priority=TaskPriority.LOW) for _ in range(50)]
            )
            seen = await wait_for_depths(page, f"d.low >= {50 * (batch + 1)}")
            seen_low.append(seen["low"])
        assert seen_low == sorted(seen_low)
        assert seen_low[-1] >= 150  # the LOW bar grew

        await client.delay_many([TaskCall("add", (i, i), priority="high") for i in range(20)])
        under_load = await wait_for_depths(page, "d.high >= 20 && d.low >= 150")
        assert under_load["high"] == 20
        high_width = await page.eval_on_selector(
            ".queue[data-priority=high] .fill", "e => e.getBoundingClientRect().width"
        )
        low_width = await page.eval_on_selector(
            ".queue[data-priority=low] .fill", "e => e.getBoundingClientRect().width"
        )
        assert 0 < high_width < low_width
        await page.wait_for_timeout(300)  # let the bars' width transition settle
        shot = await screenshot(page, "under-load")
        if os.environ.get("FASTWORKER_UPDATE_SCREENSHOT") == "1" or not DOCS_SCREENSHOT.exists():
            DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOT)

        dark = await browser.new_page(viewport={"width": 1360, "height": 1000}, color_scheme="dark")
        await dark.goto(setup.url)
        await wait_for_depths(dark, "d.high >= 1")
        await screenshot(dark, "under-load-dark")
        await dark.close()

        # When the blocker ends, HIGH drains first while LOW waits: strict priorities,
        # seen in the same page, never reloaded.
        gate.open()
        drained = await wait_for_depths(page, "d.high === 0 && d.low >= 100")
        assert drained["critical"] == 0
        assert (await client.wait(blocker, timeout=30)).status is TaskStatus.SUCCEEDED
        assert await page.evaluate("window.__fwSameLoad === true")

        phone = await browser.new_page(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        )
        await phone.goto(setup.url)
        await wait_for_depths(phone, "d.low >= 1")
        width = await phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide at phone width"
        await screenshot(phone, "phone")
        await phone.close()

        # Leave nothing running: cancel what still waits, and release the LOW task that runs.
        waiting = await client.history(status=TaskStatus.QUEUED, limit=1000)
        await client.cancel(*(t.task_id for t in waiting.tasks))
        low_gate.open()


async def test_cancel_retry_and_forged_posts_from_the_page(processes: Processes) -> None:
    async with busy_control_plane(processes) as setup, chromium() as browser:
        client = setup.client
        failed = await client.delay("fail", "boom", priority=TaskPriority.HIGH)
        assert (await client.wait(failed, timeout=30)).status is TaskStatus.FAILED
        # Holds the only slot until the checks below are done: what comes after queues.
        gate = Gate(processes.tmp_path)
        blocker = await client.delay("hold", gate.path, priority=TaskPriority.CRITICAL)
        queued = await client.delay("add", 1, 2, priority=TaskPriority.LOW)

        page = await browser.new_page(viewport={"width": 1360, "height": 1000})
        await page.goto(setup.url)

        # Cancel from the task history.
        row = f'tr[data-task-id="{queued}"]'
        await page.wait_for_selector(f'{row}[data-status="queued"]', timeout=WAIT_MS)
        await page.click(f'{row} button[data-action="cancel"]')
        await page.wait_for_selector("#toast .toast-ok", timeout=WAIT_MS)
        assert "Cancelled task" in await page.inner_text("#toast")
        await page.wait_for_selector(f'{row}[data-status="cancelled"]', timeout=WAIT_MS)
        assert (await client.status(queued)).status is TaskStatus.CANCELLED
        await screenshot(page, "cancelled")

        # Retry from the failed task's page: same name, arguments and priority.
        await page.goto(f"{setup.url}tasks/{failed}")
        assert "ValueError" in await page.inner_text(".card-error")
        assert "Traceback" in await page.inner_text(".traceback")
        assert '"boom"' in await page.inner_text('[data-payload="args"]')
        await screenshot(page, "failed-task")
        await page.click('button[data-action="retry"]')
        link = await page.wait_for_selector("#toast .toast-ok a", timeout=WAIT_MS)
        assert link is not None
        href = await link.get_attribute("href")
        assert href is not None
        assert href.startswith("/tasks/")
        new_id = href.removeprefix("/tasks/")
        assert new_id != failed
        retried = await client.status(new_id, include_payloads=True)
        assert (retried.name, retried.priority) == ("fail", TaskPriority.HIGH)
        assert decode_value(retried.args) == ["boom"]
        assert decode_value(retried.kwargs) == {}

        # Forged POSTs against a task that is still queued, so a cancel would take.
        victim = await client.delay("add", 2, 3, priority=TaskPriority.LOW)
        assert (await client.status(victim)).status is TaskStatus.QUEUED
        # Without the token, from the page's own origin: refused.
        own = await browser.new_page()
        await own.goto(setup.url)
        status = await own.evaluate(
            "(url) => fetch(url, {method: 'POST'}).then(r => r.status)",
            f"{setup.url}actions/cancel/{victim}",
        )
        assert status == 403
        # A cross-site form posting to the dashboard (the classic forgery): refused.
        forger = await browser.new_page()
        await forger.set_content(
            f'<form method="post" action="{setup.url}actions/cancel/{victim}"></form>'
        )
        async with forger.expect_navigation() as navigation:
            await forger.eval_on_selector("form", "f => f.submit()")
        forged = await navigation.value
        assert forged is not None
        assert forged.status == 403
        assert (await client.status(victim)).status is TaskStatus.QUEUED

        # Let the queue move: the retried task fails the same way, the victim runs.
        gate.open()
        outcome = await client.wait(new_id, timeout=60)
        assert outcome.status is TaskStatus.FAILED
        assert "boom" in str(outcome.error)
        assert await client.result(victim, timeout=30) == 5
        await page.click("#toast .toast-ok a")
        await page.wait_for_selector(
            f'#task[data-task-id="{new_id}"][data-status="failed"]', timeout=WAIT_MS
        )
        assert (await client.wait(blocker, timeout=30)).status is TaskStatus.SUCCEEDED


async def test_the_page_shows_an_unreachable_control_plane_and_recovers(
    processes: Processes,
) -> None:
    address = processes.address()
    env = {"FASTWORKER_DASHBOARD": "0"}
    args = ("control-plane", "--task-modules", "fw_tasks", "--address", address)
    first = processes.fastworker(*args, name="control-plane", env=env)
    client = await connect(address)
    await client.stop()
    url = await asyncio.to_thread(start_dashboard, processes, address)
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1360, "height": 900})
        await page.goto(url)
        await page.wait_for_selector("#cp-status.is-up", timeout=WAIT_MS)
        await page.evaluate("window.__fwSameLoad = true")

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        banner = await page.wait_for_selector('[data-testid="unreachable-banner"]', timeout=WAIT_MS)
        assert banner is not None
        assert f"Control plane unreachable at {address}" in await banner.inner_text()
        assert await page.is_visible("#cp-status.is-down")
        await screenshot(page, "unreachable")

        processes.fastworker(*args, name="control-plane-2", env=env)
        await page.wait_for_selector("#cp-status.is-up", timeout=30_000)
        assert await page.query_selector('[data-testid="unreachable-banner"]') is None
        assert await page.evaluate("window.__fwSameLoad === true")
