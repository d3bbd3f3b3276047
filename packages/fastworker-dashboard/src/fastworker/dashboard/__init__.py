"""fastworker.dashboard: a live htmx view of a control plane's queues, subworkers and
task history. It reads the control plane only through the client's admin calls."""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
