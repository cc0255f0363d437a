"""The systemd unit in deploy/systemd: ``systemd-analyze verify`` accepts it, its hardening is
there and scores as such, and its credentials match what its example config reads.

``systemd-analyze`` comes from Debian's ``systemd`` package; these tests skip without it, except in
CI, where they fail.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "messaging-stats-exporter.service"
CONFIG = ROOT / "deploy" / "systemd" / "config.yaml"
README = ROOT / "README.md"
ETC = "/etc/messaging-stats-exporter"
BINARY = "/opt/messaging-stats-exporter/bin/messaging-stats-exporter"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is required in CI (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return path


def directives(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit, by key, every value in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def unit_copy(tmp_path: Path) -> Path:
    """The unit with its ExecStart binary replaced by an executable that exists (verify checks
    that it does), under the same file name."""
    stub = tmp_path / "bin" / "messaging-stats-exporter"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert BINARY in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(BINARY, str(stub)))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_unit_scores_as_hardened(tmp_path: Path) -> None:
    """``systemd-analyze security`` rates the exposure 0.0 (locked down) to 10.0 (none of it); its
    threshold is in tenths: 20 fails above 2.0 (the unit scores about 1.1; a unit with no
    hardening scores 9.6)."""
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=yes",
            "--threshold=20",
            str(unit_copy(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_the_unit_runs_the_exporter_hardened_with_reload_and_restart() -> None:
    unit = directives(UNIT.read_text())
    assert unit["ExecStart"] == [f"{BINARY} --config /etc/messaging-stats-exporter/config.yaml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # a bad config: restarting cannot help
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert unit.get(key) == [value], key
    assert unit["CapabilityBoundingSet"] == [""]


def test_every_credential_the_config_reads_is_loaded_and_the_config_is_valid(
    tmp_path: Path,
) -> None:
    """The config names its secrets ``${CREDENTIALS_DIRECTORY}/NAME``; the unit loads exactly those
    names; with systemd's variable set, the exporter accepts the config (``--check-config``)."""
    loaded = {}
    for value in directives(UNIT.read_text())["LoadCredential"]:
        name, _, source = value.partition(":")
        assert source.startswith("/etc/messaging-stats-exporter/secrets/"), value
        loaded[name] = source
    config_text = CONFIG.read_text()
    read = set(re.findall(r"_file:\s*\$\{CREDENTIALS_DIRECTORY\}/([\w.-]+)", config_text))
    assert read, "the example config reads no credential"
    assert read == set(loaded)

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in loaded:
        (credentials / name).write_text(f"secret-of-{name}\n")
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(CONFIG), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK, 4 target(s)" in result.stdout
    assert "secret-of-" not in result.stdout + result.stderr

    # Without systemd's variable, the error names the variable and the keys.
    env.pop("CREDENTIALS_DIRECTORY")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(CONFIG), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 2
    assert "CREDENTIALS_DIRECTORY" in result.stderr
    quoted = "environment variable CREDENTIALS_DIRECTORY is not set"  # as the README says
    assert quoted in result.stderr
    assert f"`{quoted}`" in README.read_text()


def readme_check_config_line() -> str:
    """The one command of the README's "### systemd" section that runs ``--check-config``."""
    text = README.read_text()
    match = re.search(r"^### systemd\n(.*?)(?=^##)", text, re.M | re.S)
    assert match, "README.md has no '### systemd' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", match.group(1), re.M | re.S)
    lines = [line for block in blocks for line in block.splitlines() if "--check-config" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_readmes_check_config_command_works_as_written(tmp_path: Path) -> None:
    """The README's line, run with its paths moved under a scratch directory: the config that its
    install step puts in /etc, the secrets directory with a file per credential, the exporter that
    its install step puts in /opt (here, this interpreter's)."""
    line = readme_check_config_line()
    assert line.startswith(f"sudo env CREDENTIALS_DIRECTORY={ETC}/secrets {BINARY} "), line
    assert line.endswith(f"--config {ETC}/config.yaml --check-config"), line
    etc = tmp_path / "etc" / "messaging-stats-exporter"
    (etc / "secrets").mkdir(parents=True)
    shutil.copy(CONFIG, etc / "config.yaml")
    for value in directives(UNIT.read_text())["LoadCredential"]:
        name, _, source = value.partition(":")
        assert source == f"{ETC}/secrets/{name}", "a credential is named as its file"
        (etc / "secrets" / name).write_text(f"secret-of-{name}\n")
    installed = Path(sys.executable).parent / "messaging-stats-exporter"
    exporter = (
        shlex.quote(str(installed))
        if installed.is_file()
        else f"{shlex.quote(sys.executable)} -m exporter"
    )
    command = line.replace(BINARY, exporter).replace(ETC, shlex.quote(str(etc)))
    # sudo reads the root-only secrets; here they are this user's own.
    command = command.removeprefix("sudo ")
    result = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{etc}/config.yaml: OK, 4 target(s)")
    assert "secret-of-" not in result.stdout + result.stderr
