"""The dashboard package installs with its web stack, ships its templates and the
vendored htmx, and never needs the server."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import fastworker.dashboard
from fastworker.dashboard._htmx import HTMX_FILE, HTMX_SHA256, HTMX_VERSION

PACKAGE_DIR = Path(__file__).parent.parent


def test_version_is_exposed() -> None:
    # A release (0.2.0) or the development version after one (0.2.1.dev0).
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", fastworker.dashboard.__version__)


def test_every_exported_name_exists() -> None:
    for name in fastworker.dashboard.__all__:
        assert hasattr(fastworker.dashboard, name), name


def test_the_server_is_not_a_dependency() -> None:
    # The dashboard reads a control plane through the client only. (Its own test
    # environment has no server at all; next to the cross-package tests it has.)
    requires = importlib.metadata.requires("fastworker-dashboard") or []
    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requires}
    assert "fastworker-server" not in names
    assert {"fastworker-client", "fastworker-protocol"} <= names
    assert importlib.util.find_spec("fastworker.client") is not None


def test_importing_the_dashboard_never_imports_the_server() -> None:
    code = "import sys, fastworker.dashboard; print('fastworker.server' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_vendored_htmx_is_the_recorded_release() -> None:
    static = resources.files("fastworker.dashboard") / "static"
    data = (static / HTMX_FILE).read_bytes()
    assert f"htmx-{HTMX_VERSION}.min.js" == HTMX_FILE
    assert hashlib.sha256(data).hexdigest() == HTMX_SHA256
    # htmx states its own version in the file.
    assert f'version:"{HTMX_VERSION}"' in data.decode()
    assert "Zero-Clause BSD" in (static / "htmx-LICENSE.txt").read_text()
    assert HTMX_SHA256 in (static / "VENDORED.txt").read_text()
    assert fastworker.dashboard.HTMX_VERSION == HTMX_VERSION


def test_the_readme_names_the_vendored_htmx_version() -> None:
    # Tests run from a checkout or an sdist, and both ship the README: missing is a fault.
    readme = PACKAGE_DIR / "README.md"
    assert readme.is_file(), f"{readme} is missing"
    assert f"htmx {HTMX_VERSION}" in readme.read_text()


def test_templates_and_static_files_are_installed_with_the_package() -> None:
    root = resources.files("fastworker.dashboard")
    for name in ("base.html", "index.html", "_live.html", "_history.html", "task.html"):
        assert (root / "templates" / name).is_file(), name
    for name in ("dashboard.css", "dashboard.js", "favicon.svg", HTMX_FILE):
        assert (root / "static" / name).is_file(), name


def test_no_page_loads_anything_from_another_site() -> None:
    templates = resources.files("fastworker.dashboard") / "templates"
    for entry in templates.iterdir():
        text = entry.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), entry.name
