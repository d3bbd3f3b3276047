"""When a periodic task runs: :func:`cron` and :func:`every`, for ``@task(schedule=...)``.

A schedule is a value that says when; the control plane that imports the task's module
is the only one that fires it (no separate beat process), and its journal keeps each
schedule's last and next fire time. This module only describes and checks schedules; the
cron expression is read by the control plane, with its ``cron`` extra
(``pip install "fastworker-server[cron]"``), so a web app that imports a task module
never needs a cron library.

The same schedules can be given as text (``fastworker control-plane --schedule``), in the
form :func:`parse_schedule` reads and :meth:`Cron.describe` / :meth:`Every.describe` write.
"""

from __future__ import annotations

import dataclasses
from typing import Final, Literal, TypeAlias, cast

from fastworker.protocol import ConfigurationError

__all__ = [
    "MISSED_POLICIES",
    "MISSED_RUNS_LIMIT",
    "Cron",
    "Every",
    "Missed",
    "Schedule",
    "check_schedule",
    "cron",
    "every",
    "parse_schedule",
]

Missed: TypeAlias = Literal["coalesce", "skip", "all"]
MISSED_POLICIES: Final[tuple[Missed, ...]] = ("coalesce", "skip", "all")
"""What happens to runs whose time passed while the control plane was down: one run for
all of them (``coalesce``, the default), none (``skip``), or each (``all``, at most
:data:`MISSED_RUNS_LIMIT`)."""

MISSED_RUNS_LIMIT: Final = 100
"""The most missed runs ``missed="all"`` fires at a start: the earliest ones; the rest
are skipped and logged."""

_MAX_INTERVAL: Final = 366 * 24 * 3600.0
_MAX_EXPRESSION: Final = 256


@dataclasses.dataclass(frozen=True)
class Cron:
    """Runs at the times a cron expression names (five fields: minute, hour, day of
    month, month, day of week; or ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``,
    ``@yearly``), read in the IANA timezone ``tz``. Made by :func:`cron`."""

    expression: str
    tz: str = "UTC"
    missed: Missed = "coalesce"

    def __post_init__(self) -> None:
        expression = cast("object", self.expression)  # checked: callers may pass anything
        if not isinstance(expression, str) or not expression.strip():
            raise ConfigurationError(
                f"a cron expression must be non-empty text, not {expression!r}"
            )
        text = " ".join(expression.split())
        if len(text) > _MAX_EXPRESSION or ";" in text:
            raise ConfigurationError(f"{expression!r} is not a cron expression")
        tz = cast("object", self.tz)
        if not isinstance(tz, str) or not tz or ";" in tz or " " in tz:
            raise ConfigurationError(f"tz must be an IANA timezone name such as 'UTC', not {tz!r}")
        object.__setattr__(self, "expression", text)
        _check_missed(self.missed)

    def describe(self) -> str:
        """The schedule as text, in the form :func:`parse_schedule` reads."""
        return _with_options(f"cron:{self.expression}", self.tz, self.missed)


@dataclasses.dataclass(frozen=True)
class Every:
    """Runs every ``seconds``, counted from the control plane's first start with this
    schedule and kept on that grid across restarts. Made by :func:`every`."""

    seconds: float
    missed: Missed = "coalesce"

    def __post_init__(self) -> None:
        seconds = cast("object", self.seconds)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ConfigurationError(f"an interval must be a number of seconds, not {seconds!r}")
        if not 0 < seconds <= _MAX_INTERVAL:  # NaN fails this too
            raise ConfigurationError(
                f"an interval must be above 0 and at most {_MAX_INTERVAL:g} seconds,"
                f" not {seconds!r}"
            )
        object.__setattr__(self, "seconds", float(seconds))
        _check_missed(self.missed)

    def describe(self) -> str:
        """The schedule as text, in the form :func:`parse_schedule` reads."""
        return _with_options(f"every:{self.seconds:g}", "UTC", self.missed)


Schedule: TypeAlias = "Cron | Every"


def cron(expression: str, *, tz: str = "UTC", missed: Missed = "coalesce") -> Cron:
    """A cron schedule: ``@task(schedule=cron("*/5 * * * *", tz="Europe/Berlin"))``.

    Daylight-saving changes follow Debian's cron: a time skipped when clocks go forward
    runs once, right after the change; a time that happens twice when they go back runs
    once, the first time. The expression is read by the control plane when it starts
    (an invalid one stops it with a ConfigurationError naming the task).

    Raises:
        ConfigurationError: ``expression`` is empty or not text, ``tz`` is not a
            timezone name, or ``missed`` is not one of :data:`MISSED_POLICIES`.
    """
    return Cron(expression, tz, missed)


def every(
    *, seconds: float = 0, minutes: float = 0, hours: float = 0, missed: Missed = "coalesce"
) -> Every:
    """A fixed interval: ``@task(schedule=every(seconds=30))``; the parts add up.

    Raises:
        ConfigurationError: a part that is not a number, or an interval that is not
            above 0 and at most a year; ``missed`` not one of :data:`MISSED_POLICIES`.
    """
    total = 0.0
    parts = cast(
        "tuple[tuple[str, object, int], ...]",
        (("seconds", seconds, 1), ("minutes", minutes, 60), ("hours", hours, 3600)),
    )
    for label, value, unit in parts:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"every({label}=...) must be a number, not {value!r}")
        total += float(value) * unit
    return Every(total, missed)


def parse_schedule(text: str) -> Cron | Every:
    """A schedule from text: ``cron:EXPRESSION`` or ``every:SECONDS``, each optionally
    followed by ``;tz=ZONE`` (cron only) and ``;missed=POLICY``. For example
    ``cron:0 3 * * *;tz=Europe/Berlin`` or ``every:30;missed=skip``.

    Raises:
        ConfigurationError: saying what is wrong with ``text``.
    """
    kind, colon, rest = text.partition(":")
    parts = rest.split(";")
    options: dict[str, str] = {}
    for part in parts[1:]:
        key, equals, value = part.partition("=")
        key = key.strip()
        if not equals or key not in ("tz", "missed") or key in options:
            raise ConfigurationError(
                f"schedule {text!r}: {part!r} is not one of ;tz=ZONE or ;missed=POLICY"
            )
        options[key] = value.strip()
    missed = cast("Missed", options.get("missed", "coalesce"))
    kind = kind.strip()
    if colon and kind == "cron":
        return cron(parts[0], tz=options.get("tz", "UTC"), missed=missed)
    if colon and kind == "every":
        if "tz" in options:
            raise ConfigurationError(f"schedule {text!r}: an interval has no timezone")
        try:
            seconds = float(parts[0])
        except ValueError:
            raise ConfigurationError(
                f"schedule {text!r}: every: takes a number of seconds, not {parts[0]!r}"
            ) from None
        return every(seconds=seconds, missed=missed)
    raise ConfigurationError(
        f"schedule {text!r} is not cron:EXPRESSION or every:SECONDS (e.g. 'cron:*/5 * * * *')"
    )


def check_schedule(schedule: object) -> Cron | Every | None:
    """``schedule`` if it is a schedule made by :func:`cron` or :func:`every`, or None.

    Raises:
        ConfigurationError: anything else.
    """
    if schedule is None or isinstance(schedule, (Cron, Every)):
        return schedule
    raise ConfigurationError(
        f"schedule must be cron(...) or every(...) from fastworker.client, not {schedule!r}"
    )


def _check_missed(missed: object) -> Missed:
    for policy in MISSED_POLICIES:
        if missed == policy:
            return policy
    raise ConfigurationError(f"missed must be one of {', '.join(MISSED_POLICIES)}, not {missed!r}")


def _with_options(head: str, tz: str, missed: Missed) -> str:
    text = head if tz == "UTC" else f"{head};tz={tz}"
    return text if missed == "coalesce" else f"{text};missed={missed}"
