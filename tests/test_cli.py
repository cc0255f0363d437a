"""The command line as a user runs it: --once against the simulator, --demo served and scraped,
logs as JSON lines without secrets, SIGTERM exits 0. Every process talks over loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter import simulator
from tests.conftest import free_port, labels, parse_exposition, run_promtool

ROOT = Path(__file__).resolve().parent.parent


async def run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop (the simulator is served from this same loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def thulium_targets(sim_url: str, sim: simulator.Simulator) -> list[dict[str, Any]]:
    return [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "thulium"]


async def test_once_prints_the_exposition_and_exits_0(sim, sim_url, write_config):
    path = write_config({"targets": thulium_targets(sim_url, sim)})
    code, stdout, stderr = await run("--once", "--config", str(path))
    assert code == 0, stderr
    scraped = parse_exposition(stdout)
    key = ("thulium_outbound_campaign_records", labels(account="thulium-acme", campaign_id="00001"))
    assert scraped[key] == 1324


async def test_once_prints_what_worked_and_exits_1_when_a_target_failed(sim, sim_url, write_config):
    sim.set_fault("thulium", "globex", "http_500_html")
    path = write_config({"targets": thulium_targets(sim_url, sim)})
    code, stdout, _ = await run("--once", "--config", str(path))
    assert code == 1
    scraped = parse_exposition(stdout)
    ok = ("thulium_outbound_active_campaigns", labels(account="thulium-acme"))
    assert scraped[ok] == 3
    failed = (
        "messaging_exporter_collect_success",
        labels(provider="thulium", account="thulium-globex"),
    )
    assert scraped[failed] == 0


async def test_logs_are_json_lines_and_never_show_a_secret(sim, sim_url, write_config):
    targets = thulium_targets(sim_url, sim)
    secret = "Sekr3t-Pa55word-for-tests"
    targets[0]["password"] = secret  # refused by the simulator: an auth failure is logged
    targets[1]["base_url"] = f"http://127.0.0.1:{free_port()}/api"  # connection refused
    path = write_config({"log": {"level": "debug", "format": "json"}, "targets": targets})
    code, stdout, stderr = await run("--once", "--config", str(path))
    assert code == 1
    events = [json.loads(line) for line in stderr.splitlines()]
    failures = {e["account"]: e for e in events if e.get("event") == "collection"}
    assert failures["thulium-acme"]["reason"] == "auth"
    assert failures["thulium-acme"]["outcome"] == "failure"
    assert "Unauthorized" in failures["thulium-acme"]["error"]  # the provider's own error text
    assert failures["thulium-globex"]["reason"] == "connection"
    assert secret not in stdout + stderr


def test_the_redactor_scrubs_secrets_from_messages_and_tracebacks(capsys) -> None:
    import structlog

    from exporter.logs import redactor, setup_logging

    setup_logging("info", "json", stream=sys.stdout)
    redactor.set_secrets(["s3cr3t-value"])
    try:
        raise ValueError("failed with token s3cr3t-value")
    except ValueError:
        structlog.get_logger("test").exception("boom", detail="has s3cr3t-value inside")
    redactor.add_runtime_secret("oauth-token-xyz")
    structlog.get_logger("test").info("token", value={"nested": ["oauth-token-xyz"]})
    out = capsys.readouterr().out
    assert "s3cr3t-value" not in out
    assert "oauth-token-xyz" not in out
    assert out.count("<redacted>") >= 4
    redactor.set_secrets([])


@contextlib.asynccontextmanager
async def exporter_process(*args: str, output: int = asyncio.subprocess.PIPE) -> Any:
    """``python -m exporter ARGS`` served on a free loopback port; killed if still running."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        "--listen",
        f"127.0.0.1:{port}",
        stdout=output,
        stderr=output,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield process, port
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def demo_process() -> Any:
    async with exporter_process("--demo") as (process, port):
        yield process, port


async def wait_ready(port: int, bound: float = 30.0) -> None:
    """Poll /readyz until it says 200, within a bound (the first runs are spread over ~5 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the exporter did not become ready in time")


async def test_demo_serves_metrics_that_promtool_accepts_and_exits_0_on_sigterm(
    demo_process, tmp_path
):
    process, port = demo_process
    assert process.stdout is not None
    banner = b""
    while not banner.strip():
        banner = await asyncio.wait_for(process.stdout.readline(), 30)
        if not banner:  # end of output: the demo died
            assert process.stderr is not None
            raise AssertionError((await process.stderr.read()).decode()[-3000:])
    assert f"http://127.0.0.1:{port}/metrics" in banner.decode()
    await wait_ready(port)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    scraped = parse_exposition(text)
    assert any(name == "thulium_outbound_campaign_records" for name, _ in scraped)
    assert all(
        value == 1
        for (name, _), value in scraped.items()
        if name == "messaging_exporter_collect_success"
    )
    exposition = tmp_path / "demo.prom"
    exposition.write_text(text)
    checked = run_promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_serve_reloads_on_sighup_logs_json_and_exits_0_on_sigterm(sim, sim_url, write_config):
    targets = thulium_targets(sim_url, sim)
    path = write_config({"defaults": {"interval": "1s"}, "targets": targets})
    async with exporter_process("--config", str(path)) as (process, port):
        await wait_ready(port)

        async def accounts() -> set[str]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/metrics") as response,
            ):
                scraped = parse_exposition(await response.text())
            return {
                dict(labels)["account"]
                for name, labels in scraped
                if name == "messaging_exporter_collect_success"
            }

        assert await accounts() == {"thulium-acme", "thulium-globex"}
        write_config({"defaults": {"interval": "1s"}, "targets": targets[:1]})
        process.send_signal(signal.SIGHUP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await accounts() != {"thulium-acme"}:
            assert loop.time() < deadline, "the reload did not take effect"
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    assert process.stderr is not None
    assert process.stdout is not None
    output = (await process.stderr.read() + await process.stdout.read()).decode()
    events = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(event["event"] == "config reloaded" for event in events)
    assert any(event["event"] == "serving" for event in events)
    for target in targets:
        assert target["password"] not in output


async def test_sigterm_cancels_a_hanging_collection_and_exits_0(sim, sim_url, write_config):
    from tests.conftest import eventually

    targets = thulium_targets(sim_url, sim)
    sim.set_fault("thulium", "acme", "hang")
    path = write_config({"defaults": {"interval": "60s", "timeout": "50s"}, "targets": targets})
    output = asyncio.subprocess.DEVNULL
    async with exporter_process("--config", str(path), output=output) as (process, _):
        await eventually(lambda: bool(sim.received("thulium", "acme")), bound=20)
        loop = asyncio.get_running_loop()
        started = loop.time()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        assert loop.time() - started < 6


async def test_without_a_config_file_the_error_hints_at_config_and_demo(tmp_path):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert "--config" in stderr.decode()
    assert "--demo" in stderr.decode()


async def run_on_host(hostname: str, *args: str) -> tuple[int, str, str]:
    """The CLI in a process of its own whose hostname reads as ``hostname`` (a StatefulSet pod's
    name), for --shard-from-hostname."""
    code = (
        "import socket, sys\n"
        f"socket.gethostname = lambda: {hostname!r}\n"
        "from exporter.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def shard_info(exposition: str) -> set[tuple[str, str]]:
    return {
        (dict(key[1])["index"], dict(key[1])["count"])
        for key in parse_exposition(exposition)
        if key[0] == "messaging_exporter_shard_info"
    }


async def test_shard_from_hostname_takes_the_count_from_sharding_count_in_the_config(
    sim, sim_url, write_config
):
    path = write_config({"targets": thulium_targets(sim_url, sim), "sharding": {"count": 3}})
    code, stdout, stderr = await run_on_host(
        "exporter-2", "--shard-from-hostname", "--once", "--config", str(path)
    )
    assert code == 0, stderr
    assert shard_info(stdout) == {("2", "3")}


async def test_shard_count_flag_wins_over_sharding_count_in_the_config(sim, sim_url, write_config):
    path = write_config({"targets": thulium_targets(sim_url, sim), "sharding": {"count": 3}})
    code, stdout, stderr = await run_on_host(
        "exporter-3",
        "--shard-from-hostname",
        "--shard-count",
        "4",
        "--once",
        "--config",
        str(path),
    )
    assert code == 0, stderr
    assert shard_info(stdout) == {("3", "4")}


@pytest.mark.parametrize("demo", [False, True], ids=["config", "demo"])
async def test_shard_from_hostname_without_any_count_exits_2_naming_both_sources(
    sim, sim_url, write_config, demo
):
    path = write_config({"targets": thulium_targets(sim_url, sim), "sharding": {"index": 0}})
    where = ["--demo"] if demo else ["--config", str(path)]
    code, stdout, stderr = await run_on_host(
        "exporter-0", "--shard-from-hostname", "--check-config", *where
    )
    assert code == 2
    assert stdout == ""
    assert stderr == (
        "--shard: --shard-from-hostname needs the shard count: --shard-count COUNT, "
        "or sharding.count in the config\n"
    )
