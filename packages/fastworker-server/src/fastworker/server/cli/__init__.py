"""The ``fastworker`` command line.

Each setting is declared once (:mod:`.settings`) and read from the first of: its flag,
its variable ``FASTWORKER_<NAME>``, the configuration file, its default. The exit codes
are :class:`fastworker.client.config.ExitCode`, the same for every fastworker command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fastworker.client.config import Command, ExitCode, setting_names
from fastworker.client.hooks import install_tracing
from fastworker.client.logs import configure_logging, report_failure
from fastworker.protocol import (
    PROTOCOL_VERSION,
    ConfigurationError,
    FastworkerError,
    RejectedError,
    TransportError,
)

from .._version import __version__
from .commands import CLIENT_COMMANDS, Subcommand
from .services import run_control_plane, run_subworker
from .settings import CLIENT, CONTROL_PLANE, SERVER_COMMANDS, SUBWORKER

__all__ = ["build_parser", "command_flags", "main", "parse_command_line"]

log = logging.getLogger("fastworker")

_SUBCOMMANDS: tuple[tuple[Subcommand, Command], ...] = (
    (Subcommand("control-plane", "run a control plane", run_control_plane), CONTROL_PLANE),
    (
        Subcommand(
            "subworker", "run a subworker that takes tasks from a control plane", run_subworker
        ),
        SUBWORKER,
    ),
    *((command, CLIENT) for command in CLIENT_COMMANDS),
)
_BY_NAME = {command.name: (command, settings) for command, settings in _SUBCOMMANDS}
_SHARED_KEYS = setting_names(SERVER_COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastworker`` command."""
    parser = argparse.ArgumentParser(
        prog="fastworker",
        allow_abbrev=False,
        description="fastworker: a brokerless task queue. Runs control planes and subworkers "
        "and talks to them. Every setting can also be given as FASTWORKER_<NAME> in the "
        "environment or in fastworker.toml.",
    )
    major, minor = PROTOCOL_VERSION
    parser.add_argument(
        "--version",
        action="version",
        version=f"fastworker-server {__version__} (protocol {major}.{minor})",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, settings in _SUBCOMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, allow_abbrev=False)
        command.add_options(sub)
        settings.add_arguments(sub)
    return parser


def parse_command_line(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> argparse.Namespace:
    """The command and every option of ``argv``, each setting resolved from its flag,
    the environment, the configuration file or its default. Exits 2 on a usage error."""
    parser = build_parser()
    given = parser.parse_args(argv)
    _command, settings = _BY_NAME[given.command]
    try:
        values = settings.resolve(given, environ, cwd, shared=_SHARED_KEYS)
    except ConfigurationError as exc:
        parser.exit(ExitCode.USAGE, f"fastworker {given.command}: error: {exc}\n")
    options = vars(given)
    options.pop("config", None)
    return argparse.Namespace(**{**options, **values})


def command_flags() -> list[tuple[str, str]]:
    """Every (command, flag) pair of the command line, for references and completion."""
    parser = build_parser()
    flags: list[tuple[str, str]] = []
    for action in parser._actions:  # pyright: ignore[reportPrivateUsage]
        if isinstance(action, argparse._SubParsersAction):  # pyright: ignore[reportPrivateUsage]
            for name, sub in action.choices.items():  # pyright: ignore[reportUnknownVariableType,reportUnknownMemberType]
                for option in sub._actions:  # pyright: ignore[reportPrivateUsage,reportUnknownMemberType,reportUnknownVariableType]
                    flags += [
                        (name, flag)  # pyright: ignore[reportUnknownArgumentType]
                        for flag in option.option_strings  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
                        if flag not in ("-h", "--help")
                    ]
    return flags


_EXIT_CODES: tuple[tuple[type[Exception], ExitCode, str], ...] = (
    # First match wins: the more specific errors come before FastworkerError.
    (ConfigurationError, ExitCode.USAGE, ""),
    (json.JSONDecodeError, ExitCode.USAGE, "invalid JSON: "),
    (TransportError, ExitCode.UNREACHABLE, ""),
    (RejectedError, ExitCode.REFUSED, "refused: "),
    (FastworkerError, ExitCode.TASK_FAILED, ""),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    options = parse_command_line(argv)
    configure_logging(options.log_level, options.log_format)
    command, _settings = _BY_NAME[options.command]
    try:
        install_tracing(options.tracing)
        if getattr(options, "reload", False):
            from .reload import run_with_reload

            return run_with_reload(argv, Path.cwd())
        return asyncio.run(command.run(options))
    except (FastworkerError, json.JSONDecodeError) as exc:
        code, prefix = next(
            (code, prefix) for kind, code, prefix in _EXIT_CODES if isinstance(exc, kind)
        )
        report_failure(log, options.log_format, f"fastworker: {prefix}{exc}")
        return code


if __name__ == "__main__":
    sys.exit(main())
