"""The deployment examples in examples/deploy/ stay in step with the commands they run.

Every YAML file parses; every command line in them (compose services, Kubernetes
containers, systemd ExecStart=, the Dockerfile's CMD) uses only flags its program
accepts and parses with the real parser, under the environment the example gives it;
every FASTWORKER_* variable is one a program reads; probes and health checks ask the
ports the commands declare; volumes, secrets and credentials that are referred to exist.
Nothing here starts a process or touches the network; ``systemd-analyze verify`` runs
when it is installed.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, cast
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "examples" / "deploy"
SYSTEMD = DEPLOY / "systemd"
DOCKER = DEPLOY / "docker"
KUBERNETES = DEPLOY / "kubernetes"

DASHBOARD = "fastworker-dashboard"
DEFAULT_DRAIN_TIMEOUT = 3.0

NO_CONFIG = Path("/nonexistent/fastworker-examples")
"""A working directory with no configuration file."""

# Flags the examples use that are being added to `fastworker` alongside them: the
# subworker's supervisor (--processes and its recycling limits). Accepted here until
# `command_flags()` lists them; then delete them from this set
# (test_pending_flags_are_still_pending says which). Each takes a value.
PENDING_FLAGS: frozenset[tuple[str, str]] = frozenset()

ENV_VARIABLE = re.compile(r"\bFASTWORKER_[A-Z0-9_]*[A-Z0-9]\b")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


# --- the programs' command lines ---------------------------------------------------------


def _real_flags() -> set[tuple[str, str]]:
    from fastworker.server.cli import command_flags

    return set(command_flags())


def _dashboard_parser() -> argparse.ArgumentParser:
    from fastworker.dashboard.cli import build_parser

    return build_parser()


def _dashboard_flags() -> set[str]:
    return {
        flag
        for action in _dashboard_parser()._actions  # pyright: ignore[reportPrivateUsage]
        for flag in action.option_strings
        if flag not in ("-h", "--help", "--version")
    }


def accepted_flags() -> dict[str, set[str]]:
    """Each command (`fastworker`'s subcommands, and fastworker-dashboard) with its flags."""
    accepted: dict[str, set[str]] = {}
    for command, flag in _real_flags() | PENDING_FLAGS:
        accepted.setdefault(command, set()).add(flag)
    accepted[DASHBOARD] = _dashboard_flags()
    return accepted


def env_name(flag: str) -> str:
    """The variable of a `fastworker` flag: --foo-bar is FASTWORKER_FOO_BAR, --no-x FASTWORKER_X."""
    name = flag.lstrip("-").replace("-", "_").upper()
    return "FASTWORKER_" + name.removeprefix("NO_")


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Generator[None, None, None]:
    """os.environ with no FASTWORKER_* variable but these."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}
    with mock.patch.dict(os.environ, {**kept, **variables}, clear=True):
        yield


def _dashboard_reads(variable: str) -> bool:
    """Whether fastworker-dashboard takes a setting from this variable (its names differ
    from the flags': --access-token is FASTWORKER_DASHBOARD_TOKEN)."""
    return _parse(DASHBOARD, [], {}) != _parse(DASHBOARD, [], {variable: "1234"})


def _placeholder_secret(_flag: str, path: str) -> str:
    return f"<{path}>"


def _parse(command: str, args: Sequence[str], env: Mapping[str, str]) -> argparse.Namespace:
    """What the program makes of a command line under exactly this environment, with no
    configuration file; a secret's file is not read (it exists only where deployed)."""
    with (
        _environment(env),
        mock.patch("fastworker.client.config.read_secret", _placeholder_secret),
    ):
        if command == DASHBOARD:
            from fastworker.dashboard.cli import parse_command_line

            return parse_command_line(list(args), os.environ, NO_CONFIG)
        from fastworker.server.cli import parse_command_line

        return parse_command_line([command, *args], os.environ, NO_CONFIG)


def known_variable(variable: str) -> bool:
    names = {env_name(flag) for _, flag in _real_flags() | PENDING_FLAGS}
    return variable in names or _dashboard_reads(variable)


@dataclass
class Invocation:
    """One command line of an example: the command (a `fastworker` subcommand, or
    fastworker-dashboard), its arguments and the environment it is given."""

    where: str
    command: str
    args: list[str]
    env: dict[str, str]

    @classmethod
    def of(cls, where: str, argv: Sequence[str], env: Mapping[str, str]) -> Invocation:
        assert argv, f"{where}: empty command"
        program = PurePosixPath(argv[0]).name
        if program == "fastworker":
            assert len(argv) > 1, f"{where}: fastworker without a command"
            return cls(where, argv[1], list(argv[2:]), dict(env))
        assert program == DASHBOARD, f"{where}: runs {argv[0]!r}, not a fastworker program"
        return cls(where, DASHBOARD, list(argv[1:]), dict(env))

    def flags(self) -> list[str]:
        return [arg.split("=", 1)[0] for arg in self.args if arg.startswith("--")]

    def value(self, flag: str) -> str | None:
        """The value given to a flag (its last one), else None."""
        found = None
        for index, arg in enumerate(self.args):
            if arg == flag and index + 1 < len(self.args):
                found = self.args[index + 1]
            elif arg.startswith(flag + "="):
                found = arg.split("=", 1)[1]
        if found is None:
            pending = [(c, f) for c, f in PENDING_FLAGS if c == self.command and f == flag]
            if pending:
                found = self.env.get(env_name(flag))
        return found

    def drain_timeout(self) -> float:
        raw = self.value("--drain-timeout") or self.env.get("FASTWORKER_DRAIN_TIMEOUT")
        return float(raw) if raw is not None else DEFAULT_DRAIN_TIMEOUT

    def health_port(self) -> int | None:
        """The port its /healthz answers on: --health-port, or the dashboard's --port."""
        raw = self.value("--port") if self.command == DASHBOARD else self.value("--health-port")
        return int(raw) if raw is not None else None

    def _parse(self, env: Mapping[str, str]) -> argparse.Namespace:
        return _parse(self.command, _without_pending(self.command, self.args), env)

    def problems(self) -> list[str]:
        """What its program would refuse, or what in it the program would not read."""
        accepted = accepted_flags()
        if self.command not in accepted:
            return [f"{self.where}: no command {self.command!r}"]
        found = [
            f"{self.where}: {self.command} has no flag {flag}"
            for flag in self.flags()
            if flag not in accepted[self.command]
        ]
        if found:
            return found
        try:
            parsed = self._parse(self.env)
        except SystemExit:
            return [f"{self.where}: {self.command} refuses {self.args} (see stderr)"]
        pending_names = {env_name(f) for c, f in PENDING_FLAGS if c == self.command}
        for variable in self.env:
            if not variable.startswith("FASTWORKER_") or variable in pending_names:
                continue
            without = {k: v for k, v in self.env.items() if k != variable}
            try:
                unchanged = self._parse(without) == parsed
            except SystemExit:
                unchanged = False  # a required flag it set is missing without it
            if unchanged:
                found.append(f"{self.where}: {self.command} does not read {variable}")
        return found


def _without_pending(command: str, args: Sequence[str]) -> list[str]:
    """The arguments less the pending flags and their values, for today's parser."""
    pending = {flag for c, flag in PENDING_FLAGS if c == command}
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in pending:
            skip = True
        elif arg.split("=", 1)[0] not in pending:
            kept.append(arg)
    return kept


def _url_port(text: str) -> tuple[int, str]:
    """The port and path of the first http:// URL in a health check command."""
    match = re.search(r"http://[^\s'\"]+", text)
    assert match, f"no http:// URL in {text!r}"
    url = urlsplit(match.group(0))
    assert url.hostname in LOOPBACK_HOSTS, text
    assert url.port is not None, text
    return url.port, url.path


def test_the_checks_catch_an_unknown_flag_and_an_unread_variable() -> None:
    good = Invocation.of("t", ["fastworker", "subworker", "--worker-id", "w"], {})
    assert good.problems() == []
    assert Invocation.of("t", ["fastworker", "subworker", "--worker-idd", "w"], {}).problems()
    assert Invocation.of("t", ["fastworker", "subworker", "--concurrency", "x"], {}).problems()
    read = {"FASTWORKER_AUTH_TOKEN_FILE": "/run/secrets/t"}
    assert (
        Invocation.of("t", ["fastworker", "subworker", "--worker-id", "w"], read).problems() == []
    )
    unread = {"FASTWORKER_JOURNAL": "/var/lib/j"}
    assert Invocation.of("t", ["fastworker", "subworker", "--worker-id", "w"], unread).problems()
    assert known_variable("FASTWORKER_DASHBOARD_TOKEN_FILE")  # fastworker-dashboard's name
    assert known_variable("FASTWORKER_LOCAL_EXECUTION")  # --no-local-execution
    assert not known_variable("FASTWORKER_NO_LOCAL_EXECUTION")


def test_pending_flags_are_still_pending() -> None:
    arrived = sorted(PENDING_FLAGS & _real_flags())
    if arrived:
        pytest.skip(f"these flags exist now: remove them from PENDING_FLAGS: {arrived}")


def test_every_fastworker_variable_in_the_examples_is_read_by_a_program() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) >= 7
    unknown = sorted(
        f"{path.relative_to(ROOT)}: {variable}"
        for path in files
        for variable in set(ENV_VARIABLE.findall(path.read_text()))
        if not known_variable(variable)
    )
    assert unknown == []


# --- YAML ------------------------------------------------------------------------------


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert all(isinstance(d, dict) for d in documents), path
    return cast("list[dict[str, Any]]", documents)


def test_every_yaml_file_parses() -> None:
    paths = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert {p.name for p in paths} >= {"compose.yaml", "fastworker.yaml"}
    for path in paths:
        assert _yaml_documents(path), path


# --- Docker Compose --------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    (compose,) = _yaml_documents(DOCKER / "compose.yaml")
    return compose


def _compose_services() -> dict[str, dict[str, Any]]:
    return cast("dict[str, dict[str, Any]]", _compose()["services"])


def _service_invocation(name: str, service: Mapping[str, Any]) -> Invocation:
    command = service["command"]
    assert isinstance(command, list), f"{name}: give the command as a list (exec form)"
    environment = service.get("environment", {})
    assert isinstance(environment, dict), f"{name}: give the environment as a mapping"
    argv = [str(a) for a in cast("list[object]", command)]
    env = {str(k): str(v) for k, v in cast("dict[object, object]", environment).items()}
    return Invocation.of(f"compose.yaml {name}", argv, env)


def _seconds(text: object) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)?", str(text))
    assert match, f"not a duration in seconds or minutes: {text!r}"
    return float(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_compose_commands_are_accepted() -> None:
    services = _compose_services()
    problems = [p for n, s in services.items() for p in _service_invocation(n, s).problems()]
    assert problems == []


def test_compose_has_each_role() -> None:
    commands = [_service_invocation(n, s).command for n, s in _compose_services().items()]
    assert commands.count("control-plane") == 1  # one control plane per journal
    assert commands.count("subworker") >= 2
    assert commands.count(DASHBOARD) == 1


def test_compose_control_plane_listens_with_role_tokens_and_keeps_its_journal() -> None:
    compose = _compose()
    services = _compose_services()
    (name,) = [
        n for n, s in services.items() if _service_invocation(n, s).command == "control-plane"
    ]
    service = services[name]
    plane = _service_invocation(name, service)
    assert plane.value("--address") == "tcp://0.0.0.0:5555"
    assert {"FASTWORKER_WORKER_TOKEN_FILE", "FASTWORKER_CLIENT_TOKEN_FILE"} <= set(plane.env)
    journal = plane.value("--journal")
    assert journal is not None
    mounts = [str(v).split(":") for v in service["volumes"]]
    (volume,) = [m[0] for m in mounts if PurePosixPath(journal).parent == PurePosixPath(m[1])]
    assert volume in compose["volumes"], "the journal's volume is a named volume"


def test_compose_volumes_and_secrets_exist() -> None:
    compose = _compose()
    declared_volumes = set(compose.get("volumes") or {})
    declared_secrets = set(compose.get("secrets") or {})
    for name, service in _compose_services().items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
        secrets = {str(s) for s in service.get("secrets", [])}
        assert secrets <= declared_secrets, name
        for variable, value in _service_invocation(name, service).env.items():
            if variable.endswith("_FILE"):
                path = PurePosixPath(value)
                assert path.parent == PurePosixPath("/run/secrets"), f"{name}: {variable}"
                assert path.name in secrets, f"{name}: {variable} names a secret it lacks"


def test_compose_health_checks_ask_the_declared_ports() -> None:
    for name, service in _compose_services().items():
        invocation = _service_invocation(name, service)
        check = service.get("healthcheck")
        assert check is not None, f"{name}: no healthcheck"
        port, path = _url_port(" ".join(str(part) for part in check["test"]))
        assert port == invocation.health_port(), f"{name}: checks {port}"
        assert path in ("/healthz", "/readyz"), name


def test_compose_dependencies_wait_for_health() -> None:
    services = _compose_services()
    for name, service in services.items():
        for target, condition in cast("dict[str, Any]", service.get("depends_on", {})).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {target}"
            assert "healthcheck" in services[target], f"{name} waits on {target}, unchecked"
    dependents = [n for n, s in services.items() if s.get("depends_on")]
    assert len(dependents) == len(services) - 1  # all but the control plane


def test_compose_subworkers_supervise_and_drain() -> None:
    ids: list[str | None] = []
    for name, service in _compose_services().items():
        invocation = _service_invocation(name, service)
        if invocation.command != "subworker":
            continue
        ids.append(invocation.value("--worker-id"))
        assert invocation.value("--processes") is not None, name
        assert _seconds(service["stop_grace_period"]) > invocation.drain_timeout(), name
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM", name
    assert None not in ids
    assert len(set(ids)) == len(ids), "worker ids must be unique"


def test_compose_dashboard_off_loopback_has_an_access_token() -> None:
    for name, service in _compose_services().items():
        invocation = _service_invocation(name, service)
        if invocation.command == DASHBOARD and invocation.value("--host") not in LOOPBACK_HOSTS:
            flags = set(invocation.flags())
            assert {"FASTWORKER_DASHBOARD_TOKEN", "FASTWORKER_DASHBOARD_TOKEN_FILE"} & set(
                invocation.env
            ) or {"--access-token", "--access-token-file"} & flags, name


# --- Dockerfile ------------------------------------------------------------------------

DOCKERFILE_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
}  # fmt: skip


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        current += " " + stripped.removesuffix("\\") if current else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            keyword, _, rest = current.partition(" ")
            instructions.append((keyword, rest.strip()))
            current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    return instructions


def test_dockerfile_instructions_are_valid() -> None:
    instructions = _dockerfile()
    assert [k for k, _ in instructions if k.upper() not in DOCKERFILE_INSTRUCTIONS] == []
    assert [k for k, _ in instructions if k != k.upper()] == []
    assert instructions[0] == ("FROM", "python:3.12-slim")


def test_dockerfile_runs_as_a_user_that_is_not_root() -> None:
    users = [rest for keyword, rest in _dockerfile() if keyword == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_installs_the_server_and_the_task_module() -> None:
    instructions = _dockerfile()
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install .*fastworker-server\[dashboard,cron\]", runs)
    copies = [rest.split() for keyword, rest in instructions if keyword == "COPY"]
    assert any("tasks.py" in parts[:-1] for parts in copies)


def test_dockerfile_health_check_asks_the_health_port_of_its_command() -> None:
    instructions = _dockerfile()
    (check,) = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert "CMD" in check
    (cmd,) = [rest for keyword, rest in instructions if keyword == "CMD"]
    invocation = Invocation.of("Dockerfile CMD", cast("list[str]", yaml.safe_load(cmd)), {})
    assert invocation.problems() == []
    if "fastworker ping" not in check:
        port, path = _url_port(check)
        assert path == "/healthz"
        assert port == invocation.health_port()


def test_the_example_task_module_imports_and_registers_its_tasks() -> None:
    code = (
        "import tasks\n"
        "from fastworker.client import default_registry\n"
        "print(' '.join(sorted(default_registry.names())))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=DOCKER,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["add", "greet"]


# --- Kubernetes ------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    documents = _yaml_documents(KUBERNETES / "fastworker.yaml")
    for document in documents:
        assert {"apiVersion", "kind", "metadata"} <= set(document), document
        assert "namespace" not in document["metadata"], "no namespace: applied with -n"
    return documents


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _manifests() if d["kind"] == kind]


def _workloads() -> list[dict[str, Any]]:
    return _of_kind("StatefulSet") + _of_kind("Deployment")


def _pod(workload: Mapping[str, Any]) -> dict[str, Any]:
    return cast("dict[str, Any]", workload["spec"]["template"]["spec"])


def _containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    return cast("list[dict[str, Any]]", _pod(workload)["containers"])


def _container_invocation(workload: Mapping[str, Any], container: Mapping[str, Any]) -> Invocation:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", f"<{item['name']} from valueFrom>"))
    argv = [str(a) for a in [*container.get("command", []), *container.get("args", [])]]
    where = f"fastworker.yaml {workload['metadata']['name']}/{container['name']}"
    return Invocation.of(where, argv, env)


def _invocations() -> list[tuple[dict[str, Any], dict[str, Any], Invocation]]:
    return [(w, c, _container_invocation(w, c)) for w in _workloads() for c in _containers(w)]


def test_kubernetes_has_each_object() -> None:
    kinds = sorted(d["kind"] for d in _manifests())
    assert kinds == ["Deployment", "Deployment", "Secret", "Service", "Service", "StatefulSet"]
    commands = sorted(i.command for _, _, i in _invocations())
    assert commands == ["control-plane", DASHBOARD, "subworker"]


def test_kubernetes_commands_are_accepted() -> None:
    assert [p for _, _, i in _invocations() for p in i.problems()] == []


def test_kubernetes_secret_holds_clearly_marked_placeholders() -> None:
    (secret,) = _of_kind("Secret")
    values = cast("dict[str, str]", secret["stringData"])
    assert values
    assert [k for k, v in values.items() if "REPLACE" not in v] == []


def test_kubernetes_control_plane_is_one_stateful_replica_with_its_journal() -> None:
    (stateful,) = _of_kind("StatefulSet")
    assert stateful["spec"]["replicas"] == 1  # one control plane per journal
    ((_, container, plane),) = [x for x in _invocations() if x[0]["kind"] == "StatefulSet"]
    assert plane.command == "control-plane"
    assert plane.value("--address") == "tcp://0.0.0.0:5555"
    assert {"FASTWORKER_WORKER_TOKEN_FILE", "FASTWORKER_CLIENT_TOKEN_FILE"} <= set(plane.env)
    claims = {t["metadata"]["name"] for t in stateful["spec"]["volumeClaimTemplates"]}
    journal = plane.value("--journal")
    assert journal is not None
    (mount,) = [
        m
        for m in container["volumeMounts"]
        if PurePosixPath(journal).parent == PurePosixPath(m["mountPath"])
    ]
    assert mount["name"] in claims
    services = {s["metadata"]["name"] for s in _of_kind("Service")}
    assert stateful["spec"]["serviceName"] in services


def test_kubernetes_volumes_exist_and_secret_files_are_mounted() -> None:
    (secret,) = _of_kind("Secret")
    secret_keys = set(secret["stringData"])
    for workload, container, invocation in _invocations():
        pod = _pod(workload)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        files: set[PurePosixPath] = set()
        for mount in container.get("volumeMounts", []):
            name = mount["name"]
            assert name in volumes or name in claims, f"{invocation.where}: no volume {name}"
            source = volumes.get(name, {}).get("secret")
            if source is None:
                continue
            assert source["secretName"] == secret["metadata"]["name"], invocation.where
            for item in source.get("items", []):
                assert item["key"] in secret_keys, f"{invocation.where}: {item['key']}"
                files.add(PurePosixPath(mount["mountPath"]) / item["path"])
        for variable, value in invocation.env.items():
            if variable.endswith("_FILE"):
                assert PurePosixPath(value) in files, f"{invocation.where}: {variable}"


def _container_port(container: Mapping[str, Any], port: object) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return cast("int", number)


def test_kubernetes_probes_ask_the_declared_health_port() -> None:
    for _, container, invocation in _invocations():
        readiness = container["readinessProbe"]["httpGet"]
        assert _container_port(container, readiness["port"]) == invocation.health_port()
        liveness = container["livenessProbe"]
        if "httpGet" in liveness:
            port = _container_port(container, liveness["httpGet"]["port"])
            assert port == invocation.health_port(), invocation.where
            assert liveness["httpGet"]["path"] == "/healthz", invocation.where
        else:
            port = _container_port(container, liveness["tcpSocket"]["port"])
            assert port == invocation.health_port(), invocation.where
        if invocation.command == DASHBOARD:
            assert readiness["path"] == "/healthz"
        else:
            assert readiness["path"] == "/readyz", invocation.where
            # The kubelet probes the pod's address: loopback would fail every probe.
            assert invocation.value("--health-host") == "0.0.0.0", invocation.where


def test_kubernetes_grace_period_outlasts_the_drain() -> None:
    drains = [i.drain_timeout() for _, _, i in _invocations() if i.command == "subworker"]
    for workload, _, invocation in _invocations():
        if invocation.command in ("control-plane", "subworker"):
            grace = _pod(workload)["terminationGracePeriodSeconds"]
            assert grace > max(drains), invocation.where


def test_kubernetes_subworkers_have_unique_ids_and_room_for_their_children() -> None:
    ((_, container, worker),) = [x for x in _invocations() if x[2].command == "subworker"]
    assert worker.value("--worker-id") is None
    (item,) = [e for e in container["env"] if e["name"] == "FASTWORKER_WORKER_ID"]
    assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    processes = worker.value("--processes")
    per_child = worker.value("--max-memory-per-child")
    assert processes is not None
    limit = str(container["resources"]["limits"]["memory"])
    units = {"Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Mi|Gi)", limit)
    assert match, limit
    if per_child is not None:
        assert int(match.group(1)) * units[match.group(2)] > int(processes) * int(per_child)


def test_kubernetes_selectors_and_service_ports_match() -> None:
    workloads = _workloads()
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in _of_kind("Service"):
        selector = service["spec"]["selector"].items()
        (target,) = [
            w for w in workloads if selector <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        declared = {
            key
            for container in _containers(target)
            for p in container.get("ports", [])
            for key in (p["containerPort"], p.get("name"))
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared, service["metadata"]["name"]


# --- systemd ---------------------------------------------------------------------------

UNITS = (
    "fastworker-control-plane.service",
    "fastworker-subworker@.service",
    "fastworker-dashboard.service",
)


class _MultiValues(dict[str, Any]):
    """A configparser dict that keeps every value of a repeated key (systemd allows
    LoadCredential= and Environment= many times), one a line."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(cast("list[str]", value))
        else:
            super().__setitem__(key, value)


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        strict=False,
        interpolation=None,
        dict_type=_MultiValues,  # pyright: ignore[reportArgumentType]
        empty_lines_in_values=False,
    )
    parser.optionxform = str  # pyright: ignore[reportAttributeAccessIssue] - keys keep their case
    parser.read_string((SYSTEMD / name).read_text(), source=name)
    return parser


def _values(unit: configparser.ConfigParser, section: str, key: str) -> list[str]:
    raw = unit.get(section, key, fallback="")
    return [line for line in raw.splitlines() if line.strip()]


def _exec_start(name: str) -> Invocation:
    unit = _unit(name)
    raw = unit.get("Service", "ExecStart").replace("\\\n", " ")
    assert "\n" not in raw.strip(), f"{name}: one ExecStart= line (continued with \\)"
    argv = shlex.split(raw.lstrip("-@:+!"))
    env: dict[str, str] = {}
    for line in _values(unit, "Service", "Environment"):
        for assignment in shlex.split(line):
            key, _, value = assignment.partition("=")
            env[key] = value
    return Invocation.of(name, argv, env)


def _stop_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", text.strip())
    assert match, f"TimeoutStopSec={text}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit_has_its_sections_and_settings(name: str) -> None:
    unit = _unit(name)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service.get("User", "root") not in ("root", "0")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if _exec_start(name).command in ("control-plane", "subworker"):
        # A stop is never cut short: systemd waits longer than a subworker drains.
        drains = [_exec_start(u).drain_timeout() for u in UNITS if "subworker" in u]
        assert _stop_seconds(service["TimeoutStopSec"]) > max(drains)


@pytest.mark.parametrize("name", UNITS)
def test_systemd_exec_start_is_accepted(name: str) -> None:
    assert _exec_start(name).problems() == []


@pytest.mark.parametrize("name", UNITS)
def test_systemd_credentials_are_loaded(name: str) -> None:
    unit = _unit(name)
    loaded = {line.split(":", 1)[0] for line in _values(unit, "Service", "LoadCredential")}
    invocation = _exec_start(name)
    for variable, value in invocation.env.items():
        if variable.endswith("_FILE"):
            assert value.startswith("%d/"), f"{name}: {variable} is not a credential"
            assert value.removeprefix("%d/") in loaded, f"{name}: {variable}"
    assert not [a for a in invocation.args if "token" in a and not a.startswith("--")], (
        "no secret on the command line"
    )


def test_systemd_control_plane_keeps_its_journal_in_its_state_directory() -> None:
    unit = _unit("fastworker-control-plane.service")
    plane = _exec_start("fastworker-control-plane.service")
    assert plane.command == "control-plane"
    assert unit["Service"]["StateDirectory"] == "fastworker"
    state = PurePosixPath("/var/lib/fastworker")
    journal = plane.value("--journal")
    assert journal is not None
    assert PurePosixPath(journal).parent == state
    assert str(state) in unit["Service"]["ReadWritePaths"].split()
    assert plane.health_port() is not None
    assert {"FASTWORKER_WORKER_TOKEN_FILE", "FASTWORKER_CLIENT_TOKEN_FILE"} <= set(plane.env)


def test_systemd_subworker_is_a_template_that_reloads_with_sighup() -> None:
    unit = _unit("fastworker-subworker@.service")
    worker = _exec_start("fastworker-subworker@.service")
    assert worker.command == "subworker"
    worker_id = worker.value("--worker-id")
    assert worker_id is not None
    assert "%i" in worker_id
    assert worker.value("--processes") is not None
    assert re.fullmatch(r"(/usr)?/bin/kill -HUP \$MAINPID", unit["Service"]["ExecReload"])


def test_systemd_dashboard_runs_the_dashboard() -> None:
    assert _exec_start("fastworker-dashboard.service").command == DASHBOARD


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """With the programs' paths pointed at a stand-in, since none is installed here; a
    template is verified as an instance."""
    stand_in = tmp_path / "program"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    paths: list[Path] = []
    for name in UNITS:
        text = re.sub(
            r"^ExecStart=\S+", f"ExecStart={stand_in}", (SYSTEMD / name).read_text(), flags=re.M
        )
        target = tmp_path / name.replace("@.", "@1.")
        target.write_text(text)
        paths.append(target)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--generators=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
