"""The HTTP endpoints: /metrics negotiation and caching, health, readiness, landing page, reload."""

from __future__ import annotations

import gzip
from typing import Any

import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter import simulator
from exporter.config import load_config
from exporter.service import make_exporter
from exporter.web.app import build_app
from tests.conftest import labels, parse_exposition


def demo(sim_url: str, sim: simulator.Simulator) -> list[dict[str, Any]]:
    """The simulator's Thulium accounts (the core's tests need one provider only)."""
    return [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "thulium"]


async def test_metrics_are_rendered_once_per_change(sim, sim_url, harness, make_config):
    h = await harness(make_config(demo(sim_url, sim)))
    await h.collect()
    first = await h.scrape_text()
    gzipped = await h.client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["Content-Encoding"] == "gzip"

    async def answers() -> list[Any]:
        """The bodies the exposition holds for the next scrape, identity and gzip."""
        exposition = h.exporter.exposition
        return [(await exposition.get("", encoding)).rendered for encoding in ("", "gzip")]

    held = await answers()
    for _ in range(5):
        assert await h.scrape_text() == first
        response = await h.client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert await response.text() == first
    # The scrapes were answered with the bytes built before: none was built again.
    assert all(now is was for now, was in zip(await answers(), held, strict=True))
    await h.collect()
    changed = await h.scrape_text()
    response = await h.client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert await response.text() == changed
    rebuilt = await answers()
    assert all(now is not was for now, was in zip(rebuilt, held, strict=True))
    assert all(now is was for now, was in zip(await answers(), rebuilt, strict=True))


async def test_scrapes_never_reach_a_provider(sim, sim_url, harness, make_config):
    h = await harness(make_config(demo(sim_url, sim)))
    await h.collect()
    before = len(sim.requests)
    for _ in range(3):
        await h.scrape_text()
    assert len(sim.requests) == before


async def test_gzip_when_accepted(sim, sim_url, harness, make_config):
    h = await harness(make_config(demo(sim_url, sim)))
    await h.collect()
    response = await h.client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(await response.read()).decode()
    assert body == await h.scrape_text(**{"Accept-Encoding": "identity"})


async def test_openmetrics_when_asked_for(sim, sim_url, harness, make_config):
    h = await harness(make_config(demo(sim_url, sim)))
    await h.collect()
    response = await h.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.text()
    assert text.endswith("# EOF\n")
    names = {family.name for family in parse_om(text)}
    assert "thulium_outbound_campaign_records" in names
    assert "messaging_exporter_collect_errors" in names
    assert "_created" not in text


async def test_text_format_by_default(sim, sim_url, harness, make_config):
    h = await harness(make_config(demo(sim_url, sim)))
    response = await h.client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")


async def test_readyz_waits_for_every_first_attempt(sim, sim_url, harness, make_config):
    h = await harness(make_config(demo(sim_url, sim)))
    assert (await h.client.get("/healthz")).status == 200
    assert (await h.client.get("/readyz")).status == 503
    sim.set_fault("thulium", "acme", "http_500_html")  # a failed attempt counts as an attempt
    await h.collect()
    assert (await h.client.get("/readyz")).status == 200


async def test_landing_page_lists_targets_escaped_and_without_secrets(
    sim, sim_url, harness, make_config
):
    targets = demo(sim_url, sim)
    targets[0]["name"] = "<b>acme</b>"
    h = await harness(make_config(targets))
    sim.set_fault("thulium", "acme", "http_500_html")
    await h.collect()
    response = await h.client.get("/")
    page = await response.text()
    assert response.headers["Content-Type"].startswith("text/html")
    assert "&lt;b&gt;acme&lt;/b&gt;" in page
    assert "<b>acme</b>" not in page
    assert "http_5xx" in page
    assert 'href="/metrics"' in page
    for target in targets:
        assert target["password"] not in page


async def test_reload_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one(
    sim, sim_url, aiohttp_client, write_config, clock
):
    targets = demo(sim_url, sim)
    path = write_config({"targets": targets})
    exporter = make_exporter(load_config(path), clock=clock, config_path=path, autostart=False)
    client = await aiohttp_client(build_app(exporter, lifecycle=True))
    assert exporter.scheduler is not None
    await exporter.scheduler.run_all_once()

    write_config({"targets": targets[:1]})
    response = await client.post("/-/reload")
    assert response.status == 200
    scraped = parse_exposition(await (await client.get("/metrics")).text())
    accounts = {dict(key)["account"] for name, key in scraped if name.startswith("thulium_")}
    assert accounts == {"thulium-acme"}  # the kept target kept its samples, the removed one left
    assert scraped[("messaging_exporter_config_last_reload_successful", frozenset())] == 1

    write_config("targets: [{name: broken}]\n")
    response = await client.post("/-/reload")
    assert response.status == 500
    assert "targets[0]" in await response.text()
    scraped = parse_exposition(await (await client.get("/metrics")).text())
    assert scraped[("messaging_exporter_config_last_reload_successful", frozenset())] == 0
    assert (
        scraped[
            (
                "messaging_exporter_collect_success",
                labels(provider="thulium", account="thulium-acme"),
            )
        ]
        == 1
    )
    assert yaml.safe_load(path.read_text()) == {"targets": [{"name": "broken"}]}


async def test_a_failed_reload_over_http_answers_without_the_running_configs_secrets(
    sim, sim_url, aiohttp_client, write_config, clock
):
    targets = demo(sim_url, sim)
    path = write_config({"targets": targets})
    exporter = make_exporter(load_config(path), clock=clock, config_path=path, autostart=False)
    client = await aiohttp_client(build_app(exporter, lifecycle=True))
    password = next(t["password"] for t in targets if "password" in t)
    # A slip of the pen: the password pasted where the interval goes, quoted by the error.
    write_config({"targets": [{**targets[0], "interval": password}]})
    response = await client.post("/-/reload")
    assert response.status == 500
    text = await response.text()
    assert "targets[0].interval: invalid duration" in text
    assert password not in text


async def test_reload_over_http_is_refused_with_403_naming_the_flag_without_lifecycle(
    sim, sim_url, aiohttp_client, write_config, clock
):
    import structlog.testing

    targets = demo(sim_url, sim)
    path = write_config({"targets": targets})
    exporter = make_exporter(load_config(path), clock=clock, config_path=path, autostart=False)
    client = await aiohttp_client(build_app(exporter))
    write_config({"targets": targets[:1]})
    with structlog.testing.capture_logs() as logs:
        response = await client.post("/-/reload")
    assert response.status == 403
    assert "--web.enable-lifecycle" in await response.text()
    assert not [entry for entry in logs if entry["event"].startswith("config reload")]
    assert [target.name for target in exporter.config.targets] == [t["name"] for t in targets]
    assert (await client.get("/-/reload")).status == 405  # POST only, as before


async def test_a_reload_says_what_changed_and_applies_the_log_settings(
    sim, sim_url, write_config, clock, monkeypatch
):
    import structlog.testing

    from exporter import service

    targets = demo(sim_url, sim)
    path = write_config({"targets": targets})
    exporter = make_exporter(load_config(path), clock=clock, config_path=path, autostart=False)
    applied: list[tuple[object, ...]] = []
    monkeypatch.setattr(
        service,
        "setup_logging",
        lambda *args, redactor: applied.append((*args, redactor)),
    )
    changed = {**targets[1], "interval": "7m"}
    added = {**targets[0], "name": "thulium-new"}
    write_config(
        {
            "log": {"level": "debug", "format": "console"},
            "web": {"telemetry_path": "/other"},
            "targets": [changed, added],
        }
    )
    with structlog.testing.capture_logs() as logs:
        assert await exporter.reload() is None
    reloaded = next(entry for entry in logs if entry["event"] == "config reloaded")
    assert reloaded["added"] == ["thulium-new"]
    assert reloaded["removed"] == [targets[0]["name"]]
    assert reloaded["changed"] == [targets[1]["name"]]
    assert applied == [("debug", "console", exporter.redactor)]
    restart = next(entry for entry in logs if entry["event"].startswith("web settings changed"))
    assert restart["keys"] == ["web.telemetry_path"]


async def test_a_reload_without_a_config_file_is_refused_with_the_reason(sim, sim_url, make_config):
    import structlog.testing

    exporter = make_exporter(make_config(demo(sim_url, sim)), autostart=False)
    with structlog.testing.capture_logs() as logs:
        reason = await exporter.reload()
    assert reason is not None
    assert "demo" in reason
    assert [entry["reason"] for entry in logs if entry["event"] == "config reload refused"] == [
        reason
    ]
