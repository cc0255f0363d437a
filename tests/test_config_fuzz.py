"""Structure-aware fuzzing of ``--check-config``: a valid config with one target of every
provider, mutated the ways a hand, a template or an attacker mutates a config (odd values and
types, keys deleted, misspelt or added, deep nesting, aliases, alias bombs, recursive structures,
duplicate keys, strings that are not Unicode, ``${VAR}`` of every kind, special files as secrets,
config or web config, and then the YAML text itself cut or spliced). Every run must end with
status 0 or 2, without a traceback, within bounded time and memory.

Most examples run in this process through ``exporter.cli.main`` (fast), with stdout encoded as
the real one is (strict UTF-8), so a string that cannot be printed fails as it would; a few run
in a real subprocess with a timeout and their peak RSS read."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exporter.cli import main
from tests.test_config import MAX_RSS_KIB, check_config_rss

IN_PROCESS_EXAMPLES = 120
SUBPROCESS_EXAMPLES = 4
HANG_SECONDS = 60
"""An example still running after this long is a hang, not a slow machine."""
MAX_PYTHON_MEMORY = 64 * 1024 * 1024
"""Peak Python allocations of one in-process run: the configs made here are small, and what
they expand to is bounded; an alias bomb or a read of /dev/zero went to gigabytes."""

ENV = {
    "FUZZ_KEY": "exolve-key",
    "FUZZ_BIG": "b" * 100_000,
    "FUZZ_BAD": "caf\udce9",  # the bytes caf\xe9 as Python decodes an environment that is not UTF-8
    "FUZZ_EMPTY": "",
}

FILE_KINDS = (
    "secret",
    "empty",
    "oversize",
    "not-utf8",
    "fifo",
    "directory",
    "missing",
    "dev-zero",
    "dev-null",
    "proc",
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Where each kind of file the configs name is."""
    root = tmp_path_factory.mktemp("fuzz-files")
    (root / "secret").write_text("s3cret-from-a-file\n")
    (root / "empty").write_text("")
    (root / "oversize").write_text("x" * (64 * 1024 + 1))
    (root / "not-utf8").write_bytes(b"\xff\xfe\x00secret")
    os.mkfifo(root / "fifo")
    (root / "directory").mkdir()
    paths = {kind: str(root / kind) for kind in FILE_KINDS}
    paths.update({"dev-zero": "/dev/zero", "dev-null": "/dev/null", "proc": "/proc/self/status"})
    return paths


def base_config() -> dict[str, Any]:
    return {
        "web": {"listen_address": "127.0.0.1:10057", "telemetry_path": "/metrics"},
        "log": {"level": "info", "format": "json"},
        "defaults": {"interval": "60s", "timeout": "30s", "max_concurrency": 4},
        "sharding": {"index": 0, "count": 1},
        "max_concurrent_collections": 64,
        "targets": [
            {
                "name": "thulium-acme",
                "provider": "thulium",
                "base_url": "https://acme.thulium.com/api",
                "username": "api_user",
                "password_file": "FILEREF-secret",
            },
            {
                "name": "altcraft-prod",
                "provider": "altcraft",
                "base_url": "https://altcraft.example.com/api/v1.1",
                "token": "t0ken",
                "resources": [{"id": 24, "list_id": 1}],
                "segments": [{"id": 7, "resource_id": 24, "db_id": 1}],
                "task_poll_interval": "2s",
            },
            {
                "name": "trust",
                "provider": "trustlat",
                "base_url": "https://api.trust.lat",
                "company_id": 1,
                "client_id": "client",
                "client_secret_file": "FILEREF-secret",
            },
            {
                "name": "exolve-sms",
                "provider": "exolve",
                "base_url": "https://api.exolve.ru/messaging/v1",
                "api_key": "${FUZZ_KEY}",
                "breakdowns": ["status"],
                "window": "24h",
            },
        ],
    }


ODD_STRINGS = [
    "",
    " ",
    "\ud800",
    "ok\udfff",
    "\x00",
    "\x1b[31m",
    "line\nbreak",
    "${FUZZ_UNSET}",
    "${FUZZ_KEY}",
    "${FUZZ_BIG}",
    "${FUZZ_BAD}",
    "${FUZZ_EMPTY}",
    "$${FUZZ_KEY}",
    "${",
    "${1A}",
    "5 minutes",
    "1ms",
    "0.5",
    "1e-300",
    "-1",
    "1h30m",
    "auto",
    "/{x}",
    "/{",
    "/metrics?x=1",
    "[::1",
    "::1:80",
    "\U0001f600",
    "a" * 300,
    "http://user:pw@host/",
    "ftp://host/",
    "2001-02-30",
    "~",
]
ODD_SCALARS: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**64,
    10**400,
    1e-300,
    1e300,
    float("nan"),
    float("inf"),
    -0.0,
    True,
    False,
    None,
]

any_text = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), max_size=40
)
"""Any text, lone surrogates included (hypothesis leaves them out by default)."""
values = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.sampled_from(ODD_SCALARS),
    st.sampled_from([f"FILEREF-{kind}" for kind in FILE_KINDS]),
    any_text,
    st.integers(),
    st.floats(),
    st.lists(st.integers() | st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers() | st.none(), max_size=3),
)

TEXT_SPLICES = [
    "&a ",
    "*a",
    "*nope",
    "[",
    "]",
    "{",
    "}",
    "? ",
    ": ",
    "- ",
    "<<: *a\n",
    "!!python/object:os.system ",
    "!!binary ",
    "!!int ",
    "!!bool ",
    "!!timestamp ",
    "%YAML 1.1\n---\n",
    "---\n",
    "...\n",
    "\t",
    "\x00",
    '"\\ud800"',
    "'",
    '"',
    "#",
    "\n",
    "9" * 5000,
    "x: " + "[" * 500 + "]" * 500 + "\n",
    "x: &r [*r]\n",
]


class FuzzDumper(yaml.SafeDumper):
    """Writes a mapping with the pairs of ``extra_pairs`` (by the mapping's id) after its own:
    a key given twice, which a dict cannot hold."""

    extra_pairs: ClassVar[dict[int, list[tuple[Any, Any]]]] = {}

    def represent_dict(self, data: Any) -> yaml.Node:
        pairs = [*data.items(), *self.extra_pairs.get(id(data), [])]
        return self.represent_mapping("tag:yaml.org,2002:map", pairs)


FuzzDumper.add_representer(dict, FuzzDumper.represent_dict)


@dataclass
class Mutated:
    config: Any
    extra_pairs: dict[int, list[tuple[Any, Any]]] = field(default_factory=dict)
    edits: list[tuple[str, int, str]] = field(default_factory=list)
    """Edits of the YAML text: (what, where, text spliced in)."""
    allow_unicode: bool = False


def containers(node: Any) -> list[Any]:
    """Every dict and list in ``node``, once each (once mutated, the structure may share parts or
    contain itself)."""
    seen: set[int] = set()
    found = []
    stack = [node]
    while stack:
        item = stack.pop()
        if id(item) in seen or not isinstance(item, dict | list):
            continue
        seen.add(id(item))
        found.append(item)
        stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def typo(key: str, data: st.DataObject) -> str:
    """``key`` with one slip of the finger."""
    if not key:
        return "x"
    at = data.draw(st.integers(0, len(key) - 1))
    how = data.draw(st.sampled_from(["drop", "double", "swap", "upper"]))
    if how == "drop":
        return key[:at] + key[at + 1 :] or "x"
    if how == "double":
        return key[:at] + key[at] + key[at:]
    if how == "swap" and at + 1 < len(key):
        return key[:at] + key[at + 1] + key[at] + key[at + 2 :]
    return key.upper()


OPS = ["set", "set", "set", "delete", "typo", "add", "nest", "alias", "bomb", "recursive"]
OPS += ["duplicate", "file"]


FREE_TEXT_KEYS = {"name", "username", "token", "client_id", "api_key"}
"""Keys of the base config's targets that take almost any text."""


def mutate(config: Any, data: st.DataObject) -> Mutated:
    """A few structure-aware mutations of ``config``, then a few edits of its text; or, for a
    third of the configs, only new texts for some of the targets' free-text keys, so that valid
    configs with odd strings reach the printout."""
    mutated = Mutated(config, allow_unicode=data.draw(st.booleans()))
    if "targets" in config and data.draw(st.integers(0, 2), label="texts only") == 0:
        for target in config["targets"]:
            for key in FREE_TEXT_KEYS.intersection(target):
                if data.draw(st.booleans()):
                    target[key] = data.draw(any_text, label=key)
        return mutated
    for _ in range(data.draw(st.sampled_from([0, 1, 1, 2, 3, 4]), label="mutations")):
        places = containers(config)
        container = data.draw(st.sampled_from(places), label="where")
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        op = data.draw(st.sampled_from(OPS), label="op")
        key = data.draw(st.sampled_from(keys), label="key") if keys else None
        if op == "add" or key is None:
            if isinstance(container, dict):
                name = data.draw(st.text(max_size=10) | st.sampled_from(["<<", "1", "~"]))
                container[name] = data.draw(values)
            else:
                container.append(data.draw(values))
        elif op == "set":
            container[key] = data.draw(values, label="value")
        elif op == "delete":
            del container[key]
        elif op == "typo" and isinstance(key, str):
            container[typo(key, data)] = container.pop(key)
        elif op == "nest":
            container[key] = f"NESTED-{data.draw(st.sampled_from(NESTING))}"
        elif op == "alias":
            container[key] = data.draw(st.sampled_from(places))  # one object: anchor and aliases
        elif op == "bomb":
            width, depth = data.draw(st.integers(2, 10)), data.draw(st.integers(1, 9))
            level: Any = ["lol"] * width
            for _ in range(depth):
                level = [level] * width
            container[key] = level
        elif op == "recursive":
            container[key] = container
        elif op == "duplicate" and isinstance(key, str):
            mutated.extra_pairs.setdefault(id(container), []).append((key, data.draw(values)))
        elif op == "file":
            container[key] = f"FILEREF-{data.draw(st.sampled_from(FILE_KINDS))}"
    for _ in range(data.draw(st.sampled_from([0, 0, 0, 1, 2]), label="text edits")):
        what = data.draw(st.sampled_from(["splice", "splice", "cut", "repeat-line"]))
        where = data.draw(st.integers(0, 10_000))
        mutated.edits.append((what, where, data.draw(st.sampled_from(TEXT_SPLICES))))
    return mutated


NESTING = (2, 30, 64, 65, 500)


def render(mutated: Mutated, files: dict[str, str]) -> str:
    dumper = type("Dumper", (FuzzDumper,), {"extra_pairs": mutated.extra_pairs})
    text = yaml.dump(
        mutated.config, Dumper=dumper, allow_unicode=mutated.allow_unicode, sort_keys=False
    )
    for depth in NESTING:
        text = text.replace(f"NESTED-{depth}", "[" * depth + "]" * depth)
    for kind, path in files.items():
        text = text.replace(f"FILEREF-{kind}", path)
    for what, where, splice in mutated.edits:
        at = where % (len(text) + 1)
        if what == "splice":
            text = text[:at] + splice + text[at:]
        elif what == "cut":
            text = text[:at]
        else:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            line = text[start : end + 1 if end >= 0 else len(text)]
            text = text[:start] + line + text[start:]
    return text


def arguments(data: st.DataObject, files: dict[str, str], config_path: Path) -> list[str]:
    """The command line: the generated file (sometimes a special file in its place) and
    sometimes a web config file (generated too, or a special file)."""
    config = str(config_path)
    if data.draw(st.integers(0, 9), label="special config") == 0:
        config = files[data.draw(st.sampled_from(FILE_KINDS))]
    args = ["--config", config, "--check-config"]
    if data.draw(st.integers(0, 4), label="web config") == 0:
        if data.draw(st.booleans()):
            web_config = {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}}
            web = config_path.with_name("web.yaml")
            web.write_text(render(mutate(web_config, data), files), encoding="utf-8")
            args += ["--web.config.file", str(web)]
        else:
            args += ["--web.config.file", files[data.draw(st.sampled_from(FILE_KINDS))]]
    return args


class Hung(BaseException):
    """Raised by the alarm; a BaseException, so no handler of the code under test takes it."""


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    def ring(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_in_process(args: list[str]) -> tuple[int, str, str]:
    """``main(args)`` with stdout and stderr encoded as a real process's are."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
        out.flush()
        err.flush()
    return code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()  # type: ignore[attr-defined]


def write_config(data: st.DataObject, files: dict[str, str], directory: Path) -> list[str]:
    path = directory / "config.yaml"
    path.write_text(render(mutate(base_config(), data), files), encoding="utf-8")
    return arguments(data, files, path)


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@fuzz_settings(IN_PROCESS_EXAMPLES)
@given(data=st.data())
def test_any_mutated_config_ends_with_0_or_2_in_bounded_time_and_memory(
    files: dict[str, str], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    args = write_config(data, files, tmp_path_factory.mktemp("fuzz"))
    tracing = not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        with environment(ENV), alarm(HANG_SECONDS):
            code, out, err = run_in_process(args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if tracing:
            tracemalloc.stop()
    event(f"exit {code}")  # shown with --hypothesis-show-statistics
    assert code in (0, 2), out + err
    assert (code == 0) == (err == ""), err
    assert peak < MAX_PYTHON_MEMORY, f"{peak >> 20} MiB"
    assert "s3cret-from-a-file" not in out + err


@fuzz_settings(SUBPROCESS_EXAMPLES)
@given(data=st.data())
def test_a_mutated_config_in_a_real_process_ends_with_0_or_2_in_bounded_memory(
    files: dict[str, str], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    args = write_config(data, files, tmp_path_factory.mktemp("fuzz"))
    args.remove("--check-config")
    with environment(ENV):
        result, rss = check_config_rss(*args)  # with a timeout: a hang fails, not blocks
    assert result.returncode in (0, 2), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert rss < MAX_RSS_KIB, f"{rss // 1024} MiB"


def test_the_unmutated_base_config_passes_and_the_worst_splices_are_refused(
    files: dict[str, str], tmp_path: Path
) -> None:
    """The fuzzing is not vacuous: what it mutates is valid to begin with."""
    path = tmp_path / "config.yaml"
    path.write_text(render(Mutated(base_config()), files), encoding="utf-8")
    with environment(ENV):
        code, out, err = run_in_process(["--config", str(path), "--check-config"])
    assert (code, err) == (0, "")
    assert out.splitlines()[0].endswith("OK, 4 target(s)")
    for splice, refusal in [
        (TEXT_SPLICES[-2], "x" + "[0]" * 63 + ": nested deeper than 64 levels (line 1)"),
        (TEXT_SPLICES[-1], "x[0]: the alias *r is inside the node it names"),
    ]:
        path.write_text(render(Mutated(base_config(), edits=[("splice", 0, splice)]), files))
        with environment(ENV):
            code, _, err = run_in_process(["--config", str(path), "--check-config"])
        assert code == 2
        assert f"\n  {refusal}" in err, err
