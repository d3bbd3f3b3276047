"""The client package: light, typed, and re-exporting what callers catch."""

from __future__ import annotations

import subprocess
import sys

import fastworker.client
import fastworker.protocol


def test_priorities_and_errors_are_the_protocol_ones() -> None:
    # One error tree: catching fastworker.client.TaskFailedError catches what the
    # protocol rebuilds from the wire.
    assert fastworker.client.TaskPriority is fastworker.protocol.TaskPriority
    assert fastworker.client.TaskFailedError is fastworker.protocol.TaskFailedError
    assert fastworker.client.FastworkerError is fastworker.protocol.FastworkerError


def test_every_exported_name_exists() -> None:
    for name in fastworker.client.__all__:
        assert hasattr(fastworker.client, name), name


def test_importing_the_client_pulls_in_no_web_framework_or_server() -> None:
    code = (
        "import sys, fastworker.client\n"
        "heavy = ('fastapi', 'uvicorn', 'jinja2', 'starlette',\n"
        "         'fastworker.server', 'fastworker.dashboard')\n"
        "print(','.join(sorted(n for n in heavy if n in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
