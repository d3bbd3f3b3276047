"""What the dashboard needs of a client: the admin calls it reads and acts through.

:class:`fastworker.client.Client` is the source in production; declaring the calls as a
protocol lets the type checker hold the client, and any stand-in, to the same signatures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from fastworker.client import Client, TaskCall
from fastworker.protocol import TaskPriority, TaskStatus
from fastworker.protocol import messages as m

__all__ = ["DashboardSource"]


class DashboardSource(Protocol):
    """The client calls the dashboard uses; :class:`~fastworker.client.Client` has them."""

    @property
    def address(self) -> str:
        """The control plane's address, shown on the page."""
        ...

    async def overview(self) -> m.Overview: ...

    async def history(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        status: TaskStatus | None = None,
        priority: TaskPriority | str | None = None,
        name: str | None = None,
    ) -> m.HistoryReply: ...

    async def status(self, task_id: str, *, include_payloads: bool = False) -> m.TaskInfo: ...

    async def cancel(self, *task_ids: str) -> m.CancelReply: ...

    async def delay_many(self, calls: Iterable[TaskCall]) -> list[str]: ...

    async def dead_letters(self, *, offset: int = 0, limit: int = 50) -> m.DeadLettersReply: ...

    async def retry_dead(self, *task_ids: str, all: bool = False) -> dict[str, str]: ...

    async def purge_dead(self, *task_ids: str, all: bool = False) -> int: ...

    async def schedules(self) -> list[m.ScheduleInfo]: ...

    async def metrics(self) -> m.MetricsReply: ...


_CLIENT_IS_A_SOURCE: type[DashboardSource] = Client
"""Makes the type checker prove that Client has every call, with these signatures."""
