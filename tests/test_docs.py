"""Every Python sample in the README and docs/ runs, so the docs cannot drift.

In each Markdown file, a ```python block whose first line is ``# name.py`` is a file:
it is written into a fresh folder, and the task modules among them are loaded by a
real control plane and subworker started there. Every other ```python block is a
script, run in that folder in order, against that control plane (through
FASTWORKER_ADDRESS), and must exit 0 within its bound.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fw_processes import Processes

ROOT = Path(__file__).parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
FILE_MARKER = re.compile(r"^# ([\w/]+\.py)\n")
SCRIPT_TIMEOUT = 60


@dataclass
class Sample:
    code: str
    line: int
    filename: str | None


def samples(path: Path) -> list[Sample]:
    text = path.read_text()
    found: list[Sample] = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        marker = FILE_MARKER.match(code)
        found.append(
            Sample(
                code, text.count("\n", 0, match.start()) + 1, marker.group(1) if marker else None
            )
        )
    return found


def test_the_docs_have_samples() -> None:
    assert sum(len(samples(path)) for path in DOCS) >= 10


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", [p for p in DOCS if samples(p)], ids=lambda p: p.name)
def test_every_python_sample_runs(path: Path, processes: Processes, tmp_path: Path) -> None:
    workdir = tmp_path / "docs"
    workdir.mkdir()
    found = samples(path)
    modules: list[str] = []
    for sample in found:
        if sample.filename is not None:
            target = workdir / sample.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(sample.code)
            if "@task" in sample.code:
                modules.append(sample.filename.removesuffix(".py").replace("/", "."))
    address = processes.address()
    if modules:
        processes.control_plane(
            address, "--no-local-execution", task_modules=",".join(modules), cwd=workdir
        )
        processes.subworker(address, "docs-1", task_modules=",".join(modules), cwd=workdir)
    for sample in found:
        if sample.filename is not None:
            continue
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", sample.code],
            cwd=workdir,
            env={**os.environ, "FASTWORKER_ADDRESS": address, "PYTHONPATH": str(workdir)},
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
        )
        assert result.returncode == 0, (
            f"{path.name}, sample at line {sample.line} failed after "
            f"{time.monotonic() - started:.1f} s:\n{result.stdout}\n{result.stderr}"
        )


def _settings_reference() -> Any:
    spec = importlib.util.spec_from_file_location(
        "settings_reference", ROOT / "tools" / "settings_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_is_generated_from_the_declarations() -> None:
    reference = _settings_reference()
    assert reference.current() == reference.render(), (
        "docs/configuration.md is out of date: run python tools/settings_reference.py"
    )


def test_every_setting_has_its_flag_variable_and_line() -> None:
    from fastworker.dashboard.cli import DASHBOARD, build_parser
    from fastworker.server.cli import command_flags
    from fastworker.server.cli.settings import SERVER_COMMANDS

    reference = (ROOT / "docs" / "configuration.md").read_text()
    flags = {flag for _command, flag in command_flags()}
    flags |= {flag for action in build_parser()._actions for flag in action.option_strings}  # pyright: ignore[reportPrivateUsage]
    for command in (*SERVER_COMMANDS, DASHBOARD):
        for setting in command.settings:
            assert set(setting.flags) <= flags, setting.name
            row = f"| {' '.join(f'`{flag}`' for flag in setting.flags)} | `{setting.env}`"
            assert row in reference, f"{command.name} {setting.name}"


def test_every_command_line_flag_is_documented() -> None:
    """A setting's flag is in the configuration reference; an option of one invocation
    (``submit --wait``) in the command reference."""
    from fastworker.server.cli import command_flags

    documented = (ROOT / "docs" / "configuration.md").read_text()
    documented += (ROOT / "docs" / "cli.md").read_text()
    missing = [
        f"{command} {flag}" for command, flag in command_flags() if f"`{flag}`" not in documented
    ]
    assert missing == []


def _metrics_section() -> str:
    text = (ROOT / "docs" / "observability.md").read_text()
    start = text.index("\n## Metrics\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_metrics_table_is_the_declared_metrics() -> None:
    from fastworker.client.prometheus import METRICS

    rows = re.findall(r"^\| `(fastworker_\w+)` \| (\w+) \|([^|]*)\|", _metrics_section(), re.M)
    documented = [
        (name, kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
    ]
    assert documented == [(spec.name, spec.kind, spec.labels) for spec in METRICS]


def test_the_alert_rules_parse_and_use_only_declared_metrics() -> None:
    import yaml

    from fastworker.client.prometheus import METRICS

    blocks = re.findall(r"^```yaml\n(.*?)^```$", _metrics_section(), re.DOTALL | re.MULTILINE)
    (rules,) = [yaml.safe_load(block) for block in blocks if "groups:" in block]
    declared = {spec.name for spec in METRICS}
    declared |= {f"{spec.name}_{part}" for spec in METRICS for part in ("bucket", "count", "sum")}
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in alerts} >= {
        "FastworkerQueueGrowing",
        "FastworkerDeadLetters",
        "FastworkerNoSubworkers",
        "FastworkerQueueWaitHigh",
    }
    for rule in alerts:
        used = set(re.findall(r"fastworker_\w+", rule["expr"]))
        assert used <= declared, rule["alert"]
