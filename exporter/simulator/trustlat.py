"""A simulated Trust.lat: the campaign statistics API and its "Atenea" OAuth2 token service.

* ``GET /trustlat/{account}/campaigns/api/v1/company/{company_id}/statistics`` with
  ``Authorization: Bearer <token>`` answers ``{code, resource, data, message}`` as on the API page
  (``shared/reference/providers/trustlat-company-statistics.txt``): ``actions`` holds the keys the
  company has (the page's examples leave CLOSED out).
* ``POST /trustlat-atenea/{account}/oauth/token/`` takes ``{client_id, client_secret, grant_type:
  "client_credentials"}`` and answers ``{access_token, token_type, expires_in, created_at}``.
  Atenea is a host of its own in reality (``atenea.trust.lat``), so its routes have a prefix of
  their own: the common faults of ``trustlat`` hit the statistics API only, and those of
  ``trustlat-atenea`` the token service only.

Faults of this provider, switched on ``("trustlat", account)``:

=======================  ===================================================================
fault                    what the client gets
=======================  ===================================================================
``auth``                 the token service refuses the client credentials (401
                         ``invalid_client``) and the statistics API refuses every token
``token_expired``        the statistics API answers 401 to every token issued before the
                         fault was first seen (a token that expired or was revoked early)
``token_endpoint_down``  the token service answers HTTP 503
``invalid_grant``        the token service answers 400 ``invalid_grant`` (OAuth2's refusal of
                         the grant itself, as for revoked credentials)
``short_expiry``         tokens are issued with ``expires_in`` of ``SHORT_TOKEN_LIFETIME``
=======================  ===================================================================
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.simulator import SIMULATOR, Simulator, SimulatorPart, request_fault

PROVIDER = "trustlat"
TOKEN_SERVICE = "trustlat-atenea"  # noqa: S105
TOKEN_LIFETIME = 7200
FAULTS = ("token_expired", "token_endpoint_down", "invalid_grant", "short_expiry")
"""The faults of this provider besides the common ones."""
SHORT_TOKEN_LIFETIME = 5


@dataclass
class Company:
    company_id: int
    sended: int
    pending: int
    fails: int
    actions: dict[str, int]
    campaign: int
    # Either OAuth2 client credentials or a fixed token.
    client_id: str | None = None
    client_secret: str | None = None
    access_token: str | None = None
    token_lifetime: int = TOKEN_LIFETIME

    @property
    def total(self) -> int:
        return self.sended + self.pending + self.fails


@dataclass
class IssuedToken:
    account: str
    created_at: int
    expires_in: int
    serial: int = 0

    def valid(self, now: float) -> bool:
        return now < self.created_at + self.expires_in


@dataclass
class TrustlatState:
    companies: dict[str, Company]
    dynamic: bool = False
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    # Per account, while a ``token_expired`` fault is on: the serial of the first token issued
    # after the fault was first seen (the tokens before it are refused).
    expired_before: dict[str, int] = field(default_factory=dict)
    # Every 401 the statistics API answered: (account, why).
    refused: list[tuple[str, str]] = field(default_factory=list)

    def issue(self, account: str, lifetime: int) -> tuple[str, IssuedToken]:
        value = secrets.token_urlsafe(32)
        token = IssuedToken(account, int(time.time()), lifetime, serial=len(self.tokens))
        self.tokens[value] = token
        return value, token

    def expire_tokens(self, account: str) -> None:
        """Make every token issued so far to ``account`` expired, as time passing would."""
        for token in self.tokens.values():
            if token.account == account:
                token.expires_in = 0


def demo_state(dynamic: bool = False) -> TrustlatState:
    return TrustlatState(
        companies={
            "acme": Company(
                company_id=1,
                sended=1180,
                pending=45,
                fails=23,
                actions={"RECEIVED": 1040, "PRESS_ACTION": 212, "CLOSED": 97, "UNKNOWN": 6},
                campaign=3,
                client_id="demo-trust-acme-client",
                client_secret="demo-trust-acme-client-secret",  # noqa: S106
            ),
            # The page's "Found" example: actions without CLOSED, and with nothing sent.
            "initech": Company(
                company_id=7,
                sended=0,
                pending=0,
                fails=6,
                actions={"RECEIVED": 0, "PRESS_ACTION": 4, "UNKNOWN": 0},
                campaign=5,
                access_token="demo-trust-initech-fixed-token",  # noqa: S106
            ),
        },
        dynamic=dynamic,
    )


def _state(request: web.Request) -> tuple[Simulator, TrustlatState]:
    sim = request.app[SIMULATOR]
    state: TrustlatState = sim.state[PROVIDER]
    return sim, state


def _fault_name(sim: Simulator, provider: str, account: str) -> str | None:
    fault = sim.fault(provider, account)
    return fault.name if fault else None


async def token(request: web.Request) -> web.Response:
    sim, state = _state(request)
    account = request.match_info["account"]
    company = state.companies.get(account)
    if company is None or company.client_id is None:
        return web.json_response({"error": "not_found"}, status=404)
    if _fault_name(sim, PROVIDER, account) == "token_endpoint_down":
        return web.Response(status=503, text="Service Unavailable")
    try:
        payload: Any = await request.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or payload.get("grant_type") != "client_credentials":
        return web.json_response(
            {
                "error": "unsupported_grant_type",
                "error_description": "The authorization grant type is not supported.",
            },
            status=400,
        )
    if _fault_name(sim, PROVIDER, account) == "invalid_grant":
        return web.json_response(
            {
                "error": "invalid_grant",
                "error_description": "The provided authorization grant is invalid, expired or "
                "revoked.",
            },
            status=400,
        )
    own = request_fault(request)  # a fault of the token service itself
    refused = "auth" in (_fault_name(sim, PROVIDER, account), own.name if own else None)
    if (
        refused
        or payload.get("client_id") != company.client_id
        or payload.get("client_secret") != company.client_secret
    ):
        return web.json_response(
            {
                "error": "invalid_client",
                "error_description": "Client authentication failed due to unknown client, no "
                "client authentication included, or unsupported authentication method.",
            },
            status=401,
        )
    lifetime = company.token_lifetime
    if _fault_name(sim, PROVIDER, account) == "short_expiry":
        lifetime = SHORT_TOKEN_LIFETIME
    value, issued = state.issue(account, lifetime)
    return web.json_response(
        {
            "access_token": value,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "created_at": issued.created_at,
        }
    )


def _refuse(state: TrustlatState, account: str, why: str) -> web.Response:
    state.refused.append((account, why))
    return web.json_response(
        {"code": 401, "resource": "Statistics", "message": f"Unauthorized: {why}"}, status=401
    )


async def statistics(request: web.Request) -> web.Response:
    _, state = _state(request)
    account = request.match_info["account"]
    company = state.companies.get(account)
    if company is None or request.match_info["company_id"] != str(company.company_id):
        return web.json_response(
            {"code": 404, "resource": "Statistics", "message": "Company not found"}, status=404
        )
    given = request_fault(request)
    fault = given.name if given else None
    if fault != "token_expired":
        state.expired_before.pop(account, None)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return _refuse(state, account, "missing bearer token")
    if fault == "auth":
        return _refuse(state, account, "invalid token")
    if company.access_token is not None:
        if presented != company.access_token:
            return _refuse(state, account, "invalid token")
    else:
        issued = state.tokens.get(presented)
        if issued is None or issued.account != account:
            return _refuse(state, account, "invalid token")
        if not issued.valid(time.time()):
            return _refuse(state, account, "token expired")
        if fault == "token_expired":
            first_good = state.expired_before.setdefault(account, len(state.tokens))
            if issued.serial < first_good:
                return _refuse(state, account, "token expired")
    if state.dynamic:
        company.sended += 7
        company.pending = max(0, company.pending - 1) + 2
        company.actions["RECEIVED"] = company.actions.get("RECEIVED", 0) + 5
        company.actions["PRESS_ACTION"] = company.actions.get("PRESS_ACTION", 0) + 1
    return web.json_response(
        {
            "code": 200,
            "resource": "Statistics",
            "data": {
                "total": company.total,
                "sended": company.sended,
                "pending": company.pending,
                "fails": company.fails,
                "actions": dict(company.actions),
                "campaign": company.campaign,
            },
            "message": "Ok",
        }
    )


class TrustlatSimulator(SimulatorPart):
    name = PROVIDER
    faults = FAULTS

    def make_state(self, dynamic: bool) -> TrustlatState:
        return demo_state(dynamic)

    def register(self, app: web.Application, sim: Simulator) -> None:
        app.router.add_get(
            "/trustlat/{account}/campaigns/api/v1/company/{company_id}/statistics", statistics
        )
        app.router.add_post(f"/{TOKEN_SERVICE}/{{account}}/oauth/token/", token)

    def demo_targets(self, url: str, sim: Simulator) -> list[dict[str, Any]]:
        state: TrustlatState = sim.state[PROVIDER]
        targets: list[dict[str, Any]] = []
        for account, company in state.companies.items():
            target: dict[str, Any] = {
                "name": f"trustlat-{account}",
                "provider": PROVIDER,
                "base_url": f"{url}/trustlat/{account}",
                "company_id": company.company_id,
            }
            if company.client_id is not None:
                target["client_id"] = company.client_id
                target["client_secret"] = company.client_secret
                target["token_url"] = f"{url}/{TOKEN_SERVICE}/{account}/oauth/token/"
            else:
                target["access_token"] = company.access_token
            targets.append(target)
        return targets

    def fault_accounts(self, sim: Simulator) -> dict[str, list[str]]:
        """The accounts a fault can be switched on, by route prefix: the statistics API's, and the
        token service's (only the companies that use client credentials have a token route)."""
        state: TrustlatState = sim.state[PROVIDER]
        return {
            PROVIDER: sorted(state.companies),
            TOKEN_SERVICE: sorted(
                name for name, company in state.companies.items() if company.client_id is not None
            ),
        }

    def echo_error(self, route: str, text: str) -> web.Response:
        """OAuth's error answer from the token service, the statistics envelope from the API."""
        if route == TOKEN_SERVICE:
            return web.json_response(
                {"error": "invalid_request", "error_description": text}, status=400
            )
        return web.json_response(
            {"code": 400, "resource": "Statistics", "message": text}, status=400
        )


SIMULATOR_PART = TrustlatSimulator
