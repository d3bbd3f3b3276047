"""fastworker.server: the control plane, the subworker, their supervision and the
``fastworker`` command line."""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
