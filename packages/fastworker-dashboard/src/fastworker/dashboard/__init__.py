"""fastworker.dashboard: a live htmx view of a control plane's queues, subworkers and
task history. It reads the control plane only through the client's admin calls.

- :func:`create_router`: mount the dashboard in your own FastAPI app, under any prefix;
  it takes a :class:`~fastworker.client.Client` (or anything with the calls of
  :class:`DashboardSource`).
- :func:`create_app`: a standalone app that owns its client.
- :func:`serve`: run it with uvicorn inside an already running event loop.
- ``fastworker-dashboard`` (or ``python -m fastworker.dashboard``): its own process.
"""

from __future__ import annotations

from ._htmx import HTMX_VERSION
from ._source import DashboardSource
from ._version import FEATURES, __version__
from .app import create_app, create_router
from .server import serve

__all__ = [
    "FEATURES",
    "HTMX_VERSION",
    "DashboardSource",
    "__version__",
    "create_app",
    "create_router",
    "serve",
]
