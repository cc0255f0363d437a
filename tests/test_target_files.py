"""``target_files``: targets in files that globs match, merged after ``targets``; and
``--config.auto-reload-interval``: a change of the config's files reloads it as SIGHUP does.
Against the simulator, over loopback: in process (the watcher and the app) and as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import autoreload
from exporter.bounded import TARGET_FILES_MAX
from exporter.config import ConfigError, config_warnings, load_config
from exporter.service import make_exporter
from exporter.web.app import build_app
from tests.conftest import eventually, labels, parse_exposition, run_cli
from tests.test_cli import exporter_process, get, stop, thulium_targets, wait_ready


def thulium(name: str, base_url: str = "http://127.0.0.1:9/api", **keys: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "thulium",
        "base_url": base_url,
        "username": "u",
        "password": "p",
        **keys,
    }


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(problem) for problem in caught.value.problems]


def test_files_are_merged_after_targets_in_sorted_order_and_inherit_defaults(tmp_path):
    config = write(
        tmp_path / "config.yaml",
        {
            "defaults": {"interval": "2m"},
            "target_files": ["targets.d/*.yaml", "more/**/*.yaml"],
            "targets": [thulium("main")],
        },
    )
    write(tmp_path / "targets.d/b.yaml", [thulium("b1"), thulium("b2", interval="5m")])
    write(tmp_path / "targets.d/a.yaml", [thulium("a1")])
    write(tmp_path / "more/deep/c.yaml", [thulium("c1")])
    (tmp_path / "targets.d/sub.yaml").mkdir()  # a directory the glob matches is not a file
    loaded = load_config(config)
    # In sorted path order across all globs, not in the order of the globs.
    assert [t.name for t in loaded.targets] == ["main", "c1", "a1", "b1", "b2"]
    assert [t.interval for t in loaded.targets] == [120, 120, 120, 120, 300]
    assert [loaded.where(i) for i in range(5)] == [
        "targets[0]",
        "more/deep/c.yaml[0]",
        "targets.d/a.yaml[0]",
        "targets.d/b.yaml[0]",
        "targets.d/b.yaml[1]",
    ]
    assert loaded.source_of(4) == "targets.d/b.yaml"


def test_targets_may_be_absent_when_the_files_bring_one_and_an_unmatched_glob_warns(tmp_path):
    config = write(tmp_path / "config.yaml", {"target_files": ["targets.d/*.yaml", "none/*.yml"]})
    write(tmp_path / "targets.d/acme.yaml", [thulium("acme", timeout="2m")])
    loaded = load_config(config)
    assert [t.name for t in loaded.targets] == ["acme"]
    assert config_warnings(loaded) == [
        "target_files[1]: 'none/*.yml' matches no file",
        "targets.d/acme.yaml[0].timeout: 2m is longer than interval (1m); "
        "a collection is cut at 1m",
    ]


def test_no_target_anywhere_is_an_error(tmp_path):
    config = write(tmp_path / "config.yaml", {"target_files": ["targets.d/*.yaml"]})
    write(tmp_path / "targets.d/empty.yaml", "")  # an empty file: no targets
    assert problems(config) == [
        "targets: at least one target is required, here or in the files that target_files matches"
    ]


def test_errors_name_the_file_and_the_key(tmp_path):
    config = write(
        tmp_path / "config.yaml",
        {
            "defaults": {"interval": "1m"},
            "target_files": ["targets.d/*.yaml"],
            "targets": [thulium("main")],
        },
    )
    write(
        tmp_path / "targets.d/acme.yaml",
        [
            thulium("acme", interval="soon"),
            thulium("main"),
            {**thulium("x"), "pasword": "p"},
            {"name": "y", "provider": "nope"},
        ],
    )
    assert problems(config) == [
        "targets.d/acme.yaml[0].interval: invalid duration 'soon': use a number of seconds or a "
        "string such as 500ms, 30s, 5m, 1h, 1h30m",
        "targets.d/acme.yaml[2].pasword: unknown key; did you mean password?",
        "targets.d/acme.yaml[3].provider: unknown provider 'nope'; known: altcraft, exolve, "
        "thulium, trustlat",
    ]


def test_a_duplicate_name_names_both_places(tmp_path):
    config = write(
        tmp_path / "config.yaml",
        {"target_files": ["targets.d/*.yaml"], "targets": [thulium("main")]},
    )
    write(tmp_path / "targets.d/a.yaml", [thulium("acme")])
    write(tmp_path / "targets.d/b.yaml", [thulium("main"), thulium("acme")])
    assert problems(config) == [
        "targets.d/b.yaml[0].name: 'main' is already the name of targets[0]; "
        "target names must be unique",
        "targets.d/b.yaml[1].name: 'acme' is already the name of targets.d/a.yaml[0]; "
        "target names must be unique",
    ]


def test_a_file_is_read_as_the_config_file_is(tmp_path):
    config = write(
        tmp_path / "config.yaml",
        {"target_files": ["targets.d/*"], "targets": [thulium("main")]},
    )
    write(tmp_path / "targets.d/a-mapping", {"name": "x"})
    write(tmp_path / "targets.d/b-syntax", "- [\n")
    write(
        tmp_path / "targets.d/c-bomb",
        "- &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"- &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 10)}]\n" for i in range(8)
        ),
    )
    os.mkfifo(tmp_path / "targets.d/d-fifo")
    write(tmp_path / "targets.d/e-big", "#" * (4 * 1024 * 1024 + 1))
    found = problems(config)
    assert (
        found[0] == "targets.d/a-mapping: the file must be a YAML list of targets, as under targets"
    )
    assert found[1].startswith("targets.d/b-syntax: line 2, column 1: YAML syntax error")
    assert found[2].startswith("targets.d/c-bomb[")
    assert "aliases counted as what they stand for" in found[2]
    assert found[3:] == [
        "targets.d/d-fifo: the file is a named pipe (FIFO), not a regular file",
        "targets.d/e-big: the file is larger than 4 MiB, the most that is read",
    ]


def test_the_number_of_files_is_bounded(tmp_path):
    config = write(tmp_path / "config.yaml", {"target_files": ["t/*.yaml"]})
    (tmp_path / "t").mkdir()
    for index in range(TARGET_FILES_MAX + 1):
        (tmp_path / "t" / f"{index}.yaml").write_text("")
    assert problems(config) == [
        f"target_files: the globs match more than {TARGET_FILES_MAX:,} files, the most that is read"
    ]


def test_variables_are_expanded_in_target_files(tmp_path):
    config = write(tmp_path / "config.yaml", {"target_files": ["t.yaml"]})
    write(tmp_path / "t.yaml", [thulium("acme", password="${ACME_PASSWORD}")])
    loaded = load_config(config, environ={"ACME_PASSWORD": "from-env"})
    assert loaded.secret_values() == ["from-env"]
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    assert str(caught.value.problems[0]) == (
        "t.yaml[0].password: environment variable ACME_PASSWORD is not set"
    )


async def test_check_config_says_which_file_each_target_came_from(tmp_path):
    config = write(
        tmp_path / "config.yaml",
        {"target_files": ["targets.d/*.yaml"], "targets": [thulium("main")]},
    )
    write(tmp_path / "targets.d/acme.yaml", [thulium("acme"), thulium("acme-2")])
    code, stdout, stderr = await run_cli("--check-config", "--config", str(config))
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == f"{config}: OK, 3 target(s)"
    assert "from targets: 1 target(s)" in lines
    assert "from targets.d/acme.yaml: 2 target(s)" in lines
    assert [line.rpartition(" ")[2] for line in lines if line.startswith("  ")] == [
        "stale_after=5m",
        "from=targets.d/acme.yaml[0]",
        "from=targets.d/acme.yaml[1]",
    ]


# -- automatic reload -------------------------------------------------------------------------


def test_the_fingerprint_follows_content_and_the_files_the_globs_match(tmp_path):
    config = write(tmp_path / "config.yaml", {"target_files": ["t/*.yaml"]})
    write(tmp_path / "t/a.yaml", [thulium("a")])
    globs = ["t/*.yaml"]
    first = autoreload.fingerprint(config, globs)
    assert autoreload.fingerprint(config, globs) == first
    stat = (tmp_path / "t/a.yaml").stat()
    write(tmp_path / "t/a.yaml", [thulium("b")])  # same size, same mtime: content only
    os.utime(tmp_path / "t/a.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = autoreload.fingerprint(config, globs)
    assert second != first
    write(tmp_path / "t/new.yaml", "")
    third = autoreload.fingerprint(config, globs)
    assert third != second
    (tmp_path / "t/new.yaml").unlink()
    assert autoreload.fingerprint(config, globs) == second


def reload_metric(text: str) -> float:
    return parse_exposition(text)[("messaging_exporter_config_last_reload_successful", labels())]


async def test_auto_reload_follows_edits_new_files_and_keeps_the_config_on_a_broken_one(
    sim, sim_url, tmp_path, aiohttp_client
):
    acme, globex = thulium_targets(sim_url, sim)
    config_path = write(
        tmp_path / "config.yaml", {"target_files": ["targets.d/*.yaml"], "targets": [acme]}
    )
    write(tmp_path / "targets.d/one.yaml", [])
    exporter = make_exporter(load_config(config_path), config_path=config_path, autostart=False)
    client = await aiohttp_client(build_app(exporter))
    baseline = autoreload.fingerprint(config_path, exporter.config.target_files)
    watcher = asyncio.create_task(autoreload.watch(exporter, autoreload.MIN_INTERVAL, baseline))

    def names() -> list[str]:
        return [target.name for target in exporter.config.targets]

    async def scrape() -> str:
        assert exporter.scheduler is not None
        await exporter.scheduler.run_all_once()
        return await (await client.get("/metrics")).text()

    try:
        # A target file edited: its new target is collected.
        write(tmp_path / "targets.d/one.yaml", [globex])
        await eventually(lambda: names() == [acme["name"], globex["name"]])
        scraped = parse_exposition(await scrape())
        key = ("thulium_outbound_active_campaigns", labels(account=globex["name"]))
        assert key in scraped
        # The main config edited.
        write(
            tmp_path / "config.yaml",
            {"target_files": ["targets.d/*.yaml"], "targets": [{**acme, "name": "renamed"}]},
        )
        await eventually(lambda: names() == ["renamed", globex["name"]])
        # A new file that the glob matches.
        write(tmp_path / "targets.d/two.yaml", [{**acme, "name": "third"}])
        await eventually(lambda: names() == ["renamed", globex["name"], "third"])
        assert reload_metric(await scrape()) == 1
        # A broken file: the reload fails, the previous config stays.
        reloads = exporter.store.last_reload
        write(tmp_path / "targets.d/two.yaml", [{**acme, "name": "third", "interval": "x"}])
        await eventually(lambda: exporter.store.last_reload != reloads)
        assert reload_metric(await scrape()) == 0
        assert names() == ["renamed", globex["name"], "third"]
        # Fixed again: reloaded.
        write(tmp_path / "targets.d/two.yaml", [{**acme, "name": "fourth"}])
        await eventually(lambda: names() == ["renamed", globex["name"], "fourth"])
        assert reload_metric(await scrape()) == 1
    finally:
        watcher.cancel()


async def test_the_flag_reloads_a_served_exporter_and_logs_as_sighup(sim, sim_url, tmp_path):
    acme, globex = thulium_targets(sim_url, sim)
    config = write(
        tmp_path / "config.yaml",
        {"defaults": {"interval": "1s"}, "target_files": ["t/*.yaml"], "targets": [acme]},
    )
    args = ("--config", str(config), "--config.auto-reload-interval", "1s")
    async with exporter_process(*args) as (process, port):
        await wait_ready(port)
        write(tmp_path / "t/globex.yaml", [globex])

        async def accounts() -> set[str]:
            scraped = parse_exposition((await get(port, "/metrics"))[1])
            return {dict(key)["account"] for name, key in scraped if name.endswith("_success")}

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while await accounts() != {acme["name"], globex["name"]}:
            assert loop.time() < deadline, "the new target file was not picked up"
            await asyncio.sleep(0.1)
        output = await stop(process)
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    names = [event["event"] for event in events]
    assert "config files changed; reloading" in names
    reloaded = next(event for event in events if event["event"] == "config reloaded")
    assert reloaded["added"] == [globex["name"]]


@pytest.mark.parametrize(
    ("value", "message"),
    [("0.5s", "must be at least 1s; it is 0.5s"), ("soon", "invalid duration 'soon'")],
)
async def test_the_interval_flag_refuses_a_bad_value(value, message, write_config):
    code, _, stderr = await run_cli("--config.auto-reload-interval", value, "--check-config")
    assert code == 2
    assert message in stderr


async def test_the_interval_flag_does_not_stop_the_demo():
    """The demo has no file to watch: the flag is ignored (a warning when it serves), not an
    error, so that a chart or unit that always passes it can run the demo."""
    code, _, stderr = await run_cli(
        "--demo", "--check-config", "--config.auto-reload-interval", "1m"
    )
    assert code == 0, stderr


def test_the_key_and_the_flag_are_documented():
    root = Path(__file__).resolve().parent.parent
    configuration = (root / "docs" / "configuration.md").read_text()
    assert "| `target_files` |" in configuration
    assert "| `--config.auto-reload-interval DURATION` |" in configuration
    assert "### Target files" in configuration
    readme = (root / "README.md").read_text()
    assert "target_files" in readme
    assert "--config.auto-reload-interval" in readme
    chart = (root / "helm" / "messaging-stats-exporter" / "README.md").read_text()
    for value in ("autoReloadInterval", "targetFiles.configMaps", "targetFiles.secrets"):
        assert f"| `{value}` |" in chart


def test_labels_and_enabled_work_in_target_files(tmp_path):
    config = write(
        tmp_path / "config.yaml",
        {"defaults": {"labels": {"env": "prod"}}, "target_files": ["t.yaml"]},
    )
    write(
        tmp_path / "t.yaml",
        [thulium("a", labels={"team": "payments"}), thulium("b", enabled=False)],
    )
    loaded = load_config(config)
    assert dict(loaded.targets[0].labels) == {"env": "prod", "team": "payments"}
    assert loaded.targets[1].enabled is False
    write(tmp_path / "t.yaml", [thulium("a", labels={"campaign_id": "x"})])
    found = problems(config)
    assert len(found) == 1
    assert found[0].startswith("t.yaml[0].labels.campaign_id: clashes with a label")


def test_serve_watches_from_the_files_as_the_config_was_read(sim, sim_url, tmp_path, monkeypatch):
    """The baseline of the automatic reload is taken when the config is read, not once the
    exporter listens: an edit made while it starts is a change it reloads."""
    from exporter import cli

    acme, globex = thulium_targets(sim_url, sim)
    config_path = write(
        tmp_path / "config.yaml", {"target_files": ["targets.d/*.yaml"], "targets": [acme]}
    )
    write(tmp_path / "targets.d/one.yaml", [globex])
    served: dict[str, Any] = {}

    async def serve(config: Any, *args: Any, **kwargs: Any) -> int:
        served.update(kwargs)
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    args = ["--config", str(config_path), "--config.auto-reload-interval", "1s"]
    assert cli.main(args) == 0
    read = autoreload.fingerprint(config_path, ["targets.d/*.yaml"])
    assert served["auto_reload_baseline"] == read
    write(tmp_path / "targets.d/one.yaml", [])  # edited while the exporter starts
    assert autoreload.fingerprint(config_path, ["targets.d/*.yaml"]) != read
    assert cli.main(["--config", str(config_path)]) == 0
    assert served["auto_reload_baseline"] is None  # no automatic reload, no baseline
