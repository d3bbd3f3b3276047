"""The control plane's periodic tasks seen from the dashboard: the context of the
schedules card, whose ``list`` is also what ``/api/schedules`` answers.

No HTTP here: a control plane that does not answer is the routes' to report
(:class:`~fastworker.protocol.TransportError` passes through).
"""

from __future__ import annotations

from typing import Any, Final

from fastworker.protocol import UnsupportedFeatureError

from ._source import DashboardSource
from ._views import schedules_view

__all__ = ["UNSUPPORTED", "card", "listing"]

UNSUPPORTED: Final = (
    "periodic tasks are not available from this control plane; it runs an older release"
)


def card(
    view: dict[str, Any] | None,
    *,
    unsupported: bool = False,
    unreachable: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the card renders: the schedules' view (None when there is none to show), or
    why not."""
    return {"list": view, "unsupported": unsupported, "unreachable": unreachable}


async def listing(source: DashboardSource) -> dict[str, Any]:
    """Every schedule as :func:`card` context; an older control plane's is
    ``unsupported``."""
    try:
        schedules = await source.schedules()
    except UnsupportedFeatureError:
        return card(None, unsupported=True)
    return card(schedules_view(schedules))
