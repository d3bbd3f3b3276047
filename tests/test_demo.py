"""The README's demo command keeps working: the demo script starts its processes, runs
orders through them and stops everything it started."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parent.parent / "examples" / "demo" / "run_demo.py"


@pytest.mark.timeout(90)
def test_the_demo_runs_orders_and_stops_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, str(DEMO), "--duration", "2"),
            *("--address", f"ipc://{tmp_path}/demo.sock", "--dashboard-port", "0"),
            *("--journal", str(tmp_path / "journal.sqlite3")),
        ],
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert result.returncode == 0, result.stderr
    done = [int(count) for count in re.findall(r"done\s+(\d+)", result.stdout)]
    assert done
    assert done[-1] > 0
    assert "fast-1" in result.stdout
    assert "fast-2" in result.stdout
