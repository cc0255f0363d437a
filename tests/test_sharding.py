"""Sharding: rendezvous hashing puts every target on exactly one shard and moves few on a resize;
two shards over the same config together equal one unsharded exporter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import simulator
from exporter.collect.sharding import ordinal_from_hostname, shard_of, split
from exporter.config import ConfigError, Sharding, validate_config
from tests.conftest import parse_exposition

names = st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=60, unique=True)


# Both hash every name once per shard and count, thousands of times an example: slow by nature,
# so no deadline (hypothesis's default one fails an example that a loaded machine slows down).
@settings(deadline=None)
@given(names, st.integers(min_value=1, max_value=16))
def test_every_target_lands_on_exactly_one_shard(targets: list[str], count: int) -> None:
    owners = [
        [index for index in range(count) if shard_of(name, count) == index] for name in targets
    ]
    assert all(len(owner) == 1 for owner in owners)
    shares = [split(targets, targets, Sharding(index=i, count=count))[0] for i in range(count)]
    assert sorted(name for share in shares for name in share) == sorted(targets)


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=15))
def test_growing_from_n_to_n_plus_1_moves_about_one_in_n_plus_1(count: int) -> None:
    targets = [f"account-{i}" for i in range(2000)]
    moved = sum(1 for name in targets if shard_of(name, count) != shard_of(name, count + 1))
    expected = len(targets) / (count + 1)
    assert moved <= expected * 1.15 + 20
    # Every target that moved went to the new shard: none shuffled between old ones.
    assert all(
        shard_of(name, count + 1) == count
        for name in targets
        if shard_of(name, count) != shard_of(name, count + 1)
    )


def test_the_shard_index_comes_from_a_statefulset_pod_name() -> None:
    assert ordinal_from_hostname("messaging-stats-exporter-2") == 2
    with pytest.raises(ValueError, match="ordinal"):
        ordinal_from_hostname("exporter")


def test_a_shard_index_beyond_the_count_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sharding: index must be below count"):
        validate_config({"sharding": {"index": 3, "count": 3}})


# Differs between two runs a second apart by nature: when the token issued to that run expires.
RUN_DEPENDENT = {"trustlat_access_token_expiry_timestamp_seconds"}


async def test_two_shards_together_equal_one_unsharded_exporter(sim, sim_url, harness, make_config):
    targets = simulator.demo_targets(sim_url, sim)
    config = make_config(targets)

    def provider_series(text: str) -> dict:
        return {
            k: v
            for k, v in parse_exposition(text).items()
            if not k[0].startswith(("messaging_exporter_", "process_", "python_"))
            and k[0] not in RUN_DEPENDENT
        }

    def accounts_requested() -> set[tuple[str, str]]:
        return {(r.provider.removesuffix("-atenea"), r.account) for r in sim.requests}

    whole = await harness(config)
    await whole.collect()
    expected = provider_series(await whole.scrape_text())

    union: dict = {}
    accounts_per_shard = []
    requested_per_shard = []
    for index in range(2):
        sim.requests.clear()
        shard = await harness(config)
        shard.exporter.shard_override = Sharding(index=index, count=2)
        shard.exporter.apply(config)
        await shard.collect()
        requested_per_shard.append(accounts_requested())
        text = await shard.scrape_text()
        part = provider_series(text)
        assert not set(part) & set(union)
        union.update(part)
        scraped = parse_exposition(text)
        accounts_per_shard.append(
            {dict(k[1])["account"] for k in scraped if k[0] == "messaging_exporter_collect_success"}
        )
        info = {dict(k[1])["index"] for k in scraped if k[0] == "messaging_exporter_shard_info"}
        assert info == {str(index)}
        targets_gauge = {
            dict(k[1])["state"]: v
            for k, v in scraped.items()
            if k[0] == "messaging_exporter_targets"
        }
        assert targets_gauge["assigned"] + targets_gauge["skipped"] == len(targets)
        assert targets_gauge["assigned"] == len(accounts_per_shard[-1])
    assert union == expected
    assert not accounts_per_shard[0] & accounts_per_shard[1]
    assert accounts_per_shard[0] | accounts_per_shard[1] == {t["name"] for t in targets}
    assert all(accounts_per_shard)
    # The simulator saw each of its accounts asked by one replica only.
    assert not requested_per_shard[0] & requested_per_shard[1]


@pytest.mark.parametrize("flag", [["--shard", "2/2"], ["--shard", "x"], ["--shard-from-hostname"]])
def test_bad_shard_flags_exit_2(flag: list[str]) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "exporter", *flag, "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("--shard")
