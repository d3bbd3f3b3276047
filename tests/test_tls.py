"""TLS and mutual TLS between real processes over 127.0.0.1, with certificates made at
test time: what works, and each refusal with its error on the side that was refused."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

trustme = pytest.importorskip("trustme")

from fastworker.client import Client, NotConnectedError, RequestTimeoutError, TLSOptions  # noqa: E402
from fastworker.protocol import ConfigurationError  # noqa: E402
from fw_processes import START_TIMEOUT, Processes, connect, wait_for_workers  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Pki:
    """Files of one test's certificates: a CA, the control plane's certificate, a
    subworker's and a client's, and another CA that signed none of them."""

    ca: str
    other_ca: str
    server_cert: str
    server_key: str
    worker_cert: str
    worker_key: str
    rogue_cert: str
    rogue_key: str
    subworker_cert: str
    subworker_key: str
    """Named ``subworker:host-1``: a subworker's by its name."""
    client_cert: str
    client_key: str
    """Named ``client:web-1``."""


def _write(path: Path, blob: object) -> str:
    blob.write_to_path(str(path))  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA(organization_name="fastworker test CA")
    other = trustme.CA(organization_name="another CA")
    server = ca.issue_cert("localhost", "127.0.0.1", common_name="control-plane")
    worker = ca.issue_cert("worker-1.example", common_name="worker-1")
    rogue = other.issue_cert("rogue.example", common_name="rogue")
    subworker = ca.issue_cert("host-1.example", common_name="subworker:host-1")
    web = ca.issue_cert("web-1.example", common_name="client:web-1")
    folder = tmp_path / "pki"
    folder.mkdir()
    return Pki(
        ca=_write(folder / "ca.pem", ca.cert_pem),
        other_ca=_write(folder / "other-ca.pem", other.cert_pem),
        server_cert=_chain(folder / "server.pem", server),
        server_key=_write(folder / "server.key", server.private_key_pem),
        worker_cert=_chain(folder / "worker.pem", worker),
        worker_key=_write(folder / "worker.key", worker.private_key_pem),
        rogue_cert=_chain(folder / "rogue.pem", rogue),
        rogue_key=_write(folder / "rogue.key", rogue.private_key_pem),
        subworker_cert=_chain(folder / "subworker.pem", subworker),
        subworker_key=_write(folder / "subworker.key", subworker.private_key_pem),
        client_cert=_chain(folder / "client.pem", web),
        client_key=_write(folder / "client.key", web.private_key_pem),
    )


def _chain(path: Path, issued: object) -> str:
    pems = issued.cert_chain_pems  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]
    path.write_bytes(b"".join(pem.bytes() for pem in pems))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType, reportUnknownVariableType]
    return str(path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tls_address() -> str:
    return f"tls+tcp://127.0.0.1:{_free_port()}"


async def _refused(address: str, tls: TLSOptions | None) -> str:
    """What a client that cannot get through is told, once the control plane is up."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        client = Client(address, request_timeout=1.0, tls=tls)
        try:
            await client.start()
        except NotConnectedError as exc:
            return str(exc)
        except RequestTimeoutError:
            pass  # not up yet: ask again
        else:
            await client.stop()
            raise AssertionError(f"{address} let the client in")
        assert time.monotonic() < deadline, "the control plane did not come up"
        await asyncio.sleep(0.1)


def _mutual_tls_plane(processes: Processes, pki: Pki, *extra: str) -> str:
    """A control plane on a fresh tls+tcp:// address that requires client certificates
    from the test's CA; its address."""
    address = _tls_address()
    processes.control_plane(
        address,
        "--no-local-execution",
        "--tls-cert",
        pki.server_cert,
        "--tls-key",
        pki.server_key,
        "--tls-ca",
        pki.ca,
        "--tls-require-client-cert",
        *extra,
    )
    return address


def _peer_flags(pki: Pki, cert: str, key: str) -> tuple[str, ...]:
    """A subworker's flags for mutual TLS with ``cert`` and ``key``."""
    return (
        "--tls-ca",
        pki.ca,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-server-name",
        "localhost",
    )


async def test_tasks_run_over_tls_and_each_refusal_says_why(processes: Processes, pki: Pki) -> None:
    address = _tls_address()
    processes.control_plane(
        address, "--no-local-execution", "--tls-cert", pki.server_cert, "--tls-key", pki.server_key
    )
    trusted = TLSOptions(ca=pki.ca, server_name="localhost")
    client = await connect(address, tls=trusted)
    try:
        # A subworker takes its TLS settings from the environment, as in a container.
        processes.subworker(
            address,
            "tls-1",
            env={"FASTWORKER_TLS_CA": pki.ca, "FASTWORKER_TLS_SERVER_NAME": "localhost"},
        )
        await wait_for_workers(client, 1)
        assert await client.run("add", 20, 22, wait=30) == 42

        another_ca = await _refused(address, TLSOptions(ca=pki.other_ca, server_name="localhost"))
        assert "TLS handshake" in another_ca
        assert "not signed by the certificate authority" in another_ca
        wrong_name = await _refused(address, TLSOptions(ca=pki.ca, server_name="elsewhere"))
        assert "TLS handshake" in wrong_name
        plain = await _refused(address.replace("tls+tcp://", "tcp://"), None)
        assert "does it listen on tls+tcp://?" in plain
    finally:
        await client.stop()
    # The control plane saw the failed handshakes, and says so (at most every 10 s).
    deadline = time.monotonic() + START_TIMEOUT
    while "failed their TLS handshake" not in processes.log("control-plane"):
        assert time.monotonic() < deadline, processes.log("control-plane")[-3000:]
        await asyncio.sleep(0.1)


async def test_mutual_tls_refuses_a_peer_without_a_trusted_certificate(
    processes: Processes, pki: Pki
) -> None:
    address = _mutual_tls_plane(processes, pki)
    member = TLSOptions(
        ca=pki.ca, cert=pki.worker_cert, key=pki.worker_key, server_name="localhost"
    )
    client = await connect(address, tls=member)
    try:
        processes.subworker(address, "mtls-1", *_peer_flags(pki, pki.worker_cert, pki.worker_key))
        await wait_for_workers(client, 1)
        assert await client.run("add", 1, 2, wait=30) == 3
        without = await _refused(address, TLSOptions(ca=pki.ca, server_name="localhost"))
        assert "requires a client certificate" in without
        rogue = TLSOptions(
            ca=pki.ca, cert=pki.rogue_cert, key=pki.rogue_key, server_name="localhost"
        )
        assert "TLS handshake" in await _refused(address, rogue)
        # A subworker without a certificate is refused too, and says why in its log.
        processes.subworker(
            address, "no-cert", "--tls-ca", pki.ca, "--tls-server-name", "localhost"
        )
        deadline = time.monotonic() + START_TIMEOUT
        while "TLS handshake" not in processes.log("subworker-no-cert"):
            assert time.monotonic() < deadline, processes.log("subworker-no-cert")[-3000:]
            await asyncio.sleep(0.1)
        assert [w.worker_id for w in (await client.overview()).workers] == ["mtls-1"]
    finally:
        await client.stop()


async def test_certificates_can_name_their_roles(processes: Processes, pki: Pki) -> None:
    address = _mutual_tls_plane(processes, pki, "--tls-cert-roles")

    web = TLSOptions(ca=pki.ca, cert=pki.client_cert, key=pki.client_key, server_name="localhost")
    client = await connect(address, tls=web)
    try:
        # No secret anywhere: the certificates say who is who.
        impostor = processes.subworker(
            address, "impostor", *_peer_flags(pki, pki.client_cert, pki.client_key)
        )
        assert await asyncio.to_thread(impostor.wait, 30) == 4
        assert "is a client's, not a subworker's" in processes.log("subworker-impostor")
        processes.subworker(
            address, "host-1", *_peer_flags(pki, pki.subworker_cert, pki.subworker_key)
        )
        await wait_for_workers(client, 1)
        assert await client.run("add", 4, 5, wait=30) == 9
    finally:
        await client.stop()


def test_tls_settings_that_cannot_work_are_refused_before_connecting(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="give the certificate authority"):
        Client("tls+tcp://127.0.0.1:5555")
    with pytest.raises(ConfigurationError, match="is not a tls\\+tcp:// address"):
        Client("tcp://127.0.0.1:5555", tls=TLSOptions(ca=pki.ca))
    with pytest.raises(ConfigurationError, match="together"):
        TLSOptions(ca=pki.ca, cert=pki.worker_cert)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "cp.pem"}, "--tls-cert and --tls-key together"),
        ({"tls_ca": "ca.pem"}, "need --tls-cert and --tls-key"),
        ({"tls_cert": "c", "tls_key": "k", "tls_ca": "ca.pem"}, "add --tls-require-client-cert"),
        ({"tls_cert": "c", "tls_key": "k", "tls_require_client_cert": True}, "needs --tls-ca"),
    ],
)
def test_control_plane_tls_settings_that_do_not_go_together_are_refused(
    settings: dict[str, object], message: str
) -> None:
    from fastworker.server.control_plane import _listener_tls  # pyright: ignore[reportPrivateUsage]
    from fastworker.server.settings import ControlPlaneSettings

    with pytest.raises(ConfigurationError, match=message):
        _listener_tls(ControlPlaneSettings(**settings))  # pyright: ignore[reportArgumentType]


def test_mutual_tls_lets_a_control_plane_listen_beyond_loopback_without_a_secret() -> None:
    from fastworker.server.control_plane import _check_exposure  # pyright: ignore[reportPrivateUsage]
    from fastworker.server.settings import ControlPlaneSettings

    exposed = "tls+tcp://192.0.2.1:5555"  # a documentation address: never bound here
    _check_exposure(ControlPlaneSettings(address=exposed, tls_require_client_cert=True))
    with pytest.raises(ConfigurationError, match="would need no credential"):
        _check_exposure(ControlPlaneSettings(address=exposed))
