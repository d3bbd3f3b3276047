"""Settings declared once: flags, environment, configuration file, default, in that order."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from fastworker.client.config import (
    Command,
    ExitCode,
    Setting,
    lines,
    positive_float,
    positive_int,
    setting_names,
)
from fastworker.protocol import ConfigurationError

COMMAND = Command(
    "worker",
    (
        Setting("concurrency", "tasks at once", positive_int, 4),
        Setting("timeout", "seconds", positive_float, 3.0),
        Setting("name", "its name", required=True),
        Setting("modules", "modules", kind="list", default=[]),
        Setting("schedule", "schedules", kind="list", default=[], split=lines),
        Setting("local", "never run here", kind="switch", default=True),
        Setting("strict", "be strict", kind="switch"),
        Setting("token", "the secret", kind="secret"),
        Setting("mode", "how", default="normal", choices=("normal", "full")),
    ),
)


def resolve(
    argv: list[str],
    environ: dict[str, str] | None = None,
    cwd: Path | None = None,
    shared: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    COMMAND.add_arguments(parser)
    return COMMAND.resolve(
        parser.parse_args(argv), environ or {}, cwd or Path("/nonexistent"), shared
    )


def test_defaults_apply_when_nothing_is_given() -> None:
    values = resolve(["--name", "w"])
    assert values == {
        "concurrency": 4,
        "timeout": 3.0,
        "name": "w",
        "modules": [],
        "schedule": [],
        "local": True,
        "strict": False,
        "token": None,
        "mode": "normal",
    }


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    (tmp_path / "fastworker.toml").write_text("concurrency = 2\ntimeout = 9\nname = 'f'\n")
    environ = {"FASTWORKER_CONCURRENCY": "3", "FASTWORKER_TIMEOUT": "7.5"}
    values = resolve(["--concurrency", "1"], environ, tmp_path)
    assert (values["concurrency"], values["timeout"], values["name"]) == (1, 7.5, "f")
    assert resolve([], {}, tmp_path)["concurrency"] == 2


def test_a_command_table_wins_over_top_level_keys(tmp_path: Path) -> None:
    (tmp_path / "fastworker.toml").write_text(
        "concurrency = 2\nname = 'top'\n[worker]\nconcurrency = 5\n[other]\nanything = 1\n"
    )
    values = resolve([], {}, tmp_path)
    assert (values["concurrency"], values["name"]) == (5, "top")


def test_pyproject_tool_table_is_read_when_there_is_no_fastworker_toml(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n[tool.fastworker]\nname='p'\n")
    assert resolve([], {}, tmp_path)["name"] == "p"
    (tmp_path / "fastworker.toml").write_text("name = 'local'\n")
    assert resolve([], {}, tmp_path)["name"] == "local"


def test_an_explicit_config_file_is_read_and_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("name = 'e'\n")
    assert resolve(["--config", str(path)])["name"] == "e"
    assert resolve([], {"FASTWORKER_CONFIG": str(path)})["name"] == "e"
    with pytest.raises(ConfigurationError, match="no file"):
        resolve(["--config", str(tmp_path / "missing.toml")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nmae = 'typo'\n", "'nmae' is not a fastworker setting"),
        ("[worker]\nnmae = 'typo'\n", "'nmae' is not a setting of worker"),
        ("name = 'w'\nconcurrency = '4'\n", "fastworker.toml: concurrency: expected a whole"),
        ("name = 'w'\nconcurrency = 2.5\n", "expected a whole number"),
        ("name = 'w'\nconcurrency = true\n", "expected a whole number, got True"),
        ("name = 'w'\ntimeout = '3'\n", "expected a number, got '3'"),
        ("name = 7\n", "expected a string, got 7"),
        ("name = 'w'\nlocal = 'no'\n", "expected true or false"),
        ("name = 'w'\nmodules = [1]\n", "a list of strings"),
        ("name = 'w'\nmode = 'fast'\n", "not one of normal, full"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_a_bad_file_entry_is_an_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "fastworker.toml").write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        resolve([], {}, tmp_path)


def test_a_top_level_key_of_another_command_is_left_to_it(tmp_path: Path) -> None:
    (tmp_path / "fastworker.toml").write_text("name = 'w'\njournal = 'j.sqlite3'\n")
    assert resolve([], {}, tmp_path, shared=frozenset({"journal"}))["name"] == "w"


def test_a_toml_string_for_a_number_is_not_coerced_but_a_toml_int_for_a_float_is(
    tmp_path: Path,
) -> None:
    (tmp_path / "fastworker.toml").write_text("name = 'w'\ntimeout = 4\n")
    assert resolve([], {}, tmp_path)["timeout"] == 4.0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FASTWORKER_CONCURRENCY", "lots", "FASTWORKER_CONCURRENCY: 'lots': not a whole number"),
        ("FASTWORKER_CONCURRENCY", "0", "must be at least 1"),
        ("FASTWORKER_TIMEOUT", "-1", "must be positive"),
        ("FASTWORKER_LOCAL", "maybe", "is not a boolean"),
        ("FASTWORKER_MODE", "fast", "not one of"),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve(["--name", "w"], {variable: value})


def test_a_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        resolve(["--concurrency", "0"])
    assert exit_info.value.code == ExitCode.USAGE
    assert "--concurrency" in capsys.readouterr().err


def test_a_missing_required_setting_names_all_three_places() -> None:
    with pytest.raises(ConfigurationError, match=r"--name is required.*FASTWORKER_NAME.*name"):
        resolve([])


def test_switches_from_flags_variables_and_files(tmp_path: Path) -> None:
    assert resolve(["--name", "w", "--no-local", "--strict"])["local"] is False
    assert resolve(["--name", "w"], {"FASTWORKER_LOCAL": "off"})["local"] is False
    assert resolve(["--name", "w"], {"FASTWORKER_STRICT": "Yes"})["strict"] is True
    (tmp_path / "fastworker.toml").write_text("name = 'w'\nlocal = false\n")
    assert resolve([], {}, tmp_path)["local"] is False


def test_lists_repeat_split_and_read_toml_arrays(tmp_path: Path) -> None:
    values = resolve(["--name", "w", "--modules", "a, b", "--modules", "c"])
    assert values["modules"] == ["a", "b", "c"]
    environ = {"FASTWORKER_MODULES": "x y", "FASTWORKER_SCHEDULE": "a=every:5\nb=cron:* * * * *\n"}
    values = resolve(["--name", "w"], environ)
    assert values["modules"] == ["x", "y"]
    assert values["schedule"] == ["a=every:5", "b=cron:* * * * *"]
    (tmp_path / "fastworker.toml").write_text("name = 'w'\nmodules = ['m1', 'm2']\n")
    assert resolve([], {}, tmp_path)["modules"] == ["m1", "m2"]


def test_a_secret_comes_from_its_value_or_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\nignored\n")
    assert resolve(["--name", "w", "--token-file", str(secret)])["token"] == "s3cret"
    assert resolve(["--name", "w"], {"FASTWORKER_TOKEN_FILE": str(secret)})["token"] == "s3cret"
    environ = {"FASTWORKER_TOKEN": "from-env"}
    assert resolve(["--name", "w", "--token-file", str(secret)], environ)["token"] == "s3cret"
    (tmp_path / "fastworker.toml").write_text(f"name = 'w'\ntoken_file = '{secret}'\n")
    assert resolve([], {}, tmp_path)["token"] == "s3cret"


def test_a_secret_and_its_file_at_one_level_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    with pytest.raises(ConfigurationError, match="not both"):
        resolve(["--name", "w", "--token", "a", "--token-file", str(secret)])
    with pytest.raises(ConfigurationError, match="cannot read"):
        resolve(["--name", "w", "--token-file", str(tmp_path / "missing")])


def test_setting_names_include_the_file_twins_of_secrets() -> None:
    names = setting_names([COMMAND])
    assert {"token", "token_file", "name"} <= names
    assert "name_file" not in names


def test_every_exit_code_has_a_meaning() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5]
    assert all(code.meaning for code in ExitCode)
