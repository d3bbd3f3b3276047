# pynng ships no type information.
# pyright: reportMissingTypeStubs=false, reportUnknownMemberType=false
# pyright: reportUnknownArgumentType=false, reportUnknownVariableType=false
"""The references every target is a ratio to: naive pipelines over the same sockets and
the same loopback, measured in the same run as fastworker.

- **floors of W2**: one call at a time, one message per frame, blocking sockets, no
  asyncio, no bookkeeping: the hops a sequential submit-and-wait takes and nothing else.
  Four hops (client -> router -> worker -> router -> client) with push/pull sockets and
  a single-threaded router; the same with one pair1 polyamorous socket at the router,
  the socket kind fastworker uses; two hops (client -> worker -> client), the floor of a
  control plane that runs the task itself.
- **reference of W1**: the batched asyncio pipeline over the same four hops: every call
  in flight at once, as many calls per frame as one turn of the event loop gathers, a
  future per call.

Each role is its own process (``python -m bench.references --role ...``); the measuring
side runs in the caller's process, as fastworker's client does in the suite. Every role
is ended by its PID on every way out; every send and receive of the measuring side is
bounded. ``python bench/references.py`` measures them all and prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import select
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pynng

if __package__ in (None, ""):  # run as a script: the suite's modules are bench.<module>
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.metrics import Measurement, percentile

__all__ = [
    "BATCHED",
    "CALL_P50",
    "CALL_P99",
    "FOUR_HOPS_PAIR1",
    "FOUR_HOPS_PUSH_PULL",
    "THROUGHPUT",
    "TWO_HOPS",
    "batched_throughput",
    "call_latency",
    "measure_batched",
    "measure_floors",
]

FOUR_HOPS_PUSH_PULL = "tcp, naive push/pull router, 4 hops"
FOUR_HOPS_PAIR1 = "tcp, naive pair1 polyamorous router, 4 hops"
TWO_HOPS = "tcp, naive push/pull, 2 hops"
BATCHED = "tcp, naive batched asyncio, pair1 polyamorous router, 4 hops"
"""The setups of the reference rows, by which the suite's ratios name them."""
CALL_P50 = "p50 of call"
CALL_P99 = "p99 of call"
THROUGHPUT = "throughput"

WORKLOAD = "ref"
_ROOT = Path(__file__).resolve().parent.parent
_TIMEOUT_MS = 10_000
"""Every send and receive of the measuring side is bounded by this."""
_READY_TIMEOUT = 30.0
"""Seconds a role may take to start and connect."""
_WARM_UP = 200
_PER_FRAME = 1_000
"""Calls per frame at most in the batched pipeline (as fastworker's frames)."""
_HELLO = b"worker"

Addresses = Sequence[str]


def _quiet() -> None:
    # pynng warns that pair1's polyamorous mode is deprecated; the reference uses it on
    # purpose, as fastworker's transport does.
    warnings.simplefilter("ignore")


# --- the roles, each in its own process ---------------------------------------------


def _push_pull_router(addresses: Addresses) -> None:
    """One PULL socket both sides push to, tagged; a PUSH socket to each side."""
    inbox_address, to_worker_address, to_client_address = addresses
    with (
        pynng.Pull0(recv_timeout=-1) as inbox,
        pynng.Push0() as to_worker,
        pynng.Push0() as to_client,
    ):
        inbox.listen(inbox_address)
        to_worker.listen(to_worker_address)
        to_client.listen(to_client_address)
        _ready()
        while True:
            data = inbox.recv()
            (to_worker if data[:1] == b"c" else to_client).send(data[1:])


def _push_pull_worker(addresses: Addresses) -> None:
    inbox_address, to_worker_address, _ = addresses
    with pynng.Pull0(recv_timeout=-1) as calls, pynng.Push0() as replies:
        calls.dial(to_worker_address, block=False)  # NNG redials until the router listens
        replies.dial(inbox_address, block=False)
        _ready()
        while True:
            call_id, x, y = msgspec.msgpack.decode(calls.recv())
            replies.send(b"w" + msgspec.msgpack.encode([call_id, x + y]))


def _pair1_router(addresses: Addresses) -> None:
    """One polyamorous pair1 socket: what comes from the worker's pipe goes to the
    client's, and the other way."""
    _quiet()
    (address,) = addresses
    with pynng.Pair1(polyamorous=True, recv_timeout=-1) as router:
        router.listen(address)
        _ready()
        worker: Any = None
        client: Any = None
        while True:
            message = router.recv_msg()
            if message.bytes == _HELLO:
                worker = message.pipe
            elif message.pipe is worker:
                client.send(message.bytes)
            else:
                client = message.pipe
                worker.send(message.bytes)


def _pair1_worker(addresses: Addresses) -> None:
    (address,) = addresses
    with pynng.Pair1(recv_timeout=-1) as worker:
        worker.dial(address, block=True)
        worker.send(_HELLO)
        _ready()
        while True:
            call_id, x, y = msgspec.msgpack.decode(worker.recv())
            worker.send(msgspec.msgpack.encode([call_id, x + y]))


def _two_hop_worker(addresses: Addresses) -> None:
    calls_address, replies_address = addresses
    with pynng.Pull0(recv_timeout=-1) as calls, pynng.Push0() as replies:
        calls.listen(calls_address)
        replies.listen(replies_address)
        _ready()
        while True:
            call_id, x, y = msgspec.msgpack.decode(calls.recv())
            replies.send(msgspec.msgpack.encode([call_id, x + y]))


def _batched_router(addresses: Addresses) -> None:
    """The asyncio router of the batched pipeline: frames forwarded as they come."""
    _quiet()
    (address,) = addresses

    async def route() -> None:
        with pynng.Pair1(polyamorous=True) as router:
            router.listen(address)
            _ready()
            worker: Any = None
            client: Any = None
            while True:
                message = await router.arecv_msg()
                if message.bytes == _HELLO:
                    worker = message.pipe
                elif message.pipe is worker:
                    await client.asend(message.bytes)
                else:
                    client = message.pipe
                    await worker.asend(message.bytes)

    asyncio.run(route())


def _batched_worker(addresses: Addresses) -> None:
    """Each frame of calls answered by one frame of results."""
    (address,) = addresses

    async def work() -> None:
        with pynng.Pair1() as worker:
            worker.dial(address, block=True)
            await worker.asend(_HELLO)
            _ready()
            while True:
                calls = msgspec.msgpack.decode(await worker.arecv())
                results = [[call_id, x + y] for call_id, x, y in calls]
                await worker.asend(msgspec.msgpack.encode(results))

    asyncio.run(work())


_ROLES: dict[str, Callable[[Addresses], None]] = {
    "push-pull-router": _push_pull_router,
    "push-pull-worker": _push_pull_worker,
    "pair1-router": _pair1_router,
    "pair1-worker": _pair1_worker,
    "two-hop-worker": _two_hop_worker,
    "batched-router": _batched_router,
    "batched-worker": _batched_worker,
}


def _ready() -> None:
    print("ready", flush=True)


# --- the measuring side ---------------------------------------------------------------


def _free_addresses(count: int) -> list[str]:
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            probe = stack.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return [f"tcp://127.0.0.1:{port}" for port in ports]


@contextlib.contextmanager
def _roles(*roles: tuple[str, Addresses]) -> Generator[None, None, None]:
    """Start each role in its own process and wait until each says it is ready; end
    them all by PID on the way out."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for role, addresses in roles:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.references", "--role", role, *addresses],
                cwd=_ROOT,
                stdout=subprocess.PIPE,
            )
            started.append(process)
            _wait_ready(process, role)
        yield
    finally:
        for process in started:
            process.kill()
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()


def _wait_ready(process: subprocess.Popen[bytes], role: str) -> None:
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], _READY_TIMEOUT)
    if not readable or process.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"the reference's {role} did not start within {_READY_TIMEOUT:.0f} s")


def _sequential(
    send: Callable[[bytes], None], receive: Callable[[], bytes], calls: int
) -> list[float]:
    """Milliseconds of each of ``calls`` round trips, after a warm-up; every reply
    checked."""
    times: list[float] = []
    for call_id in range(calls + _WARM_UP):
        started = time.perf_counter()
        send(msgspec.msgpack.encode([call_id, call_id, 1]))
        reply = msgspec.msgpack.decode(receive())
        if reply != [call_id, call_id + 1]:
            raise RuntimeError(f"wrong reply {reply!r} to call {call_id}")
        if call_id >= _WARM_UP:
            times.append((time.perf_counter() - started) * 1000)
    return times


def call_latency(setup: str, calls: int) -> list[float]:
    """The milliseconds of ``calls`` sequential round trips through the pipeline
    ``setup`` (one of FOUR_HOPS_PUSH_PULL, FOUR_HOPS_PAIR1, TWO_HOPS)."""
    if setup == FOUR_HOPS_PUSH_PULL:
        addresses = _free_addresses(3)
        with (
            _roles(("push-pull-router", addresses), ("push-pull-worker", addresses)),
            pynng.Push0(recv_timeout=_TIMEOUT_MS, send_timeout=_TIMEOUT_MS) as calls_out,
            pynng.Pull0(recv_timeout=_TIMEOUT_MS, send_timeout=_TIMEOUT_MS) as replies_in,
        ):
            calls_out.dial(addresses[0], block=True)
            replies_in.dial(addresses[2], block=True)
            return _sequential(lambda data: calls_out.send(b"c" + data), replies_in.recv, calls)
    if setup == FOUR_HOPS_PAIR1:
        addresses = _free_addresses(1)
        with (
            _roles(("pair1-router", addresses), ("pair1-worker", addresses)),
            pynng.Pair1(recv_timeout=_TIMEOUT_MS, send_timeout=_TIMEOUT_MS) as client,
        ):
            client.dial(addresses[0], block=True)
            return _sequential(client.send, client.recv, calls)
    if setup == TWO_HOPS:
        addresses = _free_addresses(2)
        with (
            _roles(("two-hop-worker", addresses)),
            pynng.Push0(recv_timeout=_TIMEOUT_MS, send_timeout=_TIMEOUT_MS) as calls_out,
            pynng.Pull0(recv_timeout=_TIMEOUT_MS, send_timeout=_TIMEOUT_MS) as replies_in,
        ):
            calls_out.dial(addresses[0], block=True)
            replies_in.dial(addresses[1], block=True)
            return _sequential(calls_out.send, replies_in.recv, calls)
    raise ValueError(f"no sequential reference {setup!r}")


def batched_throughput(tasks: int) -> float:
    """Tasks per second of ``tasks`` calls in flight at once through the batched asyncio
    pipeline, after a warm-up of a tenth as many; every result checked."""
    addresses = _free_addresses(1)
    with _roles(("batched-router", addresses), ("batched-worker", addresses)):
        return asyncio.run(_batched_client(addresses[0], tasks))


async def _batched_client(address: str, tasks: int) -> float:
    loop = asyncio.get_running_loop()
    waiting: dict[int, asyncio.Future[int]] = {}
    queued: collections.deque[list[int]] = collections.deque()
    with pynng.Pair1(recv_timeout=_TIMEOUT_MS, send_timeout=_TIMEOUT_MS) as client:
        client.dial(address, block=True)

        async def send_queued() -> None:
            while queued:
                count = min(len(queued), _PER_FRAME)
                frame = [queued.popleft() for _ in range(count)]
                await client.asend(msgspec.msgpack.encode(frame))

        sending: list[asyncio.Task[None]] = []

        async def call(call_id: int) -> int:
            # A coroutine per call, as a caller's ``delay()`` is; the calls queued in one
            # turn leave together at its end, as a client's would.
            if not queued:
                loop.call_soon(lambda: sending.append(loop.create_task(send_queued())))
            queued.append([call_id, call_id, 1])
            future: asyncio.Future[int] = loop.create_future()
            waiting[call_id] = future
            return await future

        async def receive() -> None:
            while True:
                for call_id, result in msgspec.msgpack.decode(await client.arecv()):
                    waiting.pop(call_id).set_result(result)

        receiving = loop.create_task(receive())
        try:

            async def run(first: int, count: int) -> float:
                started = time.perf_counter()
                results = await asyncio.wait_for(
                    asyncio.gather(*(call(first + i) for i in range(count))), _TIMEOUT_MS / 1000
                )
                elapsed = time.perf_counter() - started
                if results != [first + i + 1 for i in range(count)]:
                    raise RuntimeError("wrong results from the batched pipeline")
                return count / elapsed

            await run(0, max(1, tasks // 10))
            return await run(tasks, tasks)
        finally:
            receiving.cancel()
            for task in sending:
                task.cancel()
            await asyncio.gather(receiving, *sending, return_exceptions=True)


def measure_floors(calls: int, repeats: int) -> list[Measurement]:
    """p50 and p99 of each sequential pipeline, the median of ``repeats`` runs each."""
    measured: list[Measurement] = []
    for setup in (FOUR_HOPS_PUSH_PULL, FOUR_HOPS_PAIR1, TWO_HOPS):
        runs = [call_latency(setup, calls) for _ in range(repeats)]
        for metric, fraction in ((CALL_P50, 0.50), (CALL_P99, 0.99)):
            measured.append(
                Measurement.of_runs(
                    WORKLOAD,
                    setup,
                    metric,
                    "ms",
                    [percentile(times, fraction) for times in runs],
                    verified=calls * repeats,
                )
            )
    return measured


def measure_batched(tasks: int, repeats: int) -> list[Measurement]:
    """The batched pipeline's throughput, the median of ``repeats`` runs."""
    runs = [batched_throughput(tasks) for _ in range(repeats)]
    return [
        Measurement.of_runs(
            WORKLOAD, BATCHED, THROUGHPUT, "tasks/s", runs, verified=tasks * repeats
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/references.py",
        description="The naive pipelines the suite's targets are ratios to.",
    )
    parser.add_argument("--calls", type=int, default=2_000, help="calls per latency run")
    parser.add_argument("--tasks", type=int, default=5_000, help="tasks per throughput run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--role", choices=sorted(_ROLES), help=argparse.SUPPRESS)
    parser.add_argument("addresses", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    _quiet()
    if options.role is not None:
        _ROLES[options.role](options.addresses)
        return 0
    measured = [
        *measure_floors(options.calls, options.repeats),
        *measure_batched(options.tasks, options.repeats),
    ]
    for m in measured:
        runs = " / ".join(f"{run:,.3f}" for run in m.runs)
        print(f"{m.setup}: {m.metric} {m.value:,.3f} {m.unit} ({runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
