"""The dead-letter list seen from the dashboard: a page of it for the card.

No HTTP here: the dashboard's routes read the query and build the response; a control
plane that does not answer is theirs to report (:class:`~fastworker.protocol.TransportError`
passes through).
"""

from __future__ import annotations

from typing import Any, Final

from fastworker.protocol import UnsupportedFeatureError

from ._source import DashboardSource
from ._views import dead_letters_view

__all__ = ["PAGE_SIZE", "UNSUPPORTED", "card", "page"]

PAGE_SIZE: Final = 25
"""Dead letters per page of the card."""
UNSUPPORTED: Final = "this control plane keeps no dead-letter list; it runs an older release"


def card(
    view: dict[str, Any] | None,
    offset: int,
    limit: int,
    *,
    unsupported: bool = False,
    unreachable: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the card renders: the page's view (None when there is none to show), why
    not, and where the pager goes."""
    tasks: list[Any] = [] if view is None else view["tasks"]
    total: int = 0 if view is None else view["total"]
    return {
        "list": view,
        "offset": offset,
        "limit": limit,
        "unsupported": unsupported,
        "unreachable": unreachable,
        "first": offset + 1 if tasks else 0,
        "last": offset + len(tasks),
        "previous": max(offset - limit, 0) if offset > 0 else None,
        "next": offset + limit if offset + limit < total else None,
    }


async def page(source: DashboardSource, offset: int, limit: int) -> dict[str, Any]:
    """A page of the list as :func:`card` context; an older control plane's is
    ``unsupported``."""
    try:
        reply = await source.dead_letters(offset=offset, limit=limit)
    except UnsupportedFeatureError:
        return card(None, offset, limit, unsupported=True)
    return card(dead_letters_view(reply, offset, limit), offset, limit)
