"""The vendored htmx: which release ships in ``static/`` and where it came from.

Taken from the npm package ``htmx.org`` (``npm pack htmx.org@2``, file
``package/dist/htmx.min.js``), unchanged; its licence (0BSD) is ``static/htmx-LICENSE.txt``.
To update: replace the file, rename it after the new version and update the three
constants below (the package tests check them against the file).
"""

from __future__ import annotations

from typing import Final

__all__ = ["HTMX_FILE", "HTMX_SHA256", "HTMX_VERSION"]

HTMX_VERSION: Final = "2.0.11"
HTMX_FILE: Final = f"htmx-{HTMX_VERSION}.min.js"
HTMX_SHA256: Final = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
