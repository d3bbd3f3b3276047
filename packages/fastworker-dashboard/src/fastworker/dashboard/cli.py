"""``fastworker-dashboard``: the dashboard as its own process.

Every flag has an environment variable: ``FASTWORKER_CONTROL_PLANE``,
``FASTWORKER_DASHBOARD_HOST``, ``FASTWORKER_DASHBOARD_PORT``,
``FASTWORKER_DASHBOARD_TOKEN`` (prefer it to ``--access-token``, which other users of the
host can see in the process list). Exit codes: 0 stopped by a signal, 1 the address could
not be bound, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from fastworker.client import TLSOptions
from fastworker.client._secrets import read_secret
from fastworker.protocol import (
    DEFAULT_CONTROL_PLANE_ADDRESS,
    DEFAULT_DASHBOARD_HOST,
    DEFAULT_DASHBOARD_PORT,
    ENV_PREFIX,
    ConfigurationError,
)

from ._version import __version__
from .server import _serve  # pyright: ignore[reportPrivateUsage]

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_CANNOT_BIND = 1
EXIT_USAGE = 2


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fastworker-dashboard``."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="fastworker-dashboard",
        description="Serve the fastworker dashboard of one control plane.",
    )
    parser.add_argument(
        "--version", action="version", version=f"fastworker-dashboard {__version__}"
    )
    parser.add_argument(
        "--control-plane",
        default=env.get(f"{ENV_PREFIX}CONTROL_PLANE"),
        metavar="ADDRESS",
        help="the control plane to show ($FASTWORKER_CONTROL_PLANE; default: "
        f"$FASTWORKER_ADDRESS, then {DEFAULT_CONTROL_PLANE_ADDRESS})",
    )
    parser.add_argument(
        "--host",
        default=env.get(f"{ENV_PREFIX}DASHBOARD_HOST", DEFAULT_DASHBOARD_HOST),
        help="address to listen on ($FASTWORKER_DASHBOARD_HOST; default: %(default)s, "
        "loopback only; any other needs an access token)",
    )
    try:
        default_port = _port(env.get(f"{ENV_PREFIX}DASHBOARD_PORT", str(DEFAULT_DASHBOARD_PORT)))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{ENV_PREFIX}DASHBOARD_PORT: {exc}")
    parser.add_argument(
        "--port",
        type=_port,
        default=default_port,
        help="port to listen on, 0 for any free one ($FASTWORKER_DASHBOARD_PORT; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--access-token",
        default=env.get(f"{ENV_PREFIX}DASHBOARD_TOKEN") or None,
        metavar="TOKEN",
        help="ask every visitor for this token ($FASTWORKER_DASHBOARD_TOKEN, preferred)",
    )
    parser.add_argument(
        "--auth-token",
        default=env.get(f"{ENV_PREFIX}AUTH_TOKEN") or None,
        metavar="SECRET",
        help="the control plane's shared secret, when it has one ($FASTWORKER_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--auth-token-file",
        default=env.get(f"{ENV_PREFIX}AUTH_TOKEN_FILE") or None,
        metavar="PATH",
        help="read --auth-token from the first line of this file ($FASTWORKER_AUTH_TOKEN_FILE)",
    )
    parser.add_argument(
        "--access-token-file",
        default=env.get(f"{ENV_PREFIX}DASHBOARD_TOKEN_FILE") or None,
        metavar="PATH",
        help="read --access-token from the first line of this file "
        "($FASTWORKER_DASHBOARD_TOKEN_FILE)",
    )
    for flag, help_text in (
        ("ca", "for a tls+tcp:// control plane: the certificate authority (PEM) to trust"),
        ("cert", "this side's certificate (PEM), for mutual TLS"),
        ("key", "the key of --tls-cert (PEM)"),
        ("server-name", "the name the control plane's certificate must carry"),
    ):
        variable = f"{ENV_PREFIX}TLS_{flag.replace('-', '_').upper()}"
        parser.add_argument(
            f"--tls-{flag}", default=env.get(variable) or None, help=f"{help_text} (${variable})"
        )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default: %(default)s)",
    )
    return parser


async def _run(options: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await _serve(
            options.control_plane,
            options.host,
            options.port,
            access_token=options.access_token,
            auth_token=options.auth_token,
            tls=_tls(options),
            announce=lambda message: print(
                f"{message}\ncontrol plane: {options.control_plane or 'default address'}",
                flush=True,
            ),
        )


def _tls(options: argparse.Namespace) -> TLSOptions | None:
    return TLSOptions.from_flags(
        options.tls_ca, options.tls_cert, options.tls_key, options.tls_server_name
    )


def _read_secret(parser: argparse.ArgumentParser, options: argparse.Namespace, name: str) -> None:
    path = getattr(options, f"{name}_file")
    if path is None:
        return
    flag = "--" + name.replace("_", "-")
    if getattr(options, name) is not None:
        parser.error(f"give {flag} or {flag}-file, not both")
    try:
        setattr(options, name, read_secret(f"{flag}-file", path))
    except ConfigurationError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    options = parser.parse_args(argv)
    for name in ("auth_token", "access_token"):
        _read_secret(parser, options, name)
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(_run(options))
    except ConfigurationError as exc:
        print(f"fastworker-dashboard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"fastworker-dashboard: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_BIND
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
