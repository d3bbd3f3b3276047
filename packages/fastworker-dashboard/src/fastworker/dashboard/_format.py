"""Jinja filters: numbers, durations and times as the page shows them."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, Final

__all__ = ["FILTERS", "NONE"]

NONE: Final = "\N{EN DASH}"
"""What the page shows for a value it does not have."""


def num(value: float | None) -> str:
    """12345 -> "12,345"; None -> a dash."""
    if value is None:
        return NONE
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def compact(value: float | None) -> str:
    """A short number for chart axes and rates: 950, 1.2k, 3.4M, 0.25."""
    if value is None:
        return NONE
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        return f"{value / 1_000_000:.1f}M".replace(".0M", "M")
    if magnitude >= 10_000:
        return f"{value / 1000:.0f}k"
    if magnitude >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    if magnitude >= 100 or value == int(value):
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if magnitude >= 0.01 else "0"


def seconds(value: float | None) -> str:
    """A duration: "850 µs", "12 ms", "1.24 s", "3m 05s", "2h 01m"."""
    if value is None:
        return NONE
    if value < 0.001:
        return f"{value * 1_000_000:.0f} µs"
    if value < 1:
        return f"{value * 1000:.0f} ms" if value >= 0.01 else f"{value * 1000:.1f} ms"
    if value < 60:
        return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24:02d}h"


def ago(value: float | None) -> str:
    """Seconds elapsed, as "0.4 s ago", "12 s ago", "3m 05s ago"."""
    if value is None:
        return "never"
    if value < 10:
        return f"{value:.1f} s ago"
    if value < 60:
        return f"{value:.0f} s ago"
    return f"{seconds(value)} ago"


def clock(value: float | None) -> str:
    """A time of day in the dashboard's time zone, "14:03:22"."""
    if value is None:
        return NONE
    return datetime.datetime.fromtimestamp(value).strftime("%H:%M:%S")


def iso(value: float | None) -> str:
    """A full timestamp with its offset, for tooltips and ``<time datetime>``."""
    if value is None:
        return ""
    return datetime.datetime.fromtimestamp(value).astimezone().isoformat(timespec="milliseconds")


def stamp(value: float | None) -> str:
    """A date and time to the millisecond in the dashboard's time zone."""
    if value is None:
        return NONE
    moment = datetime.datetime.fromtimestamp(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def span(value: float) -> str:
    """A chart's time span, for its axis: "60 s", "2.5 min", "10 min"."""
    if value < 120:
        return f"{value:.0f} s"
    minutes = value / 60
    return f"{minutes:.0f} min" if minutes == int(minutes) or minutes >= 5 else f"{minutes:.1f} min"


def percent(value: float | None) -> str:
    """0.1234 -> "12.3 %"."""
    if value is None:
        return NONE
    return f"{100 * value:.1f} %"


def size(value: float | None) -> str:
    """4194304 -> "4.0 MiB"."""
    if value is None:
        return NONE
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


FILTERS: Final[dict[str, Callable[..., Any]]] = {
    "num": num,
    "compact": compact,
    "secs": seconds,
    "ago": ago,
    "clock": clock,
    "iso": iso,
    "stamp": stamp,
    "span": span,
    "percent": percent,
    "size": size,
}
