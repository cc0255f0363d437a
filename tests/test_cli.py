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
from tests.conftest import free_port, labels, parse_exposition, run_cli, run_promtool, run_python

ROOT = Path(__file__).resolve().parent.parent


def thulium_targets(sim_url: str, sim: simulator.Simulator) -> list[dict[str, Any]]:
    return [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "thulium"]


def test_serving_a_config_file_does_not_import_the_simulator(write_config):
    """Only ``--demo`` (and the tests) use the simulator: the exporter as it serves a config file,
    app and collection loop assembled, has not imported it."""
    import subprocess

    path = write_config(
        {
            "targets": [
                {
                    "name": "t",
                    "provider": "thulium",
                    "base_url": "http://127.0.0.1:9/api",
                    "username": "u",
                    "password": "p",
                }
            ]
        }
    )
    assembled = (
        "import sys\n"
        "from exporter import cli\n"
        "from exporter.config import load_config\n"
        f"exporter = cli.make_exporter(load_config({str(path)!r}))\n"
        "cli.build_app(exporter)\n"
        "print(sorted(m for m in sys.modules if m.startswith('exporter.simulator')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", assembled], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


async def test_once_prints_the_exposition_and_exits_0(sim, sim_url, write_config):
    path = write_config({"targets": thulium_targets(sim_url, sim)})
    code, stdout, stderr = await run_cli("--once", "--config", str(path))
    assert code == 0, stderr
    scraped = parse_exposition(stdout)
    key = ("thulium_outbound_campaign_records", labels(account="thulium-acme", campaign_id="00001"))
    assert scraped[key] == 1324
    # The process's families describe the process that serves; --once serves nothing.
    assert not [name for name, _ in scraped if name.startswith(("process_", "python_gc_"))]


async def test_once_prints_what_worked_and_exits_1_when_a_target_failed(sim, sim_url, write_config):
    sim.set_fault("thulium", "globex", "http_500_html")
    path = write_config({"targets": thulium_targets(sim_url, sim)})
    code, stdout, _ = await run_cli("--once", "--config", str(path))
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
    code, stdout, stderr = await run_cli("--once", "--config", str(path))
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

    from exporter.logs import setup_logging
    from exporter.redaction import Redactor

    class Owner:
        pass

    redactor = Redactor(["s3cr3t-value"])
    owner = Owner()
    for fmt in ("json", "console"):
        setup_logging("info", fmt, stream=sys.stdout, redactor=redactor)
        try:
            raise ValueError("failed with token s3cr3t-value")
        except ValueError:
            structlog.get_logger("test").exception("boom", detail="has s3cr3t-value inside")
        redactor.add_secret("oauth-token-xyz", owner=owner)
        structlog.get_logger("test").info("token", value={"nested": ["oauth-token-xyz"]})
        out = capsys.readouterr().out
        assert "ValueError" in out, "the traceback is logged"
        assert "s3cr3t-value" not in out
        assert "oauth-token-xyz" not in out
        assert out.count("<redacted>") >= 3


@contextlib.asynccontextmanager
async def exporter_process(
    *args: str, output: int = asyncio.subprocess.PIPE, listen_flag: str = "--web.listen-address"
) -> Any:
    """``python -m exporter ARGS`` served on a free loopback port; killed if still running."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        listen_flag,
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


# ------------------------------------------------------------------ Prometheus's flag conventions


async def test_help_shows_the_conventional_flags_and_the_deprecated_one():
    code, stdout, _ = await run_cli("--help")
    assert code == 0
    text = " ".join(stdout.split())  # argparse wraps the help text
    for flag in (
        "--web.listen-address ADDR",
        "--web.telemetry-path PATH",
        "--web.config.file PATH",
        "--web.enable-lifecycle",
        "--log.level {debug,info,warning,error}",
        "--log.format {json,logfmt,console}",
        "--target NAME",
    ):
        assert flag in text, flag
    assert "--listen ADDR deprecated: use --web.listen-address" in text


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def stop(process: Any) -> str:
    """SIGTERM, then everything the process wrote to stdout and stderr."""
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    return (await process.stderr.read() + await process.stdout.read()).decode()


@pytest.mark.parametrize("deprecated", [False, True], ids=["web.listen-address", "listen"])
async def test_flags_win_over_the_config_file_and_listen_is_deprecated_with_a_warning(
    sim, sim_url, write_config, deprecated
):
    path = write_config(
        {
            "web": {"listen_address": "127.0.0.1:9", "telemetry_path": "/from-file"},
            "log": {"level": "error", "format": "json"},
            "targets": thulium_targets(sim_url, sim),
        }
    )
    flags = ["--web.telemetry-path", "/probe", "--log.level", "debug", "--log.format", "logfmt"]
    async with exporter_process(
        "--config",
        str(path),
        *flags,
        listen_flag="--listen" if deprecated else "--web.listen-address",
    ) as (process, port):
        await wait_ready(port)
        status, text = await get(port, "/probe")
        assert status == 200
        assert "messaging_exporter_collect_success" in text
        assert (await get(port, "/from-file"))[0] == 404
        output = await stop(process)
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    assert not [line for line in lines if line.startswith("{")]  # logfmt, not the file's json
    assert all(line.startswith("timestamp=") for line in lines), lines[:3]
    assert any("level=debug" in line and "event=collection" in line for line in lines)
    warnings = [line for line in lines if 'event="flag deprecated"' in line]
    if deprecated:
        assert len(warnings) == 1
        assert "flag=--listen instead=--web.listen-address" in warnings[0]
    else:
        assert warnings == []


async def test_flags_win_over_the_file_at_every_reload(sim, sim_url, write_config):
    from exporter.config import load_config
    from exporter.service import make_exporter

    targets = thulium_targets(sim_url, sim)
    path = write_config({"log": {"level": "info"}, "targets": targets})
    overrides = {"log.level": "debug", "log.format": "logfmt", "web.telemetry_path": "/probe"}
    config = load_config(path).with_overrides(overrides)
    exporter = make_exporter(config, config_path=path, autostart=False, overrides=overrides)
    write_config(
        {
            "log": {"level": "error", "format": "console"},
            "web": {"telemetry_path": "/other"},
            "targets": targets[:1],
        }
    )
    assert await exporter.reload() is None
    assert [target.name for target in exporter.config.targets] == [targets[0]["name"]]
    assert exporter.config.log.level == "debug"
    assert exporter.config.log.format == "logfmt"
    assert exporter.config.web.telemetry_path == "/probe"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--web.telemetry-path", "metrics"], "--web.telemetry-path: "),
        (["--web.telemetry-path", "/healthz"], "--web.telemetry-path: "),
        (["--web.listen-address", "nowhere"], "--web.listen-address: 'nowhere' is not host:port"),
        (["--listen", "nowhere"], "--listen: 'nowhere' is not host:port"),
        (["--log.level", "loud"], "--log.level: invalid choice: 'loud'"),
        (["--log.format", "xml"], "--log.format: invalid choice: 'xml'"),
        (["--target", "thulium-acme"], "--target: only with --once"),
    ],
)
async def test_a_bad_flag_value_exits_2_naming_the_flag(sim, sim_url, write_config, flags, message):
    path = write_config({"targets": thulium_targets(sim_url, sim)})
    code, stdout, stderr = await run_cli("--config", str(path), "--check-config", *flags)
    assert code == 2
    assert stdout == ""
    assert message in stderr


async def test_check_config_warns_of_a_deprecated_flag(sim, sim_url, write_config):
    path = write_config({"targets": thulium_targets(sim_url, sim)})
    code, stdout, stderr = await run_cli("--config", str(path), "--check-config", "--listen", ":1")
    assert code == 0
    assert stdout.startswith(f"{path}: OK")
    assert stderr == "warning: --listen is deprecated; use --web.listen-address\n"


async def test_logfmt_in_the_config_file(sim, sim_url, write_config):
    targets = thulium_targets(sim_url, sim)
    targets[0]["password"] = "wrong-password-for-tests"  # refused: a warning is logged
    path = write_config({"log": {"format": "logfmt"}, "targets": targets})
    code, _, stderr = await run_cli("--once", "--config", str(path))
    assert code == 1
    failure = next(line for line in stderr.splitlines() if "event=collection" in line)
    assert failure.startswith("timestamp=")
    assert " level=warning logger=exporter.collect.scheduler event=collection " in failure
    assert "account=thulium-acme" in failure
    assert "reason=auth" in failure
    assert "wrong-password-for-tests" not in stderr


@pytest.mark.parametrize("lifecycle", [False, True], ids=["without", "with"])
async def test_reload_over_http_needs_web_enable_lifecycle_and_sighup_works_either_way(
    sim, sim_url, write_config, lifecycle
):
    targets = thulium_targets(sim_url, sim)
    path = write_config({"targets": targets})
    flags = ["--web.enable-lifecycle"] if lifecycle else []
    async with exporter_process("--config", str(path), *flags) as (process, port):
        await wait_ready(port)
        write_config({"targets": targets[:1]})
        status, text = await get(port, "/-/reload", "POST")
        if lifecycle:
            assert (status, text) == (200, "reloaded\n")
        else:
            assert status == 403
            assert "--web.enable-lifecycle" in text
            process.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            scraped = parse_exposition((await get(port, "/metrics"))[1])
            accounts = {dict(key)["account"] for name, key in scraped if name.endswith("_success")}
            return accounts == {targets[0]["name"]}

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await reloaded():
            assert loop.time() < deadline, "the reload did not take effect"
            await asyncio.sleep(0.1)
        output = await stop(process)
    events = [json.loads(line)["event"] for line in output.splitlines() if line.startswith("{")]
    assert events.count("config reloaded") == 1


async def test_the_process_families_are_served(demo_process):
    process, port = demo_process
    await wait_ready(port)
    status, text = await get(port, "/metrics")
    assert status == 200
    scraped = parse_exposition(text)
    assert scraped[("process_start_time_seconds", frozenset())] > 1_600_000_000
    assert scraped[("process_resident_memory_bytes", frozenset())] > 10 * 2**20
    assert scraped[("process_open_fds", frozenset())] >= 3
    assert ("process_cpu_seconds_total", frozenset()) in scraped
    assert ("python_gc_collections_total", labels(generation="2")) in scraped
    assert not [name for name, _ in scraped if name.startswith("python_info")]
    await stop(process)


# ------------------------------------------------------------------- looking at one account


def accounts_asked(sim: simulator.Simulator) -> set[tuple[str, str]]:
    return {(request.provider, request.account) for request in sim.requests}


async def test_once_with_target_collects_only_the_named_targets(sim, sim_url, write_config):
    targets = simulator.demo_targets(sim_url, sim)
    names = ["thulium-globex", "exolve-shop"]
    path = write_config({"sharding": {"index": 0, "count": 4}, "targets": targets})
    code, stdout, stderr = await run_cli(
        "--once", "--config", str(path), "--target", names[0], "--target", names[1]
    )
    assert code == 0, stderr
    assert accounts_asked(sim) == {("thulium", "globex"), ("exolve", "shop")}
    scraped = parse_exposition(stdout)
    collected = {
        dict(key)["account"]
        for name, key in scraped
        if name == "messaging_exporter_collect_success"
    }
    assert collected == set(names)  # whichever shard of the config's four owns them
    assert scraped[("thulium_outbound_active_campaigns", labels(account="thulium-globex"))] > 0


async def test_once_with_a_disabled_target_exits_2_naming_it(sim, sim_url, write_config):
    targets = thulium_targets(sim_url, sim)
    targets[1]["enabled"] = False
    path = write_config({"targets": targets})
    name = targets[1]["name"]
    code, stdout, stderr = await run_cli("--once", "--config", str(path), "--target", name)
    assert code == 2
    assert stdout == ""
    assert f"--target: {name!r} has enabled: false in the config" in stderr
    assert sim.requests == []


async def test_once_with_an_unknown_target_exits_2_naming_it(sim, sim_url, write_config):
    path = write_config({"targets": thulium_targets(sim_url, sim)})
    code, stdout, stderr = await run_cli(
        "--once", "--config", str(path), "--target", "thulium-acme", "--target", "nope"
    )
    assert code == 2
    assert stdout == ""
    assert "--target: the config has no target named 'nope'" in stderr
    assert sim.requests == []


async def test_check_config_with_a_shard_lists_that_shards_targets(sim, sim_url, write_config):
    from exporter.collect.sharding import shard_of

    targets = simulator.demo_targets(sim_url, sim)
    path = write_config({"targets": targets})
    for index in range(3):
        code, stdout, stderr = await run_cli(
            "--check-config", "--config", str(path), "--shard", f"{index}/3"
        )
        assert code == 0, stderr
        mine = [t["name"] for t in targets if shard_of(t["name"], 3) == index]
        lines = stdout.splitlines()
        assert lines[0] == f"{path}: OK, {len(targets)} target(s)"
        assert (
            f"shard {index}/3: collects {len(mine)} target(s), "
            f"leaves {len(targets) - len(mine)} to the other shards"
        ) in lines
        listed = [line.split()[0].rstrip(":") for line in lines if line.startswith("  ")]
        assert listed == mine
    code, stdout, _ = await run_cli("--check-config", "--config", str(path))
    assert code == 0
    assert not [line for line in stdout.splitlines() if line.startswith("shard ")]
    assert len([line for line in stdout.splitlines() if line.startswith("  ")]) == len(targets)


async def run_on_host(hostname: str, *args: str) -> tuple[int, str, str]:
    """The CLI in a process of its own whose hostname reads as ``hostname`` (a StatefulSet pod's
    name), for --shard-from-hostname."""
    code = (
        "import socket, sys\n"
        f"socket.gethostname = lambda: {hostname!r}\n"
        "from exporter.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return await run_python("-c", code, *args)


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


# ----------------------------------------------------------- --health-check, the demo's config


async def next_event(process: asyncio.subprocess.Process, event: str, bound: float = 30) -> Any:
    """The next JSON log line of ``process`` (stderr) with this event; fails at its exit."""
    assert process.stderr is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), max(deadline - loop.time(), 0.1))
        if not line:
            raise AssertionError(
                f"the exporter exited (status {process.returncode}) before {event}"
            )
        entry = json.loads(line)
        if entry["event"] == event:
            return entry


@contextlib.asynccontextmanager
async def served(config: Path, *args: str) -> Any:
    """``python -m exporter --config CONFIG ARGS``, once it logs ``serving``; killed after."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await next_event(process, "serving")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


QUIET_TARGET = {
    "name": "thulium-quiet",
    "provider": "thulium",
    "base_url": "http://127.0.0.1:9/api",
    "username": "u",
    "password": "p",
    "interval": "1h",
}


async def test_health_check_asks_healthz_at_the_configured_address(write_config, tmp_path):
    port = free_port()
    path = write_config({"web": {"listen_address": f"0.0.0.0:{port}"}, "targets": [QUIET_TARGET]})
    async with served(path):
        code, stdout, stderr = await run_cli("--health-check", "--config", str(path))
        assert (code, stderr) == (0, "")
        assert stdout == f"healthy: GET http://127.0.0.1:{port}/healthz: HTTP 200\n"
        # --listen overrides the config's address, as it does for serving: nothing listens there.
        other = free_port()
        code, _, stderr = await run_cli(
            "--health-check", "--config", str(path), "--listen", f":{other}"
        )
        assert code == 1
        assert stderr.startswith(f"unhealthy: GET http://127.0.0.1:{other}/healthz: ")
        # Only the web section is read: targets broken by an edit that was not reloaded (or
        # secrets this user cannot read) leave the running exporter healthy.
        broken = write_config(
            {"web": {"listen_address": f":{port}"}, "targets": [{"name": "x"}]}, "edited.yaml"
        )
        code, _, stderr = await run_cli("--health-check", "--config", str(broken))
        assert (code, stderr) == (0, "")
    code, _, stderr = await run_cli("--health-check", "--config", str(path))
    assert code == 1
    assert "Connection refused" in stderr


async def test_health_check_without_a_config_file_asks_the_demos_address():
    """``--demo`` reads no file: neither does its health check (the image's HEALTHCHECK names the
    config path, which holds no file when the image runs the demo)."""
    async with exporter_process("--demo", "--demo.simulator-address", "127.0.0.1:0") as (_, port):
        await wait_ready(port)
        missing = "/nonexistent/config.yaml"
        listen = f"127.0.0.1:{port}"
        code, stdout, stderr = await run_cli(
            "--health-check", "--config", missing, "--listen", listen
        )
        assert (code, stderr) == (0, "")
        assert stdout == f"healthy: GET http://{listen}/healthz: HTTP 200\n"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("not a mapping", "the file must be a YAML mapping"),
        ("web: [", "YAML syntax error"),
        ({"web": {"listen_address": 10057}}, "web.listen_address: "),
        ({"web": {"listen_address": "nowhere"}}, "web.listen_address: 'nowhere' is not host:port"),
        ({"web": {"listen_address": "${UNSET_FOR_THE_TEST}"}}, "UNSET_FOR_THE_TEST is not set"),
        ({"web": {"listen_address": "127.0.0.1:0"}}, "port 0"),
        ({"web": {"listen": ":1"}}, "web.listen: unknown key"),
    ],
)
async def test_health_check_exits_1_never_2_on_a_bad_config(
    write_config, tmp_path, config, message
):
    """Docker reserves exit status 2 in a HEALTHCHECK: a config problem is "unhealthy" (1)."""
    path = write_config(config)
    code, stdout, stderr = await run_cli("--health-check", "--config", str(path))
    assert code == 1
    assert stdout == ""
    assert stderr.startswith("unhealthy: ")
    assert message in stderr


@pytest.fixture(scope="module")
def tls_ca() -> Any:
    import trustme

    return trustme.CA()


def web_config_file(
    tmp_path: Path, ca: Any, name: str, client_auth: str | None = None, **top: Any
) -> Path:
    """A web config with a certificate of ``ca`` for ``localhost`` (not 127.0.0.1), and more."""
    import yaml

    leaf = ca.issue_cert("localhost")
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    tls: dict[str, str] = {"cert_file": str(cert), "key_file": str(key)}
    if client_auth is not None:
        ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
        tls |= {"client_ca_file": str(tmp_path / "ca.crt"), "client_auth_type": client_auth}
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({"tls_server_config": tls, **top}))
    return path


async def test_health_check_speaks_tls_and_trusts_only_the_configured_certificate(
    write_config, tmp_path, tls_ca
):
    import bcrypt

    port = free_port()
    path = write_config({"web": {"listen_address": f"127.0.0.1:{port}"}, "targets": [QUIET_TARGET]})
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = web_config_file(tmp_path, tls_ca, "server", basic_auth_users={"prometheus": hashed})
    async with served(path, "--web.config.file", str(web)):
        code, stdout, stderr = await run_cli(
            "--health-check", "--config", str(path), "--web.config.file", str(web)
        )
        assert (code, stderr) == (0, "")
        assert stdout == f"healthy: GET https://127.0.0.1:{port}/healthz: HTTP 200\n"
        # Without the web config the check speaks plain HTTP to a TLS port: unhealthy.
        code, _, stderr = await run_cli("--health-check", "--config", str(path))
        assert code == 1, stderr
        # A certificate of the same CA, but not the one the exporter was given: not trusted.
        other = web_config_file(tmp_path, tls_ca, "other")
        code, _, stderr = await run_cli(
            "--health-check", "--config", str(path), "--web.config.file", str(other)
        )
        assert code == 1
        assert "the server's certificate is not the one in" in stderr


async def test_health_check_presents_the_servers_certificate_when_client_certs_are_required(
    write_config, tmp_path, tls_ca
):
    port = free_port()
    path = write_config({"web": {"listen_address": f"127.0.0.1:{port}"}, "targets": [QUIET_TARGET]})
    web = web_config_file(tmp_path, tls_ca, "server", client_auth="RequireAndVerifyClientCert")
    async with served(path, "--web.config.file", str(web)):
        code, stdout, stderr = await run_cli(
            "--health-check", "--config", str(path), "--web.config.file", str(web)
        )
        assert (code, stderr) == (0, "")
        assert stdout.startswith("healthy: GET https://")


async def test_a_reload_of_an_unchanged_file_says_so(sim, sim_url, write_config):
    """After an edit that never reached the exporter (a replaced file under a single-file bind
    mount) the reload reads what runs already: its log line says ``unchanged``."""
    data = {"log": {"format": "json"}, "targets": thulium_targets(sim_url, sim)}
    path = write_config(data)
    port = free_port()
    async with served(path, "--listen", f"127.0.0.1:{port}") as process:
        await wait_ready(port)  # an answer: the signal handlers are in place
        process.send_signal(signal.SIGHUP)
        reloaded = await next_event(process, "config reloaded")
        assert reloaded["unchanged"] is True
        assert reloaded["changed"] == reloaded["added"] == reloaded["removed"] == []
        data["targets"][0]["interval"] = "2m"
        write_config(data)
        process.send_signal(signal.SIGHUP)
        reloaded = await next_event(process, "config reloaded")
        assert reloaded["unchanged"] is False
        assert reloaded["changed"] == ["thulium-acme"]
        # A secret file's new content is a change, though the config file is the same.
        secret = path.parent / "password"
        secret.write_text(data["targets"][1].pop("password"))
        data["targets"][1]["password_file"] = str(secret)
        write_config(data)
        process.send_signal(signal.SIGHUP)
        assert (await next_event(process, "config reloaded"))["unchanged"] is False
        secret.write_text("rotated")
        process.send_signal(signal.SIGHUP)
        reloaded = await next_event(process, "config reloaded")
        assert reloaded["unchanged"] is False
        assert reloaded["changed"] == ["thulium-globex"]


def readme_demo_commands() -> tuple[str, str, str]:
    """From the README's Quick start: the demo's start line as quoted, the command that prints its
    config and the one that collects with it."""
    import re

    text = (ROOT / "README.md").read_text()
    quick_start = text[text.index("## Quick start") : text.index("## Running it for real")]
    prose = re.sub(r"^```.*?^```", "", quick_start, flags=re.M | re.S)
    spans = re.findall(r"`([^`]+)`", prose.replace("\n", " "))
    (line,) = [span for span in spans if span.startswith("demo: ")]
    (printing,) = [span for span in spans if "--demo.print-config" in span]
    (once,) = [span for span in spans if span.endswith("--config demo.yaml --once")]
    return line, printing, once


async def test_the_demo_logs_its_simulator_and_prints_a_config_that_works_against_it(tmp_path):
    """The demo's start line names the simulator, as the README quotes it; the README's
    ``--demo.print-config`` command, pointed at it, prints a config that ``--check-config`` accepts
    as it is, and the README's ``--once`` command with it collects every account."""
    import re
    import shlex

    quoted, printing, once = readme_demo_commands()
    assert printing == ".venv/bin/messaging-stats-exporter --demo.print-config > demo.yaml"
    exporter = f"{shlex.quote(sys.executable)} -m exporter"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def shell(command: str) -> tuple[int, str, str]:
        command = command.replace(".venv/bin/messaging-stats-exporter", exporter)
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", command, cwd=tmp_path, env=env, stdout=-1, stderr=-1
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()

    async with exporter_process("--demo", "--demo.simulator-address", "127.0.0.1:0") as (
        process,
        _,
    ):
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        message, _, field = quoted.partition(" [exporter.cli] ")
        assert message in line
        assert "[exporter.cli]" in line
        found = re.search(r"simulator=http://127\.0\.0\.1:(\d+)", line)
        assert found, line
        assert field.startswith("simulator=http://127.0.0.1:")
        # The port is not 10058 here: the README says to add the address then.
        address = f"127.0.0.1:{found.group(1)}"
        code, _, stderr = await shell(f"{printing} --demo.simulator-address {address}")
        assert (code, stderr) == (0, "")
        printed = (tmp_path / "demo.yaml").read_text()
        assert printed.startswith("# The built-in demo's config")
        assert f"http://{address}/thulium/acme/api" in printed
        code, stdout, stderr = await shell(f"{exporter} --config demo.yaml --check-config")
        assert code == 0, stderr
        assert stdout.startswith("demo.yaml: OK, 8 target(s)")
        code, exposition, stderr = await shell(once)
        assert code == 0, stderr
        success = {
            dict(key)["account"]: value
            for (name, key), value in parse_exposition(exposition).items()
            if name == "messaging_exporter_collect_success"
        }
        assert len(success) == 8
        assert set(success.values()) == {1}


def test_every_flag_is_in_the_configuration_reference() -> None:
    from exporter.cli import parser

    reference = (ROOT / "docs" / "configuration.md").read_text()
    for action in parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"`{option}" in reference, option


async def test_the_demo_simulator_takes_another_port_when_the_default_is_taken():
    import socket

    from exporter.cli import DEMO_SIMULATOR_ADDRESS

    host, _, port = DEMO_SIMULATOR_ADDRESS.rpartition(":")
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # already taken by another demo: as good
            holder.bind((host, int(port)))
            holder.listen()
        code, stdout, stderr = await run_cli("--demo", "--once")
        assert code == 0, stderr
        assert "messaging_exporter_collect_success" in stdout
        # Given explicitly, a taken address is an error that names it.
        code, _, stderr = await run_cli(
            "--demo", "--once", "--demo.simulator-address", DEMO_SIMULATOR_ADDRESS
        )
        assert code == 1
        assert stderr.startswith(f"--demo.simulator-address {DEMO_SIMULATOR_ADDRESS}: ")
        assert "address already in use" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--demo.print-config", "--demo.simulator-address", "nowhere"], "is not host:port"),
        (["--demo.print-config", "--demo.simulator-address", ":0"], "port 0 is chosen"),
        (["--demo", "--demo.simulator-address", "nowhere"], "is not host:port"),
    ],
)
async def test_a_bad_demo_simulator_address_exits_2(args, message):
    code, stdout, stderr = await run_cli(*args)
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("--demo.simulator-address: ")
    assert message in stderr
