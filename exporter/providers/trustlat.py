"""Trust.lat push campaigns: ``GET {base_url}/campaigns/api/v1/company/{company_id}/statistics``
with a Bearer token from Trust's "Atenea" OAuth2 service.

API page: ``shared/reference/providers/trustlat-company-statistics.txt`` (Spanish). What it says,
and what this module does about it:

* The answer is ``{code, resource, data: {total, sended, pending, fails, actions, campaign},
  message}`` and covers the last 7 days. ``sended``, ``pending`` and ``fails`` add up to ``total``;
  that is not checked (a provider's arithmetic is not a reason to drop its figures).
* ``actions`` documents RECEIVED, PRESS_ACTION, CLOSED and UNKNOWN, but the examples leave CLOSED
  out: every key that comes is passed through as a label value, none is required. The page's own
  example has four PRESS_ACTION with nothing sent, so actions are not checked against ``sended``.
* The token comes from Atenea: ``POST {token_url}`` with ``{client_id, client_secret, grant_type:
  "client_credentials"}`` answers ``{access_token, token_type: "Bearer", expires_in, created_at}``
  (a Doorkeeper-style answer: ``created_at`` in Unix seconds). The token is kept for the target's
  lifetime and renewed before it expires, and once after a 401 from the statistics endpoint. A
  token endpoint that refuses the credentials (401, 403, or OAuth's 400 ``invalid_client`` /
  ``invalid_grant`` / ``unauthorized_client``) is reason ``auth``; one that cannot be reached,
  times out, fails (5xx) or answers nonsense gives the reason of that failure, as any other
  endpoint would. A fixed ``access_token`` is the alternative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from exporter.providers.base import MetricSpec, Provider, Run, Sample, as_written, label_value
from exporter.providers.errors import CollectError, ParseError, Reason
from exporter.providers.http import (
    ERROR_TEXT_LIMIT,
    HttpError,
    ProviderClient,
    decode_json,
    json_error_text,
)
from exporter.schema.target import TargetConfig, max_response_bytes_field
from exporter.schema.types import NonEmptySecret, SecretFile, http_url, key_problem

NOTIFICATIONS = "trustlat_notifications"
SCHEDULED = "trustlat_notifications_scheduled"
ACTIONS = "trustlat_notification_actions"
CAMPAIGNS = "trustlat_campaigns"
TOKEN_EXPIRY = "trustlat_access_token_expiry_timestamp_seconds"  # noqa: S105

DEFAULT_TOKEN_URL = "https://atenea.trust.lat/oauth/token/"  # noqa: S105
STATISTICS_ENDPOINT = "company/statistics"
TOKEN_ENDPOINT = "oauth/token"  # noqa: S105
RENEW_SLACK = 30.0
"""A token is renewed when less than the target's deadline plus this many seconds of it remain."""

# The states of ``data``: the API's key → the label value of the metrics contract.
STATES = (("sended", "sent"), ("pending", "pending"), ("fails", "failed"))

_COMPANY_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _company_id(value: object) -> object:
    """``company_id: 1`` (YAML int) or ``"1"``; kept as the string that goes into the URL."""
    if isinstance(value, bool):
        raise ValueError("must be a number or a string of letters, digits, _ and -")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return str(value)
    if isinstance(value, str) and value and set(value) <= _COMPANY_ID_CHARS:
        return value
    raise ValueError("must be a number or a string of letters, digits, _ and -")


def _token_url(value: str) -> str:
    """An http(s) URL without credentials; kept as written (Atenea's path ends with a slash)."""
    if http_url(value, credentials="client_id and client_secret").fragment:
        raise ValueError("must not have a fragment")
    return value


CompanyId = Annotated[str, BeforeValidator(_company_id)]
TokenUrl = Annotated[str, AfterValidator(_token_url)]


class TrustlatTarget(TargetConfig):
    provider: Literal["trustlat"]
    company_id: CompanyId
    client_id: str | None = Field(default=None, min_length=1)
    client_secret: NonEmptySecret | None = None
    client_secret_file: SecretFile | None = None
    token_url: TokenUrl | None = None
    access_token: NonEmptySecret | None = None
    access_token_file: SecretFile | None = None
    # The statistics are one small object, a token answer a JWT and a few fields.
    max_response_bytes: int = max_response_bytes_field(16 * 1024)

    SECRETS = ("client_secret", "access_token")
    OPTIONAL_SECRETS = ("client_secret", "access_token")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> TrustlatTarget:
        fixed = self.access_token is not None or self.access_token_file is not None
        secret = self.client_secret is not None or self.client_secret_file is not None
        if fixed:
            if self.client_id is not None or secret or self.token_url is not None:
                raise key_problem(
                    "access_token" if self.access_token is not None else "access_token_file",
                    "give either access_token (a fixed token) or client_id and client_secret "
                    "(OAuth2 client credentials, with an optional token_url), not both",
                )
            return self
        if self.client_id is None and not secret:
            raise key_problem(
                "client_id",
                "give either client_id and client_secret (OAuth2 client credentials) or "
                "access_token (a fixed token)",
            )
        if self.client_id is None:
            raise key_problem("client_id", "client_id is required with client_secret")
        if not secret:
            raise key_problem(
                "client_secret", "client_secret or client_secret_file is required with client_id"
            )
        return self

    @property
    def uses_oauth(self) -> bool:
        return self.client_id is not None

    @property
    def effective_token_url(self) -> str:
        return self.token_url or DEFAULT_TOKEN_URL

    def summary(self) -> str:
        auth = (
            f"auth=client_credentials client_id={self.client_id} "
            f"token_url={self.effective_token_url}"
            if self.uses_oauth
            else "auth=access_token"
        )
        return f"{super().summary()} company_id={self.company_id} {auth}"


# -- the statistics answer ---------------------------------------------------------------------

MAX_COUNT = 2**63 - 1
NonNegative = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]


class _Statistics(BaseModel):
    model_config = ConfigDict(extra="ignore")

    total: NonNegative
    sended: NonNegative
    pending: NonNegative
    fails: NonNegative
    actions: dict[StrictStr, NonNegative]
    campaign: NonNegative


def envelope_error(body: object) -> tuple[Reason, str] | None:
    """A well-formed answer whose ``code`` says it failed: (reason, the provider's message).

    The page shows ``code`` 200 next to ``data``; another code in an HTTP 200 answer is the
    provider reporting an error (401/403 there mean the token, as an HTTP 401 would). The message
    is whole: the caller redacts it, then cuts it (a cut first could split a secret).
    """
    if not isinstance(body, dict):
        return None
    code = body.get("code")
    if code is None or isinstance(code, bool) or not isinstance(code, int | str):
        return None
    code_text = str(code).strip()
    if code_text.isdigit() and 200 <= int(code_text) < 300:
        return None
    message = body.get("message")
    text = f"code {code_text[:20]}" + (
        f" ({message})" if isinstance(message, str) and message else ""
    )
    if code_text in ("401", "403"):
        return Reason.AUTH, text
    return Reason.PROVIDER_ERROR, text


def parse_statistics(body: object, company_id: str) -> list[Sample]:
    """The decoded answer of ``company/{id}/statistics`` → samples. Raises only ParseError."""
    if not isinstance(body, dict):
        raise ParseError(f"expected an object with data, got {type(body).__name__}")
    if "data" not in body:
        raise ParseError("the answer has no data")
    try:
        stats = _Statistics.model_validate(body["data"])
    except ValidationError as exc:
        raise ParseError.from_validation(exc, at="data") from None
    samples = [
        Sample(NOTIFICATIONS, (company_id, state), float(getattr(stats, key)))
        for key, state in STATES
    ]
    samples.append(Sample(SCHEDULED, (company_id,), float(stats.total)))
    seen: dict[str, str] = {}
    for key, count in stats.actions.items():
        action = label_value(key)
        if action in seen:
            raise ParseError(
                f"data.actions: keys {seen[action]!r} and {key!r} are the same action {action!r}"
            )
        seen[action] = key
        samples.append(Sample(ACTIONS, (company_id, action), float(count)))
    samples.append(Sample(CAMPAIGNS, (company_id,), float(stats.campaign)))
    return samples


# -- the token answer --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at: float | None
    """``created_at + expires_in`` (Unix seconds) as Atenea says; None when it gives no expiry."""
    renew_at: float | None
    """When to get a new one: the earlier of the announced expiry and our own clock's."""


class _TokenAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: Annotated[StrictStr, Field(min_length=1)]
    token_type: StrictStr | None = None
    expires_in: Annotated[StrictInt | StrictFloat, Field(gt=0, le=10 * 365 * 86400)] | None = None
    created_at: Annotated[StrictInt | StrictFloat, Field(ge=0, le=2**40)] | StrictStr | None = None


def _timestamp(value: float | str) -> float:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError("no time zone")
            return moment.timestamp()
        except (ValueError, OverflowError, OSError):
            raise ParseError(
                "created_at is neither Unix seconds nor an ISO 8601 time with a zone"
            ) from None
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ParseError("created_at is not a valid time")
    return seconds


def parse_token(body: object, requested_at: float) -> AccessToken:
    """Atenea's answer → the token and when it expires. ``requested_at`` is our clock when the
    request was sent: a token is renewed by whichever clock says it expires first, so a skewed
    server clock cannot make us use an expired token. Raises only ParseError."""
    if not isinstance(body, dict):
        raise ParseError(f"expected an object with access_token, got {type(body).__name__}")
    try:
        answer = _TokenAnswer.model_validate(body)
    except ValidationError as exc:
        raise ParseError.from_validation(exc) from None
    if answer.token_type is not None and answer.token_type.lower() != "bearer":
        raise ParseError(f"token_type is {answer.token_type[:40]!r}, expected Bearer")
    if answer.expires_in is None:
        return AccessToken(answer.access_token, None, None)
    expires_in = float(answer.expires_in)
    if not math.isfinite(expires_in):
        raise ParseError("expires_in is not a finite number")
    created_at = requested_at if answer.created_at is None else _timestamp(answer.created_at)
    return AccessToken(
        answer.access_token,
        # Added as the decimals Atenea wrote, so the served expiry reads as their sum.
        float(as_written(created_at) + as_written(expires_in)),
        min(created_at, requested_at) + expires_in,
    )


REFUSED_GRANT_ERRORS = frozenset({"invalid_client", "invalid_grant", "unauthorized_client"})
"""OAuth2 error codes (RFC 6749, 5.2) by which a token endpoint refuses the credentials
themselves; other codes (``invalid_request``, ``unsupported_grant_type``, ...) say the request was
malformed, which is no reason to suspect the credentials."""


def oauth_error(body: object) -> str | None:
    """The ``error`` code of an OAuth2 error answer (``{"error": "invalid_client", ...}``), whole:
    whoever quotes it redacts it first."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"]).strip() or None
    return None


def token_failure_reason(reason: Reason, status: int | None, error_code: str | None) -> Reason:
    """The reason of a failed token request. ``auth`` only when the endpoint refused the
    credentials: HTTP 401 or 403, or an OAuth2 error code of :data:`REFUSED_GRANT_ERRORS` (400
    by RFC 6749; also taken from an answer of another status). Otherwise ``reason``, as the HTTP
    client classified the failure (``connection``, ``timeout``, ``http_5xx``, ``http_4xx``,
    ``rate_limited``, ``parse``)."""
    if status in (401, 403) or error_code in REFUSED_GRANT_ERRORS:
        return Reason.AUTH
    return reason


@json_error_text
def _error_text(decoded: Any) -> str | None:
    """``{"message": ...}`` (statistics) or OAuth's ``{"error", "error_description"}`` (Atenea)."""
    if not isinstance(decoded, dict):
        return None
    parts = [
        decoded[key]
        for key in ("error", "error_description", "message")
        if isinstance(decoded.get(key), str) and decoded[key]
    ]
    return ": ".join(parts) or None


class Trustlat(Provider[TrustlatTarget]):
    name = "trustlat"
    config_model = TrustlatTarget
    metrics = (
        MetricSpec(
            NOTIFICATIONS,
            "Push notifications of the company's campaigns in the last 7 days, by state: "
            "sent (sended), pending and failed (fails) of GET campaigns/api/v1/company/{id}/"
            "statistics; they add up to trustlat_notifications_scheduled. Refreshed every "
            "interval.",
            ("company_id", "state"),
        ),
        MetricSpec(
            SCHEDULED,
            "Push notifications scheduled by the company's campaigns in the last 7 days (total of "
            "GET campaigns/api/v1/company/{id}/statistics), refreshed every interval.",
            ("company_id",),
        ),
        MetricSpec(
            ACTIONS,
            "What happened to the sent push notifications of the last 7 days, by action "
            "(each key of actions of GET campaigns/api/v1/company/{id}/statistics: received, "
            "press_action, closed, unknown, ...), refreshed every interval.",
            ("company_id", "action"),
        ),
        MetricSpec(
            CAMPAIGNS,
            "Campaigns of the company in the last 7 days (campaign of GET campaigns/api/v1/"
            "company/{id}/statistics), refreshed every interval.",
            ("company_id",),
        ),
        MetricSpec(
            TOKEN_EXPIRY,
            "When the OAuth access token in use expires, Unix seconds (created_at + expires_in "
            "of the Atenea token answer); only with client credentials. Refreshed every interval.",
        ),
    )

    def __init__(self, config: TrustlatTarget) -> None:
        super().__init__(config)
        self._token: AccessToken | None = None

    async def _fetch_token(self, run: Run) -> AccessToken:
        """A new token from Atenea; a failure's reason is :func:`token_failure_reason`'s."""
        config = self.config
        requested_at = run.clock.time()
        error_codes: list[str] = []  # the OAuth2 error code of the last failed attempt, if any

        def error_text(body: bytes) -> str | None:
            try:
                code = oauth_error(decode_json(body))
            except CollectError:
                code = None
            error_codes[:] = [code] if code is not None else []
            return _error_text(body)

        try:
            body = await run.client.post_json(
                config.effective_token_url,
                endpoint=TOKEN_ENDPOINT,
                json_body={
                    "client_id": config.client_id,
                    "client_secret": config.secret("client_secret"),
                    "grant_type": "client_credentials",
                },
                headers={"Accept": "application/json"},
                error_text=error_text,
            )
        except CollectError as exc:
            status = exc.status if isinstance(exc, HttpError) else None
            reason = token_failure_reason(
                exc.reason, status, error_codes[-1] if error_codes else None
            )
            raise CollectError(
                reason, f"no access token from the token endpoint: {exc.message}"
            ) from None
        code = oauth_error(body)
        if code is not None:
            # An OAuth2 error answer sent with a success status.
            raise CollectError(
                token_failure_reason(Reason.PROVIDER_ERROR, None, code),
                "no access token from the token endpoint: OAuth2 error "
                f"{run.client.redact(code, 60)!r}",
            )
        try:
            token = parse_token(body, requested_at)
        except ParseError as exc:
            raise CollectError(
                Reason.PARSE,
                f"no access token from the token endpoint: unexpected answer: {exc}",
            ) from None
        run.client.add_secret(token.value)
        return token

    async def _access_token(self, run: Run, renew: bool = False) -> tuple[AccessToken, bool]:
        """The token to use, and whether it was obtained in an earlier run (kept in cache)."""
        if not self.config.uses_oauth:
            return AccessToken(self.config.secret("access_token") or "", None, None), False
        token = self._token
        # Renewed while enough of it is left for a whole run, plus slack for the two clocks.
        margin = self.config.deadline + RENEW_SLACK
        if (
            renew
            or token is None
            or (token.renew_at is not None and run.clock.time() + margin >= token.renew_at)
        ):
            self._token = None
            self._token = await self._fetch_token(run)
            return self._token, False
        return token, True

    async def _statistics(self, client: ProviderClient, token: AccessToken) -> object:
        config = self.config
        body = await client.get_json(
            f"{config.base_url}/campaigns/api/v1/company/{config.company_id}/statistics",
            endpoint=STATISTICS_ENDPOINT,
            headers={"Accept": "application/json", "Authorization": f"Bearer {token.value}"},
            error_text=_error_text,
        )
        refused = envelope_error(body)
        if refused is not None:
            reason, text = refused
            text = client.redact(text, ERROR_TEXT_LIMIT)
            where = f"GET {config.base_url}/campaigns/api/v1/company/{config.company_id}/statistics"
            message = f"{where}: the answer reports an error, {text}"
            if reason is Reason.AUTH:
                # As an HTTP 401 would: the token is refused.
                raise HttpError(reason, message, 401, text)
            raise CollectError(reason, message)
        return body

    def _expiry_samples(self) -> list[Sample]:
        token = self._token
        if token is None or token.expires_at is None:
            return []
        return [Sample(TOKEN_EXPIRY, (), token.expires_at)]

    async def collect(self, run: Run) -> list[Sample]:
        token, cached = await self._access_token(run)
        try:
            try:
                body = await self._statistics(run.client, token)
            except HttpError as exc:
                # A kept token that expired early or was revoked: get a new one once and try
                # once more. A token fetched in this run and refused is not worth a second one.
                if exc.status != 401 or not cached:
                    raise
                token, _ = await self._access_token(run, renew=True)
                body = await self._statistics(run.client, token)
            return parse_statistics(body, self.config.company_id) + self._expiry_samples()
        except CollectError as exc:
            raise CollectError(exc.reason, exc.message, partial=self._expiry_samples()) from None
        except ParseError as exc:
            raise CollectError(
                Reason.PARSE, f"unexpected answer: {exc}", partial=self._expiry_samples()
            ) from None


PROVIDER = Trustlat
