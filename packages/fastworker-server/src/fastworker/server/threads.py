"""Threads for blocking task functions, with completions handed to the event loop in bulk.

A sync task must not block the event loop, so it runs on a thread. Going through
``ThreadPoolExecutor`` and ``asyncio.wrap_future`` costs a concurrent future, an asyncio
future and a wake-up write to the loop for every call; for short tasks that was most of
a subworker's time. Here a thread runs the whole job (the caller passes one function
that never raises), appends the result to a shared deque, and wakes the loop only when
the deque was empty: under load one wake-up carries many completions.

Threads start when work arrives and none is idle, up to the limit, and stay for the
life of the lane. They are daemon threads: a task that never returns must not keep the
process from exiting (the command line reports such threads and ends the process).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["ThreadLane"]

_T = TypeVar("_T")

_Job = tuple[Callable[[], Any], Callable[[Any], None]]


class ThreadLane(Generic[_T]):
    """Runs functions on at most ``threads`` threads and calls each one's ``done``
    callback with its result on the event loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, threads: int, name: str) -> None:
        if threads < 1:
            raise ValueError("a thread lane needs at least one thread")
        self._loop = loop
        self._limit = threads
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        """Released by a thread each time it is about to wait for a job."""
        self._finished: collections.deque[tuple[Callable[[Any], None], Any]] = collections.deque()
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False

    @property
    def running(self) -> int:
        """Functions being run right now, including ones whose result nobody awaits."""
        return self._running

    def submit(self, function: Callable[[], _T], done: Callable[[_T], None]) -> None:
        """Run ``function`` on a thread; ``done`` gets its result on the loop thread.

        ``function`` must not raise: it is the caller's job to turn errors into results.
        Nothing is run or called back once the lane is closed.
        """
        if self._closed:
            return
        self._jobs.put((function, done))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self._limit:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        """Run nothing more: queued functions are dropped, running ones finish on their
        threads and their results are discarded."""
        self._closed = True
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._closed:
                return
            function, done = job
            with self._lock:
                self._running += 1
            result = function()
            with self._lock:
                wake = not self._finished
                self._finished.append((done, result))
            if wake:
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    self._loop.call_soon_threadsafe(self._deliver)
            with self._lock:
                # Only now: once nothing runs, every result is on its way to the loop.
                self._running -= 1
            self._idle.release()

    def _deliver(self) -> None:
        with self._lock:
            finished = list(self._finished)
            self._finished.clear()
        if self._closed:
            return
        for done, result in finished:
            done(result)
