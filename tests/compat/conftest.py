"""Fixtures and the ``needs`` marker of the cross-version tests (see compat_roles)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from compat_roles import ROLES, Side, side


@pytest.fixture
def sides() -> dict[str, Side]:
    return {role: side(role) for role in ROLES}


def pytest_report_header() -> list[str]:
    return [f"cross-version roles: {', '.join(str(side(role)) for role in ROLES)}"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        for role, feature in marker.kwargs.items():
            if role not in ROLES:
                raise pytest.UsageError(f"needs(): unknown role {role!r}")
            found = side(role)
            if feature not in found.features:
                pytest.skip(f"the {found} does not declare {feature!r}")
