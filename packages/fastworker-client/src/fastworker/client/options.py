"""Retry settings and start times of a submission, checked once, on the caller's side.

``Retries`` is what ``@task(retries=..., retry_backoff=..., ...)`` builds and what
``delay(..., retry=Retries(...))`` and ``TaskCall(retry=...)`` take; ``countdown`` and
``eta`` say when a task may start. Both travel with the task: the control plane often
does not import the task's module.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Iterable
from typing import Final, cast

from fastworker.protocol import ConfigurationError
from fastworker.protocol import messages as m

__all__ = ["MAX_RETRIES", "Retries", "Retry", "check_retry", "check_start", "exception_name"]

MAX_RETRIES: Final = 10_000
"""The most retries a policy may ask for (the wire's bound)."""
_MAX_SECONDS: Final = 1e9


@dataclasses.dataclass(frozen=True)
class Retries:
    """How a task that raises is retried: up to ``retries`` more attempts, for the
    exception classes in ``on`` (and their subclasses), each after
    ``min(backoff_max, backoff * 2 ** (attempt - 1))`` seconds, or a random part of that
    with ``jitter`` (full jitter, so that failures of many tasks spread out).

    The wait happens in the control plane, not in a worker's slot. ``WorkerLostError``
    (a subworker that died) is not a failure of the task and follows ``--max-attempts``
    instead.

    Raises:
        ConfigurationError: a setting out of range, or ``on`` naming something other than
            exception classes.
    """

    retries: int
    backoff: float = 2.0
    backoff_max: float = 600.0
    jitter: bool = True
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        _check_retries(self.retries)
        _check_seconds("retry_backoff", self.backoff)
        _check_seconds("retry_backoff_max", self.backoff_max)
        _check_flag("retry_jitter", self.jitter)
        object.__setattr__(self, "on", _exception_classes(self.on))
        object.__setattr__(self, "backoff", float(self.backoff))
        object.__setattr__(self, "backoff_max", float(self.backoff_max))

    def policy(self) -> m.RetryPolicy | None:
        """The policy as it travels; ``None`` for no retry."""
        if self.retries == 0:
            return None
        return m.RetryPolicy(
            retries=self.retries,
            retry_on=[exception_name(c) for c in self.on],
            backoff=self.backoff,
            backoff_max=self.backoff_max,
            jitter=self.jitter,
        )


class Retry(Exception):
    """Raised by a task to ask for another attempt: ``raise Retry(countdown=5)`` or
    ``raise Retry(eta=when)``; without either, the task's backoff decides when. It counts
    as an attempt, and once the task's ``retries`` are used up, the task fails with the
    exception it was raised from (``raise Retry() from exc``) or with this one."""

    def __init__(
        self,
        message: str = "the task asked to be retried",
        *,
        countdown: float | None = None,
        eta: datetime.datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.countdown, self.eta = check_start(countdown, eta)

    def delay(self, now: float) -> float | None:
        """Seconds from ``now`` (Unix time) to the attempt it asks for, or None."""
        if self.eta is not None:
            return max(0.0, self.eta - now)
        return self.countdown


def check_start(
    countdown: float | None, eta: datetime.datetime | None
) -> tuple[float | None, float | None]:
    """``(countdown, eta as Unix time)``, checked: at most one of them, a countdown of 0
    or more seconds, an ETA that knows its timezone.

    Raises:
        ConfigurationError: both given, a negative or non-finite countdown, or a naive
            datetime (which would be read in whichever timezone the control plane has).
    """
    if countdown is not None and eta is not None:
        raise ConfigurationError("give a countdown or an eta, not both")
    if countdown is not None:
        _check_seconds("countdown", countdown)
        return float(countdown), None
    if eta is not None:
        return None, _eta_timestamp(eta)
    return None, None


def check_retry(retry: object) -> Retries | None:
    """``retry`` as a policy to send: ``None`` for none or for ``Retries(0)``.

    Raises:
        ConfigurationError: it is not a :class:`Retries`.
    """
    if retry is None:
        return None
    if not isinstance(retry, Retries):
        raise ConfigurationError(f"retry must be a Retries(...), not {retry!r}")
    return retry if retry.retries else None


def _eta_timestamp(eta: object) -> float:
    if not isinstance(eta, datetime.datetime):
        raise ConfigurationError(f"eta must be a datetime, not {eta!r}")
    if eta.tzinfo is None or eta.utcoffset() is None:
        raise ConfigurationError(
            f"eta {eta.isoformat()} is a naive datetime: give it a timezone, e.g. "
            "datetime.now(timezone.utc) + timedelta(minutes=5)"
        )
    return max(0.0, eta.timestamp())


def _check_retries(retries: object) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise ConfigurationError(f"retries must be a whole number, not {retries!r}")
    if not 0 <= retries <= MAX_RETRIES:
        raise ConfigurationError(f"retries must be 0 to {MAX_RETRIES}, not {retries}")


def _check_flag(label: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{label} must be True or False, not {value!r}")


def exception_name(cls: type[BaseException]) -> str:
    """How an exception class is named on the wire: ``module.QualName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_classes(on: object) -> tuple[type[BaseException], ...]:
    items: object = (on,) if isinstance(on, type) else on
    if isinstance(items, (tuple, list, set, frozenset)):
        classes = tuple(cast("Iterable[object]", items))
        if classes and all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
            return cast("tuple[type[BaseException], ...]", classes)
    raise ConfigurationError(f"retry_on must be exception classes, not {on!r}")


def _check_seconds(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{label} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or not 0 <= value <= _MAX_SECONDS:
        raise ConfigurationError(
            f"{label} must be a finite number of seconds from 0 to {_MAX_SECONDS:g}, not {value!r}"
        )
