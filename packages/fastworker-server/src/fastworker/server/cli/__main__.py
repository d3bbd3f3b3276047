"""``python -m fastworker.server.cli``: the ``fastworker`` command."""

import sys

from . import main

sys.exit(main())
