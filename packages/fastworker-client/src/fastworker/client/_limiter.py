"""Rate-limited warnings: a peer that keeps sending what is refused must not flood the log."""

from __future__ import annotations

import logging

__all__ = ["LogLimiter"]


class LogLimiter:
    """Logs at most one warning per ``interval`` seconds and says how many it held back."""

    def __init__(self, logger: logging.Logger, *, interval: float) -> None:
        self._logger = logger
        self._interval = interval
        self._next = float("-inf")
        self._held = 0

    def warning(self, now: float, message: str, *args: object) -> bool:
        """Log unless one was logged less than ``interval`` ago; returns whether it did."""
        if now < self._next:
            self._held += 1
            return False
        if self._held:
            message += f" ({self._held} more like it in the last {self._interval:.0f} s)"
            self._held = 0
        self._logger.warning(message, *args)
        self._next = now + self._interval
        return True
