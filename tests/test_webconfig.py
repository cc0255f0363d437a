"""TLS, client certificates, basic auth, headers and the rate limit on the exporter's endpoints
(--web.config.file, exporter-toolkit format), checked with real TLS clients over loopback against
certificates made at run time; a changed file applies to new connections without a restart."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import structlog.testing
import trustme
import yaml

from exporter.config import ConfigError
from exporter.providers.http import basic_auth
from exporter.service import make_exporter
from exporter.web import webconfig
from exporter.web.app import WEB_SETTINGS, build_app
from exporter.web.webconfig import DUMMY_HASH, WebSettings, load_web_config


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "cert": tmp_path / "server.crt",
        "key": tmp_path / "server.key",
        "ca": tmp_path / "ca.crt",
    }
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return paths


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    """The web config file; its modification time moves on a second each write, so a rewrite is
    seen whatever the file system's clock granularity."""
    path = tmp_path / "web.yml"
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(yaml.safe_dump(data))
    stamp = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(stamp, stamp))
    return path


def tls_section(certs: dict[str, Path], **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(certs["cert"]), "key_file": str(certs["key"]), **extra}


def creds(user: str, password: str) -> dict[str, str]:
    return {"Authorization": basic_auth(user, password)}


HASH = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=4)).decode()
COST_18 = "$2y$18$" + "a" * 21 + "." + "b" * 31
"""Well formed, of no password: a test never checks a password against it."""


QUIET_TARGET = {
    "name": "thulium-quiet",
    "provider": "thulium",
    "base_url": "http://127.0.0.1:9/api",
    "username": "u",
    "password": "p",
}


async def serve(aiohttp_server: Any, make_config: Any, web_config_path: Path) -> Any:
    """The exporter's app with this web config, as ``serve`` builds it (the TLS context handed to
    the server); no collections run."""
    settings = WebSettings(web_config_path, load_web_config(web_config_path))
    exporter = make_exporter(make_config([QUIET_TARGET]), autostart=False)
    return await aiohttp_server(build_app(exporter, settings), ssl=settings.context)


def client_context(ca: trustme.CA, client_cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client_cert is not None:
        client_cert.configure_cert(context)
    return context


async def status(port: int, context: ssl.SSLContext, path: str = "/metrics") -> int | None:
    """The status of a GET over a new TLS connection, or None if the handshake or the exchange
    was refused."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.get(f"https://127.0.0.1:{port}{path}", ssl=context) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
            return None


async def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLObject:
    """A new TLS connection's negotiated state (the connection is closed again)."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return ssl_object
    finally:
        writer.close()


async def test_tls_serves_metrics_to_a_client_that_trusts_the_ca(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    path = write(tmp_path, {"tls_server_config": tls_section(certs)})
    server = await serve(aiohttp_server, make_config, path)
    url = f"https://127.0.0.1:{server.port}/metrics"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=client_context(ca)) as response:
            assert response.status == 200
            assert "messaging_exporter_build_info" in await response.text()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url, ssl=ssl.create_default_context())
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"http://127.0.0.1:{server.port}/metrics")


async def test_an_inline_certificate_and_key_are_served(aiohttp_server, make_config, tmp_path, ca):
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    path = write(
        tmp_path,
        {
            "tls_server_config": {
                "cert": leaf.cert_chain_pems[0].bytes().decode(),
                "key": leaf.private_key_pem.bytes().decode(),
            }
        },
    )
    server = await serve(aiohttp_server, make_config, path)
    served = (await handshake(server.port, client_context(ca))).getpeercert(binary_form=True)
    assert served == ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    path = write(
        tmp_path,
        {
            "tls_server_config": tls_section(
                certs,
                client_ca_file=str(certs["ca"]),
                client_auth_type="RequireAndVerifyClientCert",
            )
        },
    )
    server = await serve(aiohttp_server, make_config, path)
    good = client_context(ca, ca.issue_cert("prometheus@example"))
    assert await status(server.port, good) == 200
    assert await status(server.port, client_context(ca)) is None
    stranger = client_context(ca, trustme.CA().issue_cert("someone@example"))
    assert await status(server.port, stranger) is None


async def test_without_a_client_ca_certificates_are_verified_against_the_system_cas(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    # As the toolkit does: a private CA's client certificate is no better than none.
    path = write(
        tmp_path,
        {"tls_server_config": tls_section(certs, client_auth_type="RequireAndVerifyClientCert")},
    )
    server = await serve(aiohttp_server, make_config, path)
    assert await status(server.port, client_context(ca, ca.issue_cert("a@example"))) is None
    assert await status(server.port, client_context(ca)) is None
    path = write(
        tmp_path,
        {"tls_server_config": tls_section(certs, client_auth_type="VerifyClientCertIfGiven")},
    )
    assert await server.app[WEB_SETTINGS].check() is True
    assert await status(server.port, client_context(ca)) == 200
    assert await status(server.port, client_context(ca, ca.issue_cert("a@example"))) is None


async def test_a_replaced_client_ca_locks_the_old_client_out_and_lets_the_new_one_in(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    old_ca, new_ca = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "client-ca.crt"
    old_ca.cert_pem.write_to_path(str(ca_file))
    path = write(
        tmp_path,
        {
            "tls_server_config": tls_section(
                certs, client_ca_file=str(ca_file), client_auth_type="RequireAndVerifyClientCert"
            )
        },
    )
    server = await serve(aiohttp_server, make_config, path)
    settings = server.app[WEB_SETTINGS]
    old_client = client_context(ca, old_ca.issue_cert("old@example"))
    new_client = client_context(ca, new_ca.issue_cert("new@example"))
    assert await status(server.port, old_client) == 200
    assert await status(server.port, new_client) is None

    before = ca_file.stat().st_mtime_ns
    new_ca.cert_pem.write_to_path(str(ca_file))
    os.utime(ca_file, ns=(before + 1_000_000_000,) * 2)
    assert await settings.check() is True
    assert await status(server.port, old_client) is None
    assert await status(server.port, new_client) == 200


async def test_an_edit_made_while_a_reload_loads_is_applied_at_the_next_check(
    aiohttp_server, make_config, tmp_path, monkeypatch
):
    from exporter.web import webconfig

    path = write(tmp_path, {"rate_limit": {"interval": "1h", "burst": 3}})
    server = await serve(aiohttp_server, make_config, path)
    settings = server.app[WEB_SETTINGS]
    load = webconfig.load_web_config

    def load_then_edit(source: Path) -> Any:
        config = load(source)
        write(tmp_path, {"rate_limit": {"interval": "1h", "burst": 70}})  # another size
        return config

    write(tmp_path, {"rate_limit": {"interval": "1h", "burst": 5}})
    monkeypatch.setattr(webconfig, "load_web_config", load_then_edit)
    assert await settings.check() is True
    assert settings.config.rate_limit.burst == 5
    monkeypatch.setattr(webconfig, "load_web_config", load)
    assert await settings.check() is True
    assert settings.config.rate_limit.burst == 70


async def test_removing_max_version_lifts_the_limit_without_a_restart(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    path = write(tmp_path, {"tls_server_config": tls_section(certs, max_version="TLS12")})
    server = await serve(aiohttp_server, make_config, path)
    settings = server.app[WEB_SETTINGS]
    tls13_only = client_context(ca)
    tls13_only.minimum_version = ssl.TLSVersion.TLSv1_3
    assert (await handshake(server.port, client_context(ca))).version() == "TLSv1.2"
    assert await status(server.port, tls13_only) is None

    write(tmp_path, {"tls_server_config": tls_section(certs)})
    assert await settings.check() is True
    assert (await handshake(server.port, client_context(ca))).version() == "TLSv1.3"
    assert await status(server.port, tls13_only) == 200


async def test_requiring_client_certificates_applies_to_the_next_connection(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    path = write(tmp_path, {"tls_server_config": tls_section(certs)})
    server = await serve(aiohttp_server, make_config, path)
    assert await status(server.port, client_context(ca)) == 200
    write(
        tmp_path,
        {
            "tls_server_config": tls_section(
                certs,
                client_ca_file=str(certs["ca"]),
                client_auth_type="RequireAndVerifyClientCert",
            )
        },
    )
    assert await server.app[WEB_SETTINGS].check() is True
    assert await status(server.port, client_context(ca)) is None
    assert await status(server.port, client_context(ca, ca.issue_cert("p@example"))) == 200


def tls12_client(ca: trustme.CA, ciphers: str) -> ssl.SSLContext:
    context = client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


@pytest.mark.parametrize(
    ("prefer_server", "chosen"),
    [(True, "ECDHE-ECDSA-AES256-GCM-SHA384"), (False, "ECDHE-ECDSA-AES128-GCM-SHA256")],
)
async def test_cipher_suites_and_the_server_preference_are_honoured(
    prefer_server, chosen, aiohttp_server, make_config, tmp_path, certs, ca
):
    tls = tls_section(
        certs,
        cipher_suites=[
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ],
        prefer_server_cipher_suites=prefer_server,
        max_version="TLS12",
    )
    server = await serve(aiohttp_server, make_config, write(tmp_path, {"tls_server_config": tls}))
    # trustme's certificates have ECDSA keys.
    client = tls12_client(ca, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    cipher = (await handshake(server.port, client)).cipher()
    assert cipher is not None
    assert cipher[0] == chosen
    assert await status(server.port, tls12_client(ca, "ECDHE-ECDSA-AES256-SHA")) is None


async def test_one_curve_is_honoured(aiohttp_server, make_config, tmp_path, certs, ca):
    tls = tls_section(certs, min_version="TLS13", curve_preferences=["CurveP521"])
    server = await serve(aiohttp_server, make_config, write(tmp_path, {"tls_server_config": tls}))
    for curve, expected in (("secp521r1", 200), ("secp384r1", None)):
        client = client_context(ca)
        client.set_ecdh_curve(curve)
        assert await status(server.port, client) == expected, curve


@pytest.mark.parametrize(
    ("identity", "allowed", "expected"),
    [
        ("scraper.example", ["one", "scraper.example"], 200),
        ("127.0.0.1", ["127.0.0.1"], 200),
        ("scraper.example", ["nobody.example"], 403),
    ],
)
async def test_client_allowed_sans_let_in_only_the_names_listed(
    identity, allowed, expected, aiohttp_server, make_config, tmp_path, certs, ca
):
    tls = tls_section(
        certs,
        client_ca_file=str(certs["ca"]),
        client_auth_type="VerifyClientCertIfGiven",
        client_allowed_sans=allowed,
    )
    server = await serve(aiohttp_server, make_config, write(tmp_path, {"tls_server_config": tls}))
    client = client_context(ca, ca.issue_cert(identity))
    for path in ("/metrics", "/healthz"):
        assert await status(server.port, client, path) == expected
    assert await status(server.port, client_context(ca), "/healthz") == 403


async def test_basic_auth_guards_everything_but_healthz(aiohttp_server, make_config, tmp_path):
    path = write(tmp_path, {"basic_auth_users": {"prometheus": HASH}})
    server = await serve(aiohttp_server, make_config, path)
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        for auth in (
            {},
            creds("prometheus", "wrong"),
            creds("x", "y"),
            {"Authorization": "Basic !"},
            creds("prometheus", "right-password" + "x" * 60),
        ):
            async with session.get(f"{base}/metrics", headers=auth) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        for _ in range(2):  # the second time from the cache of verified credentials
            async with session.get(
                f"{base}/metrics", headers=creds("prometheus", "right-password")
            ) as response:
                assert response.status == 200
        async with session.get(f"{base}/") as response:
            assert response.status == 401
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200


async def test_the_configured_headers_are_on_every_answer_401s_and_429s_included(
    aiohttp_server, make_config, tmp_path
):
    path = write(
        tmp_path,
        {
            "basic_auth_users": {"prometheus": HASH},
            "http_server_config": {
                "headers": {
                    "X-Frame-Options": "deny",
                    "X-XSS-Protection": 1,
                    "Strict-Transport-Security": "",
                }
            },
            "rate_limit": {"interval": "1h", "burst": 3},
        },
    )
    server = await serve(aiohttp_server, make_config, path)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        for path_, headers, status_ in (
            ("/metrics", {}, 401),
            ("/metrics", creds("prometheus", "right-password"), 200),
            ("/healthz", {}, 200),
            ("/metrics", creds("prometheus", "right-password"), 200),
            ("/metrics", creds("prometheus", "right-password"), 429),
        ):
            async with session.get(path_, headers=headers) as response:
                assert response.status == status_
                assert response.headers["X-Frame-Options"] == "deny"
                assert response.headers["X-XSS-Protection"] == "1"
                assert "Strict-Transport-Security" not in response.headers  # blank: not sent


async def test_the_rate_limit_is_the_toolkits_token_bucket_and_spares_healthz(
    aiohttp_server, make_config, tmp_path
):
    path = write(tmp_path, {"rate_limit": {"interval": "1h", "burst": 2}})
    server = await serve(aiohttp_server, make_config, path)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        got = []
        for path_ in ("/metrics", "/", "/metrics", "/healthz", "/readyz"):
            async with session.get(path_) as response:
                got.append(response.status)
                if response.status == 429:
                    assert await response.text() == "Too Many Requests\n"
        assert got == [200, 200, 429, 200, 429]
        # A burst of 0 lets nothing through, as in the toolkit.
        write(tmp_path, {"rate_limit": {"interval": "1s", "burst": 0}})
        assert await server.app[WEB_SETTINGS].check() is True
        async with session.get("/metrics") as response:
            assert response.status == 429
        write(tmp_path, {"rate_limit": {"interval": 0, "burst": 0}})
        assert await server.app[WEB_SETTINGS].check() is True
        async with session.get("/metrics") as response:
            assert response.status == 200


def test_the_rate_limiter_refills_one_request_per_interval():
    now = [100.0]
    limiter = webconfig.RateLimiter(interval=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
    now[0] += 1.0
    assert limiter.allow() is False
    now[0] += 1.0
    assert [limiter.allow(), limiter.allow()] == [True, False]
    now[0] += 60.0  # never more than the burst
    assert [limiter.allow() for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"basic_auth_users": {"a": "plaintext"}}, "basic_auth_users.a: not a bcrypt hash"),
        ({"tls_server_config": {"cert_file": "/x"}}, "tls_server_config.key_file"),
        ({"tls_config": {}}, "tls_config: unknown key"),
        (
            {"tls_server_config": {"cert_file": "/nonexistent", "key_file": "/nonexistent"}},
            "tls_server_config.cert_file: cannot read /nonexistent",
        ),
        ({"rate_limit": {"burst": "many"}}, "rate_limit.burst: Input should be a valid integer"),
    ],
)
def test_a_bad_web_config_names_the_key(tmp_path, data, expected):
    with pytest.raises(ConfigError) as caught:
        load_web_config(write(tmp_path, data))
    assert any(str(problem).startswith(expected) for problem in caught.value.problems), str(
        caught.value
    )


def count_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The hashes bcrypt checks passwords against, from now on."""
    checks: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        checks.append(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    return checks


async def test_an_unknown_user_costs_one_bcrypt_as_a_wrong_password_does(
    aiohttp_server, make_config, tmp_path, monkeypatch
):
    path = write(tmp_path, {"basic_auth_users": {"prometheus": HASH}})
    server = await serve(aiohttp_server, make_config, path)
    checks = count_checks(monkeypatch)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        for user, password, status_ in (
            ("nobody", "x", 401),
            ("prometheus", "wrong", 401),
            ("prometheus", "right-password", 200),
        ):
            checks.clear()
            async with session.get("/metrics", headers=creds(user, password)) as response:
                assert response.status == status_
            assert len(checks) == 1, (user, password)
        # The success is cached: 300 failed attempts (more than the cache holds) do not evict it.
        for index in range(300):
            async with session.get("/metrics", headers=creds("prometheus", f"w{index}")) as r:
                assert r.status == 401
        checks.clear()
        async with session.get(
            "/metrics", headers=creds("prometheus", "right-password")
        ) as response:
            assert response.status == 200
        assert checks == []


async def test_an_unknown_user_is_checked_at_cost_10_whatever_the_users_costs(
    aiohttp_server, make_config, tmp_path, monkeypatch
):
    checks = count_checks(monkeypatch)
    path = write(tmp_path, {"basic_auth_users": {"ben": COST_18, "prometheus": HASH}})
    server = await serve(aiohttp_server, make_config, path)
    assert checks == []  # loading and starting run no bcrypt
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        async with session.get("/metrics", headers=creds("nobody", "guess")) as response:
            assert response.status == 401
        assert checks == [DUMMY_HASH]
        assert DUMMY_HASH.startswith(b"$2b$10$")
        # Longer than bcrypt reads: 401 without a check.
        checks.clear()
        async with session.get("/metrics", headers=creds("ben", "p" * 73)) as response:
            assert response.status == 401
        assert checks == []


async def test_one_bcrypt_check_runs_at_a_time(aiohttp_server, make_config, tmp_path, monkeypatch):
    path = write(tmp_path, {"basic_auth_users": {"prometheus": HASH}})
    server = await serve(aiohttp_server, make_config, path)
    lock = threading.Lock()
    running, most = [0], [0]
    first_in, release = threading.Event(), threading.Event()

    def held(password: bytes, hashed: bytes) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        first_in.set()
        release.wait(60)
        with lock:
            running[0] -= 1
        return False

    monkeypatch.setattr(bcrypt, "checkpw", held)
    loop = asyncio.get_running_loop()
    submitted = 0
    all_submitted = asyncio.Event()
    run_in_executor = loop.run_in_executor

    def counted(executor: Any, func: Any, *args: Any) -> Any:
        nonlocal submitted
        if func is webconfig._checkpw:
            submitted += 1
            if submitted == 6:
                all_submitted.set()
        return run_in_executor(executor, func, *args)

    monkeypatch.setattr(loop, "run_in_executor", counted)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:

        async def attempt(index: int) -> int:
            async with session.get("/metrics", headers=creds("u", f"p{index}")) as response:
                return response.status

        attempts = [asyncio.create_task(attempt(index)) for index in range(6)]
        await all_submitted.wait()
        await loop.run_in_executor(None, first_in.wait, 60)
        assert most[0] == 1  # six checks asked for, one running
        release.set()
        assert await asyncio.gather(*attempts) == [401] * 6
    assert most[0] == 1


async def test_a_renewed_certificate_is_served_without_a_restart(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    path = write(tmp_path, {"tls_server_config": tls_section(certs)})
    server = await serve(aiohttp_server, make_config, path)

    async def served_certificate() -> bytes:
        return (await handshake(server.port, client_context(ca))).getpeercert(binary_form=True)

    first = await served_certificate()
    renewed = ca.issue_cert("127.0.0.1", "localhost")
    renewed.private_key_pem.write_to_path(str(certs["key"]))
    renewed.cert_chain_pems[0].write_to_path(str(certs["cert"]))
    expected = ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    assert expected != first
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10  # the files are looked at once a second
    while (got := await served_certificate()) != expected:
        assert loop.time() < deadline, "the renewed certificate was never served"
        await asyncio.sleep(0.1)
    assert got == expected


async def test_a_broken_new_web_config_keeps_the_last_good_one(
    aiohttp_server, make_config, tmp_path
):
    path = write(tmp_path, {"basic_auth_users": {"prometheus": HASH}})
    server = await serve(aiohttp_server, make_config, path)
    settings = server.app[WEB_SETTINGS]
    path.write_text("basic_auth_users: {prometheus: plaintext}\n")
    assert await settings.check() is False
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        async with session.get("/metrics", headers=creds("prometheus", "right-password")) as r:
            assert r.status == 200
        other = bcrypt.hashpw(b"new-password", bcrypt.gensalt(rounds=4)).decode()
        write(tmp_path, {"basic_auth_users": {"prometheus": other}})
        assert await settings.check() is True
        async with session.get("/metrics", headers=creds("prometheus", "new-password")) as r:
            assert r.status == 200


async def test_a_reload_that_keeps_the_users_keeps_their_verified_credentials(
    aiohttp_server, make_config, tmp_path, monkeypatch
):
    path = write(tmp_path, {"basic_auth_users": {"prometheus": HASH}})
    server = await serve(aiohttp_server, make_config, path)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        async with session.get("/metrics", headers=creds("prometheus", "right-password")) as r:
            assert r.status == 200
        write(
            tmp_path,
            {
                "basic_auth_users": {"prometheus": HASH},
                "http_server_config": {"headers": {"X-Frame-Options": "sameorigin"}},
            },
        )
        assert await server.app[WEB_SETTINGS].check() is True
        checks = count_checks(monkeypatch)
        async with session.get("/metrics", headers=creds("prometheus", "right-password")) as r:
            assert r.status == 200
            assert r.headers["X-Frame-Options"] == "sameorigin"
        assert checks == []


def test_a_tls_section_that_serves_plain_http_or_trusts_the_system_cas_is_warned_of(
    tmp_path, certs
):
    cases = [
        ({"tls_server_config": {"min_version": "TLS13"}}, "serving plain HTTP"),
        (
            {"tls_server_config": tls_section(certs, client_auth_type="VerifyClientCertIfGiven")},
            "verified against the system's trusted CAs",
        ),
        ({"tls_server_config": tls_section(certs)}, None),
    ]
    for data, warning in cases:
        path = write(tmp_path, data)
        with structlog.testing.capture_logs() as logs:
            settings = WebSettings(path, load_web_config(path))
        events = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
        if warning is None:
            assert events == []
        else:
            assert len(events) == 1
            assert warning in events[0]
        assert (settings.context is None) == (data["tls_server_config"].get("cert_file") is None)


def test_the_key_file_is_read_once_per_load_and_never_by_the_health_check(
    tmp_path, certs, monkeypatch
):
    from exporter.web import healthcheck, webconfig

    read: list[str] = []
    read_pem_file = webconfig.read_pem_file

    def counting(path: str) -> bytes:
        read.append(Path(path).name)
        return read_pem_file(path)

    monkeypatch.setattr(webconfig, "read_pem_file", counting)
    path = write(tmp_path, {"tls_server_config": tls_section(certs)})
    WebSettings(path, load_web_config(path))
    assert read.count("server.key") == 1
    read.clear()
    with pytest.raises(healthcheck.HealthCheckError):  # nothing listens on port 1
        healthcheck.check("/nonexistent/config.yaml", "127.0.0.1:1", str(path), {}, timeout=1)
    assert "server.key" not in read
