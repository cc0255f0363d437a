"""The exporter's memory is bounded whatever its providers send.

A real exporter process (``python -m exporter`` with a config file, default settings but for a
short interval) collects several targets of every provider from the simulator, which runs in a
process of its own. Every fault that sends the exporter many bytes (a huge body, a body just under
the provider's ``max_response_bytes`` that does not parse, one that decodes into the most objects
per byte, an endless chunked body, a huge error body, a head at and past the client's limits) is
switched on for every target at once, for a few collection rounds each; the exporter's peak
resident set (the kernel's ``VmHWM``) must stay under :data:`BOUND`. The rounds are counted on the
exporter's own ``/metrics``, not by a clock.

Also here: the contract of ``max_response_bytes_in_flight`` and of the providers' own
``max_response_bytes`` defaults (documented, and enforced at load).
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from exporter import simulator
from exporter.config import DEFAULT_MAX_RESPONSE_BYTES_IN_FLIGHT, ConfigError, validate_config
from exporter.providers import registry
from exporter.providers.http import RESPONSE_OVERHEAD
from tests.conftest import free_port, parse_exposition, series

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
BOUND = 192 * MIB
"""The goal of docs/design.md ("Memory"): a quarter under the chart's memory limit of 256 MiB."""
COPIES = 3
"""Targets per simulator account: the demo's 8 accounts become 24 targets."""
ROUNDS = 3
"""Failed (or, for a fault the client takes, successful) collections of every target per fault."""
PHASE_BOUND = 180.0
"""Seconds a phase may take before the test gives up on it (a hang, not a measurement)."""

SIMULATOR = """
import asyncio
from exporter import simulator

async def main():
    runner, url = await simulator.start(simulator.Simulator(record_requests=False))
    print(url, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def default_limit(provider: str) -> int:
    default: int = registry()[provider].config_model.model_fields["max_response_bytes"].default
    return default


@dataclass(frozen=True)
class Phase:
    fault: str
    reasons: tuple[str, ...]
    """The reasons every target must fail with; none: the client takes the answer, and every
    target must succeed."""
    size: Callable[[str], int | None] = lambda provider: None


PHASES = [
    Phase("huge_body", ("parse",)),
    # Just under the provider's limit: read whole and decoded, into the most objects per byte.
    Phase("large_malformed_json", ("parse",), lambda provider: default_limit(provider) - 1),
    Phase("large_wrong_shape", ("parse",), lambda provider: default_limit(provider) - 1),
    Phase("endless_body", ("parse",)),
    Phase("huge_error_body", ("http_5xx",)),
    # 60 lines of 4,000 bytes: within the client's limits with the simulator's own 4 headers.
    Phase("huge_headers", (), lambda provider: 60 * 4000),
    # Past them: a connection failure, retried; a run of many requests (Exolve's) may reach
    # its deadline first.
    Phase("huge_headers", ("connection", "timeout")),
]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def failed(samples: Samples, reasons: tuple[str, ...]) -> dict[str, float]:
    """Failed collections of each target with one of ``reasons``."""
    counts: dict[str, float] = {}
    for labels, value in series(samples, "messaging_exporter_collect_errors_total").items():
        if dict(labels)["reason"] in reasons:
            account = dict(labels)["account"]
            counts[account] = counts.get(account, 0) + value
    return counts


def successes(samples: Samples) -> dict[str, float]:
    """When each target last succeeded."""
    return per_account(samples, "messaging_exporter_last_success_timestamp_seconds")


def sim_account(target: dict[str, Any]) -> str:
    return str(target["base_url"].split("://", 1)[1].split("/")[2])


def memory(pid: int) -> tuple[int, int]:
    """The process's resident set now and at its peak (VmRSS, VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    now = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    peak = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert now, status
    assert peak, status
    return int(now[1]) * 1024, int(peak[1]) * 1024


@pytest.fixture
async def simulator_process() -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SIMULATOR,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert url.startswith("http://"), url
        yield url
    finally:
        process.terminate()
        await process.wait()


class Exporter:
    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.session = aiohttp.ClientSession()

    async def scrape(self) -> Samples:
        async with self.session.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            return parse_exposition(await response.text())

    async def wait_for(
        self,
        what: str,
        pending: Callable[[Samples], list[str]],
    ) -> None:
        """Scrape until ``pending(samples)`` names no target; fail after :data:`PHASE_BOUND` or if
        the process dies."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PHASE_BOUND
        left: list[str] = ["(no answer)"]
        samples: Samples = {}
        while True:
            assert self.process.returncode is None, self.log.read_text()[-3000:]
            try:
                samples = await self.scrape()
                left = pending(samples)
                if not left:
                    return
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            if loop.time() > deadline:
                errors = {
                    name: {
                        dict(labels)["reason"]: value
                        for labels, value in series(
                            samples, "messaging_exporter_collect_errors_total"
                        ).items()
                        if dict(labels)["account"] == name and value
                    }
                    for name in left
                }
                raise AssertionError(f"{what}: not reached for {errors}")
            await asyncio.sleep(0.1)


@pytest.fixture
async def exporter_process(
    simulator_process: str, tmp_path: Path
) -> AsyncIterator[tuple[Exporter, list[dict[str, Any]]]]:
    demo = simulator.demo_targets(simulator_process, simulator.Simulator())
    targets = [
        {**target, "name": f"{target['name']}-{copy}"} for target in demo for copy in range(COPIES)
    ]
    config = {
        "log": {"level": "error"},
        "defaults": {"interval": "2s", "timeout": "2s"},
        "targets": targets,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "exporter.log"
    port = free_port()
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter",
            "--config",
            str(path),
            "--listen",
            f"127.0.0.1:{port}",
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    exporter = Exporter(process, port, log)
    try:
        yield exporter, targets
    finally:
        await exporter.session.close()
        process.terminate()
        await process.wait()


def per_account(samples: Samples, name: str, **match: str) -> dict[str, float]:
    return {
        dict(labels)["account"]: value
        for labels, value in series(samples, name).items()
        if match.items() <= dict(labels).items()
    }


def fewer_failures(
    names: list[str], reasons: tuple[str, ...], start: dict[str, float], samples: Samples
) -> list[str]:
    now = failed(samples, reasons)
    return [name for name in names if now.get(name, 0) < start.get(name, 0) + ROUNDS]


def fewer_successes(names: list[str], seen: dict[str, set[float]], samples: Samples) -> list[str]:
    for name, stamp in successes(samples).items():
        if name in seen:
            seen[name].add(stamp)
    return [name for name in names if len(seen[name]) <= ROUNDS]


@pytest.mark.slow
async def test_every_huge_answer_of_every_provider_at_once_stays_under_the_bound(
    simulator_process, exporter_process
):
    exporter, targets = exporter_process
    names = [target["name"] for target in targets]
    peak_rss = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak_rss
        while sampling:
            peak_rss = max(peak_rss, memory(exporter.process.pid)[0])
            await asyncio.sleep(0.05)

    # Every target collected once, without faults: the exporter's own size, its data included.
    await exporter.wait_for(
        "a first success",
        lambda s: [
            n for n in names if per_account(s, "messaging_exporter_collect_success").get(n) != 1
        ],
    )
    baseline = memory(exporter.process.pid)[0]
    sampler = asyncio.create_task(sample())
    report = [f"baseline {baseline / MIB:.1f} MiB"]
    async with aiohttp.ClientSession() as control:

        async def set_fault(fault: str | None, size: Callable[[str], int | None]) -> None:
            for target in targets[::COPIES]:
                payload: dict[str, Any] = {
                    "provider": target["provider"],
                    "account": sim_account(target),
                    "fault": fault,
                }
                if fault is not None and size(target["provider"]) is not None:
                    payload["size"] = size(target["provider"])
                async with control.post(f"{simulator_process}/_sim/faults", json=payload) as r:
                    assert r.status == 200, await r.text()

        try:
            for phase in PHASES:
                before = await exporter.scrape()
                await set_fault(phase.fault, phase.size)
                if phase.reasons:
                    start = failed(before, phase.reasons)
                    reasons = " or ".join(phase.reasons)
                    await exporter.wait_for(
                        f"{phase.fault}: {ROUNDS} failures with reason {reasons}",
                        partial(fewer_failures, names, phase.reasons, start),
                    )
                else:
                    await exporter.wait_for(
                        f"{phase.fault}: {ROUNDS} successes",
                        partial(fewer_successes, names, {name: set() for name in names}),
                    )
                report.append(
                    f"{phase.fault}: peak {memory(exporter.process.pid)[1] / MIB:.1f} MiB so far"
                )
                await set_fault(None, phase.size)
            # Every fault cleared: every target recovers, and what stays is measured.
            stamps = successes(await exporter.scrape())
            await exporter.wait_for(
                "a success after the faults",
                lambda s: [
                    n
                    for n in names
                    if per_account(s, "messaging_exporter_collect_success").get(n) != 1
                    or successes(s)[n] <= stamps.get(n, 0)
                ],
            )
        finally:
            sampling = False
            await sampler
    now, peak = memory(exporter.process.pid)
    report.append(f"after recovery {now / MIB:.1f} MiB; sampled peak {peak_rss / MIB:.1f} MiB")
    print("; ".join(report))
    assert peak < BOUND, report
    # The bound's derivation (docs/design.md): what answers in flight hold fits the budget, and
    # one body at a time is decoded.
    largest = max(default_limit(provider) for provider in registry())
    assert peak < baseline + DEFAULT_MAX_RESPONSE_BYTES_IN_FLIGHT + 26 * largest, report


# -- the contract ---------------------------------------------------------------------------------


def target(provider: str, **keys: Any) -> dict[str, Any]:
    """A minimal valid target of ``provider``."""
    base: dict[str, dict[str, Any]] = {
        "thulium": {"username": "u", "password": "p"},
        "altcraft": {"token": "t", "resources": [{"id": 1, "list_id": 1}]},
        "trustlat": {"company_id": "1", "access_token": "a"},
        "exolve": {"api_key": "k"},
    }
    return {
        "name": f"{provider}-1",
        "provider": provider,
        "base_url": "https://example.com",
        **base[provider],
        **keys,
    }


DEFAULT_LIMITS = {
    "thulium": 128 * 1024,
    "altcraft": 512 * 1024,
    "trustlat": 16 * 1024,
    "exolve": 16 * 1024,
}


@pytest.mark.parametrize(("provider", "limit"), DEFAULT_LIMITS.items())
def test_each_provider_has_its_own_max_response_bytes_and_a_target_may_override_it(provider, limit):
    config = validate_config({"targets": [target(provider)]})
    assert config.targets[0].max_response_bytes == limit
    config = validate_config({"targets": [target(provider, max_response_bytes=4096)]})
    assert config.targets[0].max_response_bytes == 4096
    config = validate_config(
        {"defaults": {"max_response_bytes": 2048}, "targets": [target(provider)]}
    )
    assert config.targets[0].max_response_bytes == 2048


def test_max_response_bytes_in_flight_defaults_to_64_mib_and_must_hold_every_targets_answer():
    config = validate_config({"targets": [target("thulium")]})
    assert config.max_response_bytes_in_flight == DEFAULT_MAX_RESPONSE_BYTES_IN_FLIGHT == 64 * MIB
    room = 64 * MIB - RESPONSE_OVERHEAD
    validate_config({"targets": [target("thulium", max_response_bytes=room)]})
    with pytest.raises(ConfigError) as refused:
        validate_config({"targets": [target("thulium", max_response_bytes=room + 1)]})
    assert "targets[0].max_response_bytes:" in str(refused.value)
    assert "max_response_bytes_in_flight" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        validate_config({"max_response_bytes_in_flight": 1024, "targets": [target("exolve")]})
    assert "max_response_bytes_in_flight:" in str(refused.value)


def test_the_docs_state_the_key_the_defaults_and_the_bound():
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    assert "| `max_response_bytes_in_flight` | `67108864` (64 MiB) |" in configuration
    for provider, limit in DEFAULT_LIMITS.items():
        assert f"| {provider} | `{limit}` |" in configuration, provider
    design = (ROOT / "docs" / "design.md").read_text()
    assert "## Memory" in design
    assert "192 MiB" in design
