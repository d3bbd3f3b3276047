"""Throughput and latency over the last minutes, sampled from the control plane.

A :class:`Sampler` asks the control plane for its overview once a second and keeps a
bounded ring of samples (ten minutes at one a second). Throughput comes from the
differences of the cumulative counters between samples (tasks finished per second,
tasks submitted per second).

Latency is end to end, ``finished_at - queued_at`` as the control plane recorded it (one
clock, so no skew between hosts). It is read from the newest page of succeeded tasks
(``history(status=succeeded, limit=100)``, newest queued first), asked for only when the
counters show that tasks finished since the previous sample; a task counts once, when
its ``finished_at`` passes the highest one already counted. Under a flood that page may
miss some of the tasks that finished within one second: latency is a sample, throughput
is exact.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Final

from fastworker.protocol import FastworkerError, TaskStatus
from fastworker.protocol import messages as m

from ._source import DashboardSource

__all__ = ["Chart", "Sample", "Sampler", "Series", "percentile"]

log = logging.getLogger("fastworker.dashboard")

SAMPLE_INTERVAL: Final = 1.0
"""Seconds between samples."""
WINDOW: Final = 600.0
"""Seconds of samples kept and charted."""
LATENCY_PAGE: Final = 100
"""Succeeded tasks read per sample to measure latency."""
LATENCY_KEEP: Final = 20_000
"""Individual latencies kept for the summary percentiles (a bound, not a window)."""
SUMMARY_WINDOW: Final = 60.0
"""Seconds over which the summary rates and percentiles are taken."""
MIN_CHART_WINDOW: Final = 60.0
"""Seconds a chart spans at least: it shows the samples it has, from one minute up to
:data:`WINDOW`."""
IDLE_STOP: Final = 600.0
"""A sampler nobody reads stops after this many seconds (restarted on the next read)."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """The control plane's counters at one moment (dashboard clock)."""

    at: float
    submitted: int
    finished: int
    """Succeeded, failed and cancelled tasks together."""
    failed: int
    latency_p50: float | None = None
    """Median latency, in seconds, of the tasks counted at this sample (None: none)."""
    latency_p95: float | None = None


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile of ``values`` (nearest rank), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a chart: points in chart coordinates, broken at gaps."""

    name: str
    css_class: str
    line: str
    """SVG path data of the line."""
    area: str
    """SVG path data of the area under the line (empty when the series has none)."""
    last: float | None


@dataclasses.dataclass(frozen=True)
class Chart:
    """A small time chart over the sample window, drawn as inline SVG."""

    width: int
    height: int
    y_max: float
    series: list[Series]
    window: float

    @property
    def empty(self) -> bool:
        return not any(s.line for s in self.series)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value * 0.999_999:
            return candidate
    return 10.0 ** (exponent + 1)  # pragma: no cover - the loop ends at 10


class Sampler:
    """Samples a control plane once a second into a bounded ring buffer.

    It runs as a task on the event loop that serves the dashboard. ``touch()`` (called by
    every request) starts it when it is not running; it stops by itself after
    :data:`IDLE_STOP` seconds without a request unless ``keep_running`` is set (the
    standalone app keeps it running for its whole life).
    """

    def __init__(
        self,
        client: Callable[[], DashboardSource],
        *,
        interval: float = SAMPLE_INTERVAL,
        window: float = WINDOW,
        keep_running: bool = False,
    ) -> None:
        self._client = client
        self.interval = interval
        self.window = window
        self.keep_running = keep_running
        self.samples: collections.deque[Sample] = collections.deque(
            maxlen=int(window / interval) + 1
        )
        self._latencies: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=LATENCY_KEEP
        )
        """(when counted, dashboard clock; latency in seconds)."""
        self._watermark: float | None = None
        """Highest ``finished_at`` already counted (control plane clock)."""
        self._identity: tuple[str, float] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_used = time.monotonic()
        self.last_answer = time.monotonic()
        """When the control plane last answered a sample (monotonic clock)."""

    # --- lifecycle ------------------------------------------------------------------------

    def touch(self) -> None:
        """Note a reader, and start sampling on the running loop if not already."""
        self._last_used = time.monotonic()
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._task = loop.create_task(self._run(), name="fastworker-dashboard-sampler")

    async def stop(self) -> None:
        """Stop sampling (the samples are kept)."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            task.get_loop().call_soon_threadsafe(task.cancel)
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while self.keep_running or time.monotonic() - self._last_used < IDLE_STOP:
            started = time.monotonic()
            try:
                await self.sample_once()
            except Exception:  # a bug here must not end the sampling for good
                log.exception("dashboard sampler failed")
            await asyncio.sleep(max(self.interval - (time.monotonic() - started), 0.05))

    # --- sampling -------------------------------------------------------------------------

    async def sample_once(self) -> None:
        """Take one sample; a control plane that does not answer leaves a gap."""
        client = self._client()
        try:
            overview = await client.overview()
        except FastworkerError:
            return
        self.last_answer = time.monotonic()
        identity = (overview.control_plane_id, overview.started_at)
        if identity != self._identity:
            # A new control plane (or a restarted one): counters start afresh.
            self._identity = identity
            self._watermark = None
        counters = overview.counters
        finished = counters.succeeded + counters.failed + counters.cancelled
        previous = self.samples[-1] if self.samples else None
        p50 = p95 = None
        if self._watermark is None or previous is None or finished != previous.finished:
            latencies = await self._new_latencies(client)
            p50 = percentile(latencies, 0.50)
            p95 = percentile(latencies, 0.95)
        self.samples.append(
            Sample(
                at=time.time(),
                submitted=counters.submitted,
                finished=finished,
                failed=counters.failed,
                latency_p50=p50,
                latency_p95=p95,
            )
        )

    async def _new_latencies(self, client: DashboardSource) -> list[float]:
        try:
            page = await client.history(limit=LATENCY_PAGE, status=TaskStatus.SUCCEEDED)
        except FastworkerError:
            return []
        return self.count_finished(page.tasks)

    def count_finished(self, tasks: Sequence[m.TaskInfo]) -> list[float]:
        """Latencies of the tasks that finished after the last one counted. The first call
        only sets the mark: tasks that finished before the dashboard looked are history."""
        done = [t for t in tasks if t.finished_at is not None]
        newest = max((t.finished_at for t in done if t.finished_at is not None), default=None)
        if self._watermark is None:
            self._watermark = newest if newest is not None else 0.0
            return []
        mark = self._watermark
        fresh = [
            t.finished_at - t.queued_at
            for t in done
            if t.finished_at is not None and t.finished_at > mark
        ]
        if newest is not None and newest > mark:
            self._watermark = newest
        now = time.time()
        self._latencies.extend((now, max(latency, 0.0)) for latency in fresh)
        return [max(latency, 0.0) for latency in fresh]

    # --- reading --------------------------------------------------------------------------

    def rates(self) -> list[tuple[float, float | None, float | None]]:
        """(time, finished per second, submitted per second) between consecutive samples;
        None where there is a gap (the control plane did not answer, or restarted)."""
        points: list[tuple[float, float | None, float | None]] = []
        samples = list(self.samples)
        for a, b in itertools.pairwise(samples):
            dt = b.at - a.at
            if dt <= 0 or dt > 5 * self.interval or b.finished < a.finished:
                points.append((b.at, None, None))
                continue
            submitted = (b.submitted - a.submitted) / dt if b.submitted >= a.submitted else None
            points.append((b.at, (b.finished - a.finished) / dt, submitted))
        return points

    def summary(self, now: float | None = None) -> dict[str, float | int | None]:
        """Rates and latency percentiles over the last :data:`SUMMARY_WINDOW` seconds."""
        now = time.time() if now is None else now
        recent = [s for s in self.samples if s.at >= now - SUMMARY_WINDOW]
        finished_rate = submitted_rate = failed_rate = None
        if len(recent) >= 2:
            first, last = recent[0], recent[-1]
            dt = last.at - first.at
            if dt > 0 and last.finished >= first.finished and last.submitted >= first.submitted:
                finished_rate = (last.finished - first.finished) / dt
                submitted_rate = (last.submitted - first.submitted) / dt
                failed_rate = max(last.failed - first.failed, 0) / dt
        latencies = [lat for at, lat in self._latencies if at >= now - SUMMARY_WINDOW]
        return {
            "window_seconds": SUMMARY_WINDOW,
            "finished_per_second": finished_rate,
            "submitted_per_second": submitted_rate,
            "failed_per_second": failed_rate,
            "latency_samples": len(latencies),
            "latency_p50": percentile(latencies, 0.50),
            "latency_p95": percentile(latencies, 0.95),
            "latency_max": max(latencies) if latencies else None,
        }

    def series(self, now: float | None = None) -> dict[str, list[dict[str, float | None]]]:
        """The charted data, for the JSON twin of the page."""
        return {
            "throughput": [
                {"at": at, "finished_per_second": done, "submitted_per_second": sub}
                for at, done, sub in self.rates()
            ],
            "latency": [
                {"at": s.at, "p50": s.latency_p50, "p95": s.latency_p95}
                for s in self.samples
                if s.latency_p50 is not None
            ],
        }

    def chart_window(self, now: float) -> float:
        """Seconds the charts span: the samples kept, at least one minute."""
        oldest = self.samples[0].at if self.samples else now
        return min(max(now - oldest, MIN_CHART_WINDOW), self.window)

    def throughput_chart(self, now: float | None = None) -> Chart:
        """Finished and submitted tasks per second over the window."""
        now = time.time() if now is None else now
        rates = self.rates()
        done = [(at, value) for at, value, _ in rates]
        submitted = [(at, value) for at, _, value in rates]
        return _chart(
            [("finished/s", "s-done", done, True), ("submitted/s", "s-in", submitted, False)],
            now=now,
            window=self.chart_window(now),
            gap=5 * self.interval,
        )

    def latency_chart(self, now: float | None = None) -> Chart:
        """Latency (queued to finished) p50 and p95 per sample, in seconds."""
        now = time.time() if now is None else now
        samples = list(self.samples)
        p50 = [(s.at, s.latency_p50) for s in samples]
        p95 = [(s.at, s.latency_p95) for s in samples]
        return _chart(
            [("p95", "s-p95", p95, True), ("p50", "s-p50", p50, False)],
            now=now,
            window=self.chart_window(now),
            gap=30 * self.interval,
            skip_missing=True,
        )


_WIDTH: Final = 600
_HEIGHT: Final = 120


def _chart(
    lines: list[tuple[str, str, list[tuple[float, float | None]], bool]],
    *,
    now: float,
    window: float,
    gap: float,
    skip_missing: bool = False,
) -> Chart:
    start = now - window
    values = [v for _, _, points, _ in lines for at, v in points if v is not None and at >= start]
    y_max = nice_ceiling(max(values, default=0.0))

    def x(at: float) -> float:
        return round((at - start) / window * _WIDTH, 1)

    def y(value: float) -> float:
        return round(_HEIGHT - min(value / y_max, 1.0) * _HEIGHT, 1)

    series: list[Series] = []
    for name, css, points, with_area in lines:
        segments: list[list[tuple[float, float]]] = []
        current: list[tuple[float, float]] = []
        previous_at: float | None = None
        for at, value in points:
            if at < start:
                continue
            if value is None:
                if not skip_missing:
                    if current:
                        segments.append(current)
                    current = []
                continue
            if previous_at is not None and at - previous_at > gap and current:
                segments.append(current)
                current = []
            current.append((x(at), y(value)))
            previous_at = at
        if current:
            segments.append(current)
        line = " ".join("M" + " L".join(f"{px},{py}" for px, py in segment) for segment in segments)
        area = ""
        if with_area:
            area = " ".join(
                f"M{segment[0][0]},{_HEIGHT} L"
                + " L".join(f"{px},{py}" for px, py in segment)
                + f" L{segment[-1][0]},{_HEIGHT} Z"
                for segment in segments
            )
        last = next((v for _, v in reversed(points) if v is not None), None)
        series.append(Series(name=name, css_class=css, line=line, area=area, last=last))
    return Chart(width=_WIDTH, height=_HEIGHT, y_max=y_max, series=series, window=window)
