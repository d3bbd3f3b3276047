"""What the core knows of each connection beyond its id: which role's credential it
presented, whether it speaks protocol 1.0, and what it may not do."""

from __future__ import annotations

import hmac
from typing import TypeVar

from fastworker.client._limiter import LogLimiter
from fastworker.protocol import AuthenticationError, ConnectionLimitError, LeaseError, TaskStatus
from fastworker.protocol import messages as m

from ..settings import ControlPlaneSettings
from .records import Connection, error_info

__all__ = ["CLIENT_ROLE", "WORKER_ONLY", "WORKER_ROLE", "Peers"]

_TaskReply = TypeVar("_TaskReply", m.StatusReply, m.HistoryReply)
WORKER_ONLY = (m.TasksDone, m.HandBack, m.Heartbeat)
"""What only a registered subworker may send (the core checks that it is one)."""
_WORKER_MESSAGES = (*WORKER_ONLY, m.Goodbye)
"""What a subworker sends after its hello; it needs no client secret."""


def _same(presented: str, expected: str | None) -> bool:
    """Whether a presented secret is ``expected``, in constant time."""
    return expected is not None and hmac.compare_digest(presented.encode(), expected.encode())


CLIENT_ROLE = "client"
WORKER_ROLE = "subworker"


class Peers:
    """Authentication and protocol minor per connection, and the refusal of worker
    messages from a connection that never registered as a subworker.

    Each role has its own credential: ``worker_token`` for subworkers, ``client_token``
    for clients, ``auth_token`` for a role without one of its own. A role with no
    credential at all needs none. Each credential is for its role only: a client's never
    registers a subworker, and a subworker's is not a client's.
    """

    def __init__(
        self,
        settings: ControlPlaneSettings,
        counters: m.Counters,
        sends: list[tuple[int, m.Message]],
        fenced_log: LogLimiter,
    ) -> None:
        self._credentials: dict[str, str | None] = {
            CLIENT_ROLE: settings.client_token or settings.auth_token,
            WORKER_ROLE: settings.worker_token or settings.auth_token,
        }
        self._cert_roles = settings.tls_cert_roles
        """Whether a certificate's common name can name its role (``subworker:...``)."""
        self._open = not self._cert_roles and all(
            token is None for token in self._credentials.values()
        )
        self._max_connections = settings.max_connections
        self._live: set[int] = set()
        """Connections that sent a message and have not gone."""
        """No credential is set: every connection may do anything."""
        self._counters = counters
        self._sends = sends
        self._fenced_log = fenced_log
        self._roles: dict[int, set[str]] = {}
        """What each authenticated connection presented the credential of."""
        self._minor_zero: set[int] = set()
        """Connections that speak protocol 1.0: they are never sent a 1.1 status."""

    def check(self, peer: Connection, message: m.Message) -> None:
        """Let a hello through with its role's credential, and anything else only from a
        connection that presented one (when the control plane has credentials).

        Raises:
            AuthenticationError: no credential, the wrong one, or one of another role.
            ConnectionLimitError: a new connection past ``max_connections``.
        """
        if peer.id not in self._live:
            if len(self._live) >= self._max_connections:
                raise ConnectionLimitError(
                    f"the control plane serves {len(self._live)} connections, its limit "
                    "(--max-connections); retry later"
                )
            self._live.add(peer.id)
        if isinstance(message, m.ClientHello | m.WorkerHello):
            role = CLIENT_ROLE if isinstance(message, m.ClientHello) else WORKER_ROLE
            if not self._certificate_names(peer, role):
                self._hello(peer.id, message.auth_token, role)
            return
        if self._open:
            return
        roles = self._roles.get(peer.id)
        if roles is None:
            raise AuthenticationError(
                "this control plane requires a shared secret: start with a hello that "
                "carries it (--auth-token or FASTWORKER_AUTH_TOKEN)"
            )
        if (
            not isinstance(message, _WORKER_MESSAGES)
            and CLIENT_ROLE not in roles
            and self._credentials[CLIENT_ROLE] is not None
        ):
            # A subworker's secret is for running tasks: it reads and submits nothing.
            raise AuthenticationError(
                f"{type(message).__name__} needs the client secret: this connection "
                "presented a subworker's"
            )

    def _certificate_names(self, peer: Connection, role: str) -> bool:
        """Whether the peer's verified certificate gives it ``role`` (``subworker:NAME``
        or ``client:NAME`` as its common name). A certificate that names the other role
        is refused; one that names none leaves the decision to the secrets."""
        if not self._cert_roles or not peer.certificate:
            return False
        named, colon, _ = peer.certificate.partition(":")
        if not colon or named not in (CLIENT_ROLE, WORKER_ROLE):
            return False
        if named != role:
            raise AuthenticationError(
                f"this connection's certificate ({peer.certificate}) is a {named}'s, not a {role}'s"
            )
        self._roles.setdefault(peer.id, set()).add(role)
        return True

    def _hello(self, peer_id: int, presented: str, role: str) -> None:
        roles = self._roles.get(peer_id)
        if roles is not None and role in roles:
            return
        expected = self._credentials[role]
        if expected is None:
            if self._cert_roles:
                raise AuthenticationError(
                    f"a {role} needs a certificate named {role}:NAME, or the {role} secret"
                )
            if not self._open:
                self._roles.setdefault(peer_id, set()).add(role)
            return
        if _same(presented, expected):
            self._roles.setdefault(peer_id, set()).add(role)
            return
        other = WORKER_ROLE if role == CLIENT_ROLE else CLIENT_ROLE
        if _same(presented, self._credentials[other]):
            raise AuthenticationError(
                f"this secret is a {other}'s: a {role} needs the {role} secret "
                f"(--{'worker' if role == WORKER_ROLE else 'client'}-token on the control plane)"
            )
        if not presented:
            raise AuthenticationError(
                f"this control plane requires a {role}'s secret: pass it with "
                "--auth-token or FASTWORKER_AUTH_TOKEN (or --auth-token-file)"
            )
        raise AuthenticationError(f"wrong secret for a {role}")

    def refuse_non_worker(self, peer: Connection, message: m.Message, now: float) -> None:
        """A connection that never registered as a subworker sent what only one may."""
        if isinstance(message, m.Heartbeat):
            return  # harmless, and an old subworker may heartbeat before its welcome
        count = len(message.outcomes) if isinstance(message, m.TasksDone) else 1
        self._counters.fenced += count
        self._fenced_log.log(
            now,
            "refused %s from %s: not a registered subworker",
            type(message).__name__,
            peer.address,
        )
        error = LeaseError(
            f"{type(message).__name__} refused: this connection is not a registered subworker, "
            "and only the subworker holding a task's lease may report on it"
        )
        self._sends.append((peer.id, m.ErrorReply(request_id=None, error=error_info(error))))

    def speaks_minor(self, peer_id: int, minor: int) -> None:
        """The shell saw a frame of protocol minor ``minor`` from the connection."""
        if minor == 0:
            self._minor_zero.add(peer_id)

    def decodable(self, peer_id: int, reply: _TaskReply) -> _TaskReply:
        """A reply the peer can decode: a 1.0 peer has no ``scheduled`` status (its
        decoder would refuse the whole frame), so it is told ``queued``."""
        if peer_id in self._minor_zero:
            for info in reply.tasks:
                if info.status is TaskStatus.SCHEDULED:
                    info.status = TaskStatus.QUEUED
        return reply

    def gone(self, peer_id: int) -> None:
        self._live.discard(peer_id)
        self._roles.pop(peer_id, None)
        self._minor_zero.discard(peer_id)
