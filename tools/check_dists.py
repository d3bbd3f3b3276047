"""Check built wheels and sdists of the four distributions.

Usage: python tools/check_dists.py DIST_DIR

For every distribution: exactly one wheel and one sdist; neither ships
``fastworker/__init__.py`` (fastworker is a PEP 420 namespace shared by four
distributions); ``py.typed`` is present; and the wheel installs alone into a fresh
environment (siblings come from DIST_DIR, never an index) and imports.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

DISTRIBUTIONS = {
    "fastworker_protocol": "fastworker.protocol",
    "fastworker_client": "fastworker.client",
    "fastworker_server": "fastworker.server",
    "fastworker_dashboard": "fastworker.dashboard",
}
# Files a distribution is useless without, beyond its Python modules.
REQUIRED_FILES = {
    "fastworker_dashboard": ("templates/index.html", "static/htmx-", "static/dashboard.css"),
}
# Bounds for each install and import, so a hung resolver fails the check instead of CI.
INSTALL_TIMEOUT = 600
IMPORT_TIMEOUT = 60


def _members(archive: Path) -> list[str]:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.namelist()
    with tarfile.open(archive) as sdist:
        # sdist members sit under "<name>-<version>/"; drop that prefix.
        return [member.split("/", 1)[1] for member in sdist.getnames() if "/" in member]


def _check_contents(archive: Path, module: str) -> list[str]:
    members = _members(archive)
    package_dir = module.replace(".", "/")
    problems: list[str] = []
    if any(member.endswith("fastworker/__init__.py") for member in members):
        problems.append(f"{archive.name} ships fastworker/__init__.py")
    if not any(member.endswith(f"{package_dir}/py.typed") for member in members):
        problems.append(f"{archive.name} has no {package_dir}/py.typed")
    if not any(member.endswith(f"{package_dir}/__init__.py") for member in members):
        problems.append(f"{archive.name} has no {package_dir}/__init__.py")
    stem = archive.name.split("-", 1)[0]
    for required in REQUIRED_FILES.get(stem, ()):
        if not any(f"{package_dir}/{required}" in member for member in members):
            problems.append(f"{archive.name} has no {package_dir}/{required}")
    return problems


def _check_installs_alone(wheel: Path, module: str, dist_dir: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="fastworker-wheel-") as scratch:
        venv = Path(scratch) / "venv"
        python = venv / "bin" / "python"
        subprocess.run(
            ["uv", "venv", "--quiet", "--python", sys.executable, str(venv)],
            check=True,
            timeout=INSTALL_TIMEOUT,
        )
        install = subprocess.run(
            [
                # No cache: a cached wheel of the same version may hold older code.
                *("uv", "pip", "install", "--quiet", "--no-cache", "--python", str(python)),
                *("--find-links", str(dist_dir), str(wheel)),
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        if install.returncode != 0:
            return [f"{wheel.name} does not install alone:\n{install.stderr}"]
        imported = subprocess.run(
            [str(python), "-c", f"import {module}; print({module}.__version__)"],
            capture_output=True,
            text=True,
            timeout=IMPORT_TIMEOUT,
        )
        if imported.returncode != 0:
            return [f"{wheel.name} installs but {module} does not import:\n{imported.stderr}"]
        print(f"ok  {wheel.name}: installs alone, imports {module} {imported.stdout.strip()}")
    return []


def main(dist_dir: Path) -> int:
    """Check every distribution in ``dist_dir``; print each problem, return 1 if any."""
    problems: list[str] = []
    for stem, module in DISTRIBUTIONS.items():
        wheels = sorted(dist_dir.glob(f"{stem}-*.whl"))
        sdists = sorted(dist_dir.glob(f"{stem}-*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            problems.append(f"{stem}: expected one wheel and one sdist, found {wheels + sdists}")
            continue
        for archive in (*wheels, *sdists):
            problems += _check_contents(archive, module)
        problems += _check_installs_alone(wheels[0], module, dist_dir)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
