"""Thulium outbound campaigns: ``GET {base_url}/outbounds/stats`` with HTTP Basic auth.

API page: ``shared/reference/providers/thulium-outbounds-stats.txt`` (Polish). The page lists an
``id`` parameter as required, but its own example calls the endpoint without it and gets every
active campaign: that is the call made here. Campaign ids are five-character zero-padded strings
("00001") and stay strings; ``completion_percent`` is an int or a float; an empty list is a valid
answer (no active campaign). Errors come as ``{"errors": [{"message", "code"}]}``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError

from exporter.providers.base import MetricSpec, Provider, Run, Sample, as_written
from exporter.providers.errors import ParseError
from exporter.providers.http import basic_auth, json_error_text
from exporter.schema.target import TargetConfig, max_response_bytes_field
from exporter.schema.types import NonEmptySecret, SecretFile

RECORDS = "thulium_outbound_campaign_records"
COMPLETION = "thulium_outbound_campaign_completion_ratio"
ACTIVE = "thulium_outbound_active_campaigns"


class ThuliumTarget(TargetConfig):
    provider: Literal["thulium"]
    username: str
    password: NonEmptySecret | None = None
    password_file: SecretFile | None = None
    # outbounds/stats lists the active campaigns, ~70 bytes each: ~1,800 fit.
    max_response_bytes: int = max_response_bytes_field(128 * 1024)

    SECRETS = ("password",)

    def summary(self) -> str:
        return f"{super().summary()} username={self.username}"


class _Campaign(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictStr
    records_count: StrictInt
    completion_percent: StrictInt | StrictFloat


def parse_outbound_stats(body: object) -> list[Sample]:
    """The decoded answer of ``outbounds/stats`` → samples. Raises only :class:`ParseError`."""
    if not isinstance(body, list):
        raise ParseError(f"expected a list of campaigns, got {type(body).__name__}")
    samples: list[Sample] = []
    seen: set[str] = set()
    for index, item in enumerate(body):
        try:
            campaign = _Campaign.model_validate(item)
        except ValidationError as exc:
            raise ParseError.from_validation(exc, at=f"campaign [{index}]") from None
        if not campaign.id or campaign.id in seen:
            raise ParseError(f"campaign [{index}]: empty or repeated id {campaign.id!r}")
        seen.add(campaign.id)
        if campaign.records_count < 0:
            raise ParseError(f"campaign {campaign.id!r}: negative records_count")
        percent = float(campaign.completion_percent)
        if not math.isfinite(percent) or not 0 <= percent <= 100:
            raise ParseError(
                f"campaign {campaign.id!r}: completion_percent {percent} not in 0..100"
            )
        samples.append(Sample(RECORDS, (campaign.id,), float(campaign.records_count)))
        # As the ratio a person would write: 24.48 % is 0.2448, not 0.24480000000000002.
        samples.append(Sample(COMPLETION, (campaign.id,), float(as_written(percent) / 100)))
    samples.append(Sample(ACTIVE, (), float(len(seen))))
    return samples


@json_error_text
def error_text(decoded: Any) -> str | None:
    """The messages of Thulium's ``{"errors": [{"message", "code"}]}`` error body."""
    if not isinstance(decoded, dict) or not isinstance(decoded.get("errors"), list):
        return None
    parts = []
    for error in decoded["errors"][:5]:
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code = error.get("code")
            parts.append(
                f"{error['message']} (code {code})" if code is not None else error["message"]
            )
    return "; ".join(parts) or None


class Thulium(Provider[ThuliumTarget]):
    name = "thulium"
    config_model = ThuliumTarget
    metrics = (
        MetricSpec(
            RECORDS,
            "Records in the active outbound campaign (records_count of GET outbounds/stats), "
            "refreshed every interval.",
            ("campaign_id",),
        ),
        MetricSpec(
            COMPLETION,
            "Completion of the active outbound campaign, 0..1 (completion_percent / 100 of GET "
            "outbounds/stats), refreshed every interval.",
            ("campaign_id",),
        ),
        MetricSpec(
            ACTIVE,
            "Active outbound campaigns (entries in the answer of GET outbounds/stats), refreshed "
            "every interval.",
        ),
    )

    async def collect(self, run: Run) -> list[Sample]:
        config = self.config
        body = await run.client.get_json(
            f"{config.base_url}/outbounds/stats",
            endpoint="outbounds/stats",
            headers={
                "Accept": "application/json",
                "Authorization": basic_auth(config.username, config.secret("password") or ""),
            },
            error_text=error_text,
        )
        return parse_outbound_stats(body)


PROVIDER = Thulium
