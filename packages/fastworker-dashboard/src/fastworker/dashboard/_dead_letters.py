"""The dead-letter list seen from the dashboard: a page of it for the card, and what a
retry or a purge did, as an outcome the page shows in a toast and the JSON answer returns.

No HTTP here: the dashboard's routes read the query, guard the POSTs and turn an outcome
into a response; a control plane that does not answer is theirs to report
(:class:`~fastworker.protocol.TransportError` passes through).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from fastworker.protocol import RejectedError, UnsupportedFeatureError

from ._source import DashboardSource
from ._views import dead_letters_view, short_id

__all__ = ["PAGE_SIZE", "UNSUPPORTED", "Outcome", "card", "page", "purge", "retry"]

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


@dataclass(frozen=True)
class Outcome:
    """What an action did: the JSON answer's status and fields, and the toast's kind."""

    status: int
    kind: str
    """The toast's: ``ok``, ``warn`` or ``error``."""
    message: str
    answer: dict[str, Any]
    new_task_id: str | None = None
    """The task a single retry made, for a link to it."""


def _dead_letters(count: int) -> str:
    return f"{count:,} dead letter{'' if count == 1 else 's'}"


def _not_in_list(task_id: str) -> Outcome:
    return Outcome(
        404,
        "error",
        f"The dead-letter list holds no task {short_id(task_id)}: it was retried or purged "
        "already, or it never failed for good.",
        {"outcome": "not_found", "error": "task_not_found", "task_id": task_id},
    )


def _unsupported() -> Outcome:
    return Outcome(
        501,
        "error",
        UNSUPPORTED[0].upper() + UNSUPPORTED[1:] + ".",
        {"outcome": "unsupported", "error": "unsupported_feature"},
    )


async def retry(source: DashboardSource, task_id: str | None) -> Outcome:
    """Submit one dead letter again as a new task (``task_id`` None: every one)."""
    try:
        if task_id is None:
            retried = await source.retry_dead(all=True)
        else:
            retried = await source.retry_dead(task_id)
    except UnsupportedFeatureError:
        return _unsupported()
    except RejectedError as exc:  # an unknown task name, a full queue: nothing submitted
        return Outcome(
            409, "error", f"retry refused: {exc}", {"outcome": "refused", "error": exc.remote_code}
        )
    if task_id is None:
        if not retried:
            return Outcome(
                200,
                "warn",
                "The dead-letter list is empty: nothing to retry.",
                {"outcome": "nothing", "retried": {}},
            )
        return Outcome(
            200,
            "ok",
            f"Resubmitted {_dead_letters(len(retried))}.",
            {"outcome": "retried", "retried": retried},
        )
    new_id = retried.get(task_id)
    if new_id is None:
        return _not_in_list(task_id)
    return Outcome(
        200,
        "ok",
        f"Resubmitted dead letter {short_id(task_id)} as {short_id(new_id)}.",
        {"outcome": "retried", "task_id": task_id, "new_task_id": new_id},
        new_task_id=new_id,
    )


async def purge(source: DashboardSource, task_id: str | None) -> Outcome:
    """Drop one dead letter for good (``task_id`` None: every one)."""
    try:
        if task_id is None:
            purged = await source.purge_dead(all=True)
        else:
            purged = await source.purge_dead(task_id)
    except UnsupportedFeatureError:
        return _unsupported()
    except RejectedError as exc:
        return Outcome(
            409, "error", f"purge refused: {exc}", {"outcome": "refused", "error": exc.remote_code}
        )
    if task_id is None:
        if not purged:
            return Outcome(
                200,
                "warn",
                "The dead-letter list is empty: nothing to purge.",
                {"outcome": "nothing", "purged": 0},
            )
        return Outcome(
            200, "ok", f"Purged {_dead_letters(purged)}.", {"outcome": "purged", "purged": purged}
        )
    if not purged:
        return _not_in_list(task_id)
    return Outcome(
        200,
        "ok",
        f"Purged dead letter {short_id(task_id)}.",
        {"outcome": "purged", "task_id": task_id, "purged": purged},
    )
