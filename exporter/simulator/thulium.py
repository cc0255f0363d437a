"""A simulated Thulium: ``GET /thulium/{account}/api/outbounds/stats`` with HTTP Basic auth.

As on the API page: campaign ids are zero-padded strings, ``completion_percent`` is an int or a
float, errors are ``{"errors": [{"message", "code"}]}``. With ``dynamic`` data the campaigns
progress a little at every call, as a dialer working through its records would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from exporter.simulator import SIMULATOR, Simulator, SimulatorPart, request_fault

PROVIDER = "thulium"
FAULTS: tuple[str, ...] = ()
"""The faults of this provider besides the common ones: none."""


@dataclass
class Campaign:
    id: str
    records_count: int
    completion_percent: float | int


@dataclass
class Tenant:
    username: str
    password: str
    campaigns: list[Campaign] = field(default_factory=list)


@dataclass
class ThuliumState:
    tenants: dict[str, Tenant]
    dynamic: bool = False


def demo_state(dynamic: bool = False) -> ThuliumState:
    return ThuliumState(
        tenants={
            "acme": Tenant(
                "api_user",
                "demo-thulium-acme-password",
                [
                    Campaign("00001", 1324, 14.87),
                    Campaign("00002", 20, 23),
                    Campaign("00015", 5000, 0),
                ],
            ),
            "globex": Tenant(
                "globex_api",
                "demo-thulium-globex-password",
                [Campaign("00003", 250, 99.5)],
            ),
        },
        dynamic=dynamic,
    )


def _error(status: int, message: str, code: int) -> web.Response:
    return web.json_response({"errors": [{"message": message, "code": code}]}, status=status)


def _credentials(request: web.Request) -> tuple[str, str] | None:
    try:
        auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""), "utf-8")
    except ValueError:
        return None
    return auth.login, auth.password


async def outbound_stats(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    state: ThuliumState = sim.state[PROVIDER]
    account = request.match_info["account"]
    tenant = state.tenants.get(account)
    if tenant is None:
        return _error(404, "Not found", 404)
    fault = request_fault(request)
    given = _credentials(request)
    if given != (tenant.username, tenant.password) or (fault and fault.name == "auth"):
        return _error(401, "Unauthorized: invalid API user or password", 401)
    if state.dynamic:
        for campaign in tenant.campaigns:
            if campaign.completion_percent < 100:
                campaign.completion_percent = round(
                    min(100.0, campaign.completion_percent + 0.37), 2
                )
    body: list[dict[str, Any]] = [
        {
            "id": campaign.id,
            "records_count": campaign.records_count,
            "completion_percent": campaign.completion_percent,
        }
        for campaign in tenant.campaigns
    ]
    return web.json_response(body)


class ThuliumSimulator(SimulatorPart):
    name = PROVIDER
    faults = FAULTS

    def make_state(self, dynamic: bool) -> ThuliumState:
        return demo_state(dynamic)

    def register(self, app: web.Application, sim: Simulator) -> None:
        app.router.add_get("/thulium/{account}/api/outbounds/stats", outbound_stats)

    def demo_targets(self, url: str, sim: Simulator) -> list[dict[str, Any]]:
        state: ThuliumState = sim.state[PROVIDER]
        return [
            {
                "name": f"thulium-{account}",
                "provider": PROVIDER,
                "base_url": f"{url}/thulium/{account}/api",
                "username": tenant.username,
                "password": tenant.password,
            }
            for account, tenant in state.tenants.items()
        ]

    def fault_accounts(self, sim: Simulator) -> dict[str, list[str]]:
        """The accounts a fault can be switched on, by route prefix."""
        state: ThuliumState = sim.state[PROVIDER]
        return {PROVIDER: sorted(state.tenants)}

    def echo_error(self, route: str, text: str) -> web.Response:
        return _error(400, text, 400)


SIMULATOR_PART = ThuliumSimulator
