"""TLS, basic auth and response headers for the exporter's own endpoints, from a file in the
Prometheus exporter-toolkit format (``--web.config.file``), so operators reuse what they have for Go
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

The file and the certificate files it names are read again when they change (checked once a
second), as the exporter-toolkit does: a certificate renewed on disk is served to the next TLS
connection without a restart. A new file that does not load keeps the last good one.
``/healthz`` stays open without credentials, so orchestrator probes need none.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import ssl
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import aiohttp
import bcrypt
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import Field, ValidationError, field_validator

from exporter.bounded import (
    WEB_CONFIG_FILE_MAX_BYTES,
    FileProblem,
    YAMLProblem,
    load_yaml,
    read_text,
)
from exporter.config import ConfigError, ConfigProblem, format_path, yaml_problem
from exporter.fields import StrictModel

log = structlog.get_logger("exporter.web.webconfig")

OPEN_PATHS = frozenset({"/healthz"})
"""Paths answered without credentials (orchestrator probes)."""
REALM = "messaging-stats-exporter"
CHALLENGE = f'Basic realm="{REALM}"'
CHECK_INTERVAL = 1.0
"""Seconds between two looks at the files' modification times."""

ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
VERIFY_MODES = {
    # Python verifies any certificate it asks for: "request" and "verify if given" are the same,
    # and so are the two "require" modes.
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


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
    """The file, validated, its certificate files loaded once to prove they load."""
    source = str(path)
    try:
        text = read_text(path, WEB_CONFIG_FILE_MAX_BYTES)
        raw = load_yaml(text, max_chars=WEB_CONFIG_FILE_MAX_BYTES) or {}
    except FileProblem as exc:
        raise ConfigError([ConfigProblem("", f"the file {exc}")], source) from None
    except YAMLProblem as exc:
        raise ConfigError([yaml_problem(exc)], source) from None
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
        ssl_context(config.tls_server_config, source)
    return config


def ssl_context(tls: TLSServerConfig, source: str = "") -> ssl.SSLContext:
    """A server context for ``tls``; a setting that cannot be applied is a :class:`ConfigError`
    naming its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _configure(context, tls, source)
    return context


def _configure(context: ssl.SSLContext, tls: TLSServerConfig, source: str) -> None:
    def problem(key: str, text: str) -> ConfigError:
        return ConfigError([ConfigProblem(f"tls_server_config.{key}", text)], source)

    context.minimum_version = ssl.TLSVersion[tls.min_version.replace("TLS1", "TLSv1_")]
    if tls.max_version:
        context.maximum_version = ssl.TLSVersion[tls.max_version.replace("TLS1", "TLSv1_")]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise problem("cert_file", f"cannot load ({type(exc).__name__})") from None
    if tls.client_auth_type != "NoClientCert" and not tls.client_ca_file:
        raise problem("client_ca_file", f"required by {tls.client_auth_type}")
    if tls.client_ca_file:
        try:
            context.load_verify_locations(tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise problem("client_ca_file", f"cannot load ({type(exc).__name__})") from None
    context.verify_mode = VERIFY_MODES[tls.client_auth_type]


def basic_credentials(header: str) -> tuple[str, str] | None:
    """The user and password of a ``Basic`` ``Authorization`` header; None for another scheme, a
    value that is not base64 of UTF-8, or one without a colon (no password)."""
    try:
        auth = aiohttp.BasicAuth.decode(header, "utf-8")
    except ValueError:
        return None
    return auth.login, auth.password


class BasicAuth:
    """Checks ``Authorization`` headers against bcrypt hashes.

    Every check of a well-formed header runs bcrypt once: an unknown user is checked against a
    dummy hash of the users' highest cost, so the time of an answer does not tell which users
    exist. bcrypt is slow by design, so a successful (user, password) pair is remembered, in a
    bounded cache that failed attempts never touch: a scrape every few seconds costs no bcrypt,
    and wrong passwords cannot push Prometheus's entry out."""

    CACHE_SIZE = 256

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        cost = max((int(hashed[4:6]) for hashed in users.values()), default=10)
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    async def check(self, header: str) -> bool:
        credentials = basic_credentials(header)
        if credentials is None:
            return False
        login, password = credentials
        key = hmac.new(
            self._key, login.encode() + b"\0" + password.encode(), hashlib.sha256
        ).digest()
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        hashed = self._users.get(login)
        # Off the event loop: a bcrypt check takes tens of milliseconds.
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed or self._dummy)
        if not ok or hashed is None:
            return False
        self._verified[key] = None
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return True


class WebSettings:
    """The web config in force: the TLS context handed to the server (changed in place when the
    files change), the basic-auth check and the response headers."""

    def __init__(self, path: str | Path, config: WebConfigFile) -> None:
        self.path = Path(path)
        self.config = config
        self.context = (
            ssl_context(config.tls_server_config, str(path)) if config.tls_server_config else None
        )
        self.auth = BasicAuth(config.basic_auth_users) if config.basic_auth_users else None
        self.headers = dict(config.http_server_config.headers)
        self._stamps = self._look()

    def _look(self) -> tuple[tuple[int, int] | None, ...]:
        """The modification time and size of the file and of each file it names."""
        files = [self.path]
        tls = self.config.tls_server_config
        if tls is not None:
            files += [tls.cert_file, tls.key_file]
            if tls.client_ca_file is not None:
                files.append(tls.client_ca_file)
        stamps: list[tuple[int, int] | None] = []
        for file in files:
            try:
                stat = os.stat(file)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    async def check(self) -> bool:
        """Load the files again if they changed since the last look; True if a new config now
        applies."""
        stamps = self._look()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            # Off the loop: YAML, certificates and the dummy bcrypt hash.
            config = await asyncio.to_thread(load_web_config, self.path)
            auth = (
                await asyncio.to_thread(BasicAuth, config.basic_auth_users)
                if config.basic_auth_users
                else None
            )
        except ConfigError as exc:
            log.error("web config reload failed; the previous one stays", error=str(exc))
            return False
        tls = config.tls_server_config
        if (tls is None) != (self.context is None):
            log.error(
                "web config reload: switching TLS on or off needs a restart; "
                "the previous web config stays"
            )
            return False
        if tls is not None and self.context is not None:
            try:
                _configure(self.context, tls, str(self.path))
            except ConfigError as exc:  # the files changed again since they were loaded
                log.error("web config reload failed; the previous one stays", error=str(exc))
                return False
        self.config, self.auth = config, auth
        self.headers = dict(config.http_server_config.headers)
        self._stamps = self._look()
        log.info("web config reloaded", path=str(self.path))
        return True

    async def watch(self, interval: float = CHECK_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.check()

    def middlewares(self) -> list[Middleware]:
        """The response headers (outermost: 401s carry them too), then basic auth."""

        @web.middleware
        async def add_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers.update(self.headers)
                raise
            response.headers.update(self.headers)
            return response

        @web.middleware
        async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            auth = self.auth
            if auth is None or request.path in OPEN_PATHS:
                return await handler(request)
            if not await auth.check(request.headers.get("Authorization", "")):
                return web.Response(
                    status=401, text="Unauthorized\n", headers={"WWW-Authenticate": CHALLENGE}
                )
            return await handler(request)

        return [add_headers, basic_auth]
