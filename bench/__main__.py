"""``python -m bench``: the exporter's performance targets, measured in one run (~6 minutes on a
2-core machine).

Starts the simulator (1,000 Thulium tenants: 10,000 provider series), the exporter in one process
as ``serve`` starts it, pointed at the simulator, a plain aiohttp server answering the exporter's
own pre-rendered bytes, and a peer (prometheus_client's aiohttp handler over a custom collector
with the same samples); drives them with Debian's ``wrk``; prints the raw numbers as it goes, then
a table: target | measured | goal | verdict. Baselines (the plain server, the peer, the idle p99)
are measured in the same run.

1. Throughput: ``wrk -t1 -c8`` against each server in turn, the store not changing meanwhile.
2. Collections under scrapes: cycles of 1,000 targets with 100 ms of simulator latency, run back
   to back (``scheduled``: the scheduler's tasks on their 5 s grid) while wrk scrapes the way
   Prometheus does (one scrape at a time per connection, gzip, Prometheus's ``Accept`` header,
   which picks OpenMetrics), paced to get a p99 from a few seconds: 2 connections, each waiting
   10 ms after an answer (``bench/paced.lua``; ~180 scrapes/s, far more than Prometheus sends).
   The event loop's lag is measured inside the exporter (a 5 ms timer, ``LagMonitor``).
3. Cycle duration against the ideal, and CPU per provider request: the same cycles, unscraped.
4. Memory: RSS of the exporter process after 10 real cycles and after synthetic ones (snapshots
   fed straight into the store, each cycle followed by a build of every format) up to 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PACED = ROOT / "bench" / "paced.lua"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
"""What Prometheus sends (its default scrape protocols, but for the protobuf one)."""
SCRAPE = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
MIB = 2**20


@dataclass
class Wrk:
    rps: float
    p50: float
    p99: float
    transfer: str
    requests: int
    errors: int

    def __str__(self) -> str:
        return (
            f"{self.rps:8.0f} req/s  p50 {self.p50 * 1e3:7.2f} ms  p99 {self.p99 * 1e3:7.2f} ms"
            f"  ({self.requests} requests, {self.transfer}/s"
            f"{', ' + str(self.errors) + ' failed' if self.errors else ''})"
        )


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _duration(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert match, text
    return float(match[1]) * _UNITS[match[2]]


async def wrk(url: str, seconds: float, headers: dict[str, str], paced: bool = False) -> Wrk:
    """``wrk -t1 -c8`` (each connection sends again as soon as it has an answer) or, ``paced``,
    2 connections each waiting 10 ms between an answer and its next request."""
    args = ["wrk", "-t1", f"-c{2 if paced else 8}", f"-d{seconds:g}s", "--latency"]
    args += ["--timeout", "10s"]
    if paced:
        args += ["-s", str(PACED)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(
        *args, url, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = (await process.communicate())[0].decode()
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
        p50 = _duration(re.search(r"^\s+50%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
        p99 = _duration(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
        transfer = re.search(r"Transfer/sec:\s+(\S+)", out)[1]  # type: ignore[index]
        requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    except TypeError:
        raise RuntimeError(f"unexpected wrk output:\n{out}") from None
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Wrk(rps, p50, p99, transfer, requests, errors + (int(non2xx[1]) if non2xx else 0))


class Process:
    def __init__(self, role: str, *args: str, log: Path) -> None:
        self.stderr = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", role, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"{role} did not start: see {log}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / MIB
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, aiohttp {version('aiohttp')}, "
        f"prometheus-client {version('prometheus-client')}, wrk {wrk_version.split()[1]}"
    )


def describe(load: dict[str, Any]) -> str:
    durations = ", ".join(f"{d:.2f}" for d in load["durations"])
    return (
        f"cycles {durations} s; max loop lag {load['max_lag'] * 1e3:.1f} ms (on-CPU "
        f"{load['max_busy'] * 1e3:.1f} ms, longest gc pause {load['max_gc_pause'] * 1e3:.1f} ms, "
        f"{load['full_gcs']} full), {load['failed']} failed collections, "
        f"RSS {load['rss'] / MIB:.1f} MiB"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the throughput runs")
    parser.add_argument("--latency", type=float, default=0.1, help="simulator latency (s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the scraped cycles")
    parser.add_argument("--cycles", type=int, default=1000, help="cycles of the memory phase")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/bench-logs"))
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    return parser.parse_args()


IDENTITY = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}
KINDS = {
    "identity": ("/identity", IDENTITY),
    "gzip": ("/gzip", GZIP),
    "openmetrics identity": ("/om", {"Accept": OPENMETRICS, **IDENTITY}),
    "openmetrics gzip": ("/om-gzip", {"Accept": OPENMETRICS, **GZIP}),
}
"""The throughput runs: the plain server's route for each format and encoding, and the headers
that ask the exporter for the same."""
WINDOWS = {"scheduled": 11.0, "limited": 6.0, "burst": 4.0}
"""Seconds of scraping during each kind of collection cycle."""


class Bench:
    """The running simulator and exporter, driven over one HTTP session."""

    def __init__(self, http: aiohttp.ClientSession, sim: Process, exporter: Process) -> None:
        self.http = http
        self.sim = sim
        self.exporter = exporter
        self.metrics = f"{exporter.url}/metrics"

    async def post(self, path: str, **query: Any) -> Any:
        async with self.http.post(f"{self.exporter.url}{path}", params=query) as response:
            response.raise_for_status()
            return await response.json()

    async def stats(self) -> Any:
        async with self.http.get(f"{self.exporter.url}/_bench/stats") as response:
            return await response.json()

    async def latency(self, seconds: float) -> None:
        async with self.http.post(f"{self.sim.url}/_bench/latency", params={"seconds": seconds}):
            pass

    async def size(self, headers: dict[str, str]) -> tuple[int, str]:
        async with self.http.get(self.metrics, headers=headers, auto_decompress=False) as r:
            return len(await r.read()), r.headers["Content-Type"]


async def fill(bench: Bench, raw: dict[str, Any], n: int) -> None:
    """One cycle of each kind without latency (10,000 provider series; each scheduler's provider
    clients made), and the exposition's sizes."""
    await bench.latency(0)
    raw["start_rss"] = (await bench.stats())["rss"]
    for mode in ("limited", "burst"):
        filled = await bench.post("/_bench/cycle", mode=mode)
    raw["fill"] = filled
    print(
        f"filled: {filled['series']} provider series from {n} targets "
        f"({filled['failed']} failed); RSS {raw['start_rss'] / MIB:.1f} MiB at start, "
        f"{filled['rss'] / MIB:.1f} MiB filled",
        flush=True,
    )
    sizes = {
        "identity": await bench.size(IDENTITY),
        "gzip": await bench.size(GZIP),
        "prometheus scrape": await bench.size(SCRAPE),
    }
    raw["size"] = sizes
    print(
        f"exposition: {sizes['identity'][0]} bytes, {sizes['gzip'][0]} gzipped; a "
        f"Prometheus-like scrape gets {sizes['prometheus scrape'][1]}",
        flush=True,
    )


async def measure_throughput(
    bench: Bench, args: argparse.Namespace, raw: dict[str, Any], processes: list[Process]
) -> dict[str, list[Wrk]]:
    """1. Throughput, the store not changing: the exporter against plain aiohttp answering the
    same bytes, in every format and encoding, and against the peer in identity text."""
    exporter_url = bench.exporter.url
    reference = Process("reference", "--url", exporter_url, log=args.logs / "ref.log")
    peer = Process("peer", "--url", exporter_url, log=args.logs / "peer.log")
    processes += [reference, peer]
    generation = (await bench.stats())["generation"]
    throughput: dict[str, list[Wrk]] = {}

    async def measure(name: str, url: str, headers: dict[str, str]) -> None:
        await wrk(url, 1, headers)  # warm up
        result = await wrk(url, args.duration, headers)
        throughput.setdefault(name, []).append(result)
        print(f"  {name:30} {result}", flush=True)

    for _ in range(args.repeat):
        for kind, (path, headers) in KINDS.items():
            await measure(f"plain aiohttp {kind}", reference.url + path, headers)
            await measure(f"exporter {kind}", bench.metrics, headers)
    await measure("peer (prometheus_client) identity", f"{peer.url}/metrics", IDENTITY)
    for process in (reference, peer):
        process.stop()
    raw["throughput"] = {k: [vars(w) for w in runs] for k, runs in throughput.items()}
    raw["store_unchanged"] = (await bench.stats())["generation"] == generation
    return throughput


async def measure_scraped_cycles(
    bench: Bench, args: argparse.Namespace, raw: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """2. Cycles with latency, scraped meanwhile as Prometheus does, after an idle baseline."""
    await bench.latency(args.latency)
    rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in WINDOWS}
    for number in range(1, args.rounds + 1):
        for mode, seconds in WINDOWS.items():
            await wrk(bench.metrics, 1, SCRAPE, paced=True)  # settled after the last changes
            idle = await wrk(bench.metrics, 3, SCRAPE, paced=True)
            # The collections begin just before the scrapes and end just after them.
            load_task = asyncio.create_task(
                bench.post("/_bench/load", mode=mode, seconds=seconds + 0.3)
            )
            await asyncio.sleep(0.1)
            during = await wrk(bench.metrics, seconds, SCRAPE, paced=True)
            load = await load_task
            rounds[mode].append({"idle": vars(idle), "during": vars(during), "load": load})
            print(
                f"  round {number} {mode:9}: {describe(load)}\n"
                f"    scrapes idle   {idle}\n    scrapes during {during}",
                flush=True,
            )
    raw["rounds"] = rounds
    return rounds


async def measure_quiet_cycles(bench: Bench, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """3. The same cycles, unscraped: duration and CPU per provider request."""
    quiet: dict[str, dict[str, Any]] = {}
    for mode in WINDOWS:
        quiet[mode] = cycle = await bench.post("/_bench/cycle", mode=mode)
        print(
            f"  {mode:9} cycle, unscraped: {cycle['duration']:.3f} s, CPU "
            f"{cycle['cpu']:.3f} s for {cycle['requests']} requests, max loop lag "
            f"{cycle['max_lag'] * 1e3:.1f} ms",
            flush=True,
        )
    raw["quiet"] = quiet
    return quiet


async def measure_memory(
    bench: Bench, args: argparse.Namespace, raw: dict[str, Any]
) -> dict[int, int]:
    """4. Memory: RSS after 10 real cycles each scraped, then after synthetic cycles up to
    ``--cycles``; and the peak RSS of the whole run."""
    await bench.latency(0)
    real = 10
    for _ in range(real):
        await bench.post("/_bench/cycle", mode="burst")
        for headers in (IDENTITY, GZIP, SCRAPE):
            async with bench.http.get(bench.metrics, headers=headers) as r:
                await r.read()
    rss = {real: (await bench.stats())["rss"]}
    marks = sorted({m for m in (20, 50, 100, 250, 500, 750) if real < m < args.cycles})
    synthetic = await bench.post(
        "/_bench/synthetic",
        first=real + 1,
        cycles=args.cycles - real,
        at=",".join(str(m) for m in [*marks, args.cycles]),
    )
    rss.update({int(k): v for k, v in synthetic["rss"].items()})
    final = await bench.stats()
    raw["rss"] = rss
    raw["peak_rss"] = final["maxrss"]
    print(
        f"  {args.cycles - real} synthetic cycles in {synthetic['duration']:.0f} s; RSS by "
        "cycle: "
        + ", ".join(f"{k}: {v / MIB:.1f}" for k, v in sorted(rss.items()))
        + f" MiB; peak RSS of the run {final['maxrss'] / MIB:.1f} MiB",
        flush=True,
    )
    return rss


Row = tuple[str, str, str, "bool | None"]
"""target | measured | goal | verdict (None: information, no goal)."""


def throughput_rows(throughput: dict[str, list[Wrk]], store_unchanged: bool) -> list[Row]:
    def rps(name: str) -> float:
        return sum(w.rps for w in throughput[name]) / len(throughput[name])

    rows: list[Row] = []
    for kind in KINDS:
        ours, plain = rps(f"exporter {kind}"), rps(f"plain aiohttp {kind}")
        rows.append(
            (
                f"1. /metrics {kind}: exporter / plain aiohttp, same bytes",
                f"{ours / plain:.2f} ({ours:.0f} / {plain:.0f} req/s)",
                ">= 0.80",
                ours / plain >= 0.8,
            )
        )
    ours, theirs = rps("exporter identity"), rps("peer (prometheus_client) identity")
    rows.append(
        (
            "1. /metrics identity text: exporter / prometheus_client handler",
            f"{ours / theirs:.0f}x ({ours:.0f} / {theirs:.1f} req/s)",
            ">= 50x",
            ours / theirs >= 50,
        )
    )
    rows.append(
        (
            "1. store unchanged during the throughput runs",
            "yes" if store_unchanged else "NO",
            "yes",
            store_unchanged,
        )
    )
    return rows


def scraped_cycle_rows(rounds: dict[str, list[dict[str, Any]]]) -> list[Row]:
    rows: list[Row] = []
    for mode, runs in rounds.items():
        stall = max(r["load"]["max_lag"] for r in runs)
        busy = max(r["load"]["max_busy"] for r in runs)
        rows.append(
            (
                f"2. max loop stall, {mode} cycles (worst of {len(runs)} windows)",
                f"{stall * 1e3:.1f} ms (on-CPU {busy * 1e3:.1f} ms)",
                "<= 20 ms",
                stall <= 0.02,
            )
        )
    failed_scrapes = 0
    for mode, runs in rounds.items():
        p99 = max(r["during"]["p99"] for r in runs)
        idle = [r["idle"]["p99"] for r in runs]
        during = [r["during"]["p99"] for r in runs]
        failed_scrapes += sum(r["during"]["errors"] + r["idle"]["errors"] for r in runs)
        rows.append(
            (
                f"2. scrape p99 during {mode} cycles (worst window)",
                f"{p99 * 1e3:.2f} ms",
                "<= 25 ms",
                p99 <= 0.025,
            )
        )
        ratios = ", ".join(
            f"{d / i:.1f} ({d * 1e3:.2f}/{i * 1e3:.2f} ms)"
            for d, i in zip(during, idle, strict=True)
        )
        rows.append(("   (info) its ratio to the idle p99, per window", ratios, "", None))
    rows.append(
        ("2. failed scrapes during the cycles", str(failed_scrapes), "0", failed_scrapes == 0)
    )
    return rows


def quiet_cycle_rows(quiet: dict[str, dict[str, Any]], n: int, latency: float) -> list[Row]:
    limits = quiet["burst"]["limits"]
    ideals = {
        "scheduled": (limits["spread"] + latency, f"{limits['spread']:g} s spread + latency"),
        "limited": (
            math.ceil(n / limits["limited"]) * latency,
            f"{n} by {limits['limited']} workers",
        ),
        "burst": (
            math.ceil(n / limits["collections"]) * latency,
            f"{n} by max_concurrent_collections {limits['collections']}",
        ),
    }
    rows: list[Row] = []
    for mode, (ideal, how) in ideals.items():
        value = quiet[mode]["duration"] / ideal
        rows.append(
            (
                f"3. {mode} cycle / ideal {ideal:.2f} s ({how})",
                f"{value:.2f} ({quiet[mode]['duration']:.3f} s)",
                "<= 1.20",
                value <= 1.2,
            )
        )
    for mode in ("limited", "burst"):
        per = quiet[mode]["cpu"] / quiet[mode]["requests"] * 1e3
        rows.append(
            (
                f"3. exporter CPU per provider request, {mode} cycle",
                f"{per:.3f} ms",
                "<= 0.5 ms",
                per <= 0.5,
            )
        )
    # Spread over 5 s, each collection runs alone: it pays the event loop's turns by itself
    # (about six per collection) instead of sharing them with others.
    per = quiet["scheduled"]["cpu"] / quiet["scheduled"]["requests"] * 1e3
    rows.append(("   (info) CPU per provider request, scheduled cycle", f"{per:.3f} ms", "", None))
    return rows


def memory_rows(rss: dict[int, int], peak_rss: int) -> list[Row]:
    first, last = min(rss), max(rss)
    rows: list[Row] = [
        (
            f"4. RSS at cycle {cycle_}",
            f"{rss[cycle_] / MIB:.1f} MiB",
            "<= 60 MiB",
            rss[cycle_] <= 60 * MIB,
        )
        for cycle_ in (first, last)
    ]
    rows.append(
        (
            "4. peak RSS of the whole run (ru_maxrss)",
            f"{peak_rss / MIB:.1f} MiB",
            "<= 60 MiB",
            peak_rss <= 60 * MIB,
        )
    )
    drift = (rss[last] - rss[first]) / rss[first]
    rows.append(
        (
            f"4. RSS drift, cycle {first} to {last}",
            f"{drift * 100:+.1f} %",
            "+-5 %",
            abs(drift) <= 0.05,
        )
    )
    return rows


def print_table(rows: list[Row]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'target':{widths[0]}} | {'measured':{widths[1]}} | {'goal':{widths[2]}} | verdict")
    for target, measured, goal, ok in rows:
        verdict = "" if ok is None else "PASS" if ok else "MISS"
        print(f"{target:{widths[0]}} | {measured:{widths[1]}} | {goal:{widths[2]}} | {verdict}")


async def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    n = args.targets
    print(f"machine: {machine()}", flush=True)

    sim = Process("sim", "--targets", str(n), log=args.logs / "sim.log")
    exporter = Process("exporter", "--targets", str(n), "--url", sim.url, log=args.logs / "exp.log")
    processes = [sim, exporter]
    raw: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as http:
            bench = Bench(http, sim, exporter)
            await fill(bench, raw, n)
            throughput = await measure_throughput(bench, args, raw, processes)
            rounds = await measure_scraped_cycles(bench, args, raw)
            quiet = await measure_quiet_cycles(bench, raw)
            rss = await measure_memory(bench, args, raw)
    finally:
        for process in processes:
            process.stop()

    rows = [
        *throughput_rows(throughput, raw["store_unchanged"]),
        *scraped_cycle_rows(rounds),
        *quiet_cycle_rows(quiet, n, args.latency),
        *memory_rows(rss, raw["peak_rss"]),
    ]
    print()
    sizes = raw["size"]
    print(
        f"targets ({n} targets, {raw['fill']['series']} provider series, "
        f"{sizes['identity'][0] / 1e6:.2f} MB exposition, {sizes['gzip'][0] / 1e3:.0f} kB "
        f"gzipped; run took {time.monotonic() - started:.0f} s)"
    )
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(raw, default=str, indent=1))
    missed = sum(1 for r in rows if r[3] is False)
    print(f"\n{missed} MISS" if missed else "\nall PASS")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
