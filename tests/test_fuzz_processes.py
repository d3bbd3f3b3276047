"""Malformed frames at real processes: a control plane and a subworker each take 100,000
of them (random bytes, damaged valid frames, deep nesting, wrong field types, huge
declared lengths) and go on serving, without holding on to memory.

The control plane is fuzzed over raw pair1 connections, as any peer may dial it. A
subworker only ever dials its control plane, so this test plays that control plane: it
listens, welcomes a real subworker process, and sends the malformed frames down the
connection the subworker made, through the same receive path and decoder it uses in
production.
"""

# pynng ships no type information.
# pyright: reportMissingTypeStubs=false, reportUnknownMemberType=false
# pyright: reportUnknownArgumentType=false, reportUnknownVariableType=false

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

import msgspec
import pynng
import pytest
from msgspec import Raw

from fastworker.client import Client
from fastworker.client._transport import SOCKET_RECV_LIMIT
from fastworker.protocol import (
    MAX_MESSAGES_PER_FRAME,
    PROTOCOL_VERSION,
    ProtocolError,
    ProtocolVersionError,
    TaskStatus,
    decode_frame,
    decode_value,
    encode_frame,
    encode_value,
    read_acked,
)
from fastworker.protocol import messages as m
from fw_processes import START_TIMEOUT, Processes

MAJOR, MINOR = PROTOCOL_VERSION

FRAMES: Final = int(os.environ.get("FASTWORKER_FUZZ_FRAMES", "100000"))
"""Malformed frames sent to each process under test; ``nox -s fuzz`` sends many more."""
CONNECTIONS: Final = 4
"""Raw connections the control plane's frames are spread over."""
RSS_GROWTH_LIMIT: Final = 50_000_000
"""Bytes of resident memory the barrage may leave a process holding."""
ACK_EVERY: Final = 64
"""Frames sent between two reads of what the process sent back (and an acknowledgement
of it): the control plane sends nothing past two unacknowledged frames, and a
subworker's socket queues only a little."""
HEARTBEAT_EVERY: Final = 1000
"""Frames between two valid heartbeats to the subworker: it only counts frames that
decode as hearing from its control plane."""
IO_TIMEOUT_MS: Final = 10_000
"""Bound of one send or receive on a raw socket."""
FUZZ_TIMEOUT: Final = 180.0 * max(1.0, FRAMES / 100_000)
"""Bound of the whole barrage at one process."""

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT + 60)

# --- malformed frames -------------------------------------------------------------------

_WRONG_VALUES: Final[tuple[object, ...]] = (
    None,
    True,
    -1,
    2**64 - 1,
    1.5,
    float("inf"),
    "",
    "x" * 300,
    b"\x00\xff",
    [],
    [[[]]],
    {},
    {"k": [1]},
)
"""Values put where a field of another type belongs."""

_LONG_HEADERS: Final = (b"\xdd", b"\xdf", b"\xdb", b"\xc6", b"\xc9")
"""msgpack array, map, str, bin and ext with a 32-bit length."""

_SHALLOW: Final = (1, 100)
_TOO_DEEP: Final = (20_000, 30_000)
"""Nesting depths, well inside and well past what every supported Python decodes."""

_NESTED_OPENERS: Final = (b"\x91", b"\xdc\x00\x01", b"\x81\xa1k", b"\x81\x00")
"""One-element arrays (fix and 16-bit headers) and maps, to nest inside each other."""


_HEAD: Final = encode_frame([])[:-1]
"""The start of a frame of this version, up to (not including) its message list."""


class MalformedFrames:
    """Frames that are wrong in every way the kinds below name, built from valid frames
    of the messages a peer would send; reproducible from the seed."""

    def __init__(self, valid: Sequence[m.Message], seed: int) -> None:
        self._rng = random.Random(seed)
        self._frames = [encode_frame([message]) for message in valid]
        self._kinds: tuple[Callable[[], bytes], ...] = (
            self._random_bytes,
            self._truncated,
            self._flipped,
            self._flipped,
            self._nested,
            self._wrong_type,
            self._wrong_type,
            self._huge_length,
        )

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield self._rng.choice(self._kinds)()

    def _random_bytes(self) -> bytes:
        return self._rng.randbytes(self._rng.randrange(64))

    def _truncated(self) -> bytes:
        frame = self._rng.choice(self._frames)
        return frame[: self._rng.randrange(len(frame))]

    def _flipped(self) -> bytes:
        damaged = bytearray(self._rng.choice(self._frames))
        for _ in range(self._rng.randint(1, 3)):
            damaged[self._rng.randrange(len(damaged))] ^= 1 << self._rng.randrange(8)
        return bytes(damaged)

    def _nested(self) -> bytes:
        # Well inside the decoder's depth limit, or well past it. Near the limit, the
        # same bytes may decode on this side and not in the process under test: how
        # deep msgspec goes depends on the stack it starts from.
        chance = self._rng.random()
        if chance < 0.01:
            depth = 200_000
        elif chance < 0.1:
            depth = self._rng.randrange(*_TOO_DEEP)
        else:
            depth = self._rng.randrange(*_SHALLOW)
        nested = self._rng.choice(_NESTED_OPENERS) * depth + b"\x01"
        where = self._rng.randrange(3)
        if where == 0:
            return nested
        if where == 1:
            return _HEAD + b"\x91" + nested
        # Inside a task's arguments, which the control plane forwards without decoding.
        submit = m.SubmitTask(request_id=1, task=m.TaskRequest(name="add", args=Raw(nested)))
        return encode_frame([submit])

    def _wrong_type(self) -> bytes:
        frame = msgspec.msgpack.decode(self._rng.choice(self._frames))
        lists: list[list[object]] = []
        _collect_lists(frame[3], lists)
        target = self._rng.choice(lists)
        if target:
            at = self._rng.randrange(len(target))
            original = target[at]
            target[at] = self._rng.choice(
                [v for v in _WRONG_VALUES if type(v) is not type(original)]
            )
        else:
            target.append(self._rng.choice(_WRONG_VALUES))
        return msgspec.msgpack.encode(frame)

    def _huge_length(self) -> bytes:
        declared = self._rng.randrange(2**24, 2**32)
        huge = self._rng.choice(_LONG_HEADERS) + declared.to_bytes(4, "big")
        huge += self._rng.randbytes(self._rng.randrange(16))
        prefix = self._rng.choice([b"", _HEAD, _HEAD + b"\x91", _HEAD + b"\x91\x93\xa5watch\x01"])
        return prefix + huge


def _collect_lists(value: object, into: list[list[object]]) -> None:
    if isinstance(value, list):
        items: list[object] = value
        into.append(items)
        for item in items:
            _collect_lists(item, into)


# --- raw connections --------------------------------------------------------------------


@dataclasses.dataclass
class RawPeer:
    """One raw pair1 connection: sends frames, reads back whatever arrives, and keeps
    the frame count the flow control needs."""

    socket: pynng.Socket
    acknowledge: bool
    """Whether to acknowledge what arrives: the control plane holds frames back until
    they are, a subworker does not wait for acknowledgements."""
    received: int = 0
    messages: list[m.Message] = dataclasses.field(default_factory=list[m.Message])

    def send(self, data: bytes) -> None:
        self.socket.send(data)

    def drain(self) -> None:
        """Take what has arrived without waiting, and acknowledge it."""
        while True:
            try:
                data = self.socket.recv(block=False)
            except pynng.TryAgain:
                break
            self._arrived(data)
        self._acknowledge()

    def wait_for(self, matches: Callable[[m.Message], bool], timeout: float) -> m.Message:
        """The first message that ``matches``, read within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if matches(message):
                    return message
            self.messages.clear()
            if time.monotonic() > deadline:
                raise TimeoutError("the awaited message did not arrive")
            self._arrived(self.socket.recv())  # bounded by the socket's recv_timeout
            self._acknowledge()

    def _acknowledge(self) -> None:
        if self.acknowledge:
            self.send(encode_frame([], acked=self.received))

    def _arrived(self, data: bytes) -> None:
        self.received += 1
        frame = decode_frame(data)  # the processes under test send only valid frames
        self.messages.extend(frame.messages)
        del self.messages[:-MAX_MESSAGES_PER_FRAME]  # only the latest are looked at


def _barrage(peer: RawPeer, frames: Iterator[bytes], between: Callable[[int], None]) -> None:
    for sent, frame in enumerate(frames, start=1):
        peer.send(frame)
        if sent % ACK_EVERY == 0:
            peer.drain()
        between(sent)


def _rss(pid: int) -> int:
    """The process's resident memory in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _no_tracebacks(log: str) -> None:
    at = log.find("Traceback")
    assert at == -1, log[max(0, at - 2000) : at + 4000]


def _refused_here(frames: Iterator[bytes], counter: list[int]) -> Iterator[bytes]:
    """The frames, counting in ``counter[0]`` those this side's decoder refuses: the
    process under test runs the same decoder, so it must refuse exactly as many."""
    for frame in frames:
        try:
            decode_frame(frame)
        except ProtocolError:
            counter[0] += 1
        yield frame


# --- the control plane ------------------------------------------------------------------

_CLIENT_REQUESTS: Final[tuple[m.Message, ...]] = (
    m.ClientHello(request_id=3, client_name="fuzz", library_version="1.0"),
    m.SubmitTask(
        request_id=4,
        task=m.TaskRequest(name="add", args=encode_value([1, 2]), task_id="t-1", timeout=5.0),
    ),
    m.SubmitBatch(request_id=5, tasks=[m.TaskRequest(name="add", args=encode_value([3, 4]))]),
    m.WatchResults(request_id=6, task_ids=["t-1", "t-2"]),
    m.StatusQuery(request_id=7, task_ids=["t-1"], include_payloads=True),
    m.CancelTasks(request_id=8, task_ids=["t-3"]),
    m.OverviewQuery(request_id=9),
    m.HistoryQuery(request_id=10, limit=5, status=TaskStatus.SUCCEEDED),
    m.DeadLettersQuery(request_id=11),
    m.Goodbye(reason="bye"),
)
"""What the damaged frames start from: a client's requests. Not a subworker's: one of
those damaged into a valid WorkerHello would make the fuzzing connection a subworker,
and the tasks of the check would then go to it, as they should."""


def _fuzz_control_plane(address: str, seed: int, count: int) -> int:
    """Send ``count`` malformed frames on one connection, then a request that must be
    answered; return how many of the frames this side's decoder refuses."""
    refused = [0]
    # A damaged head may claim more frames received than were: the control plane
    # believes it (up to what it sent) and could overfill this connection's queue, whose
    # frames NNG then drops, which would leave its window shut on this connection alone.
    honest = (f for f in MalformedFrames(_CLIENT_REQUESTS, seed) if read_acked(f) == 0)
    frames = _refused_here(itertools.islice(honest, count), refused)
    with pynng.Pair1(
        dial=address,
        recv_max_size=SOCKET_RECV_LIMIT,
        send_timeout=IO_TIMEOUT_MS,
        recv_timeout=IO_TIMEOUT_MS,
    ) as socket:
        peer = RawPeer(socket, acknowledge=True)
        _barrage(peer, frames, lambda _sent: None)
        check_id = 2**62 + seed
        peer.send(encode_frame([m.OverviewQuery(request_id=check_id)], acked=peer.received))
        reply = peer.wait_for(
            lambda message: isinstance(message, m.Overview) and message.request_id == check_id,
            timeout=START_TIMEOUT,
        )
        assert isinstance(reply, m.Overview)
        return refused[0]


async def test_a_control_plane_survives_malformed_frames_from_many_connections(
    processes: Processes, control_plane: tuple[str, Client]
) -> None:
    address, client = control_plane
    plane = processes.started[-1]
    assert await client.run("add", 1, 2, wait=10) == 3  # warm: every import done
    before = _rss(plane.pid)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONNECTIONS) as pool:
        each = FRAMES // CONNECTIONS
        runs = [
            asyncio.wrap_future(pool.submit(_fuzz_control_plane, address, seed, each))
            for seed in range(CONNECTIONS)
        ]
        refused = await asyncio.wait_for(asyncio.gather(*runs), FUZZ_TIMEOUT)
    elapsed = time.monotonic() - started
    assert plane.poll() is None, processes.log("control-plane")[-5000:]
    assert await client.run("add", 20, 22, wait=10) == 42
    assert [await client.run("add", i, i, wait=10) for i in range(3)] == [0, 2, 4]
    growth = _rss(plane.pid) - before
    print(
        f"control plane: {FRAMES} malformed frames over {CONNECTIONS} connections in "
        f"{elapsed:.1f} s ({sum(refused)} refused by the decoder), "
        f"RSS {growth / 1e6:+.1f} MB"
    )
    assert growth <= RSS_GROWTH_LIMIT
    log = processes.log("control-plane")
    # It answered every connection after all of the frames, and a flood of them is a
    # line in the log every 10 s, not a line each.
    assert sum(refused) > 0
    assert 1 <= log.count("refused a frame from") <= 5, log[-5000:]
    assert len(log) < 100_000
    _no_tracebacks(log)


# --- a subworker ------------------------------------------------------------------------

_CONTROL_PLANE_MESSAGES: Final[tuple[m.Message, ...]] = (
    m.Dispatch(
        tasks=[m.TaskAssignment(task_id="d-1", name="add", args=encode_value([1, 2]), timeout=5.0)]
    ),
    m.Heartbeat(sent_at=1_790_000_000.0),
    m.StopTasks(task_ids=["d-1", "d-2"]),
    m.Goodbye(reason="control plane stopping"),
)
"""What the damaged frames start from: what a control plane sends a subworker after its
welcome. Not another welcome (it sets the subworker's timing, which a control plane is
trusted to choose) nor an ErrorReply (one answering the hello refuses the subworker)."""


def _of_this_major(frame: bytes) -> bool:
    """Whether a frame is not refused as coming from another major version: a subworker
    gives up on such a control plane at once, by design."""
    try:
        decode_frame(frame)
    except ProtocolVersionError:
        return False
    except ProtocolError:
        pass
    return True


class FakeControlPlane:
    """The listening end of a subworker's connection, driven from a thread."""

    def __init__(self, listener: pynng.Socket) -> None:
        self.peer = RawPeer(listener, acknowledge=False)
        self.refused = [0]
        """Frames sent that this side's decoder refuses."""

    def welcome(self) -> None:
        hello = self.peer.wait_for(
            lambda message: isinstance(message, m.WorkerHello), START_TIMEOUT
        )
        assert isinstance(hello, m.WorkerHello)
        welcome = m.WorkerWelcome(
            request_id=hello.request_id,
            control_plane_id="fuzzing-control-plane",
            heartbeat_interval=1.0,
            lease_timeout=30.0,
        )
        self.send([welcome])

    def send(self, messages: list[m.Message]) -> None:
        self.peer.send(encode_frame(messages, acked=self.peer.received))

    def add(self, task_id: str, x: int, y: int) -> object:
        """Lease the subworker a real task; return its value."""
        assignment = m.TaskAssignment(task_id=task_id, name="add", args=encode_value([x, y]))
        self.send([m.Dispatch(tasks=[assignment])])

        def answers(message: m.Message) -> bool:
            return isinstance(message, m.TasksDone) and any(
                outcome.task_id == task_id for outcome in message.outcomes
            )

        done = self.peer.wait_for(answers, timeout=START_TIMEOUT)
        assert isinstance(done, m.TasksDone)
        (outcome,) = [outcome for outcome in done.outcomes if outcome.task_id == task_id]
        assert outcome.status is TaskStatus.SUCCEEDED, outcome.error
        return decode_value(outcome.value)

    def barrage(self, count: int) -> None:
        def heartbeat(sent: int) -> None:
            if sent % HEARTBEAT_EVERY == 0:
                self.send([m.Heartbeat(sent_at=time.time())])

        malformed = filter(_of_this_major, MalformedFrames(_CONTROL_PLANE_MESSAGES, seed=7))
        frames = _refused_here(itertools.islice(malformed, count), self.refused)
        _barrage(self.peer, frames, heartbeat)


async def test_a_subworker_survives_malformed_frames_from_its_control_plane(
    processes: Processes,
) -> None:
    address = processes.address()
    with pynng.Pair1(
        listen=address,
        recv_max_size=SOCKET_RECV_LIMIT,
        send_timeout=IO_TIMEOUT_MS,
        recv_timeout=IO_TIMEOUT_MS,
    ) as listener:
        fake = FakeControlPlane(listener)
        worker = processes.subworker(address, "fuzzed", "--concurrency", "2")
        await asyncio.wait_for(asyncio.to_thread(fake.welcome), START_TIMEOUT)
        assert await asyncio.to_thread(fake.add, "warm", 1, 2) == 3  # every import done
        before = _rss(worker.pid)
        started = time.monotonic()
        await asyncio.wait_for(asyncio.to_thread(fake.barrage, FRAMES), FUZZ_TIMEOUT)
        elapsed = time.monotonic() - started
        assert worker.poll() is None, processes.log("subworker-fuzzed")[-5000:]
        assert await asyncio.to_thread(fake.add, "check", 20, 22) == 42
        growth = _rss(worker.pid) - before
        print(
            f"subworker: {FRAMES} malformed frames in {elapsed:.1f} s, "
            f"{fake.peer.received} frames back, RSS {growth / 1e6:+.1f} MB"
        )
        assert growth <= RSS_GROWTH_LIMIT
    log = processes.log("subworker-fuzzed")
    # It handled the check task after all of the frames, and logged a sample of them.
    assert fake.refused[0] > 0
    assert 1 <= log.count("dropping a frame from the control plane") <= 5, log[-5000:]
    assert len(log) < 100_000
    _no_tracebacks(log)
