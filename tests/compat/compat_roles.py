"""Which release of fastworker runs each role of the cross-version tests.

``nox -s compat`` builds environments of earlier releases and names their interpreters in
``FASTWORKER_COMPAT_<ROLE>_PYTHON`` (roles: CLIENT, CONTROL_PLANE, SUBWORKER, DASHBOARD);
a role without one runs from this environment. So ``pytest tests/compat`` alone checks
today's packages against themselves, and each combination of ``nox -s compat`` checks a
mix. A test marked ``@pytest.mark.needs(control_plane="journal")`` is skipped when the
release in that role does not declare the feature (its package's ``FEATURES``).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass

ROLES = ("client", "control_plane", "subworker", "dashboard")
PACKAGE_OF_ROLE = {
    "client": "client",
    "control_plane": "server",
    "subworker": "server",
    "dashboard": "dashboard",
}
OTHER_MAJOR_VARIABLE = "FASTWORKER_COMPAT_OTHER_MAJOR_PYTHON"
_DESCRIBE = """
import importlib, json
from fastworker.protocol import PROTOCOL_VERSION
package = importlib.import_module("fastworker." + {package!r})
print(json.dumps({{
    "version": package.__version__,
    "features": sorted(getattr(package, "FEATURES", ())),
    "protocol": "%d.%d" % tuple(PROTOCOL_VERSION),
}}))
"""


@dataclass(frozen=True)
class Side:
    """The release that plays one role: its interpreter, version and declared features."""

    role: str
    python: str
    version: str
    features: frozenset[str]
    protocol: str

    def __str__(self) -> str:
        package = PACKAGE_OF_ROLE[self.role]
        return f"{self.role} (fastworker-{package} {self.version}, protocol {self.protocol})"


def role_python(role: str) -> str:
    return os.environ.get(f"FASTWORKER_COMPAT_{role.upper()}_PYTHON") or sys.executable


def side(role: str) -> Side:
    """The release that plays ``role`` in this run."""
    return describe(role, role_python(role))


@functools.cache
def describe(role: str, python: str) -> Side:
    """Ask ``python``'s environment which release of the role's package it holds."""
    code = _DESCRIBE.format(package=PACKAGE_OF_ROLE[role])
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    described = json.loads(out)
    return Side(
        role=role,
        python=python,
        version=described["version"],
        features=frozenset(described["features"]),
        protocol=described["protocol"],
    )
