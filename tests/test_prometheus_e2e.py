"""End to end through the real servers, all on loopback: the exporter in `--demo` mode (with its
built-in provider simulator), Debian's `prometheus` scraping it every second with the alert rules
loaded, Debian's `prometheus-alertmanager`, and a webhook receiver (an aiohttp server in this test).

1. Every dashboard query returns data through Prometheus's HTTP API, for every provider the demo
   serves (see `expected_providers`), and the dashboard's variables find every provider and account.
2. An account switched to a simulator fault makes the target-down alert fire in Prometheus and
   reach the webhook through Alertmanager, with its annotations rendered.

Skips on a machine without the binaries only when `CI` is unset (like `promtool` in conftest).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from exporter import simulator
from tests.conftest import free_port, parse_exposition
from tests.test_alerts import ALERTS
from tests.test_dashboard import (
    ALL,
    HISTOGRAMS,
    METRICS,
    PROVIDERS,
    Query,
    dashboard_queries,
    substitute,
)

REPO = Path(__file__).resolve().parent.parent
JOB = "messaging-stats-exporter"
TARGET_DOWN = "MessagingExporterCollectFailing"
STARTUP_BOUND = 30.0  # seconds: the exporter, Prometheus's first scrape, every query with data
ALERT_BOUND = 40.0  # seconds: the demo's 10 s interval, then rule evaluation and Alertmanager

# Metrics a provider of the demo may leave out for a good reason. A dashboard query that uses one
# must return data exactly when the demo's exposition has the metric; every other query of a
# provider the demo serves must return data, no exception.
OPTIONAL_METRICS = {
    "trustlat_access_token_expiry_timestamp_seconds": "only targets using OAuth client "
    "credentials have a token",
    "exolve_sms_messages_by_delivery_status": "only targets with the delivery_status breakdown",
    "exolve_sms_messages_by_billing_status": "only targets with the billing_status breakdown",
}

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


def binary(name: str, package: str) -> str:
    """A Debian binary's path; skips where it is absent, except in CI, where it must be there."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (apt-get install {package})")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


def expected_providers() -> set[str]:
    """The providers the demo serves: every provider with a simulator module (the demo builds its
    targets from them). Their every dashboard query must return data here."""
    return set(simulator.provider_parts())


def not_in_demo_yet() -> set[str]:
    """Providers of the spec the demo does not serve yet: their queries are proven only on
    synthetic series (tests/test_dashboard.py), and a warning says so."""
    return set(PROVIDERS) - expected_providers()


# ------------------------------------------------------------------------------ the processes


@dataclass
class Process:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, stdin=subprocess.DEVNULL
            )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 30) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.output().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Webhook:
    """Alertmanager's webhook receiver: every notification it POSTs."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.notifications.append(await request.json())
        self.received.set()
        return web.Response(text="ok")

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for n in self.notifications for alert in n["alerts"]]


@dataclass
class Stack:
    exporter_url: str
    prometheus_url: str
    alertmanager_url: str
    simulator_url: str
    webhook: Webhook
    session: aiohttp.ClientSession
    processes: list[Process]

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes)

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API; a parse error (bad_data) fails the test."""
        async with self.session.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": promql}
        ) as response:
            body = await response.json()
        assert body["status"] == "success", f"{promql!r}: {body.get('errorType')}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def get_json(self, url: str, **params: str) -> Any:
        async with self.session.get(url, params=params) as response:
            assert response.status == 200, f"{url}: {response.status}"
            return await response.json()


def _test_rules(directory: Path) -> Path:
    """A copy of the shipped rules for this test only: every `for:` set to 0s so an alert fires
    at the first evaluation that sees its condition (the shipped durations, 5m to 1h, are proven
    by the promtool unit tests in tests/promtool/alerts_test.yaml)."""
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


T = TypeVar("T")


async def poll(
    what: str,
    check: Callable[[], Awaitable[T | None]],
    bound: float,
    stack: Stack | None = None,
    interval: float = 0.25,
) -> T:
    """Call `check` until it returns something other than None, for at most `bound` seconds."""
    deadline = time.monotonic() + bound
    while True:
        value = await check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {bound:.0f} s\n{stack.logs() if stack else ''}")
        await asyncio.sleep(interval)


async def _simulator_url(exporter: Process) -> str:
    """The demo prints `demo: built-in provider simulator started ... simulator=http://...`."""

    async def found() -> str | None:
        assert exporter.proc is not None
        assert exporter.proc.poll() is None, f"the exporter exited\n{exporter.tail()}"
        for line in exporter.output().splitlines():
            if "demo: built-in provider simulator started" in line:
                match = re.search(r"simulator=(http://127\.0\.0\.1:\d+)", line)
                assert match, line
                return match.group(1)
        return None

    return await poll("the demo's simulator URL in its log", found, 15)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    prometheus = binary("prometheus", "prometheus")
    alertmanager = binary("prometheus-alertmanager", "prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("e2e")

    webhook = Webhook()
    app = web.Application()
    app.router.add_post("/alerts", webhook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    webhook_port = runner.addresses[0][1]

    exporter_port, prometheus_port, alertmanager_port = free_port(), free_port(), free_port()
    (tmp / "alertmanager.yml").write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "webhook",
                    "group_by": ["alertname", "account"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "webhook",
                        "webhook_configs": [
                            {
                                "url": f"http://127.0.0.1:{webhook_port}/alerts",
                                "send_resolved": False,
                            }
                        ],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    (tmp / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(_test_rules(tmp))],
                "alerting": {
                    "alertmanagers": [
                        {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}
                    ]
                },
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    processes = [
        Process(
            "exporter",
            [
                sys.executable,
                "-m",
                "exporter",
                "--demo",
                "--web.listen-address",
                f"127.0.0.1:{exporter_port}",
            ],
            tmp / "exporter.log",
        ),
        Process(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={tmp / 'alertmanager.yml'}",
                f"--storage.path={tmp / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                "--cluster.listen-address=",
            ],
            tmp / "alertmanager.log",
        ),
        Process(
            "prometheus",
            [
                prometheus,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                # Without it, Prometheus sends a new alert to Alertmanager only after ~60 s.
                "--rules.alert.resend-delay=1s",
            ],
            tmp / "prometheus.log",
        ),
    ]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        for process in processes:
            process.start()
        simulator_url = await _simulator_url(processes[0])
        yield Stack(
            exporter_url=f"http://127.0.0.1:{exporter_port}",
            prometheus_url=f"http://127.0.0.1:{prometheus_port}",
            alertmanager_url=f"http://127.0.0.1:{alertmanager_port}",
            simulator_url=simulator_url,
            webhook=webhook,
            session=session,
            processes=processes,
        )
    finally:
        await session.close()
        for process in reversed(processes):
            process.stop()
        await runner.cleanup()


async def wait_until_scraped(stack: Stack) -> None:
    async def up() -> bool | None:
        try:
            result = await stack.query(f'up{{job="{JOB}"}} == 1')
        except aiohttp.ClientError:
            return None  # Prometheus is not listening yet
        return True if result else None

    await poll("Prometheus scraping the exporter (up == 1)", up, STARTUP_BOUND, stack)


async def exposition(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with stack.session.get(f"{stack.exporter_url}/metrics") as response:
        assert response.status == 200
        return parse_exposition(await response.text())


def exposed_metrics(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    names = {name for name, _ in samples}
    found = {m for m in METRICS if m in names}
    found |= {m for m in HISTOGRAMS if f"{m}_bucket" in names}
    return found


def required(query: Query, exposed: set[str]) -> bool:
    """Whether a query must return data here: its providers are all in the demo, and every
    optional metric it uses is exposed."""
    return query.providers <= expected_providers() | {"exporter"} and all(
        metric in exposed for metric in query.metrics if metric in OPTIONAL_METRICS
    )


# -------------------------------------------------------------------------------------- tests


async def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    started = time.monotonic()
    await wait_until_scraped(stack)
    missing = not_in_demo_yet()
    if missing:
        warnings.warn(
            f"the demo does not serve {sorted(missing)} yet (no simulator module): their "
            "dashboard queries are checked on synthetic series only (tests/test_dashboard.py)",
            stacklevel=1,
        )

    async def every_target_collected() -> dict[Any, float] | None:
        samples = await exposition(stack)
        success = {
            dict(labels)["account"]: value
            for (name, labels), value in samples.items()
            if name == "messaging_exporter_collect_success"
        }
        demo = {t["name"] for t in simulator.demo_targets("http://x", simulator.Simulator())}
        return samples if set(success) == demo else None

    samples = await poll("every demo target collected once", every_target_collected, 15, stack)
    providers = {
        dict(labels)["provider"]
        for (name, labels), _ in samples.items()
        if name == "messaging_exporter_collect_success"
    }
    assert providers == expected_providers()
    accounts = {
        dict(labels)["account"]
        for (name, labels), _ in samples.items()
        if name == "messaging_exporter_collect_success"
    }
    exposed = exposed_metrics(samples)
    # A metric the spec calls optional is the only kind a served provider may leave out.
    for metric, (provider, _) in METRICS.items():
        if provider in expected_providers() and metric not in OPTIONAL_METRICS:
            assert metric in exposed, f"{metric}: in the spec, not in the demo's exposition"
    skipped_optional = sorted(
        m for m in OPTIONAL_METRICS if METRICS[m][0] in expected_providers() and m not in exposed
    )
    if skipped_optional:
        warnings.warn(
            "the demo exposes none of "
            + ", ".join(f"{m} ({OPTIONAL_METRICS[m]})" for m in skipped_optional)
            + ": the queries using them are not checked end to end",
            stacklevel=1,
        )

    queries = [q for q in dashboard_queries() if required(q, exposed)]
    assert queries
    # Grafana sends "All" as the variables' allValue, and a selection as a regex alternation;
    # the job variable is one job, as its label_values query finds it.
    instance = stack.exporter_url.removeprefix("http://")
    selections = [
        {"account": ALL, "provider": ALL, "job": JOB, "instance": ALL},
        {
            "account": "|".join(sorted(accounts)),
            "provider": "|".join(sorted(providers)),
            "job": JOB,
            "instance": instance,
        },
    ]
    expressions = sorted(
        {substitute(q.expr, rate_interval="1m", **values) for q in queries for values in selections}
    )

    async def all_have_data() -> bool | None:
        for expr in expressions:
            if not await stack.query(expr):
                return None
        return True

    # Rates need two scrapes and each target one collection: poll, do not sleep.
    try:
        await poll("every dashboard query with data", all_have_data, STARTUP_BOUND, stack)
    except pytest.fail.Exception:
        empty = [expr for expr in expressions if not await stack.query(expr)]
        pytest.fail(f"dashboard queries without data: {empty}\n{stack.logs()}")

    # The template variables (label_values of messaging_exporter_build_info for the job and the
    # instance, of messaging_exporter_collect_success for the others) find them all.
    for label, values, metric in (
        ("job", {JOB}, "messaging_exporter_build_info"),
        ("instance", {instance}, "messaging_exporter_build_info"),
        ("provider", providers, "messaging_exporter_collect_success"),
        ("account", accounts, "messaging_exporter_collect_success"),
    ):
        body = await stack.get_json(
            f"{stack.prometheus_url}/api/v1/label/{label}/values", **{"match[]": metric}
        )
        assert set(body["data"]) == values
    # The process's families, appended to the cached (gzip, OpenMetrics) body at each scrape, are
    # read by Prometheus's own client.
    for family in ("process_start_time_seconds", "process_resident_memory_bytes"):
        assert await stack.query(f'{family}{{job="{JOB}", instance="{instance}"}}'), family
    elapsed = time.monotonic() - started
    print(f"{len(expressions)} dashboard queries with data after {elapsed:.1f} s")


async def test_a_failing_account_fires_the_target_down_alert_through_alertmanager(
    stack: Stack,
) -> None:
    started = time.monotonic()
    await wait_until_scraped(stack)
    # The account to break: the demo's first Thulium target, and its account in the simulator
    # (its base_url is {simulator}/thulium/{account}/api).
    target = next(
        t
        for t in simulator.demo_targets("http://sim", simulator.Simulator())
        if t["provider"] == "thulium"
    )
    account, sim_account = target["name"], urlsplit(target["base_url"]).path.split("/")[2]
    demo = simulator.demo_targets("http://sim", simulator.Simulator())
    others = {t["name"] for t in demo} - {account}

    async def collected_fine() -> bool | None:
        result = await stack.query(f'messaging_exporter_collect_success{{account="{account}"}}')
        return True if result and result[0]["value"][1] == "1" else None

    await poll(f"{account} collected by Prometheus", collected_fine, STARTUP_BOUND, stack)
    alerts = await stack.get_json(f"{stack.prometheus_url}/api/v1/alerts")
    assert not [a for a in alerts["data"]["alerts"] if a["labels"]["alertname"] == TARGET_DOWN]

    async with stack.session.post(
        f"{stack.simulator_url}/_sim/faults",
        json={"provider": "thulium", "account": sim_account, "fault": "http_500_html"},
    ) as response:
        assert response.status == 200

    def delivered() -> list[dict[str, Any]]:
        return [
            a
            for a in stack.webhook.alerts()
            if a["labels"]["alertname"] == TARGET_DOWN and a["status"] == "firing"
        ]

    async def fired() -> list[dict[str, Any]] | None:
        return delivered() or None

    alerts_received = await poll(
        f"{TARGET_DOWN} for {account} at the webhook", fired, ALERT_BOUND, stack
    )
    (alert,) = alerts_received
    assert alert["labels"] == {
        "alertname": TARGET_DOWN,
        "severity": "warning",
        "job": JOB,
        "instance": urlsplit(stack.exporter_url).netloc,
        "provider": "thulium",
        "account": account,
    }
    assert alert["annotations"]["summary"] == f"thulium account {account} cannot be collected"
    assert f"thulium target {account} " in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"].endswith("#messagingexportercollectfailing")
    # The failure is counted with its reason, and no healthy account is reported down.
    errors = await stack.query(
        f'messaging_exporter_collect_errors_total{{account="{account}", reason="http_5xx"}} > 0'
    )
    assert errors
    firing = await stack.get_json(f"{stack.prometheus_url}/api/v1/alerts")
    down = {
        a["labels"]["account"]
        for a in firing["data"]["alerts"]
        if a["labels"]["alertname"] == TARGET_DOWN and a["state"] == "firing"
    }
    assert down == {account}
    assert not others & {a["labels"]["account"] for a in delivered()}
    # Alertmanager holds it too.
    held = await stack.get_json(f"{stack.alertmanager_url}/api/v2/alerts")
    assert any(
        a["labels"]["alertname"] == TARGET_DOWN and a["labels"]["account"] == account for a in held
    )
    print(f"{TARGET_DOWN} at the webhook {time.monotonic() - started:.1f} s after the fault")
