"""Rate-limited log lines: a peer that keeps sending what is refused must not flood the log.

Used by the client's transport and by the control plane and subworker."""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["LogLimiter"]


class LogLimiter:
    """Logs at most one line per ``interval`` seconds, at ``level``, and says how many it
    held back."""

    def __init__(
        self, logger: logging.Logger, *, interval: float, level: int = logging.WARNING
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._level = level
        self._next = float("-inf")
        self._held = 0

    def log(
        self, now: float, message: str, *args: object, extra: Mapping[str, object] | None = None
    ) -> bool:
        """Log unless one was logged less than ``interval`` ago; returns whether it did."""
        if now < self._next:
            self._held += 1
            return False
        if self._held:
            message += f" ({self._held} more like it in the last {self._interval:.0f} s)"
            self._held = 0
        self._logger.log(self._level, message, *args, extra=extra)
        self._next = now + self._interval
        return True
