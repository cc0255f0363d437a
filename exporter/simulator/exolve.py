"""A simulated Exolve: ``POST /exolve/{account}/messaging/v1/GetCount`` with
``Authorization: Bearer <api key>``.

As on the API page (``shared/reference/providers/exolve-getcount.txt``): the body is a JSON object
of filters, enums by name (their numbers are accepted too, as protobuf's JSON mapping does); an
unknown key is 400 ``unknown field``, an unknown enum name or a bad date is 400 ``invalid value``,
a body that is not a JSON object is 400 ``syntax error``, a wrong key is 401 ``authorization token
is invalid``. Errors have gRPC-gateway's shape, ``{"code", "message", "details"}``. The count is
an int64 sent as a string, and a zero count is ``{}`` (proto3 leaves zero values out).

Each application holds groups of messages with their statuses, sender and age, so a count depends
on every filter and the breakdowns agree with each other. ``limit`` and ``offset`` act as on a
listing (the count of the page they select), which is why the exporter never sends them.

Faults of this provider, switched on ``("exolve", account)``:

===================  ===========================================================================
fault                what the client gets
===================  ===========================================================================
``auth``             401 ``authorization token is invalid`` for every request
``incoming_500``     HTTP 500 for every request filtered on ``DIRECTION_INCOMING`` (the outgoing
                     counts still work: one failed combination among good ones)
``counts_as_numbers``  ``{"count": 12}``: the count as a JSON number instead of a string
===================  ===========================================================================
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from exporter.simulator import SIMULATOR, Simulator, SimulatorPart, request_fault

PROVIDER = "exolve"
FAULTS = ("incoming_500", "counts_as_numbers")
"""The faults of this provider besides the common ones."""

ENUMS: dict[str, tuple[str, ...]] = {
    "direction": ("DIRECTION_INCOMING", "DIRECTION_OUTGOING"),
    "delivery_status": (
        "DELIVERY_STATUS_QUEUED",
        "DELIVERY_STATUS_TRANSMITTED",
        "DELIVERY_STATUS_DELIVERED",
        "DELIVERY_STATUS_FAILED",
    ),
    "billing_status": (
        "BILLING_STATUS_PREBILLED",
        "BILLING_STATUS_BILLED",
        "BILLING_STATUS_REFUNDING",
        "BILLING_STATUS_UNDERFUNDED",
        "BILLING_STATUS_REFUNDED",
        "BILLING_STATUS_FAILED",
        "BILLING_STATUS_AUTHORIZED",
    ),
    "status": (
        "STATUS_QUEUED",
        "STATUS_TRANSMITTED",
        "STATUS_DELIVERED",
        "STATUS_FAILED",
        "STATUS_UNDERFUNDED",
        "STATUS_PROHIBITED",
    ),
}
FIELDS = frozenset(
    {"message_id", "limit", "offset", "number", "date_gte", "date_lte", *ENUMS.keys()}
)
HOUR = 3600.0


@dataclass
class MessageGroup:
    """``count`` messages alike: direction, statuses, sender, and how old they are (seconds
    before the state was made)."""

    direction: str
    status: str
    delivery_status: str
    billing_status: str
    number: str
    age: float
    count: int


@dataclass
class Application:
    api_key: str
    groups: list[MessageGroup] = field(default_factory=list)


@dataclass
class ExolveState:
    applications: dict[str, Application]
    dynamic: bool = False
    created: float = field(default_factory=time.time)
    # How long each answer takes, and the most requests seen in flight at once.
    answer_delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0

    def count(self, account: str, filters: dict[str, Any]) -> int:
        """How many of the account's messages match the (validated) filters."""
        total = 0
        for index, group in enumerate(self.applications[account].groups):
            sent_at = self.created - group.age
            if any(
                key in filters and filters[key] != getattr(group, key)
                for key in ("direction", "status", "delivery_status", "billing_status", "number")
            ):
                continue
            if "date_gte" in filters and sent_at < filters["date_gte"]:
                continue
            if "date_lte" in filters and sent_at > filters["date_lte"]:
                continue
            if "message_id" in filters:
                continue  # no group has ids: one message is never found
            total += group.count
            if self.dynamic and index == 0:
                # Demo data that moves: three more messages every ten seconds.
                total += int((time.time() - self.created) // 10) * 3
        total = max(0, total - int(filters.get("offset", 0)))
        if filters.get("limit"):
            total = min(total, int(filters["limit"]))
        return total


def _group(
    direction: str, status: str, delivery: str, billing: str, number: str, hours: float, n: int
) -> MessageGroup:
    return MessageGroup(
        f"DIRECTION_{direction}",
        f"STATUS_{status}",
        f"DELIVERY_STATUS_{delivery}",
        f"BILLING_STATUS_{billing}",
        number,
        hours * HOUR,
        n,
    )


def demo_state(dynamic: bool = False) -> ExolveState:
    return ExolveState(
        applications={
            "shop": Application(
                "demo-exolve-shop-api-key",
                [
                    _group("OUTGOING", "DELIVERED", "DELIVERED", "BILLED", "79678880033", 2, 1520),
                    _group("OUTGOING", "DELIVERED", "DELIVERED", "BILLED", "79678880033", 72, 4800),
                    _group("OUTGOING", "DELIVERED", "DELIVERED", "BILLED", "MYSHOP", 1, 310),
                    _group("OUTGOING", "TRANSMITTED", "TRANSMITTED", "BILLED", "MYSHOP", 0.1, 42),
                    _group("OUTGOING", "QUEUED", "QUEUED", "PREBILLED", "79678880033", 0.01, 7),
                    _group("OUTGOING", "FAILED", "FAILED", "REFUNDED", "79678880033", 5, 13),
                    _group("OUTGOING", "FAILED", "FAILED", "REFUNDING", "MYSHOP", 0.5, 2),
                    _group("OUTGOING", "UNDERFUNDED", "QUEUED", "UNDERFUNDED", "MYSHOP", 30, 3),
                    _group("INCOMING", "DELIVERED", "DELIVERED", "BILLED", "79678880033", 3, 95),
                    _group(
                        "INCOMING", "DELIVERED", "DELIVERED", "AUTHORIZED", "79678880033", 50, 11
                    ),
                ],
            ),
            "alerts": Application(
                "demo-exolve-alerts-api-key",
                [
                    _group("OUTGOING", "DELIVERED", "DELIVERED", "BILLED", "ALERTS", 4, 64),
                    _group("OUTGOING", "DELIVERED", "DELIVERED", "BILLED", "ALERTS", 200, 900),
                    _group("OUTGOING", "FAILED", "FAILED", "FAILED", "ALERTS", 6, 1),
                ],
            ),
        },
        dynamic=dynamic,
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "details": []}, status=status)


def _bad_request(message: str) -> web.Response:
    return _error(400, 3, message)  # gRPC INVALID_ARGUMENT


def _validate(payload: dict[str, Any]) -> dict[str, Any] | web.Response:
    """The payload's filters with enums as names and dates as Unix seconds, or a 400."""
    filters: dict[str, Any] = {}
    for key, value in payload.items():
        if key not in FIELDS:
            return _bad_request(f'unknown field "{key}"')
        if key in ENUMS:
            names = ENUMS[key]
            if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(names):
                value = names[value - 1]
            if value not in names:
                return _bad_request(f'invalid value for enum field "{key}": {value!r}')
            filters[key] = value
        elif key in ("date_gte", "date_lte"):
            if not isinstance(value, str):
                return _bad_request(f'invalid value for string field "{key}"')
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return _bad_request(f'invalid value for field "{key}": not RFC 3339')
            if moment.tzinfo is None:
                return _bad_request(f'invalid value for field "{key}": no time zone')
            filters[key] = moment.timestamp()
        elif key in ("limit", "offset"):
            try:
                number = int(value)
            except (TypeError, ValueError):
                return _bad_request(f'invalid value for uint field "{key}"')
            if number < 0 or isinstance(value, bool):
                return _bad_request(f'invalid value for uint field "{key}"')
            filters[key] = number
        else:
            if not isinstance(value, str):
                return _bad_request(f'invalid value for string field "{key}"')
            filters[key] = value
    return filters


async def get_count(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    state: ExolveState = sim.state[PROVIDER]
    account = request.match_info["account"]
    application = state.applications.get(account)
    if application is None:
        return web.Response(status=404, text="404 page not found")
    fault = request_fault(request)
    name = fault.name if fault else None
    if request.headers.get("Authorization") != f"Bearer {application.api_key}" or name == "auth":
        return _error(401, 16, "authorization token is invalid")  # gRPC UNAUTHENTICATED
    raw = await request.read()
    try:
        payload: Any = await request.json() if raw.strip() else {}
    except ValueError:
        return _bad_request("syntax error")
    if not isinstance(payload, dict):
        return _bad_request("syntax error")
    filters = _validate(payload)
    if isinstance(filters, web.Response):
        return filters
    if state.answer_delay:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(state.answer_delay)
        finally:
            state.in_flight -= 1
    if name == "incoming_500" and filters.get("direction") == "DIRECTION_INCOMING":
        return web.Response(status=500, text="internal error")
    count = state.count(account, filters)
    if count == 0:
        return web.json_response({})
    if name == "counts_as_numbers":
        return web.json_response({"count": count})
    return web.json_response({"count": str(count)})


class ExolveSimulator(SimulatorPart):
    name = PROVIDER
    faults = FAULTS

    def make_state(self, dynamic: bool) -> ExolveState:
        return demo_state(dynamic)

    def register(self, app: web.Application, sim: Simulator) -> None:
        app.router.add_post("/exolve/{account}/messaging/v1/GetCount", get_count)

    def demo_targets(self, url: str, sim: Simulator) -> list[dict[str, Any]]:
        state: ExolveState = sim.state[PROVIDER]
        targets: list[dict[str, Any]] = []
        for account, application in state.applications.items():
            target: dict[str, Any] = {
                "name": f"exolve-{account}",
                "provider": PROVIDER,
                "base_url": f"{url}/exolve/{account}/messaging/v1",
                "api_key": application.api_key,
            }
            if account == "shop":
                target["breakdowns"] = ["status", "delivery_status", "billing_status"]
            else:
                target["window"] = "24h"
                target["number"] = "ALERTS"
            targets.append(target)
        return targets

    def fault_accounts(self, sim: Simulator) -> dict[str, list[str]]:
        """The accounts a fault can be switched on, by route prefix."""
        state: ExolveState = sim.state[PROVIDER]
        return {PROVIDER: sorted(state.applications)}

    def echo_error(self, route: str, text: str) -> web.Response:
        return _error(400, 3, text)  # gRPC code 3: INVALID_ARGUMENT


SIMULATOR_PART = ExolveSimulator
