"""A target's constant ``labels`` (and those of ``defaults``) and ``enabled: false``: the config
errors that name the key, the labels on every series of the target as served over loopback from
the simulator, a disabled target without series, listed as disabled, and reloads that disable and
enable a target."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.exposition import generate_latest

from exporter import simulator
from exporter.config import TARGET_LABELS, ConfigError, load_config, validate_config
from exporter.metrics.self_metrics import PER_TARGET
from exporter.service import make_exporter
from exporter.web.app import build_app
from tests.conftest import labels, parse_exposition, run_cli
from tests.reference import reference_registry
from tests.test_status_page import parse


def thulium(sim_url: str, sim: simulator.Simulator) -> list[dict[str, Any]]:
    return [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "thulium"]


def altcraft(sim_url: str, sim: simulator.Simulator) -> dict[str, Any]:
    return next(t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "altcraft")


def problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    return {problem.path: problem.message for problem in caught.value.problems}


def test_the_exporter_labels_refused_are_those_of_its_per_target_families():
    carried = {label for family in PER_TARGET for label in family.labels}
    assert carried == set(TARGET_LABELS)


def test_a_label_name_ending_in_a_newline_is_refused(sim, sim_url):
    target = {**thulium(sim_url, sim)[0], "labels": {"team\n": "x"}}
    (message,) = problems({"targets": [target]}).values()
    assert "is not a valid label name" in message


async def test_check_config_exits_2_naming_each_bad_label(sim, sim_url, write_config):
    base = thulium(sim_url, sim)[0]
    cases = [
        {"bad-name": "x"},
        {"1st": "x"},
        {"__meta": "x"},
        {"account": "x"},
        {"provider": "x"},
        {"reason": "x"},
        {"campaign_id": "x"},  # a label of the Thulium provider's metrics
        {"long": "v" * 1025},
    ]
    targets = [{**base, "name": f"t{index}", "labels": case} for index, case in enumerate(cases)]
    path = write_config({"defaults": {"labels": {"team": "ok"}}, "targets": targets})
    code, stdout, stderr = await run_cli("--check-config", "--config", str(path))
    assert (code, stdout) == (2, "")
    for index, case in enumerate(cases):
        (name,) = case
        assert f"targets[{index}].labels.{name}: " in stderr
    assert "is not a valid label name" in stderr
    assert "reserved for Prometheus" in stderr
    assert "clashes with a label the target's series already carry" in stderr
    assert "must have at most 1024 characters; it has 1025" in stderr

    path = write_config({"defaults": {"labels": {"reason": "x"}}, "targets": [base]})
    code, stdout, stderr = await run_cli("--check-config", "--config", str(path))
    assert (code, stdout) == (2, "")
    assert "defaults.labels.reason: clashes with a label" in stderr


def test_a_label_of_defaults_that_clashes_with_a_provider_label_names_the_target(sim, sim_url):
    """``list_id`` is fine for Thulium targets, not for Altcraft ones, whose series carry it."""
    found = problems(
        {
            "defaults": {"labels": {"list_id": "7"}},
            "targets": [thulium(sim_url, sim)[0], altcraft(sim_url, sim)],
        }
    )
    assert list(found) == ["targets[1].labels.list_id"]
    assert found["targets[1].labels.list_id"].endswith("(inherited from defaults.labels.list_id)")


def test_labels_are_merged_over_those_of_defaults_key_by_key(sim, sim_url):
    a, b = thulium(sim_url, sim)
    config = validate_config(
        {
            "defaults": {"labels": {"team": "core", "env": "prod"}},
            "targets": [{**a, "labels": {"team": "payments", "tier": "1"}}, b],
        }
    )
    assert config.targets[0].labels == {"team": "payments", "env": "prod", "tier": "1"}
    assert config.targets[1].labels == {"team": "core", "env": "prod"}
    assert validate_config({"targets": [a]}).targets[0].labels == {}


def test_labels_must_be_strings_and_few(sim, sim_url):
    a = thulium(sim_url, sim)[0]
    assert problems({"targets": [{**a, "labels": {"env": 1}}]}) == {
        "targets[0].labels.env": "must be a string"
    }
    many = {f"l{index}": "x" for index in range(33)}
    assert problems({"targets": [{**a, "labels": many}]}) == {
        "targets[0].labels": "must have at most 32 labels; it has 33"
    }


async def test_labels_are_on_every_series_of_their_target_as_served(
    sim, sim_url, harness, make_config
):
    a, b = thulium(sim_url, sim)
    config = make_config(
        [{**a, "labels": {"team": "payments", "zone": 'say "hi"\n'}}, b],
        defaults={"labels": {"env": "prod", "team": "core"}},
    )
    h = await harness(config)
    await h.collect()
    text = await h.scrape_text()
    scraped = parse_exposition(text)
    mine = {"env": "prod", "team": "payments", "zone": 'say "hi"\n'}
    theirs = {"env": "prod", "team": "core"}
    by_account: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for name, key in scraped:
        series = dict(key)
        if "account" in series:
            by_account.setdefault(series["account"], []).append((name, series))
    provider_names = {name for name, _ in by_account[a["name"]] if name.startswith("thulium_")}
    assert provider_names  # the target delivered provider series, all of them labelled
    own = {name for name, _ in by_account[a["name"]] if name.startswith("messaging_exporter_")}
    assert {
        "messaging_exporter_collect_success",
        "messaging_exporter_collect_duration_seconds",
        "messaging_exporter_last_success_timestamp_seconds",
        "messaging_exporter_collect_interval_seconds",
        "messaging_exporter_collect_errors_total",
    } <= own
    for name, series in by_account[a["name"]]:
        assert {k: series.get(k) for k in mine} == mine, name
    for name, series in by_account[b["name"]]:
        assert {k: series.get(k) for k in theirs} == theirs, name
        assert "zone" not in series
    # Sorted in with the series' own labels, as prometheus_client writes them.
    success = next(
        line for line in text.splitlines() if line.startswith("messaging_exporter_collect_success")
    )
    assert success.startswith(
        f'messaging_exporter_collect_success{{account="{a["name"]}",env="prod",'
        f'provider="thulium",team="payments",zone="say \\"hi\\"\\n"}} '
    )
    # And the whole body is prometheus_client's rendering of the same facts.
    body = h.exporter.exposition.body(openmetrics=False).body
    assert body == generate_latest(reference_registry(h.exporter))


async def test_a_disabled_target_has_no_series_and_is_listed_as_disabled(
    sim, sim_url, harness, make_config
):
    a, b = thulium(sim_url, sim)
    h = await harness(make_config([a, {**b, "enabled": False, "labels": {"team": "x"}}]))
    disabled = h.exporter.targets.get(b["name"])
    assert disabled is not None
    assert disabled.runner is None
    assert (await h.client.get("/readyz")).status == 503
    await h.collect()
    assert disabled.state.latest is None  # never collected
    assert {r.path for r in sim.received("thulium")}
    assert all(
        r.path.startswith(a["base_url"].removeprefix(sim_url)) for r in sim.received("thulium")
    )
    # Ready once every enabled target was collected: the disabled one is not waited for.
    assert (await h.client.get("/readyz")).status == 200
    scraped = parse_exposition(await h.scrape_text())
    assert not [key for key in scraped if dict(key[1]).get("account") == b["name"]]
    assert [key for key in scraped if dict(key[1]).get("account") == a["name"]]
    assert scraped[("messaging_exporter_targets", labels(state="assigned"))] == 1
    assert scraped[("messaging_exporter_targets", labels(state="disabled"))] == 1
    assert scraped[("messaging_exporter_targets", labels(state="skipped"))] == 0

    root, _ = parse(await (await h.client.get("/")).text())
    # The account cell: the name, then the host of the base URL.
    rows = {
        tr.find_all("td")[2].text().split()[0]: tr.classes()
        for tr in root.find("tbody").find_all("tr")
    }
    assert rows == {a["name"]: {"up"}, b["name"]: {"disabled"}}
    counts = [" ".join(li.text().split()) for li in root.find("ul").find_all("li")]
    assert counts == ["0 down", "0 stale", "0 pending", "1 up", "1 disabled", "of 2"]


async def test_a_reload_disables_and_enables_a_target(sim, sim_url, aiohttp_client, write_config):
    a, b = thulium(sim_url, sim)
    path = write_config({"targets": [a, b]})
    exporter = make_exporter(load_config(path), config_path=path, autostart=False)
    client = await aiohttp_client(build_app(exporter, lifecycle=True))
    assert exporter.scheduler is not None
    await exporter.scheduler.run_all_once()

    def accounts(text: str) -> set[str]:
        return {dict(key).get("account", "") for _, key in parse_exposition(text)} - {""}

    assert accounts(await (await client.get("/metrics")).text()) == {a["name"], b["name"]}

    write_config({"targets": [a, {**b, "enabled": False}]})
    assert (await client.post("/-/reload")).status == 200
    target = exporter.targets.get(b["name"])
    assert target is not None
    assert target.runner is None
    assert target.status(exporter.clock.time()) == ("disabled", 0)
    assert accounts(await (await client.get("/metrics")).text()) == {a["name"]}
    assert (await client.get("/readyz")).status == 200

    write_config({"targets": [a, b]})
    assert (await client.post("/-/reload")).status == 200
    target = exporter.targets.get(b["name"])
    assert target is not None
    assert target.runner is not None
    assert target.status(exporter.clock.time())[0] == "pending"
    assert (await client.get("/readyz")).status == 503
    await exporter.scheduler.run_all_once()
    assert accounts(await (await client.get("/metrics")).text()) == {a["name"], b["name"]}
    assert target.status(exporter.clock.time())[0] == "up"


async def test_check_config_marks_a_disabled_target(sim, sim_url, write_config):
    a, b = thulium(sim_url, sim)
    path = write_config({"targets": [a, {**b, "enabled": False}]})
    code, stdout, _ = await run_cli("--check-config", "--config", str(path))
    assert code == 0
    (line,) = [line for line in stdout.splitlines() if line.startswith(f"  {b['name']}:")]
    assert line.endswith("(disabled: not collected)")
