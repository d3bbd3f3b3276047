"""fastworker.server: the control plane, the subworker, their supervision and the
``fastworker`` command line."""

from __future__ import annotations

from ._version import FEATURES, __version__

__all__ = ["FEATURES", "__version__"]
