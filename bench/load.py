"""``python -m bench.load``: the long load test.

Runs the exporter as users do (``--demo``: the built-in simulator, every provider, collections
every 10 s), points 200 concurrent scrapers at ``/metrics`` for 60 s while a chaos loop switches
the simulator's faults (5xx, malformed JSON, resets, hangs, 429s, auth failures) from account to
account, and samples the exporter's memory (its PSS) every second. Prints the
scrapes, failures (the goal is zero), latency and memory, with a verdict. The short version runs
in the tests (``tests/test_load.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
FAULTS = (
    "http_500_html",
    "malformed_json",
    "reset",
    "hang",
    "rate_limited",
    "auth",
    "wrong_shape",
    None,
)
# (provider, simulator account) of the demo's targets
ACCOUNTS = (
    ("thulium", "acme"),
    ("thulium", "globex"),
    ("altcraft", "prod"),
    ("altcraft", "media"),
    ("trustlat", "acme"),
    ("trustlat", "initech"),
    ("exolve", "shop"),
    ("exolve", "alerts"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mib(pid: int) -> float:
    """The exporter's memory: the PSS of its process."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
    return int(match[1]) / 1024 if match else 0.0


async def start_demo(port: int) -> tuple[asyncio.subprocess.Process, str] | None:
    """``python -m exporter --demo`` listening on ``port``, and its simulator's URL (read from
    its log); None if it did not start."""
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
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        if not line:
            return None
        found = re.search(r"simulator=(http://\S+)", line)
        if found:
            return process, found[1]


async def wait_ready(session: aiohttp.ClientSession, port: int) -> None:
    for _ in range(300):
        try:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)


@dataclass
class Soak:
    """The load: scrapers, a chaos loop switching faults and a memory sampler, until ``stop``."""

    session: aiohttp.ClientSession
    url: str
    pid: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    rss: list[float] = field(default_factory=list)
    faults_set: int = 0

    def failed(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

    async def scraper(self, n: int) -> None:
        headers = {"Accept-Encoding": "gzip"} if n % 2 else {}
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                async with self.session.get(self.url, headers=headers) as response:
                    body = await response.read()
                    if response.status != 200 or b"messaging_exporter_build_info" not in body:
                        self.failed(f"HTTP {response.status}")
                        continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failed(type(exc).__name__)
                continue
            self.latencies.append(time.perf_counter() - started)

    async def chaos(self, sim_url: str, every: float) -> None:
        plan = zip(itertools.cycle(ACCOUNTS), itertools.cycle(FAULTS), strict=False)
        # A session of its own: the scrapers keep every connection of theirs busy.
        async with aiohttp.ClientSession() as control:
            for (provider, account), fault in plan:
                payload = {"provider": provider, "account": account, "fault": fault, "delay": 20}
                async with control.post(f"{sim_url}/_sim/faults", json=payload) as response:
                    response.raise_for_status()
                self.faults_set += 1
                try:
                    await asyncio.wait_for(self.stop.wait(), every)
                    return
                except TimeoutError:
                    continue

    async def memory(self) -> None:
        self.rss.append(rss_mib(self.pid))
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), 1.0)
            except TimeoutError:
                self.rss.append(rss_mib(self.pid))


def report(args: argparse.Namespace, soak: Soak, elapsed: float, final: str, code: int) -> bool:
    """Print the figures and the verdict; whether the run passed."""
    latencies = sorted(soak.latencies)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3

    errors = sum(
        float(m[1])
        for m in re.finditer(
            r"^messaging_exporter_collect_errors_total\{[^}]*\} (\S+)", final, re.M
        )
    )
    rss = soak.rss
    settled = rss[min(5, len(rss) - 1)]
    growth = (rss[-1] - settled) / settled * 100
    ok = not soak.failures and code == 0 and growth <= 10
    print(f"{args.scrapers} scrapers for {elapsed:.0f} s, {soak.faults_set} faults switched")
    print(
        f"scrapes: {len(latencies)} ok ({len(latencies) / elapsed:.0f}/s), failed: {soak.failures}"
    )
    print(f"latency: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {pct(1.0):.1f} ms")
    print(f"collection errors counted meanwhile: {errors:.0f}")
    print(
        f"exporter memory (PSS): start {rss[0]:.1f} MiB, "
        f"after 5 s {settled:.1f} MiB, "
        f"max {max(rss):.1f} MiB, end {rss[-1]:.1f} MiB ({growth:+.1f} % since 5 s)"
    )
    print(f"exit status after SIGTERM: {code}")
    print(
        f"verdict: {'PASS' if ok else 'FAIL'} (zero failed scrapes, exit 0, memory growth <= 10 %)"
    )
    return ok


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scrapers", type=int, default=200)
    parser.add_argument("--fault-every", type=float, default=0.5, help="seconds between faults")
    args = parser.parse_args()

    port = free_port()
    started_demo = await start_demo(port)
    if started_demo is None:
        print("the exporter did not start", file=sys.stderr)
        return 1
    process, sim_url = started_demo

    async def drain() -> None:  # keep the log pipe from filling up
        assert process.stderr is not None
        while await process.stderr.readline():
            pass

    drainer = asyncio.create_task(drain())
    url = f"http://127.0.0.1:{port}/metrics"
    connector = aiohttp.TCPConnector(limit=args.scrapers)
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_ready(session, port)
        soak = Soak(session, url, process.pid)
        tasks = [asyncio.create_task(soak.scraper(n)) for n in range(args.scrapers)]
        tasks += [
            asyncio.create_task(soak.chaos(sim_url, args.fault_every)),
            asyncio.create_task(soak.memory()),
        ]
        started = time.perf_counter()
        await asyncio.sleep(args.seconds)
        soak.stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        async with session.get(url) as response:
            final = await response.text()

    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), 15)
    drainer.cancel()
    return 0 if report(args, soak, elapsed, final, code) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
