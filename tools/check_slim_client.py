"""Check that fastworker-client installs and imports without the heavy packages.

Run inside an environment where only fastworker-client and its dependencies were
installed. Exits non-zero, naming the culprit, if anything heavy is importable or got
imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

FORBIDDEN = (
    "fastapi",
    "uvicorn",
    "jinja2",
    "starlette",
    "prometheus_client",
    "opentelemetry",
    "fastworker.server",
    "fastworker.dashboard",
)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def main() -> int:
    """Import the client, then look for what must not be there."""
    importlib.import_module("fastworker.client")
    importlib.import_module("fastworker.protocol")
    problems = [f"{name} is installed" for name in FORBIDDEN if _installed(name)]
    problems += [f"{name} was imported" for name in FORBIDDEN if name in sys.modules]
    for problem in problems:
        print(f"slim client check failed: {problem}", file=sys.stderr)
    if not problems:
        print("fastworker.client imports alone: none of " + ", ".join(FORBIDDEN) + " present")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
