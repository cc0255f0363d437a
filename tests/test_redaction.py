"""Secrets never leave the exporter, in any of the forms in which it sends them: written out,
JSON-escaped, percent-encoded, base64 inside a Basic ``Authorization`` header, and the tokens it
obtains at run time. The redactor on its own, the provider client against an upstream that echoes
the request, and every provider against the simulator's ``echo`` fault, with the logs, the status
page, ``/metrics`` and the exceptions searched for every form of every secret."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import html
import io
import json
import logging
import secrets
import string
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import structlog
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from yarl import URL

from exporter import simulator
from exporter.clock import SystemClock
from exporter.config import load_config
from exporter.logs import setup_logging
from exporter.providers import registry
from exporter.providers.errors import CollectError, Reason
from exporter.providers.http import (
    ERROR_TEXT_LIMIT,
    ProviderClient,
    basic_auth,
    new_session,
    request_duration_histogram,
)
from exporter.redaction import REDACTED, SECRETS_PER_OWNER, Redactor
from exporter.service import make_exporter
from exporter.turnstile import Turnstile

# -- what counts as a leak -----------------------------------------------------------------------


def forms_by_kind(secret: str) -> dict[str, str]:
    """The forms in which the exporter may send ``secret``, written out here independently of the
    redactor: as it is, JSON-escaped (ASCII-only and UTF-8), percent-encoded by urllib and by
    yarl (query value, path segment)."""
    return {
        "plain": secret,
        "json": json.dumps(secret)[1:-1],
        "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
        "quote-all": quote(secret, safe=""),
        "quote": quote(secret),
        "quote_plus": quote_plus(secret),
        "yarl-query": URL.build(query={"k": secret}).raw_query_string[2:],
        "yarl-path": URL.build(path="/" + secret).raw_path[1:],
    }


def sent_forms(secret: str) -> set[str]:
    return set(forms_by_kind(secret).values())


def basic_credentials(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def views(text: str) -> list[str]:
    """``text`` as written, HTML-unescaped (a page), and the strings of its JSON lines (logs)."""
    found = [text, html.unescape(text)]
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            found.extend(strings_in(json.loads(line)))
    return found


WINDOW = 8


def leaks(text: str, secret_values: Iterable[str]) -> list[str]:
    """Every form of every secret, or any 8 characters of one (a cut secret), found in ``text``.
    The secrets are random, so 8 of their characters appear nowhere else by chance."""
    found = []
    all_views = views(text)
    for secret in secret_values:
        for form in sent_forms(secret):
            pieces = {form[at : at + WINDOW] for at in range(max(1, len(form) - WINDOW + 1))}
            if any(piece in view for piece in pieces for view in all_views):
                found.append(form)
    return found


def special(ascii_only: bool = False) -> str:
    """A random secret with the characters that JSON-escaping and percent-encoding change."""
    nonascii = "" if ascii_only else "é€"
    return f'{secrets.token_hex(6)}"q\\b/s+p=%&?#{nonascii} {secrets.token_hex(6)}'


# -- the redactor ----------------------------------------------------------------------------------


class Owner:
    """Something that obtains secrets at run time (a provider client in the exporter)."""


SECRET = special()


@pytest.mark.parametrize("kind", sorted(forms_by_kind(SECRET)))
def test_every_form_the_exporter_sends_is_redacted(kind: str):
    form = forms_by_kind(SECRET)[kind]
    assert kind == "plain" or form != SECRET, "the secret has characters that this form changes"
    redactor = Redactor([SECRET])
    assert redactor.redact(f"before {form} after") == f"before {REDACTED} after"


def test_a_secret_in_the_middle_of_a_word_and_repeated_is_redacted_everywhere():
    redactor = Redactor(["abcd1234"])
    assert redactor.redact("xabcd1234y abcd1234abcd1234") == f"x{REDACTED}y {REDACTED}"


def test_overlapping_secrets_leave_nothing_of_either():
    redactor = Redactor(["aaaa-bbbb", "bbbb-cccc"])
    assert redactor.redact("<aaaa-bbbb-cccc>") == f"<{REDACTED}>"


def test_short_secrets_are_not_looked_for():
    redactor = Redactor(["abc", ""])
    assert redactor.redact("abc abc") == "abc abc"


def test_the_cut_never_splits_a_secret():
    redactor = Redactor(["0123456789abcdef"])
    text = "x" * 10 + "0123456789abcdef" + "y" * 10
    for limit in range(len(text) + 2):
        cut = redactor.redact(text, limit)
        assert not any(piece in cut for piece in ("0123", "cdef", "6789")), (limit, cut)
        assert len(cut) <= limit + len(REDACTED)
    assert redactor.redact(text, 12) == "x" * 10 + REDACTED
    assert redactor.redact(text, 5) == "xxxxx"
    assert Redactor().redact(text, 5) == "xxxxx"


def test_the_config_secrets_are_replaced_and_run_time_ones_kept():
    owner = Owner()
    redactor = Redactor(["old-secret"])
    redactor.add_secret("run-time-token", owner=owner)
    redactor.set_secrets(["new-secret"])
    assert redactor.redact("old-secret new-secret run-time-token") == (
        f"old-secret {REDACTED} {REDACTED}"
    )


def test_a_secret_in_use_stays_redacted_when_the_config_drops_it():
    owner = Owner()
    redactor = Redactor(["fixed-token", "other-secret"])
    redactor.add_secret("fixed-token", owner=owner)
    redactor.set_secrets(["other-secret"])
    assert redactor.redact("fixed-token other-secret") == f"{REDACTED} {REDACTED}"
    redactor.set_secrets([])
    assert redactor.redact("fixed-token other-secret") == f"{REDACTED} other-secret"


def test_an_owner_keeps_its_newest_secrets_and_they_go_with_it():
    owner, other = Owner(), Owner()
    redactor = Redactor()
    tokens = [f"token-{index}" for index in range(SECRETS_PER_OWNER + 1)]
    for token in tokens:
        redactor.add_secret(token, owner=owner)
    redactor.add_secret("other-token", owner=other)
    assert redactor.redact(" ".join(tokens)) == " ".join(
        ["token-0", *[REDACTED] * SECRETS_PER_OWNER]
    )
    del owner
    gc.collect()
    redactor.add_secret("another-token", owner=other)  # any change rebuilds the lookup
    assert redactor.redact("token-4 other-token") == f"token-4 {REDACTED}"


def test_values_in_structures_bytes_and_exceptions_are_scrubbed():
    redactor = Redactor(["s3cr3t-value"])
    scrubbed = redactor.scrub(
        {
            "a": ["s3cr3t-value", ("x s3cr3t-value",)],
            "b": b"s3cr3t-value",
            "c": ValueError("s3cr3t-value"),
            "d": 7,
        }
    )
    assert "s3cr3t-value" not in repr(scrubbed)
    assert scrubbed["d"] == 7
    assert scrubbed["a"][1] == (f"x {REDACTED}",)


alphabet = st.sampled_from(string.ascii_letters[:6] + string.digits[:4] + ' "\\/+=%&é')
secret_texts = st.text(alphabet, min_size=4, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(secret_texts, min_size=1, max_size=40),
    st.lists(st.tuples(st.text(alphabet, max_size=6), st.integers(0, 39))),
)
def test_no_form_of_any_secret_survives(secret_values: list[str], pieces: list[tuple[str, int]]):
    """Random secrets, written into random text in random forms: none survives, whichever way the
    redactor searches (few forms and a long text, or many forms and a short one)."""
    forms = [sorted(sent_forms(secret)) for secret in secret_values]
    text = "".join(
        filler + forms[index % len(forms)][index % len(forms[index % len(forms)])]
        for filler, index in pieces
    )
    redacted = Redactor(secret_values).redact(text)
    for secret in secret_values:
        for form in sent_forms(secret):
            assert form not in redacted.replace(REDACTED, "\x00")


# -- the provider client ---------------------------------------------------------------------------


async def echo(request: web.Request) -> web.Response:
    """An upstream that refuses every request, quoting it back."""
    body = await request.text()
    quoted = f"{request.method} {request.raw_path} {body} " + " ".join(
        f"{name}: {value}" for name, value in request.headers.items()
    )
    return web.json_response({"message": quoted}, status=400)


@pytest.fixture
async def echo_url(aiohttp_server: Any) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def session() -> AsyncIterator[Any]:
    async with new_session("test") as made:
        yield made


def make_client(session: Any, redactor: Redactor) -> ProviderClient:
    return ProviderClient(
        session,
        provider="test",
        account="acct",
        histogram=request_duration_histogram(CollectorRegistry()),
        max_concurrency=2,
        max_response_bytes=64 * 1024,
        turnstile=Turnstile(),
        redactor=redactor,
    )


async def test_a_secret_obtained_in_a_run_lives_as_long_as_the_targets_client(session):
    """A run's client is the target's client bound to the run's deadline: a token it registers
    stays redacted in the runs after it (a token is kept between runs), until the target's
    client goes."""
    redactor = Redactor()
    client = make_client(session, redactor)
    run_client = client.bound(asyncio.get_running_loop().time() + 5, SystemClock())
    run_client.add_secret("token-of-a-run")
    del run_client
    gc.collect()
    redactor.add_secret("another-token", owner=Owner())  # any change rebuilds the lookup
    assert redactor.redact("token-of-a-run") == REDACTED
    del client
    gc.collect()
    redactor.add_secret("yet-another-token", owner=Owner())
    assert redactor.redact("token-of-a-run") == "token-of-a-run"


async def test_a_targets_client_goes_without_the_garbage_collector(session):
    """The exporter freezes what exists after start-up, and the garbage collector never scans
    frozen objects: a client removed by a reload must be freed by reference counting alone,
    with the tokens its runs obtained."""
    redactor = Redactor()
    client = make_client(session, redactor)
    run_client = client.bound(asyncio.get_running_loop().time() + 5, SystemClock())
    run_client.add_secret("token-of-a-run")
    gone = weakref.ref(client)
    gc.disable()
    try:
        del run_client, client
        assert gone() is None
        redactor.add_secret("another-token", owner=Owner())  # any change rebuilds the lookup
        assert redactor.redact("token-of-a-run") == "token-of-a-run"
    finally:
        gc.enable()


def message_of(body: bytes) -> str | None:
    return str(json.loads(body)["message"])


async def refused(client: ProviderClient, url: str, **kwargs: Any) -> CollectError:
    with pytest.raises(CollectError) as caught:
        await client.request(
            "POST", url, endpoint="ep", idempotent=False, error_text=message_of, **kwargs
        )
    return caught.value


def exception_texts(exc: BaseException) -> str:
    return " ".join([str(exc), repr(exc), *(repr(value) for value in vars(exc).values())])


async def test_the_client_redacts_every_form_in_an_echoed_request(echo_url, session):
    password, token, key = special(), special(), special()
    redactor = Redactor([password, key])
    client = make_client(session, redactor)
    client.add_secret(token)
    url = URL(f"{echo_url}/path").with_query(key=key)
    exc = await refused(
        client,
        str(url),
        json_body={"token": token},
        headers={"Authorization": basic_auth("api-user", password)},
    )
    assert exc.reason is Reason.HTTP_4XX
    assert REDACTED in exc.message
    assert not leaks(exception_texts(exc), [password, token, key])
    assert basic_credentials("api-user", password) not in exception_texts(exc)


async def test_the_credentials_of_any_authorization_header_are_learnt(echo_url, session):
    """A Basic header's base64 and a Bearer token, built by any provider, are redacted though no
    config names them: the client learns them as it sends them."""
    redactor = Redactor()
    client = make_client(session, redactor)
    basic = basic_auth("user", "a-password-nobody-configured")
    exc = await refused(client, f"{echo_url}/x", headers={"Authorization": basic})
    assert basic.split()[1] not in exception_texts(exc)
    exc = await refused(client, f"{echo_url}/x", headers={"authorization": "Bearer tok-12345678"})
    assert "tok-12345678" not in exception_texts(exc)
    assert "tok-12345678" not in redactor.redact("tok-12345678"), "the service's redactor knows it"


async def test_the_error_text_is_redacted_before_it_is_cut(echo_url, session):
    """An echoed secret that the error text's limit would cut in two is replaced whole."""
    secret = "s" + secrets.token_hex(20)
    client = make_client(session, Redactor([secret]))
    for shift in range(0, 60, 7):
        padding = "p" * (ERROR_TEXT_LIMIT - 40 - shift)
        exc = await refused(client, f"{echo_url}/x", json_body={"pad": padding, "s": secret})
        assert not leaks(exception_texts(exc), [secret]), shift


# -- every provider against the simulator's echo fault ----------------------------------------

# (provider, route prefix, simulator account): where the echo fault is switched on.
ECHOES = [
    ("altcraft", "altcraft", "prod"),
    ("exolve", "exolve", None),
    ("thulium", "thulium", None),
    ("trustlat", "trustlat", "acme"),  # the statistics API, with a token obtained at run time
    ("trustlat", "trustlat", "initech"),  # the statistics API, with a fixed token
    ("trustlat", "trustlat-atenea", "acme"),  # the token service: the client secret
]
SECRET_KEYS = ("password", "api_key", "client_secret", "access_token", "token")
IN_HEADERS = ("api_key", "access_token")  # sent in an Authorization header: ASCII


def special_secrets(sim: simulator.Simulator) -> None:
    """Every secret of every simulated account made random and special."""
    for state in sim.state.values():
        for accounts in vars(state).values():
            if not isinstance(accounts, dict):
                continue
            for account in accounts.values():
                for key in SECRET_KEYS:
                    if isinstance(getattr(account, key, None), str):
                        setattr(account, key, special(ascii_only=key in IN_HEADERS))


def every_secret(config: Any, sim: simulator.Simulator) -> list[str]:
    """The config's secrets, the Basic credentials made of them, and the tokens issued."""
    found = list(config.secret_values())
    for target in config.targets:
        if target.provider == "thulium":
            found.append(basic_credentials(target.username, target.secret("password")))
    for state in sim.state.values():
        found.extend(getattr(state, "tokens", {}))
    return found


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


@pytest.mark.parametrize(("provider", "route", "account"), ECHOES)
async def test_an_echoing_provider_leaks_no_secret(
    sim, sim_url, harness, make_config, logs, monkeypatch, provider, route, account
):
    special_secrets(sim)
    targets = simulator.demo_targets(sim_url, sim)
    victim = next(
        t
        for t in targets
        if t["provider"] == provider and (account is None or f"/{account}" in t["base_url"])
    )
    account = account or victim["base_url"].split("://", 1)[1].split("/")[2]
    config = make_config(targets)
    h = await harness(config)
    setup_logging("debug", "json", stream=logs, redactor=h.exporter.redactor)
    raised: list[BaseException] = []
    cls = registry()[provider]
    collect = cls.collect

    async def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await collect(self, *args, **kwargs)
        except BaseException as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(cls, "collect", recording)
    sim.set_fault(route, account, "echo")
    await h.collect()

    state = h.exporter.targets.get(victim["name"]).state
    error = state.latest.error if state.latest else None
    assert error is not None
    assert not state.latest.ok
    assert "HTTP/1.1" in error, "the echoed request reached the error text"
    assert REDACTED in error, "a secret was echoed, and redacted"
    secret_values = every_secret(config, sim)
    assert len(secret_values) >= len(config.targets)
    written = {
        "the error": error,
        "the logs": logs.getvalue(),
        "the status page": await (await h.client.get("/")).text(),
        "/metrics": await h.scrape_text(),
        "the exceptions": " ".join(exception_texts(exc) for exc in raised),
    }
    assert raised
    assert "collection" in written["the logs"]
    for where, text in written.items():
        assert not leaks(text, secret_values), where


async def test_the_altcraft_error_envelope_of_a_success_is_redacted(
    sim, sim_url, harness, make_config
):
    """Altcraft reports errors in an HTTP 200 envelope too; its error text is redacted there."""
    special_secrets(sim)
    state = sim.state["altcraft"]
    token = state.accounts["prod"].token
    state.method_errors[("prod", "resources/refresh_counters")] = (
        400,
        "bad request " + json.dumps({"token": token}),
    )
    targets = [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "altcraft"]
    h = await harness(make_config(targets))
    await h.collect()
    failed = next(
        t.state.latest for t in h.exporter.targets if t.state.latest and not t.state.latest.ok
    )
    assert failed is not None
    error = failed.error or ""
    assert REDACTED in error
    assert not leaks(error, [token])


# -- the service owns the redactor -----------------------------------------------------------------


async def test_each_exporter_has_its_own_redactor_and_a_reload_replaces_its_secrets(
    sim, sim_url, write_config, clock
):
    special_secrets(sim)
    targets = [t for t in simulator.demo_targets(sim_url, sim) if t["provider"] == "thulium"]
    path = write_config({"targets": targets})
    exporter = make_exporter(load_config(path), clock=clock, config_path=path, autostart=False)
    other = make_exporter(load_config(path), clock=clock, autostart=False)
    assert exporter.redactor is not other.redactor
    old = targets[0]["password"]
    new = special()
    write_config({"targets": [{**targets[0], "password": new}, *targets[1:]]})
    assert await exporter.reload() is None
    assert exporter.redactor.redact(f"{old} {new}") == f"{old} {REDACTED}"
    assert other.redactor.redact(new) == new
