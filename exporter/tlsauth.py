"""TLS contexts and basic-auth checks of the web config (``--web.config.file``), in the standard
library and bcrypt only: the serving process (:mod:`exporter.serving`) imports this and nothing
heavier. :mod:`exporter.web.webconfig` parses and validates the file and uses these."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ssl
from collections import OrderedDict
from typing import Any

OPEN_PATHS = frozenset({"/healthz"})
"""Paths answered without credentials (orchestrator probes)."""
REALM = "messaging-stats-exporter"
CHALLENGE = f'Basic realm="{REALM}"'

VERIFY_MODES = {
    # Python verifies any certificate it asks for: "request" and "verify if given" are the same,
    # and so are the two "require" modes.
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


class TLSSettingError(Exception):
    """A TLS setting that cannot be applied: ``key`` names it (``cert_file``, ...)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def server_context(settings: dict[str, Any]) -> ssl.SSLContext:
    """The server context of a ``tls_server_config`` (plain values: paths as strings)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion[settings["min_version"].replace("TLS1", "TLSv1_")]
    if settings.get("max_version"):
        context.maximum_version = ssl.TLSVersion[settings["max_version"].replace("TLS1", "TLSv1_")]
    try:
        context.load_cert_chain(settings["cert_file"], settings["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise TLSSettingError("cert_file", f"cannot load ({type(exc).__name__})") from None
    client_auth = settings.get("client_auth_type") or "NoClientCert"
    ca_file = settings.get("client_ca_file")
    if client_auth != "NoClientCert" and not ca_file:
        raise TLSSettingError("client_ca_file", f"required by {client_auth}")
    if ca_file:
        try:
            context.load_verify_locations(ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSSettingError("client_ca_file", f"cannot load ({type(exc).__name__})") from None
    context.verify_mode = VERIFY_MODES[client_auth]
    return context


def basic_credentials(header: str) -> tuple[str, str] | None:
    """The user and password of a ``Basic`` ``Authorization`` header; None for another scheme, a
    value that is not base64 of UTF-8, or one without a colon (no password)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (login, password) if sep else None


class BasicAuth:
    """Checks ``Authorization`` headers against bcrypt hashes. bcrypt is slow by design, so a
    verified (user, password digest) pair is remembered: a scrape every few seconds costs no
    bcrypt."""

    CACHE_SIZE = 256

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self._verified: OrderedDict[tuple[str, bytes], bool] = OrderedDict()

    def _parse(self, header: str) -> tuple[tuple[str, bytes], bytes, bytes] | None:
        """(cache key, password, hash) of a header naming a known user, else None."""
        credentials = basic_credentials(header)
        if credentials is None:
            return None
        login, password = credentials
        hashed = self._users.get(login)
        if hashed is None:
            return None
        secret = password.encode()
        return (login, hmac.new(hashed, secret, hashlib.sha256).digest()), secret, hashed

    def known(self, header: str) -> bool | None:
        """The answer without bcrypt: False for a malformed header or an unknown user, the
        remembered answer of a pair checked before, else None (:meth:`check` it)."""
        parsed = self._parse(header)
        if parsed is None:
            return False
        key = parsed[0]
        if key in self._verified:
            self._verified.move_to_end(key)
            return self._verified[key]
        return None

    async def check(self, header: str) -> bool:
        known = self.known(header)
        if known is not None:
            return known
        parsed = self._parse(header)
        assert parsed is not None
        key, secret, hashed = parsed
        import bcrypt  # here: a serving process without users never loads it

        # Off the event loop: a bcrypt check takes tens of milliseconds.
        ok = await asyncio.to_thread(bcrypt.checkpw, secret, hashed)
        self._verified[key] = ok
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return ok
