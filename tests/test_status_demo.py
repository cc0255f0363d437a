"""The status page of the demo, as an operator opens it: Debian's Chromium against ``--demo`` with
one target made to fail through the simulator's faults."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.test_status_page import chromium, parse, run_chromium, table_rows

ROOT = Path(__file__).resolve().parent.parent
FAILING = "thulium-acme"
"""The demo's target of the simulator's Thulium account ``acme``."""


async def _simulator_url(stderr: asyncio.StreamReader) -> str:
    while line := await stderr.readline():
        found = re.search(rb"simulator=(http://\S+)", line)
        if found:
            return found[1].decode()
    raise AssertionError("the demo never said where its simulator is")


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


@pytest.mark.slow
async def test_the_demo_status_page_shows_a_failing_target_first(tmp_path: Path) -> None:
    binary = chromium()
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "--demo",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    draining: asyncio.Task[None] | None = None
    try:
        sim = await asyncio.wait_for(_simulator_url(process.stderr), 30)
        draining = asyncio.ensure_future(_drain(process.stderr))
        page = f"http://127.0.0.1:{port}/"
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{sim}/_sim/faults",
                json={"provider": "thulium", "account": "acme", "fault": "auth"},
            ) as response:
                assert response.status == 200, await response.text()
            # The page as served, until the failing target's collection has run (the demo
            # collects every 10 s, the first runs spread over 5 s) and every target was tried.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while True:
                assert loop.time() < deadline, "the failing target never showed as down"
                try:
                    async with session.get(page) as response:
                        html = await response.text()
                    rows = table_rows(parse(html, strict=False)[0])
                    if rows and rows[0][0] == "down" and all(r[0] != "pending" for r in rows):
                        break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
        dom = await run_chromium(binary, tmp_path / "profile", "--dump-dom", page)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        if draining is not None:
            draining.cancel()
    root, attrs = parse(dom, strict=False)
    rows = table_rows(root)
    assert [r[0] for r in rows][:1] == ["down"]
    assert rows[0][1] == "thulium"
    assert rows[0][2].startswith(f"{FAILING} 127.0.0.1:")  # the account, then its host
    assert rows[0][9].startswith("auth ")
    assert {r[0] for r in rows[1:]} == {"up"}
    assert sorted(root.find("tbody").find_all("tr")[0].classes()) == ["down"]
    assert not root.find_all("script")
    assert not [name for _, name, _ in attrs if name.startswith("on")]
    summary = " ".join(root.text().split())
    assert "built-in demo config" in summary
