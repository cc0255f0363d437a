"""The README works as written: its quick-start demo command, run exactly as it stands in a fresh
copy of the repository, installs the exporter and serves metrics on port 10057; its test command
is the one .ci/run reads from it and runs; every relative link in README.md and docs/*.md points
at a file (and heading) that exists; the docs describe the exporter, not the history of its
making."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEMO_PORT = 10057
INSTALL_AND_START_BOUND = 300.0
"""Seconds for the demo command to create the venv, install from the package index and serve."""
OPERATOR_DOCS = [
    README,
    ROOT / "docs" / "configuration.md",
    ROOT / "docs" / "metrics.md",
    ROOT / "docs" / "development.md",
    ROOT / "docs" / "runbook.md",
    ROOT / "docs" / "scaling.md",
]


def section(text: str, heading: str) -> str:
    """The text of the ``## heading`` section, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def quick_start_commands() -> tuple[str, str]:
    """The first two ```sh blocks of "Quick start": the demo, then the tests."""
    blocks = re.findall(
        r"^```sh\n(.*?)^```", section(README.read_text(), "Quick start"), re.M | re.S
    )
    assert len(blocks) >= 2, "Quick start must hold the demo and the test command as ```sh blocks"
    return blocks[0].strip(), blocks[1].strip()


def test_the_quick_start_commands_are_one_line_each_and_use_a_venv() -> None:
    demo, tests = quick_start_commands()
    for command in (demo, tests):
        assert "\n" not in command, f"not one line: {command!r}"
        assert command.startswith("python3 -m venv .venv && "), command
        # Debian's and Ubuntu's system pip refuses to install: everything goes through .venv.
        assert re.search(r"(^|&& )(pip|pip3|python3? -m pip) ", command) is None, command
        assert ".venv/bin/pip install " in command, command
    assert demo.endswith(".venv/bin/messaging-stats-exporter --demo"), demo
    assert "install . " in demo
    assert "-e '.[test]'" in tests
    assert tests.endswith(".venv/bin/python -m pytest"), tests


def test_ci_runs_the_readme_test_command_as_written() -> None:
    """.ci/run reads the command it runs from README.md: what it finds is the command shown."""
    _, tests = quick_start_commands()
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--print-test-command"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == tests + "\n"
    # It is the block that follows the paragraph saying so.
    quick_start = section(README.read_text(), "Quick start")
    paragraph = quick_start.index("Run the **tests**")
    assert quick_start.index(f"```sh\n{tests}\n```") > paragraph


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("## Quick start", "## Quick look"), "no '## Quick start' section"),
        (("Run the **tests**", "Run the tests"), "0 paragraphs beginning with"),
        (("\n```sh\npython3 -m venv .venv && .venv/bin/pip install -e", "\n```\npython3"), "```sh"),
        ((".venv/bin/python -m pytest\n```", ".venv/bin/python -m pytest\nmore\n```"), "2 lines"),
    ],
    ids=["no section", "no paragraph", "no sh block", "two lines"],
)
def test_ci_refuses_a_readme_whose_test_command_it_cannot_find(
    tmp_path: Path, change: tuple[str, str], error: str
) -> None:
    """Where the README's shape changed, CI fails loudly rather than run something else."""
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    text = README.read_text(encoding="utf-8")
    assert change[0] in text
    (tmp_path / "README.md").write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    result = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run"), "--print-test-command"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "cannot find the README's test command" in result.stderr
    assert error in result.stderr


def repository_copy(destination: Path) -> None:
    """The repository's files as a fresh clone would have them, from the working tree: tracked
    files and new ones not ignored (no .venv, caches or build output)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body.decode()
    except (urllib.error.URLError, OSError):
        return None


@pytest.mark.slow
def test_the_demo_command_works_as_written(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        message = "needs git and the repository's .git to copy its files as a clone has them"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if port_in_use(DEMO_PORT):
        message = f"port {DEMO_PORT}, the demo's default, is taken (is a demo running?)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    demo, _ = quick_start_commands()
    repo = tmp_path / "repo"
    repo.mkdir()
    repository_copy(repo)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    output = tmp_path / "output.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "-c", demo],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + INSTALL_AND_START_BOUND
        body: str | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"the demo command exited with {process.returncode}:\n"
                    + output.read_text(errors="replace")[-5000:]
                )
            body = scrape(f"http://127.0.0.1:{DEMO_PORT}/metrics")
            if body is not None and re.search(
                r"^messaging_exporter_collect_success\{.*\} 1(\.0)?$", body, re.M
            ):
                break
            time.sleep(1.0)
        else:
            pytest.fail(
                f"no successful collection on :{DEMO_PORT}/metrics within "
                f"{INSTALL_AND_START_BOUND:g}s; output:\n"
                + output.read_text(errors="replace")[-5000:]
            )
        assert (repo / ".venv" / "bin" / "messaging-stats-exporter").exists()
        status = scrape(f"http://127.0.0.1:{DEMO_PORT}/")
        assert status is not None
        assert "messaging-stats-exporter" in status
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def strip_code(text: str) -> str:
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]|\[|\]\([^)]*\)", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", strip_code(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        linked = (doc.parent / path_part).resolve() if path_part else doc
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links to what does not exist: {broken}"


HISTORY = re.compile(
    r"\bissue\s*#?\d+|\bsessions?\b|\btarget \d+\b|sched_setattr|time slices?\b|--single-process"
    r"|\bMISS\b",
    re.I,
)


@pytest.mark.parametrize("doc", OPERATOR_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_describe_the_exporter_not_its_history(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    if doc == README:
        # The upgrade notes must say that the flag is gone, and only they may name it.
        upgrading = section(text, "Upgrading")
        assert "`--single-process` was removed" in upgrading
        assert "`httptools` dependency is gone" in upgrading
        text = text.replace(upgrading, "")
    found = sorted({match.group(0) for match in HISTORY.finditer(text)})
    assert not found, f"{doc.relative_to(ROOT)} speaks of {found}"
