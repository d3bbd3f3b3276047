"""The only task runner: tests, lint, typecheck, slim, build, bench, demo.

``nox -l`` lists the sessions. Every Python from 3.10 to 3.13 that is installed is used;
interpreters installed through pyenv are found even when pyenv does not expose them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES_DIR = ROOT / "packages"
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")

# Each package with the sibling packages it depends on, in install order.
SIBLINGS: dict[str, tuple[str, ...]] = {
    "protocol": (),
    "client": ("protocol",),
    "server": ("protocol", "client"),
    "dashboard": ("protocol", "client"),
}
TEST_TOOLS = ("pytest>=8", "pytest-asyncio>=0.24", "pytest-timeout>=2.3")
# The cross-package tests also drive HTTP apps (the example shop, the dashboard, the
# Flask and Django samples of the docs); starlette 1.x's TestClient runs on httpx2.
CROSS_TEST_TOOLS = (
    *TEST_TOOLS,
    "httpx>=0.27",
    "httpx2>=2.14",
    "flask>=3",
    "django>=5",
    "playwright>=1.40",  # drives the system Chromium; never downloads a browser
)
# Extra test tools of one package's own tests.
PACKAGE_TEST_TOOLS: dict[str, tuple[str, ...]] = {"dashboard": ("httpx>=0.27", "httpx2>=2.14")}

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = False
# Interpreters come from this machine only; never let uv fetch one.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


def _version_key(path: Path) -> tuple[int, ...]:
    parts = path.parent.parent.name.split(".")
    return tuple(int(part) if part.isdigit() else -1 for part in parts)


def _find_pythons() -> list[str]:
    """Return the supported versions that have an interpreter here, putting pyenv's
    installed (but possibly inactive) interpreters on PATH so nox and uv find them."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found: list[str] = []
    for version in SUPPORTED_PYTHONS:
        installed = sorted(
            pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), key=_version_key
        )
        if installed:
            bin_dir = str(installed[-1].parent)
            os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
            found.append(version)
        elif _runs(f"python{version}"):
            found.append(version)
    return found


def _runs(executable: str) -> bool:
    path = shutil.which(executable)
    if path is None:
        return False
    # A pyenv shim exists for every version but fails for inactive ones.
    return subprocess.run([path, "-c", ""], capture_output=True, timeout=30).returncode == 0


PYTHONS = _find_pythons()


def _package_path(name: str) -> str:
    return str(PACKAGES_DIR / f"fastworker-{name}")


def _install_ours(session: nox.Session, *args: str) -> None:
    """``session.install`` that always builds our packages from their current sources.
    uv caches a local directory's build keyed on its pyproject.toml, so without a refresh
    it would install yesterday's code under today's unchanged version number."""
    refresh: list[str] = []
    if session.venv_backend == "uv":
        for name in SIBLINGS:
            refresh += ["--refresh-package", f"fastworker-{name}"]
    session.install(*refresh, *args)


def _install_with_siblings(session: nox.Session, name: str, *extra: str) -> None:
    """Install one package from its directory with the sibling packages it depends on
    (also from their directories), so nothing of ours comes from an index."""
    paths = [_package_path(sibling) for sibling in (*SIBLINGS[name], name)]
    _install_ours(session, *paths, *extra)


def _pytest(session: nox.Session, *paths: str) -> None:
    # Exit code 5 means no test ran: that is a failure here, not a pass.
    session.run("pytest", *paths, *session.posargs)


@nox.session(python=PYTHONS)
@nox.parametrize("package", [*SIBLINGS, "cross"])
def tests(session: nox.Session, package: str) -> None:
    """Each package's tests in an environment of that package and its declared
    dependencies alone; ``cross`` runs tests/ against all four installed together."""
    if package == "cross":
        _install_ours(session, *(_package_path(name) for name in SIBLINGS), *CROSS_TEST_TOOLS)
        _pytest(session, "tests")
    else:
        _install_with_siblings(session, package, *TEST_TOOLS, *PACKAGE_TEST_TOOLS.get(package, ()))
        _pytest(session, f"packages/fastworker-{package}/tests")


@nox.session(python=PYTHONS[-1:] or None)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[:1] or None)
def typecheck(session: nox.Session) -> None:
    """pyright in strict mode over all packages, their tests and this file, on the
    oldest supported Python."""
    _install_ours(
        session,
        *("-e" + _package_path(name) for name in SIBLINGS),
        *CROSS_TEST_TOOLS,
        "nox",
        "pyright",
    )
    session.run(
        "pyright", "--pythonpath", str(Path(session.virtualenv.location) / "bin" / "python")
    )


@nox.session(python=PYTHONS[:1] or None)
def slim(session: nox.Session) -> None:
    """The client installs and imports alone: no fastapi, uvicorn, jinja2 or server."""
    _install_with_siblings(session, "client")
    session.run("python", str(ROOT / "tools" / "check_slim_client.py"))


@nox.session(python=PYTHONS[:1] or None)
def build(session: nox.Session) -> None:
    """Build every wheel and sdist, check their contents, and install each wheel alone
    in a clean environment."""
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.install("build", "uv")
    for name in SIBLINGS:
        session.run(
            "python", "-m", "build", "--installer", "uv", "--outdir", str(dist), _package_path(name)
        )
    session.run("python", str(ROOT / "tools" / "check_dists.py"), str(dist))


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmark suite (bench/, BENCHMARKS.md): real processes on 127.0.0.1 and
    ipc://, one table with the targets beside the numbers. Options after ``--``:
    ``nox -s bench -- --quick``, ``-- --json out.json``, ``-- --only W1,W2``."""
    _install_with_siblings(session, "server")
    session.run("python", str(ROOT / "bench" / "run.py"), *session.posargs)


@nox.session(python=PYTHONS[-1:] or None)
def demo(session: nox.Session) -> None:
    """Start a control plane, two subworkers and a stream of example shop orders at all
    four priorities; Ctrl-C stops everything. Extra arguments go to the demo script
    (``nox -s demo -- --duration 30``)."""
    _install_ours(session, *(_package_path(name) for name in SIBLINGS))
    session.run("python", str(ROOT / "examples" / "demo" / "run_demo.py"), *session.posargs)
