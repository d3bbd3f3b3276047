"""The ``fastworker`` command installs as a console script and answers."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from fastworker.protocol import PROTOCOL_VERSION
from fastworker.server import __version__
from fastworker.server.cli import main


def test_version_names_package_and_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert (
        capsys.readouterr().out.strip()
        == f"fastworker-server {__version__} (protocol {PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]})"
    )


def test_the_console_script_is_installed_and_runs() -> None:
    executable = shutil.which(
        "fastworker", path=str(__import__("pathlib").Path(sys.executable).parent)
    )
    assert executable is not None
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "usage: fastworker" in result.stdout


def test_an_unknown_flag_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--no-such-flag"])
    assert exit_info.value.code == 2
