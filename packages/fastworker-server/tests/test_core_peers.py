"""Credentials by role in the control plane's core: a client's credential never
registers a subworker, a refused hello closes its connection, and refusals are
rate-limited in the log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_core_state import CLIENT, OTHER_CLIENT, A, Conn, Harness

from fastworker.protocol import messages as m

WORKER = "worker secret"
CLIENT_SECRET = "client secret"


def _hello(token: str, request_id: int = 1) -> m.ClientHello:
    return m.ClientHello(request_id=request_id, auth_token=token)


def _worker_hello(token: str) -> m.WorkerHello:
    return m.WorkerHello(
        request_id=1, worker_id="a", concurrency=1, task_names=["add"], auth_token=token
    )


def _error(h: Harness, conn: object) -> m.ErrorInfo:
    (reply,) = h.sent(conn)  # pyright: ignore[reportArgumentType]
    assert isinstance(reply, m.ErrorReply), reply
    return reply.error


def test_each_role_takes_its_own_credential_only() -> None:
    h = Harness(worker_token=WORKER, client_token=CLIENT_SECRET)
    h.send(CLIENT, _hello(CLIENT_SECRET))
    assert isinstance(h.sent(CLIENT)[0], m.Welcome)
    h.send(A, _worker_hello(CLIENT_SECRET))
    error = _error(h, A)
    assert error.code == "authentication"
    assert "this secret is a client's" in error.message
    assert h.core.workers == {}
    assert h.core.refused == [A.id]
    h.send(OTHER_CLIENT, _hello(WORKER))
    assert "this secret is a subworker's" in _error(h, OTHER_CLIENT).message


def test_a_subworker_with_its_credential_registers() -> None:
    h = Harness(worker_token=WORKER, client_token=CLIENT_SECRET)
    h.send(A, _worker_hello(WORKER))
    assert isinstance(h.sent(A)[0], m.WorkerWelcome)
    assert list(h.core.workers) == ["a"]
    assert h.core.refused == []


def test_nothing_but_a_hello_passes_before_a_credential() -> None:
    h = Harness(auth_token="shared")
    h.send(A, m.TasksDone(outcomes=[]))
    assert "requires a shared secret" in _error(h, A).message
    h.send(CLIENT, m.OverviewQuery(request_id=3))
    assert _error(h, CLIENT).code == "authentication"
    h.send(CLIENT, _hello(""))
    assert "requires a client's secret" in _error(h, CLIENT).message
    h.send(OTHER_CLIENT, _hello("guess"))
    assert _error(h, OTHER_CLIENT).message == "wrong secret for a client"


def test_the_shared_secret_serves_a_role_without_a_credential_of_its_own() -> None:
    h = Harness(auth_token="shared", client_token=CLIENT_SECRET)
    h.send(A, _worker_hello("shared"))
    assert isinstance(h.sent(A)[0], m.WorkerWelcome)
    h.send(CLIENT, _hello("shared"))
    assert _error(h, CLIENT).code == "authentication"


def test_refused_hellos_are_rate_limited_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(auth_token="shared")
    with caplog.at_level(logging.INFO, logger="fastworker.control_plane"):
        for attempt in range(50):
            h.send(CLIENT, _hello("guess", request_id=attempt + 1))
            h.now += 0.1  # 5 s in all
        h.now += 10.0
        h.send(CLIENT, _hello("guess", request_id=99))
    refused = [r.getMessage() for r in caplog.records if "refused ClientHello" in r.getMessage()]
    assert len(refused) == 2
    assert "49 more like it" in refused[1]


def test_a_connection_past_the_limit_is_refused_and_closed_until_one_goes() -> None:
    h = Harness(max_connections=2)
    h.send(CLIENT, _hello(""))
    h.send(A, _worker_hello(""))
    assert isinstance(h.sent(CLIENT)[0], m.Welcome)
    h.sent(A)
    h.send(OTHER_CLIENT, _hello(""))
    error = _error(h, OTHER_CLIENT)
    assert error.code == "connection_limit"
    assert "--max-connections" in error.message
    assert h.core.refused == [OTHER_CLIENT.id]
    h.send(CLIENT, m.OverviewQuery(request_id=2))  # those in keep being served
    assert isinstance(h.sent(CLIENT)[0], m.Overview)
    h.core.disconnected(CLIENT.id, h.now)
    h.core.disconnected(OTHER_CLIENT.id, h.now)
    h.send(OTHER_CLIENT, _hello("", request_id=3))
    assert isinstance(h.sent(OTHER_CLIENT)[0], m.Welcome)


def test_a_subworkers_secret_reads_and_submits_nothing() -> None:
    h = Harness(worker_token=WORKER, client_token=CLIENT_SECRET)
    h.send(A, _worker_hello(WORKER))
    h.sent(A)
    h.send(A, m.OverviewQuery(request_id=5))
    error = _error(h, A)
    assert error.code == "authentication"
    assert "OverviewQuery needs the client secret" in error.message
    h.send(A, m.Heartbeat(sent_at=1.0, load=0))  # what a subworker sends stays fine
    assert h.sent(A) == []


WORKER_CERT = Conn(30, "worker-cert", certificate="subworker:host-1")
CLIENT_CERT = Conn(31, "client-cert", certificate="client:web-1")
NO_ROLE_CERT = Conn(32, "plain-cert", certificate="host-2.example")


def test_a_certificate_can_name_its_role_in_place_of_a_secret() -> None:
    h = Harness(tls_cert_roles=True)
    h.send(WORKER_CERT, _worker_hello(""))
    assert isinstance(h.sent(WORKER_CERT)[0], m.WorkerWelcome)
    h.send(CLIENT_CERT, _hello(""))
    assert isinstance(h.sent(CLIENT_CERT)[0], m.Welcome)
    h.send(CLIENT_CERT, _worker_hello(""))  # a client's certificate registers nothing
    assert "is a client's, not a subworker's" in _error(h, CLIENT_CERT).message
    h.send(NO_ROLE_CERT, _hello(""))
    assert "needs a certificate named client:NAME" in _error(h, NO_ROLE_CERT).message
    assert list(h.core.workers) == ["a"]


def test_a_certificate_that_names_no_role_falls_back_to_the_secrets() -> None:
    h = Harness(tls_cert_roles=True, client_token=CLIENT_SECRET)
    h.send(NO_ROLE_CERT, _hello(CLIENT_SECRET))
    assert isinstance(h.sent(NO_ROLE_CERT)[0], m.Welcome)
