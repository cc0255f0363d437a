"""The status page at ``/``: what an operator looks at first. Pure: plain data in, HTML out.

Failing targets come first, each state is shown by colour and by text, every text that comes from
the config or a provider is HTML-escaped, and the page has no JavaScript. It stays one plain table
(one class per row, no per-row widgets but a ``<details>`` for long errors) so that 1,000 targets
render quickly and scroll well. Narrower than 1,280 px, CSS alone lays each row out as a wrapped
block with its cells labelled, so that the page reads at 800 px without sideways scrolling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

from exporter.collect.targets import TargetStateName


@dataclass(frozen=True, slots=True)
class TargetRow:
    provider: str
    account: str
    state: TargetStateName
    last_success: float | None
    """Unix seconds, None before the first success."""
    consecutive_failures: int
    interval: float
    """Seconds."""
    series: int
    """Provider series served now."""
    reason: str | None
    """The last failure's reason, None when the last collection succeeded."""
    last_error: str | None
    """The last failure's text (secrets already redacted), None when it succeeded."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """The target's constant labels."""
    host: str = ""
    """The host (and port, if the URL gives one) of the target's base URL: never a whole URL."""
    last_attempt: float | None = None
    """When the last collection started, Unix seconds; None before the first."""
    last_duration: float | None = None
    """How long the last collection took, seconds."""
    next_attempt: float | None = None
    """When the next collection is due, Unix seconds; None when not known."""


@dataclass(frozen=True, slots=True)
class StatusView:
    version: str
    now: float
    """Unix seconds."""
    telemetry_path: str
    shard_index: int
    shard_count: int
    skipped_targets: int
    config_file: str | None
    """None: the built-in demo config."""
    last_reload: float | None
    """When the config was last (re)loaded, Unix seconds."""
    last_reload_ok: bool
    targets: Sequence[TargetRow]
    last_reload_error: str | None = None
    """Why the last reload failed (secrets already redacted); None after a success."""


STATES: tuple[TargetStateName, ...] = ("down", "stale", "pending", "up", "disabled")
"""The table's order: failing first (down, then stale), then not yet collected, then healthy, then
those the config switched off."""
_RANK = {state: rank for rank, state in enumerate(STATES)}
_FAILING = frozenset({"down", "stale"})

ERROR_SUMMARY_CHARS = 80
"""Longer error texts are folded into a ``<details>`` whose summary shows this many characters."""
SUMMARY_GROUPS = 20
"""At most this many (provider, reason) groups in the failing summary above the table."""
SUMMARY_EXAMPLES = 3
"""Accounts named per group in the failing summary."""


def sort_key(row: TargetRow) -> tuple[int, str, str, str, str]:
    """State rank, then provider, then account (case-insensitive, exact spelling breaks ties)."""
    return (
        _RANK[row.state],
        row.provider.casefold(),
        row.account.casefold(),
        row.provider,
        row.account,
    )


def human_duration(seconds: float, *, units: int = 4) -> str:
    """``90`` → ``1m 30s``, ``60`` → ``1m``, ``0.25`` → ``250ms``; at most ``units`` parts, largest
    first (an age reads better as ``2h 5m`` than to the second)."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        if seconds == 0:
            return "0s"
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.3g}s"
    rest = round(seconds)
    parts: list[str] = []
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")):
        count, rest = divmod(rest, size)
        if count or (parts and len(parts) < units):
            parts.append(f"{count}{unit}")
        if len(parts) == units:
            break
    while len(parts) > 1 and parts[-1].startswith("0"):
        parts.pop()
    return " ".join(parts)


def utc(seconds: float, *, zone: bool = True) -> str:
    """``2027-01-15 08:00:00 UTC`` (without `` UTC`` where a column header says it)."""
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} UTC" if zone else text


def age(seconds: float, now: float) -> str:
    """How long before ``now``: ``3m 12s ago``."""
    return f"{human_duration(now - seconds, units=2)} ago"


def _when(seconds: float | None, now: float) -> str:
    """An age, then the UTC time (the header says UTC); ``never`` for None."""
    if seconds is None:
        return '<span class="muted">never</span>'
    return (
        f'<span class="age">{age(seconds, now)}</span> '
        f'<small class="muted">{utc(seconds, zone=False)}</small>'
    )


def _error(row: TargetRow) -> str:
    """The reason as a code tag, then the text; a long or multi-line text folded into
    ``<details>`` so it does not widen its column or push the row's height."""
    if row.reason is None and row.last_error is None:
        return ""
    reason = f"<code>{escape(row.reason)}</code> " if row.reason else ""
    text = row.last_error or ""
    if len(text) <= ERROR_SUMMARY_CHARS and "\n" not in text:
        return f"{reason}{escape(text)}"
    head = " ".join(text[: ERROR_SUMMARY_CHARS * 2].split())[:ERROR_SUMMARY_CHARS]
    return (
        f"<details><summary>{reason}{escape(head)}…</summary>"
        f'<div class="full">{escape(text)}</div></details>'
    )


def _attempt(row: TargetRow, now: float) -> str:
    """The last attempt's age, then how long it took."""
    if row.last_attempt is None:
        return '<span class="muted">never</span>'
    took = (
        ""
        if row.last_duration is None
        else f" <small>took {human_duration(row.last_duration)}</small>"
    )
    title = utc(row.last_attempt)
    return f'<span class="age" title="{title}">{age(row.last_attempt, now)}</span>{took}'


def _next(row: TargetRow, now: float) -> str:
    """How long until the next attempt; ``due`` once its time has come; ``never`` for a disabled
    target, ``unknown`` where no schedule says it."""
    if row.state == "disabled":
        return '<span class="muted">never</span>'
    if row.next_attempt is None:
        return '<span class="muted">unknown</span>'
    title = f' title="{utc(row.next_attempt)}"'
    if row.next_attempt <= now:
        return f"<span{title}>due</span>"
    return f"<span{title}>in {human_duration(row.next_attempt - now, units=2)}</span>"


def _row(row: TargetRow, now: float) -> str:
    failures = row.consecutive_failures
    host = f' <small class="host muted">{escape(row.host)}</small>' if row.host else ""
    return (
        f'<tr class="{row.state}">'
        f'<td class="state"><span class="pill">{row.state}</span></td>'
        f"<td>{escape(row.provider)}</td>"
        f'<td class="account">{escape(row.account)}{host}</td>'
        f'<td class="when">{_when(row.last_success, now)}</td>'
        f'<td class="when">{_attempt(row, now)}</td>'
        f'<td class="when">{_next(row, now)}</td>'
        f'<td class="num{" bad" if failures else ""}">{failures}</td>'
        f'<td class="num">{human_duration(row.interval)}</td>'
        f'<td class="num">{row.series:,}</td>'
        f'<td class="error">{_error(row)}</td>'
        "</tr>\n"
    )


def _failing_summary(rows: Sequence[TargetRow]) -> str:
    """Failing targets grouped by provider and reason, largest group first: at 1,000 targets the
    cause of an outage reads here before any scrolling."""
    groups: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row.state not in _FAILING:
            continue
        key = (row.provider, row.reason or "unknown")
        groups[key] += 1
        kept = examples.setdefault(key, [])
        if len(kept) < SUMMARY_EXAMPLES:
            kept.append(row.account)
    if not groups:
        return ""
    ordered = sorted(groups.items(), key=lambda item: (-item[1], item[0]))
    items: list[str] = []
    for (provider, reason), count in ordered[:SUMMARY_GROUPS]:
        named = ", ".join(escape(account) for account in examples[(provider, reason)])
        more = ", …" if count > SUMMARY_EXAMPLES else ""
        items.append(
            f"<li><b>{count}</b> {escape(provider)} <code>{escape(reason)}</code>"
            f' <span class="muted">({named}{more})</span></li>'
        )
    if len(ordered) > SUMMARY_GROUPS:
        rest = sum(count for _, count in ordered[SUMMARY_GROUPS:])
        items.append(f'<li class="muted">{rest} more in other groups</li>')
    total = sum(groups.values())
    return (
        f'<section class="failing" aria-labelledby="failing-h"><h2 id="failing-h">'
        f"Failing: {total} target{'s' if total != 1 else ''} by provider and reason</h2>"
        f"<ul>{''.join(items)}</ul></section>\n"
    )


def _facts(view: StatusView) -> str:
    """Version, shard, config, last reload and the generation time, as a definition list."""
    if view.shard_count > 1:
        shard = (
            f"{view.shard_index} of {view.shard_count} (0-based); "
            f"{view.skipped_targets} target{'s' if view.skipped_targets != 1 else ''} "
            "left to the other shards"
        )
    else:
        shard = "not sharded (1 of 1)"
    config = (
        f"<code>{escape(view.config_file)}</code>"
        if view.config_file is not None
        else "built-in demo config"
    )
    if view.last_reload is None:
        reload = '<span class="muted">never</span>'
    else:
        outcome = (
            '<span class="ok">succeeded</span>'
            if view.last_reload_ok
            else '<span class="bad">✗ failed</span>'
        )
        reload = f"{utc(view.last_reload)} ({age(view.last_reload, view.now)}), {outcome}"
    facts = (
        ("Version", escape(view.version)),
        ("Shard", shard),
        ("Config", config),
        ("Last reload", reload),
        ("Page generated", utc(view.now)),
    )
    return "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in facts)


def _reload_error(view: StatusView) -> str:
    """Why the last reload failed, whole (a config error names every bad key), under the facts."""
    if view.last_reload_ok or not view.last_reload_error:
        return ""
    return (
        '<section class="reload-error" aria-labelledby="reload-h"><h2 id="reload-h">'
        "The last reload failed; the previous config stays</h2>"
        f"<pre>{escape(view.last_reload_error)}</pre></section>\n"
    )


def _counts(counts: Counter[str], total: int) -> str:
    pills = "".join(
        f'<li class="{state if counts[state] else "zero"}">'
        f'<span class="pill"><b>{counts[state]:,}</b> {state}</span></li>'
        for state in STATES
        if state != "disabled" or counts[state]
    )
    return f'<ul class="counts" aria-label="Targets by state">{pills}<li>of {total:,}</li></ul>'


_CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--muted:#5b636d;--line:#d8dee4;--head:#f3f5f7;
--up:#1a7f37;--up-bg:#dafbe1;--down:#b42318;--down-bg:#ffe4e1;--stale:#8a4b00;--stale-bg:#fff1c7;
--pending:#3b5bdb;--pending-bg:#e3ebff;--code:#eef1f4;--link:#0b57d0}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--fg:#e6e9ed;--muted:#9aa4af;--line:#2c333b;
--head:#181d23;--up:#5bd17a;--up-bg:#12351f;--down:#ff8a80;--down-bg:#4a1512;--stale:#f5c451;
--stale-bg:#3d2c05;--pending:#9db4ff;--pending-bg:#1d2a55;--code:#222931;--link:#8ab4f8}}
*{box-sizing:border-box}
body{margin:0;padding:20px 24px 40px;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
a{color:var(--link)}
h1{font-size:20px;margin:0 0 4px}h1 .muted{font-weight:normal;font-size:15px}
h2{font-size:15px;margin:0 0 6px}
.muted{color:var(--muted)}.ok{color:var(--up);font-weight:600}.bad{color:var(--down);font-weight:600}
code{font:12.5px/1.3 ui-monospace,"DejaVu Sans Mono",monospace;background:var(--code);
padding:1px 4px;border-radius:4px;overflow-wrap:anywhere}
header{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:baseline;
border-bottom:1px solid var(--line);padding-bottom:10px;margin-bottom:12px}
nav a{margin-right:14px}
dl{display:flex;flex-wrap:wrap;gap:6px 28px;margin:0 0 12px}
dl div{min-width:0}
dt{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
dd{margin:0;overflow-wrap:anywhere}
.counts{list-style:none;display:flex;flex-wrap:wrap;gap:8px;padding:0;margin:0 0 14px;
align-items:center}
.pill{display:inline-block;padding:1px 8px;border-radius:999px;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.counts .pill{font-size:14px;padding:3px 12px}
.up .pill{color:var(--up);background:var(--up-bg)}
.down .pill{color:var(--down);background:var(--down-bg)}
.stale .pill{color:var(--stale);background:var(--stale-bg)}
.pending .pill{color:var(--pending);background:var(--pending-bg)}
.disabled .pill{color:var(--muted);background:var(--code)}
.zero .pill{color:var(--muted);font-weight:normal}
.failing{border:1px solid var(--down);border-left-width:4px;border-radius:6px;
padding:8px 14px;margin:0 0 14px;background:var(--down-bg)}
.failing ul{margin:0;padding-left:18px}
.reload-error{border:1px solid var(--down);border-left-width:4px;border-radius:6px;
padding:8px 14px;margin:0 0 14px}
.reload-error pre{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;max-height:16em;
overflow:auto;font:12.5px/1.35 ui-monospace,"DejaVu Sans Mono",monospace}
table{border-collapse:collapse;width:100%;table-layout:fixed}
col.state{width:7.5em}col.provider{width:7em}col.account{width:15%}col.success{width:10.5em}
col.attempt{width:7.5em}col.next{width:7.5em}col.failures{width:6.5em}col.interval{width:6em}
col.series{width:6em}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{position:sticky;top:0;background:var(--head);font-size:12px;text-transform:uppercase;
letter-spacing:.04em;color:var(--muted);z-index:1}
tbody tr{border-left:4px solid transparent}
tr.down{border-left-color:var(--down)}tr.stale{border-left-color:var(--stale)}
tr.pending{border-left-color:var(--pending)}tr.up{border-left-color:var(--up)}
tr.disabled{border-left-color:var(--line)}
tbody tr:hover{background:var(--head)}
td.state,td.when{white-space:nowrap}td.when small{display:block}
td.account{overflow-wrap:anywhere}td.account small{display:block}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
th.num{text-align:right}
td.bad{color:var(--down);font-weight:600}
td.error{overflow-wrap:anywhere}
details summary{cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
details .full{margin-top:4px;white-space:pre-wrap;font:12.5px/1.35 ui-monospace,
"DejaVu Sans Mono",monospace;background:var(--code);padding:6px 8px;border-radius:4px;
max-height:16em;overflow:auto}
.empty{text-align:center;color:var(--muted);padding:20px}
@media (max-width:1279px){
table,tbody,tr,td{display:block}colgroup,thead{display:none}
tbody tr{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 18px;padding:6px 8px;
border-bottom:1px solid var(--line)}
td{padding:0;border:0;min-width:0}
td:nth-child(n+4):nth-child(-n+9)::before{display:block;font-size:11px;
text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
td:nth-child(4)::before{content:"Last success"}td:nth-child(5)::before{content:"Last attempt"}
td:nth-child(6)::before{content:"Next attempt"}td:nth-child(7)::before{content:"Failures"}
td:nth-child(8)::before{content:"Interval"}td:nth-child(9)::before{content:"Series"}
td.account{flex:1 1 12em}td.num{text-align:left}
td.error{flex:1 1 100%}td.error:empty{display:none}
}
"""

_HEAD = (
    '<colgroup><col class="state"><col class="provider"><col class="account">'
    '<col class="success"><col class="attempt"><col class="next"><col class="failures">'
    '<col class="interval"><col class="series"><col class="error"></colgroup>'
    "<thead><tr><th>State</th><th>Provider</th><th>Account · host</th>"
    "<th>Last success (UTC)</th><th>Last attempt</th><th>Next attempt</th>"
    '<th class="num">Failures</th><th class="num">Interval</th><th class="num">Series</th>'
    "<th>Last error</th></tr></thead>"
)
_COLUMNS = 10


def render_status_page(view: StatusView) -> str:
    """The whole page."""
    rows = sorted(view.targets, key=sort_key)
    counts: Counter[str] = Counter(row.state for row in rows)
    failing = counts["down"] + counts["stale"]
    title = "messaging-stats-exporter"
    if failing:
        title = f"{failing} failing · {title}"
    telemetry = escape(view.telemetry_path)
    body = "".join([_row(row, view.now) for row in rows]) or (
        f'<tr><td class="empty" colspan="{_COLUMNS}">No targets on this replica.</td></tr>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
        f'<header><h1>messaging-stats-exporter <span class="muted">{escape(view.version)}'
        "</span></h1>"
        f'<nav aria-label="Endpoints"><a href="{telemetry}">Metrics ({telemetry})</a>'
        '<a href="/healthz">/healthz</a><a href="/readyz">/readyz</a></nav></header>\n'
        f"<dl>{_facts(view)}</dl>\n"
        f"{_reload_error(view)}"
        f"{_counts(counts, len(rows))}\n"
        f"{_failing_summary(rows)}"
        f'<table aria-label="Targets">{_HEAD}<tbody>\n{body}</tbody></table>\n'
        "</body></html>\n"
    )
