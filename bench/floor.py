# pynng ships no type information.
# pyright: reportMissingTypeStubs=false, reportUnknownMemberType=false
# pyright: reportUnknownArgumentType=false, reportUnknownVariableType=false
"""The transport's floor for W2: ``python bench/floor.py [--calls N]``.

A naive client -> router -> worker -> router -> client pipeline with blocking pynng
pair1 sockets, one message per frame, over 127.0.0.1: no queue, no asyncio, no
bookkeeping, just the four hops a sequential submit-and-wait through a subworker takes.
Its p50 is the lowest W2 any design on these sockets can reach on this machine. Each
role is its own process; the router and worker are ended by their PIDs on every way out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import warnings

import msgspec
import pynng

_CLIENT_SIDE = "tcp://127.0.0.1:45871"
_WORKER_SIDE = "tcp://127.0.0.1:45872"
_TIMEOUT_MS = 10_000
"""Every send and receive of the measuring side is bounded."""


def _router() -> None:
    with pynng.Pair1(recv_timeout=-1) as clients, pynng.Pair1(recv_timeout=-1) as workers:
        clients.listen(_CLIENT_SIDE)
        workers.listen(_WORKER_SIDE)

        def back() -> None:
            while True:
                clients.send(workers.recv())

        threading.Thread(target=back, daemon=True).start()
        while True:
            workers.send(clients.recv())


def _worker() -> None:
    with pynng.Pair1(recv_timeout=-1) as socket:
        socket.dial(_WORKER_SIDE, block=False)  # NNG redials until the router listens
        while True:
            call_id, x, y = msgspec.msgpack.decode(socket.recv())
            socket.send(msgspec.msgpack.encode([call_id, x + y]))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def measure(calls: int) -> tuple[float, float]:
    """Start a router and a worker, time ``calls`` sequential round trips after a
    warm-up, and return (p50, p99) in milliseconds."""
    roles = [
        subprocess.Popen([sys.executable, __file__, "--role", role])
        for role in ("router", "worker")
    ]
    try:
        with pynng.Pair1(recv_timeout=_TIMEOUT_MS, send_timeout=_TIMEOUT_MS) as socket:
            socket.dial(_CLIENT_SIDE, block=False)  # the first send waits for the connection
            times: list[float] = []
            for call_id in range(calls + 200):  # the first 200 warm up and are not counted
                started = time.perf_counter()
                socket.send(msgspec.msgpack.encode([call_id, call_id, 1]))
                reply = msgspec.msgpack.decode(socket.recv())
                if reply != [call_id, call_id + 1]:
                    raise RuntimeError(f"wrong reply {reply!r} to call {call_id}")
                if call_id >= 200:
                    times.append((time.perf_counter() - started) * 1000)
        return _percentile(times, 0.50), _percentile(times, 0.99)
    finally:
        for process in roles:
            process.kill()
            process.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="The transport's floor for W2: a naive blocking 4-hop pipeline."
    )
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--role", choices=("router", "worker"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    warnings.simplefilter("ignore")
    if options.role == "router":
        _router()
    elif options.role == "worker":
        _worker()
    else:
        p50, p99 = measure(options.calls)
        print(f"naive blocking pipeline, 4 hops: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
