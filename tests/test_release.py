"""One version for the exporter, its image and its chart: pyproject.toml's `version`, the chart's
`version` and `appVersion`, the installed package's metadata (the exporter's `--version` and
`messaging_exporter_build_info`) and the newest release in CHANGELOG.md, a Keep a Changelog file
with semantic versions. The README's upgrade notes name the versions they are between."""

from __future__ import annotations

import datetime
import re
import tomllib
from pathlib import Path

import yaml

import exporter

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = ROOT / "CHANGELOG.md"
CHART_YAML = ROOT / "helm" / "messaging-stats-exporter" / "Chart.yaml"
SEMVER = r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
RELEASE = re.compile(rf"^## \[({SEMVER})\] - (\d{{4}}-\d{{2}}-\d{{2}})$")
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def project_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    version: str = data["project"]["version"]
    return version


def releases() -> list[tuple[str, datetime.date]]:
    """CHANGELOG.md's released versions with their dates, newest first as written."""
    found = []
    for line in CHANGELOG.read_text(encoding="utf-8").splitlines():
        match = RELEASE.match(line)
        if match:
            found.append((match.group(1), datetime.date.fromisoformat(match.group(5))))
    return found


def key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_pyproject_the_chart_and_the_changelog_name_one_version() -> None:
    version = project_version()
    assert re.fullmatch(SEMVER, version), version
    chart = yaml.safe_load(CHART_YAML.read_text(encoding="utf-8"))
    assert chart["version"] == version, "Chart.yaml version"
    assert chart["appVersion"] == version, "Chart.yaml appVersion"
    assert releases()[0][0] == version, "CHANGELOG.md's newest release"


def test_the_installed_package_reports_the_version() -> None:
    """exporter.__version__ comes from the installed metadata (importlib.metadata): an install
    older than pyproject.toml's version reports the old one, in --version and build_info."""
    assert exporter.__version__ == project_version(), (
        "the installed metadata is stale: pip install -e '.[test]' again"
    )


def test_the_changelog_keeps_a_changelog() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    assert "[Keep a Changelog]" in text
    assert "[Semantic Versioning]" in text
    versions = re.findall(r"^## (.*)$", text, re.MULTILINE)
    assert versions[0] == "[Unreleased]", "Unreleased comes first"
    assert all(RELEASE.match(f"## {heading}") for heading in versions[1:]), versions
    found = releases()
    assert len(found) >= 2
    numbers = [key(version) for version, _ in found]
    assert numbers == sorted(numbers, reverse=True)
    assert len(set(numbers)) == len(numbers)
    dates = [date for _, date in found]
    assert dates == sorted(dates, reverse=True)
    kinds = re.findall(r"^### (.*)$", text, re.MULTILINE)
    assert kinds
    assert set(kinds) <= KINDS, set(kinds) - KINDS
    # Every version section says something, under a kind.
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[2:]:
        assert re.search(r"^### .*\n\n- ", section, re.MULTILINE), section.splitlines()[0]


def test_the_readmes_upgrade_notes_name_their_versions_and_link_the_changelog() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    upgrading = text.split("\n## Upgrading\n", 1)[1].split("\n## ", 1)[0]
    assert "(CHANGELOG.md)" in upgrading
    assert "previous release" not in upgrading
    released = {version for version, _ in releases()}
    steps = re.findall(rf"^### From ({SEMVER}) to ({SEMVER})$", upgrading, re.MULTILINE)
    assert steps, "a '### From A to B' heading per upgrade"
    for step in steps:
        before, after = step[0], step[4]
        assert {before, after} <= released, step
        assert key(before) < key(after)
    assert steps[0][4] == project_version(), "the newest notes lead to the current version"
