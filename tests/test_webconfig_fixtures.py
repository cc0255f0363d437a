"""Web config files case by case (tests/fixtures/webconfig, after exporter-toolkit's own test
files): each is accepted or refused as its first line says, refusals naming the key; and the
command line exits 2 on a refused one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trustme

from exporter.config import ConfigError
from exporter.web.webconfig import (
    MAX_PEM_BYTES,
    HTTPServerConfig,
    RateLimitConfig,
    TLSServerConfig,
    WebConfigFile,
    load_web_config,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "webconfig"
CASES = sorted(path.name for path in FIXTURES.glob("*.yml"))


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixtures next to the certificates they name."""
    directory = tmp_path_factory.mktemp("webconfig")
    for name in CASES:
        shutil.copy(FIXTURES / name, directory / name)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    ca.issue_cert("localhost").private_key_pem.write_to_path(str(directory / "other.key"))
    trustme.CA().cert_pem.write_to_path(str(directory / "client-ca.crt"))
    (directory / "server-and-key.pem").write_bytes(
        server.cert_chain_pems[0].bytes() + server.private_key_pem.bytes()
    )
    (directory / "empty.pem").touch()
    return directory


def expectation(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    assert first.startswith("# expect: "), f"{path.name} does not say what to expect"
    return first.removeprefix("# expect: ")


def test_every_fixture_says_what_to_expect_and_its_name_agrees():
    assert len(CASES) > 40
    for name in CASES:
        expected = expectation(FIXTURES / name)
        assert expected == "accepted" or expected.startswith("refused "), name
        assert name.endswith(".good.yml") == (expected == "accepted"), name


@pytest.mark.parametrize("name", CASES)
def test_a_fixture_is_accepted_or_refused_as_it_says(name, fixture_dir, tmp_path, monkeypatch):
    # Relative paths come from the file's folder, not from the working directory.
    monkeypatch.chdir(tmp_path)
    expected = expectation(fixture_dir / name)
    if expected == "accepted":
        load_web_config(fixture_dir / name)
        return
    prefix = expected.removeprefix("refused ")
    with pytest.raises(ConfigError) as caught:
        load_web_config(fixture_dir / name)
    problems = [str(problem) for problem in caught.value.problems]
    assert any(problem.startswith(prefix) for problem in problems), problems


def test_the_command_line_exits_2_naming_the_key_and_0_for_a_good_file(fixture_dir):
    def check(name: str) -> subprocess.CompletedProcess[str]:
        args = ["--demo", "--check-config", "--web.config.file", str(fixture_dir / name)]
        return subprocess.run(
            [sys.executable, "-m", "exporter", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )

    for name, key in (
        ("users_cost_31.bad.yml", "basic_auth_users.eve"),
        ("key_file_empty.bad.yml", "tls_server_config.key_file"),
        ("headers_crlf.bad.yml", "http_server_config.headers.Content-Security-Policy"),
    ):
        result = check(name)
        assert result.returncode == 2, (name, result.stderr)
        assert key in result.stderr
        assert "Traceback" not in result.stderr
    result = check("users.good.yml")
    assert result.returncode == 0, result.stderr


def test_a_secret_is_never_in_a_refusal(fixture_dir, tmp_path):
    key = trustme.CA().issue_cert("localhost").private_key_pem.bytes().decode()
    hashed = "$2y$31$" + "a" * 21 + "." + "b" * 31
    path = tmp_path / "web.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {fixture_dir / 'server.crt'}\n  key: |\n"
        + "".join(f"    {line}\n" for line in key.splitlines())
        + f"basic_auth_users:\n  eve: {hashed}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    text = str(caught.value)
    assert "basic_auth_users.eve" in text
    assert hashed not in text
    path.write_text(path.read_text().replace(hashed, "$2y$10$" + "a" * 21 + "." + "b" * 31))
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    text = str(caught.value)
    assert "tls_server_config.key: does not load as the certificate's key" in text
    assert not any(line in text for line in key.splitlines()[1:-1])


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "too large"])
def test_a_certificate_that_is_no_regular_file_or_too_large_is_refused_at_once(
    kind, fixture_dir, tmp_path
):
    target = tmp_path / "cert.pem"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target = Path("/dev/zero")
    elif kind == "directory":
        target.mkdir()
    else:
        target.write_bytes(b"x" * (MAX_PEM_BYTES + 1))
    path = tmp_path / "web.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {target}\n  key_file: {fixture_dir / 'server.key'}\n"
    )
    done = threading.Event()

    def unblock_a_fifo_reader() -> None:
        # Should the FIFO ever be opened for reading, a writer ends the wait and the test fails.
        if kind == "fifo" and not done.wait(30):
            with open(target, "wb"):
                pass

    watchdog = threading.Thread(target=unblock_a_fifo_reader, daemon=True)
    watchdog.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_web_config(path)
    finally:
        done.set()
    problem = str(caught.value.problems[0])
    assert problem.startswith("tls_server_config.cert_file: ")
    if kind == "too large":
        assert "larger than 1 MiB" in problem
    elif kind != "directory":
        assert "not a regular file" in problem


def test_bcrypt_is_not_imported_without_basic_auth(fixture_dir):
    code = (
        "import sys\n"
        "from exporter import cli\n"
        "from exporter.web.webconfig import WebSettings, load_web_config\n"
        f"path = {str(fixture_dir / 'headers.good.yml')!r}\n"
        "WebSettings(path, load_web_config(path))\n"
        "assert 'bcrypt' not in sys.modules, 'imported'\n"
        f"path = {str(fixture_dir / 'users.good.yml')!r}\n"
        "WebSettings(path, load_web_config(path))\n"
        "assert 'bcrypt' not in sys.modules, 'imported to load users'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_key_is_in_the_web_config_table_of_the_docs():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text[text.index("## The web config file") : text.index("## Command line")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for prefix, model in (
        ("", WebConfigFile),
        ("tls_server_config.", TLSServerConfig),
        ("http_server_config.", HTTPServerConfig),
        ("rate_limit.", RateLimitConfig),
    ):
        for name in model.model_fields:
            if model is WebConfigFile and name != "basic_auth_users":
                continue  # the sections: their keys are listed
            assert any(
                f"`{prefix}{name}`" in row or (prefix and f"`{name}`" in row.split("|")[1])
                for row in rows
            ), f"{prefix}{name}"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('basic_auth_users: {"\\ud800": "x"}\n', "basic_auth_users: contains \\ud800"),
        ('basic_auth_users: {"a\\nb": 1}\n', "basic_auth_users.'a\\nb'"),
        (
            'http_server_config: {headers: {"\\ud800": deny}}\n',
            "http_server_config.headers: contains \\ud800",
        ),
        (
            'http_server_config: {headers: {Content-Security-Policy: "\\ud800"}}\n',
            "http_server_config.headers.Content-Security-Policy: contains \\ud800",
        ),
        (
            'tls_server_config: {cert_file: "\\ud800", key_file: "a\\0b"}\n',
            "tls_server_config.cert_file: contains \\ud800",
        ),
    ],
)
def test_names_that_no_terminal_prints_are_escaped_in_a_refusal(text, key, tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    message.encode("utf-8")  # no half surrogate pair left to break the printout
    assert any(str(problem).startswith(key) for problem in caught.value.problems), message
