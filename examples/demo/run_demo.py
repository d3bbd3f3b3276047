"""Run the fastworker demo: a control plane, two subworkers and a stream of shop orders.

Usage: python examples/demo/run_demo.py [--duration SECONDS] [--address ADDR]

Every order charges a card (CRITICAL), sends a receipt (HIGH) and records a metric
(NORMAL); every so often a burst of log archiving (LOW) arrives. Watch LOW tasks queue up
while the others drain ahead of them. Stops on Ctrl-C (or after --duration) and ends the
processes it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastworker.client import Client, TaskCall, TaskPriority

SHOP = Path(__file__).parent.parent / "shop"
STOP_TIMEOUT = 10.0


def start(*args: str) -> subprocess.Popen[bytes]:
    """Start one ``fastworker`` process with the demo's tasks importable."""
    return subprocess.Popen([sys.executable, "-m", "fastworker.server.cli", *args], cwd=SHOP)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process we started, then SIGKILL any that outlive the bound."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


async def connect(address: str, timeout: float) -> Client:
    """A started client, once the control plane answers."""
    deadline = time.monotonic() + timeout
    while True:
        client = Client(address, request_timeout=1.0)
        try:
            await client.start()
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def shop(address: str, duration: float | None) -> int:
    """Submit orders until stopped; print what the control plane sees once a second."""
    client = await connect(address, timeout=30)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    started = time.monotonic()
    order_id = 0
    completed = 0

    def count(_result: object) -> None:
        nonlocal completed
        completed += 1

    try:
        while not stopping.is_set():
            if duration is not None and time.monotonic() - started > duration:
                break
            for _ in range(20):
                order_id += 1
                await client.delay("charge_card", order_id, 1999, on_complete=count)
                await client.delay(
                    "send_receipt_email",
                    order_id,
                    f"buyer{order_id}@example.com",
                    on_complete=count,
                )
                await client.delay("record_purchase_metric", order_id, 1999, on_complete=count)
            if order_id % 200 == 0:
                await client.delay_many(
                    [
                        TaskCall("archive_old_logs", (day,), priority=TaskPriority.LOW)
                        for day in range(100)
                    ]
                )
            overview = await client.overview()
            depth = overview.queue_depth
            workers = ", ".join(f"{w.worker_id} {w.load}/{w.slots}" for w in overview.workers)
            print(
                f"orders {order_id:6}  done {completed:6}  queued: critical {depth.critical} "
                f"high {depth.high} normal {depth.normal} low {depth.low}  workers: {workers}",
                flush=True,
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)
    finally:
        await client.stop()
    return 0 if completed > 0 else 1


def main() -> int:
    """Start the processes, run the shop, stop everything."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--address", default="tcp://127.0.0.1:5555")
    parser.add_argument(
        "--dashboard-port", type=int, default=8080, help="0 picks a free port (default: 8080)"
    )
    parser.add_argument(
        "--journal",
        default=str(SHOP / "fastworker-journal.sqlite3"),
        help="the control plane's journal: orders still queued at the last stop run again "
        "(default: %(default)s)",
    )
    options = parser.parse_args()
    processes = [
        start(
            "control-plane",
            "--task-modules",
            "shop_tasks",
            "--address",
            options.address,
            "--dashboard-port",
            str(options.dashboard_port),
            "--journal",
            options.journal,
        )
    ]
    print(f"journal: {options.journal}", flush=True)
    if options.dashboard_port:
        print(f"dashboard: http://127.0.0.1:{options.dashboard_port}", flush=True)
    try:
        for worker_id in ("fast-1", "fast-2"):
            processes.append(
                start(
                    "subworker",
                    "--worker-id",
                    worker_id,
                    "--control-plane-address",
                    options.address,
                    "--task-modules",
                    "shop_tasks",
                    "--concurrency",
                    "4",
                )
            )
        return asyncio.run(shop(options.address, options.duration))
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
