"""The config contract: good files load, every kind of bad file fails naming the key path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config, validate_config
from exporter.fields import parse_duration
from exporter.providers import registry

ROOT = Path(__file__).resolve().parent.parent

# Every variable the example config.yaml refers to, and every *_file it reads, made up here.
EXAMPLE_ENV = {
    "ALTCRAFT_TOKEN": "example-altcraft-token",
    "TRUST_CLIENT_ID": "example-client-id",
    "TRUST_TOKEN": "example-trust-token",
    "EXOLVE_API_KEY": "example-exolve-key",
    "THULIUM_PASSWORD": "example-thulium-password",
}


def thulium_target(**extra: object) -> dict[str, object]:
    target: dict[str, object] = {
        "name": "thulium-acme",
        "provider": "thulium",
        "base_url": "https://acme.thulium.com/api",
        "username": "api_user",
        "password": "secret-password",
    }
    target.update(extra)
    return target


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=environ or {})
    return [str(problem) for problem in caught.value.problems]


def dump(data: object) -> str:
    import yaml

    return yaml.safe_dump(data)


def test_the_example_config_yaml_loads(tmp_path: Path) -> None:
    """config.yaml is the documented example: with its secrets provided it must be valid."""
    text = (ROOT / "config.yaml").read_text()
    for secret_path in ("/run/secrets/thulium-password", "/run/secrets/trust-secret"):
        local = tmp_path / Path(secret_path).name
        local.write_text("example-secret-from-file\n")
        text = text.replace(secret_path, str(local))
    config = parse_config(text, environ=EXAMPLE_ENV)
    providers = {target.provider for target in config.targets}
    assert "thulium" in providers
    thulium = next(t for t in config.targets if t.provider == "thulium")
    assert thulium.secret("password") == "example-secret-from-file"  # trailing newline stripped
    assert config.web.listen_address == "0.0.0.0:10057"


def test_defaults_are_inherited_unless_a_target_sets_its_own() -> None:
    config = parse_config(
        dump(
            {
                "defaults": {"interval": "2m", "timeout": "10s", "max_concurrency": 2},
                "targets": [thulium_target(), thulium_target(name="other", interval=30)],
            }
        ),
        environ={},
    )
    first, second = config.targets
    assert (first.interval, first.timeout, first.max_concurrency) == (120, 10, 2)
    assert (second.interval, second.timeout) == (30, 10)
    # Not given anywhere: the larger of 5m and 3 x the target's own interval.
    assert (first.stale_after, second.stale_after) == (360, 300)


def test_env_vars_are_expanded_everywhere_and_dollar_dollar_is_literal() -> None:
    config = parse_config(
        dump({"targets": [thulium_target(username="${USER_NAME}", password="p$$${PASS}")]}),
        environ={"USER_NAME": "bob", "PASS": "word"},
    )
    target = config.targets[0]
    assert target.username == "bob"  # type: ignore[attr-defined]
    assert target.secret("password") == "p$word"


def test_secret_from_file_strips_the_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    target = thulium_target(password_file=str(secret))
    del target["password"]
    config = parse_config(dump({"targets": [target]}), environ={})
    assert config.targets[0].secret("password") == "from-a-file"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        (45, 45),
        ("2.5", 2.5),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "-5s", "0", "1x", "", "s", True, None, "1h 30m"])
def test_bad_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"targets": [thulium_target(pasword="typo")]},
            "targets[0].pasword: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            {"web": {"listen": ":1"}},
            "web.listen: unknown key",
            id="unknown-top-level-key",
        ),
        pytest.param(
            {"targets": [{k: v for k, v in thulium_target().items() if k != "username"}]},
            "targets[0].username: required key is missing",
            id="missing-key",
        ),
        pytest.param(
            {"targets": [thulium_target(interval="5 minutes")]},
            "targets[0].interval: invalid duration '5 minutes'",
            id="bad-duration",
        ),
        pytest.param(
            {"defaults": {"stale_after": "soon"}, "targets": [thulium_target()]},
            "defaults.stale_after: invalid duration 'soon'",
            id="bad-duration-in-defaults",
        ),
        pytest.param(
            {"targets": [thulium_target(password="${THULIUM_PASSWORD}")]},
            "targets[0].password: environment variable THULIUM_PASSWORD is not set",
            id="unset-env-var",
        ),
        pytest.param(
            {"targets": [thulium_target(password_file="/etc/hostname")]},
            "targets[0].password: give either password or password_file, not both",
            id="both-secret-forms",
        ),
        pytest.param(
            {"targets": [{k: v for k, v in thulium_target().items() if k != "password"}]},
            "targets[0].password: password or password_file is required",
            id="no-secret",
        ),
        pytest.param(
            {"targets": [thulium_target(), thulium_target(base_url="http://other/api")]},
            "targets[1].name: 'thulium-acme' is already the name of targets[0]",
            id="duplicate-names",
        ),
        pytest.param(
            {"targets": [thulium_target(provider="smsfly")]},
            f"targets[0].provider: unknown provider 'smsfly'; known: {', '.join(registry())}",
            id="unknown-provider",
        ),
        pytest.param(
            {"targets": [{k: v for k, v in thulium_target().items() if k != "provider"}]},
            "targets[0].provider: required key is missing",
            id="missing-provider",
        ),
        pytest.param(
            {"targets": [thulium_target(base_url="ftp://acme.thulium.com/api")]},
            "targets[0].base_url: must be an http or https URL",
            id="base-url-scheme",
        ),
        pytest.param(
            {"targets": [thulium_target(base_url="https://user:pw@acme.thulium.com/api")]},
            "targets[0].base_url: must not carry credentials",
            id="base-url-credentials",
        ),
        pytest.param(
            {"targets": [thulium_target(password_file="/nonexistent/secret")]},
            "targets[0].password_file: secret file '/nonexistent/secret' does not exist",
            id="missing-secret-file",
        ),
        pytest.param(
            {"web": {"listen_address": "localhost"}},
            "web.listen_address: 'localhost' is not host:port",
            id="bad-listen-address",
        ),
        pytest.param(
            {"log": {"level": "verbose"}},
            "log.level: must be 'debug', 'info', 'warning' or 'error'",
            id="bad-log-level",
        ),
        pytest.param(
            {"targets": [thulium_target(max_concurrency=0)]},
            "targets[0].max_concurrency: must be at least 1; it is 0",
            id="bad-concurrency",
        ),
        pytest.param(
            {"targets": {"name": "x"}},
            "targets: must be a list",
            id="targets-not-a-list",
        ),
    ],
)
def test_bad_config_names_the_key_path(data: dict[str, object], expected: str) -> None:
    found = problems(dump(data))
    assert any(problem.startswith(expected) for problem in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        dump(
            {
                "targets": [
                    thulium_target(interval="never"),
                    thulium_target(name="b", password="${NOPE}", colour="blue"),
                ]
            }
        )
    )
    assert len(found) == 3, found


def test_yaml_syntax_errors_say_where() -> None:
    found = problems("targets:\n  - name: [unclosed\n")
    assert found[0].startswith("line ")
    assert "YAML syntax error" in found[0]


def test_a_file_that_is_not_a_mapping_is_refused() -> None:
    assert problems("- a\n- b\n") == ["the file must be a YAML mapping"]


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_secrets_do_not_appear_in_validation_errors() -> None:
    found = problems(
        dump({"targets": [thulium_target(password="hunter2-secret", max_concurrency="x")]})
    )
    assert not any("hunter2-secret" in problem for problem in found)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def test_check_config_exits_2_with_the_errors_and_no_traceback(write_config) -> None:
    path = write_config({"targets": [thulium_target(interval="5 minutes", pasword="x")]})
    result = run_cli("--check-config", "--config", str(path))
    assert result.returncode == 2
    assert "targets[0].interval: invalid duration" in result.stderr
    assert "targets[0].pasword: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_prints_one_line_per_target_and_exits_0(write_config) -> None:
    path = write_config({"targets": [thulium_target(), thulium_target(name="b")]})
    result = run_cli("--check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].endswith("OK, 2 target(s)")
    assert lines[1].strip().startswith("thulium-acme: provider=thulium")
    assert "secret-password" not in result.stdout


def test_web_keepalive_timeout_defaults_to_75s_and_takes_a_duration() -> None:
    target = {
        "name": "t",
        "provider": "thulium",
        "base_url": "http://127.0.0.1:9/api",
        "username": "u",
        "password": "p",
    }
    assert validate_config({"targets": [target]}).web.keepalive_timeout == 75.0
    config = validate_config({"web": {"keepalive_timeout": "2m"}, "targets": [target]})
    assert config.web.keepalive_timeout == 120.0
    with pytest.raises(ConfigError, match=r"web\.keepalive_timeout"):
        validate_config({"web": {"keepalive_timeout": "0s"}, "targets": [target]})
