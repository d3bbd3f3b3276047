"""The release steps of tools/releases.py (``nox -s release``) on a scratch repository
made of this tree's release files: what is checked, what is committed, tagged and
recorded, and that the recorded release is what the cross-version tests build next."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import releases  # noqa: E402 - tools/releases.py

TODAY = "2026-12-02"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding what a release reads and writes, copied from this tree."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "releases.toml", repo / "releases.toml")
    for name in releases.PACKAGES:
        source = releases.package_dir(ROOT, name)
        target = releases.package_dir(repo, name)
        for relative in ("pyproject.toml", "CHANGELOG.md", f"src/fastworker/{name}/_version.py"):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / relative, target / relative)
    codec = "src/fastworker/protocol/codec.py"
    shutil.copy(
        releases.package_dir(ROOT, "protocol") / codec,
        repo / "packages/fastworker-protocol" / codec,
    )
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "start")
    _git(repo, "config", "user.name", "Release Test")
    _git(repo, "config", "user.email", "release@example.invalid")
    return repo


def _version_at(repo: Path, revision: str, name: str) -> str:
    text = _git(
        repo, "show", f"{revision}:packages/fastworker-{name}/src/fastworker/{name}/_version.py"
    )
    return text.split('__version__ = "', 1)[1].split('"', 1)[0]


def _golden_samples(repo: Path) -> None:
    """What a protocol release needs: golden samples of the version it speaks."""
    golden = repo / "packages/fastworker-protocol/tests/golden" / releases.wire_version(repo)
    golden.mkdir(parents=True)
    (golden / "hello.msgpack").write_bytes(b"\x90")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "golden samples")


def test_a_release_is_committed_tagged_recorded_and_built_next(repo: Path) -> None:
    record = repo / "releases.toml"
    # The client's floor names the protocol's next version: the protocol goes first.
    with pytest.raises(releases.ReleaseError, match="release fastworker-protocol first"):
        releases.check(repo, "client", "0.1.1", record)
    _golden_samples(repo)
    releases.check(repo, "protocol", "0.1.1", record)
    protocol = releases.make_release(repo, "protocol", "0.1.1", date=TODAY, record=record)
    assert protocol.wire == releases.wire_version(repo)
    with pytest.raises(releases.ReleaseError, match="a development version"):
        releases.check(repo, "client", "0.1.1", record)  # released now, but not yet pinned
    pyproject = repo / "packages/fastworker-client/pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(">=0.1.1.dev0", ">=0.1.1"))
    _git(repo, "commit", "-qam", "Pin the released protocol")

    releases.check(repo, "client", "0.1.1", record)
    made = releases.make_release(repo, "client", "0.1.1", date=TODAY, record=record)

    assert _git(repo, "rev-parse", f"{made.tag}^{{commit}}").strip() == made.commit
    assert made.tag == "fastworker-client-v0.1.1"
    assert _version_at(repo, made.commit, "client") == "0.1.1"
    assert _version_at(repo, "HEAD", "client") == "0.1.2.dev0"
    assert _git(repo, "status", "--porcelain") == ""
    changelog = (repo / "packages/fastworker-client/CHANGELOG.md").read_text()
    unreleased, released = changelog.split("## Unreleased\n", 1)[1].split("## 0.1.1 - 2026-12-02\n")
    assert unreleased.strip() == ""  # a fresh, empty section for what comes next
    assert "idempotency_key" in released.split("## 0.1.0")[0]

    latest = releases.latest("client", record)
    assert latest is not None
    assert latest == releases.Release("client", "0.1.1", made.commit, TODAY)
    # What the cross-version tests build as the previous client: the tagged sources.
    exported = releases.export(latest, repo.parent / "export", root=repo)
    assert '__version__ = "0.1.1"' in (exported / "src/fastworker/client/_version.py").read_text()
    # The other packages' previous releases are unchanged.
    assert releases.latest("server", record) == releases.load(ROOT / "releases.toml")["server"][-1]


def test_a_release_that_must_not_be_made_is_refused(repo: Path) -> None:
    record = repo / "releases.toml"
    refusals = {
        ("client", "0.1.0"): "already released",
        ("client", "0.2.0rc1"): "final version",
        ("client", "0.1.1.dev0"): "final version",
        ("client", "one"): "not a version",
        ("tools", "1.0.0"): "unknown package",
        # Its floors name the next, unreleased protocol and client.
        ("server", "0.1.1"): "release fastworker-protocol first",
    }
    for (name, version), reason in refusals.items():
        with pytest.raises(releases.ReleaseError, match=reason):
            releases.check(repo, name, version, record)

    with pytest.raises(releases.ReleaseError, match="no golden samples"):
        releases.check(repo, "protocol", "0.1.1", record)
    _golden_samples(repo)
    releases.check(repo, "protocol", "0.1.1", record)

    (repo / "stray.txt").write_text("not committed")
    with pytest.raises(releases.ReleaseError, match="uncommitted changes"):
        releases.check(repo, "protocol", "0.1.1", record)


def test_a_release_with_nothing_unreleased_is_refused(repo: Path) -> None:
    record = repo / "releases.toml"
    _golden_samples(repo)
    releases.make_release(repo, "protocol", "0.1.1", date=TODAY, record=record)
    with pytest.raises(releases.ReleaseError, match="lists no change"):
        releases.check(repo, "protocol", "0.1.2", record)
    with pytest.raises(releases.ReleaseError, match="lists no change"):
        releases.make_release(repo, "protocol", "0.1.2", date=TODAY, record=record)
    assert _git(repo, "status", "--porcelain") == ""  # refused before it changed anything


def test_a_release_whose_commit_this_clone_lacks_says_so(repo: Path) -> None:
    missing = releases.Release("client", "0.0.9", "0" * 40, TODAY)
    with pytest.raises(releases.ReleaseError, match="which this clone lacks"):
        releases.export(missing, repo.parent / "export", root=repo)
