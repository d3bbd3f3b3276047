"""``--reload``: run the command in a child process and start it again when a Python
file under the working directory changes, for the edit-run loop of development.

watchfiles does the watching and the restarting (as it does for uvicorn): the child gets
SIGINT, which drains it as SIGTERM would, then SIGKILL if it is still there after
:data:`STOP_TIMEOUT` seconds. SIGTERM or SIGINT to this process stops the child and ends.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastworker.client.config import ExitCode
from fastworker.protocol import ConfigurationError

from .settings import RELOAD

__all__ = ["STOP_TIMEOUT", "child_command", "run_with_reload"]

RELOAD_FLAG = RELOAD.flags[0]
STOP_TIMEOUT = 10
"""Seconds a child gets to drain before it is killed: more than the default drain."""

log = logging.getLogger("fastworker.reload")


def child_command(argv: Sequence[str]) -> list[str]:
    """The command line of the child: this one without ``--reload``."""
    return [sys.executable, "-m", "fastworker.server.cli", *(a for a in argv if a != RELOAD_FLAG)]


def run_with_reload(argv: Sequence[str], watched: Path) -> int:
    """Run ``argv`` (without ``--reload``) until stopped, restarting it on changes."""
    try:
        import watchfiles
    except ImportError:
        raise ConfigurationError(
            "--reload needs watchfiles: pip install 'fastworker-server[reload]'"
        ) from None

    def changed(changes: set[tuple[Any, str]]) -> None:
        names = sorted({Path(path).name for _change, path in changes})
        log.info("restarting: %s changed", ", ".join(names[:5]) + (" ..." if names[5:] else ""))

    command = child_command(argv)
    os.environ[RELOAD.env] = "false"  # for a --reload that came from the environment or file
    log.info("watching %s for changes to Python files", watched)
    watchfiles.run_process(
        watched,
        target=shlex.join(command),
        target_type="command",
        callback=changed,
        watch_filter=watchfiles.PythonFilter(),
        sigint_timeout=STOP_TIMEOUT,
    )
    return ExitCode.OK
