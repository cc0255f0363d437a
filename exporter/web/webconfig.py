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

import ssl
from pathlib import Path
from typing import Any, Literal

import yaml
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import Field, ValidationError, field_validator

from exporter.config import ConfigError, ConfigProblem, format_path
from exporter.fields import StrictModel
from exporter.tlsauth import (
    CHALLENGE,
    OPEN_PATHS,
    BasicAuth,
    TLSSettingError,
    server_context,
)

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


def tls_settings(tls: TLSServerConfig) -> dict[str, Any]:
    """``tls`` as plain values, as :func:`exporter.tlsauth.server_context` and the serving
    process take them."""
    return {
        "cert_file": str(tls.cert_file),
        "key_file": str(tls.key_file),
        "client_ca_file": str(tls.client_ca_file) if tls.client_ca_file else None,
        "client_auth_type": tls.client_auth_type,
        "min_version": tls.min_version,
        "max_version": tls.max_version,
    }


def ssl_context(tls: TLSServerConfig, source: str = "") -> ssl.SSLContext:
    try:
        return server_context(tls_settings(tls))
    except TLSSettingError as exc:
        raise ConfigError(
            [ConfigProblem(f"tls_server_config.{exc.key}", exc.problem)], source
        ) from None


class BasicAuthCheck(BasicAuth):
    """Basic auth as an aiohttp middleware (the collecting process when it serves the clients
    itself)."""

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        if not await self.check(request.headers.get("Authorization", "")):
            return web.Response(
                status=401, text="Unauthorized\n", headers={"WWW-Authenticate": CHALLENGE}
            )
        return await handler(request)


def web_middlewares(web_config: WebConfigFile | None) -> list[Middleware]:
    """The response headers and basic auth of a web config, for the app that faces clients (the
    headers outermost: 401s carry them too, as the serving process's do)."""
    middlewares: list[Middleware] = []
    if web_config is not None:
        if web_config.http_server_config.headers:
            middlewares.append(headers_middleware(web_config.http_server_config.headers))
        if web_config.basic_auth_users:
            middlewares.append(BasicAuthCheck(web_config.basic_auth_users).middleware)
    return middlewares


def headers_middleware(headers: dict[str, str]) -> Middleware:
    @web.middleware
    async def add_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(headers)
        return response

    return add_headers
