"""The protocol package is light: msgspec only, inside a PEP 420 namespace."""

from __future__ import annotations

import re
import subprocess
import sys

import fastworker
import fastworker.protocol


def test_fastworker_is_a_namespace_package() -> None:
    assert getattr(fastworker, "__file__", None) is None
    assert len(list(fastworker.__path__)) >= 1


def test_importing_the_protocol_pulls_in_nothing_heavy() -> None:
    # A fresh interpreter, so other tests' imports cannot hide what the protocol imports.
    code = (
        "import sys, fastworker.protocol\n"
        "heavy = ('pynng', 'fastapi', 'uvicorn', 'jinja2', 'asyncio')\n"
        "print(','.join(sorted(n for n in heavy if n in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def test_version_is_exposed() -> None:
    # A release (0.2.0) or the development version after one (0.2.1.dev0).
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", fastworker.protocol.__version__)
