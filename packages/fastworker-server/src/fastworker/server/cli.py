"""The ``fastworker`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastworker.protocol import PROTOCOL_VERSION

from ._version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastworker`` command."""
    parser = argparse.ArgumentParser(
        prog="fastworker",
        description="fastworker: a brokerless task queue. Runs control planes and subworkers.",
    )
    major, minor = PROTOCOL_VERSION
    parser.add_argument(
        "--version",
        action="version",
        version=f"fastworker-server {__version__} (protocol {major}.{minor})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
