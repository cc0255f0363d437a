"""The provider simulator: one aiohttp app that speaks every provider's API as its page describes,
quirks included, for ``--demo``, the tests and the benchmarks.

Each provider's part is a :class:`SimulatorPart` subclass, named ``SIMULATOR_PART`` in a module
registered under the provider's name in the entry-point group
``messaging_stats_exporter.simulators`` (as a provider's module names its ``Provider`` subclass
``PROVIDER``).

Faults common to every API are switched per (provider, account) and applied by one middleware:

=====================  ================================================================
fault                  what the client gets
=====================  ================================================================
``http_500_html``      HTTP 500 with an HTML body
``http_503``           HTTP 503 (retryable)
``malformed_json``     HTTP 200 with a body that is not JSON
``wrong_shape``        HTTP 200 with valid JSON of the wrong shape
``strings_for_numbers``  HTTP 200, the normal answer with every number sent as a string
``huge_body``          HTTP 200 with a 32 MiB JSON body
``large_malformed_json``  HTTP 200, ``size`` bytes (default 1 MiB) of ``[{},{},...`` never closed,
                       with its length: it decodes into objects up to its last byte, then fails
``large_wrong_shape``  HTTP 200, ``size`` bytes of ``[{},{},...]``: valid JSON of the wrong shape
``endless_body``       HTTP 200 with a chunked body that never ends
``huge_error_body``    HTTP 500 with a 32 MiB HTML body
``huge_headers``       the normal answer with ``size`` bytes (default 1 MiB) of headers more, 4,000
                       a line
``hang``               no answer for ``delay`` seconds (default one hour)
``reset``              the connection is closed without an answer
``rate_limited``       HTTP 429 with ``Retry-After: <retry_after>``
``auth``               the account's credentials are refused (the provider's own error)
``echo``               HTTP 400, the provider's own error whose text is the request as
                       received: request line, body, then headers, all verbatim
=====================  ================================================================

Providers add faults of their own (Altcraft's never-ending task, ...). ``/_sim/faults`` switches
them over HTTP, ``/_sim/requests`` lists what was received.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, ClassVar

from aiohttp import web

from exporter.entrypoints import load_plugins, skip_plugin
from exporter.providers import registry
from exporter.providers.base import api_problem

FAULTS = (
    "http_500_html",
    "http_503",
    "malformed_json",
    "wrong_shape",
    "strings_for_numbers",
    "huge_body",
    "large_malformed_json",
    "large_wrong_shape",
    "endless_body",
    "huge_error_body",
    "huge_headers",
    "hang",
    "reset",
    "rate_limited",
    "auth",
    "echo",
)


@dataclass(frozen=True)
class Fault:
    """A fault of one account; ``times`` limits it to that many requests, then it clears.
    ``size`` is the body or head size of the faults that have one."""

    name: str
    delay: float = 3600.0
    retry_after: str = "1"
    times: int | None = None
    size: int | None = None


@dataclass(frozen=True)
class ReceivedRequest:
    provider: str
    account: str
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    at: float


@dataclass
class Simulator:
    """The simulator's state: provider data, faults, latency and the requests it received."""

    dynamic: bool = False
    latency: float = 0.0
    faults: dict[tuple[str, str], Fault] = field(default_factory=dict)
    requests: list[ReceivedRequest] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    record_requests: bool = True

    def __post_init__(self) -> None:
        for name, part in provider_parts().items():
            self.state.setdefault(name, part.make_state(self.dynamic))

    def set_fault(self, provider: str, account: str, fault: str | Fault | None) -> None:
        if fault is None:
            self.faults.pop((provider, account), None)
            return
        if isinstance(fault, str):
            fault = Fault(fault)
        self.faults[(provider, account)] = fault

    def fault(self, provider: str, account: str) -> Fault | None:
        return self.faults.get((provider, account))

    def take_fault(self, provider: str, account: str) -> Fault | None:
        """The fault for this request, counting it against ``times``."""
        fault = self.faults.get((provider, account))
        if fault is not None and fault.times is not None:
            if fault.times <= 1:
                del self.faults[(provider, account)]
            else:
                self.faults[(provider, account)] = replace(fault, times=fault.times - 1)
        return fault

    def received(self, provider: str, account: str | None = None) -> list[ReceivedRequest]:
        return [
            r
            for r in self.requests
            if r.provider == provider and (account is None or r.account == account)
        ]


class SimulatorPart(ABC):
    """One provider's simulated API. The simulator makes one instance and calls its hooks: the
    part keeps no state of its own, its demo data lives in ``sim.state[name]``."""

    name: ClassVar[str]
    """The provider's name: the first path segment of its routes."""
    faults: ClassVar[tuple[str, ...]] = ()
    """Its own faults, besides the common ones (the handlers apply them)."""
    requires_api: ClassVar[tuple[int, int]] = (1, 0)
    """The plugin API version the part is written for."""

    @abstractmethod
    def make_state(self, dynamic: bool) -> Any:
        """Its demo data; with ``dynamic`` the figures move at every call."""

    @abstractmethod
    def register(self, app: web.Application, sim: Simulator) -> None:
        """Add its routes, under ``/<name>/{account}/...``."""

    @abstractmethod
    def demo_targets(self, url: str, sim: Simulator) -> list[dict[str, Any]]:
        """Config targets (dicts) for its accounts, pointing at the simulator at ``url``."""

    def fault_accounts(self, sim: Simulator) -> Mapping[str, Sequence[str] | None]:
        """Route prefix → the accounts a fault can be switched on (None: any). By default its
        name, with any account."""
        return {self.name: None}

    def echo_error(self, route: str, text: str) -> web.Response:
        """Its API's error answer carrying ``text``, for the ``echo`` fault on ``route`` (a route
        prefix of :meth:`fault_accounts`)."""
        return web.json_response({"error": text, "message": text}, status=400)


SIMULATORS_GROUP = "messaging_stats_exporter.simulators"


def _part_problem(name: str, module: Any, taken: Mapping[str, SimulatorPart]) -> str | None:
    """Why this module cannot be the simulator part of the provider ``name``, or None."""
    part = getattr(module, "SIMULATOR_PART", None)
    if part is None:
        return "the module defines no SIMULATOR_PART"
    if not (isinstance(part, type) and issubclass(part, SimulatorPart)):
        return f"SIMULATOR_PART is {part!r}, not a subclass of exporter.plugin.SimulatorPart"
    if (mismatch := api_problem(getattr(part, "requires_api", None))) is not None:
        return mismatch
    if getattr(part, "name", None) != name:
        return f"SIMULATOR_PART.name is {getattr(part, 'name', None)!r}, not {name!r}"
    if part.__abstractmethods__:
        return f"{part.__name__} does not implement {', '.join(sorted(part.__abstractmethods__))}"
    if name in taken:
        return f"the name is already taken by {type(taken[name]).__module__}"
    if name not in registry():
        return f"no provider named {name!r} is registered"
    return None


@cache
def provider_parts() -> dict[str, SimulatorPart]:
    """Provider name → its simulator part, sorted by name: the ``SIMULATOR_PART`` of each module
    registered in the entry-point group ``messaging_stats_exporter.simulators`` (name = the
    provider's name, value = the module), the built-ins and the installed plugins alike.

    A part is left out, and logged, when its module fails to import or names no
    :class:`SimulatorPart` subclass, when the part needs a newer plugin API, claims another name,
    lacks a hook, or belongs to no registered provider (the demo config would name an unknown
    provider): the others keep working."""
    parts: dict[str, SimulatorPart] = {}
    for entry, module in load_plugins(SIMULATORS_GROUP):
        problem = _part_problem(entry.name, module, parts)
        if problem is not None:
            skip_plugin(SIMULATORS_GROUP, entry, problem)
            continue
        parts[entry.name] = module.SIMULATOR_PART()
    return dict(sorted(parts.items()))


SIMULATOR = web.AppKey("simulator", Simulator)
REQUEST_FAULT = web.RequestKey("simulator_fault", Fault)


def request_fault(request: web.Request) -> Fault | None:
    """The fault this request was given (a ``times``-limited one is already counted)."""
    return request.get(REQUEST_FAULT)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _stringify_numbers(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return {key: _stringify_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stringify_numbers(item) for item in value]
    return value


async def _huge_body(
    request: web.Request, status: int = 200, endless: bool = False
) -> web.StreamResponse:
    """A JSON body of ~32 MiB (an HTML one with ``status`` 500), or one that never ends, chunked:
    the client learns its size only by reading it."""
    html = status >= 500
    response = web.StreamResponse(
        status=status, headers={"Content-Type": "text/html" if html else "application/json"}
    )
    await response.prepare(request)
    chunk = (
        (b"<p>" + b"x" * 65_000 + b"</p>") if html else (b'{"padding": "' + b"x" * 65_000 + b'"},')
    )
    try:
        await response.write(b"<html>" if html else b"[")
        sent = 0
        while endless or sent < 512:  # ~32 MiB
            await response.write(chunk)
            sent += 1
        await response.write(b"</html>" if html else b"{}]")
    except (ConnectionError, RuntimeError):
        pass  # the client stopped reading at its limit, as it should
    return response


async def _received(request: web.Request, provider: str, account: str) -> ReceivedRequest:
    """The request as :attr:`Simulator.requests` lists it (its body decoded when it is JSON)."""
    body: Any = None
    if request.can_read_body:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
    return ReceivedRequest(
        provider=provider,
        account=account,
        method=request.method,
        path=request.path,
        query=dict(request.query),
        body=body,
        headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
        at=time.time(),
    )


def _echo_text(request: web.Request, body: bytes) -> str:
    """The request as it came: request line, body, then headers (sorted by name)."""
    headers = sorted(
        (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        for name, value in request.raw_headers
    )
    return "\n".join(
        [
            f"{request.method} {request.raw_path} HTTP/{request.version.major}."
            f"{request.version.minor}",
            body.decode("utf-8", "replace"),
            *(f"{name}: {value}" for name, value in headers),
        ]
    )


async def _echo(request: web.Request, route: str) -> web.Response:
    text = _echo_text(request, await request.read())
    for part in provider_parts().values():
        if route in part.fault_accounts(request.app[SIMULATOR]):
            return part.echo_error(route, text)
    return web.json_response({"error": text, "message": text}, status=400)


def _many_objects(size: int, closed: bool) -> web.Response:
    """``size`` bytes of ``[{},{},...]``, the JSON that decodes into the most objects per byte;
    without its closing bracket it is not JSON, found out only at its end."""
    count = max(1, (size - 1) // 3)
    body = b"[" + b"{}," * (count - 1) + (b"{}]" if closed else b"{},")
    return web.Response(body=body, content_type="application/json")


def _add_headers(response: web.StreamResponse, size: int) -> web.StreamResponse:
    for index in range(max(1, size // 4000)):
        response.headers[f"X-Padding-{index}"] = "x" * 4000
    return response


@web.middleware
async def _faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    provider = request.path.strip("/").split("/", 1)[0]
    account = request.match_info.get("account", "")
    if provider == "_sim":
        return await handler(request)
    if sim.record_requests:
        sim.requests.append(await _received(request, provider, account))
    if sim.latency:
        await asyncio.sleep(sim.latency)
    fault = sim.take_fault(provider, account)
    if fault is not None:
        request[REQUEST_FAULT] = fault
    name = fault.name if fault else None
    if fault is None or name == "auth":
        return await handler(request)
    if name == "http_500_html":
        return web.Response(
            status=500,
            text="<html><body><h1>500 Internal Server Error</h1></body></html>",
            content_type="text/html",
        )
    if name == "http_503":
        return web.Response(status=503, text="Service Unavailable")
    if name == "malformed_json":
        return web.Response(text='{"data": [1, 2', content_type="application/json")
    if name == "wrong_shape":
        return web.json_response({"unexpected": ["shape"], "value": None})
    if name == "huge_body":
        return await _huge_body(request)
    if name in ("large_malformed_json", "large_wrong_shape"):
        return _many_objects(fault.size or 1 << 20, closed=name == "large_wrong_shape")
    if name == "endless_body":
        return await _huge_body(request, endless=True)
    if name == "huge_error_body":
        return await _huge_body(request, status=500)
    if name == "huge_headers":
        return _add_headers(await handler(request), fault.size or 1 << 20)
    if name == "hang":
        await asyncio.sleep(fault.delay)
        return await handler(request)
    if name == "reset":
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("simulated connection reset")
    if name == "echo":
        return await _echo(request, provider)
    if name == "rate_limited":
        return web.Response(
            status=429,
            text='{"error": "too many requests"}',
            headers={"Retry-After": fault.retry_after},
            content_type="application/json",
        )
    response = await handler(request)
    if name == "strings_for_numbers" and isinstance(response, web.Response) and response.body:
        decoded = json.loads(response.body)  # type: ignore[arg-type]
        return web.json_response(_stringify_numbers(decoded), status=response.status)
    return response


def _fault_targets(sim: Simulator) -> dict[str, tuple[list[str] | None, list[str]]]:
    """Route prefix -> its accounts (None where the part does not list them) and the faults it
    knows: the common ones and the part's ``faults``."""
    known: dict[str, tuple[list[str] | None, list[str]]] = {}
    for part in provider_parts().values():
        faults = sorted({*FAULTS, *part.faults})
        for prefix, accounts in part.fault_accounts(sim).items():
            known[prefix] = (None if accounts is None else list(accounts), faults)
    return known


async def _control_faults(request: web.Request) -> web.Response:
    """``POST /_sim/faults`` ``{"provider", "account", "fault" (null clears), "delay",
    "retry_after", "times", "size"}``.

    ``size`` sets the body or head size of the faults that have one.

    ``provider`` is a route prefix (``trustlat-atenea`` for Trust.lat's token service) and
    ``account`` the simulator's account under it, not a target's name. A fault switched on
    nothing must not look as if it worked: an unknown provider or account is a 404 that names the
    known ones, an unknown fault or a malformed request a 400 (naming the known faults).
    """
    sim = request.app[SIMULATOR]

    def refuse(status: int, error: str, **known: list[str]) -> web.Response:
        return web.json_response({"ok": False, "error": error, **known}, status=status)

    try:
        payload = await request.json()
    except ValueError:
        return refuse(400, "the body is not JSON")
    if not isinstance(payload, dict) or not all(
        isinstance(payload.get(key), str) for key in ("provider", "account")
    ):
        return refuse(400, 'expected {"provider": ..., "account": ..., "fault": ...}')
    known = _fault_targets(sim)
    provider, account, name = payload["provider"], payload["account"], payload.get("fault")
    if provider not in known:
        return refuse(404, f"unknown provider {provider!r}", known_providers=sorted(known))
    accounts, faults = known[provider]
    if accounts is not None and account not in accounts:
        return refuse(
            404,
            f"unknown account {account!r} of provider {provider!r} (an account of the "
            "simulator, not a target's name)",
            known_accounts=accounts,
        )
    if name is not None and name not in faults:
        return refuse(400, f"unknown fault {name!r}", known_faults=faults)
    try:
        times = payload.get("times")
        size = payload.get("size")
        fault = (
            None
            if name is None
            else Fault(
                name,
                delay=float(payload.get("delay", 3600.0)),
                retry_after=str(payload.get("retry_after", "1")),
                times=None if times is None else int(times),
                size=None if size is None else int(size),
            )
        )
    except (TypeError, ValueError):
        return refuse(400, "delay, times and size must be numbers")
    sim.set_fault(provider, account, fault)
    return web.json_response({"ok": True})


async def _control_requests(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    return web.json_response(
        [
            {"provider": r.provider, "account": r.account, "method": r.method, "path": r.path}
            for r in sim.requests
        ]
    )


def build_app(sim: Simulator | None = None) -> web.Application:
    sim = sim or Simulator()
    app = web.Application(middlewares=[_faults])
    app[SIMULATOR] = sim
    for part in provider_parts().values():
        part.register(app, sim)
    app.router.add_post("/_sim/faults", _control_faults)
    app.router.add_get("/_sim/requests", _control_requests)
    return app


def demo_targets(url: str, sim: Simulator) -> list[dict[str, Any]]:
    """Config targets for every account the simulator holds, pointing at ``url``."""
    targets: list[dict[str, Any]] = []
    for part in provider_parts().values():
        targets.extend(part.demo_targets(url.rstrip("/"), sim))
    return targets


async def start(
    sim: Simulator | None = None, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve the simulator on a loopback port; returns the runner (to clean up) and its URL."""
    # Handlers of a hanging fault never finish by themselves: do not wait for them on cleanup.
    runner = web.AppRunner(
        build_app(sim), access_log=None, handle_signals=False, shutdown_timeout=0.1
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"
