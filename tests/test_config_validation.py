"""The config's cross-key rules: at least one target, stale_after against interval (and its
default), the warning for a timeout longer than interval, secret pairs and unknown providers
reported at the key itself, and Altcraft's task_max_age."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import ConfigError, config_warnings, expand_env, load_config, validate_config
from exporter.providers import registry
from exporter.providers.altcraft import AltcraftTarget

ROOT = Path(__file__).resolve().parent.parent
NO_TARGETS = "targets: at least one target is required"


def thulium(**extra: Any) -> dict[str, Any]:
    return {
        "name": "thulium-acme",
        "provider": "thulium",
        "base_url": "https://acme.thulium.com/api",
        "username": "api_user",
        "password": "secret-password",
        **extra,
    }


def altcraft(**extra: Any) -> dict[str, Any]:
    return {
        "name": "altcraft-prod",
        "provider": "altcraft",
        "base_url": "https://altcraft.example.com/api/v1.1",
        "token": "t0ken-value",
        "resources": [{"id": 24, "list_id": 1}],
        **extra,
    }


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate_config(data, environ={})
    return [str(problem) for problem in caught.value.problems]


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )


# -- at least one target -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "# nothing but a comment\n", "targets: []\n", "targets:\n", "web: {telemetry_path: /m}\n"],
    ids=["empty", "comment-only", "empty-list", "null", "no-targets-key"],
)
def test_a_config_without_targets_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert [str(problem) for problem in caught.value.problems] == [NO_TARGETS]


def test_no_targets_is_reported_with_the_other_problems() -> None:
    found = problems({"targets": [], "log": {"level": "loud"}})
    assert NO_TARGETS in found
    assert any(problem.startswith("log.level:") for problem in found)


@pytest.mark.parametrize("text", ["", "targets: []\n"], ids=["empty-file", "empty-list"])
def test_check_config_exits_2_without_targets(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = check_config(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert NO_TARGETS in result.stderr
    assert "Traceback" not in result.stderr


# -- stale_after -------------------------------------------------------------------------------


def test_stale_after_shorter_than_the_targets_interval_is_refused() -> None:
    found = problems({"targets": [thulium(interval="10m", stale_after="5m")]})
    assert found == ["targets[0].stale_after: must be at least interval (10m); it is 5m"]


def test_stale_after_inherited_from_defaults_is_checked_against_the_targets_interval() -> None:
    found = problems(
        {
            "defaults": {"stale_after": "5m"},
            "targets": [thulium(), thulium(name="slow", interval="10m")],
        }
    )
    assert found == [
        "targets[1].stale_after: must be at least interval (10m); it is 5m "
        "(inherited from defaults.stale_after)"
    ]


def test_stale_after_shorter_than_interval_in_defaults_is_reported_once_there() -> None:
    found = problems(
        {
            "defaults": {"interval": "10m", "stale_after": "5m"},
            "targets": [thulium(), thulium(name="b")],
        }
    )
    assert found == ["defaults.stale_after: must be at least interval (10m); it is 5m"]


def test_stale_after_equal_to_interval_is_fine() -> None:
    config = validate_config({"targets": [thulium(interval="10m", stale_after="10m")]})
    assert config.targets[0].stale_after == 600


@pytest.mark.parametrize(
    ("interval", "stale_after"),
    [("30s", 300), ("60s", 300), ("100s", 300), ("2m", 360), ("10m", 1800), ("1h", 10800)],
)
def test_stale_after_defaults_to_the_larger_of_5m_and_3_intervals(
    interval: str, stale_after: float
) -> None:
    config = validate_config({"targets": [thulium(interval=interval)]})
    assert config.targets[0].stale_after == stale_after


def test_the_default_stale_after_follows_each_targets_own_interval() -> None:
    config = validate_config(
        {
            "defaults": {"interval": "10m"},
            "targets": [thulium(), thulium(name="fast", interval="30s")],
        }
    )
    assert [target.stale_after for target in config.targets] == [1800, 300]


def test_stale_after_given_in_defaults_is_inherited() -> None:
    config = validate_config(
        {"defaults": {"stale_after": "20m"}, "targets": [thulium(), thulium(name="b")]}
    )
    assert [target.stale_after for target in config.targets] == [1200, 1200]


def test_the_example_config_yaml_passes_check_config(tmp_path: Path) -> None:
    """config.yaml has a 10m Altcraft interval with the default stale_after: still valid."""
    text = (ROOT / "config.yaml").read_text()
    for secret_path in ("/run/secrets/thulium-password", "/run/secrets/trust-secret"):
        local = tmp_path / Path(secret_path).name
        local.write_text("example-secret-from-file\n")
        text = text.replace(secret_path, str(local))
    path = tmp_path / "config.yaml"
    path.write_text(text)
    env = {
        "ALTCRAFT_TOKEN": "example-altcraft-token",
        "TRUST_CLIENT_ID": "example-client-id",
        "EXOLVE_API_KEY": "example-exolve-key",
    }
    result = check_config(path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    altcraft_target = next(
        t for t in load_config(path, environ=env).targets if t.provider == "altcraft"
    )
    assert altcraft_target.interval == 600
    assert altcraft_target.stale_after == 1800


# -- timeout longer than interval ----------------------------------------------------------------


def test_a_timeout_longer_than_interval_is_a_warning_naming_the_key() -> None:
    config = validate_config(
        {
            "targets": [
                thulium(name="a"),
                thulium(name="b", interval="10s", timeout="10s"),
                thulium(name="c", interval="1m", timeout="2m"),
                thulium(name="d", interval="1500ms", timeout="2s"),
            ]
        }
    )
    assert config_warnings(config) == [
        "targets[2].timeout: 2m is longer than interval (1m); a collection is cut at 1m",
        "targets[3].timeout: 2s is longer than interval (1.5s); a collection is cut at 1.5s",
    ]
    assert config.targets[2].deadline == 60


def test_a_timeout_inherited_from_defaults_warns_for_each_target_it_is_too_long_for() -> None:
    config = validate_config(
        {
            "defaults": {"timeout": "45s"},
            "targets": [thulium(name="a", interval="30s"), thulium(name="b")],
        }
    )
    assert config_warnings(config) == [
        "targets[0].timeout: 45s is longer than interval (30s); a collection is cut at 30s"
    ]


def test_a_sound_config_has_no_warnings() -> None:
    assert config_warnings(validate_config({"targets": [thulium()]})) == []


# -- secret pairs, at the key itself ---------------------------------------------------------------


def exolve(**extra: Any) -> dict[str, Any]:
    return {
        "name": "exolve-sms",
        "provider": "exolve",
        "base_url": "https://api.exolve.ru/messaging/v1",
        "api_key": "key-value",
        **extra,
    }


def trustlat(**extra: Any) -> dict[str, Any]:
    return {
        "name": "trust",
        "provider": "trustlat",
        "base_url": "https://api.trust.lat",
        "company_id": 1,
        **extra,
    }


# Every provider's secret pairs: (a target with the inline key given, the key).
SECRET_PAIRS = [
    pytest.param(thulium(), "password", id="thulium-password"),
    pytest.param(altcraft(), "token", id="altcraft-token"),
    pytest.param(exolve(), "api_key", id="exolve-api_key"),
    pytest.param(trustlat(client_id="c", client_secret="s"), "client_secret", id="trust-secret"),
    pytest.param(trustlat(access_token="t"), "access_token", id="trustlat-access_token"),
]


def test_every_secret_of_every_provider_is_in_the_pairs_tested() -> None:
    tested = {("thulium", "password"), ("altcraft", "token"), ("exolve", "api_key")}
    tested |= {("trustlat", "client_secret"), ("trustlat", "access_token")}
    built_in = {
        name: provider
        for name, provider in registry().items()
        if provider.__module__.startswith("exporter.providers.")
    }
    declared = {
        (name, key) for name, provider in built_in.items() for key in provider.config_model.SECRETS
    }
    assert declared == tested


@pytest.mark.parametrize(("target", "key"), SECRET_PAIRS)
def test_both_forms_of_a_secret_name_the_key(target: dict[str, Any], key: str) -> None:
    found = problems({"targets": [{**target, f"{key}_file": "/etc/hostname"}]})
    assert found == [f"targets[0].{key}: give either {key} or {key}_file, not both"]


@pytest.mark.parametrize(
    ("target", "key"),
    [
        pytest.param(thulium(), "password", id="thulium-password"),
        pytest.param(altcraft(), "token", id="altcraft-token"),
        pytest.param(exolve(), "api_key", id="exolve-api_key"),
    ],
)
def test_a_missing_secret_names_the_key(target: dict[str, Any], key: str) -> None:
    del target[key]
    found = problems({"targets": [target]})
    assert found == [f"targets[0].{key}: {key} or {key}_file is required"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(
            trustlat(),
            "targets[0].client_id: give either client_id and client_secret",
            id="neither-way",
        ),
        pytest.param(
            trustlat(client_id="c"),
            "targets[0].client_secret: client_secret or client_secret_file is required",
            id="client-id-alone",
        ),
        pytest.param(
            trustlat(client_secret="s"),
            "targets[0].client_id: client_id is required with client_secret",
            id="secret-alone",
        ),
        pytest.param(
            trustlat(access_token="t", client_id="c", client_secret="s"),
            "targets[0].access_token: give either access_token (a fixed token) or client_id",
            id="both-ways",
        ),
    ],
)
def test_trustlats_ways_to_authenticate_name_the_key(target: dict[str, Any], expected: str) -> None:
    found = problems({"targets": [target]})
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_secret_values_stay_out_of_the_problems() -> None:
    found = problems({"targets": [thulium(password_file="/etc/hostname")]})
    assert not any("secret-password" in problem for problem in found)


# -- unknown provider ----------------------------------------------------------------------------


def known() -> str:
    return ", ".join(sorted(registry()))


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("foo", "targets[0].provider: unknown provider 'foo'; known: {known}"),
        ("Thulium", "targets[0].provider: unknown provider 'Thulium'; known: {known}"),
        (7, "targets[0].provider: unknown provider 7; known: {known}"),
    ],
)
def test_an_unknown_provider_names_the_key_and_the_known_providers(
    provider: object, expected: str
) -> None:
    found = problems({"targets": [thulium(), thulium(name="b", provider=provider)]})
    assert found == [expected.replace("targets[0]", "targets[1]").format(known=known())]


def test_a_missing_provider_names_the_known_providers() -> None:
    target = thulium()
    del target["provider"]
    assert problems({"targets": [target]}) == [
        f"targets[0].provider: required key is missing; known: {known()}"
    ]


def test_the_known_providers_are_the_registrys() -> None:
    """The built-in ones at least; an installed plugin adds its own."""
    assert {"altcraft", "exolve", "thulium", "trustlat"} <= set(known().split(", "))


def test_check_config_names_an_unknown_provider(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"targets": [thulium(provider="foo")]}))
    result = check_config(path)
    assert result.returncode == 2
    assert f"targets[0].provider: unknown provider 'foo'; known: {known()}" in result.stderr


# -- Altcraft's task_max_age ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "task_max_age"),
    [("1m", 3600), ("10m", 3600), ("20m", 3600), ("30m", 5400), ("2h", 21600)],
)
def test_task_max_age_defaults_to_the_larger_of_1h_and_3_intervals(
    interval: str, task_max_age: float
) -> None:
    config = validate_config({"targets": [altcraft(interval=interval)]})
    target = config.targets[0]
    assert isinstance(target, AltcraftTarget)
    assert target.task_max_age == task_max_age


def test_task_max_age_default_follows_the_interval_inherited_from_defaults() -> None:
    config = validate_config({"defaults": {"interval": "40m"}, "targets": [altcraft()]})
    target = config.targets[0]
    assert isinstance(target, AltcraftTarget)
    assert target.task_max_age == 7200


def test_task_max_age_given_is_kept_and_summarised() -> None:
    config = validate_config({"targets": [altcraft(task_max_age="15m")]})
    target = config.targets[0]
    assert isinstance(target, AltcraftTarget)
    assert target.task_max_age == 900
    assert "task_max_age=15m" in target.summary()


def test_task_max_age_is_an_altcraft_key_only() -> None:
    assert problems({"targets": [thulium(task_max_age="1h")]}) == [
        "targets[0].task_max_age: unknown key"
    ]


# -- unknown keys suggest the nearest allowed one --------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"targets": [{**thulium(), "pasword_file": "/x"}]},
            "targets[0].pasword_file: unknown key; did you mean password_file?",
            id="secret-file",
        ),
        pytest.param(
            {"targets": [{**thulium(), "intervall": "1m"}]},
            "targets[0].intervall: unknown key; did you mean interval?",
            id="target-key",
        ),
        pytest.param(
            {"targets": [thulium()], "target": []},
            "target: unknown key; did you mean targets?",
            id="top-level",
        ),
        pytest.param(
            {"targets": [thulium()], "web": {"listen": ":1"}},
            "web.listen: unknown key; did you mean listen_address?",
            id="web",
        ),
        pytest.param(
            {"targets": [thulium()], "defaults": {"timout": "1s"}},
            "defaults.timout: unknown key; did you mean timeout?",
            id="defaults",
        ),
        pytest.param(
            {"targets": [altcraft(resources=[{"id": 1, "listid": 2}])]},
            "targets[0].resources[0].listid: unknown key; did you mean list_id?",
            id="nested-model",
        ),
        pytest.param(
            {"targets": [exolve(breakdown=["status"])]},
            "targets[0].breakdown: unknown key; did you mean breakdowns?",
            id="another-provider",
        ),
        pytest.param(
            {"targets": [{**thulium(), "colour": "blue"}]},
            "targets[0].colour: unknown key",
            id="nothing-close",
        ),
    ],
)
def test_an_unknown_key_suggests_the_nearest_allowed_key(
    data: dict[str, Any], expected: str
) -> None:
    assert expected in problems(data)


def test_the_suggestion_is_a_key_of_the_targets_own_provider() -> None:
    # api_key is Exolve's; a Thulium target has no key near it.
    assert problems({"targets": [{**thulium(), "api_kee": "k"}]}) == [
        "targets[0].api_kee: unknown key"
    ]


# -- pydantic's messages, phrased as the rest ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"targets": [thulium(max_concurrency="many")]},
            "targets[0].max_concurrency: must be a whole number",
            id="int-parsing",
        ),
        pytest.param(
            {"targets": [thulium(max_concurrency=1.5)]},
            "targets[0].max_concurrency: must be a whole number",
            id="int-from-float",
        ),
        pytest.param(
            {"targets": [thulium(max_concurrency=300)]},
            "targets[0].max_concurrency: must be at most 256; it is 300",
            id="above-maximum",
        ),
        pytest.param(
            {"targets": [thulium(max_response_bytes=10)]},
            "targets[0].max_response_bytes: must be at least 1024; it is 10",
            id="below-minimum",
        ),
        pytest.param(
            {"targets": [thulium(username=["a"])]},
            "targets[0].username: must be a string",
            id="string-type",
        ),
        pytest.param(
            {"targets": [thulium(name="")]},
            "targets[0].name: must not be empty",
            id="empty",
        ),
        pytest.param(
            {"targets": [thulium(name="a" * 201)]},
            "targets[0].name: must have at most 200 characters",
            id="too-long",
        ),
        pytest.param(
            {"targets": [thulium(name="line\nbreak")]},
            "targets[0].name: must not contain control characters (such as a newline or a tab)",
            id="control-characters",
        ),
        pytest.param(
            {"targets": [thulium()], "log": {"format": "xml"}},
            "log.format: must be 'json', 'logfmt' or 'console'",
            id="literal",
        ),
        pytest.param(
            {"targets": [thulium()], "web": "on"},
            "web: must be a mapping (key: value)",
            id="mapping",
        ),
        pytest.param(
            {"targets": [thulium()], "sharding": {"count": "two"}},
            "sharding.count: must be a whole number",
            id="sharding",
        ),
    ],
)
def test_pydantic_messages_are_phrased_as_the_others(data: dict[str, Any], expected: str) -> None:
    found = problems(data)
    assert expected in found, found
    assert not any("Input should" in problem or "Value error" in problem for problem in found)


def test_at_most_100_problems_are_listed_and_the_rest_counted() -> None:
    found = problems({"targets": [1] * 250})
    assert len(found) == 101
    assert found[0] == "targets[0]: must be a mapping (key: value)"
    assert found[-1] == "... and 150 more problems"


# -- accepted but wrong: minimums, paths, addresses ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"targets": [thulium(interval=1e-300)]},
            "targets[0].interval: must be at least 1s; it is 1e-300s",
            id="interval-1e-300",
        ),
        pytest.param(
            {"targets": [thulium(interval="500ms")]},
            "targets[0].interval: must be at least 1s; it is 500ms",
            id="interval-500ms",
        ),
        pytest.param(
            {"defaults": {"interval": 0.5}, "targets": [thulium()]},
            "defaults.interval: must be at least 1s; it is 500ms",
            id="interval-in-defaults",
        ),
        pytest.param(
            {"targets": [thulium(timeout="10ms")]},
            "targets[0].timeout: must be at least 100ms; it is 10ms",
            id="timeout",
        ),
        pytest.param(
            {"defaults": {"timeout": 1e-9}, "targets": [thulium()]},
            "defaults.timeout: must be at least 100ms; it is 1e-09s",
            id="timeout-in-defaults",
        ),
        pytest.param(
            {"targets": [altcraft(task_poll_interval=1e-300)]},
            "targets[0].task_poll_interval: must be at least 1ms; it is 1e-300s",
            id="any-duration",
        ),
        pytest.param(
            {"targets": [thulium()], "web": {"keepalive_timeout": "0.1ms"}},
            "web.keepalive_timeout: must be at least 1ms; it is 0.0001s",
            id="keepalive",
        ),
    ],
)
def test_durations_below_their_minimum_are_refused(data: dict[str, Any], expected: str) -> None:
    assert expected in problems(data)


def test_durations_at_their_minimum_are_accepted() -> None:
    config = validate_config(
        {"targets": [thulium(interval="1s", timeout="100ms", stale_after="1s")]}
    )
    assert (config.targets[0].interval, config.targets[0].timeout) == (1.0, 0.1)
    assert validate_config({"targets": [altcraft(task_poll_interval="1ms")]}).targets[0]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/{x}", "must be a plain path, as it is served"),
        ("/{", "must be a plain path, as it is served"),
        ("/metrics?x=1", "must be a plain path, as it is served"),
        ("/metrics#top", "must be a plain path, as it is served"),
        ("/me%74rics", "must be a plain path, as it is served"),
        ("/my metrics", "must be a plain path, as it is served"),
        ("/метрики", "must be a plain path, as it is served"),
        ("metrics", "must be an absolute path, starting with /"),
        ("", "must be an absolute path, starting with /"),
        (
            "/",
            "must not be one of the exporter's other paths "
            "(/, /-/reload, /healthz, /readyz, /api/v1/targets)",
        ),
        ("/healthz", "must not be one of the exporter's other paths"),
        ("/readyz", "must not be one of the exporter's other paths"),
        ("/-/reload", "must not be one of the exporter's other paths"),
        ("/api/v1/targets", "must not be one of the exporter's other paths"),
        ("//metrics", "must not have an empty segment (//)"),
        ("/a/../metrics", "must not have . or .. segments"),
    ],
)
def test_telemetry_path_must_be_a_plain_path(path: str, expected: str) -> None:
    found = problems({"targets": [thulium()], "web": {"telemetry_path": path}})
    assert len(found) == 1
    assert found[0].startswith(f"web.telemetry_path: {expected}"), found


@pytest.mark.parametrize("address", ["[::1", "::1]:80", "[::1]", "::1:10057", "[nothost]:1", ":٣"])
def test_a_malformed_listen_address_is_refused(address: str) -> None:
    found = problems({"targets": [thulium()], "web": {"listen_address": address}})
    assert len(found) == 1
    assert found[0].startswith(f"web.listen_address: {address!r}"), found


@pytest.mark.parametrize(
    "address", ["0.0.0.0:10057", ":10057", "[::]:10057", "[::1]:0", "localhost:9", "[fe80::1%lo]:1"]
)
def test_listen_addresses_that_are_accepted(address: str) -> None:
    config = validate_config({"targets": [thulium()], "web": {"listen_address": address}})
    assert config.web.listen_address == address


def test_a_target_of_more_than_10000_nodes_is_refused_and_the_others_still_checked() -> None:
    huge = altcraft(resources=[{}] * 5000)  # 1 + 2 x 6 + 1 + 5,000 nodes: under
    assert problems({"targets": [huge]})[0] == "targets[0].resources[0].id: required key is missing"
    huger = altcraft(resources=[{}] * 10_000)
    found = problems({"targets": [thulium(), huger, thulium(name="b", interval="x")]})
    assert found == [
        "targets[1]: has more than 10,000 keys, values and items",
        "targets[2].interval: invalid duration 'x': use a number of seconds or a string such as "
        "500ms, 30s, 5m, 1h, 1h30m",
    ]


def test_targets_are_validated_one_at_a_time_with_the_same_problems() -> None:
    found = problems(
        {
            "log": {"level": "loud"},
            "targets": [thulium(), thulium(name="b", pasword="x"), thulium(), 7],
        }
    )
    assert found == [
        "log.level: must be 'debug', 'info', 'warning' or 'error'",
        "targets[1].pasword: unknown key; did you mean password?",
        "targets[3]: must be a mapping (key: value)",
    ]
    # Once every target is valid, what concerns them together is checked.
    assert problems({"targets": [thulium(), thulium()]}) == [
        "targets[1].name: 'thulium-acme' is already the name of targets[0]; target names must "
        "be unique"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interval", "500ms"),
        ("timeout", "50ms"),
        ("stale_after", "30s"),
        ("max_concurrency", 0),
        ("max_concurrency", 257),
        ("max_response_bytes", 1023),
    ],
)
def test_defaults_refuse_what_a_target_refuses_in_the_same_words(key: str, value: object) -> None:
    """A key of ``defaults`` is the target's key: the same bounds, the same message."""
    extra = {"interval": "1m"} if key == "stale_after" else {}
    in_target = problems({"targets": [thulium(**extra, **{key: value})]})
    in_defaults = problems({"defaults": {**extra, key: value}, "targets": [thulium()]})
    assert len(in_target) == 1
    assert in_target[0].startswith(f"targets[0].{key}: ")
    assert in_defaults == [in_target[0].replace("targets[0].", "defaults.", 1)]


@pytest.mark.parametrize("name", ["1ABC", "A-B", "FOO\n", ""])
def test_an_invalid_variable_name_is_refused_at_its_key(name):
    _, problems = expand_env({"web": {"listen_address": f"${{{name}}}"}}, {name: "x"})
    assert [str(problem) for problem in problems] == [
        f"web.listen_address: invalid variable ${{{name}}}"
    ]
