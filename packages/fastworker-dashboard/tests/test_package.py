"""The dashboard package installs with its web stack and never needs the server."""

from __future__ import annotations

import importlib.util

import fastworker.dashboard


def test_version_is_exposed() -> None:
    assert fastworker.dashboard.__version__.count(".") == 2


def test_the_server_is_not_a_dependency() -> None:
    # The dashboard reads a control plane through the client only.
    assert importlib.util.find_spec("fastworker.server") is None
    assert importlib.util.find_spec("fastworker.client") is not None
