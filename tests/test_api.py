"""``GET /api/v1/targets``: every target in each of its states, the last error redacted, the last
reload with its error text, behind the web config's basic auth; and the documented example holds
the keys the exporter answers with."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import yaml
from aiohttp.test_utils import TestClient, TestServer

from exporter import simulator
from exporter.config import load_config
from exporter.providers.http import basic_auth
from exporter.redaction import REDACTED
from exporter.service import make_exporter
from exporter.web.api import TARGETS_PATH
from exporter.web.app import build_app
from exporter.web.webconfig import WebSettings, load_web_config

ROOT = Path(__file__).resolve().parent.parent


def thulium(sim_url: str, sim: simulator.Simulator) -> dict[str, dict[str, Any]]:
    """The simulator's Thulium tenants as targets, by account."""
    targets = simulator.demo_targets(sim_url, sim)
    return {t["base_url"].split("/")[-2]: t for t in targets if t["provider"] == "thulium"}


def five_states(sim_url: str, sim: simulator.Simulator) -> list[dict[str, Any]]:
    """A target for each state: ``up`` and ``pending`` on acme, ``down`` and ``stale`` on globex
    (which will fail; ``stale`` keeps its series for one interval only), ``disabled``."""
    tenants = thulium(sim_url, sim)
    acme, globex = tenants["acme"], tenants["globex"]
    return [
        {**acme, "name": "up", "labels": {"team": "payments"}},
        {**globex, "name": "down", "interval": "30s", "stale_after": "1h"},
        {**globex, "name": "stale", "interval": "30s", "stale_after": "30s"},
        {**acme, "name": "pending"},
        {**acme, "name": "disabled", "enabled": False},
    ]


async def run(h: Any, *names: str) -> None:
    """One collection of each named target, in turn."""
    for name in names:
        target = h.exporter.targets.get(name)
        assert target is not None
        assert target.runner is not None
        await target.runner.run_once()


async def get_document(client: Any) -> dict[str, Any]:
    response = await client.get(TARGETS_PATH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document: dict[str, Any] = json.loads(await response.text())
    return document


async def test_targets_in_each_state(sim, sim_url, harness, make_config, clock):
    start = clock.time()
    h = await harness(make_config(five_states(sim_url, sim)))
    await run(h, "up", "down", "stale")
    sim.set_fault("thulium", "globex", "echo")
    clock.advance(60)
    await run(h, "down", "stale")

    document = await get_document(h.client)
    assert document["status"] == "success"
    targets = {entry["name"]: entry for entry in document["data"]["targets"]}
    assert list(targets) == ["up", "down", "stale", "pending", "disabled"]  # config order
    assert {name: entry["state"] for name, entry in targets.items()} == {
        "up": "up",
        "down": "down",
        "stale": "stale",
        "pending": "pending",
        "disabled": "disabled",
    }
    up, down, stale = targets["up"], targets["down"], targets["stale"]
    port = sim_url.rsplit(":", 1)[1].rstrip("/")
    assert up["provider"] == "thulium"
    assert up["labels"] == {"team": "payments"}
    assert up["host"] == f"127.0.0.1:{port}"
    assert up["interval"] == 60.0
    assert up["last_attempt"] == start
    assert up["last_success"] == start + up["last_duration"]
    assert up["last_duration"] >= 0
    assert up["consecutive_failures"] == 0
    assert up["last_error"] is None
    assert up["series"] > 0
    assert up["next_attempt"] is None  # no collection loop runs in the harness

    assert down["last_attempt"] == start + 60
    assert down["last_success"] < start + 60
    assert down["consecutive_failures"] == stale["consecutive_failures"] == 1
    assert down["series"] > 0
    assert stale["series"] == 0
    error = down["last_error"]
    assert set(error) == {"reason", "message"}
    assert error["reason"] == "http_4xx"
    assert "HTTP/1.1" in error["message"], "the echoed request reached the error text"
    assert REDACTED in error["message"]

    for name in ("pending", "disabled"):
        entry = targets[name]
        assert entry["last_attempt"] is entry["last_success"] is entry["last_duration"] is None
        assert entry["last_error"] is None
        assert entry["series"] == entry["consecutive_failures"] == 0
        assert entry["labels"] == {}

    reload = document["data"]["reload"]
    assert reload == {"time": start, "success": True, "error": None}


async def test_no_secret_in_the_answer(sim, sim_url, harness, make_config, clock):
    """The echoed request carries the tenant's password (Basic credentials): it is redacted."""
    config = make_config(five_states(sim_url, sim))
    h = await harness(config)
    sim.set_fault("thulium", "globex", "echo")
    await run(h, "down")
    text = await (await h.client.get(TARGETS_PATH)).text()
    tenant = sim.state["thulium"].tenants["globex"]
    secrets = [tenant.password, basic_auth(tenant.username, tenant.password).split()[1]]
    assert REDACTED in text
    for secret in secrets:
        assert secret not in text


async def test_a_failed_reload_keeps_its_error_text(sim, sim_url, write_config, clock):
    start = clock.time()
    path = write_config({"targets": five_states(sim_url, sim)})
    exporter = make_exporter(load_config(path), clock=clock, config_path=path, autostart=False)
    clock.advance(5)
    path.write_text(yaml.safe_dump({"targets": [{"name": "x", "provider": "thulium"}]}))
    error = await exporter.reload()
    assert error is not None
    assert "targets[0]" in error
    app = build_app(exporter)
    async with TestClient(TestServer(app)) as client:
        reload = (await get_document(client))["data"]["reload"]
        assert reload["time"] == start + 5
        assert reload["success"] is False
        assert reload["error"] == error
        page = await (await client.get("/")).text()
        assert "The last reload failed" in page
        assert "targets[0]" in page
        path.write_text(yaml.safe_dump({"targets": five_states(sim_url, sim)}))
        assert await exporter.reload() is None
        reload = (await get_document(client))["data"]["reload"]
        assert reload == {"time": start + 5, "success": True, "error": None}


async def test_basic_auth_guards_the_api(aiohttp_server, make_config, tmp_path):
    hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    settings = WebSettings(web_config, load_web_config(web_config))
    target = {
        "name": "quiet",
        "provider": "thulium",
        "base_url": "http://127.0.0.1:9/api",
        "username": "u",
        "password": "p",
    }
    exporter = make_exporter(make_config([target]), autostart=False)
    server = await aiohttp_server(build_app(exporter, settings))
    url = f"http://127.0.0.1:{server.port}{TARGETS_PATH}"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": basic_auth("prometheus", "wrong")}):
            async with session.get(url, headers=headers) as response:
                assert response.status == 401
                assert "quiet" not in await response.text()
        good = {"Authorization": basic_auth("prometheus", "right-password")}
        async with session.get(url, headers=good) as response:
            assert response.status == 200
            document = await response.json()
    assert [t["name"] for t in document["data"]["targets"]] == ["quiet"]


def shape(value: Any) -> Any:
    """The keys of a JSON document, recursively (a list by its first element's keys; labels are
    free-form)."""
    if isinstance(value, dict):
        return {key: None if key == "labels" else shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


async def test_the_documented_example_has_the_answers_keys(sim, sim_url, harness, make_config):
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/api.md has a JSON example"
    example = json.loads(blocks[0])
    h = await harness(make_config(five_states(sim_url, sim)))
    sim.set_fault("thulium", "globex", "echo")
    await run(h, "down")
    document = await get_document(h.client)
    failing = next(t for t in document["data"]["targets"] if t["last_error"] is not None)
    documented = next(t for t in example["data"]["targets"] if t["last_error"] is not None)
    assert shape(documented) == shape(failing)
    assert shape({**example, "data": {**example["data"], "targets": []}}) == shape(
        {**document, "data": {**document["data"], "targets": []}}
    )
    for key in ("state", "last_attempt", "next_attempt", "series", "labels"):
        assert f"`{key}`" in text, key
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert TARGETS_PATH in readme
    assert "docs/api.md" in readme
