"""TLS, basic auth, response headers and a rate limit for the exporter's own endpoints, from a file
in the Prometheus exporter-toolkit format (``--web.config.file``), so operators reuse what they have
for Go exporters::

    tls_server_config:
      cert_file: server.crt                   # relative paths: from the file's own directory
      key_file: server.key
      client_ca_file: ca.crt                  # optional: verify client certificates
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      alice: $2y$10$...                        # bcrypt hashes
    http_server_config:
      headers: {X-Frame-Options: deny}
    rate_limit: {interval: 100ms, burst: 10}

What the toolkit refuses is refused here, naming the key. A key the toolkit accepts but Python's
``ssl`` or aiohttp cannot honour is refused with a message that says so and why, never ignored
(docs/configuration.md lists which).

The file and the certificate files it names are read again when they change (checked once a
second). Each change builds a new TLS context, and new connections are set up by it (see
:class:`ServerContext`): a renewed certificate, a replaced client CA or a lifted version limit
applies without a restart. A new file that does not load keeps the last good one. ``/healthz``
stays open without credentials and outside the rate limit, so orchestrator probes need neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import ssl
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)

from exporter.bounded import (
    TLS_FILE_MAX_BYTES,
    WEB_CONFIG_FILE_MAX_BYTES,
    FileProblem,
    YAMLProblem,
    load_yaml,
    read_bytes,
    read_text,
)
from exporter.config import ConfigError, ConfigProblem, format_path, yaml_problem
from exporter.goduration import GO_MAX_NS, parse_go_duration_ns
from exporter.schema.types import StrictModel

log = structlog.get_logger("exporter.web.webconfig")

OPEN_PATHS = frozenset({"/healthz"})
"""Paths answered without credentials and outside the rate limit (orchestrator probes)."""
REALM = "messaging-stats-exporter"
CHALLENGE = f'Basic realm="{REALM}"'
CHECK_INTERVAL = 1.0
"""Seconds between two looks at the files' modification times."""
MAX_PEM_BYTES = TLS_FILE_MAX_BYTES
"""The largest certificate, key or CA file read."""

# --- what the toolkit's keys mean here -------------------------------------------------------

CLIENT_AUTH_MODES = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    # The toolkit asks for a certificate and never checks it; nothing here reads an unchecked
    # certificate, so every client is let in either way and none is asked.
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNSUPPORTED_CLIENT_AUTH = ("RequireAnyClientCert", "RequireClientCert")
VERIFYING_CLIENT_AUTH = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
UNSUPPORTED_TLS_VERSIONS = ("TLS10", "TLS11")

CIPHER_SUITES: dict[str, str | None] = {
    # Go's names (those of tls.CipherSuites()) → OpenSSL's. TLS 1.3 suites cannot be chosen, in
    # Go as in Python: they are accepted and change nothing.
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
HTTP2_CIPHER_SUITES = (
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
)
"""One of these must be in a TLS 1.2 ``cipher_suites`` list while ``http2`` is on, as Go's HTTP/2
server requires."""
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

SECURITY_HEADERS: dict[str, tuple[str, ...]] = {
    # The toolkit's allowlist, spelled as it spells them; an empty tuple takes any value.
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}")
"""A bcrypt hash: version, two-digit cost, 22 characters of salt (the last holding two bits, so
one of four), 31 of hash."""
BCRYPT_MIN_COST, BCRYPT_MAX_COST = 4, 20
"""Each step of cost doubles a check's CPU time; past the maximum, one check outlasts any
scrape, and holds up every other login while it runs."""
BCRYPT_MAX_PASSWORD_BYTES = 72
"""bcrypt reads no further: a longer password cannot be checked whole."""
DUMMY_HASH = b"$2b$10$ptBkiM1kz7Y1ZsuRoG03lOJ8FVhxigKgYxoSIw/ARcNdfktDdWzcS"
"""Cost 10, of a random password nobody kept: an unknown user's check costs what a known user's
does at the usual cost, and never lets anyone in."""

# --- the file's model ------------------------------------------------------------------------


class ToolkitModel(StrictModel):
    """A section of the file. A key written without a value (``key:``) is the key's default, as the
    toolkit's YAML decoder reads it."""

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


def _as_text(value: object) -> object:
    """A YAML scalar as the toolkit reads it into a string: ``1`` is ``"1"``, ``true`` is
    ``"true"``, nothing is ``""``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_as_text)]

GO_MAX_DURATION = GO_MAX_NS / 1e9
"""Seconds in the longest Go duration (about 292 years)."""


def parse_go_duration(value: object) -> float:
    """A Go ``time.Duration`` as the toolkit's YAML decoder reads it, in seconds: a string such as
    ``1s``, ``1m30s`` or ``250ms`` (``0`` alone needs no unit), or a bare number of
    nanoseconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a duration is a string such as 1s, 1m30s or 250ms")
    if isinstance(value, int | float):
        if not abs(value) <= GO_MAX_DURATION * 1e9:
            raise ValueError(f"invalid duration {value!r}: too long")
        return float(value) / 1e9
    try:
        return parse_go_duration_ns(value) / 1e9
    except ValueError as exc:
        raise ValueError(f"{exc}; use a string such as 1s, 1m30s or 250ms") from None


GoDuration = Annotated[float, BeforeValidator(parse_go_duration)]


class TLSServerConfig(ToolkitModel):
    cert: Text = ""
    key: SecretStr = SecretStr("")
    client_ca: Text = ""
    cert_file: Text = ""
    key_file: Text = ""
    client_auth_type: Text = ""
    client_ca_file: Text = ""
    cipher_suites: list[Text] = Field(default_factory=list)
    curve_preferences: list[Text] = Field(default_factory=list)
    min_version: Text = "TLS12"
    max_version: Text = "TLS13"
    prefer_server_cipher_suites: StrictBool = True
    client_allowed_sans: list[Text] | None = None

    @property
    def enabled(self) -> bool:
        """Whether the section asks for TLS at all, as the toolkit decides: a section that names
        no certificate, key, client CA or client auth serves plain HTTP."""
        return any(
            (
                self.cert,
                self.key.get_secret_value(),
                self.client_ca,
                self.cert_file,
                self.key_file,
                self.client_auth_type,
                self.client_ca_file,
            )
        )

    def resolved(self, directory: Path) -> TLSServerConfig:
        """Relative file paths taken from ``directory`` (the web config file's own)."""
        return self.model_copy(
            update={
                key: str(directory / value)
                for key in ("cert_file", "key_file", "client_ca_file")
                if (value := getattr(self, key)) and not Path(value).is_absolute()
            }
        )


class HTTPServerConfig(ToolkitModel):
    http2: StrictBool = True
    headers: dict[str, Text] = Field(default_factory=dict)


class RateLimitConfig(ToolkitModel):
    interval: GoDuration = 0.0
    burst: StrictInt = 0


class WebConfigFile(ToolkitModel):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    basic_auth_users: dict[str, Text] = Field(default_factory=dict)
    _tls_context: ssl.SSLContext | None = PrivateAttr(default=None)
    """The TLS context :func:`load_web_config` built from the files to check them, for the
    server to use rather than read them again."""

    @property
    def tls(self) -> TLSServerConfig | None:
        """The TLS section if it turns TLS on, else None."""
        tls = self.tls_server_config
        return tls if tls is not None and tls.enabled else None


def load_web_config(path: str | Path, *, with_tls: bool = True) -> WebConfigFile:
    """The file, validated, relative paths resolved; ``with_tls``, its certificate and key files
    loaded into the TLS context the server will use, which proves they load."""
    source = str(path)
    try:
        text = read_text(path, WEB_CONFIG_FILE_MAX_BYTES)
        raw = load_yaml(text, max_chars=WEB_CONFIG_FILE_MAX_BYTES) or {}
    except FileProblem as exc:
        raise ConfigError([ConfigProblem("", f"the file {exc}")], source) from None
    except YAMLProblem as exc:
        raise ConfigError([yaml_problem(exc)], source) from None
    return validate_web_config(raw, source, Path(path).absolute().parent, with_tls=with_tls)


def shown(text: str) -> str:
    """A name or path from the file as it can be printed: escaped if it holds a control
    character or half a surrogate pair (which no terminal encoding takes)."""
    return text if text.isprintable() else repr(text)


def validate_web_config(
    raw: object, source: str, directory: Path, *, with_tls: bool = True
) -> WebConfigFile:
    """The parsed file, checked as the toolkit checks it; relative paths taken from
    ``directory``; ``with_tls``, its TLS context built (see :func:`load_web_config`)."""
    try:
        config = WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    format_path([shown(p) if isinstance(p, str) else p for p in e["loc"]]),
                    "unknown key"
                    if e["type"] == "extra_forbidden"
                    else str(e["msg"]).removeprefix("Value error, "),
                )
                for e in exc.errors(include_url=False)
            ],
            source,
        ) from None
    if config.tls_server_config is not None:
        config = config.model_copy(
            update={"tls_server_config": config.tls_server_config.resolved(directory)}
        )
    problems = [
        *_user_problems(config.basic_auth_users),
        *_header_problems(config.http_server_config.headers),
    ]
    if config.tls is not None:
        problems += _tls_problems(config.tls, config.http_server_config.http2)
    if problems:
        raise ConfigError(problems, source)
    if config.tls is not None and with_tls:
        config._tls_context = tls_context(config.tls, source)
    return config


def _user_problems(users: dict[str, str]) -> list[ConfigProblem]:
    problems = []
    for name, hashed in users.items():
        key = f"basic_auth_users.{shown(name)}"
        match = BCRYPT_HASH.fullmatch(hashed)
        if match is None:
            problems.append(
                ConfigProblem(
                    key,
                    "not a bcrypt hash ($2a$, $2b$ or $2y$, a two-digit cost, 53 characters "
                    "of salt and hash); make one with htpasswd -nBC 10 \"\" | tr -d ':\\n'",
                )
            )
        elif not BCRYPT_MIN_COST <= int(match.group(1)) <= BCRYPT_MAX_COST:
            problems.append(
                ConfigProblem(
                    key,
                    f"bcrypt cost {int(match.group(1))} is outside {BCRYPT_MIN_COST} to "
                    f"{BCRYPT_MAX_COST}: each step doubles the CPU time of a check, and past "
                    f"{BCRYPT_MAX_COST} one check takes longer than any scrape waits; hash "
                    "again with cost 10",
                )
            )
    return problems


def _header_problems(headers: dict[str, str]) -> list[ConfigProblem]:
    problems = []
    for name, value in headers.items():
        key = f"http_server_config.headers.{shown(name)}"
        allowed = SECURITY_HEADERS.get(name)
        if allowed is None:
            problems.append(
                ConfigProblem(
                    key,
                    f"HTTP header {shown(name)!r} can not be configured; the toolkit allows only "
                    + ", ".join(SECURITY_HEADERS),
                )
            )
        elif allowed and value not in allowed:
            problems.append(
                ConfigProblem(
                    key, f"invalid value {shown(value)!r}; expected one of: {', '.join(allowed)}"
                )
            )
        elif _CONTROL_CHARACTERS.search(value):
            problems.append(
                ConfigProblem(key, "a header value cannot hold control characters (CR, LF, ...)")
            )
        elif not _encodable(value):
            problems.append(ConfigProblem(key, "a header value must be valid Unicode text"))
    return problems


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _tls_problems(tls: TLSServerConfig, http2: bool) -> list[ConfigProblem]:
    """What the toolkit refuses in a TLS section that turns TLS on, and what cannot be honoured
    here, in the toolkit's order."""
    problems: list[ConfigProblem] = []

    def problem(key: str, message: str) -> None:
        problems.append(ConfigProblem(f"tls_server_config.{key}", message))

    if not tls.cert_file and not tls.cert:
        problem("cert_file", "missing one of cert or cert_file")
    if not tls.key_file and not tls.key.get_secret_value():
        problem("key_file", "missing one of key or key_file")
    _client_auth_problems(tls, problem)
    _version_problems(tls, problem)
    _cipher_problems(tls, http2, problem)
    return problems


Problem = Callable[[str, str], None]
"""Records a problem at a key of ``tls_server_config``."""


def _client_auth_problems(tls: TLSServerConfig, problem: Problem) -> None:
    auth = tls.client_auth_type
    if auth in UNSUPPORTED_CLIENT_AUTH:
        problem(
            "client_auth_type",
            f"{auth} is not supported here: Python's ssl module cannot ask for a client "
            "certificate without verifying it; use RequireAndVerifyClientCert with "
            "client_ca_file",
        )
    elif auth not in CLIENT_AUTH_MODES:
        problem(
            "client_auth_type",
            f"invalid ClientAuth {auth!r}; one of: "
            + ", ".join([*list(CLIENT_AUTH_MODES)[1:], *UNSUPPORTED_CLIENT_AUTH[:1]]),
        )
    elif CLIENT_AUTH_MODES[auth] == ssl.CERT_NONE and auth != "RequestClientCert":
        for key in ("client_ca_file", "client_ca"):
            if getattr(tls, key):
                problem(
                    key,
                    "client CAs are configured without client_auth_type, so no client "
                    "certificate would be checked; set client_auth_type: "
                    "RequireAndVerifyClientCert",
                )
                break
    if tls.client_allowed_sans is not None and auth not in VERIFYING_CLIENT_AUTH:
        problem(
            "client_allowed_sans",
            "needs client_auth_type VerifyClientCertIfGiven or RequireAndVerifyClientCert: the "
            "names are read from a verified client certificate",
        )


def _version_problems(tls: TLSServerConfig, problem: Problem) -> None:
    versions = {}
    for key in ("min_version", "max_version"):
        name = getattr(tls, key)
        if name in UNSUPPORTED_TLS_VERSIONS:
            problem(
                key,
                f"{name} is not supported here: the OpenSSL under Python refuses TLS 1.0 and "
                "1.1 at its default security level; use TLS12 or TLS13",
            )
        elif name not in TLS_VERSIONS:
            problem(key, f"unknown TLS version {name!r}; one of: TLS12, TLS13")
        else:
            versions[key] = TLS_VERSIONS[name]
    if len(versions) == 2 and versions["min_version"] > versions["max_version"]:
        problem(
            "min_version",
            f"{tls.min_version} is above max_version {tls.max_version}: no client could connect",
        )


def _cipher_problems(tls: TLSServerConfig, http2: bool, problem: Problem) -> None:
    for index, name in enumerate(tls.cipher_suites):
        if name not in CIPHER_SUITES:
            problem(f"cipher_suites[{index}]", f"unknown cipher {name!r}")
    known = [name for name in tls.cipher_suites if name in CIPHER_SUITES]
    tls12_allowed = tls.min_version == "TLS12" or tls.min_version not in TLS_VERSIONS
    if (
        http2
        and known
        and tls12_allowed
        and not any(name in HTTP2_CIPHER_SUITES for name in tls.cipher_suites)
    ):
        problem(
            "cipher_suites",
            "with http_server_config.http2 on (the default) the list needs "
            f"{' or '.join(HTTP2_CIPHER_SUITES)}, as the toolkit requires; or set "
            "http_server_config.http2: false",
        )
    elif known and tls.max_version == "TLS12" and all(CIPHER_SUITES[n] is None for n in known):
        problem(
            "cipher_suites",
            "names only TLS 1.3 suites while max_version is TLS12: no client could connect",
        )
    for index, name in enumerate(tls.curve_preferences):
        if name not in CURVES:
            problem(f"curve_preferences[{index}]", f"unknown curve {name!r}")
    if len(set(tls.curve_preferences)) > 1:
        problem(
            "curve_preferences",
            "more than one curve is not supported here: Python's ssl module (before 3.15) can "
            "only restrict the key exchange to one curve; list one, or remove the key for "
            "OpenSSL's defaults",
        )


# --- TLS -------------------------------------------------------------------------------------


class PemError(Exception):
    """A certificate, key or CA that cannot be read; the text names no secret."""


def read_pem_file(path: str) -> bytes:
    """A regular file of at most :data:`MAX_PEM_BYTES`; opening never blocks (a FIFO is
    refused, not waited on)."""
    try:
        return read_bytes(path, MAX_PEM_BYTES)
    except FileProblem as exc:
        raise PemError(f"cannot read {shown(path)}: {exc}") from None


def pem_of(path: str | None, inline: str) -> bytes:
    """The PEM of a ``*_file`` key (read as :func:`read_pem_file` reads it) or, when the file is
    not named, of its inline key."""
    return read_pem_file(path) if path else inline.encode(errors="replace")


@contextlib.contextmanager
def in_memory_file(data: bytes) -> Iterator[str]:
    """A path that reads as ``data`` for as long as the block runs, for ``load_cert_chain`` (which
    takes paths only); on Linux the bytes never reach a disk."""
    if sys.platform == "linux":
        fd = os.memfd_create("web-config-pem", os.MFD_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "wb") as file:
                file.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
    else:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "pem"
            path.touch(mode=0o600)
            path.write_bytes(data)
            yield str(path)


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__


def tls_context(tls: TLSServerConfig, source: str = "") -> ssl.SSLContext:
    """A new server context for ``tls`` (already checked by :func:`validate_web_config`), its files
    read now; a file that does not load is a :class:`ConfigError` naming its key."""

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError([ConfigProblem(f"tls_server_config.{key}", message)], source)

    def pem(file_key: str, inline_key: str, inline: str) -> tuple[str, bytes]:
        path = getattr(tls, file_key)
        try:
            return (file_key if path else inline_key), pem_of(path, inline)
        except PemError as exc:
            raise fail(file_key, str(exc)) from None

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert_key, cert = pem("cert_file", "cert", tls.cert)
    key_key, key = pem("key_file", "key", tls.key.get_secret_value())
    try:
        # Loaded as a CA into a scratch context only to tell a bad certificate from a bad key.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=cert.decode("ascii"))
    except (ValueError, ssl.SSLError) as exc:
        raise fail(cert_key, f"no PEM certificate in it ({_ssl_reason(exc)})") from None
    with in_memory_file(cert) as cert_path, in_memory_file(key) as key_path:
        try:
            context.load_cert_chain(cert_path, key_path)
        except (OSError, ssl.SSLError) as exc:
            raise fail(
                key_key, f"does not load as the certificate's key ({_ssl_reason(exc)})"
            ) from None
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    openssl_names = [n for n in (CIPHER_SUITES[name] for name in tls.cipher_suites) if n]
    if openssl_names:
        try:
            context.set_ciphers(":".join(openssl_names))
        except ssl.SSLError as exc:
            raise fail("cipher_suites", f"not available here ({_ssl_reason(exc)})") from None
    elif tls.cipher_suites:
        # Only TLS 1.3 suites listed: TLS 1.2 has none, so only TLS 1.3 can connect.
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    if not tls.prefer_server_cipher_suites:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        context.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
    context.verify_mode = CLIENT_AUTH_MODES[tls.client_auth_type]
    if tls.client_ca_file or tls.client_ca:
        ca_key, ca = pem("client_ca_file", "client_ca", tls.client_ca)
        try:
            context.load_verify_locations(cadata=ca.decode("ascii"))
        except (ValueError, ssl.SSLError) as exc:
            raise fail(ca_key, f"no PEM certificate in it ({_ssl_reason(exc)})") from None
    elif context.verify_mode != ssl.CERT_NONE:
        # No client CA named: the toolkit verifies client certificates with the system's CAs.
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


class ServerContext(ssl.SSLContext):
    """The context handed to the server once: each new connection is set up by
    :attr:`current`, so a changed web config applies whole (certificate, client CAs, verify mode,
    versions, ciphers) to the next connection, and open connections keep theirs."""

    current: ssl.SSLContext

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.current.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def server_context(current: ssl.SSLContext) -> ServerContext:
    context = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    context.current = current
    return context


def peer_names(request: web.Request) -> set[str]:
    """The subject alternative names of the client's verified certificate, written as the toolkit
    compares them (IP addresses in their short form)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    certificate = ssl_object.getpeercert() if isinstance(ssl_object, ssl.SSLObject) else None
    entries: Any = (certificate or {}).get("subjectAltName", ())
    names = set()
    for kind, value in entries:
        name = str(value)
        if kind == "IP Address":
            with contextlib.suppress(ValueError):
                name = str(ipaddress.ip_address(name.strip()))
        names.add(name)
    return names


# --- basic auth ------------------------------------------------------------------------------


def basic_credentials(header: str) -> tuple[str, str] | None:
    """The user and password of a ``Basic`` ``Authorization`` header; None for another scheme, a
    value that is not base64 of UTF-8, or one without a colon (no password)."""
    try:
        auth = aiohttp.BasicAuth.decode(header, "utf-8")
    except ValueError:
        return None
    return auth.login, auth.password


_bcrypt_worker: ThreadPoolExecutor | None = None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # only where basic auth is configured

    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


async def bcrypt_check(password: bytes, hashed: bytes) -> bool:
    """``bcrypt.checkpw`` off the event loop, in the process's one bcrypt thread: at most one
    check runs at a time, so a flood of logins takes one core, not all (as the toolkit's mutex
    does). A check whose request went away before its turn is dropped unrun."""
    global _bcrypt_worker
    if _bcrypt_worker is None:
        _bcrypt_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_bcrypt_worker, _checkpw, password, hashed)


class BasicAuth:
    """Checks ``Authorization`` headers against bcrypt hashes.

    Every check of a well-formed header with a password bcrypt can read whole runs bcrypt once:
    an unknown user is checked against a fixed hash of cost 10 (:data:`DUMMY_HASH`), as the
    toolkit does. bcrypt is slow by design, so a successful (user, password) pair is remembered, in
    a bounded cache that failed attempts never touch: a scrape every few seconds costs no bcrypt,
    and wrong passwords cannot push Prometheus's entry out."""

    CACHE_SIZE = 256

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    async def check(self, header: str) -> bool:
        credentials = basic_credentials(header)
        if credentials is None:
            return False
        login, password = credentials
        secret = password.encode()
        if len(secret) > BCRYPT_MAX_PASSWORD_BYTES:
            return False
        key = hmac.new(self._key, login.encode() + b"\0" + secret, hashlib.sha256).digest()
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        hashed = self._users.get(login)
        ok = await bcrypt_check(secret, hashed or DUMMY_HASH)
        if not ok or hashed is None:
            return False
        self._verified[key] = None
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return True


# --- rate limit ------------------------------------------------------------------------------


class RateLimiter:
    """The toolkit's token bucket: up to ``burst`` requests at once, refilled by one every
    ``interval`` seconds. A burst of 0 lets nothing through, as in the toolkit."""

    def __init__(
        self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_second = 1.0 / interval
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_second)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def rate_limiter(config: RateLimitConfig) -> RateLimiter | None:
    """None where the toolkit has no limit: an interval of 0 (or below)."""
    return RateLimiter(config.interval, config.burst) if config.interval > 0 else None


# --- the web config in force -----------------------------------------------------------------


def _context_of(config: WebConfigFile, path: str | Path) -> ssl.SSLContext:
    """The TLS context of ``config`` (which turns TLS on): the one its load built, else one
    built now."""
    assert config.tls is not None
    return config._tls_context or tls_context(config.tls, str(path))


class WebSettings:
    """The web config in force: the TLS context handed to the server (whose :attr:`current`
    context is replaced when the files change), the client certificate names let in, the rate
    limit, the basic-auth check and the response headers."""

    def __init__(self, path: str | Path, config: WebConfigFile) -> None:
        self.path = Path(path)
        tls = config.tls
        self.context = server_context(_context_of(config, path)) if tls else None
        self._apply(config, previous=None)
        self._stamps = self._look()

    def _apply(self, config: WebConfigFile, previous: WebConfigFile | None) -> None:
        self.config = config
        tls = config.tls
        sans = tls.client_allowed_sans if tls is not None else None
        self.allowed_names = frozenset(sans) if sans is not None else None
        users = config.basic_auth_users
        if previous is None or previous.basic_auth_users != users:
            # Unchanged users keep their cache of verified credentials.
            self.auth = BasicAuth(users) if users else None
        if previous is None or previous.rate_limit != config.rate_limit:
            self.limiter = rate_limiter(config.rate_limit)
        self.headers = {
            name: value for name, value in config.http_server_config.headers.items() if value
        }
        if config.tls_server_config is not None and tls is None:
            log.warning(
                "web config: tls_server_config names no certificate, key or client CA; "
                "serving plain HTTP, as the exporter-toolkit does",
                path=str(self.path),
            )
        if (
            tls is not None
            and tls.client_auth_type in VERIFYING_CLIENT_AUTH
            and not (tls.client_ca_file or tls.client_ca)
        ):
            log.warning(
                "web config: no client_ca_file; client certificates are verified against the "
                "system's trusted CAs, as the exporter-toolkit does",
                path=str(self.path),
            )

    def _look(self) -> tuple[tuple[str, tuple[int, int] | None], ...]:
        """The modification time and size of the file and of each file it names."""
        files = [str(self.path)]
        tls = self.config.tls
        if tls is not None:
            files += [f for f in (tls.cert_file, tls.key_file, tls.client_ca_file) if f]
        stamps: list[tuple[str, tuple[int, int] | None]] = []
        for file in files:
            try:
                info = os.stat(file)
            except (OSError, ValueError):
                stamps.append((file, None))
            else:
                stamps.append((file, (info.st_mtime_ns, info.st_size)))
        return tuple(stamps)

    async def check(self) -> bool:
        """Load the files again if they changed since the last look; True if a new config now
        applies."""
        stamps = self._look()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            # Off the loop: YAML and certificates.
            config = await asyncio.to_thread(load_web_config, self.path)
            context = _context_of(config, self.path) if config.tls else None
        except ConfigError as exc:
            log.error("web config reload failed; the previous one stays", error=str(exc))
            return False
        if (context is None) != (self.context is None):
            log.error(
                "web config reload: switching TLS on or off needs a restart; "
                "the previous web config stays"
            )
            return False
        if context is not None and self.context is not None:
            self.context.current = context
        self._apply(config, previous=self.config)
        # A file looked at before the load keeps that look: a change made while it loaded is
        # seen at the next check. A file the new config names for the first time is looked at now.
        seen = dict(stamps)
        self._stamps = tuple((file, seen.get(file, stamp)) for file, stamp in self._look())
        log.info("web config reloaded", path=str(self.path))
        return True

    async def watch(self, interval: float = CHECK_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.check()

    def middlewares(self) -> list[Middleware]:
        """The response headers (outermost: 401s, 403s and 429s carry them too), then the client
        certificate's names, the rate limit and basic auth."""

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
        async def client_names(request: web.Request, handler: Handler) -> web.StreamResponse:
            # The toolkit refuses such a client in the handshake; Python's ssl has no hook there,
            # so the refusal comes right after it, on every path, and the connection is closed.
            allowed = self.allowed_names
            if allowed is not None and not allowed & peer_names(request):
                response = web.Response(status=403, text="Forbidden\n")
                response.force_close()
                return response
            return await handler(request)

        @web.middleware
        async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
            limiter = self.limiter
            if limiter is not None and request.path not in OPEN_PATHS and not limiter.allow():
                return web.Response(status=429, text="Too Many Requests\n")
            return await handler(request)

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

        return [add_headers, client_names, rate_limit, basic_auth]
