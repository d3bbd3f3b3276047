"""Real fastworker processes for the benchmarks: a control plane and its subworkers,
started with the ``fastworker`` command line on loopback, and ended by their PID.

Every wait here has a bound. :class:`Launcher` remembers each process it started and
:meth:`Launcher.stop_all` ends the ones still running, so the caller can call it on any
exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Literal

from fastworker.client import Client, TLSOptions
from fastworker.client.hooks import Hook, add_hook, remove_hook

__all__ = [
    "BENCH_DIR",
    "TASK_MODULE",
    "BenchError",
    "Certificates",
    "Cluster",
    "ClusterSpec",
    "Launcher",
    "Transport",
    "cpu_seconds",
    "rss_mb",
]

BENCH_DIR = Path(__file__).resolve().parent
"""The working directory of every process started: task modules import from there."""
TASK_MODULE = "bench_tasks"
START_TIMEOUT = 30.0
"""Seconds for a control plane to answer and its subworkers to connect."""
STOP_TIMEOUT = 5.0
"""Seconds a process has to exit after SIGTERM before it is killed."""
CLIENT_REQUEST_TIMEOUT = 60.0
"""The measuring client's bound on each request (bursts of thousands are in flight)."""

Transport = Literal["tcp", "ipc", "tls"]
"""``tls`` is ``tls+tcp://`` on 127.0.0.1, with certificates made for the run."""
TLS_SERVER_NAME = "localhost"
"""The name the control plane's certificate carries and its peers check."""

IN_MEMORY = ", journal in memory"
TRACED = ", tracing on"
"""The label of a run with OpenTelemetry's SDK recording every span (bench_tracing)."""
TRACING_MODULE = "bench_tracing"
"""What a setup's description says of a control plane run with ``--journal :memory:``."""


class BenchError(Exception):
    """A benchmark could not run or got a wrong result."""


@dataclasses.dataclass(frozen=True)
class Certificates:
    """PEM files of a certificate authority and the control plane's certificate (with
    its chain) and key, signed by it for TLS_SERVER_NAME and 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, folder: Path) -> Certificates:
        """Make a fresh CA and server certificate and write them to ``folder``."""
        try:
            import trustme
        except ImportError:
            raise BenchError("the tls transport needs trustme: pip install trustme") from None
        ca = trustme.CA(organization_name="fastworker bench CA")
        server = ca.issue_cert(TLS_SERVER_NAME, "127.0.0.1", common_name="control-plane")
        made = cls(folder / "ca.pem", folder / "control-plane.pem", folder / "control-plane.key")
        ca.cert_pem.write_to_path(str(made.ca))
        made.cert.write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(made.key))
        return made


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """A control plane and its subworkers, as a workload needs them."""

    transport: Transport = "tcp"
    subworkers: int = 1
    concurrency: int = 1
    """Task slots of each subworker (``--concurrency``), or of the control plane itself
    when there are no subworkers (``--local-concurrency``)."""
    control_plane_args: tuple[str, ...] = ()
    """Extra flags for the control plane."""
    journal: bool = True
    """Journal to a SQLite file in the run's directory (the default of a control plane),
    or keep everything in memory."""
    journal_sync: str = "normal"
    """``--journal-sync``: ``full`` flushes every commit to the disk."""
    tracing: bool = False
    """Every process records spans (``--tracing on``, the SDK of bench_tracing); else
    none does (``--tracing off``)."""
    prefetch: int = 0
    """``--prefetch`` of each subworker: tasks leased beyond its slots."""

    @property
    def task_modules(self) -> str:
        return f"{TASK_MODULE},{TRACING_MODULE}" if self.tracing else TASK_MODULE

    def tracing_flags(self) -> tuple[str, ...]:
        return ("--tracing", "on" if self.tracing else "off")

    def control_plane_flags(self) -> tuple[str, ...]:
        """How the control plane runs tasks: itself with no subworkers, else never (so
        no task runs there by accident while a subworker reconnects)."""
        if self.subworkers == 0:
            return ("--local-concurrency", str(self.concurrency), *self.control_plane_args)
        return ("--no-local-execution", *self.control_plane_args)

    def describe(self) -> str:
        """A short label for the report, such as ``tcp, 2 subworkers x 1``."""
        memory = IN_MEMORY if not self.journal else ""
        if self.journal and self.journal_sync != "normal":
            memory = f", journal sync {self.journal_sync}"
        if self.tracing:
            memory += TRACED
        if self.prefetch:
            memory += f", prefetch {self.prefetch}"
        if self.subworkers == 0:
            return f"{self.transport}, local execution x {self.concurrency}{memory}"
        plural = "" if self.subworkers == 1 else "s"
        workers = f"{self.subworkers} subworker{plural} x {self.concurrency}"
        return f"{self.transport}, {workers}{memory}"


@dataclasses.dataclass
class Cluster:
    """Running processes and a started client of their control plane."""

    spec: ClusterSpec
    address: str
    client: Client
    control_plane: subprocess.Popen[bytes]
    subworkers: list[subprocess.Popen[bytes]]


class Launcher:
    """Starts fastworker processes, logging each to a file in ``run_dir``, and ends each
    one it started."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._started: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        self._names = itertools.count(1)
        self._certificates: Certificates | None = None

    def address(self, transport: Transport) -> str:
        """A fresh address: a free 127.0.0.1 port, or a socket file in ``run_dir``."""
        if transport == "ipc":
            return f"ipc://{self.run_dir}/cp-{next(self._names)}.sock"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        scheme = "tls+tcp" if transport == "tls" else "tcp"
        return f"{scheme}://127.0.0.1:{port}"

    def certificates(self) -> Certificates:
        """The run's certificates, made in ``run_dir`` the first time they are needed."""
        if self._certificates is None:
            self._certificates = Certificates.make(self.run_dir)
        return self._certificates

    def fastworker(self, args: Sequence[str], *, name: str) -> subprocess.Popen[bytes]:
        """Start ``python -m fastworker.server.cli ARGS`` in ``bench/``."""
        log_path = self.run_dir / f"{name}-{next(self._names)}.log"
        with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "fastworker.server.cli", *args],
                cwd=BENCH_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._started.append(process)
        self._logs[process.pid] = log_path
        return process

    def log_tail(self, process: subprocess.Popen[bytes], lines: int = 20) -> str:
        """The last lines a process wrote, for error messages."""
        path = self._logs.get(process.pid)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """End one process we started: SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if process in self._started:
            self._started.remove(process)

    def stop_all(self) -> None:
        """End every process started and still running, newest first (subworkers
        before their control plane). Safe to call more than once."""
        for process in reversed(list(self._started)):
            self.stop(process)

    @contextlib.asynccontextmanager
    async def cluster(self, spec: ClusterSpec) -> AsyncGenerator[Cluster, None]:
        """Start a control plane and ``spec.subworkers`` subworkers, wait until all are
        connected, and yield them with a started client; stop everything on exit."""
        address = self.address(spec.transport)
        server_tls: list[str] = []
        peer_tls: list[str] = []
        client_tls: TLSOptions | None = None
        if spec.transport == "tls":
            pki = self.certificates()
            server_tls = ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
            peer_tls = ["--tls-ca", str(pki.ca), "--tls-server-name", TLS_SERVER_NAME]
            client_tls = TLSOptions(ca=str(pki.ca), server_name=TLS_SERVER_NAME)
        plane = self.fastworker(
            [
                "control-plane",
                "--task-modules",
                spec.task_modules,
                *spec.tracing_flags(),
                "--address",
                address,
                "--journal",
                str(self.run_dir / f"journal-{next(self._names)}.sqlite3")
                if spec.journal
                else ":memory:",
                "--journal-sync",
                spec.journal_sync,
                *server_tls,
                *spec.control_plane_flags(),
            ],
            name="control-plane",
        )
        workers: list[subprocess.Popen[bytes]] = []
        client: Client | None = None
        hook = _client_tracing() if spec.tracing else None
        try:
            client = await self._connect(address, plane, client_tls)
            for index in range(spec.subworkers):
                workers.append(
                    self.fastworker(
                        [
                            "subworker",
                            "--worker-id",
                            f"bench-{index + 1}",
                            "--control-plane-address",
                            address,
                            "--task-modules",
                            spec.task_modules,
                            *spec.tracing_flags(),
                            "--concurrency",
                            str(spec.concurrency),
                            "--prefetch",
                            str(spec.prefetch),
                            *peer_tls,
                        ],
                        name=f"subworker-{index + 1}",
                    )
                )
            await self._wait_for_workers(client, spec.subworkers, [plane, *workers])
            yield Cluster(spec, address, client, plane, workers)
        finally:
            if hook is not None:
                remove_hook(hook)
            if client is not None:
                await client.stop()
            for process in [*workers, plane]:
                self.stop(process)

    async def _connect(
        self, address: str, plane: subprocess.Popen[bytes], tls: TLSOptions | None
    ) -> Client:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._check_alive([plane])
            client = Client(address, request_timeout=CLIENT_REQUEST_TIMEOUT, tls=tls)
            try:
                await asyncio.wait_for(client.start(), timeout=2.0)
                return client
            except Exception as exc:
                await client.stop()
                if time.monotonic() > deadline:
                    raise BenchError(f"no control plane answered at {address}: {exc}") from exc
                await asyncio.sleep(0.1)

    async def _wait_for_workers(
        self, client: Client, count: int, processes: list[subprocess.Popen[bytes]]
    ) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._check_alive(processes)
            overview = await client.overview()
            connected = [
                w for w in overview.workers if w.state.value == "connected" and w.address != "local"
            ]
            if len(connected) >= count:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"only {len(connected)} of {count} subworkers connected")
            await asyncio.sleep(0.05)

    def _check_alive(self, processes: list[subprocess.Popen[bytes]]) -> None:
        for process in processes:
            code = process.poll()
            if code is not None:
                raise BenchError(
                    f"process {process.pid} exited with {code}:\n{self.log_tail(process)}"
                )


def _client_tracing() -> Hook:
    """Trace this process's clients, with the SDK of bench_tracing, until the hook is
    removed. The suite runs with ``FASTWORKER_TRACING=off``, so no client traces by
    itself."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import bench_tracing  # noqa: F401  # pyright: ignore[reportUnusedImport]
    finally:
        sys.path.remove(str(BENCH_DIR))
    from fastworker.client.tracing import TracingHook

    hook = TracingHook()
    add_hook(hook)
    return hook


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (VmRSS from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")
