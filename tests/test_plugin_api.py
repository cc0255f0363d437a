"""The public plugin API, ``exporter.plugin``: what it holds, that the example plugin needs nothing
else, and that every Python block of docs/providers/writing-a-provider.md runs as a plugin.

The page's blocks are written into a package of their own, each under the name its
``<!-- module: NAME -->`` mark gives (a block marked ``<!-- snippet: skip -->`` is a fragment and is
left out; an unmarked block fails the test). The provider and the simulator part it defines are
registered through the entry-point groups, served by the simulator on loopback and collected by
the exporter, as an installed plugin would be.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import exporter.config as config_module
import exporter.plugin
from exporter import simulator
from exporter.providers import PROVIDERS_GROUP, registry
from exporter.providers.base import API_VERSION
from exporter.simulator import SIMULATORS_GROUP
from tests.conftest import labels, series

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "provider-plugin"
GUIDE = REPO / "docs" / "providers" / "writing-a-provider.md"
PACKAGE = "doc_plugin"

# ------------------------------------------------------------------------------- the module


def _exporter_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the exporter's modules in a Python file, the names a
    ``from exporter import x`` brings in counted as modules."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == "exporter":
                found += [(node.lineno, f"exporter.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "exporter"]


def test_the_example_plugin_imports_only_the_public_module() -> None:
    files = sorted(EXAMPLE.rglob("*.py"))
    assert {f.name for f in files} >= {"provider.py", "simulator.py", "test_acme_sms.py"}
    others = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in files
        for line, name in _exporter_imports(path)
        if name != "exporter.plugin"
    ]
    assert others == []
    assert all(_exporter_imports(f) for f in files if f.name != "__init__.py")


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text(
        "import exporter.fields\nfrom exporter import simulator\nfrom exporter.plugin import Run\n"
        "from . import sibling\nimport json\n",
        encoding="utf-8",
    )
    assert _exporter_imports(source) == [
        (1, "exporter.fields"),
        (2, "exporter.simulator"),
        (3, "exporter.plugin"),
    ]


def test_every_public_name_is_there_and_documented() -> None:
    names = exporter.plugin.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(exporter.plugin, name) is not None, name
    # The simulator's names are the simulator's own objects.
    assert exporter.plugin.SimulatorPart is simulator.SimulatorPart
    assert exporter.plugin.start_simulator is simulator.start
    assert exporter.plugin.API_VERSION == API_VERSION == (1, 0)
    guide = GUIDE.read_text(encoding="utf-8")
    table = guide[guide.index("What `exporter.plugin` holds") : guide.index("## The rules")]
    assert sorted(set(re.findall(r"`(\w+)`", table)) & set(names)) == sorted(names)
    with pytest.raises(AttributeError, match="no attribute 'Typo'"):
        _ = exporter.plugin.Typo  # type: ignore[attr-defined]


def test_importing_the_api_does_not_import_the_simulator() -> None:
    """A provider plugin imports exporter.plugin at every start; the simulator is for --demo."""
    code = (
        "import json, sys; import exporter.plugin; a = 'exporter.simulator' in sys.modules; "
        "from exporter.plugin import SimulatorPart; "
        "print(json.dumps([a, 'exporter.simulator' in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == [False, True]


# ---------------------------------------------------------------------- the guide's snippets

_BLOCK = re.compile(r"(?:<!-- (?P<mark>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.DOTALL)


def guide_snippets(text: str) -> dict[str, str]:
    """Module name -> code of each Python block of the guide; a block without a mark fails."""
    modules: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        mark = match["mark"] or ""
        if mark.startswith("snippet: skip"):
            continue
        named = re.fullmatch(r"module: (\w+)", mark)
        line = text.count("\n", 0, match.start()) + 1
        assert named, f"line {line}: mark a Python block <!-- module: NAME --> or skip it"
        assert named[1] not in modules, f"line {line}: module {named[1]} twice"
        modules[named[1]] = match["code"]
    return modules


def test_the_snippet_marks_are_read() -> None:
    text = (
        "<!-- module: a -->\n```python\nA = 1\n```\n"
        "<!-- snippet: skip (a fragment) -->\n```python\n...\n```\n"
        "```toml\n[x]\n```\n"
    )
    assert guide_snippets(text) == {"a": "A = 1\n"}
    with pytest.raises(AssertionError, match="line 1: mark a Python block"):
        guide_snippets("```python\nB = 2\n```\n")


def forget_providers() -> None:
    """Drop what was built from the registered providers: the registry, the simulator's parts
    and the config models made from them (the config's union of target models)."""
    registry.cache_clear()
    simulator.provider_parts.cache_clear()
    for built in (
        config_module._target_type,
        config_module._target_adapter,
        config_module._config_model,
    ):
        built.cache_clear()


@pytest.fixture
def guide_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The guide's blocks as the package ``doc_plugin``, its provider and simulator part registered
    in place of any installed "acme" (the example plugin, if it is installed here)."""
    modules = guide_snippets(GUIDE.read_text(encoding="utf-8"))
    assert {"provider", "simulator"} <= set(modules)
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    for name, code in modules.items():
        (package / f"{name}.py").write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points
    ours = {
        PROVIDERS_GROUP: importlib.metadata.EntryPoint(
            "acme", f"{PACKAGE}.provider", PROVIDERS_GROUP
        ),
        SIMULATORS_GROUP: importlib.metadata.EntryPoint(
            "acme", f"{PACKAGE}.simulator", SIMULATORS_GROUP
        ),
    }

    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        found = [e for e in real(group=group) if e.name != "acme"]
        return [*found, ours[group]] if group in ours else found

    monkeypatch.setattr("exporter.entrypoints.entry_points", entry_points)
    forget_providers()
    try:
        with capture_logs() as logs:
            loaded = {name: __import__(f"{PACKAGE}.{name}", fromlist=["_"]) for name in modules}
            registry()
            simulator.provider_parts()
        assert logs == []
        yield loaded
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]
        forget_providers()


async def test_the_guides_plugin_collects_from_its_simulated_api(
    guide_plugin: dict[str, Any], harness: Callable[..., Any], make_config: Callable[..., Any]
) -> None:
    assert registry()["acme"] is guide_plugin["provider"].PROVIDER
    assert isinstance(simulator.provider_parts()["acme"], exporter.plugin.SimulatorPart)
    assert guide_plugin["compat"].HAS_1_1 is False
    sim = simulator.Simulator()
    runner, url = await simulator.start(sim)
    try:
        targets = [t for t in simulator.demo_targets(url, sim) if t["provider"] == "acme"]
        assert [t["name"] for t in targets] == ["acme-shop"]
        h = await harness(make_config(targets))
        await h.collect()
        scraped = await h.scrape()
        shop = labels(account="acme-shop", direction="outbound", status="delivered")
        assert series(scraped, "acme_sms_messages") == {shop: 1520}
        target = {"provider": "acme", "account": "acme-shop"}
        assert series(scraped, "messaging_exporter_collect_success") == {labels(**target): 1}
        # The provider's error_text: a refused key is reason auth, quoted in the error.
        sim.set_fault("acme", "shop", "auth")
        with capture_logs() as logs:
            await h.collect()
        scraped = await h.scrape()
        errors = series(scraped, "messaging_exporter_collect_errors_total")
        assert errors[labels(**target, reason="auth")] == 1
        assert any("the API key is not valid" in str(entry) for entry in logs), logs
    finally:
        await runner.cleanup()


def test_the_parser_of_the_guide_raises_only_parse_errors(guide_plugin: dict[str, Any]) -> None:
    provider = guide_plugin["provider"]
    with pytest.raises(exporter.plugin.ParseError, match=r"messages\.0\.count"):
        provider.parse_stats({"messages": [{"direction": "OUT", "status": "SENT"}]})
    assert provider.error_text(b'{"error": {"message": "down"}}') == "down"
    assert provider.error_text(b"<html>") is None
