"""The HTTP client every provider uses: deadline-bound timeouts, retries, a body size limit, the
exporter-wide budget of response bytes in flight, one classification of failures into reasons,
and a duration histogram for every request.

Error texts built here name the host and path and the kind of failure, never headers, bodies or
exception texts of aiohttp (those can carry URLs with credentials or tokens). The provider's own
error text is passed through the redactor the client is handed, which also learns the
credentials of every ``Authorization`` header the client sends. An error keeps at most an excerpt
of the body it was given, never the body: a failed run may keep its errors until it ends, one per
request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Histogram
from yarl import URL

from exporter.clock import Clock, SystemClock
from exporter.providers.errors import (
    HOPELESS,
    CollectError,
    ParseError,
    Reason,
    detached,
    reason_for_status,
)
from exporter.redaction import Redactor
from exporter.turnstile import Turnstile

log = structlog.get_logger("exporter.providers.http")

REQUEST_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
CONNECT_TIMEOUT = 10.0
MAX_ATTEMPTS = 3
BACKOFF_BASE = 0.5
BACKOFF_CAP = 10.0
ERROR_TEXT_LIMIT = 300
AUTHORIZATION_HEADERS = frozenset({"authorization", "proxy-authorization"})
EXCERPT_BYTES = 1024
"""How much of a body an error keeps (:attr:`CollectError.excerpt`)."""

READ_BUFSIZE = 16 * 1024
"""aiohttp's read buffer per response: it stops reading the socket past twice this."""
SOCKET_READ = 256 * 1024
"""The most asyncio reads from a socket at once (its transports' ``max_size``)."""
MAX_RESPONSE_HEADERS = 64
MAX_HEADER_FIELD = 4096
"""A response head may have at most this many header lines of at most this many bytes each (name
and value): 256 KiB in all, where an API's answers carry a few KB."""
RESPONSE_OVERHEAD = 2 * MAX_RESPONSE_HEADERS * MAX_HEADER_FIELD + 2 * READ_BUFSIZE + SOCKET_READ
"""What one response may hold besides its body: its head twice (the raw lines and the parsed
headers) and aiohttp's read-ahead (its buffer's high-water mark plus one socket read): 800 KiB."""


def response_reservation(max_response_bytes: int) -> int:
    """What a request reserves in the budget of bytes in flight: the most its answer can hold."""
    return max_response_bytes + RESPONSE_OVERHEAD


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
        # The limits RESPONSE_OVERHEAD is computed from.
        read_bufsize=READ_BUFSIZE,
        max_headers=MAX_RESPONSE_HEADERS,
        max_field_size=MAX_HEADER_FIELD,
    )


class ResponseBudget:
    """The bytes that answers in flight may hold, all targets together
    (``max_response_bytes_in_flight``). A request reserves :func:`response_reservation` of its
    target's ``max_response_bytes`` before it is sent and gives it back once its answer is read
    and decoded; a request that does not fit waits, first come first served (so a large one is
    never overtaken for ever by small ones)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def try_acquire(self, size: int) -> int | None:
        """Reserve ``size`` bytes (at most the whole budget) if they are free now and nobody waits
        for room; returns what was reserved, for :meth:`release`, else None."""
        size = min(size, self.limit)
        if not self._waiting and self.reserved + size <= self.limit:
            self.reserved += size
            return size
        return None

    async def acquire(self, size: int) -> int:
        """Reserve ``size`` bytes (at most the whole budget), waiting for them; returns what was
        reserved, for :meth:`release`."""
        held = self.try_acquire(size)
        if held is not None:
            return held
        size = min(size, self.limit)
        entry = (size, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry[1].done() and not entry[1].cancelled():
                self.release(size)  # granted, then cancelled before it could be used
            else:
                self._waiting.remove(entry)
                self._grant()
            raise
        return size

    def release(self, size: int) -> None:
        self.reserved -= size
        self._grant()

    @property
    def waiting(self) -> int:
        """How many requests wait for room."""
        return len(self._waiting)

    def _grant(self) -> None:
        while self._waiting:
            size, waiter = self._waiting[0]
            if self.reserved + size > self.limit:
                return
            self._waiting.popleft()
            self.reserved += size
            waiter.set_result(None)


class _Reserved:
    """``async with``: a share of the budget for one attempt, or a ``timeout`` failure when none
    frees up before the deadline."""

    def __init__(
        self, budget: ResponseBudget | None, size: int, deadline: float | None, where: str
    ) -> None:
        self._budget = budget
        self._size = size
        self._deadline = deadline
        self._where = where
        self._held = 0

    async def __aenter__(self) -> None:
        if self._budget is None:
            return
        held = self._budget.try_acquire(self._size)
        if held is not None:  # room now: no deadline to arm
            self._held = held
            return
        try:
            async with asyncio.timeout_at(self._deadline):
                self._held = await self._budget.acquire(self._size)
        except TimeoutError:
            raise CollectError(
                Reason.TIMEOUT,
                f"{self._where}: no room in max_response_bytes_in_flight "
                f"({self._budget.limit} bytes) before the deadline",
            ) from None

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._budget is not None and self._held:
            self._budget.release(self._held)
            self._held = 0


class RunGate:
    """What the requests of one run share, so the run stops at the first answer no retry can fix
    (:data:`~exporter.providers.errors.HOPELESS`). The run's first request goes alone, a probe:
    the others wait for its answer, so wrong credentials cost one request a run, not one per
    object. Once the run is stopped, no request or retry of it is sent; each fails at once with
    the stopping answer's reason. Requests already sent are awaited, not cut: the provider has
    them anyway, and cutting an answer closes its connection."""

    __slots__ = ("_answered", "_probe_done", "_probe_sent", "stopped")

    def __init__(self) -> None:
        self.stopped: CollectError | None = None
        self._probe_sent = False
        self._probe_done = False
        self._answered: asyncio.Event | None = None  # made only when a request has to wait

    async def enter(self) -> bool:
        """Wait until a request may be sent; True for the run's first, the probe, which must call
        :meth:`answered` when it ends, however it ends."""
        if not self._probe_sent:
            self._probe_sent = True
            return True
        if not self._probe_done:
            if self._answered is None:
                self._answered = asyncio.Event()
            await self._answered.wait()
        return False

    def answered(self) -> None:
        """The probe ended: the requests waiting for it go on (or fail, if it stopped the run)."""
        self._probe_done = True
        if self._answered is not None:
            self._answered.set()

    def stop(self, error: CollectError) -> None:
        """No further request of this run is sent; the first stopping answer is kept."""
        if self.stopped is None:
            self.stopped = error

    def refusal(self, where: str) -> CollectError | None:
        """The failure of a request that the stopped run does not send, or None."""
        stopped = self.stopped
        if stopped is None:
            return None
        return NotSent(stopped.reason, f"{where}: not sent, the run stopped at: {stopped.message}")


class NotSent(CollectError):
    """A request of a stopped run, failed without being sent (see :class:`RunGate`)."""


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
        excerpt: str | None = None,
    ) -> None:
        super().__init__(reason, message, excerpt=excerpt)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class ConnectError(CollectError):
    """No connection could be made: the provider cannot have seen the request."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.CONNECTION, message)


ErrorText = Callable[[bytes], "str | None"]
T = TypeVar("T")


def _refuse_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def decode_json(body: bytes | bytearray) -> Any:
    """JSON → Python, or a ``parse`` failure; NaN and Infinity literals are refused."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        kind = "too deeply nested"
    except ValueError:
        kind = "not valid JSON"
    # Raised outside the handler, and without the body: json's error holds the whole decoded
    # text, and would be kept as this one's context.
    del body
    raise CollectError(Reason.PARSE, f"the response body is {kind}")


def json_error_text(
    read: Callable[[Any], str | None], otherwise: ErrorText | None = None
) -> ErrorText:
    """An :data:`ErrorText` for an API whose error answers are JSON: ``read`` takes the decoded
    body and returns the provider's message, or None; a body ``read`` cannot make sense of (it
    raises :class:`ParseError`) has none. A body that is not JSON gives ``otherwise``'s text, or
    None. The client redacts and cuts the text it gets."""

    def error_text(body: bytes) -> str | None:
        try:
            decoded = decode_json(body)
        except CollectError:
            return otherwise(body) if otherwise is not None else None
        try:
            return read(decoded)
        except (CollectError, ParseError):
            return None

    return error_text


_ONE_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def excerpt(body: bytes | bytearray, redactor: Redactor | None = None) -> str:
    """The start of a body as text, for an error to keep; scrubbed by ``redactor`` before it is
    cut (so a cut never leaves part of a secret showing)."""
    if redactor is None:
        return bytes(body[:EXCERPT_BYTES]).decode("utf-8", "replace")
    # Wide enough that a secret straddling the cut is still found whole.
    text = bytes(body[: EXCERPT_BYTES * 2]).decode("utf-8", "replace")
    scrubbed = redactor.redact(text)
    # A body may quote JSON inside JSON (a provider echoing the request): with one level of
    # backslash escapes taken off, a secret escaped twice shows in a form the redactor knows.
    unescaped = _ONE_ESCAPE.sub(r"\1", scrubbed)
    rescrubbed = redactor.redact(unescaped)
    return (rescrubbed if rescrubbed != unescaped else scrubbed)[:EXCERPT_BYTES]


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit takes "²" too
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT whether or not it says so
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class ProviderClient:
    """A target's view of the shared session. Each run uses it :meth:`bound` to the run's
    deadline; every request and retry stays inside it. ``redactor`` (the service's) scrubs the
    error texts; a provider registers the secrets it obtains with :meth:`add_secret`.

    With a ``budget``, every attempt holds its :func:`response_reservation` from before it is sent
    until its answer is read and (by :meth:`get_json` and :meth:`post_json`) decoded."""

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
        budget: ResponseBudget | None = None,
    ) -> None:
        self._turnstile = turnstile
        self._redactor = redactor if redactor is not None else Redactor()
        self._session = session
        self.provider = provider
        self.account = account
        self._histogram = histogram
        self._limit = asyncio.Semaphore(max_concurrency)
        self._max_bytes = max_response_bytes
        self._budget = budget
        self._deadline: float | None = None
        self._clock: Clock = SystemClock()
        self._gate: RunGate | None = None
        self._owner: ProviderClient | None = None
        """For one run's :meth:`bound` copy, the client of the target: what the run-time secrets
        live as long as. None in the target's client itself (a reference to itself would be a
        cycle that only the garbage collector, which skips frozen objects, could free)."""

    def bound(self, deadline: float, clock: Clock) -> ProviderClient:
        """This client for one run that ends at ``deadline`` (event-loop time), reading the wall
        clock from ``clock``: the same session, limits, budget and histogram."""
        run_client = object.__new__(type(self))
        run_client.__dict__.update(self.__dict__)
        run_client._owner = self._owner or self
        run_client._deadline = deadline
        run_client._clock = clock
        run_client._gate = RunGate()
        return run_client

    def stop_run(self, error: CollectError) -> None:
        """An answer that no retry can fix, found by the provider in a success's body (an error
        envelope): no further request of this run is sent (see :class:`RunGate`). A provider calls
        it before it awaits anything else, so no waiting request of the run goes out first. Only
        a bound client has a run to stop."""
        if self._gate is not None:
            self._gate.stop(error)

    def add_secret(self, secret: str) -> None:
        """A secret obtained at run time (an access token): redacted wherever the exporter writes
        text, for as long as this client lives."""
        self._redactor.add_secret(secret, owner=self._owner or self)

    def redact(self, text: str, limit: int | None = None) -> str:
        """``text`` (a provider's own message quoting an answer) with every secret removed; see
        :meth:`Redactor.redact`."""
        return self._redactor.redact(text, limit)

    def _remaining(self) -> float:
        if self._deadline is None:
            return 60.0
        return self._deadline - asyncio.get_running_loop().time()

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
        fail_fast: bool = True,
    ) -> HttpResponse:
        """Send one request (with retries where safe) and return a 2xx/3xx answer, or raise
        :class:`CollectError` / :class:`HttpError` with the reason of the last attempt.

        A request that is not ``idempotent`` is retried only when the connection could not be
        made at all, so the provider cannot have seen it. With ``fail_fast``, an answer no retry
        can fix (``auth``, ``http_4xx``) stops the run (see :class:`RunGate`); a provider that
        handles such an answer itself (renews a cached token) sends the request without it.
        """
        return await self._send(
            _keep_response,
            method,
            url,
            endpoint=endpoint,
            json_body=json_body,
            headers=headers,
            idempotent=idempotent,
            error_text=error_text,
            fail_fast=fail_fast,
        )

    async def _send(
        self,
        read: Callable[[int, Mapping[str, str], bytearray], T],
        method: str,
        url: str,
        *,
        endpoint: str,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        error_text: ErrorText | None = None,
        fail_fast: bool = True,
    ) -> T:
        """:meth:`request`, with ``read`` turning a success's status, headers and body into the
        result while the attempt's share of the budget is still held."""
        where = f"{method} {URL(url).with_query(None).with_user(None)}"
        for name, value in (headers or {}).items():
            if name.lower() in AUTHORIZATION_HEADERS:
                # The credentials after the scheme: a Basic one's base64, a Bearer token.
                self.add_secret(value.partition(" ")[2].strip() or value)
        gate = self._gate
        probe = gate is not None and await gate.enter()
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    return await self._attempt(
                        method, url, where, endpoint, json_body, headers, error_text, read
                    )
                except CollectError as exc:
                    # An error leaves (or waits for its retry) without the frames it was raised
                    # through: they hold the body the attempt read.
                    detached(exc)
                    if fail_fast and gate is not None and exc.reason in HOPELESS:
                        gate.stop(exc)
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
        finally:
            if probe:
                assert gate is not None
                gate.answered()

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
        read: Callable[[int, Mapping[str, str], bytearray], T],
    ) -> T:
        reservation = _Reserved(
            self._budget, response_reservation(self._max_bytes), self._deadline, where
        )
        async with self._limit, reservation:
            # Checked once the request may go: the run may have stopped while it waited.
            refused = self._gate.refusal(where) if self._gate is not None else None
            if refused is not None:
                raise refused
            status, reason, response_headers, body = await self._exchange(
                method, url, where, endpoint, json_body, headers, self._timeout(where)
            )
            # What follows (decoding, parsing, recording, rendering) waits for its own loop turn
            # when many answers arrived together: the loop polls its sockets between two
            # collections.
            await self._turnstile.turn()
            if reason is None:
                try:
                    return read(status, response_headers, body)
                except CollectError as exc:
                    exc.excerpt = self._excerpt(body)
                    raise
            raise self._http_error(reason, where, status, response_headers, body, error_text)

    def _timeout(self, where: str) -> aiohttp.ClientTimeout:
        """One attempt's timeouts: what is left before the deadline."""
        remaining = self._remaining()
        if remaining <= 0:
            raise CollectError(Reason.TIMEOUT, f"{where}: no time left before the deadline")
        return aiohttp.ClientTimeout(
            total=remaining, sock_connect=min(CONNECT_TIMEOUT, remaining), sock_read=remaining
        )

    async def _exchange(
        self,
        method: str,
        url: str,
        where: str,
        endpoint: str,
        json_body: Any,
        headers: Mapping[str, str] | None,
        timeouts: aiohttp.ClientTimeout,
    ) -> tuple[int, Reason | None, Mapping[str, str], bytearray]:
        """One request sent and its answer read (status, the reason it fails for or None,
        headers, body), timed in the request histogram; no answer is a :class:`CollectError`."""
        code = "connection"
        started = time.perf_counter()
        try:
            async with self._session.request(
                method,
                url,
                json=json_body,
                headers=headers,
                timeout=timeouts,
                allow_redirects=False,
            ) as response:
                code = str(response.status)
                status = response.status
                reason = reason_for_status(status)
                body = await self._read_body(response, where, whole=reason is None)
                return status, reason, response.headers, body
        except TimeoutError:
            code = "timeout"
            raise CollectError(Reason.TIMEOUT, f"{where}: no answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"{where}: cannot connect ({_os_error_text(exc)})") from None
        except aiohttp.ClientResponseError:
            # aiohttp could not read the answer's head: not HTTP, or past MAX_RESPONSE_HEADERS
            # lines or MAX_HEADER_FIELD bytes a line.
            raise CollectError(
                Reason.CONNECTION,
                f"{where}: connection failed (the response head is malformed or has more "
                f"than {MAX_RESPONSE_HEADERS} header lines or one over {MAX_HEADER_FIELD} "
                "bytes)",
            ) from None
        except aiohttp.ClientError as exc:
            raise CollectError(
                Reason.CONNECTION, f"{where}: connection failed ({type(exc).__name__})"
            ) from None
        finally:
            self._histogram.labels(self.provider, endpoint, code).observe(
                time.perf_counter() - started
            )

    def _excerpt(self, body: bytearray) -> str:
        """What an error keeps of the body it failed on, secrets scrubbed."""
        return excerpt(body, self._redactor)

    def _http_error(
        self,
        reason: Reason,
        where: str,
        status: int,
        headers: Mapping[str, str],
        body: bytearray,
        error_text: ErrorText | None,
    ) -> HttpError:
        detail = None
        if error_text is not None:
            try:
                detail = error_text(bytes(body))
            except Exception:
                detail = None
        if detail:
            detail = self._redactor.redact(detail, ERROR_TEXT_LIMIT)
        message = f"{where}: HTTP {status}" + (f" ({detail})" if detail else "")
        return HttpError(
            reason,
            message,
            status,
            detail,
            _retry_after(headers, self._clock.time()),
            self._excerpt(body),
        )

    async def _read_body(
        self, response: aiohttp.ClientResponse, where: str, *, whole: bool
    ) -> bytearray:
        """The body, read into one buffer of at most ``max_response_bytes``: allocated once at
        its announced length, else grown as it comes. A success's body (``whole``) that passes the
        limit is a ``parse`` failure as soon as it does; an error answer's is cut at the limit (its
        status says what went wrong, and the start is enough for the provider's error text)."""
        limit = self._max_bytes
        length = response.content_length
        if length is not None and length <= limit:
            buffer = bytearray(length)
            size = 0
            async for chunk in response.content.iter_any():
                buffer[size : size + len(chunk)] = chunk
                size += len(chunk)
            del buffer[size:]
            return buffer
        buffer = bytearray()
        if whole and length is not None:
            too_large = True  # announced: not read at all
        else:
            too_large = False
            async for chunk in response.content.iter_any():
                room = limit - len(buffer)
                if len(chunk) > room:
                    if whole:
                        too_large = True
                        break
                    buffer += chunk[:room]
                    break
                buffer += chunk
        if not too_large:
            return buffer
        start = self._excerpt(buffer) if buffer else None
        del buffer
        raise CollectError(
            Reason.PARSE, f"{where}: the response body is larger than {limit} bytes", excerpt=start
        )

    async def get_json(self, url: str, **kwargs: Any) -> Any:
        """:meth:`request` ``GET``, decoded as JSON while the attempt's budget share is held."""
        return await self._send(_decode, "GET", url, **kwargs)

    async def post_json(self, url: str, **kwargs: Any) -> Any:
        """:meth:`request` ``POST``, decoded as JSON while the attempt's budget share is held."""
        return await self._send(_decode, "POST", url, **kwargs)


def _keep_response(status: int, headers: Mapping[str, str], body: bytearray) -> HttpResponse:
    return HttpResponse(status, headers, bytes(body))


def _decode(status: int, headers: Mapping[str, str], body: bytearray) -> Any:
    return decode_json(body)


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
