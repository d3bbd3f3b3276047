"""``python -m fastworker.dashboard``: the same as the ``fastworker-dashboard`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
