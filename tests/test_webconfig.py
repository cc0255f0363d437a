"""TLS and basic auth on the exporter's endpoints (--web.config.file, exporter-toolkit format),
checked with a real TLS client against certificates made at run time."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme
import yaml

from exporter.config import ConfigError
from exporter.providers.http import basic_auth
from exporter.service import make_exporter
from exporter.web.app import WEB_SETTINGS, build_app
from exporter.web.webconfig import WebSettings, load_web_config


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
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def creds(user: str, password: str) -> dict[str, str]:
    return {"Authorization": basic_auth(user, password)}


HASH = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=4)).decode()


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


async def test_tls_serves_metrics_to_a_client_that_trusts_the_ca(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    path = write(
        tmp_path,
        {"tls_server_config": {"cert_file": str(certs["cert"]), "key_file": str(certs["key"])}},
    )
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


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    path = write(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": str(certs["cert"]),
                "key_file": str(certs["key"]),
                "client_ca_file": str(certs["ca"]),
                "client_auth_type": "RequireAndVerifyClientCert",
            }
        },
    )
    server = await serve(aiohttp_server, make_config, path)
    url = f"https://127.0.0.1:{server.port}/metrics"
    async with aiohttp.ClientSession() as session:
        good = client_context(ca, ca.issue_cert("prometheus@example"))
        async with session.get(url, ssl=good) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with session.get(url, ssl=client_context(ca)) as response:
                await response.read()
        stranger = client_context(ca, trustme.CA().issue_cert("someone@example"))
        with pytest.raises(aiohttp.ClientError):
            async with session.get(url, ssl=stranger) as response:
                await response.read()


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


async def test_the_configured_headers_are_on_every_answer_401s_included(
    aiohttp_server, make_config, tmp_path
):
    path = write(
        tmp_path,
        {
            "basic_auth_users": {"prometheus": HASH},
            "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
        },
    )
    server = await serve(aiohttp_server, make_config, path)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        for path_, headers, status in (
            ("/metrics", {}, 401),
            ("/metrics", creds("prometheus", "right-password"), 200),
            ("/healthz", {}, 200),
        ):
            async with session.get(path_, headers=headers) as response:
                assert response.status == status
                assert response.headers["X-Frame-Options"] == "deny"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"basic_auth_users": {"a": "plaintext"}}, "basic_auth_users: the password of 'a'"),
        ({"tls_server_config": {"cert_file": "/x"}}, "tls_server_config.key_file"),
        ({"tls_config": {}}, "tls_config: unknown key"),
        (
            {"tls_server_config": {"cert_file": "/nonexistent", "key_file": "/nonexistent"}},
            "tls_server_config.cert_file: cannot load",
        ),
    ],
)
def test_a_bad_web_config_names_the_key(tmp_path, data, expected):
    with pytest.raises(ConfigError) as caught:
        load_web_config(write(tmp_path, data))
    assert any(str(problem).startswith(expected) for problem in caught.value.problems), str(
        caught.value
    )


def test_client_auth_without_a_ca_is_refused(tmp_path, certs):
    path = write(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": str(certs["cert"]),
                "key_file": str(certs["key"]),
                "client_auth_type": "RequireAndVerifyClientCert",
            }
        },
    )
    with pytest.raises(ConfigError, match="client_ca_file"):
        load_web_config(path)


async def test_an_unknown_user_costs_one_bcrypt_as_a_wrong_password_does(
    aiohttp_server, make_config, tmp_path, monkeypatch
):
    path = write(tmp_path, {"basic_auth_users": {"prometheus": HASH}})
    server = await serve(aiohttp_server, make_config, path)
    checks: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        checks.append(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        for user, password, status in (
            ("nobody", "x", 401),
            ("prometheus", "wrong", 401),
            ("prometheus", "right-password", 200),
        ):
            checks.clear()
            async with session.get("/metrics", headers=creds(user, password)) as response:
                assert response.status == status
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


async def test_a_renewed_certificate_is_served_without_a_restart(
    aiohttp_server, make_config, tmp_path, certs, ca
):
    path = write(
        tmp_path,
        {"tls_server_config": {"cert_file": str(certs["cert"]), "key_file": str(certs["key"])}},
    )
    server = await serve(aiohttp_server, make_config, path)

    async def served_certificate() -> bytes:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=client_context(ca), server_hostname="localhost"
        )
        try:
            return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()

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
