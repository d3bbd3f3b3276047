"""``fastworker-dashboard``: the dashboard as its own process.

Its settings are declared in :data:`DASHBOARD`, with the names the control plane's own
dashboard settings have: ``FASTWORKER_ADDRESS``, ``FASTWORKER_DASHBOARD_HOST``,
``FASTWORKER_DASHBOARD_PORT``, ``FASTWORKER_DASHBOARD_TOKEN`` (prefer it, or
``--access-token-file``, to ``--access-token``, which other users of the host can see in
the process list), and the ``[dashboard]`` table of the configuration file. Exit codes
are :class:`fastworker.client.config.ExitCode`: 0 stopped by a signal, 2 usage or
configuration error, or an address that cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fastworker.client import TLSOptions
from fastworker.client.config import (
    ADDRESS,
    AUTH_TOKEN,
    DASHBOARD_HOST,
    DASHBOARD_PORT,
    DASHBOARD_TOKEN,
    LOG_FORMAT,
    LOG_LEVEL,
    TLS_PEER_SETTINGS,
    Command,
    ExitCode,
    setting_names,
)
from fastworker.client.logs import configure_logging, report_failure
from fastworker.protocol import ENV_PREFIX, ConfigurationError

from ._version import __version__
from .server import _serve  # pyright: ignore[reportPrivateUsage]

__all__ = ["DASHBOARD", "build_parser", "main", "parse_command_line"]

log = logging.getLogger("fastworker.dashboard")

DASHBOARD = Command(
    "dashboard",
    (
        ADDRESS.with_help("the control plane to show", aliases=("--control-plane",)),
        DASHBOARD_HOST.with_help(
            "where to listen; beyond loopback it needs an access token", flag="--host"
        ),
        DASHBOARD_PORT.with_help("the port to listen on; 0 picks a free one", flag="--port"),
        DASHBOARD_TOKEN.with_help(
            "the token every visitor must present; required off loopback",
            flag="--access-token",
        ),
        AUTH_TOKEN.with_help("the control plane's shared secret, or its `--client-token`"),
        *TLS_PEER_SETTINGS,
        LOG_LEVEL,
        LOG_FORMAT,
    ),
)

_OLD_ADDRESS_VARIABLE = f"{ENV_PREFIX}CONTROL_PLANE"
"""The variable 0.1 read for the control plane's address, still read when
``FASTWORKER_ADDRESS`` is not set."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fastworker-dashboard``."""
    parser = argparse.ArgumentParser(
        prog="fastworker-dashboard",
        description="Serve the fastworker dashboard of one control plane.",
    )
    parser.add_argument(
        "--version", action="version", version=f"fastworker-dashboard {__version__}"
    )
    DASHBOARD.add_arguments(parser)
    return parser


def parse_command_line(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> argparse.Namespace:
    """Every setting of ``argv``, resolved from its flag, the environment, the
    configuration file or its default. Exits 2 on a usage error."""
    environ = dict(os.environ if environ is None else environ)
    if _uses_old_address_variable(environ):
        environ[ADDRESS.env] = environ[_OLD_ADDRESS_VARIABLE]
    parser = build_parser()
    given = parser.parse_args(argv)
    try:
        values = DASHBOARD.resolve(given, environ, cwd, shared=_shared_keys())
    except ConfigurationError as exc:
        parser.exit(ExitCode.USAGE, f"fastworker-dashboard: error: {exc}\n")
    return argparse.Namespace(**values)


def _uses_old_address_variable(environ: Mapping[str, str]) -> bool:
    return _OLD_ADDRESS_VARIABLE in environ and ADDRESS.env not in environ


def _shared_keys() -> frozenset[str]:
    """The keys a configuration file shared with the fastworker command may hold."""
    try:
        from fastworker.server.cli.settings import SERVER_COMMANDS
    except ImportError:  # the dashboard without the server package: its keys only
        return setting_names([DASHBOARD])
    return setting_names([DASHBOARD, *SERVER_COMMANDS])


async def _run(options: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await _serve(
            options.address,
            options.dashboard_host,
            options.dashboard_port,
            access_token=options.dashboard_token,
            auth_token=options.auth_token,
            tls=TLSOptions.from_flags(
                options.tls_ca, options.tls_cert, options.tls_key, options.tls_server_name
            ),
            announce=lambda message: print(
                f"{message}\ncontrol plane: {options.address}", flush=True
            ),
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    options = parse_command_line(argv)
    configure_logging(options.log_level, options.log_format)
    if _uses_old_address_variable(os.environ):  # said once logging is set up
        log.warning("%s is deprecated: set %s", _OLD_ADDRESS_VARIABLE, ADDRESS.env)
    try:
        asyncio.run(_run(options))
    except ConfigurationError as exc:
        report_failure(log, options.log_format, f"fastworker-dashboard: {exc}")
        return ExitCode.USAGE
    except OSError as exc:
        report_failure(log, options.log_format, f"fastworker-dashboard: {exc.strerror or exc}")
        return ExitCode.USAGE
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
