"""What the core knows of each connection beyond its id: whether it presented the shared
secret, whether it speaks protocol 1.0, and what it may not do."""

from __future__ import annotations

import hmac
from typing import TypeVar

from fastworker.protocol import AuthenticationError, LeaseError, TaskStatus
from fastworker.protocol import messages as m

from .limiter import LogLimiter
from .records import Connection, error_info

__all__ = ["Peers"]

_TaskReply = TypeVar("_TaskReply", m.StatusReply, m.HistoryReply)


class Peers:
    """Authentication and protocol minor per connection, and the refusal of worker
    messages from a connection that never registered as a subworker."""

    def __init__(
        self,
        auth_token: str | None,
        counters: m.Counters,
        sends: list[tuple[int, m.Message]],
        fenced_log: LogLimiter,
    ) -> None:
        self._token = auth_token
        self._counters = counters
        self._sends = sends
        self._fenced_log = fenced_log
        self._authenticated: set[int] = set()
        self._minor_zero: set[int] = set()
        """Connections that speak protocol 1.0: they are never sent a 1.1 status."""

    def check(self, peer: Connection, message: m.Message) -> None:
        """Refuse anything but a hello with the shared secret from a connection that has
        not presented it yet (when the control plane has one).

        Raises:
            AuthenticationError: no secret, or the wrong one.
        """
        token = self._token
        if token is None or peer.id in self._authenticated:
            return
        presented = (
            message.auth_token if isinstance(message, m.ClientHello | m.WorkerHello) else None
        )
        if presented is None:
            raise AuthenticationError(
                "this control plane requires a shared secret: start with a hello that "
                "carries it (--auth-token or FASTWORKER_AUTH_TOKEN)"
            )
        if not hmac.compare_digest(presented.encode(), token.encode()):
            raise AuthenticationError("wrong shared secret")
        self._authenticated.add(peer.id)

    def refuse_non_worker(self, peer: Connection, message: m.Message, now: float) -> None:
        """A connection that never registered as a subworker sent what only one may."""
        if isinstance(message, m.Heartbeat):
            return  # harmless, and an old subworker may heartbeat before its welcome
        count = len(message.outcomes) if isinstance(message, m.TasksDone) else 1
        self._counters.fenced += count
        self._fenced_log.warning(
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
        self._authenticated.discard(peer_id)
        self._minor_zero.discard(peer_id)
