"""The shared HTTP client against a real upstream on loopback: retries, Retry-After, the deadline,
the size limit, classification into reasons, the request histogram; what an error keeps, and the
budget of bytes in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram

from exporter.clock import SystemClock
from exporter.providers.errors import CollectError, Reason
from exporter.providers.http import (
    EXCERPT_BYTES,
    MAX_HEADER_FIELD,
    MAX_RESPONSE_HEADERS,
    HttpError,
    HttpResponse,
    ProviderClient,
    ResponseBudget,
    decode_json,
    new_session,
    request_duration_histogram,
    response_reservation,
)
from exporter.turnstile import Turnstile
from tests.conftest import FakeClock


class Upstream:
    """An upstream that answers from a script of (status, headers, body) per request."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        status, headers, body = self.script.pop(0) if self.script else (200, {}, b"{}")
        return web.Response(status=status, headers=headers, body=body)


@pytest.fixture
async def upstream(
    aiohttp_server: Callable[..., Awaitable[Any]],
) -> tuple[Upstream, str]:
    up = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", up.handle)
    server = await aiohttp_server(app)
    return up, str(server.make_url("")).rstrip("/")


def provider_client(session: Any, histogram: Histogram, account: str = "acct") -> ProviderClient:
    """A client of provider "test" with 5 s to its deadline."""
    made = ProviderClient(
        session,
        provider="test",
        account=account,
        histogram=histogram,
        max_concurrency=2,
        max_response_bytes=4096,
        turnstile=Turnstile(),
    )
    return made.bound(asyncio.get_running_loop().time() + 5, SystemClock())


@pytest.fixture
async def client() -> AsyncIterator[tuple[ProviderClient, CollectorRegistry]]:
    registry = CollectorRegistry()
    async with new_session("test") as session:
        yield provider_client(session, request_duration_histogram(registry)), registry


def count(registry: CollectorRegistry, code: str) -> float:
    value = registry.get_sample_value(
        "messaging_exporter_provider_request_duration_seconds_count",
        {"provider": "test", "endpoint": "ep", "code": code},
    )
    return value or 0.0


async def test_retries_a_503_then_succeeds(upstream, client):
    up, url = upstream
    http, registry = client
    up.script = [(503, {}, b"busy"), (200, {}, b'{"ok": 1}')]
    assert await http.get_json(f"{url}/x", endpoint="ep") == {"ok": 1}
    assert up.hits == 2
    assert count(registry, "503") == 1
    assert count(registry, "200") == 1


async def test_does_not_retry_a_500(upstream, client):
    up, url = upstream
    http, _ = client
    up.script = [(500, {}, b"<html>oops</html>")]
    with pytest.raises(CollectError) as caught:
        await http.get_json(f"{url}/x", endpoint="ep")
    assert caught.value.reason is Reason.HTTP_5XX
    assert up.hits == 1


async def test_a_request_unsafe_to_repeat_is_not_retried_after_an_answer(upstream, client):
    up, url = upstream
    http, _ = client
    up.script = [(503, {}, b"busy"), (200, {}, b"{}")]
    with pytest.raises(CollectError) as caught:
        await http.post_json(f"{url}/refresh", endpoint="ep", idempotent=False)
    assert caught.value.reason is Reason.HTTP_5XX
    assert up.hits == 1


async def test_retry_after_in_seconds_is_honoured(upstream, client):
    up, url = upstream
    http, _ = client
    up.script = [(429, {"Retry-After": "1"}, b""), (200, {}, b"{}")]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await http.get_json(f"{url}/x", endpoint="ep")
    assert loop.time() - started >= 1.0
    assert up.hits == 2


async def test_retry_after_as_an_http_date_is_honoured(upstream, client):
    up, url = upstream
    http, _ = client
    # An HTTP date has whole seconds: "now" asks for a wait of 0 to 1 s.
    up.script = [(503, {"Retry-After": formatdate(usegmt=True)}, b""), (200, {}, b"{}")]
    await http.get_json(f"{url}/x", endpoint="ep")
    assert up.hits == 2


async def test_a_retry_after_date_is_read_by_the_runs_clock(upstream, client):
    up, url = upstream
    http, _ = client
    # The run's clock is an hour ahead of the machine's: by it, the date is now, no wait.
    ahead = FakeClock(time.time() + 3600)
    http = http.bound(asyncio.get_running_loop().time() + 5, ahead)
    up.script = [
        (503, {"Retry-After": formatdate(ahead.time(), usegmt=True)}, b""),
        (200, {}, b"{}"),
    ]
    await http.get_json(f"{url}/x", endpoint="ep")
    assert up.hits == 2


async def test_a_retry_after_of_non_ascii_digits_is_ignored_not_a_crash(upstream, client):
    up, url = upstream
    http, _ = client
    # "²".isdigit() is true, float("²") raises: the header counts as absent, the 503 is retried.
    up.script = [(503, {"Retry-After": "²"}, b""), (200, {}, b"{}")]
    assert await http.get_json(f"{url}/x", endpoint="ep") == {}
    assert up.hits == 2


async def test_a_retry_after_date_without_a_zone_is_gmt(upstream, client, monkeypatch):
    up, url = upstream
    http, _ = client
    # In a zone 8 hours behind UTC, "now" read as local time would be a wait past the deadline.
    monkeypatch.setenv("TZ", "PST8")
    time.tzset()
    try:
        now = formatdate(usegmt=True).replace("GMT", "-0000")  # -0000: no zone
        up.script = [(503, {"Retry-After": now}, b""), (200, {}, b"{}")]
        await http.get_json(f"{url}/x", endpoint="ep")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert up.hits == 2


async def test_a_retry_after_past_the_deadline_ends_with_the_answers_reason(upstream, client):
    up, url = upstream
    http, _ = client
    up.script = [(429, {"Retry-After": "30"}, b"")]
    with pytest.raises(CollectError) as caught:
        await http.get_json(f"{url}/x", endpoint="ep")
    assert caught.value.reason is Reason.RATE_LIMITED
    assert up.hits == 1


async def test_retries_stop_after_three_attempts_with_the_last_reason(upstream, client):
    up, url = upstream
    http, _ = client
    up.script = [(502, {}, b""), (503, {}, b""), (504, {}, b""), (200, {}, b"{}")]
    with pytest.raises(CollectError) as caught:
        await http.get_json(f"{url}/x", endpoint="ep")
    assert caught.value.reason is Reason.HTTP_5XX
    assert "504" in caught.value.message
    assert up.hits == 3


async def test_a_body_over_the_limit_is_parse_without_reading_it_all(upstream, client):
    up, url = upstream
    http, _ = client
    up.script = [(200, {}, b"[" + b"0," * 10_000 + b"0]")]
    with pytest.raises(CollectError) as caught:
        await http.get_json(f"{url}/x", endpoint="ep")
    assert caught.value.reason is Reason.PARSE
    assert "larger than 4096 bytes" in caught.value.message


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (401, Reason.AUTH),
        (403, Reason.AUTH),
        (404, Reason.HTTP_4XX),
        (400, Reason.HTTP_4XX),
        (429, Reason.RATE_LIMITED),
        (500, Reason.HTTP_5XX),
    ],
)
async def test_status_classification(upstream, client, status, reason):
    up, url = upstream
    http, _ = client
    # No time for Retry-After-less retries.
    http = http.bound(asyncio.get_running_loop().time() + 0.5, SystemClock())
    up.script = [(status, {"Retry-After": "10"}, b"")] * 3
    with pytest.raises(CollectError) as caught:
        await http.get_json(f"{url}/x", endpoint="ep")
    assert caught.value.reason is reason


@pytest.mark.parametrize("body", [b"<html>", b"", b"{", b"NaN", b"[Infinity]", b"[" * 100_000])
async def test_a_body_that_is_not_json_is_parse(upstream, client, body):
    up, url = upstream
    http, _ = client
    http._max_bytes = 1_000_000
    up.script = [(200, {}, body)]
    with pytest.raises(CollectError) as caught:
        await http.get_json(f"{url}/x", endpoint="ep")
    assert caught.value.reason is Reason.PARSE


async def test_connection_refused_is_connection_and_retried(client, unused_tcp_port):
    http, registry = client
    with pytest.raises(CollectError) as caught:
        await http.get_json(f"http://127.0.0.1:{unused_tcp_port}/x", endpoint="ep")
    assert caught.value.reason is Reason.CONNECTION
    assert "cannot connect" in caught.value.message
    assert count(registry, "connection") == 3


async def test_no_answer_before_the_deadline_is_timeout(aiohttp_server, client):
    gate = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/", hang)
    server = await aiohttp_server(app)
    http, registry = client
    http = http.bound(asyncio.get_running_loop().time() + 0.3, SystemClock())
    with pytest.raises(CollectError) as caught:
        await http.get_json(str(server.make_url("/")), endpoint="ep")
    gate.set()
    assert caught.value.reason is Reason.TIMEOUT
    assert count(registry, "timeout") == 1


async def test_error_texts_never_carry_the_query_or_credentials(upstream, client):
    up, url = upstream
    http, _ = client
    up.script = [(400, {}, b"")]
    with pytest.raises(CollectError) as caught:
        await http.get_json(f"{url}/x?token=s3cr3t", endpoint="ep")
    assert "s3cr3t" not in str(caught.value)


async def test_a_cookie_one_account_receives_is_never_sent_for_another(aiohttp_server):
    sent: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        sent.append(request.headers.get("Cookie"))
        response = web.json_response({})
        response.set_cookie("session", "account-a-session", path="/")
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = await aiohttp_server(app)
    histogram = request_duration_histogram(CollectorRegistry())
    async with new_session("test") as session:
        for account in ("a", "b"):
            http = provider_client(session, histogram, account)
            # A host name: aiohttp's default jar would keep a cookie for it (never for an IP).
            url = str(server.make_url("/api")).replace("127.0.0.1", "localhost")
            await http.get_json(url, endpoint="ep")
    assert sent == [None, None]


# -- memory: what an error keeps, the budget of bytes in flight -----------------------------------


def held_text(error: BaseException) -> int:
    """The bytes of text and binary data that keeping ``error`` keeps: its attributes, the
    exceptions chained to it, and the locals of the frames in its traceback (containers
    included; other objects, such as the client the frames were methods of, are not walked)."""
    seen: set[int] = set()
    stack: list[object] = [error]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        if isinstance(item, str | bytes | bytearray | memoryview):
            total += len(item)
        elif isinstance(item, BaseException):
            stack += [item.__traceback__, item.__context__, item.__cause__, *item.args]
            stack += vars(item).values()
        elif isinstance(item, types.TracebackType):
            stack += [item.tb_frame, item.tb_next]
        elif isinstance(item, types.FrameType):
            stack += item.f_locals.values()
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            stack += item
        elif isinstance(item, HttpResponse):
            stack += [item.headers, item.body]
    return total


async def failure(pending: Awaitable[Any]) -> CollectError:
    """The error ``pending`` fails with, as a provider that keeps it would keep it."""
    try:
        await pending
    except CollectError as exc:
        return exc
    raise AssertionError("no failure")


def streamed(status: int, size: int | None) -> Callable[[web.Request], Awaitable[Any]]:
    """A handler answering ``status`` with a chunked body of ``size`` bytes of "x" (without
    end: None), 64 KiB at a time, until the client stops reading."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status)
        await response.prepare(request)
        sent = 0
        try:
            while size is None or sent < size:
                await response.write(b"x" * 65536)
                sent += 65536
        except (ConnectionError, RuntimeError):
            pass
        return response

    return handle


async def serve(aiohttp_server: Any, handler: Callable[[web.Request], Awaitable[Any]]) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/x"))


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_error_answer_of_any_size_keeps_its_reason_and_an_excerpt_not_its_body(
    upstream, aiohttp_server, client, chunked
):
    up, url = upstream
    http, _ = client
    if chunked:
        url = await serve(aiohttp_server, streamed(500, 32 * 1024 * 1024))
    else:
        up.script = [(500, {}, b"<html>" + b"x" * 1_000_000)]
        url = f"{url}/x"
    error = await failure(http.get_json(url, endpoint="ep"))
    assert isinstance(error, HttpError)
    assert error.reason is Reason.HTTP_5XX
    assert error.excerpt is not None
    assert len(error.excerpt) == EXCERPT_BYTES
    assert held_text(error) < 4 * EXCERPT_BYTES


async def test_a_retried_answer_is_not_kept_while_the_retry_waits(upstream, client):
    up, url = upstream
    http, _ = client
    up.script = [(503, {"Retry-After": "0"}, b"x" * 1_000_000)] * 3
    error = await failure(http.get_json(f"{url}/x", endpoint="ep"))
    assert error.reason is Reason.HTTP_5XX
    assert up.hits == 3
    assert held_text(error) < 4 * EXCERPT_BYTES


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"{}," * 1300,  # decodes into objects to its end, then is not JSON
        b"[" + b"[" * 4000,  # too deeply nested
        b"x" * 4000,
    ],
)
async def test_a_body_that_does_not_decode_leaves_an_excerpt_not_the_body(upstream, client, body):
    up, url = upstream
    http, _ = client
    up.script = [(200, {}, body)]
    error = await failure(http.get_json(f"{url}/x", endpoint="ep"))
    assert error.reason is Reason.PARSE
    assert error.excerpt == body[:EXCERPT_BYTES].decode()
    assert held_text(error) < 4 * EXCERPT_BYTES


def test_a_decoding_error_keeps_neither_the_body_nor_its_decoded_text():
    """Called by a provider on an error body, outside the client: json's own error, which holds
    the whole decoded text, is not chained to it."""
    with pytest.raises(CollectError) as caught:
        decode_json(b"[" + b"0," * 100_000)
    assert caught.value.__context__ is None
    assert held_text(caught.value) < EXCERPT_BYTES


async def test_a_body_without_a_length_is_read_no_further_than_the_limit(aiohttp_server, client):
    http, _ = client
    url = await serve(aiohttp_server, streamed(200, None))
    error = await failure(http.get_json(url, endpoint="ep"))
    assert error.reason is Reason.PARSE
    assert "larger than 4096 bytes" in error.message
    assert held_text(error) < 4 * EXCERPT_BYTES


async def test_a_head_at_the_clients_limits_is_read(aiohttp_server, client):
    async def handle(request: web.Request) -> web.Response:
        # With aiohttp's own Content-Type, Content-Length, Date and Server.
        padding = "x" * (MAX_HEADER_FIELD - 8)
        lines = {f"X-{index:04d}": padding for index in range(MAX_RESPONSE_HEADERS - 4)}
        return web.json_response({"ok": 1}, headers=lines)

    http, _ = client
    assert await http.get_json(await serve(aiohttp_server, handle), endpoint="ep") == {"ok": 1}


async def test_a_head_past_the_clients_limits_is_a_connection_failure(aiohttp_server, client):
    async def handle(request: web.Request) -> web.Response:
        return web.Response(headers={f"X-{index}": "x" for index in range(MAX_RESPONSE_HEADERS)})

    http, _ = client
    error = await failure(http.get_json(await serve(aiohttp_server, handle), endpoint="ep"))
    assert error.reason is Reason.CONNECTION
    assert f"more than {MAX_RESPONSE_HEADERS} header lines" in error.message


def budgeted(session: Any, histogram: Histogram, budget: ResponseBudget, account: str) -> Any:
    made = provider_client(session, histogram, account)
    made._budget = budget
    return made


async def test_requests_wait_for_room_in_the_budget_of_bytes_in_flight(aiohttp_server):
    """Room for one request (4096 bytes plus the overhead): two targets' requests go one after the
    other."""
    arrived: asyncio.Queue[asyncio.Event] = asyncio.Queue()
    in_flight = 0
    most = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        gate = asyncio.Event()
        await arrived.put(gate)
        await gate.wait()
        in_flight -= 1
        return web.json_response({"ok": 1})

    url = await serve(aiohttp_server, handle)
    budget = ResponseBudget(response_reservation(4096))
    histogram = request_duration_histogram(CollectorRegistry())
    async with new_session("test") as session:
        first, second = (budgeted(session, histogram, budget, name) for name in ("a", "b"))
        requests = [
            asyncio.create_task(http.get_json(url, endpoint="ep")) for http in (first, second)
        ]
        (await arrived.get()).set()
        (await arrived.get()).set()
        assert await asyncio.gather(*requests) == [{"ok": 1}, {"ok": 1}]
    assert most == 1
    assert budget.reserved == 0


async def test_a_request_that_finds_no_room_before_its_deadline_is_timeout(upstream, client):
    up, url = upstream
    http, _ = client
    budget = ResponseBudget(response_reservation(4096))
    held = await budget.acquire(budget.limit)
    http._budget = budget
    http = http.bound(asyncio.get_running_loop().time() + 0.2, SystemClock())
    error = await failure(http.get_json(f"{url}/x", endpoint="ep"))
    assert error.reason is Reason.TIMEOUT
    assert "no room in max_response_bytes_in_flight" in error.message
    assert up.hits == 0
    assert (budget.reserved, budget.waiting) == (budget.limit, 0)
    budget.release(held)
    assert budget.reserved == 0


@pytest.mark.parametrize(
    ("status", "body"), [(200, b'{"ok": 1}'), (200, b"{"), (500, b"x"), (200, b"x" * 10_000)]
)
async def test_every_attempt_gives_its_share_of_the_budget_back(upstream, client, status, body):
    up, url = upstream
    http, _ = client
    budget = ResponseBudget(10 * response_reservation(4096))
    http._budget = budget
    up.script = [(status, {}, body)]
    with contextlib.suppress(CollectError):
        await http.get_json(f"{url}/x", endpoint="ep")
    assert (budget.reserved, budget.waiting) == (0, 0)


async def test_the_budget_is_first_come_first_served():
    """A small request that would fit does not overtake a large one waiting before it."""
    budget = ResponseBudget(10)
    await budget.acquire(6)
    large = asyncio.create_task(budget.acquire(10))
    await asyncio.sleep(0)  # the large one starts waiting
    small = asyncio.create_task(budget.acquire(2))
    await asyncio.sleep(0)
    assert budget.waiting == 2
    budget.release(6)
    assert await large == 10
    assert not small.done()
    budget.release(10)
    assert await small == 2
    assert budget.reserved == 2
