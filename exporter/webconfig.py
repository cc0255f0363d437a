"""TLS and basic auth for the exporter's own endpoints, from a file in the Prometheus
exporter-toolkit format (``--web.config.file``), so operators reuse what they have for Go
exporters::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt                  # optional: verify client certificates
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      alice: $2y$10$...                        # bcrypt hashes
    http_server_config:
      headers: {X-Frame-Options: deny}

``/healthz`` stays open without credentials, so orchestrator probes need none.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ssl
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import bcrypt
import yaml
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import Field, ValidationError, field_validator

from exporter.config import ConfigError, ConfigProblem, format_path
from exporter.fields import StrictModel

OPEN_PATHS = frozenset({"/healthz"})
REALM = "messaging-stats-exporter"

ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]


class TLSServerConfig(StrictModel):
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: ClientAuth = "NoClientCert"
    min_version: Literal["TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS12", "TLS13"] | None = None


class HTTPServerConfig(StrictModel):
    headers: dict[str, str] = Field(default_factory=dict)


class WebConfigFile(StrictModel):
    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(default_factory=dict)
    http_server_config: HTTPServerConfig = HTTPServerConfig()

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for name, hashed in users.items():
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"the password of {name!r} is not a bcrypt hash")
        return users


def load_web_config(path: str | Path) -> WebConfigFile:
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", "the file does not exist")], source) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            [ConfigProblem("", f"cannot be read ({type(exc).__name__})")], source
        ) from None
    try:
        config = WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    format_path(list(e["loc"])),
                    "unknown key"
                    if e["type"] == "extra_forbidden"
                    else str(e["msg"]).removeprefix("Value error, "),
                )
                for e in exc.errors(include_url=False)
            ],
            source,
        ) from None
    if config.tls_server_config is not None:
        ssl_context(config.tls_server_config, source)  # fail at start, not at the first request
    return config


def ssl_context(tls: TLSServerConfig, source: str = "") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion[tls.min_version.replace("TLS1", "TLSv1_")]
    if tls.max_version is not None:
        context.maximum_version = ssl.TLSVersion[tls.max_version.replace("TLS1", "TLSv1_")]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [ConfigProblem("tls_server_config.cert_file", f"cannot load ({type(exc).__name__})")],
            source,
        ) from None
    wants_client_cert = tls.client_auth_type != "NoClientCert"
    if wants_client_cert and tls.client_ca_file is None:
        raise ConfigError(
            [
                ConfigProblem(
                    "tls_server_config.client_ca_file", f"required by {tls.client_auth_type}"
                )
            ],
            source,
        )
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [
                    ConfigProblem(
                        "tls_server_config.client_ca_file", f"cannot load ({type(exc).__name__})"
                    )
                ],
                source,
            ) from None
    # Python verifies any certificate it asks for: "request" and "verify if given" are the same,
    # and so are the two "require" modes.
    context.verify_mode = {
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_OPTIONAL,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }[tls.client_auth_type]
    return context


class BasicAuthCheck:
    """Checks credentials against bcrypt hashes. bcrypt is slow by design, so a verified
    (user, password digest) pair is remembered: a scrape every few seconds costs no bcrypt."""

    CACHE_SIZE = 256

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self._verified: OrderedDict[tuple[str, bytes], bool] = OrderedDict()

    async def check(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            login, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self._users.get(login)
        if hashed is None or not sep:
            return False
        key = (login, hmac.new(hashed, password.encode(), hashlib.sha256).digest())
        if key in self._verified:
            self._verified.move_to_end(key)
            return self._verified[key]
        # Off the event loop: a bcrypt check takes tens of milliseconds.
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        self._verified[key] = ok
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return ok

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        if not await self.check(request.headers.get("Authorization", "")):
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )
        return await handler(request)


def web_middlewares(web_config: WebConfigFile | None) -> list[Middleware]:
    """Basic auth and the response headers of a web config, for the app that faces clients."""
    middlewares: list[Middleware] = []
    if web_config is not None:
        if web_config.basic_auth_users:
            middlewares.append(BasicAuthCheck(web_config.basic_auth_users).middleware)
        if web_config.http_server_config.headers:
            middlewares.append(headers_middleware(web_config.http_server_config.headers))
    return middlewares


def headers_middleware(headers: dict[str, str]) -> Middleware:
    @web.middleware
    async def add_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(headers)
        return response

    return add_headers
