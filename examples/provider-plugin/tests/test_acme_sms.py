"""Acme SMS: the parser on its own, then the installed plugin end to end (the exporter's simulator
serving Acme's API on a loopback port, the exporter's command line collecting from it once).

Run with the plugin installed next to the exporter (``pip install -e .``), from this directory:
``python -m pytest``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from exporter.plugin import ParseError, Sample, Simulator, demo_targets, start_simulator
from prometheus_client.parser import text_string_to_metric_families

from acme_sms_provider.provider import MESSAGES, error_message, error_text, parse_stats

# ----------------------------------------------------------------------------------- the parser


def test_parse_counts_as_snake_case_labels() -> None:
    body = {
        "messages": [
            {"direction": "OUTBOUND", "status": "DELIVERED", "count": 1520},
            {"direction": "INBOUND", "status": "RECEIVED", "count": 0},
            {"direction": "OUTBOUND", "status": "PartlyDelivered", "count": 2, "extra": "x"},
        ],
        "generated_at": "2026-01-01T00:00:00Z",
    }
    assert parse_stats(body) == [
        Sample(MESSAGES, ("outbound", "delivered"), 1520.0),
        Sample(MESSAGES, ("inbound", "received"), 0.0),
        Sample(MESSAGES, ("outbound", "partly_delivered"), 2.0),
    ]


def test_no_traffic_is_no_sample() -> None:
    assert parse_stats({"messages": []}) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "answer"),
        ({}, "messages"),
        ({"messages": {}}, "messages"),
        ({"messages": [{"direction": "OUTBOUND", "status": "SENT"}]}, "messages.0.count"),
        ({"messages": [{"direction": "OUTBOUND", "status": "SENT", "count": "3"}]}, "count"),
        ({"messages": [{"direction": "OUTBOUND", "status": "SENT", "count": 1.5}]}, "count"),
        ({"messages": [{"direction": "OUTBOUND", "status": "SENT", "count": -1}]}, "negative"),
        (
            {"messages": [{"direction": "OUT", "status": "SENT", "count": 1}] * 2},
            "appears twice",
        ),
    ],
)
def test_a_wrong_answer_is_a_parse_error(body: object, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_stats(body)


def test_error_texts() -> None:
    body = {"error": {"code": "INVALID_KEY", "message": "the API key is not valid"}}
    assert error_message(body) == "the API key is not valid (INVALID_KEY)"
    assert error_text(b'{"error": {"message": "down"}}') == "down"
    assert error_text(b"<html>502</html>") is None
    assert error_message({"messages": []}) is None


# --------------------------------------------------------------------- installed, end to end


def test_the_exporter_finds_the_plugin() -> None:
    """The demo config holds the plugin's targets; neither of its parts is left out."""
    code, out, err = asyncio.run(_exporter("--demo", "--check-config"))
    assert code == 0, err
    assert "acme-shop: provider=acme" in out
    assert '"plugin": "acme"' not in err


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _exporter(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _once(tmp_path: Path, fault: str | None = None, **target: Any) -> tuple[int, Samples, str]:
    """Serve the simulator (with ``fault`` on the account "shop"), collect once from it."""

    async def run() -> tuple[int, Samples, str]:
        sim = Simulator()
        if fault is not None:
            sim.set_fault("acme", "shop", fault)
        runner, url = await start_simulator(sim)
        try:
            (config,) = [t for t in demo_targets(url, sim) if t["name"] == "acme-shop"]
            path = tmp_path / "config.yaml"
            path.write_text(yaml.safe_dump({"targets": [dict(config, **target)]}), "utf-8")
            code, out, err = await _exporter("--once", "--config", str(path))
        finally:
            await runner.cleanup()
        return code, _samples(out), err

    return asyncio.run(run())


def _labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def test_once_against_the_simulator(tmp_path: Path) -> None:
    code, samples, err = _once(tmp_path)
    assert code == 0, err
    acme = {key: value for key, value in samples.items() if key[0] == MESSAGES}
    shop = {"account": "acme-shop"}
    assert acme == {
        (MESSAGES, _labels(**shop, direction="outbound", status="delivered")): 1520,
        (MESSAGES, _labels(**shop, direction="outbound", status="failed")): 12,
        (MESSAGES, _labels(**shop, direction="outbound", status="queued")): 3,
        (MESSAGES, _labels(**shop, direction="inbound", status="received")): 88,
    }
    success = ("messaging_exporter_collect_success", _labels(provider="acme", **shop))
    assert samples[success] == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("auth", "auth"),
        ("counters_unavailable", "provider_error"),
        ("wrong_shape", "parse"),
        ("strings_for_numbers", "parse"),
        ("http_500_html", "http_5xx"),
    ],
)
def test_a_failure_has_its_reason(tmp_path: Path, fault: str, reason: str) -> None:
    code, samples, _ = _once(tmp_path, fault)
    assert code == 1
    target = {"provider": "acme", "account": "acme-shop"}
    assert samples[("messaging_exporter_collect_success", _labels(**target))] == 0
    errors = "messaging_exporter_collect_errors_total"
    assert samples[(errors, _labels(**target, reason=reason))] == 1
    assert not any(name == MESSAGES for name, _ in samples)


def test_the_key_can_come_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "acme-key"
    key.write_text("demo-acme-shop-key\n", "utf-8")  # as a mounted Secret: trailing newline
    code, samples, err = _once(tmp_path, api_key=None, api_key_file=str(key))
    assert code == 0, err
    target = _labels(provider="acme", account="acme-shop")
    assert samples[("messaging_exporter_collect_success", target)] == 1
