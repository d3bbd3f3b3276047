"""TLS options as a client resolves them, and what NNG's counters of a failed dial are
made to say. The handshakes themselves are tested between real processes (tests/test_tls.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastworker.client import TLSOptions
from fastworker.client._transport import client_tls_config, describe_failures
from fastworker.client.tls import check_tls, host_of
from fastworker.protocol import ConfigurationError

TLS = "tls+tcp://cp.internal:5555"


def test_a_tls_address_takes_its_options_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTWORKER_TLS_CA", "/etc/fastworker/ca.pem")
    monkeypatch.setenv("FASTWORKER_TLS_SERVER_NAME", "cp")
    assert check_tls(TLS, None) == TLSOptions(ca="/etc/fastworker/ca.pem", server_name="cp")
    given = TLSOptions(ca="mine.pem")
    assert check_tls(TLS, given) is given
    assert check_tls("tcp://127.0.0.1:5555", None) is None


def test_a_tls_address_without_a_ca_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTWORKER_TLS_CA", raising=False)
    with pytest.raises(ConfigurationError, match="give the certificate authority to trust"):
        check_tls(TLS, None)
    with pytest.raises(ConfigurationError, match="needs the certificate authority"):
        TLSOptions(ca="")


def test_the_server_name_defaults_to_the_host_of_the_address() -> None:
    assert host_of(TLS) == "cp.internal"
    assert host_of("tls+tcp://[::1]:5555") == "::1"


def test_files_that_are_not_pem_are_refused_at_start(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigurationError, match="cannot read the TLS certificate authority"):
        client_tls_config(TLS, TLSOptions(ca=missing))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="is not a PEM file"):
        client_tls_config(TLS, TLSOptions(ca=str(garbage)))


@pytest.mark.parametrize(
    ("counters", "address", "says"),
    [
        ({"auth": 3}, TLS, "the TLS handshake with tls+tcp://cp.internal:5555 failed 3 times"),
        ({"proto": 2}, TLS, "does not speak TLS"),
        ({"other": 4}, "tcp://cp.internal:5555", "does it listen on tls+tcp://?"),
        ({"refused": 5}, TLS, "nothing listens at tls+tcp://cp.internal:5555"),
    ],
)
def test_the_counters_of_a_failed_dial_say_why(
    counters: dict[str, int], address: str, says: str
) -> None:
    described = describe_failures(counters, address)
    assert described is not None
    assert says in described


def test_a_dial_that_has_not_failed_says_nothing() -> None:
    assert describe_failures({"connect": 0, "refused": 0}, TLS) is None
    # A connection an ipc:// control plane closed (it dropped a silent subworker) is not
    # a handshake that failed.
    assert describe_failures({"other": 2}, "ipc:///tmp/cp.sock") is None


def test_flags_without_a_ca_give_no_options_and_refuse_the_rest() -> None:
    assert TLSOptions.from_flags(None, None, None, None) is None
    assert TLSOptions.from_flags("ca.pem", None, None, "cp") == TLSOptions(
        ca="ca.pem", server_name="cp"
    )
    with pytest.raises(ConfigurationError, match="need --tls-ca"):
        TLSOptions.from_flags(None, "me.pem", "me.key", None)
