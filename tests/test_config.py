"""The config contract: good files load, every kind of bad file fails naming the key path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config, validate_config
from exporter.providers import registry
from exporter.schema.types import parse_duration

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


# -- limits: what is read -------------------------------------------------------------------------

TARGET_YAML = (
    "targets:\n"
    "  - name: t\n"
    "    provider: thulium\n"
    "    base_url: http://127.0.0.1:9/api\n"
    "    username: u\n"
)


def special_file(tmp_path: Path, kind: str) -> Path:
    """A file of ``kind`` in ``tmp_path`` (or a system one), for the config, a secret or the web
    config file."""
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == "dev-zero":
        return Path("/dev/zero")
    return path


REFUSED_KINDS = {
    "dev-zero": "is a character device, not a regular file",
    "directory": "is a directory, not a regular file",
    "fifo": "is a named pipe (FIFO), not a regular file",
    "socket": "is a socket, not a regular file",
}


@pytest.mark.parametrize("kind", sorted(REFUSED_KINDS))
def test_a_config_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    # A named pipe is never opened for reading blocking (see the subprocess test below).
    with pytest.raises(ConfigError) as caught:
        load_config(special_file(tmp_path, kind))
    assert [str(problem) for problem in caught.value.problems] == [
        f"the file {REFUSED_KINDS[kind]}"
    ]


@pytest.mark.parametrize("kind", sorted(REFUSED_KINDS))
def test_a_secret_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = special_file(tmp_path, kind)
    with pytest.raises(ConfigError) as caught:
        parse_config(TARGET_YAML + f"    password_file: {path}\n", environ={})
    assert [str(problem) for problem in caught.value.problems] == [
        f"targets[0].password_file: secret file '{path}' {REFUSED_KINDS[kind]}"
    ]


def test_the_config_file_is_read_up_to_4_mib(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = TARGET_YAML + "    password: p\n"
    path.write_text(text + "#" * (4 * 1024 * 1024 - len(text) - 1) + "\n")
    assert load_config(path).targets[0].name == "t"
    with path.open("a") as file:
        file.write("#")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [
        "the file is larger than 4 MiB, the most that is read"
    ]


def test_the_web_config_file_is_read_up_to_1_mib_and_only_if_regular(tmp_path: Path) -> None:
    from exporter.web.webconfig import load_web_config

    path = tmp_path / "web.yaml"
    text = "http_server_config: {headers: {X-Frame-Options: deny}}\n"
    path.write_text(text + "#" * (1024 * 1024 - len(text) - 1) + "\n")
    assert load_web_config(path).http_server_config.headers == {"X-Frame-Options": "deny"}
    with path.open("a") as file:
        file.write("#")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert [str(p) for p in caught.value.problems] == [
        "the file is larger than 1 MiB, the most that is read"
    ]
    for kind, refusal in REFUSED_KINDS.items():
        with pytest.raises(ConfigError) as caught:
            load_web_config(special_file(tmp_path, kind))
        assert [str(p) for p in caught.value.problems] == [f"the file {refusal}"]


def test_the_web_config_file_is_parsed_with_the_same_yaml_bounds(tmp_path: Path) -> None:
    from exporter.web.webconfig import load_web_config

    path = tmp_path / "web.yaml"
    path.write_text(billion_laughs())
    with pytest.raises(ConfigError, match=r"more than 100,000 keys, values and items"):
        load_web_config(path)
    path.write_text("basic_auth_users: {a: x}\nbasic_auth_users: {b: y}\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert [str(p) for p in caught.value.problems] == [
        "basic_auth_users: the key is given twice in one mapping (on lines 1 and 2)"
    ]


def test_a_secret_file_is_read_up_to_64_kib(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 65536)
    config = parse_config(TARGET_YAML + f"    password_file: {secret}\n", environ={})
    assert config.targets[0].secret("password") == "s" * 65536
    secret.write_text("s" * 65537)
    assert problems(TARGET_YAML + f"    password_file: {secret}\n") == [
        f"targets[0].password_file: secret file '{secret}' is larger than 64 KiB, "
        "the most that is read"
    ]


def test_files_that_are_not_utf8_are_refused_naming_the_byte(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"pass\xffword")
    assert problems(TARGET_YAML + f"    password_file: {secret}\n") == [
        f"targets[0].password_file: secret file '{secret}' is not UTF-8 text (byte 5 is not valid)"
    ]
    config = tmp_path / "config.yaml"
    config.write_bytes(b"log: {level: \xe9}\n")
    with pytest.raises(ConfigError, match=r"the file is not UTF-8 text \(byte 14"):
        load_config(config)


def test_a_path_with_a_nul_character_is_refused() -> None:
    assert problems(TARGET_YAML + '    password_file: "/etc/host\\0name"\n') == [
        "targets[0].password_file: secret file '/etc/host\\x00name' is not a valid path "
        "(it contains a NUL character)"
    ]


# -- limits: what the YAML may hold ----------------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels + 1):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_grows() -> None:
    found = problems(billion_laughs())
    assert found == [
        "f[0]: the document has more than 100,000 keys, values and items "
        "(aliases counted as what they stand for) (line 6)"
    ]


def test_aliases_and_merge_keys_within_the_bounds_work() -> None:
    config = parse_config(
        "targets:\n"
        "  - &common {name: a, provider: thulium, base_url: 'http://127.0.0.1:9/api',\n"
        "             username: u, password: p}\n"
        "  - {<<: *common, name: b}\n"
        "  - {<<: *common, name: c, interval: 2m}\n",
        environ={},
    )
    assert [(t.name, t.interval) for t in config.targets] == [("a", 60), ("b", 60), ("c", 120)]


def test_a_string_alias_that_multiplies_the_text_is_refused() -> None:
    text = f"a: &a {'x' * 100_000}\nb: [{', '.join(['*a'] * 50)}]\n"
    assert problems(text) == [
        "b[40]: the document's values have more than 4,194,304 characters "
        "(aliases counted as what they stand for) (line 2)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a: &a [*a]\n", "a[0]", id="list"),
        pytest.param("a: &a {b: *a}\n", "a.b", id="mapping"),
        pytest.param("a: &a {b: [{c: *a}]}\n", "a.b[0].c", id="deeper"),
        pytest.param("a: &a {<<: *a}\n", "a.<<", id="merge"),
    ],
)
def test_an_alias_inside_its_own_anchor_is_refused(text: str, expected: str) -> None:
    assert problems(text) == [
        f"{expected}: the alias *a is inside the node it names (a recursive structure) (line 1)"
    ]


def test_nesting_500_deep_is_refused_at_64_levels() -> None:
    found = problems("targets: " + "[" * 500 + "]" * 500 + "\n")
    assert len(found) == 1
    path, _, message = found[0].partition(": ")
    assert path == "targets" + "[0]" * 63
    assert message == "nested deeper than 64 levels (line 1)"


def test_nesting_of_64_levels_is_read() -> None:
    found = problems("targets: " + "[" * 63 + "]" * 63 + "\n")
    assert found == ["targets[0]: must be a mapping (key: value)"]


def test_aliases_count_their_depth_too() -> None:
    deep = "[" * 40 + "]" * 40
    found = problems(f"a: &a {deep}\nb: [[[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]]\n")
    assert found == ["b" + "[0]" * 26 + ": nested deeper than 64 levels (line 2)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            TARGET_YAML + "    password: p\n    interval: 1m\n    interval: 2m\n",
            "targets[0].interval: the key is given twice in one mapping (on lines 7 and 8)",
            id="in-a-target",
        ),
        pytest.param(
            "log: {level: info}\n" + TARGET_YAML + "    password: p\nlog: {level: debug}\n",
            "log: the key is given twice in one mapping (on lines 1 and 8)",
            id="top-level",
        ),
        pytest.param(
            "web: {listen_address: ':1', 'listen_address': ':2'}\n",
            "web.listen_address: the key is given twice in one mapping (on line 1)",
            id="quoted-and-plain",
        ),
    ],
)
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_a_merged_key_may_be_overridden() -> None:
    text = (
        "defaults: &d {interval: 1m}\n"
        "x: 1\n"  # unknown: only there to show the merge is read
    )
    assert problems(text + TARGET_YAML + "    password: p\n    <<: *d\n    interval: 2m\n") == [
        "x: unknown key"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('"\\ud800"', "\\ud800", id="lone-high-surrogate"),
        pytest.param('"ok\\udfff"', "\\udfff", id="lone-low-surrogate"),
    ],
)
def test_a_string_that_is_not_unicode_is_refused_at_its_key(value: str, expected: str) -> None:
    assert problems(
        TARGET_YAML.replace("username: u", f"username: {value}") + "    password: p\n"
    ) == [
        f"targets[0].username: contains {expected}, a lone surrogate, which is not valid Unicode "
        "(line 5)"
    ]


def test_an_environment_variable_that_is_not_utf8_is_refused() -> None:
    text = TARGET_YAML + "    password: ${PASS}\n"
    assert problems(text, environ={"PASS": "caf\udce9"}) == [
        "targets[0].password: environment variable PASS is not valid UTF-8"
    ]


def test_environment_variables_may_add_4_mi_characters_in_all() -> None:
    text = TARGET_YAML + "    password: ${PASS}\n" + "x: [" + ", ".join(['"${BIG}"'] * 5) + "]\n"
    found = problems(text, environ={"PASS": "p", "BIG": "b" * 1024 * 1024})
    assert found == [
        "x[3]: environment variables add more than 4,194,304 characters to the file in all",
        "x: unknown key",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a: 2001-02-30\n", "a: not a valid date (line 1)", id="date"),
        pytest.param("a: !!bool maybe\n", "a: not a valid boolean (line 1)", id="bool"),
        pytest.param("a: !!int twelve\n", "a: not a valid integer (line 1)", id="int"),
        pytest.param(f"a: {'9' * 5000}\n", "a: not a valid integer (line 1)", id="5000-digits"),
        pytest.param(
            "a: !!python/object:os.system {}\n",
            "line 1, column 4: YAML syntax error: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object:os.system'",
            id="python-tag",
        ),
        pytest.param(
            "a: b\x00\n",
            "line 1, column 5: YAML syntax error: character 0x0000 is not allowed",
            id="nul",
        ),
        pytest.param(
            "a: 1\n---\nb: 2\n",
            "line 2, column 1: YAML syntax error: expected a single document in the stream, "
            "but found another document",
            id="two-documents",
        ),
    ],
)
def test_yaml_values_that_cannot_be_read_are_refused_at_their_key(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# -- the command line: refused with status 2, no traceback, bounded memory, no hang --------------

MAX_RSS_KIB = 128 * 1024
"""--check-config's peak RSS on any of these: the interpreter and libraries take about 70 MiB; the
files refused here took from 200 MiB to several GiB before they were bounded."""

RUN_WITH_RSS = (
    "import re, sys\n"
    "from exporter.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "finally:\n"
    # The process's own peak (VmHWM): ru_maxrss would also count the parent's peak, which Linux
    # hands over to a child started by vfork and exec.
    "    status = open('/proc/self/status').read()\n"
    "    peak = re.search(r'VmHWM:\\s+(\\d+)', status)[1]\n"
    "    print(f'maxrss={peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def check_config_rss(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITH_RSS, "--check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,  # a hang (a named pipe read blocking) ends the test instead of the suite
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    rss = int(result.stderr.rpartition("maxrss=")[2])
    return result, rss


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("billion-laughs", "the document has more than 100,000 keys"),
        ("nesting-500", "nested deeper than 64 levels"),
        ("self-alias", "the alias *a is inside the node it names"),
        ("surrogate", "targets[0].username: contains \\ud800, a lone surrogate"),
        ("config-dev-zero", "invalid config /dev/zero:\n  the file is a character device"),
        ("config-fifo", "the file is a named pipe (FIFO), not a regular file"),
        ("secret-dev-zero", "secret file '/dev/zero' is a character device"),
        ("secret-fifo", "is a named pipe (FIFO), not a regular file"),
        ("web-config-dev-zero", "invalid config /dev/zero:\n  the file is a character device"),
        ("web-config-fifo", "the file is a named pipe (FIFO), not a regular file"),
        ("interval-1e-300", "targets[0].interval: must be at least 1s; it is 1e-300s"),
    ],
)
def test_check_config_refuses_hostile_files_with_status_2_in_bounded_memory(
    tmp_path: Path, case: str, expected: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    config = tmp_path / "config.yaml"
    good = TARGET_YAML + "    password: p\n"
    texts = {
        "billion-laughs": billion_laughs() + good,
        "nesting-500": good + "x: " + "[" * 500 + "]" * 500 + "\n",
        "self-alias": good + "x: &a [*a]\n",
        "surrogate": good.replace("username: u", 'username: "\\ud800"'),
        "secret-dev-zero": TARGET_YAML + "    password_file: /dev/zero\n",
        "secret-fifo": TARGET_YAML + f"    password_file: {fifo}\n",
        "interval-1e-300": good + "    interval: 1e-300\n",
    }
    config.write_text(texts.get(case, good))
    args = ["--config", str(config)]
    if case.startswith("config-"):
        args = ["--config", "/dev/zero" if case.endswith("dev-zero") else str(fifo)]
    if case.startswith("web-config-"):
        args += ["--web.config.file", "/dev/zero" if case.endswith("dev-zero") else str(fifo)]
    result, rss = check_config_rss(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert rss < MAX_RSS_KIB, f"{rss // 1024} MiB"


@pytest.mark.parametrize(
    "path", ["/metrics", "/probe/metrics/", "/a-b.c_d~e!$&'()*+,;=:@/m", "/x/metrics;v=1"]
)
async def test_an_accepted_telemetry_path_is_served_as_written(aiohttp_client, path: str) -> None:
    from exporter.service import make_exporter
    from exporter.web.app import build_app

    config = validate_config({"web": {"telemetry_path": path}, "targets": [thulium_target()]})
    client = await aiohttp_client(build_app(make_exporter(config, autostart=False)))
    response = await client.get(path)
    assert response.status == 200
    assert "messaging_exporter" in await response.text()
    assert (await client.get(path + "x")).status == 404
