"""This release's version, and the features it declares to other releases: the
cross-version tests skip what a side lacks by these names (docs/compatibility.md)."""

from __future__ import annotations

__version__ = "0.1.1.dev0"
FEATURES: frozenset[str] = frozenset(
    {
        "dead-letters",
        "delay",
        "drain",
        "journal",
        "leases",
        "metrics",
        "retries",
        "schedules",
    }
)
