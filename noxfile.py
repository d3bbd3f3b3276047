"""The only task runner: tests, lint, typecheck, slim, build, bench, demo.

``nox -l`` lists the sessions. Every Python from 3.10 to 3.13 that is installed is used;
interpreters installed through pyenv are found even when pyenv does not expose them.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "tools"))

import releases  # noqa: E402 - tools/releases.py, found through the path above

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
    "hypothesis>=6.100",
    "cronsim>=2.7,<3",
    "trustme>=1.1",  # certificates made at test time, for the TLS tests
    "watchfiles>=0.21,<2",  # the [reload] extra, for --reload
    "pyyaml>=6",  # reads the compose and Kubernetes files of examples/deploy/
    "prometheus-client>=0.17,<1",  # the [metrics] extra, for --metrics-port
    "opentelemetry-sdk>=1.20,<2",  # the [otel] extras, with the in-memory span exporter
)
# Extra test tools of one package's own tests.
PACKAGE_TEST_TOOLS: dict[str, tuple[str, ...]] = {
    "protocol": ("hypothesis>=6.100",),  # property tests of the codec
    "client": (  # the [prometheus] and [otel] extras, and otel's test exporter
        "prometheus-client>=0.17,<1",
        "opentelemetry-sdk>=1.20,<2",
    ),
    # [cron] for periodic tasks, [metrics] for --metrics-port, and [otel].
    "server": ("cronsim>=2.7,<3", "prometheus-client>=0.17,<1", "opentelemetry-sdk>=1.20,<2"),
    "dashboard": ("httpx>=0.27", "httpx2>=2.14"),
}

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


@nox.session(python=PYTHONS[-1:] or None)
def fuzz(session: nox.Session) -> None:
    """A longer run of the fuzz tests than the suite's: the codec's properties with
    many more examples, and millions of malformed frames at a real control plane and
    subworker. ``FASTWORKER_FUZZ_FRAMES`` and ``FASTWORKER_FUZZ_EXAMPLES`` set how many
    (``FASTWORKER_FUZZ_FRAMES=10000000 nox -s fuzz``)."""
    _install_ours(session, *(_package_path(name) for name in SIBLINGS), *CROSS_TEST_TOOLS)
    env = {
        "FASTWORKER_FUZZ_FRAMES": os.environ.get("FASTWORKER_FUZZ_FRAMES", "2000000"),
        "FASTWORKER_FUZZ_EXAMPLES": os.environ.get("FASTWORKER_FUZZ_EXAMPLES", "20000"),
    }
    session.run(
        "pytest",
        "packages/fastworker-protocol/tests/test_codec_properties.py",
        "tests/test_fuzz_processes.py",
        "-s",
        *session.posargs,
        env=env,
    )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmark suite (bench/, BENCHMARKS.md): real processes on 127.0.0.1 and
    ipc://, one table with the targets beside the numbers. Options after ``--``:
    ``nox -s bench -- --quick``, ``-- --json out.json``, ``-- --only W1,W2``."""
    # trustme makes the CA and certificate of the tls+tcp:// runs at run time; the SDK
    # records the spans of the traced runs.
    _install_with_siblings(session, "server", "trustme>=1.1", "opentelemetry-sdk>=1.20,<2")
    session.run("python", str(ROOT / "bench" / "run.py"), *session.posargs)


@nox.session(python=PYTHONS[-1:] or None)
def demo(session: nox.Session) -> None:
    """Start a control plane, two subworkers and a stream of example shop orders at all
    four priorities; Ctrl-C stops everything. Extra arguments go to the demo script
    (``nox -s demo -- --duration 30``)."""
    _install_ours(session, *(_package_path(name) for name in SIBLINGS))
    session.run("python", str(ROOT / "examples" / "demo" / "run_demo.py"), *session.posargs)


# --- releases and the cross-version tests -------------------------------------------------

# The environments the cross-version tests run older releases from: for each package,
# "old" (its previous release, built from the commit releases.toml records) or "new"
# (this tree). "old" is a host that pinned everything; "old-client" is a web app that
# pinned fastworker-client and took the newest protocol package the pin allows.
COMPAT_ENVIRONMENTS: dict[str, dict[str, str]] = {
    "old": {name: "old" for name in SIBLINGS},
    "old-client": {"protocol": "new", "client": "old"},
}
# Each combination `nox -s compat` runs: role -> environment; a role not named runs from
# this tree. The roles are those of tests/compat/compat_roles.py.
COMPAT_COMBINATIONS: dict[str, dict[str, str]] = {
    "old client and protocol, new server": {"client": "old"},
    "old client, new protocol and server": {"client": "old-client"},
    "new client, old server": {"control_plane": "old", "subworker": "old"},
    "old subworker, new control plane": {"subworker": "old"},
    "old control plane, new subworker": {"control_plane": "old"},
    "old dashboard, new control plane": {"dashboard": "old"},
}
COMPAT_DIR = ROOT / ".nox" / "_compat"
"""Wheels of recorded releases (kept between runs: a release never changes) and the
environments built from them."""


def _previous_release_wheel(session: nox.Session, name: str) -> Path:
    """The wheel of the package's latest recorded release."""
    release = releases.latest(name)
    if release is None:
        session.error(f"releases.toml records no release of fastworker-{name}")
    return _release_wheel(session, release)


def _release_wheel(session: nox.Session, release: releases.Release) -> Path:
    """The wheel of a recorded release, built once from its commit (needs uv in the
    session)."""
    out = COMPAT_DIR / "wheels" / f"{release.package}-{release.version}-{release.commit[:12]}"
    built = sorted(out.glob("*.whl"))
    if not built:
        try:
            source = releases.export(release, COMPAT_DIR / "sources" / out.name)
        except releases.ReleaseError as exc:
            session.error(str(exc))
        session.run("uv", "build", "--quiet", "--wheel", "--out-dir", str(out), str(source))
        built = sorted(out.glob("*.whl"))
    return built[0]


def _compat_environment(session: nox.Session, env_name: str, packages: dict[str, str]) -> str:
    """Build one environment of COMPAT_ENVIRONMENTS; return its interpreter."""
    location = COMPAT_DIR / "envs" / env_name
    python = location / "bin" / "python"
    _new_venv(session, location)
    sources = [
        str(_previous_release_wheel(session, name)) if which == "old" else _package_path(name)
        for name, which in packages.items()
    ]
    refresh = [arg for name in SIBLINGS for arg in ("--refresh-package", f"fastworker-{name}")]
    session.run("uv", "pip", "install", "--quiet", "--python", str(python), *refresh, *sources)
    return str(python)


def _new_venv(session: nox.Session, location: Path) -> None:
    """An empty environment at ``location`` on the session's Python."""
    python = str(Path(session.virtualenv.location) / "bin" / "python")
    session.run("uv", "venv", "--quiet", "--clear", "--python", python, str(location))


@nox.session(python=PYTHONS[-1:] or None)
def compat(session: nox.Session) -> None:
    """Today's packages against the previous release of each (releases.toml): the
    combinations of COMPAT_COMBINATIONS, each running tests/compat with some roles from
    an older release. Arguments after ``--`` go to pytest."""
    _install_ours(session, *(_package_path(name) for name in SIBLINGS), *CROSS_TEST_TOOLS)
    session.install("uv")
    pythons = {
        env_name: _compat_environment(session, env_name, packages)
        for env_name, packages in COMPAT_ENVIRONMENTS.items()
    }
    for combination, roles in COMPAT_COMBINATIONS.items():
        session.log(f"combination: {combination}")
        env = {f"FASTWORKER_COMPAT_{role.upper()}_PYTHON": pythons[e] for role, e in roles.items()}
        session.run("pytest", "tests/compat/test_mixed_versions.py", *session.posargs, env=env)
    session.log("combination: today's packages against a build of another protocol major")
    other = _other_major_environment(session)
    session.run(
        "pytest",
        "tests/compat/test_protocol_major.py",
        *session.posargs,
        env={"FASTWORKER_COMPAT_OTHER_MAJOR_PYTHON": other},
    )


def _other_major_environment(session: nox.Session) -> str:
    """Today's packages over a copy of the protocol package whose major version is one
    higher: a peer every release of this major must refuse with ProtocolVersionError."""
    source = COMPAT_DIR / "sources" / "protocol-other-major"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(
        _package_path("protocol"), source, ignore=shutil.ignore_patterns("build", "__pycache__")
    )
    codec = source / "src" / "fastworker" / "protocol" / "codec.py"
    major, minor = releases.wire_version(ROOT).split(".")
    line = f"PROTOCOL_VERSION: Final = ({major}, {minor})"
    text = codec.read_text("utf-8")
    if line not in text:
        session.error(f"{codec}: no line {line!r} to change")
    codec.write_text(text.replace(line, f"PROTOCOL_VERSION: Final = ({int(major) + 1}, 0)"))
    location = COMPAT_DIR / "envs" / "other-major"
    _new_venv(session, location)
    python = str(location / "bin" / "python")
    sources = (str(source), _package_path("client"), _package_path("server"))
    session.run("uv", "pip", "install", "--quiet", "--python", python, "--reinstall", *sources)
    return python


@nox.session(python=PYTHONS[-1:] or None)
def release(session: nox.Session) -> None:
    """Release one package: ``nox -s release -- client 0.2.0``. Checks the tree is clean,
    the version is new, the sibling floors are released (and, for the protocol, its
    golden samples exist); runs the package's tests; then sets the version, closes the
    CHANGELOG's "Unreleased", commits, tags ``fastworker-client-v0.2.0``, records the
    release in releases.toml and moves the tree to the next development version."""
    if len(session.posargs) != 2:
        session.error("usage: nox -s release -- PACKAGE VERSION  (e.g. client 0.2.0)")
    name, version = session.posargs
    try:
        releases.check(ROOT, name, version)
    except releases.ReleaseError as exc:
        session.error(str(exc))
    _install_with_siblings(session, name, *TEST_TOOLS, *PACKAGE_TEST_TOOLS.get(name, ()))
    session.run("pytest", f"packages/fastworker-{name}/tests")
    made = releases.make_release(ROOT, name, version, date=datetime.date.today().isoformat())
    dist = ROOT / "dist" / made.tag
    shutil.rmtree(dist, ignore_errors=True)
    session.install("build", "uv")
    # Built from the tagged commit, not the tree, which has moved to the next version.
    source = releases.export(made, dist / "src")
    session.run("python", "-m", "build", "--installer", "uv", "--outdir", str(dist), str(source))
    shutil.rmtree(dist / "src")
    session.log(f"released fastworker-{name} {version} from {made.commit[:12]}, tag {made.tag}")
    session.log(
        f"publish with: git push origin main {made.tag} && uv publish {dist}/*"
        " (index credentials in UV_PUBLISH_TOKEN)"
    )


# --- lowest: each package's own tests with its declared dependencies at their floors ---

# Prints the interpreter's version and the installed version (or null) of each name given;
# it runs inside the session's environment, so it uses the standard library alone.
_VERSIONS_SCRIPT = """
import importlib.metadata, json, platform, sys
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        versions[name] = None
print(json.dumps({"python": platform.python_version(), "versions": versions}))
"""

# The floor fastapi brings an old starlette whose TestClient predates today's httpx and anyio.
# Each allowance is used only below the starlette release that made it unnecessary, and all of
# them concern the test client, not the dashboard's code.
# Below 0.37.2 the TestClient passes app= to httpx.Client: deprecated in httpx 0.27, gone in 0.28.
_OLD_TEST_CLIENT_OVERRIDES = (("0.37.2", "httpx<0.27"),)
_OLD_TEST_CLIENT_WARNINGS = (
    # Below 1.7.0 it names anyio.abc.BlockingPortal, an alias anyio 4.15 deprecates.
    ("1.7.0", "ignore:The anyio.abc.BlockingPortal alias is deprecated:DeprecationWarning"),
    # Below 0.38.6 it never closes its lifespan streams, which anyio reports when collected.
    ("0.38.6", "ignore:Unclosed <MemoryObject:ResourceWarning"),
)


def _lowest_sources(session: nox.Session, name: str) -> list[str]:
    """What to install of ours for the lowest session: the package from its directory and
    each sibling it requires at the lowest recorded release its range admits (a wheel
    built from releases.toml), so the sibling floors are tested too. A floor that names
    a development version (the sibling's next release) takes the sibling's directory."""
    recorded = releases.load()
    sources = [_package_path(name)]
    for requirement in releases.sibling_requirements(ROOT, name):
        sibling = requirement.name.removeprefix("fastworker-")
        admitted = [r for r in recorded[sibling] if requirement.specifier.contains(r.version)]
        if admitted:
            lowest_release = min(admitted, key=lambda r: Version(r.version))
            sources.append(str(_release_wheel(session, lowest_release)))
            session.log(f"sibling: {requirement} -> {sibling} {lowest_release.version}")
        else:
            sources.append(_package_path(sibling))
            session.log(f"sibling: {requirement} -> {sibling} from this tree")
    return sources


def _declared_requirements(name: str) -> list[Requirement]:
    """The package's own third-party dependencies from its pyproject.toml (its tests use no
    extra). Passed to uv as direct requirements so lowest-direct lowers each of them."""
    project = nox.project.load_toml(Path(_package_path(name)) / "pyproject.toml")["project"]
    ours = {f"fastworker-{sibling}" for sibling in SIBLINGS}
    requirements = [Requirement(text) for text in project["dependencies"]]
    return [r for r in requirements if canonicalize_name(r.name) not in ours]


def _installed_versions(
    session: nox.Session, names: list[str]
) -> tuple[str, dict[str, str | None]]:
    """The environment's Python version and the installed version of each name. Run
    directly rather than by ``session.run``, which --install-only and --no-install skip."""
    python = str(Path(session.bin) / "python")
    command = [python, "-c", _VERSIONS_SCRIPT, *names]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    report = json.loads(output)
    return report["python"], report["versions"]


def _floor(requirement: Requirement) -> Version | None:
    """The lowest version a requirement allows, if it names one."""
    for spec in requirement.specifier:
        if spec.operator in (">=", "~=", "==") and not spec.version.endswith("*"):
            return Version(spec.version)
    return None


def _check_floors(session: nox.Session, requirements: list[Requirement], after: str) -> list[str]:
    """Fail unless each declared dependency that applies on this Python is installed at the
    lowest version its requirement allows; return a line per dependency for the log."""
    python, versions = _installed_versions(session, [r.name for r in requirements])
    resolved: list[str] = []
    environment = {"python_full_version": python, "python_version": ".".join(python.split(".")[:2])}
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        floor = _floor(requirement)
        installed = versions[requirement.name]
        if floor is None:
            session.error(f"{requirement} declares no floor")
        if installed is None or Version(installed) != floor:
            session.error(
                f"{requirement.name} is {installed} after {after}, not its floor {floor}"
                f" ({requirement}): raise the floor, or find what moved it"
            )
        resolved.append(f"{requirement} -> {requirement.name}=={installed}")
    return resolved


def _old_test_client_allowances(session: nox.Session) -> tuple[list[str], list[str]]:
    """uv override requirements and pytest warning filters for an old starlette TestClient."""
    _, versions = _installed_versions(session, ["starlette"])
    starlette = versions.get("starlette")
    if starlette is None:
        return [], []
    overrides = [
        r for fixed, r in _OLD_TEST_CLIENT_OVERRIDES if Version(starlette) < Version(fixed)
    ]
    filters = [f for fixed, f in _OLD_TEST_CLIENT_WARNINGS if Version(starlette) < Version(fixed)]
    if overrides or filters:
        session.log(f"starlette {starlette}: test client allowances {overrides + filters}")
    return overrides, filters


@nox.session(python=PYTHONS[:1] or None, venv_backend="uv")
@nox.parametrize("package", list(SIBLINGS))
def lowest(session: nox.Session, package: str) -> None:
    """Each package's own tests with its declared third-party dependencies at the lowest
    versions its pyproject.toml allows, on the oldest supported Python; proves the floors."""
    declared = _declared_requirements(package)
    session.install("uv")  # builds the sibling releases' wheels
    ours = _lowest_sources(session, package)
    _install_ours(session, "--resolution", "lowest-direct", *map(str, declared), *ours)
    _check_floors(session, declared, "installing the lowest versions")
    # Test tools are not under test: newest versions, checked not to have moved a floor.
    overrides, filters = _old_test_client_allowances(session)
    override_args: list[str] = []
    if overrides:
        override_file = Path(session.create_tmp()) / "test-client-overrides.txt"
        override_file.write_text("\n".join(overrides) + "\n")
        override_args = ["--overrides", str(override_file)]
    session.install(*override_args, *TEST_TOOLS, *PACKAGE_TEST_TOOLS.get(package, ()))
    for line in _check_floors(session, declared, "installing the test tools"):
        session.log(f"floor: {line}")
    _pytest(session, *(f"-W{f}" for f in filters), f"packages/fastworker-{package}/tests")
