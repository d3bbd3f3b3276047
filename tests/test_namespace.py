"""The four distributions installed together form one ``fastworker`` namespace."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import fastworker

MODULES = ("fastworker.protocol", "fastworker.client", "fastworker.server", "fastworker.dashboard")


def test_no_distribution_ships_the_namespace_init() -> None:
    assert getattr(fastworker, "__file__", None) is None
    for portion in fastworker.__path__:
        assert not (Path(portion) / "__init__.py").exists()


@pytest.mark.parametrize("module", MODULES)
def test_every_package_imports_and_is_typed(module: str) -> None:
    imported = importlib.import_module(module)
    assert imported.__file__ is not None
    assert (Path(imported.__file__).parent / "py.typed").is_file()
    assert isinstance(imported.__version__, str)


def test_all_packages_share_one_error_tree() -> None:
    from fastworker.client import FastworkerError as ClientRoot
    from fastworker.protocol import FastworkerError as ProtocolRoot

    assert ClientRoot is ProtocolRoot
