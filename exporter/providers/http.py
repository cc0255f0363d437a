"""The HTTP client every provider uses: deadline-bound timeouts, retries, a body size limit, one
classification of failures into reasons, and a duration histogram for every request.

Error texts built here name the host and path and the kind of failure, never headers, bodies or
exception texts of aiohttp (those can carry URLs with credentials or tokens). The provider's own
error text is passed through the redactor the client is handed, which also learns the
credentials of every ``Authorization`` header the client sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Histogram
from yarl import URL

from exporter.providers.errors import CollectError, Reason, reason_for_status
from exporter.providers.turns import Turnstile
from exporter.redaction import Redactor

log = structlog.get_logger("exporter.providers.http")

REQUEST_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
CONNECT_TIMEOUT = 10.0
MAX_ATTEMPTS = 3
BACKOFF_BASE = 0.5
BACKOFF_CAP = 10.0
ERROR_TEXT_LIMIT = 300
AUTHORIZATION_HEADERS = frozenset({"authorization", "proxy-authorization"})


def new_session(user_agent: str) -> aiohttp.ClientSession:
    """The one session all targets share. Per-request timeouts are set from each run's deadline;
    these are only the outer bounds."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=60.0),
        connector=aiohttp.TCPConnector(limit=256, limit_per_host=0, ttl_dns_cache=300),
        # One session serves every account: a cookie one account's answer sets must never ride
        # along with another account's requests to the same host. No provider uses cookies.
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": user_agent},
        raise_for_status=False,
        trust_env=False,
    )


def request_duration_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "messaging_exporter_provider_request_duration_seconds",
        "Duration of every HTTP request made to a provider, token requests included; code is the "
        "HTTP status, or connection/timeout when no answer came.",
        ["provider", "endpoint", "code"],
        buckets=REQUEST_DURATION_BUCKETS,
        registry=registry,
    )


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpError(CollectError):
    """An answer with a status that is not a success; ``detail`` is the provider's error text."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        status: int,
        detail: str | None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, message)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class ConnectError(CollectError):
    """No connection could be made: the provider cannot have seen the request."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.CONNECTION, message)


ErrorText = Callable[[bytes], "str | None"]


def decode_json(body: bytes) -> Any:
    """JSON → Python, or a ``parse`` failure; NaN and Infinity literals are refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(body, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        kind = "too deeply nested" if isinstance(exc, RecursionError) else "not valid JSON"
        raise CollectError(Reason.PARSE, f"the response body is {kind}") from None


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


class ProviderClient:
    """A target's view of the shared session. The scheduler sets ``deadline`` (event-loop time)
    before each run; every request and retry stays inside it. ``redactor`` (the service's) scrubs
    the error texts; a provider registers the secrets it obtains with :meth:`add_secret`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        provider: str,
        account: str,
        histogram: Histogram,
        max_concurrency: int,
        max_response_bytes: int,
        turnstile: Turnstile,
        redactor: Redactor | None = None,
    ) -> None:
        self._turnstile = turnstile
        self._redactor = redactor if redactor is not None else Redactor()
        self._session = session
        self.provider = provider
        self.account = account
        self._histogram = histogram
        self._limit = asyncio.Semaphore(max_concurrency)
        self._max_bytes = max_response_bytes
        self.deadline: float | None = None

    def add_secret(self, secret: str) -> None:
        """A secret obtained at run time (an access token): redacted wherever the exporter writes
        text, for as long as this client lives."""
        self._redactor.add_secret(secret, owner=self)

    def redact(self, text: str, limit: int | None = None) -> str:
        """``text`` (a provider's own message quoting an answer) with every secret removed; see
        :meth:`Redactor.redact`."""
        return self._redactor.redact(text, limit)

    def _remaining(self) -> float:
        if self.deadline is None:
            return 60.0
        return self.deadline - asyncio.get_running_loop().time()

    async def request(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        error_text: ErrorText | None = None,
    ) -> HttpResponse:
        """Send one request (with retries where safe) and return a 2xx/3xx answer, or raise
        :class:`CollectError` / :class:`HttpError` with the reason of the last attempt.

        A request that is not ``idempotent`` is retried only when the connection could not be
        made at all, so the provider cannot have seen it.
        """
        where = f"{method} {URL(url).with_query(None).with_user(None)}"
        for name, value in (headers or {}).items():
            if name.lower() in AUTHORIZATION_HEADERS:
                # The credentials after the scheme: a Basic one's base64, a Bearer token.
                self.add_secret(value.partition(" ")[2].strip() or value)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(
                    method, url, where, endpoint, json_body, headers, error_text
                )
            except CollectError as exc:
                wait = self._retry_wait(exc, attempt, idempotent)
                if wait is None:
                    raise
                log.debug(
                    "request retry",
                    provider=self.provider,
                    account=self.account,
                    endpoint=endpoint,
                    reason=str(exc.reason),
                    attempt=attempt,
                    wait_seconds=round(wait, 3),
                )
                await asyncio.sleep(wait)

    def _retry_wait(self, exc: CollectError, attempt: int, idempotent: bool) -> float | None:
        if attempt >= MAX_ATTEMPTS:
            return None
        retry_after: float | None = None
        if isinstance(exc, HttpError):
            if exc.status not in RETRY_STATUSES or not idempotent:
                return None
            retry_after = exc.retry_after
        elif exc.reason is Reason.CONNECTION:
            if not idempotent and not isinstance(exc, ConnectError):
                return None
        else:
            return None
        backoff = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))  # noqa: S311
        wait = max(backoff, retry_after or 0.0)
        # Leave time for the retried request itself; a wait that would pass the deadline is not
        # taken: the run ends with the reason of the answer that asked for it.
        if wait + 0.05 >= self._remaining():
            return None
        return wait

    async def _attempt(
        self,
        method: str,
        url: str,
        where: str,
        endpoint: str,
        json_body: Any,
        headers: Mapping[str, str] | None,
        error_text: ErrorText | None,
    ) -> HttpResponse:
        remaining = self._remaining()
        if remaining <= 0:
            raise CollectError(Reason.TIMEOUT, f"{where}: no time left before the deadline")
        timeout = aiohttp.ClientTimeout(
            total=remaining, sock_connect=min(CONNECT_TIMEOUT, remaining), sock_read=remaining
        )
        code = "connection"
        started = time.perf_counter()
        async with self._limit:
            try:
                async with self._session.request(
                    method,
                    url,
                    json=json_body,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    code = str(response.status)
                    body = await self._read_body(response, where)
                    status = response.status
                    response_headers = response.headers
            except TimeoutError:
                code = "timeout"
                raise CollectError(Reason.TIMEOUT, f"{where}: no answer in time") from None
            except aiohttp.ClientConnectorError as exc:
                raise ConnectError(f"{where}: cannot connect ({_os_error_text(exc)})") from None
            except aiohttp.ClientError as exc:
                raise CollectError(
                    Reason.CONNECTION, f"{where}: connection failed ({type(exc).__name__})"
                ) from None
            finally:
                self._histogram.labels(self.provider, endpoint, code).observe(
                    time.perf_counter() - started
                )
        # What follows (decoding, parsing, recording, rendering) waits for its own loop turn when
        # many answers arrived together: the loop polls its sockets between two collections.
        await self._turnstile.turn()
        reason = reason_for_status(status)
        if reason is None:
            return HttpResponse(status, response_headers, body)
        detail = None
        if error_text is not None:
            try:
                detail = error_text(body)
            except Exception:
                detail = None
        if detail:
            detail = self._redactor.redact(detail, ERROR_TEXT_LIMIT)
        message = f"{where}: HTTP {status}" + (f" ({detail})" if detail else "")
        raise HttpError(
            reason, message, status, detail, _retry_after(response_headers, time.time())
        )

    async def _read_body(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        """The body, or a ``parse`` failure as soon as it passes the size limit."""
        too_large = CollectError(
            Reason.PARSE, f"{where}: the response body is larger than {self._max_bytes} bytes"
        )
        if response.content_length is not None and response.content_length > self._max_bytes:
            raise too_large
        chunks = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_bytes:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def get_json(self, url: str, **kwargs: Any) -> Any:
        return decode_json((await self.request("GET", url, **kwargs)).body)

    async def post_json(self, url: str, **kwargs: Any) -> Any:
        return decode_json((await self.request("POST", url, **kwargs)).body)


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP Basic auth."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _os_error_text(exc: aiohttp.ClientConnectorError) -> str:
    os_error = exc.os_error
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if os_error is not None and os_error.strerror:
        return os_error.strerror
    return type(exc).__name__
