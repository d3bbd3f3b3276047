"""The ``fastworker`` command installs as a console script and answers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastworker.protocol import PROTOCOL_VERSION
from fastworker.server import __version__
from fastworker.server.cli import main, parse_command_line


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


def test_every_command_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("control-plane", "subworker", "submit", "status", "cancel", "list", "ping"):
        assert command in out


def test_flags_default_from_fastworker_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTWORKER_TASK_MODULES", "shop.tasks, billing")
    monkeypatch.setenv("FASTWORKER_CONCURRENCY", "7")
    monkeypatch.setenv("FASTWORKER_CONTROL_PLANE_ADDRESS", "tcp://10.0.0.5:5555")
    options = parse_command_line(["subworker", "--worker-id", "w1"])
    assert options.task_modules == ["shop.tasks", "billing"]
    assert options.concurrency == 7
    assert options.control_plane_address == "tcp://10.0.0.5:5555"


def test_a_flag_on_the_command_line_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTWORKER_CONCURRENCY", "7")
    options = parse_command_line(["subworker", "--worker-id", "w1", "--concurrency", "2"])
    assert options.concurrency == 2


def test_boolean_flags_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_LOCAL_EXECUTION", "false")
    assert parse_command_line(["control-plane"]).local_execution is False
    monkeypatch.setenv("FASTWORKER_LOCAL_EXECUTION", "yes")
    assert parse_command_line(["control-plane"]).local_execution is True


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FASTWORKER_CONCURRENCY", "lots"),
        ("FASTWORKER_CONCURRENCY", "0"),
        ("FASTWORKER_LOCAL_EXECUTION", "maybe"),
    ],
)
def test_a_bad_environment_value_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    command = ["subworker", "--worker-id", "w"] if "CONCURRENCY" in variable else ["control-plane"]
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(command)
    assert exit_info.value.code == 2
    assert variable in capsys.readouterr().err


def test_an_unknown_priority_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["submit", "add", "--priority", "urgent"])
    assert exit_info.value.code == 2
    assert "critical, high, normal, low" in capsys.readouterr().err


def test_an_unreachable_control_plane_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["list", "--address", f"ipc://{tmp_path}/nobody.sock", "--request-timeout", "0.3"])
    assert code == 3
    assert "did not answer" in capsys.readouterr().err


def test_health_checks_are_off_unless_given_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    for command in (["control-plane"], ["subworker", "--worker-id", "w"]):
        options = parse_command_line(command)
        assert (options.health_host, options.health_port) == ("127.0.0.1", None)
    monkeypatch.setenv("FASTWORKER_HEALTH_PORT", "8081")
    assert parse_command_line(["control-plane"]).health_port == 8081


def test_ping_takes_its_address_as_an_argument_or_a_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = f"ipc://{tmp_path}/nobody.sock"
    assert main(["ping", nobody, "--request-timeout", "0.3"]) == 3
    assert nobody in capsys.readouterr().err
    assert main(["ping", "--address", nobody, "--request-timeout", "0.3"]) == 3
    assert nobody in capsys.readouterr().err


def test_a_task_module_that_cannot_be_imported_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "control-plane",
            "--task-modules",
            "no_such_module_here",
            "--address",
            f"ipc://{tmp_path}/cp.sock",
        ]
    )
    assert code == 2
    assert "no_such_module_here" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "kind"),
    [("control-plane", "ControlPlaneSettings"), ("subworker", "SubworkerSettings")],
)
def test_the_declared_defaults_are_the_settings_dataclass_defaults(command: str, kind: str) -> None:
    """The command and the Python API start from the same defaults."""
    import dataclasses

    from fastworker.server import control_plane, subworker
    from fastworker.server.cli.settings import CONTROL_PLANE, SUBWORKER

    declared = {"control-plane": CONTROL_PLANE, "subworker": SUBWORKER}[command]
    settings_class = getattr(control_plane if command == "control-plane" else subworker, kind)
    fields = {field.name: field for field in dataclasses.fields(settings_class)}
    checked = 0
    for setting in declared.settings:
        field = fields.get(setting.name)
        if field is None or field.default is dataclasses.MISSING:
            continue
        assert setting.default == field.default, setting.name
        checked += 1
    assert checked >= 4


def test_settings_come_from_the_configuration_file(tmp_path: Path) -> None:
    (tmp_path / "fastworker.toml").write_text(
        'task_modules = ["shop.tasks"]\nauth_token = "shared"\n'
        '[subworker]\nworker_id = "from-file"\nconcurrency = 3\n'
        '[control-plane]\njournal = ":memory:"\nschedule = ["report=every:30"]\n'
    )
    options = parse_command_line(["subworker", "--concurrency", "2"], environ={}, cwd=tmp_path)
    assert (options.worker_id, options.concurrency) == ("from-file", 2)
    assert (options.task_modules, options.auth_token) == (["shop.tasks"], "shared")
    options = parse_command_line(["control-plane"], environ={}, cwd=tmp_path)
    assert options.journal == ":memory:"
    assert [name for name, _schedule in options.schedule] == ["report"]


def test_an_unknown_file_entry_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fastworker.toml").write_text("[subworker]\nconcurency = 3\n")
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(["subworker", "--worker-id", "w"], environ={}, cwd=tmp_path)
    assert exit_info.value.code == 2
    assert "'concurency' is not a setting of subworker" in capsys.readouterr().err


def test_a_dashboard_token_can_come_from_a_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("visitor-secret\n")
    options = parse_command_line(
        ["control-plane", "--dashboard-token-file", str(token)], environ={}, cwd=tmp_path
    )
    assert options.dashboard_token == "visitor-secret"


def test_the_client_commands_start_without_importing_the_servers_modules() -> None:
    # `fastworker submit` and the other client commands pay for every import at each
    # call: the health server, the supervisor and the control plane are not theirs.
    probe = (
        "import sys\n"
        "import fastworker.server.cli\n"
        "import fastworker.server.cli.commands\n"
        "import fastworker.server.cli.services\n"
        "heavy = ['fastworker.server.health', 'fastworker.server.supervisor',\n"
        "         'fastworker.server.control_plane', 'fastworker.server.subworker',\n"
        "         'http.server']\n"
        "print(','.join(name for name in heavy if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ""
