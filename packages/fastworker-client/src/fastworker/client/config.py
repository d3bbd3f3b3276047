"""The settings of the fastworker commands, each declared once.

A :class:`Setting` names a value, says how text becomes that value, and gives its
default and its help. A :class:`Command` is the settings one command reads; from it come
the command's flags, its environment variables (``FASTWORKER_<NAME>``), the keys of its
configuration file and its rows in the configuration reference. Each value is taken from
the first of: the command line, the environment, the configuration file, the default.

The configuration file is ``--config PATH`` (``FASTWORKER_CONFIG``), else
``fastworker.toml`` in the working directory, else the ``[tool.fastworker]`` table of
its ``pyproject.toml``. Its top-level keys apply to every command that has the setting;
a table named after a command (``[subworker]``) applies to that command and wins.

This module is the contract between the client package and the commands of the server
and dashboard packages; it reads no file and no variable until asked.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from fastworker.protocol import (
    DEFAULT_CONTROL_PLANE_ADDRESS,
    DEFAULT_DASHBOARD_HOST,
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    ENV_PREFIX,
    ConfigurationError,
)

from ._secrets import read_secret
from .hooks import TRACING_MODES
from .logs import LOG_FORMATS

__all__ = [
    "ADDRESS",
    "AUTH_TOKEN",
    "CLIENT_SETTINGS",
    "CONFIG_FILE_NAME",
    "DASHBOARD_HOST",
    "DASHBOARD_PORT",
    "DASHBOARD_TOKEN",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "REQUEST_TIMEOUT",
    "TLS_PEER_SETTINGS",
    "TRACING",
    "Command",
    "ExitCode",
    "Setting",
    "non_negative_int",
    "port",
    "positive_float",
    "positive_int",
    "setting_names",
    "words",
]

CONFIG_FILE_NAME = "fastworker.toml"
_PYPROJECT_TABLE = ("tool", "fastworker")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ExitCode(enum.IntEnum):
    """What the exit status of every fastworker command means (``meaning`` says it)."""

    OK = 0
    TASK_FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    REFUSED = 4
    RECYCLE = 5

    @property
    def meaning(self) -> str:
        return _EXIT_MEANINGS[self]


_EXIT_MEANINGS = {
    ExitCode.OK: "success; for a server process, stopped by SIGTERM or SIGINT",
    ExitCode.TASK_FAILED: "the task failed (`submit --wait`), or another fastworker error",
    ExitCode.USAGE: "usage or configuration error: a bad flag, variable, file entry or "
    "value, a task module that does not import, an address that cannot be used",
    ExitCode.UNREACHABLE: "the control plane could not be reached: nothing listening, no "
    "answer within `--request-timeout`, a failed TLS handshake",
    ExitCode.REFUSED: "the control plane refused: unknown task, invalid arguments, full "
    "queue, wrong secret; `cancel` of a task that was not queued",
    ExitCode.RECYCLE: "a supervised subworker drained past `--max-tasks-per-child` or "
    "`--max-memory-per-child`: its supervisor starts it again at once",
}


# --- text to values ---------------------------------------------------------------------


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise ValueError(f"must be positive, got {text}")
    return value


def port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"a port is 0 to 65535, got {value}")
    return value


def words(text: str) -> list[str]:
    """Items separated by commas or white space."""
    return [item for item in text.replace(",", " ").split() if item]


def lines(text: str) -> list[str]:
    """One item per line, for items that hold spaces."""
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- declarations -----------------------------------------------------------------------


Kind = Literal["value", "switch", "list", "secret"]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its name is its attribute, its flag (``--name-with-dashes``), its
    variable (``FASTWORKER_NAME``) and its configuration file key.

    Kinds: ``value`` parses one text; ``switch`` is a boolean (a flag that turns it on,
    or ``--no-...`` when it is on by default); ``list`` repeats (each flag, variable or
    string is split by ``split``, each item parsed); ``secret`` is a value with a
    ``-file`` twin that reads it from a file, so it need not show in ``ps``.
    """

    name: str
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    kind: Kind = "value"
    shown_default: str = ""
    """The default as the reference shows it, when it is not the value itself."""
    flag: str = ""
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    split: Callable[[str], list[str]] = words

    def __post_init__(self) -> None:
        if self.kind == "switch" and self.default is None:
            object.__setattr__(self, "default", False)

    @property
    def flags(self) -> tuple[str, ...]:
        if self.flag:
            return (self.flag, *self.aliases)
        dashed = self.name.replace("_", "-")
        negated = self.kind == "switch" and self.default is True
        return (f"--no-{dashed}" if negated else f"--{dashed}", *self.aliases)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def file_flag(self) -> str:
        return f"{self.flags[0]}-file"

    def with_help(self, help: str, **changes: Any) -> Setting:
        """This setting as another command describes it."""
        return dataclasses.replace(self, help=help, **changes)

    def convert(self, text: str, where: str) -> Any:
        """The value of one text; ConfigurationError naming ``where`` if it is not one."""
        if self.kind == "switch":
            lowered = text.strip().lower()
            if lowered not in _TRUE + _FALSE:
                raise ConfigurationError(f"{where}: {text!r} is not a boolean")
            return lowered in _TRUE
        if self.kind == "list":
            return [self._one(item, where) for item in self.split(text)]
        return self._one(text, where)

    def _one(self, text: str, where: str) -> Any:
        if self.choices and text not in self.choices:
            raise ConfigurationError(f"{where}: {text!r} is not one of {', '.join(self.choices)}")
        try:
            return self.parse(text)
        except (ValueError, ConfigurationError) as exc:
            raise ConfigurationError(f"{where}: {text!r}: {exc}") from None

    def from_file(self, value: Any, where: str) -> Any:
        """The value of a configuration file entry, whose TOML type must fit."""
        if self.kind == "switch":
            if not isinstance(value, bool):
                raise ConfigurationError(f"{where}: expected true or false, got {value!r}")
            return value
        if self.kind == "list":
            if isinstance(value, str):
                return self.convert(value, where)
            items = cast("list[object]", value) if isinstance(value, list) else None
            if items is not None and all(isinstance(item, str) for item in items):
                return [self._one(str(item), where) for item in items]
            raise ConfigurationError(f"{where}: expected a string or a list of strings")
        if self.parse in _WHOLE_NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigurationError(f"{where}: expected a whole number, got {value!r}")
        elif self.parse in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"{where}: expected a number, got {value!r}")
        elif not isinstance(value, str):
            raise ConfigurationError(f"{where}: expected a string, got {value!r}")
        return self._one(str(value), where)

    @property
    def reference_default(self) -> str:
        if self.shown_default:
            return self.shown_default
        if self.required:
            return "required"
        if self.kind == "switch":
            return "on" if self.default else "off"
        if self.default is None or self.default == []:
            return "none"
        if isinstance(self.default, str) and ("/" in self.default or "." in self.default):
            return f"`{self.default}`"
        return str(self.default)


CONFIG = Setting(
    "config",
    f"the configuration file (default: ./{CONFIG_FILE_NAME}, else [tool.fastworker] in "
    "./pyproject.toml)",
    metavar="PATH",
)
"""Where the other settings' file is: a flag and a variable, never a file entry."""


@dataclasses.dataclass(frozen=True)
class Command:
    """The settings one command reads, by the name its file table has."""

    name: str
    settings: tuple[Setting, ...]

    def __post_init__(self) -> None:
        names = [setting.name for setting in self.settings]
        duplicates = {name for name in names if names.count(name) > 1}
        assert not duplicates, f"{self.name}: settings declared twice: {duplicates}"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's flags; absent flags leave no attribute, so the environment,
        the file and the default can be told apart from a flag given."""
        for setting in (*self.settings, CONFIG):
            common: dict[str, Any] = {"dest": setting.name, "default": argparse.SUPPRESS}
            help = _help_with_default(setting)
            if setting.kind == "switch":
                parser.add_argument(
                    *setting.flags,
                    action="store_const",
                    const=not setting.default,
                    help=help,
                    **common,
                )
                continue
            parser.add_argument(
                *setting.flags,
                type=_argparse_type(setting),
                action="append" if setting.kind == "list" else "store",
                metavar=_metavar(setting),
                help=help,
                **common,
            )
            if setting.kind == "secret":
                parser.add_argument(
                    setting.file_flag(),
                    dest=f"{setting.name}_file",
                    default=argparse.SUPPRESS,
                    metavar="PATH",
                    help=f"read {setting.flags[0]} from the first line of this file",
                )

    def resolve(
        self,
        given: argparse.Namespace,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        shared: Collection[str] = (),
    ) -> dict[str, Any]:
        """Every setting's value: from ``given`` (parsed flags), else ``environ``, else
        the configuration file, else the default. A top-level file entry named in
        ``shared`` (another command's setting) is left to that command.

        Raises:
            ConfigurationError: a value that does not parse, a secret given twice at one
                level, an unknown file entry, a required setting with no value.
        """
        environ = os.environ if environ is None else environ
        flags = vars(given)
        file_entries = self._file_entries(flags, environ, cwd or Path.cwd(), shared)
        values: dict[str, Any] = {}
        for setting in self.settings:
            values[setting.name] = self._value(setting, flags, environ, file_entries)
        return values

    def _value(
        self,
        setting: Setting,
        flags: Mapping[str, Any],
        environ: Mapping[str, str],
        entries: Mapping[str, tuple[Any, str]],
    ) -> Any:
        name, file_name = setting.name, f"{setting.name}_file"
        if setting.kind == "secret":
            for level in (
                (flags.get(name), flags.get(file_name), setting.flags[0]),
                (
                    environ.get(setting.env) or None,
                    environ.get(setting.env + "_FILE") or None,
                    setting.env,
                ),
                (_entry(entries, name), _entry(entries, file_name), name),
            ):
                value, path, where = level
                if value is not None and path is not None:
                    raise ConfigurationError(f"give {where} or its file, not both")
                if path is not None:
                    return read_secret(setting.file_flag(), str(path))
                if value is not None:
                    return value
            return setting.default
        if name in flags:
            value = flags[name]
            if setting.kind == "list":  # each flag given holds a list
                return [item for items in value for item in items]
            return value
        raw = environ.get(setting.env)
        if raw is not None:
            return setting.convert(raw, setting.env)
        if name in entries:
            value, where = entries[name]
            return setting.from_file(value, where)
        if setting.required:
            raise ConfigurationError(
                f"{setting.flags[0]} is required (or {setting.env}, or {name} in the "
                "configuration file)"
            )
        default: object = setting.default
        if isinstance(default, list):
            return list(cast("list[object]", default))  # each command its own
        return default

    def _file_entries(
        self,
        flags: Mapping[str, Any],
        environ: Mapping[str, str],
        cwd: Path,
        shared: Collection[str],
    ) -> dict[str, tuple[Any, str]]:
        """The file's entries for this command, each with where it came from."""
        explicit = flags.get(CONFIG.name) or environ.get(CONFIG.env) or None
        found = _read_file(Path(explicit) if explicit else None, cwd)
        if found is None:
            return {}
        source, table = found
        known = {setting.name for setting in self.settings} | {
            f"{setting.name}_file" for setting in self.settings if setting.kind == "secret"
        }
        entries: dict[str, tuple[Any, str]] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                continue  # a command's table: read below when it is this command's
            if key in known:
                entries[key] = (value, f"{source}: {key}")
            elif key not in shared:
                raise ConfigurationError(f"{source}: {key!r} is not a fastworker setting")
        own: Any = table.get(self.name, {})
        if not isinstance(own, dict):
            raise ConfigurationError(f"{source}: {self.name!r} must be a table")
        for key, value in own.items():  # pyright: ignore[reportUnknownVariableType]
            if key not in known:
                raise ConfigurationError(
                    f"{source}: [{self.name}] {key!r} is not a setting of {self.name}"
                )
            entries[str(key)] = (value, f"{source}: [{self.name}] {key}")  # pyright: ignore[reportUnknownArgumentType]
        return entries

    def reference(self) -> str:
        """The command's rows of the configuration reference, as a Markdown table."""
        rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
        for setting in self.settings:
            flags = " ".join(f"`{flag}`" for flag in setting.flags)
            env = f"`{setting.env}`" + (" (one per line)" if setting.split is lines else "")
            text = setting.help.replace("|", "\\|")
            rows.append(f"| {flags} | {env} | {setting.reference_default} | {text} |")
            if setting.kind == "secret":
                rows.append(
                    f"| `{setting.file_flag()}` | `{setting.env}_FILE` | none | "
                    f"read `{setting.flags[0]}` from the first line of this file |"
                )
        return "\n".join(rows)


def _entry(entries: Mapping[str, tuple[Any, str]], key: str) -> Any:
    found = entries.get(key)
    if found is None:
        return None
    value, where = found
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: expected a non-empty string")
    return value


def _help_with_default(setting: Setting) -> str:
    shown = setting.reference_default.strip("`")
    if setting.kind == "switch" or shown in ("none", "required"):
        return f"{setting.help} (${setting.env})"
    return f"{setting.help} (${setting.env}; default: {shown})"


_WHOLE_NUMBERS: tuple[Callable[[str], Any], ...] = (positive_int, non_negative_int, port)
_NUMBERS: tuple[Callable[[str], Any], ...] = (positive_float,)


def _metavar(setting: Setting) -> str:
    if setting.metavar:
        return setting.metavar
    if setting.choices:
        return "{" + ",".join(setting.choices) + "}"
    if setting.parse in _WHOLE_NUMBERS:
        return "N"
    if setting.parse is positive_float:
        return "SECONDS"
    return setting.name.rpartition("_")[2].upper()


def _argparse_type(setting: Setting) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return setting.convert(text, setting.flags[0])
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _read_file(path: Path | None, cwd: Path) -> tuple[str, dict[str, Any]] | None:
    """(its name, its table) of the configuration file, or None when there is none."""
    if path is not None:
        if not path.is_file():
            raise ConfigurationError(f"{CONFIG.env} or --config: no file at {path}")
        return str(path), _load_toml(path)
    local = cwd / CONFIG_FILE_NAME
    if local.is_file():
        return CONFIG_FILE_NAME, _load_toml(local)
    pyproject = cwd / "pyproject.toml"
    if not pyproject.is_file():
        return None
    table: object = _load_toml(pyproject)
    for key in _PYPROJECT_TABLE:
        table = cast("dict[str, object]", table).get(key) if isinstance(table, dict) else None
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigurationError("pyproject.toml: [tool.fastworker] must be a table")
    return "pyproject.toml [tool.fastworker]", cast("dict[str, Any]", table)


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None


# --- the settings several commands share ------------------------------------------------

ADDRESS = Setting(
    "address",
    "the control plane to talk to",
    default=DEFAULT_CONTROL_PLANE_ADDRESS,
)
REQUEST_TIMEOUT = Setting(
    "request_timeout",
    "seconds to wait for the control plane to answer",
    positive_float,
    DEFAULT_REQUEST_TIMEOUT,
)
AUTH_TOKEN = Setting(
    "auth_token",
    "the control plane's shared secret, or the secret of this side's role",
    kind="secret",
    metavar="SECRET",
)
TLS_PEER_SETTINGS = (
    Setting(
        "tls_ca",
        "for a tls+tcp:// control plane: the certificate authority (PEM) its certificate "
        "must chain to; required for TLS",
        metavar="PATH",
    ),
    Setting(
        "tls_cert", "this side's certificate (PEM, with its chain), for mutual TLS", metavar="PATH"
    ),
    Setting("tls_key", "the key of --tls-cert (PEM)", metavar="PATH"),
    Setting(
        "tls_server_name",
        "the name the control plane's certificate must carry",
        shown_default="the address's host",
    ),
)
LOG_LEVEL = Setting(
    "log_level",
    "how much to log: debug, info, warning or error",
    default="info",
    choices=("debug", "info", "warning", "error"),
)
TRACING = Setting(
    "tracing",
    "OpenTelemetry traces: `auto` when opentelemetry-api is installed, `on` (it must be) "
    "or `off` ([observability](observability.md#traces))",
    default="auto",
    choices=TRACING_MODES,
)
LOG_FORMAT = Setting(
    "log_format",
    "how log lines look on stderr: `text` for people, `json` for one JSON object a line "
    "with the id, name and worker of the task it is about "
    "([observability](observability.md#logs))",
    default="text",
    choices=LOG_FORMATS,
)
DASHBOARD_HOST = Setting(
    "dashboard_host",
    "where the dashboard listens; beyond loopback it needs an access token",
    default=DEFAULT_DASHBOARD_HOST,
)
DASHBOARD_PORT = Setting(
    "dashboard_port", "the dashboard's port; 0 picks a free one", port, DEFAULT_DASHBOARD_PORT
)
DASHBOARD_TOKEN = Setting(
    "dashboard_token",
    "the access token the dashboard asks every visitor for; required off loopback",
    kind="secret",
    metavar="TOKEN",
)

CLIENT_SETTINGS = (
    ADDRESS,
    REQUEST_TIMEOUT,
    AUTH_TOKEN,
    *TLS_PEER_SETTINGS,
    LOG_LEVEL,
    LOG_FORMAT,
)
"""What every command that talks to a control plane as a client reads."""


def setting_names(commands: Iterable[Command]) -> frozenset[str]:
    """The file keys of ``commands``, for :meth:`Command.resolve`'s ``shared``."""
    return frozenset(
        key
        for command in commands
        for setting in command.settings
        for key in (setting.name, f"{setting.name}_file")
        if key == setting.name or setting.kind == "secret"
    )
