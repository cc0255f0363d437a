"""The exposition against prometheus_client rendering the same store: the same bytes after any
sequence of collections, failures, staleness, reloads and target changes; gzip and OpenMetrics;
builds at most once per change, a scrape waiting for at most one."""

from __future__ import annotations

import asyncio
import gzip
import re
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from exporter.collect.snapshot import Snapshot
from exporter.config import validate_config
from exporter.providers.base import Sample
from exporter.providers.errors import Reason
from exporter.service import Exporter, make_exporter
from exporter.web.app import status_view
from exporter.web.status import TargetRow
from tests.conftest import FakeClock
from tests.reference import reference_registry

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
RECORDS = "thulium_outbound_campaign_records"
COMPLETION = "thulium_outbound_campaign_completion_ratio"
ACTIVE = "thulium_outbound_active_campaigns"

account_names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")) | st.sampled_from('\\"'),
    min_size=1,
    max_size=12,
)
label_values = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from('\\"\n'),
    max_size=8,
)
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(0, 10**9).map(float)
THULIUM_LABELS = {"account", "provider", "reason", "campaign_id", "campaign_name", "status"}
constant_labels = st.dictionaries(
    st.from_regex(r"\A[a-zA-Z_][a-zA-Z0-9_]{0,6}\Z").filter(
        lambda name: not name.startswith("__") and name not in THULIUM_LABELS
    ),
    label_values,
    max_size=3,
)
"""A target's ``labels``: names that sort before, between and after the series' own."""


def target(
    name: str, stale_after: float = 300, labels: dict[str, str] | None = None, enabled: bool = True
) -> dict[str, Any]:
    return {
        "labels": labels or {},
        "enabled": enabled,
        "name": name,
        "provider": "thulium",
        "base_url": "http://127.0.0.1:9/thulium/api",
        "username": "u",
        "password": "p",
        "interval": 60,
        "stale_after": stale_after,
    }


def new_exporter(
    clock: FakeClock,
    names: list[str],
    labels: list[dict[str, str]] | None = None,
    enabled: list[bool] | None = None,
) -> Exporter:
    labels, enabled = labels or [{}], enabled or [True]
    config = validate_config(
        {
            "targets": [
                target(name, labels=labels[i % len(labels)], enabled=enabled[i % len(enabled)])
                for i, name in enumerate(names)
            ]
        }
    )
    return make_exporter(config, clock=clock, autostart=False)


def expected(exporter: Exporter, openmetrics: bool) -> bytes:
    registry = reference_registry(exporter)
    return bytes(generate_openmetrics(registry) if openmetrics else generate_latest(registry))


def check_all(exporter: Exporter) -> None:
    for openmetrics in (False, True):
        got = exporter.exposition.body(openmetrics)
        assert not got.gzipped
        assert got.body == expected(exporter, openmetrics)


samples = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([RECORDS, COMPLETION]), st.tuples(label_values), values),
        st.tuples(st.just(ACTIVE), st.just(()), values),
    ),
    max_size=6,
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.integers(0, 40), st.booleans(), samples),
        st.tuples(st.just("advance"), st.sampled_from([1.0, 100.0, 299.0, 301.0])),
        st.tuples(st.just("reload"), st.booleans()),
        st.tuples(st.just("retarget"), st.integers(0, 40)),
        st.tuples(st.just("observe"), st.sampled_from(["200", "500"])),
    ),
    max_size=25,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    names=st.lists(account_names, min_size=1, max_size=40, unique=True),
    ops=operations,
    labels=st.lists(constant_labels, max_size=4),
    enabled=st.lists(st.booleans(), max_size=4),
)
def test_any_history_renders_as_prometheus_client_does(names, ops, labels, enabled):
    """Targets with and without constant labels, disabled ones among them."""
    clock = FakeClock()
    exporter = new_exporter(clock, names, labels, enabled)
    store = exporter.store
    check_all(exporter)
    for op in ops:
        if op[0] == "record":
            _, index, ok, drawn = op
            name = list(exporter.targets)[index % len(exporter.targets)].name
            store.record(
                Snapshot(
                    target=name,
                    provider="thulium",
                    ok=ok,
                    samples=tuple(Sample(m, labels, v) for m, labels, v in drawn),
                    started_at=clock.time(),
                    duration=0.25,
                    reason=None if ok else Reason.HTTP_5XX,
                    error=None if ok else "HTTP 500",
                )
            )
        elif op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "reload":
            store.reloaded(op[1])
        elif op[0] == "retarget":
            kept = [t.config for t in exporter.targets][: op[1] % (len(exporter.targets) + 1)]
            exporter.set_targets(
                [*reversed(kept), validate_config({"targets": [target(f"new-{op[1]}")]}).targets[0]]
            )
        else:
            # Requests are observed during a collection; its end is the store's change that
            # shows them (the exposition is as of the latest store change, histogram included).
            # Only an enabled target is collected.
            collected = [t.name for t in exporter.targets if t.config.enabled]
            if collected:
                exporter.histogram.labels("thulium", "outbounds/stats", op[1]).observe(0.1)
                store.record(Snapshot(collected[0], "thulium", True, (), clock.time(), 0.1))
        check_all(exporter)


def fill(exporter: Exporter, clock: FakeClock, round_: int) -> None:
    for index, target in enumerate(exporter.targets):
        exporter.store.record(
            Snapshot(
                target=target.name,
                provider="thulium",
                ok=True,
                samples=(
                    Sample(RECORDS, ("00001",), float(index * round_)),
                    Sample(ACTIVE, (), 1.0),
                ),
                started_at=clock.time(),
                duration=0.1,
            )
        )


async def scrape(exporter: Exporter, accept: str = "", encoding: str = "") -> Any:
    return await exporter.exposition.get(accept, encoding)


def with_live(exporter: Exporter, body: bytes, openmetrics: bool) -> bytes:
    """``body`` as a scrape gets it: with the live families (the process's) before ``# EOF``."""
    live = exporter.exposition.live
    assert live is not None
    return body.removesuffix(b"# EOF\n" if openmetrics else b"") + live.text(openmetrics)


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
async def test_gzip_is_the_identity_body_compressed(accept):
    clock = FakeClock()
    exporter = new_exporter(clock, [f"t{i}" for i in range(50)])
    fill(exporter, clock, 1)
    plain = await scrape(exporter, accept)
    packed = await scrape(exporter, accept, "gzip, deflate")
    assert packed.gzipped
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.body) == plain.body
    assert packed.headers["Content-Type"] == plain.headers["Content-Type"]
    assert "Accept-Encoding" in packed.headers["Vary"]
    if accept:
        assert plain.body.endswith(b"# EOF\n")
        assert plain.content_type.startswith("application/openmetrics-text; version=1.0.0")


@pytest.mark.parametrize(
    ("encoding", "gzipped"),
    [("gzip", True), ("GZIP;q=0.5", True), ("*", True), ("gzip;q=0", False), ("br", False)],
)
async def test_gzip_only_when_accepted(encoding, gzipped):
    exporter = new_exporter(FakeClock(), ["a"])
    assert (await scrape(exporter, "", encoding)).gzipped == gzipped


async def test_each_body_is_built_once_per_change():
    clock = FakeClock()
    exporter = new_exporter(clock, [f"t{i}" for i in range(20)])
    fill(exporter, clock, 1)
    first = [
        await scrape(exporter, accept, enc) for accept in ("", OPENMETRICS) for enc in ("", "gzip")
    ]
    again = [
        await scrape(exporter, accept, enc) for accept in ("", OPENMETRICS) for enc in ("", "gzip")
    ]
    # Nothing changed: every scrape got the very body built before, not a new one.
    assert all(a.rendered is f.rendered for a, f in zip(again, first, strict=True))
    fill(exporter, clock, 2)
    packed = await scrape(exporter, "", "gzip")
    assert packed.rendered is not first[1].rendered
    assert gzip.decompress(packed.body) == (await scrape(exporter)).body
    assert (await scrape(exporter)).rendered is (await scrape(exporter)).rendered
    assert (await scrape(exporter, "", "gzip")).rendered is packed.rendered


async def test_concurrent_scrapes_of_one_generation_share_one_build():
    clock = FakeClock()
    exporter = new_exporter(clock, [f"t{i}" for i in range(50)])
    fill(exporter, clock, 1)
    scrapes = await asyncio.gather(*(scrape(exporter, "", "gzip") for _ in range(10)))
    assert len({id(s.rendered) for s in scrapes}) == 1  # one compression, its body shared
    assert gzip.decompress(scrapes[0].body) == (await scrape(exporter)).body


async def test_a_scrape_waits_for_the_build_in_flight_not_for_another():
    clock = FakeClock()
    exporter = new_exporter(clock, [f"t{i}" for i in range(50)])
    fill(exporter, clock, 1)
    first = asyncio.ensure_future(scrape(exporter, "", "gzip"))
    await asyncio.sleep(0)  # the build is in flight
    fill(exporter, clock, 2)  # the store moves on meanwhile
    second = await scrape(exporter, "", "gzip")
    assert second is await first  # it took the build in flight
    third = await scrape(exporter, "", "gzip")
    assert third.generation == exporter.store.generation > second.generation


async def test_a_cancelled_scrape_does_not_cancel_the_build_others_wait_for():
    clock = FakeClock()
    exporter = new_exporter(clock, [f"t{i}" for i in range(50)])
    fill(exporter, clock, 1)
    doomed = asyncio.ensure_future(scrape(exporter, "", "gzip"))
    waiting = asyncio.ensure_future(scrape(exporter, "", "gzip"))
    await asyncio.sleep(0)
    doomed.cancel()
    packed = await waiting
    assert gzip.decompress(packed.body) == (await scrape(exporter)).body


@pytest.mark.parametrize("escaping", ["dots", "values", "allow-utf-8", "underscores"])
async def test_every_escaping_scheme_gets_legacy_names_it_can_read(escaping):
    clock = FakeClock()
    exporter = new_exporter(clock, ['we "ird" \\ ünï'])
    fill(exporter, clock, 1)
    for accept, openmetrics in (
        (f"application/openmetrics-text; version=1.0.0; escaping={escaping}", True),
        (f"text/plain; version=1.0.0; escaping={escaping}", False),
    ):
        got = await scrape(exporter, accept)
        assert got.rendered.body == expected(exporter, openmetrics)
        assert got.body == with_live(exporter, expected(exporter, openmetrics), openmetrics)
        assert "escaping" not in got.content_type  # no escaping: the names are legacy ones


async def test_stale_samples_leave_once_and_the_generation_counts_it_once():
    clock = FakeClock()
    exporter = new_exporter(clock, ["a", "b"])
    fill(exporter, clock, 1)
    store = exporter.store
    store.record(Snapshot("a", "thulium", False, (), clock.time(), 0.1, Reason.TIMEOUT, "timeout"))
    clock.advance(299)
    check_all(exporter)
    before = await scrape(exporter)
    clock.advance(2)
    check_all(exporter)
    after = await scrape(exporter)
    assert RECORDS.encode() + b'{account="a"' not in after.body
    assert after.generation == before.generation + 1
    clock.advance(1000)
    check_all(exporter)
    assert (await scrape(exporter)).rendered is after.rendered  # nothing more went stale


async def test_the_target_states_follow_the_staleness_rule():
    clock = FakeClock()
    exporter = new_exporter(clock, ["a", "b", "c"])
    store = exporter.store

    def rows() -> dict[str, TargetRow]:
        return {row.account: row for row in status_view(exporter).targets}

    assert {row.state for row in rows().values()} == {"pending"}
    fill(exporter, clock, 1)
    assert {row.state for row in rows().values()} == {"up"}
    for name in ("a", "b"):
        store.record(Snapshot(name, "thulium", False, (), clock.time(), 0.1, Reason.AUTH, "no"))
    assert rows()["a"].state == "down"
    assert rows()["a"].series == 2
    assert rows()["a"].consecutive_failures == 1
    clock.advance(301)
    assert rows()["a"].state == "stale"
    assert rows()["a"].series == 0
    assert rows()["c"].state == "up"
    assert RECORDS.encode() + b'{account="a"' not in (await scrape(exporter)).body


def test_a_long_outage_with_new_partial_samples_each_run_holds_only_the_fresh_ones():
    """Each failed run delivers one series under a new label value: the store keeps those
    younger than stale_after (300 s here), not every one ever delivered."""
    clock = FakeClock()
    exporter = new_exporter(clock, ["a"])
    fill(exporter, clock, 1)
    state = exporter.store.targets.get("a").state
    for run in range(200):
        clock.advance(60)
        sample = Sample(RECORDS, (f"campaign-{run}",), float(run))
        exporter.store.record(
            Snapshot("a", "thulium", False, (sample,), clock.time(), 0.1, Reason.TIMEOUT, "t")
        )
    assert len(state.series) <= 300 // 60 + 1
    assert state.status(clock.time(), 300)[0] == "down"


AWKWARD = ["a b", 'x} 1.0 "y"', "line\nbreak", "back\\slash", "юникод ✓", "", " "]


def awkward(name: str, clock: FakeClock, value: float, ok: bool = True, labels=AWKWARD) -> Snapshot:
    samples = [Sample(RECORDS, (label,), value + i) for i, label in enumerate(labels)]
    samples.append(Sample(COMPLETION, (labels[0],), value / 10))
    samples.append(Sample(ACTIVE, (), float(len(labels))))
    return Snapshot(
        target=name,
        provider="thulium",
        ok=ok,
        samples=tuple(samples) if ok else tuple(samples[:2]),
        started_at=clock.time(),
        duration=0.1,
        reason=None if ok else Reason.TIMEOUT,
        error=None if ok else "timed out",
    )


def test_series_rendered_again_keep_their_bytes_for_any_label_value():
    """A series' line is rendered once and reused while it lives; whatever its label values
    hold, every later body is still prometheus_client's."""
    clock = FakeClock()
    exporter = new_exporter(clock, ['acc "one" two', "z"])
    store = exporter.store
    for round_ in range(1, 5):
        store.record(awkward('acc "one" two', clock, 10.0 * round_))
        store.record(awkward("z", clock, -1.5 * round_, labels=AWKWARD[::-1]))
        check_all(exporter)
        clock.advance(30)
    # A failure keeps the series it did not deliver, until they go stale; then a success.
    store.record(awkward('acc "one" two', clock, 7.0, ok=False))
    check_all(exporter)
    clock.advance(301)
    check_all(exporter)
    store.record(awkward('acc "one" two', clock, 8.0, labels=["new one", *AWKWARD]))
    check_all(exporter)


async def test_closing_waits_for_the_build_in_flight():
    clock = FakeClock()
    exporter = new_exporter(clock, [f"t{i}" for i in range(20)])
    fill(exporter, clock, 1)
    pending = asyncio.ensure_future(scrape(exporter, "", "gzip"))
    await asyncio.sleep(0)
    await exporter.exposition.aclose()
    assert pending.done()
    assert (await pending).gzipped


PROCESS_FAMILIES = {
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_cpu_seconds",
    "process_open_fds",
    "process_max_fds",
    "python_gc_collections",
    "python_gc_objects_collected",
    "python_gc_objects_uncollectable",
}


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
@pytest.mark.parametrize("encoding", ["", "gzip"])
async def test_every_answer_is_the_body_then_the_process_families(accept, encoding):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    clock = FakeClock()
    exporter = new_exporter(clock, [f"t{i}" for i in range(30)])
    fill(exporter, clock, 1)
    openmetrics = bool(accept)
    answer = await scrape(exporter, accept, encoding)
    body = answer.body
    if encoding:
        # One gzip member, read to its end: a client that reads a single member gets it all.
        unpacker = zlib.decompressobj(16 + zlib.MAX_WBITS)
        body = unpacker.decompress(body)
        assert unpacker.eof
        assert unpacker.unused_data == b""
    identity = exporter.exposition.body(openmetrics).body
    assert body == with_live(exporter, identity, openmetrics)
    assert sum(len(part) for part in answer.parts) == len(answer.body)
    parse = parse_om if openmetrics else parse_text
    names = [family.name for family in parse(body.decode())]
    assert len(names) == len(set(names))  # every family once
    assert set(names) >= PROCESS_FAMILIES
    assert RECORDS in names
    if openmetrics:
        assert body.endswith(b"\n# EOF\n")
        assert body.count(b"# EOF") == 1


class CountingCollector(Collector):
    """A live family whose value is the number of times it was collected."""

    def __init__(self) -> None:
        self.collected = 0

    def collect(self) -> Iterator[Metric]:
        self.collected += 1
        yield GaugeMetricFamily("test_collected", "collections", value=self.collected)


async def test_the_live_families_are_rendered_again_after_max_age_not_per_scrape():
    from prometheus_client import CollectorRegistry

    from exporter.metrics.exposition import LiveFamilies

    clock = FakeClock()
    exporter = new_exporter(clock, ["a", "b"])
    fill(exporter, clock, 1)
    counting = CountingCollector()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(counting)
    live = LiveFamilies(registry, clock, max_age=1.0)
    exporter.exposition.live = live
    first = await scrape(exporter, "", "gzip")
    assert b"test_collected 1.0" in gzip.decompress(first.body)
    clock.advance(0.5)
    for _ in range(3):
        assert await scrape(exporter, "", "gzip") is first
    assert b"test_collected 1.0" in (await scrape(exporter)).body  # another format: same render
    assert counting.collected == 1
    fill(exporter, clock, 2)  # a new body within max_age: the same families after it
    second = await scrape(exporter, "", "gzip")
    assert second.generation > first.generation
    assert b"test_collected 1.0" in gzip.decompress(second.body)
    assert counting.collected == 1
    clock.advance(0.5)  # max_age since the render: the next scrape renders them again
    third = await scrape(exporter, "", "gzip")
    assert b"test_collected 2.0" in gzip.decompress(third.body)
    assert third.rendered is second.rendered  # the body's gzip was not built again
    clock.advance(-60)  # a clock set back renders them again too
    assert b"test_collected 3.0" in gzip.decompress((await scrape(exporter, "", "gzip")).body)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=5000) | st.text(max_size=3000).map(str.encode),
    tail=st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode),
    level=st.integers(1, 9),
)
def test_gzip_append_adds_to_a_member_without_compressing_it_again(body, tail, level):
    from exporter.metrics.exposition import gzip_append, gzip_body

    member = gzip_body(body, level)
    assert gzip.decompress(member) == body
    appended = gzip_append(member, tail, level)
    assert gzip.decompress(appended) == body + tail
    unpacker = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert unpacker.decompress(appended) == body + tail
    assert unpacker.eof
    assert unpacker.unused_data == b""


def test_the_metrics_reference_lists_every_process_family_served() -> None:
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families as parse_text

    from exporter.service import process_collectors

    text = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text("utf-8")
    section = text[text.index("\n## The process\n") :]
    section = section[: section.index("\n## ", 1)]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    served = {
        sample.name
        for family in parse_text(generate_latest(process_collectors()).decode())
        for sample in family.samples
    }
    assert documented == served
    assert {"process_resident_memory_bytes", "process_start_time_seconds"} <= served
