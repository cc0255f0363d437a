"""A simulated Altcraft (API v1.1) under ``/altcraft/{account}/api/v1.1/``.

As on the API pages: every call is a ``POST`` with the token in the JSON body, every answer the
``{data, error, error_text}`` envelope, an error with HTTP 200. ``resources/refresh_counters`` and
``segments/refresh_counters`` start a task and return its id at once; ``tasks/status`` reports it
``processing`` with rising progress for a few polls (``polls_to_complete``; with ``dynamic`` data,
``task_seconds`` of wall time instead), then ``completed`` with the result: channels in a shuffled
order, segment records with only the ``*_sendable`` counters and a ``resource_id``, resource
records with ``last_count_time`` in several Go duration forms. ``resources/list`` pages by
``from_id``/``next_from_id`` with at most ``list_page_size`` resources a page; ``resources/get``
gives a resource's ``dbs_ids``.

``state.method_errors[(account, method)] = (code, text)`` makes every call of one method answer
with that envelope error (HTTP 200).

Faults, switched for a whole account with ``sim.set_fault("altcraft", account, name)`` (``times``
limits them to that many requests) or for one
object with ``state.object_faults[(account, "resource" | "segment", id)] = name``:

========================  ========================================================================
fault                     what the client gets
========================  ========================================================================
``auth``                  HTTP 200, ``error`` 401, "Invalid token" (as for a wrong token)
``task_unknown``          ``tasks/status``: HTTP 200, ``error`` 404, the task is not found
``task_never_completes``  ``tasks/status``: ``processing``, progress stuck below 100, for ever
``task_error``            ``tasks/status``: status ``error``
``empty_result``          ``tasks/status``: ``completed`` with ``result: []``
========================  ========================================================================

A fault is read when the task is polled, so clearing ``task_never_completes`` lets the same task
complete at its next poll.
"""

from __future__ import annotations

import copy
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from exporter.simulator import SIMULATOR, Simulator, SimulatorPart, request_fault

PROVIDER = "altcraft"
API = "/altcraft/{account}/api/v1.1"
TASK_FAULTS = ("task_unknown", "task_never_completes", "task_error", "empty_result")
FAULTS = TASK_FAULTS
"""The faults of this provider besides the common ones."""
STUCK_PROGRESS = 42
MAX_TASKS = 10_000

Counts = dict[str, dict[str, int]]
"""channel → counter → value, as in a result record's ``channels``."""


@dataclass
class Database:
    """A resource's subscription counters in one of its databases."""

    counts: Counts
    updated: str
    count_duration: str
    """The Go duration of ``last_count_time``: ``231.374251ms``, ``2m3.5s``, ``850µs``, ..."""


@dataclass
class Resource:
    id: int
    name: str
    channels: list[str]
    dbs: dict[int, Database] = field(default_factory=dict)


@dataclass
class Segment:
    id: int
    resource_id: int
    db_id: int
    counts: Counts
    updated: str


@dataclass
class Account:
    token: str
    resources: dict[int, Resource]
    segments: dict[int, Segment]
    discover: bool = False
    """The demo target lists the resources itself (``resources: auto``)."""


@dataclass
class Task:
    id: str
    account: str
    kind: str
    object_id: int
    resource_id: int
    list_id: int
    created: float
    polls: int = 0
    result: list[dict[str, Any]] | None = None


@dataclass
class AltcraftState:
    accounts: dict[str, Account]
    dynamic: bool = False
    polls_to_complete: int = 3
    task_seconds: float = 0.5
    list_page_size: int = 2
    tasks: dict[str, Task] = field(default_factory=dict)
    object_faults: dict[tuple[str, str, int], str] = field(default_factory=dict)
    method_errors: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    """(account, method) → the ``error`` and ``error_text`` every call of it answers with."""
    rng: random.Random = field(default_factory=lambda: random.Random(7))  # noqa: S311


def _resource_counts(
    all_: int,
    subscribed: int,
    unsubscribed: int = 0,
    hardbounced: int = 0,
    *,
    unconfirmed: int = 0,
    complained: int = 0,
    suspended: int = 0,
    invalid: int = 0,
    subscribed_sendable: int | None = None,
) -> dict[str, int]:
    return {
        "all": all_,
        "complained": complained,
        "hardbounced": hardbounced,
        "invalid": invalid,
        "subscribed": subscribed,
        "subscribed_sendable": subscribed if subscribed_sendable is None else subscribed_sendable,
        "suspended": suspended,
        "unconfirmed": unconfirmed,
        "unconfirmed_sendable": unconfirmed,
        "unsubscribed": unsubscribed,
    }


def demo_state(dynamic: bool = False) -> AltcraftState:
    # Account "prod": the pages' examples (resource 24 with list 1; the segment example's counts)
    # plus a resource with an unlisted channel and counter, and one counter not reported.
    shop_telegram = _resource_counts(120, 97, 23)
    del shop_telegram["suspended"]
    shop_telegram["blocked"] = 4
    prod = Account(
        token="demo-altcraft-prod-token",  # noqa: S106
        resources={
            24: Resource(
                24,
                "Blog",
                ["email", "push", "sms"],
                {
                    1: Database(
                        {
                            "sms": _resource_counts(1336, 0),
                            "push": _resource_counts(1336, 0),
                            "email": _resource_counts(1336, 842, 60, 434),
                        },
                        "2024-04-19T13:31:08.927Z",
                        "231.374251ms",
                    )
                },
            ),
            27: Resource(
                27,
                "Shop",
                ["email", "push", "sms", "telegram"],
                {
                    1: Database(
                        {
                            "email": _resource_counts(
                                5210,
                                4800,
                                250,
                                60,
                                unconfirmed=70,
                                complained=12,
                                suspended=9,
                                invalid=9,
                                subscribed_sendable=4711,
                            ),
                            "push": _resource_counts(5210, 1900, 40),
                            "sms": _resource_counts(5210, 0),
                            "telegram": shop_telegram,
                        },
                        "2024-04-20T09:30:01.583Z",
                        "2m3.5s",
                    )
                },
            ),
        },
        segments={
            7: Segment(
                7,
                24,
                1,
                {
                    "email": {"subscribed_sendable": 209, "unconfirmed_sendable": 0},
                    "push": {"subscribed_sendable": 0, "unconfirmed_sendable": 0},
                    "sms": {"subscribed_sendable": 0, "unconfirmed_sendable": 0},
                },
                "2024-04-20T09:30:01.583Z",
            ),
            12: Segment(
                12,
                27,
                1,
                {
                    "email": {"subscribed_sendable": 1480, "unconfirmed_sendable": 15},
                    "push": {"subscribed_sendable": 388, "unconfirmed_sendable": 0},
                },
                "2024-04-21T06:00:00.250Z",
            ),
        },
    )
    # Account "media": listed with resources: auto; two pages of resources, one without a
    # database, one with two.
    media = Account(
        token="demo-altcraft-media-token",  # noqa: S106
        discover=True,
        resources={
            3: Resource(
                3,
                "News",
                ["email"],
                {
                    1: Database(
                        {"email": _resource_counts(900, 700, 150, 50)},
                        "2024-05-01T08:00:00.000Z",
                        "850µs",
                    ),
                    2: Database(
                        {"email": _resource_counts(40, 38, 2)},
                        "2024-05-01T08:00:01.500Z",
                        "12.5μs",
                    ),
                },
            ),
            5: Resource(5, "Drafts", ["email"], {}),
            8: Resource(
                8,
                "App",
                ["push"],
                {
                    4: Database(
                        {"push": _resource_counts(3000, 2500, 500)},
                        "2024-05-02T10:15:30.125Z",
                        "1h0m0.5s",
                    )
                },
            ),
            11: Resource(
                11,
                "Alerts",
                ["sms"],
                {
                    1: Database(
                        {"sms": _resource_counts(77, 70, 7)},
                        "2024-05-03T00:00:00.001Z",
                        "1.5s",
                    )
                },
            ),
        },
        segments={
            4: Segment(
                4,
                8,
                4,
                {"push": {"subscribed_sendable": 1200, "unconfirmed_sendable": 0}},
                "2024-05-02T10:15:31.000Z",
            )
        },
    )
    return AltcraftState(accounts={"prod": prod, "media": media}, dynamic=dynamic)


def _envelope(data: Any = None, error: int = 0, error_text: str = "Successful operation") -> Any:
    return {"data": data, "error": error, "error_text": error_text}


def _reply(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _error(code: int, text: str, status: int = 200) -> web.Response:
    return _reply(_envelope(None, code, text), status)


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def _open(
    request: web.Request,
) -> tuple[Simulator, AltcraftState, str, Account, dict[str, Any]]:
    """The account and the JSON body of a request whose token is right; else the error answer."""
    sim = request.app[SIMULATOR]
    state: AltcraftState = sim.state[PROVIDER]
    account_name = request.match_info["account"]
    account = state.accounts.get(account_name)
    if account is None:
        raise _Refused(_error(404, "Not found", status=404))
    try:
        body = await request.json()
    except ValueError:
        raise _Refused(_error(400, "Invalid request body", status=400)) from None
    if not isinstance(body, dict):
        raise _Refused(_error(400, "Invalid request body", status=400))
    fault = request_fault(request)
    if body.get("token") != account.token or (fault is not None and fault.name == "auth"):
        raise _Refused(_error(401, "Invalid token"))
    method = request.path.split("/api/v1.1/", 1)[-1]
    if (account_name, method) in state.method_errors:
        raise _Refused(_error(*state.method_errors[(account_name, method)]))
    return sim, state, account_name, account, body


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(_error(400, f"Invalid parameter: {key}"))
    return value


def _new_task(
    state: AltcraftState, account: str, kind: str, object_id: int, resource_id: int, list_id: int
) -> str:
    if len(state.tasks) >= MAX_TASKS:  # a long demo: forget the oldest
        for old in list(state.tasks)[: MAX_TASKS // 10]:
            del state.tasks[old]
    task = Task(str(uuid.uuid4()), account, kind, object_id, resource_id, list_id, time.monotonic())
    state.tasks[task.id] = task
    return task.id


async def refresh_resource(request: web.Request) -> web.Response:
    try:
        _, state, name, account, body = await _open(request)
        resource_id, list_id = _int(body, "id"), _int(body, "list_id")
    except _Refused as refused:
        return refused.response
    resource = account.resources.get(resource_id)
    if resource is None:
        return _error(404, "Resource not found")
    if list_id not in resource.dbs:
        return _error(404, "Database is not attached to the resource")
    task_id = _new_task(state, name, "resource", resource_id, resource_id, list_id)
    return _reply(_envelope({"task_id": task_id}))


async def refresh_segment(request: web.Request) -> web.Response:
    try:
        _, state, name, account, body = await _open(request)
        segment_id = _int(body, "id")
        resource_id, db_id = _int(body, "resource_id"), _int(body, "db_id")
    except _Refused as refused:
        return refused.response
    segment = account.segments.get(segment_id)
    if segment is None or (segment.resource_id, segment.db_id) != (resource_id, db_id):
        return _error(404, "Segment not found")
    task_id = _new_task(state, name, "segment", segment_id, resource_id, db_id)
    return _reply(_envelope({"task_id": task_id}))


def _shuffled(state: AltcraftState, counts: Counts) -> list[dict[str, Any]]:
    channels = [{"channel": channel, "status": dict(status)} for channel, status in counts.items()]
    state.rng.shuffle(channels)
    return channels


def _drift(state: AltcraftState, counts: Counts) -> None:
    """Dynamic data: a few new subscribers at every recount, on the channels that have some."""
    for status in counts.values():
        if not status.get("subscribed", status.get("subscribed_sendable", 0)):
            continue
        gained = state.rng.randint(0, 3)
        for key in ("all", "subscribed", "subscribed_sendable"):
            if key in status:
                status[key] += gained


def _result(state: AltcraftState, account: Account, task: Task) -> list[dict[str, Any]]:
    if task.kind == "resource":
        database = account.resources[task.object_id].dbs.get(task.list_id)
        if database is None:
            return []
        if state.dynamic:
            _drift(state, database.counts)
            database.updated = _now_rfc3339()
            database.count_duration = state.rng.choice(
                ["231.374251ms", "1.5s", "850µs", "2m3.5s", "12.5μs", "3.000001s"]
            )
        counted_at = database.updated.split(".")[0].removesuffix("Z") + "Z"
        return [
            {
                "channels": _shuffled(state, database.counts),
                "in_progress": False,
                "last_count_time": f"counted at {counted_at} in {database.count_duration}",
                "list_id": task.list_id,
                "refresh_task_id": "",
                "updated": database.updated,
            }
        ]
    segment = account.segments[task.object_id]
    if state.dynamic:
        _drift(state, segment.counts)
        segment.updated = _now_rfc3339()
    return [
        {
            "channels": _shuffled(state, segment.counts),
            "in_progress": False,
            "list_id": segment.db_id,
            "refresh_task_id": "",
            "resource_id": segment.resource_id,
            "updated": segment.updated,
        }
    ]


async def task_status(request: web.Request) -> web.Response:
    try:
        _, state, name, account, body = await _open(request)
    except _Refused as refused:
        return refused.response
    task = state.tasks.get(str(body.get("task_id")))
    fault = request_fault(request)
    task_fault = fault.name if fault is not None and fault.name in TASK_FAULTS else None
    if task is not None:
        task_fault = state.object_faults.get((name, task.kind, task.object_id), task_fault)
    if task is None or task.account != name or task_fault == "task_unknown":
        return _error(404, "Task not found")
    task.polls += 1
    if state.dynamic:
        progress = min(100, int((time.monotonic() - task.created) / state.task_seconds * 100))
        finished = progress >= 100 and task.polls >= 2
    else:
        progress = min(100, task.polls * 100 // state.polls_to_complete)
        finished = task.polls >= state.polls_to_complete
    if task_fault == "task_error":
        return _reply(_envelope({"status": "error", "progress": min(progress, STUCK_PROGRESS)}))
    if task_fault == "task_never_completes":
        return _reply(
            _envelope({"status": "processing", "progress": min(progress, STUCK_PROGRESS)})
        )
    if not finished:
        return _reply(_envelope({"status": "processing", "progress": min(progress, 99)}))
    if task_fault == "empty_result":
        return _reply(_envelope({"status": "completed", "progress": 100, "result": []}))
    if task.result is None:  # counted once, at completion; later polls repeat the same result
        task.result = _result(state, account, task)
    result = copy.deepcopy(task.result)
    return _reply(_envelope({"status": "completed", "progress": 100, "result": result}))


async def list_resources(request: web.Request) -> web.Response:
    try:
        _, state, _, account, body = await _open(request)
    except _Refused as refused:
        return refused.response
    from_id = body.get("from_id", 1)
    limit = body.get("limit", 1000)
    if not isinstance(from_id, int) or not isinstance(limit, int) or limit < 1:
        return _error(400, "Invalid parameter: from_id or limit")
    ids = sorted(rid for rid in account.resources if rid >= from_id)
    page = ids[: min(limit, state.list_page_size)]
    answer = _envelope(
        [{"id": rid, "name": account.resources[rid].name, "groups": []} for rid in page]
    )
    answer["next_from_id"] = (page[-1] + 1) if page else from_id
    answer["total_count"] = len(account.resources)
    return _reply(answer)


async def get_resource(request: web.Request) -> web.Response:
    try:
        _, _, _, account, body = await _open(request)
        resource_id = _int(body, "id")
    except _Refused as refused:
        return refused.response
    resource = account.resources.get(resource_id)
    if resource is None:
        return _error(404, "Resource not found")
    return _reply(
        _envelope(
            {
                "channels": resource.channels,
                "dbs_ids": sorted(resource.dbs),
                "id": resource.id,
                "name": resource.name,
                "trk_domain": "tracking.example.com",
                "url": "https://example.com",
            }
        )
    )


class AltcraftSimulator(SimulatorPart):
    name = PROVIDER
    faults = FAULTS

    def make_state(self, dynamic: bool) -> AltcraftState:
        return demo_state(dynamic)

    def register(self, app: web.Application, sim: Simulator) -> None:
        app.router.add_post(f"{API}/resources/refresh_counters", refresh_resource)
        app.router.add_post(f"{API}/segments/refresh_counters", refresh_segment)
        app.router.add_post(f"{API}/tasks/status", task_status)
        app.router.add_post(f"{API}/resources/list", list_resources)
        app.router.add_post(f"{API}/resources/get", get_resource)

    def demo_targets(self, url: str, sim: Simulator) -> list[dict[str, Any]]:
        state: AltcraftState = sim.state[PROVIDER]
        targets = []
        for name, account in state.accounts.items():
            resources: Any = (
                "auto"
                if account.discover
                else [
                    {"id": resource.id, "list_id": db}
                    for resource in account.resources.values()
                    for db in resource.dbs
                ]
            )
            targets.append(
                {
                    "name": f"altcraft-{name}",
                    "provider": PROVIDER,
                    "base_url": f"{url}/altcraft/{name}/api/v1.1",
                    "token": account.token,
                    "task_poll_interval": "0.1s",
                    "resources": resources,
                    "segments": [
                        {"id": s.id, "resource_id": s.resource_id, "db_id": s.db_id}
                        for s in account.segments.values()
                    ],
                }
            )
        return targets

    def fault_accounts(self, sim: Simulator) -> dict[str, list[str]]:
        """The accounts a fault can be switched on, by route prefix."""
        state: AltcraftState = sim.state[PROVIDER]
        return {PROVIDER: sorted(state.accounts)}

    def echo_error(self, route: str, text: str) -> web.Response:
        return _error(400, text, status=400)


SIMULATOR_PART = AltcraftSimulator
