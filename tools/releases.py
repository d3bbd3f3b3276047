"""The record of releases (``releases.toml``) and the steps of making one.

``noxfile.py`` drives these: ``nox -s release`` checks, bumps, records and tags;
``nox -s compat`` and ``nox -s lowest`` ask for each package's previous release and build
it from its recorded commit. Nothing here touches a package index. Run directly for a
look at the record: ``python tools/releases.py`` prints each package's latest release.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # nox itself depends on tomli before 3.11
    import tomli as tomllib

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "releases.toml"
PACKAGES = ("protocol", "client", "server", "dashboard")
GIT_TIMEOUT = 60.0
_VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)
_UNRELEASED = "## Unreleased\n"


class ReleaseError(Exception):
    """A release that must not be made, with what to do instead."""


@dataclasses.dataclass(frozen=True)
class Release:
    package: str
    version: str
    commit: str
    date: str
    wire: str | None = None
    """For the protocol package: the protocol version it speaks (``"1.1"``)."""

    @property
    def tag(self) -> str:
        return tag_name(self.package, self.version)


def tag_name(package: str, version: str) -> str:
    return f"fastworker-{package}-v{version}"


def package_dir(root: Path, package: str) -> Path:
    return root / "packages" / f"fastworker-{package}"


def load(record: Path = RECORD) -> dict[str, list[Release]]:
    """Every package's releases, oldest first."""
    data = tomllib.loads(record.read_text(encoding="utf-8"))
    unknown = set(data) - set(PACKAGES)
    if unknown:
        raise ReleaseError(f"{record.name}: unknown packages {sorted(unknown)}")
    releases: dict[str, list[Release]] = {name: [] for name in PACKAGES}
    for name in PACKAGES:
        for entry in data.get(name, []):
            releases[name].append(
                Release(
                    package=name,
                    version=str(entry["version"]),
                    commit=str(entry["commit"]),
                    date=str(entry["date"]),
                    wire=str(entry["wire"]) if "wire" in entry else None,
                )
            )
    return releases


def latest(package: str, record: Path = RECORD) -> Release | None:
    """The package's newest release, or None before its first."""
    found = load(record)[package]
    return max(found, key=lambda r: Version(r.version)) if found else None


def append(release: Release, record: Path = RECORD) -> None:
    """Add one release to the record (a TOML array of tables per package)."""
    lines = [
        "",
        f"[[{release.package}]]",
        f'version = "{release.version}"',
        f'commit = "{release.commit}"',
        f'date = "{release.date}"',
    ]
    if release.wire is not None:
        lines.append(f'wire = "{release.wire}"')
    with record.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


# --- checks before a release -------------------------------------------------------------


def check_version(package: str, version: str, record: Path = RECORD) -> Version:
    """A final PEP 440 version, newer than the package's latest release."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise ReleaseError(f"{version!r} is not a version (PEP 440)") from None
    if parsed.is_prerelease or parsed.is_devrelease or parsed.local:
        raise ReleaseError(f"{version}: a release is a final version such as 0.2.0")
    previous = latest(package, record)
    if previous is not None and parsed <= Version(previous.version):
        raise ReleaseError(
            f"fastworker-{package} {previous.version} is already released; {version} must be newer"
        )
    return parsed


def check_clean(root: Path = ROOT) -> None:
    status = _git(root, "status", "--porcelain")
    if status.strip():
        raise ReleaseError(f"the tree has uncommitted changes; commit or stash them:\n{status}")


def sibling_requirements(root: Path, package: str) -> list[Requirement]:
    """The package's requirements on its fastworker siblings, from its pyproject."""
    pyproject = tomllib.loads((package_dir(root, package) / "pyproject.toml").read_text("utf-8"))
    requirements = [Requirement(text) for text in pyproject["project"]["dependencies"]]
    return [req for req in requirements if req.name.startswith("fastworker-")]


def check_sibling_floors(root: Path, package: str, record: Path = RECORD) -> None:
    """Every sibling the package needs has a release its range admits, and no floor
    names a development version: what is published must install from the index."""
    releases = load(record)
    for req in sibling_requirements(root, package):
        sibling = req.name.removeprefix("fastworker-")
        floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        if any(floor.is_devrelease or floor.is_prerelease for floor in floors):
            raise ReleaseError(
                f"fastworker-{package} requires {req}, a development version: release "
                f"fastworker-{sibling} first, then pin its release"
            )
        if not any(req.specifier.contains(r.version) for r in releases[sibling]):
            raise ReleaseError(
                f"fastworker-{package} requires {req}, and no release of fastworker-{sibling} "
                "is in that range: release it first"
            )


def wire_version(root: Path) -> str:
    """The protocol version the protocol package in ``root`` speaks, ``"1.1"``."""
    codec = (package_dir(root, "protocol") / "src/fastworker/protocol/codec.py").read_text("utf-8")
    match = re.search(r"^PROTOCOL_VERSION: Final = \((\d+), (\d+)\)$", codec, re.MULTILINE)
    if match is None:
        raise ReleaseError("codec.py: no PROTOCOL_VERSION line")
    return f"{match[1]}.{match[2]}"


def check_golden_samples(root: Path) -> str:
    """A protocol release needs golden samples of the version it speaks, so that every
    later release is checked to decode them."""
    wire = wire_version(root)
    golden = package_dir(root, "protocol") / "tests" / "golden" / wire
    if not golden.is_dir() or not any(golden.iterdir()):
        raise ReleaseError(
            f"protocol {wire} has no golden samples in {golden.relative_to(root)}: "
            "write them (tests/make_golden.py) before releasing"
        )
    return wire


# --- the release itself ------------------------------------------------------------------


def set_version(root: Path, package: str, version: str) -> None:
    path = package_dir(root, package) / "src" / "fastworker" / package / "_version.py"
    text = path.read_text("utf-8")
    updated, count = _VERSION_LINE.subn(f'__version__ = "{version}"', text)
    if count != 1:
        raise ReleaseError(f"{path}: expected one __version__ line")
    path.write_text(updated, "utf-8")


def _changelog(root: Path, package: str) -> tuple[Path, str, str]:
    """The package's CHANGELOG split at its "Unreleased" heading; refuse one with nothing
    under it."""
    path = package_dir(root, package) / "CHANGELOG.md"
    head, found, rest = path.read_text("utf-8").partition(_UNRELEASED)
    if not found:
        raise ReleaseError(f"{path.name} of fastworker-{package} has no '## Unreleased' section")
    if not re.search(r"^- ", rest.split("\n## ", 1)[0], re.MULTILINE):
        raise ReleaseError(f"{path.name} of fastworker-{package}: 'Unreleased' lists no change")
    return path, head, rest


def close_changelog(root: Path, package: str, version: str, date: str) -> None:
    """Turn the CHANGELOG's "Unreleased" section into the version's, under a fresh empty
    "Unreleased"."""
    path, head, rest = _changelog(root, package)
    path.write_text(f"{head}{_UNRELEASED}\n## {version} - {date}\n{rest}", "utf-8")


def next_dev_version(version: str) -> str:
    major, minor, patch = Version(version).release[:3]
    return f"{major}.{minor}.{patch + 1}.dev0"


def make_release(
    root: Path, package: str, version: str, *, date: str | None = None, record: Path | None = None
) -> Release:
    """Bump, commit and tag the release, then record it and move the package to the next
    development version in a second commit. Checks come first (see :func:`check`)."""
    record = record or root / RECORD.name
    date = date or datetime.date.today().isoformat()
    wire = wire_version(root) if package == "protocol" else None
    close_changelog(root, package, version, date)  # first: it refuses an empty one
    set_version(root, package, version)
    name = f"fastworker-{package}"
    _git(root, "add", str(package_dir(root, package)))
    _git(root, "commit", "--quiet", "-m", f"Release {name} {version}")
    commit = _git(root, "rev-parse", "HEAD").strip()
    release = Release(package, version, commit, date, wire)
    _git(root, "tag", "-a", release.tag, "-m", f"{name} {version}")
    append(release, record)
    set_version(root, package, next_dev_version(version))
    _git(root, "add", str(record), str(package_dir(root, package)))
    _git(
        root,
        "commit",
        "--quiet",
        "-m",
        f"Record the release of {name} {version}; the tree is {next_dev_version(version)}",
    )
    return release


def check(root: Path, package: str, version: str, record: Path | None = None) -> None:
    """Everything that must hold before the package's tests run and the release is made."""
    if package not in PACKAGES:
        raise ReleaseError(f"unknown package {package!r}; one of {', '.join(PACKAGES)}")
    record = record or root / RECORD.name
    check_clean(root)
    check_version(package, version, record)
    check_sibling_floors(root, package, record)
    _changelog(root, package)
    if package == "protocol":
        check_golden_samples(root)


# --- building a recorded release -----------------------------------------------------------


def export(release: Release, dest: Path, root: Path = ROOT) -> Path:
    """Write the package's sources at the release's commit under ``dest`` (``git archive``:
    no worktree, no network) and return the package's directory there."""
    subdir = f"packages/fastworker-{release.package}"
    try:
        _git(root, "cat-file", "-e", f"{release.commit}^{{commit}}")
    except ReleaseError:
        raise ReleaseError(
            f"fastworker-{release.package} {release.version} was made from {release.commit}, "
            "which this clone lacks (a shallow clone?): git fetch --unshallow"
        ) from None
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", release.commit, subdir],
        capture_output=True,
        check=True,
        timeout=GIT_TIMEOUT,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)  # our own repository's archive, from git
    return dest / subdir


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT
    )
    if result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def main() -> int:
    for name in PACKAGES:
        release = latest(name)
        where = f"{release.version} from {release.commit[:12]} ({release.date})" if release else "-"
        print(f"fastworker-{name}: {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
