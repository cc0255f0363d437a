"""Altcraft end to end: the simulated Altcraft and the exporter on loopback sockets, scraped over
HTTP. Tasks advance one step per poll here (three polls to complete) and the targets poll every
10 ms, so no test waits on wall time except for the deadline cases."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import structlog

from exporter import simulator
from exporter.providers.altcraft import Altcraft
from exporter.simulator import altcraft as sim_altcraft
from exporter.simulator.altcraft import AltcraftState, Database, Resource
from tests.conftest import labels, series

SUBSCRIPTIONS = "altcraft_resource_subscriptions"
SENDABLE = "altcraft_resource_sendable_subscriptions"
PROFILES = "altcraft_resource_profiles"
UPDATED = "altcraft_resource_counters_updated_timestamp_seconds"
DURATION = "altcraft_resource_count_duration_seconds"
SEGMENT_SENDABLE = "altcraft_segment_sendable_subscriptions"
SEGMENT_UPDATED = "altcraft_segment_counters_updated_timestamp_seconds"
SPEC_METRICS = (SUBSCRIPTIONS, SENDABLE, PROFILES, UPDATED, DURATION, SEGMENT_SENDABLE)
SPEC_METRICS += (SEGMENT_UPDATED,)
SUCCESS = "messaging_exporter_collect_success"
ERRORS = "messaging_exporter_collect_errors_total"
PROD = "altcraft-prod"
MEDIA = "altcraft-media"
PROD_TOKEN = "demo-altcraft-prod-token"
INTERVAL = 60.0


def altcraft(sim: simulator.Simulator) -> AltcraftState:
    state: AltcraftState = sim.state["altcraft"]
    return state


def targets(sim_url: str, sim: simulator.Simulator, **extra: Any) -> list[dict[str, Any]]:
    return [
        {**target, "task_poll_interval": "0.01s", **extra}
        for target in sim_altcraft.SIMULATOR_PART().demo_targets(sim_url, sim)
    ]


async def start(harness, make_config, clock, config_targets, **defaults: Any):
    """An exporter whose runs carry the fake ``clock``."""
    return await harness(make_config(config_targets, defaults={"interval": "60s", **defaults}))


def providers(h) -> dict[str, Altcraft]:
    return {
        target.name: target.runner.provider
        for target in h.exporter.targets
        if target.runner is not None and isinstance(target.runner.provider, Altcraft)
    }


def requests(sim, account: str, method: str) -> list[Any]:
    return [r for r in sim.received("altcraft", account) if r.path.endswith(f"/{method}")]


def refreshes(sim, account: str, kind: str, object_id: int) -> int:
    return sum(
        1
        for r in requests(sim, account, f"{kind}s/refresh_counters")
        if r.body.get("id") == object_id
    )


def errors_of(scraped, account: str) -> dict[str, float]:
    return {
        dict(key)["reason"]: value
        for key, value in series(scraped, ERRORS).items()
        if ("account", account) in key
    }


def of_account(scraped, account: str, prefix: str = "altcraft_") -> dict[Any, float]:
    return {
        key: value
        for key, value in scraped.items()
        if key[0].startswith(prefix) and ("account", account) in key[1]
    }


def resource_24() -> dict[Any, float]:
    """Resource 24, list 1 of the demo account: the resource page's example."""
    base = {"account": PROD, "resource_id": "24", "list_id": "1"}
    expected: dict[Any, float] = {}
    for channel in ("sms", "push", "email"):
        expected[(PROFILES, labels(**base, channel=channel))] = 1336
        for status in ("complained", "hardbounced", "invalid", "subscribed", "suspended"):
            expected[(SUBSCRIPTIONS, labels(**base, channel=channel, status=status))] = 0
        for status in ("unconfirmed", "unsubscribed"):
            expected[(SUBSCRIPTIONS, labels(**base, channel=channel, status=status))] = 0
        for status in ("subscribed", "unconfirmed"):
            expected[(SENDABLE, labels(**base, channel=channel, status=status))] = 0
    expected[(SUBSCRIPTIONS, labels(**base, channel="email", status="hardbounced"))] = 434
    expected[(SUBSCRIPTIONS, labels(**base, channel="email", status="subscribed"))] = 842
    expected[(SUBSCRIPTIONS, labels(**base, channel="email", status="unsubscribed"))] = 60
    expected[(SENDABLE, labels(**base, channel="email", status="subscribed"))] = 842
    expected[(UPDATED, labels(**base))] = 1713533468.927
    expected[(DURATION, labels(**base))] = 0.231374251
    return expected


def segment_7() -> dict[Any, float]:
    base = {"account": PROD, "segment_id": "7", "resource_id": "24", "list_id": "1"}
    return {
        (SEGMENT_SENDABLE, labels(**base, channel="email", status="subscribed")): 209,
        (SEGMENT_SENDABLE, labels(**base, channel="email", status="unconfirmed")): 0,
        (SEGMENT_SENDABLE, labels(**base, channel="push", status="subscribed")): 0,
        (SEGMENT_SENDABLE, labels(**base, channel="push", status="unconfirmed")): 0,
        (SEGMENT_SENDABLE, labels(**base, channel="sms", status="subscribed")): 0,
        (SEGMENT_SENDABLE, labels(**base, channel="sms", status="unconfirmed")): 0,
        (SEGMENT_UPDATED, labels(**base)): 1713605401.583,
    }


def only(scraped, wanted: dict[Any, float]) -> dict[Any, float]:
    """The scraped samples among the series of ``wanted``'s objects."""
    return {key: scraped[key] for key in wanted if key in scraped}


def has_object(scraped, metric: str, **object_labels: str) -> bool:
    wanted = set(object_labels.items())
    return any(name == metric and wanted <= set(key) for name, key in scraped)


# -- values ----------------------------------------------------------------------------------------


async def test_demo_values_are_served_exactly(sim, sim_url, harness, make_config, clock):
    h = await start(harness, make_config, clock, targets(sim_url, sim))
    await h.collect()
    scraped = await h.scrape()
    assert only(scraped, resource_24()) == resource_24()
    assert only(scraped, segment_7()) == segment_7()
    # Resource 27: a channel and a counter the spec does not list pass through; a counter that is
    # not reported (telegram has no "suspended") is absent, not 0.
    shop = {"account": PROD, "resource_id": "27", "list_id": "1"}
    assert scraped[(SUBSCRIPTIONS, labels(**shop, channel="telegram", status="blocked"))] == 4
    assert (SUBSCRIPTIONS, labels(**shop, channel="telegram", status="suspended")) not in scraped
    assert scraped[(SUBSCRIPTIONS, labels(**shop, channel="email", status="subscribed"))] == 4800
    assert scraped[(SENDABLE, labels(**shop, channel="email", status="subscribed"))] == 4711
    assert scraped[(SENDABLE, labels(**shop, channel="email", status="unconfirmed"))] == 70
    assert scraped[(DURATION, labels(**shop))] == 123.5  # "2m3.5s"
    # Every metric of the spec, for both accounts, and nothing else of Altcraft's.
    for account in (PROD, MEDIA):
        names = {name for name, _ in of_account(scraped, account)}
        assert names == set(SPEC_METRICS), account
    assert series(scraped, SUCCESS) == {
        labels(provider="altcraft", account=PROD): 1,
        labels(provider="altcraft", account=MEDIA): 1,
    }
    assert set(errors_of(scraped, PROD).values()) == {0}
    assert len(of_account(scraped, PROD)) == 32 + 42 + 7 + 5  # 2 resources, 2 segments
    assert not any(name.endswith("_created") for name, _ in scraped)
    text = await h.scrape_text()
    assert PROD_TOKEN not in text


async def test_requests_carry_the_token_in_the_body_only(sim, sim_url, harness, make_config, clock):
    h = await start(harness, make_config, clock, targets(sim_url, sim))
    await h.collect()
    received = sim.received("altcraft", "prod")
    assert {r.method for r in received} == {"POST"}
    for r in received:
        assert r.body["token"] == PROD_TOKEN
        assert PROD_TOKEN not in r.path + str(r.query) + str(r.headers)
    bodies = [r.body for r in requests(sim, "prod", "resources/refresh_counters")]
    assert sorted(bodies, key=lambda b: b["id"]) == [
        {"token": PROD_TOKEN, "id": 24, "list_id": 1},
        {"token": PROD_TOKEN, "id": 27, "list_id": 1},
    ]
    bodies = [r.body for r in requests(sim, "prod", "segments/refresh_counters")]
    assert sorted(bodies, key=lambda b: b["id"]) == [
        {"token": PROD_TOKEN, "db_id": 1, "resource_id": 24, "id": 7},
        {"token": PROD_TOKEN, "db_id": 1, "resource_id": 27, "id": 12},
    ]
    # Each task was polled until it completed: two "processing" answers, then "completed".
    polls = Counter(r.body["task_id"] for r in requests(sim, "prod", "tasks/status"))
    assert sorted(polls.values()) == [3, 3, 3, 3]
    assert set(polls) == set(altcraft(sim).tasks) & set(polls)
    scraped = await h.scrape()
    histogram = series(scraped, "messaging_exporter_provider_request_duration_seconds_count")
    assert {dict(key)["endpoint"] for key in histogram} == {
        "resources/refresh_counters",
        "segments/refresh_counters",
        "tasks/status",
        "resources/list",
        "resources/get",
    }


async def test_a_refresh_at_most_once_per_interval(sim, sim_url, harness, make_config, clock):
    h = await start(harness, make_config, clock, targets(sim_url, sim))
    await h.collect()
    state = altcraft(sim)
    state.accounts["prod"].segments[7].counts["email"]["subscribed_sendable"] = 300
    clock.advance(INTERVAL / 2)
    await h.collect()  # a run off the grid: the last count stands, nothing is started
    scraped = await h.scrape()
    assert refreshes(sim, "prod", "segment", 7) == 1
    assert refreshes(sim, "prod", "resource", 24) == 1
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 1
    email = {"account": PROD, "segment_id": "7", "resource_id": "24", "list_id": "1"}
    key = (SEGMENT_SENDABLE, labels(**email, channel="email", status="subscribed"))
    assert scraped[key] == 209
    clock.advance(INTERVAL / 2)
    await h.collect()
    scraped = await h.scrape()
    assert refreshes(sim, "prod", "segment", 7) == 2
    assert refreshes(sim, "prod", "resource", 24) == 2
    assert scraped[key] == 300


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason", "refreshes_after_recovery"),
    [
        # The task is gone or over: the next run starts a new one.
        ("task_unknown", "provider_error", 2),
        ("task_error", "provider_error", 2),
        ("empty_result", "parse", 2),
        # The task still runs: the next run polls the same task, never starts a second one.
        ("task_never_completes", "timeout", 1),
    ],
)
async def test_a_failing_object_spares_the_others(
    sim, sim_url, harness, make_config, clock, fault, reason, refreshes_after_recovery
):
    h = await start(harness, make_config, clock, targets(sim_url, sim), timeout="0.3s")
    altcraft(sim).object_faults[("prod", "resource", 27)] = fault
    with structlog.testing.capture_logs() as logs:
        await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 0
    errors = errors_of(scraped, PROD)
    assert errors[reason] == 1
    assert sum(errors.values()) == 1
    # The other objects of the target are delivered, fresh; the failed one has nothing yet.
    assert only(scraped, resource_24()) == resource_24()
    assert only(scraped, segment_7()) == segment_7()
    assert not has_object(scraped, PROFILES, resource_id="27")
    assert has_object(scraped, SEGMENT_SENDABLE, segment_id="12")
    # The other target is untouched.
    assert scraped[(SUCCESS, labels(provider="altcraft", account=MEDIA))] == 1
    assert set(errors_of(scraped, MEDIA).values()) == {0}
    failed = [e for e in logs if e["event"] == "altcraft object failed"]
    assert [(e["account"], e["object"], e["reason"]) for e in failed] == [
        (PROD, "resource 27 list_id 1", reason)
    ]
    assert PROD_TOKEN not in str(logs)
    # Recovery at the next run.
    del altcraft(sim).object_faults[("prod", "resource", 27)]
    clock.advance(INTERVAL)
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 1
    assert has_object(scraped, PROFILES, resource_id="27")
    assert refreshes(sim, "prod", "resource", 27) == refreshes_after_recovery
    assert refreshes(sim, "prod", "resource", 24) == 2


async def test_a_task_that_never_completes_is_polled_across_runs_never_restarted(
    sim, sim_url, harness, make_config, clock
):
    h = await start(harness, make_config, clock, targets(sim_url, sim), timeout="0.3s")
    altcraft(sim).object_faults[("prod", "segment", 7)] = "task_never_completes"
    for run in (1, 2):
        await h.collect()
        scraped = await h.scrape()
        assert errors_of(scraped, PROD)["timeout"] == run
        assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 0
        assert refreshes(sim, "prod", "segment", 7) == 1
        assert refreshes(sim, "prod", "resource", 24) == run
        clock.advance(INTERVAL)
    snapshot = next(iter(h.exporter.targets)).state.latest
    assert snapshot is not None
    assert snapshot.reason == "timeout"
    assert "still processing at 42%" in (snapshot.error or "")
    del altcraft(sim).object_faults[("prod", "segment", 7)]
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 1
    assert only(scraped, segment_7()) == segment_7()
    assert refreshes(sim, "prod", "segment", 7) == 1
    task_ids = {
        r.body["task_id"]
        for r in requests(sim, "prod", "tasks/status")
        if altcraft(sim).tasks[r.body["task_id"]].object_id == 7
    }
    assert len(task_ids) == 1


def segment_7_task_ids(sim) -> list[str]:
    """The task ids of segment 7's refreshes, in the order they were polled first."""
    ids: dict[str, None] = {}
    for r in requests(sim, "prod", "tasks/status"):
        if altcraft(sim).tasks[r.body["task_id"]].object_id == 7:
            ids[r.body["task_id"]] = None
    return list(ids)


@pytest.mark.parametrize(
    ("task_max_age", "max_age_seconds"),
    [
        (None, 3600.0),  # the default: the larger of 1h and 3 x interval (60 s)
        ("5m", 300.0),
    ],
)
async def test_a_task_older_than_task_max_age_is_abandoned_and_a_new_one_started(
    sim, sim_url, harness, make_config, clock, task_max_age, max_age_seconds
):
    extra = {} if task_max_age is None else {"task_max_age": task_max_age}
    h = await start(harness, make_config, clock, targets(sim_url, sim, **extra), timeout="0.3s")
    altcraft(sim).object_faults[("prod", "segment", 7)] = "task_never_completes"
    await h.collect()  # the refresh starts; its task never completes
    (first_task,) = segment_7_task_ids(sim)

    # Just younger than task_max_age: polled again, not abandoned, never restarted.
    clock.advance(max_age_seconds - 1)
    with structlog.testing.capture_logs() as logs:
        await h.collect()
    assert not [e for e in logs if e["event"] == "altcraft task abandoned"]
    assert refreshes(sim, "prod", "segment", 7) == 1
    assert errors_of(await h.scrape(), PROD)["timeout"] == 2

    # task_max_age after its start: polled once more, then abandoned; this run fails.
    clock.advance(1)
    polls_before = len(requests(sim, "prod", "tasks/status"))
    with structlog.testing.capture_logs() as logs:
        await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 0
    assert errors_of(scraped, PROD)["timeout"] == 3
    assert refreshes(sim, "prod", "segment", 7) == 1  # the new one waits for the next run
    assert len(requests(sim, "prod", "tasks/status")) > polls_before
    (abandoned,) = [e for e in logs if e["event"] == "altcraft task abandoned"]
    assert abandoned["log_level"] == "warning"
    assert abandoned["provider"] == "altcraft"
    assert abandoned["account"] == PROD
    assert abandoned["task_id"] == first_task
    assert abandoned["age_seconds"] == max_age_seconds
    assert abandoned["task_max_age_seconds"] == max_age_seconds
    assert PROD_TOKEN not in str(logs)
    snapshot = next(iter(h.exporter.targets)).state.latest
    assert snapshot is not None
    assert snapshot.reason == "timeout"
    assert f"task {first_task} still processing at 42%" in (snapshot.error or "")
    assert "abandoned" in (snapshot.error or "")
    # The other objects of the target are delivered as usual.
    assert only(scraped, resource_24()) == resource_24()

    # The next run starts a new recount, which completes once Altcraft works again.
    polls_before = len(requests(sim, "prod", "tasks/status"))
    clock.advance(INTERVAL)
    del altcraft(sim).object_faults[("prod", "segment", 7)]
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 1
    assert refreshes(sim, "prod", "segment", 7) == 2
    assert segment_7_task_ids(sim)[0] == first_task
    assert len(segment_7_task_ids(sim)) == 2
    assert only(scraped, segment_7()) == segment_7()
    # The abandoned task is never polled again.
    later_polls = [r.body["task_id"] for r in requests(sim, "prod", "tasks/status")[polls_before:]]
    assert later_polls
    assert first_task not in later_polls


async def test_a_reload_that_changes_the_target_keeps_its_running_task(
    sim, sim_url, harness, make_config, clock
):
    h = await start(harness, make_config, clock, targets(sim_url, sim), timeout="0.3s")
    altcraft(sim).object_faults[("prod", "segment", 7)] = "task_never_completes"
    await h.collect()
    before = providers(h)[PROD]
    changed = targets(sim_url, sim, task_poll_interval="0.02s")
    h.exporter.apply(make_config(changed, defaults={"interval": "60s", "timeout": "0.3s"}))
    assert providers(h)[PROD] is not before  # a new provider, which inherited the state
    del altcraft(sim).object_faults[("prod", "segment", 7)]
    await h.collect()  # within the interval: only the running task is polled
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 1
    assert only(scraped, segment_7()) == segment_7()
    assert refreshes(sim, "prod", "segment", 7) == 1
    assert refreshes(sim, "prod", "resource", 24) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("auth", "auth"),
        ("http_500_html", "http_5xx"),
        ("http_503", "http_5xx"),
        ("malformed_json", "parse"),
        ("wrong_shape", "parse"),
        ("strings_for_numbers", "parse"),
        ("huge_body", "parse"),
        ("reset", "connection"),
        ("rate_limited", "rate_limited"),
        ("hang", "timeout"),
    ],
)
async def test_each_account_fault_gives_its_reason_and_spares_the_other_account(
    sim, sim_url, harness, make_config, clock, fault, reason
):
    config_targets = targets(sim_url, sim)
    if fault == "hang":
        # Only the hang is meant to meet the deadline: the other faults, and the other account,
        # keep the default timeout, which retries and a loaded machine cannot reach.
        next(target for target in config_targets if target["name"] == PROD)["timeout"] = "0.4s"
    h = await start(harness, make_config, clock, config_targets, max_response_bytes=1_048_576)
    # Retry-After past the deadline: a 429 is not retried.
    sim.set_fault("altcraft", "prod", simulator.Fault(fault, retry_after="3600"))
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 0
    errors = errors_of(scraped, PROD)
    assert errors[reason] == 1
    assert sum(errors.values()) == 1
    assert not of_account(scraped, PROD)
    assert scraped[(SUCCESS, labels(provider="altcraft", account=MEDIA))] == 1
    assert has_object(scraped, PROFILES, account=MEDIA, resource_id="8")
    # A refresh is never retried once Altcraft may have seen it.
    assert len(requests(sim, "prod", "resources/refresh_counters")) <= 2


async def test_a_wrong_token_is_reason_auth(sim, sim_url, harness, make_config, clock):
    config_targets = targets(sim_url, sim)
    config_targets[0]["token"] = "not-the-token"
    h = await start(harness, make_config, clock, config_targets)
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, PROD)["auth"] == 1
    assert sum(errors_of(scraped, PROD).values()) == 1
    snapshot = next(iter(h.exporter.targets)).state.latest
    assert snapshot is not None
    assert "Altcraft error 401: Invalid token" in (snapshot.error or "")
    assert "not-the-token" not in (snapshot.error or "")


async def test_a_failed_object_keeps_its_last_good_values(
    sim, sim_url, harness, make_config, clock
):
    h = await start(harness, make_config, clock, targets(sim_url, sim))
    await h.collect()
    state = altcraft(sim)
    state.accounts["prod"].resources[24].dbs[1].counts["email"]["subscribed"] = 900
    state.object_faults[("prod", "resource", 27)] = "task_error"
    clock.advance(INTERVAL)
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=PROD))] == 0
    base = {"account": PROD, "list_id": "1"}
    fresh = (SUBSCRIPTIONS, labels(**base, resource_id="24", channel="email", status="subscribed"))
    assert scraped[fresh] == 900
    kept = (SUBSCRIPTIONS, labels(**base, resource_id="27", channel="email", status="subscribed"))
    assert scraped[kept] == 4800


async def test_error_texts_never_carry_the_token(sim, sim_url, harness, make_config, clock):
    altcraft(sim).method_errors[("prod", "segments/refresh_counters")] = (
        500,
        f"internal error handling request with token {PROD_TOKEN}",
    )
    h = await start(harness, make_config, clock, targets(sim_url, sim))
    with structlog.testing.capture_logs() as logs:
        await h.collect()
    snapshot = next(iter(h.exporter.targets)).state.latest
    assert snapshot is not None
    assert snapshot.reason == "provider_error"
    assert "token <redacted>" in (snapshot.error or "")
    assert PROD_TOKEN not in str(logs) + (snapshot.error or "")
    assert PROD_TOKEN not in await h.scrape_text()
    landing = await h.client.get("/")
    assert PROD_TOKEN not in await landing.text()


# -- discovery -------------------------------------------------------------------------------------


def media_pairs(scraped) -> set[tuple[str, str]]:
    return {
        (dict(key)["resource_id"], dict(key)["list_id"])
        for key in series(scraped, PROFILES)
        if ("account", MEDIA) in key
    }


async def test_discovery_finds_every_resource_database_pair(
    sim, sim_url, harness, make_config, clock
):
    h = await start(harness, make_config, clock, targets(sim_url, sim))
    await h.collect()
    scraped = await h.scrape()
    assert media_pairs(scraped) == {("3", "1"), ("3", "2"), ("8", "4"), ("11", "1")}
    # Two pages of two resources; resource 5 has no database.
    pages = [r.body["from_id"] for r in requests(sim, "media", "resources/list")]
    assert pages == [1, 6]
    looked_up = sorted(r.body["id"] for r in requests(sim, "media", "resources/get"))
    assert looked_up == [3, 5, 8, 11]
    assert scraped[(SUCCESS, labels(provider="altcraft", account=MEDIA))] == 1
    segment = {"account": MEDIA, "segment_id": "4", "resource_id": "8", "list_id": "4"}
    key = (SEGMENT_SENDABLE, labels(**segment, channel="push", status="subscribed"))
    assert scraped[key] == 1200
    duration = {"account": MEDIA, "list_id": "2", "resource_id": "3"}
    assert scraped[(DURATION, labels(**duration))] == 0.0000125  # "12.5μs"
    # A resource added on the Altcraft side appears once discovery_interval has passed.
    altcraft(sim).accounts["media"].resources[20] = Resource(
        20,
        "Late",
        ["email"],
        {1: Database({"email": {"all": 5}}, "2024-06-01T00:00:00.000Z", "1s")},
    )
    clock.advance(INTERVAL)
    await h.collect()
    assert len(requests(sim, "media", "resources/list")) == 2
    assert media_pairs(await h.scrape()) == {("3", "1"), ("3", "2"), ("8", "4"), ("11", "1")}
    clock.advance(3600)
    await h.collect()
    assert len(requests(sim, "media", "resources/list")) == 5  # pages from 1, 6, 12
    scraped = await h.scrape()
    assert ("20", "1") in media_pairs(scraped)
    assert scraped[(SUCCESS, labels(provider="altcraft", account=MEDIA))] == 1


async def test_a_failed_discovery_keeps_collecting_what_it_knows(
    sim, sim_url, harness, make_config, clock
):
    h = await start(harness, make_config, clock, targets(sim_url, sim))
    await h.collect()
    altcraft(sim).method_errors[("media", "resources/list")] = (500, "Internal error")
    altcraft(sim).accounts["media"].resources[8].dbs[4].counts["push"]["all"] = 3100
    clock.advance(3600)
    await h.collect()
    scraped = await h.scrape()
    assert scraped[(SUCCESS, labels(provider="altcraft", account=MEDIA))] == 0
    assert errors_of(scraped, MEDIA)["provider_error"] == 1
    assert media_pairs(scraped) == {("3", "1"), ("3", "2"), ("8", "4"), ("11", "1")}
    key = (PROFILES, labels(account=MEDIA, resource_id="8", list_id="4", channel="push"))
    assert scraped[key] == 3100  # collected with the last good list


async def test_a_first_discovery_that_fails_still_collects_the_segments(
    sim, sim_url, harness, make_config, clock
):
    altcraft(sim).method_errors[("media", "resources/get")] = (403, "Access denied")
    h = await start(harness, make_config, clock, targets(sim_url, sim))
    await h.collect()
    scraped = await h.scrape()
    assert errors_of(scraped, MEDIA)["auth"] == 1
    assert media_pairs(scraped) == set()
    assert has_object(scraped, SEGMENT_SENDABLE, account=MEDIA, segment_id="4")
    # The next run lists again, without waiting for discovery_interval.
    del altcraft(sim).method_errors[("media", "resources/get")]
    clock.advance(INTERVAL)
    await h.collect()
    assert len(media_pairs(await h.scrape())) == 4


# -- the simulator ---------------------------------------------------------------------------------


async def test_simulated_task_lifecycle(sim, sim_url):
    import aiohttp

    api = f"{sim_url}/altcraft/prod/api/v1.1"
    async with aiohttp.ClientSession() as session:

        async def call(method: str, **body: Any) -> Any:
            async with session.post(f"{api}/{method}", json={"token": PROD_TOKEN, **body}) as r:
                assert r.status == 200
                return await r.json()

        orders = set()
        for _ in range(6):
            started = await call("resources/refresh_counters", id=24, list_id=1)
            task_id = started["data"]["task_id"]
            answers = [(await call("tasks/status", task_id=task_id))["data"] for _ in range(3)]
            assert [(a["status"], a["progress"]) for a in answers] == [
                ("processing", 33),
                ("processing", 66),
                ("completed", 100),
            ]
            orders.add(tuple(c["channel"] for c in answers[2]["result"][0]["channels"]))
        assert len(orders) > 1  # channels come in any order
        started = await call("segments/refresh_counters", id=7, resource_id=24, db_id=1)
        for _ in range(3):
            answer = await call("tasks/status", task_id=started["data"]["task_id"])
        (segment_record,) = answer["data"]["result"]
        assert segment_record["resource_id"] == 24
        assert all(
            counter.endswith("_sendable")
            for channel in segment_record["channels"]
            for counter in channel["status"]
        )
        unknown = await call("tasks/status", task_id="no-such-task")
        assert (unknown["error"], unknown["error_text"]) == (404, "Task not found")
        async with session.post(
            f"{api}/resources/list", json={"token": "wrong", "from_id": 1}
        ) as response:
            assert response.status == 200
            assert (await response.json())["error"] == 401
