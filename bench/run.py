"""Run the fastworker benchmark suite: ``python bench/run.py [--quick] [--json out.json]
[--only W1,W2,...]``. Starts real processes on loopback, prints one table; see suite.py."""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    # Run as a script, this directory is on sys.path but the repository root is not: the
    # suite's modules import each other as ``bench.<module>``.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.suite import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
