"""The incremental exposition against prometheus_client rendering the whole registry: the same
bytes after any sequence of collections, failures, staleness, reloads; gzip and OpenMetrics; which
build a scrape gets: the newest complete one when it began within the window, else one that began
after the scrape arrived; background builds after changes."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import pytest
import structlog.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.collect.errors import Reason
from exporter.config import validate_config
from exporter.metrics import exposition as exposition_module
from exporter.metrics.store import Snapshot
from exporter.providers.base import Sample
from exporter.web.app import Exporter, make_exporter
from tests.conftest import FakeClock

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TEXT = "text/plain; version=0.0.4; charset=utf-8"
"""The content type negotiated for a scrape without an Accept header."""
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


def target(name: str, stale_after: float = 300) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "thulium",
        "base_url": "http://127.0.0.1:9/thulium/api",
        "username": "u",
        "password": "p",
        "stale_after": stale_after,
    }


def new_exporter(clock: FakeClock, names: list[str]) -> Exporter:
    config = validate_config({"targets": [target(name) for name in names]})
    return make_exporter(config, clock=clock, autostart=False)


def expected(exporter: Exporter, accept: str = "") -> bytes:
    if accept.startswith("application/openmetrics-text"):
        return bytes(generate_openmetrics(exporter.registry))
    return bytes(generate_latest(exporter.registry))


def body(rendered: Any) -> bytes:
    return gzip.decompress(rendered.body) if rendered.gzipped else bytes(rendered.body)


def check_all(exporter: Exporter) -> None:
    for accept in ("", OPENMETRICS):
        want = expected(exporter, accept)
        for encoding in ("gzip", "identity"):
            got = exporter.exposition.get(accept, encoding)
            assert got.gzipped == (encoding == "gzip")
            assert body(got) == want


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
)
def test_any_history_renders_as_prometheus_client_does(names, ops, monkeypatch):
    monkeypatch.setattr(exposition_module, "GROUP_SIZE", 3)  # many pages, few targets
    clock = FakeClock()
    exporter = new_exporter(clock, names)
    store = exporter.store
    check_all(exporter)
    for op in ops:
        if op[0] == "record":
            _, index, ok, drawn = op
            name = store.targets[index % len(store.targets)].config.name
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
            kept = [t.config for t in store.targets][: op[1] % (len(store.targets) + 1)]
            store.set_targets(
                [*reversed(kept), validate_config({"targets": [target(f"new-{op[1]}")]}).targets[0]]
            )
        else:
            # Requests are observed during a collection; its end is the store's change that
            # shows them (the exposition is as of the latest store change, histogram included).
            exporter.histogram.labels("thulium", "outbounds/stats", op[1]).observe(0.1)
            name = store.targets[0].config.name
            store.record(Snapshot(name, "thulium", True, (), clock.time(), 0.1))
        check_all(exporter)


def fill(exporter: Exporter, clock: FakeClock, round_: int) -> None:
    for index, state in enumerate(exporter.store.targets):
        exporter.store.record(
            Snapshot(
                target=state.config.name,
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


class Monotonic:
    """The exposition's clock (window, interval), moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def timed_exporter(names: list[str]) -> tuple[Exporter, FakeClock, Monotonic]:
    clock, monotonic = FakeClock(), Monotonic()
    exporter = new_exporter(clock, names)
    exporter.exposition.now = monotonic
    return exporter, clock, monotonic


async def settled(exposition: exposition_module.Exposition) -> None:
    """Until no build is in flight or scheduled: a scheduled one is waited for until its timer
    is due, a running one turn by turn."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        builders = list(exposition._builders.values())
        timers = [b.timer for b in builders if b.timer is not None]
        if any(b.running for b in builders) or exposition._tasks:
            await asyncio.sleep(0)
        elif timers:
            await asyncio.sleep(max(0.0, min(t.when() for t in timers) - loop.time()))
        else:
            return
    raise AssertionError("the exposition never settled")


@pytest.mark.parametrize("window", [0, exposition_module.REUSE_WINDOW])
async def test_a_lone_scraper_sees_every_change_made_before_it_asked(window):
    exporter, clock, monotonic = timed_exporter([f"t{i}" for i in range(100)])
    exporter.exposition.reuse_window = window
    for round_ in range(1, 6):
        fill(exporter, clock, round_)
        monotonic.now += 2 * exposition_module.REUSE_WINDOW  # alone: none other in the window
        for accept, encoding in (("", "gzip"), (OPENMETRICS, "gzip"), ("", "identity")):
            got = await exporter.exposition.get_async(accept, encoding)
            assert body(got) == expected(exporter, accept)
    await exporter.exposition.aclose()


async def test_a_scrape_in_the_window_gets_the_newest_build_at_once():
    exporter, clock, monotonic = timed_exporter([f"t{i}" for i in range(50)])
    exposition = exporter.exposition
    fill(exporter, clock, 1)
    first = await exposition.get_async("", "gzip")
    assert body(first) == expected(exporter)
    renders = exposition.renders
    fill(exporter, clock, 2)  # the store changes; the next build is scheduled in the background
    second = expected(exporter)
    monotonic.now += exposition.reuse_window - 0.001
    assert await exposition.get_async("", "gzip") is first  # within the window: no build waited
    assert exposition.renders == renders
    await settled(exposition)  # the background build, nobody waiting for it
    assert exposition.renders == renders + 1
    latest = await exposition.get_async("", "gzip")
    assert body(latest) == second
    assert exposition.renders == renders + 1  # the scrape got the background build's bytes
    await exposition.aclose()


async def test_a_scrape_after_the_window_waits_for_a_build_that_began_after_it_arrived(
    monkeypatch,
):
    monkeypatch.setattr(exposition_module, "SLICE_WEIGHT", 1)  # a build takes many loop turns
    monkeypatch.setattr(exposition_module, "AWAITED_SLICE_WEIGHT", 1)
    exporter, clock, monotonic = timed_exporter([f"t{i}" for i in range(200)])
    exposition = exporter.exposition
    fill(exporter, clock, 1)
    await exposition.get_async("", "gzip")
    monotonic.now += 1
    await asyncio.sleep(0)
    fill(exporter, clock, 2)  # a background build begins at once (a second after the last)
    for _ in range(10):
        await asyncio.sleep(0)
        if any(b.running for b in exposition._builders.values()):
            break
    else:
        raise AssertionError("no background build began")
    fill(exporter, clock, 3)  # the store changes during that build
    third = expected(exporter)
    monotonic.now += 2 * exposition.reuse_window  # the newest build is older than the window
    got = await exposition.get_async("", "gzip")
    assert body(got) == third  # not the one in flight when it came: it lacks round 3
    await exposition.aclose()


async def test_no_scrape_gets_the_old_target_list_after_a_reload(monkeypatch):
    monkeypatch.setattr(exposition_module, "SLICE_WEIGHT", 1)
    exporter, clock, _ = timed_exporter([f"t{i}" for i in range(50)])
    exposition = exporter.exposition
    fill(exporter, clock, 1)
    await exposition.get_async("", "gzip")
    fill(exporter, clock, 2)
    await asyncio.sleep(0)  # a background build of the old list is in flight
    kept = [state.config for state in exporter.store.targets][:10]
    exporter.store.set_targets(kept)
    after = await exposition.get_async("", "gzip")  # within the window of the last build
    assert body(after) == expected(exporter)
    exporter.store.reloaded(ok=False)
    failed = await exposition.get_async("", "gzip")  # the reload's outcome: never reused bytes
    assert body(failed) == expected(exporter)
    assert b"messaging_exporter_config_last_reload_successful 0.0" in body(failed)
    await exposition.aclose()


@pytest.mark.parametrize("sliced", [False, True], ids=["at-once", "sliced"])
async def test_a_failed_build_fails_its_scrapes_once_and_the_next_scrape_builds_again(
    monkeypatch, sliced
):
    if sliced:  # every build in slices, the scrapes waiting for one
        monkeypatch.setattr(exposition_module, "AWAITED_SLICE_WEIGHT", 0)
    exporter, clock, _ = timed_exporter(["a", "b"])
    fill(exporter, clock, 1)
    original = exposition_module._GzipJob._steps
    calls = 0

    def broken(self: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        return original(self)

    monkeypatch.setattr(exposition_module._GzipJob, "_steps", broken)
    with structlog.testing.capture_logs() as logs:
        failed = await asyncio.gather(
            *(exporter.exposition.get_async("", "gzip") for _ in range(3)), return_exceptions=True
        )
        got = await exporter.exposition.get_async("", "gzip")
    # At once, the scrapes come one after the other: the first fails, the second builds again.
    # In slices, all three waited for the one build that failed. None retries on its own.
    errors = [isinstance(f, RuntimeError) for f in failed]
    assert errors == ([True] * 3 if sliced else [True, False, False])
    assert body(got) == expected(exporter)
    assert calls == 2
    assert [e["event"] for e in logs] == ["exposition build failed"]
    await exporter.exposition.aclose()


async def test_background_builds_only_for_a_content_type_still_scraped():
    exporter, clock, monotonic = timed_exporter([f"t{i}" for i in range(20)])
    exposition = exporter.exposition
    fill(exporter, clock, 1)
    assert not exposition._builders  # never scraped: a change schedules nothing
    await exposition.get_async("", "gzip")
    fill(exporter, clock, 2)
    assert exposition._builders[TEXT].timer is not None
    await settled(exposition)
    monotonic.now += exposition_module.ACTIVE_FOR + 1
    renders = exposition.renders
    fill(exporter, clock, 3)
    await settled(exposition)
    assert exposition.renders == renders  # not scraped for ten minutes: no background build
    await exposition.aclose()


async def test_closing_cancels_the_scheduled_build():
    exporter, clock, _ = timed_exporter([f"t{i}" for i in range(50)])
    exposition = exporter.exposition
    fill(exporter, clock, 1)
    await exposition.get_async("", "gzip")
    fill(exporter, clock, 2)  # within the interval of the last build: scheduled, not started
    builder = exposition._builders[TEXT]
    assert builder.timer is not None
    await exposition.aclose()
    assert builder.timer is None
    assert not exposition._tasks
    fill(exporter, clock, 3)
    assert builder.timer is None  # closed: changes schedule nothing


async def test_concurrent_scrapes_of_one_generation_share_one_build():
    clock = FakeClock()
    exporter = new_exporter(clock, [f"t{i}" for i in range(50)])
    fill(exporter, clock, 1)
    renders = exporter.exposition.renders
    scrapes = await asyncio.gather(*(exporter.exposition.get_async("", "gzip") for _ in range(10)))
    assert len({id(s.body) for s in scrapes}) == 1
    assert exporter.exposition.renders == renders + 1


@pytest.mark.parametrize("escaping", ["dots", "values", "allow-utf-8", "underscores"])
async def test_every_escaping_scheme_matches_prometheus_client(escaping):
    from prometheus_client.exposition import choose_encoder

    clock = FakeClock()
    exporter = new_exporter(clock, ['we "ird" \\ ünï'])
    fill(exporter, clock, 1)
    for accept in (
        f"application/openmetrics-text; version=1.0.0; escaping={escaping}",
        f"text/plain; version=1.0.0; escaping={escaping}",
    ):
        encoder, content_type = choose_encoder(accept)
        for encoding in ("gzip", "identity"):
            got = await exporter.exposition.get_async(accept, encoding)
            assert got.content_type == content_type
            assert body(got) == encoder(exporter.registry)


async def test_stale_samples_leave_once_and_the_generation_counts_it_once():
    clock = FakeClock()
    exporter = new_exporter(clock, ["a", "b"])
    fill(exporter, clock, 1)
    store = exporter.store
    store.record(Snapshot("a", "thulium", False, (), clock.time(), 0.1, Reason.TIMEOUT, "timeout"))
    clock.advance(299)
    check_all(exporter)
    generation = store.generation
    clock.advance(2)
    check_all(exporter)
    assert RECORDS.encode() + b'{account="a"' not in body(exporter.exposition.get("", ""))
    assert store.generation == generation + 1
    clock.advance(1000)
    check_all(exporter)
    assert store.generation == generation + 1  # nothing more went stale: nothing re-rendered


async def test_a_failed_background_build_stops_them_until_a_build_works(monkeypatch):
    exporter, clock, _ = timed_exporter([f"t{i}" for i in range(20)])
    exposition = exporter.exposition
    fill(exporter, clock, 1)
    await exposition.get_async("", "gzip")
    original = exposition_module._GzipJob._steps

    def broken(self: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(exposition_module._GzipJob, "_steps", broken)
    with structlog.testing.capture_logs() as logs:
        fill(exporter, clock, 2)
        await settled(exposition)
        fill(exporter, clock, 3)  # no second try in the background: it would log at every change
        await settled(exposition)
    assert [e["event"] for e in logs] == ["exposition build failed"]
    monkeypatch.setattr(exposition_module._GzipJob, "_steps", original)
    exposition.now = lambda: 2000.0  # the newest build is old: the scrape builds its own
    assert body(await exposition.get_async("", "gzip")) == expected(exporter)
    fill(exporter, clock, 4)  # and background builds are back
    assert exposition._builders[TEXT].timer is not None
    await exposition.aclose()


async def test_background_builds_come_fast_for_a_stream_of_scrapes_else_when_quiet():
    exporter, clock, monotonic = timed_exporter([f"t{i}" for i in range(20)])
    exposition = exporter.exposition
    loop = asyncio.get_running_loop()
    fill(exporter, clock, 1)
    await exposition.get_async("", "gzip")
    builder = exposition._builders[TEXT]
    fill(exporter, clock, 2)  # scraped just now: the next build within the fast interval
    assert builder.timer is not None
    assert builder.timer.when() - loop.time() == pytest.approx(
        exposition_module.REBUILD_INTERVAL, abs=0.02
    )
    await settled(exposition)
    monotonic.now += 5  # then no scrape for 5 s, as between two of Prometheus's
    fill(exporter, clock, 3)  # the last build is over a second old: the next one at once
    assert builder.due <= monotonic.now
    await settled(exposition)
    built_at = monotonic.now
    assert body(builder.latest) == expected(exporter)
    fill(exporter, clock, 4)  # then once the store has been quiet for a while
    assert builder.due == monotonic.now + exposition_module.QUIET
    monotonic.now += exposition_module.IDLE_REBUILD_INTERVAL / 2
    fill(exporter, clock, 5)  # changes keep coming: the build waits for quiet ...
    assert builder.due == monotonic.now + exposition_module.QUIET
    monotonic.now += exposition_module.IDLE_REBUILD_INTERVAL / 2 - exposition_module.QUIET / 2
    fill(exporter, clock, 6)  # ... but no longer than the idle interval after the last one
    assert builder.due == built_at + exposition_module.IDLE_REBUILD_INTERVAL
    await settled(exposition)
    assert body(builder.latest) == expected(exporter)
    await exposition.aclose()
