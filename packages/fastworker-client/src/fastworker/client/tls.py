"""TLS for a connection to a control plane at a ``tls+tcp://`` address.

``TLSOptions(ca=...)`` names the certificate authority that signed the control plane's
certificate; with mutual TLS (the control plane's ``--tls-require-client-cert``) it also
names this side's own certificate and key. Files are PEM. The same settings come from the
environment (``FASTWORKER_TLS_CA``, ``FASTWORKER_TLS_CERT``, ``FASTWORKER_TLS_KEY``,
``FASTWORKER_TLS_SERVER_NAME``) when a ``tls+tcp://`` client is given none, as the
address and the secret do.
"""

from __future__ import annotations

import dataclasses
import os

from fastworker.protocol import ENV_PREFIX, ConfigurationError

__all__ = ["TLS_SCHEME", "TLSOptions", "check_tls", "host_of", "read_pem"]

TLS_SCHEME = "tls+tcp://"


@dataclasses.dataclass(frozen=True)
class TLSOptions:
    """How a client or subworker checks the control plane, and proves itself to it.

    Attributes:
        ca: the PEM file of the certificate authority the control plane's certificate
            must be signed by. Required: a connection that trusts anything would not
            keep an attacker in the middle out.
        cert, key: this side's certificate (with its chain) and private key, both or
            neither; for a control plane that requires client certificates.
        server_name: the name the control plane's certificate must carry; by default
            the host of the address (``cp.internal`` in ``tls+tcp://cp.internal:5555``).

    Raises:
        ConfigurationError: no ``ca``, or only one of ``cert`` and ``key``.
    """

    ca: str
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if not self.ca:
            raise ConfigurationError(
                "TLS needs the certificate authority to trust: TLSOptions(ca=...), "
                "--tls-ca or FASTWORKER_TLS_CA"
            )
        if (self.cert is None) != (self.key is None):
            raise ConfigurationError("give a TLS certificate and its key together, or neither")

    @classmethod
    def from_flags(
        cls, ca: str | None, cert: str | None, key: str | None, server_name: str | None
    ) -> TLSOptions | None:
        """The options the ``--tls-*`` flags of a command give, or None without
        ``--tls-ca`` (the environment's, if any, then apply).

        Raises:
            ConfigurationError: ``--tls-cert``, ``--tls-key`` or ``--tls-server-name``
                without ``--tls-ca``.
        """
        if ca is None:
            if cert or key or server_name:
                raise ConfigurationError(
                    "--tls-cert, --tls-key and --tls-server-name need --tls-ca"
                )
            return None
        return cls(ca=ca, cert=cert, key=key, server_name=server_name)

    @classmethod
    def from_environment(cls) -> TLSOptions | None:
        """The options ``FASTWORKER_TLS_*`` give, or None when ``FASTWORKER_TLS_CA`` is
        not set."""
        ca = os.environ.get(f"{ENV_PREFIX}TLS_CA")
        if not ca:
            return None
        return cls(
            ca=ca,
            cert=os.environ.get(f"{ENV_PREFIX}TLS_CERT") or None,
            key=os.environ.get(f"{ENV_PREFIX}TLS_KEY") or None,
            server_name=os.environ.get(f"{ENV_PREFIX}TLS_SERVER_NAME") or None,
        )


def check_tls(address: str, tls: TLSOptions | None) -> TLSOptions | None:
    """The TLS options a connection to ``address`` uses: those given, else the
    environment's, for a ``tls+tcp://`` address; None for any other.

    Raises:
        ConfigurationError: a ``tls+tcp://`` address without options, or options for an
            address that is not ``tls+tcp://``.
    """
    if not address.startswith(TLS_SCHEME):
        if tls is not None:
            raise ConfigurationError(
                f"TLS options were given, but {address} is not a {TLS_SCHEME} address"
            )
        return None
    tls = tls or TLSOptions.from_environment()
    if tls is None:
        raise ConfigurationError(
            f"{address} is a TLS address: give the certificate authority to trust "
            "(TLSOptions(ca=...), --tls-ca or FASTWORKER_TLS_CA)"
        )
    return tls


def host_of(address: str) -> str:
    """The host part of a ``scheme://host:port`` address (brackets of IPv6 removed)."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host.removeprefix("[").removesuffix("]")


def read_pem(label: str, path: str) -> str:
    """The text of a PEM file, read now so that a wrong path is a clear error at start.

    Raises:
        ConfigurationError: the file cannot be read, or holds no PEM block.
    """
    try:
        with open(path, encoding="ascii") as pem:
            text = pem.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the TLS {label} {path}: {exc}") from exc
    if "-----BEGIN " not in text:
        raise ConfigurationError(f"the TLS {label} {path} is not a PEM file")
    return text
