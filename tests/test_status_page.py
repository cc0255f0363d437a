"""The status page at ``/``: the pure renderer (order, states, escaping, size at 1,000 targets) and
the same page served over a real loopback socket and rendered by Debian's headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from exporter.collect.targets import TargetStateName
from exporter.web.status import StatusView, TargetRow, human_duration, render_status_page

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
HOSTILE = "<script>alert(1)</script>"
QUOTED = 'upstream said "no" & closed'
LONG_ERROR = (
    f'HTTP 502 from upstream: "{HOSTILE}" & <img src=x onerror=alert(2)> '
    + "connection reset by peer; " * 12
    + "\nsecond line of the body"
)

VOID = frozenset(
    ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr")
)


@dataclass
class Node:
    """An element of a tiny DOM built by ``parse``: enough to walk tables and read texts."""

    tag: str
    attrs: dict[str, str | None] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str) -> list[Node]:
        found: list[Node] = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag:
                    found.append(child)
                found.extend(child.find_all(tag))
        return found

    def find(self, tag: str) -> Node:
        found = self.find_all(tag)
        assert found, f"no <{tag}>"
        return found[0]

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())


class _TreeBuilder(HTMLParser):
    """Builds ``Node``s, and fails on an end tag that closes anything but the open element: the
    renderer's own output must be balanced (optional end tags included)."""

    def __init__(self, *, strict: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.stack = [self.root]
        self.strict = strict
        self.all_attrs: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.all_attrs.extend((tag, name, value) for name, value in attrs)
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.all_attrs.extend((tag, name, value) for name, value in attrs)
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if self.strict:
            assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
            self.stack.pop()
            return
        while len(self.stack) > 1:  # a browser's serialization: tolerate, find the open element
            if self.stack.pop().tag == tag:
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str, *, strict: bool = True) -> tuple[Node, list[tuple[str, str, str | None]]]:
    """The tree and every attribute seen as (tag, name, value)."""
    builder = _TreeBuilder(strict=strict)
    builder.feed(page)
    builder.close()
    if strict:
        assert [n.tag for n in builder.stack] == ["#document"], "unclosed elements"
    return builder.root, builder.all_attrs


def table_rows(root: Node) -> list[list[str]]:
    """The cells' texts of each row of the targets table's body, whitespace collapsed."""
    body = root.find("tbody")
    return [[" ".join(td.text().split()) for td in tr.find_all("td")] for tr in body.find_all("tr")]


def row(
    provider: str,
    account: str,
    state: TargetStateName,
    *,
    last_success: float | None = NOW - 192,
    failures: int = 0,
    interval: float = 60.0,
    series: int = 10,
    reason: str | None = None,
    error: str | None = None,
    **extra: Any,
) -> TargetRow:
    return TargetRow(
        provider=provider,
        account=account,
        state=state,
        last_success=last_success,
        consecutive_failures=failures,
        interval=interval,
        series=series,
        reason=reason,
        last_error=error,
        **extra,
    )


def view(targets: list[TargetRow], **changes: object) -> StatusView:
    base = StatusView(
        version="1.4.2",
        now=NOW,
        telemetry_path="/metrics",
        shard_index=0,
        shard_count=1,
        skipped_targets=0,
        config_file="/etc/messaging-stats-exporter/config.yaml",
        last_reload=NOW - 600,
        last_reload_ok=True,
        targets=targets,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def four_states() -> list[TargetRow]:
    """An up, a down with a long hostile error, a stale and a pending target, shuffled."""
    return [
        row("thulium", "acme", "up", series=42),
        row("trustlat", "gamma", "pending", last_success=None, series=0, interval=90),
        row(
            "altcraft",
            HOSTILE,
            "down",
            last_success=NOW - 3900,
            failures=5,
            interval=30,
            series=17,
            reason="http_502",
            error=LONG_ERROR,
        ),
        row(
            "exolve",
            "beta",
            "stale",
            last_success=NOW - 2 * 86_400 - 7_200,
            failures=312,
            interval=10,
            series=0,
            reason="timeout",
            error=QUOTED,
        ),
    ]


def check_four_states(root: Node) -> None:
    """What both the renderer's output and Chromium's DOM must show for ``four_states``."""
    rows = table_rows(root)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("down", "altcraft", HOSTILE),
        ("stale", "exolve", "beta"),
        ("pending", "trustlat", "gamma"),
        ("up", "thulium", "acme"),
    ]
    trs = root.find("tbody").find_all("tr")
    assert [sorted(tr.classes()) for tr in trs] == [["down"], ["stale"], ["pending"], ["up"]]
    down, stale, pending, up = rows
    assert down[3].startswith("1h 5m ago 2027-01-15 06:55:00")
    assert down[6:9] == ["5", "30s", "17"]
    assert down[9].startswith("http_502 HTTP 502 from upstream")
    assert stale[9] == f"timeout {QUOTED}"
    assert stale[3].startswith("2d 2h ago")
    assert pending[3] == "never"
    assert pending[7] == "1m 30s"
    assert up[3] == "3m 12s ago 2027-01-15 07:56:48"
    assert up[7:9] == ["1m", "42"]
    # The long hostile error is folded, whole in the details and short in the summary.
    details = root.find("tbody").find("details")
    assert LONG_ERROR in details.text()
    assert len(details.find("summary").text()) < 120
    # No script element anywhere; the hostile strings are text.
    assert not root.find_all("script")
    assert not root.find_all("img")
    assert HOSTILE in root.find("tbody").text()


# -- the pure renderer ------------------------------------------------------------------------


def test_four_states_in_order_with_their_columns() -> None:
    page = render_status_page(view(four_states()))
    root, _ = parse(page)
    check_four_states(root)


def test_order_is_state_then_provider_then_account() -> None:
    targets = [
        row("thulium", "b", "up"),
        row("altcraft", "z", "up"),
        row("thulium", "a", "down", reason="timeout", error="t"),
        row("altcraft", "y", "stale", reason="auth", error="401"),
        row("altcraft", "x", "pending", last_success=None),
        row("altcraft", "B", "down", reason="timeout", error="t"),
        row("altcraft", "a", "down", reason="timeout", error="t"),
        row("Exolve", "m", "up"),
    ]
    rows = table_rows(parse(render_status_page(view(targets)))[0])
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("down", "altcraft", "a"),
        ("down", "altcraft", "B"),
        ("down", "thulium", "a"),
        ("stale", "altcraft", "y"),
        ("pending", "altcraft", "x"),
        ("up", "altcraft", "z"),
        ("up", "Exolve", "m"),
        ("up", "thulium", "b"),
    ]


def test_state_is_text_and_class_not_colour_alone() -> None:
    root, _ = parse(render_status_page(view(four_states())))
    for tr in root.find("tbody").find_all("tr"):
        state = tr.find("td")
        (name,) = tr.classes()
        assert state.text() == name  # the text says it ...
        assert "pill" in state.find("span").classes()  # ... and the pill colours it


def test_hostile_texts_are_escaped_everywhere() -> None:
    nasty = 'x"><script>alert(3)</script>'
    targets = [
        row(nasty, HOSTILE, "down", reason=f"r{HOSTILE}", error=QUOTED),
        row("thulium", "a&b", "down", reason="timeout", error=LONG_ERROR),
    ]
    page = render_status_page(
        view(
            targets,
            version=nasty,
            config_file=f"/etc/{HOSTILE}/c&d.yaml",
            telemetry_path='/metrics"onmouseover="alert(4)',
        )
    )
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "upstream said &quot;no&quot; &amp; closed" in page
    assert "a&amp;b" in page
    root, attrs = parse(page)
    assert not root.find_all("script")
    assert not root.find_all("img")
    for tag, name, value in attrs:
        assert not name.startswith("on"), (tag, name)
        assert "javascript:" not in (value or "").lower()
    assert [a.attrs["href"] for a in root.find("nav").find_all("a")] == [
        '/metrics"onmouseover="alert(4)',
        "/healthz",
        "/readyz",
    ]
    rows = table_rows(root)
    hostile = next(r for r in rows if r[2] == HOSTILE)
    assert hostile[1] == nasty
    assert hostile[9] == f"r{HOSTILE} {QUOTED}"
    assert f"/etc/{HOSTILE}/c&d.yaml" in root.find("dl").text()
    assert nasty in root.find("h1").text()
    assert HOSTILE in root.find("section").text()  # the failing summary names the account


def test_every_attribute_is_double_quoted() -> None:
    page = render_status_page(view(four_states()))
    for tag in re.findall(r"<[a-z][^>]*>", page):
        bare = re.sub(r'"[^"]*"', '""', tag)  # quoted values may hold "=" themselves
        for name, quote in re.findall(r"\s([a-z-]+)=(.)", bare):
            assert quote == '"', (name, tag)


def test_no_javascript_and_a_viewport() -> None:
    page = render_status_page(view(four_states()))
    root, attrs = parse(page)
    assert not root.find_all("script")
    assert not [name for _, name, _ in attrs if name.startswith("on")]
    metas = {m.attrs.get("name"): m.attrs.get("content") for m in root.find_all("meta")}
    assert "width=device-width" in (metas["viewport"] or "")
    assert root.find("style").text().strip()
    assert root.find("html").attrs["lang"] == "en"


def test_short_errors_inline_long_or_multiline_folded() -> None:
    targets = [
        row("p", "short", "down", reason="timeout", error="read timed out"),
        row("p", "long", "down", reason="http_500", error="e" * 81),
        row("p", "lines", "down", reason="parse", error="line 1\nline 2"),
    ]
    root, _ = parse(render_status_page(view(targets)))
    trs = {tr.find_all("td")[2].text(): tr for tr in root.find("tbody").find_all("tr")}
    assert not trs["short"].find_all("details")
    assert trs["short"].find_all("td")[9].text() == "timeout read timed out"
    summary = trs["long"].find("summary").text()
    assert summary == "http_500 " + "e" * 80 + "…"
    assert "e" * 81 in trs["long"].find("details").text()
    assert trs["lines"].find("summary").text() == "parse line 1 line 2…"


def test_header_facts_counts_and_links() -> None:
    page = render_status_page(view(four_states(), shard_index=1, shard_count=3, skipped_targets=7))
    root, _ = parse(page)
    facts = " ".join(root.find("dl").text().split())
    assert "Version1.4.2" in facts
    assert "1 of 3 (0-based); 7 targets left to the other shards" in facts
    assert "/etc/messaging-stats-exporter/config.yaml" in facts
    assert "2027-01-15 07:50:00 UTC (10m ago), succeeded" in facts
    assert "2027-01-15 08:00:00 UTC" in facts
    counts = [" ".join(li.text().split()) for li in root.find("ul").find_all("li")]
    assert counts == ["1 down", "1 stale", "1 pending", "1 up", "of 4"]
    assert root.find("title").text() == "2 failing · messaging-stats-exporter"
    links = [a.attrs["href"] for a in root.find("nav").find_all("a")]
    assert links == ["/metrics", "/healthz", "/readyz"]
    summary = " ".join(root.find("section").text().split())
    assert "1 altcraft http_502" in summary
    assert "1 exolve timeout (beta)" in summary


def test_demo_config_unsharded_failed_reload_and_no_targets() -> None:
    page = render_status_page(
        view([], config_file=None, last_reload_ok=False, telemetry_path="/stats")
    )
    root, _ = parse(page)
    facts = " ".join(root.find("dl").text().split())
    assert "built-in demo config" in facts
    assert "not sharded" in facts
    assert "failed" in facts
    assert "No targets" in root.find("tbody").text()
    assert not root.find_all("section")  # nothing failing: no summary
    assert root.find("title").text() == "messaging-stats-exporter"
    assert root.find("nav").find("a").attrs["href"] == "/stats"
    never = render_status_page(view([], last_reload=None))
    assert "never" in " ".join(parse(never)[0].find("dl").text().split())


def test_attempts_next_attempt_and_host() -> None:
    targets = [
        row(
            "thulium",
            "acme",
            "up",
            host="acme.thulium.example:8443",
            last_attempt=NOW - 75,
            last_duration=0.25,
            next_attempt=NOW + 45,
        ),
        row(
            "exolve",
            "late",
            "down",
            reason="timeout",
            error="t",
            host="[::1]:9",
            last_attempt=NOW - 3,
            last_duration=12.5,
            next_attempt=NOW - 1,
        ),
        row("trustlat", "new", "pending", last_success=None),
        row("altcraft", "off", "disabled", last_success=None, series=0),
    ]
    root, _ = parse(render_status_page(view(targets)))
    heads = [" ".join(th.text().split()) for th in root.find("thead").find_all("th")]
    assert heads == [
        "State",
        "Provider",
        "Account · host",
        "Last success (UTC)",
        "Last attempt",
        "Next attempt",
        "Failures",
        "Interval",
        "Series",
        "Last error",
    ]
    rows = {r[2]: r for r in table_rows(root)}
    assert list(rows) == ["late [::1]:9", "new", "acme acme.thulium.example:8443", "off"]
    up = rows["acme acme.thulium.example:8443"]
    assert up[4:6] == ["1m 15s ago took 250ms", "in 45s"]
    late = rows["late [::1]:9"]
    assert late[4:6] == ["3s ago took 12.5s", "due"]
    assert rows["new"][4:6] == ["never", "unknown"]
    assert rows["off"][0] == "disabled"
    assert rows["off"][4:6] == ["never", "never"]
    # The UTC times of the attempts are in the cells' titles.
    cells = root.find("tbody").find_all("tr")[2].find_all("td")
    assert cells[4].find("span").attrs["title"] == "2027-01-15 07:58:45 UTC"
    assert cells[5].find("span").attrs["title"] == "2027-01-15 08:00:45 UTC"
    counts = [" ".join(li.text().split()) for li in root.find("ul").find_all("li")]
    assert counts == ["1 down", "0 stale", "1 pending", "1 up", "1 disabled", "of 4"]


def test_a_failed_reload_shows_its_error_text() -> None:
    error = f"targets[3].interval: must be at least 10s\n{HOSTILE} & more"
    page = render_status_page(view([], last_reload_ok=False, last_reload_error=error))
    root, _ = parse(page)
    facts = " ".join(root.find("dl").text().split())
    assert "(10m ago), ✗ failed" in facts
    section = root.find("section")
    assert "The last reload failed; the previous config stays" in section.find("h2").text()
    assert section.find("pre").text() == error  # whole, escaped, its lines kept
    assert "<script>" not in page
    ok = render_status_page(view([], last_reload_error=None))
    assert "reload failed" not in ok


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (1.5, "1.5s"),
        (10, "10s"),
        (60, "1m"),
        (90, "1m 30s"),
        (192, "3m 12s"),
        (3600, "1h"),
        (3605, "1h 0m 5s"),
        (86_400 + 3 * 3600, "1d 3h"),
        (-5, "0s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_ages_keep_two_units() -> None:
    targets = [row("p", "a", "up", last_success=NOW - (86_400 + 3 * 3600 + 4 * 60 + 5))]
    rows = table_rows(parse(render_status_page(view(targets)))[0])
    assert rows[0][3].startswith("1d 3h ago ")


def thousand_targets() -> list[TargetRow]:
    """1,000 targets, a fifth failing with a 300-character error (folded)."""
    states: list[TargetStateName] = ["up", "up", "up", "down", "stale"]
    targets = []
    for i in range(1000):
        state = states[i % 5]
        failing = state in ("down", "stale")
        targets.append(
            row(
                ("altcraft", "thulium", "trustlat", "exolve")[i % 4],
                f"account-{i:04d}",
                state,
                last_success=NOW - 7 * i,
                failures=3 if failing else 0,
                series=120,
                reason="timeout" if failing else None,
                error="deadline exceeded " * 17 if failing else None,
            )
        )
    return targets


def test_a_thousand_targets_render_compactly() -> None:
    page = render_status_page(view(thousand_targets()))
    root, _ = parse(page)
    rows = table_rows(root)
    assert len(rows) == 1000
    assert [r[0] for r in rows[:200]] == ["down"] * 200
    assert [r[0] for r in rows[200:400]] == ["stale"] * 200
    assert {r[0] for r in rows[400:]} == {"up"}
    # A plain row: no per-row widgets beyond the fold of a long error. 400 failing rows carry
    # their 306-character errors twice (summary and full text); the rest stay small.
    assert len(page) < 700_000, len(page)
    up_rows = render_status_page(view([t for t in thousand_targets() if t.state == "up"]))
    assert len(up_rows) < 600 * 500 + 12_000, len(up_rows)
    # The failing summary stays short: one line per (provider, reason), three accounts each.
    summary = root.find("section")
    assert len(summary.find_all("li")) == 4
    assert "400 targets" in summary.find("h2").text()


# -- the page in a real browser ---------------------------------------------------------------


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """Debian's chromium; in CI its absence is a failure, elsewhere a skip."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs Debian's package chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
async def served_page() -> AsyncIterator[str]:
    """The four-states page served by a tiny aiohttp app on a real loopback port."""
    page = render_status_page(view(four_states(), shard_index=1, shard_count=3, skipped_targets=7))

    async def status(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def run_chromium(binary: str, profile: Path, *args: str) -> str:
    """Chromium with the given arguments, in its own fresh profile; its stdout. The event loop
    keeps serving the page while it runs."""
    process = await asyncio.create_subprocess_exec(
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


@pytest.mark.slow
async def test_chromium_renders_the_page(served_page: str, tmp_path: Path) -> None:
    binary = chromium()
    dom = await run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", served_page)
    root, attrs = parse(dom, strict=False)
    check_four_states(root)
    assert not [name for _, name, _ in attrs if name.startswith("on")]
    assert "1 of 3 (0-based); 7 targets left" in " ".join(root.find("dl").text().split())

    screenshot = tmp_path / "status.png"
    await run_chromium(
        binary,
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1400,900",
        "--hide-scrollbars",
        served_page,
    )
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1400, 900)
    assert len(png) > 20_000  # a rendered page, not a blank one


WIDTH_PROBE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="narrow" src="/" style="width:800px;height:2000px;border:0"></iframe>
<iframe id="wide" src="/" style="width:1400px;height:2000px;border:0"></iframe>
<script>
function measure(frame) {
  const doc = frame.contentDocument, win = frame.contentWindow;
  const scrollers = [];
  for (const el of doc.querySelectorAll("*")) {
    const x = win.getComputedStyle(el).overflowX;
    if ((x === "auto" || x === "scroll") && el.scrollWidth > el.clientWidth) {
      scrollers.push(el.tagName + "." + el.className);
    }
  }
  const root = doc.documentElement;
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, scrollers: scrollers,
          rows: doc.querySelectorAll("tbody tr").length};
}
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "result";
  out.textContent = JSON.stringify({narrow: measure(document.getElementById("narrow")),
                                    wide: measure(document.getElementById("wide"))});
  document.body.appendChild(out);
});
</script></body></html>"""
"""The status page in an 800 px and a 1,400 px wide frame of a page of the same origin, whose script
measures the page's width and every element that would scroll sideways (the status page itself
has no script)."""


def long_targets() -> list[TargetRow]:
    """1,000 targets in every state, some with 200-character names, long hosts and long errors
    of one unbroken word."""
    states: list[TargetStateName] = ["up", "down", "stale", "pending", "disabled"]
    targets = []
    for i in range(1000):
        state = states[i % 5]
        failing = state in ("down", "stale")
        collected = state not in ("pending", "disabled")
        targets.append(
            row(
                ("altcraft", "thulium", "trustlat", "exolve")[i % 4],
                f"tenant-{'x' * 188}-{i:04d}" if i % 7 == 0 else f"account-{i:04d}",
                state,
                last_success=NOW - 7 * i if collected else None,
                failures=3 if failing else 0,
                reason="http_4xx" if failing else None,
                error=("denied " + "y" * 400 if i % 2 else "deadline exceeded " * 20)
                if failing
                else None,
                host=f"api.{'h' * 120}.example.com:8443" if i % 3 == 0 else "api.example.com",
                last_attempt=NOW - 5 if collected else None,
                last_duration=0.25 if collected else None,
                next_attempt=NOW + 55 if state != "disabled" else None,
            )
        )
    return targets


@pytest.mark.slow
async def test_800_px_wide_without_sideways_scrolling(tmp_path: Path) -> None:
    binary = chromium()
    page = render_status_page(
        view(
            long_targets(),
            config_file="/etc/" + "c" * 300 + ".yaml",
            last_reload_ok=False,
            last_reload_error="targets[3].interval: " + "z" * 500 + "\nsecond line",
        )
    )

    async def status(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def probe(_: web.Request) -> web.Response:
        return web.Response(text=WIDTH_PROBE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", status)
    app.router.add_get("/probe", probe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        dom = await run_chromium(
            binary, tmp_path / "profile", "--dump-dom", f"http://127.0.0.1:{port}/probe"
        )
    finally:
        await runner.cleanup()
    found = re.search(r'<pre id="result">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    result = json.loads(unescape(found.group(1)))
    for frame in ("narrow", "wide"):
        measured = result[frame]
        assert measured["rows"] == 1000, measured
        assert measured["scrollWidth"] <= measured["clientWidth"], measured
        assert measured["scrollers"] == [], measured
    assert result["narrow"]["clientWidth"] <= 800
