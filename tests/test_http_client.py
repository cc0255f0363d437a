"""The shared HTTP client against a real upstream on loopback: retries, Retry-After, the deadline,
the size limit, classification into reasons, the request histogram."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram

from exporter.clock import SystemClock
from exporter.providers.errors import CollectError, Reason
from exporter.providers.http import ProviderClient, new_session, request_duration_histogram
from exporter.providers.turns import Turnstile
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
