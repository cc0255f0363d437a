"""A simulated Acme SMS: ``GET /acme/{account}/v1/stats`` with the key in ``X-Api-Key``.

``SIMULATOR_PART`` is registered in the entry-point group ``messaging_stats_exporter.simulators``
(the entry point names this module), so the exporter's
simulator (``--demo``, the tests) serves it next to the built-in providers, with the common faults
(``http_503``, ``wrong_shape``, ``auth``, ...) applied by the simulator's middleware. Its own fault
``counters_unavailable`` answers HTTP 200 with Acme's error envelope. With ``dynamic`` data the
counts grow at every call, as a sending platform's would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from exporter.plugin import SIMULATOR, Simulator, SimulatorPart, request_fault

PROVIDER = "acme"
FAULTS = ("counters_unavailable",)
"""The faults of this provider besides the common ones."""


@dataclass
class Account:
    api_key: str
    counts: dict[tuple[str, str], int]
    """(direction, status) → count, as Acme spells them."""


@dataclass
class AcmeState:
    accounts: dict[str, Account]
    dynamic: bool = False


def demo_state(dynamic: bool = False) -> AcmeState:
    """Two accounts: one with traffic, one without."""
    return AcmeState(
        accounts={
            "shop": Account(
                "demo-acme-shop-key",
                {
                    ("OUTBOUND", "DELIVERED"): 1520,
                    ("OUTBOUND", "FAILED"): 12,
                    ("OUTBOUND", "QUEUED"): 3,
                    ("INBOUND", "RECEIVED"): 88,
                },
            ),
            "quiet": Account("demo-acme-quiet-key", {}),
        },
        dynamic=dynamic,
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def stats(request: web.Request) -> web.Response:
    state: AcmeState = request.app[SIMULATOR].state[PROVIDER]
    account = state.accounts.get(request.match_info["account"])
    if account is None:
        return _error(404, "NOT_FOUND", "no such account")
    fault = request_fault(request)
    if request.headers.get("X-Api-Key") != account.api_key or (fault and fault.name == "auth"):
        return _error(401, "INVALID_KEY", "the API key is not valid")
    if fault and fault.name == "counters_unavailable":
        return _error(200, "COUNTERS_UNAVAILABLE", "counters are being rebuilt, try later")
    if state.dynamic:
        for key in account.counts:
            account.counts[key] += 1
    return web.json_response(
        {
            "messages": [
                {"direction": direction, "status": status, "count": count}
                for (direction, status), count in account.counts.items()
            ]
        }
    )


class AcmeSimulator(SimulatorPart):
    name = PROVIDER
    faults = FAULTS
    requires_api = (1, 0)

    def make_state(self, dynamic: bool) -> AcmeState:
        return demo_state(dynamic)

    def register(self, app: web.Application, sim: Simulator) -> None:
        app.router.add_get(f"/{PROVIDER}/{{account}}/v1/stats", stats)

    def demo_targets(self, url: str, sim: Simulator) -> list[dict[str, Any]]:
        state: AcmeState = sim.state[PROVIDER]
        return [
            {
                "name": f"acme-{name}",
                "provider": PROVIDER,
                "base_url": f"{url}/{PROVIDER}/{name}",
                "api_key": account.api_key,
            }
            for name, account in state.accounts.items()
        ]

    def fault_accounts(self, sim: Simulator) -> dict[str, list[str]]:
        """The accounts a fault can be switched on, by route prefix."""
        state: AcmeState = sim.state[PROVIDER]
        return {PROVIDER: sorted(state.accounts)}

    def echo_error(self, route: str, text: str) -> web.Response:
        return _error(400, "BAD_REQUEST", text)


SIMULATOR_PART = AcmeSimulator
