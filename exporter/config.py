"""The configuration file: YAML → ``${VAR}`` expansion → ``defaults`` inheritance → pydantic models.

Every problem is reported as ``key.path[0].key: what is wrong``, all of them at once, and the CLI
exits with status 2 (see ``docs/configuration.md``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from exporter.fields import KEY_PROBLEM, Duration, StrictModel, format_duration, key_problem
from exporter.providers import registry
from exporter.providers.base import (
    DEFAULT_INTERVAL,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT,
    MIN_RESPONSE_BYTES,
    TargetConfig,
)
from exporter.providers.http import RESPONSE_OVERHEAD, response_reservation

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:10057"
DEFAULT_MAX_RESPONSE_BYTES_IN_FLIGHT = 64 * 1024 * 1024


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[::1]:port`` → (host, port); an empty host means all."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f"{value!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{value!r} has no valid port") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


class Sharding(StrictModel):
    """Which share of the targets this replica collects (see ``exporter/collect/sharding.py``)."""

    index: int = Field(default=0, ge=0)
    count: int = Field(default=1, ge=1, le=1024)

    @model_validator(mode="after")
    def _index_below_count(self) -> Sharding:
        if self.index >= self.count:
            raise ValueError(f"index must be below count ({self.count})")
        return self


class WebConfig(StrictModel):
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    telemetry_path: str = "/metrics"
    keepalive_timeout: Duration = Field(default=75.0, gt=0)
    """Seconds an idle client connection is kept open, and the most a connection may take to
    send its first request."""

    @field_validator("listen_address")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("telemetry_path")
    @classmethod
    def _path(cls, value: str) -> str:
        reserved = {"/", "/healthz", "/readyz", "/-/reload"}
        if not value.startswith("/") or value in reserved:
            raise ValueError(f"must start with / and not be one of {sorted(reserved)}")
        return value


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class Defaults(StrictModel):
    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = DEFAULT_TIMEOUT
    stale_after: Duration | None = None
    """None: each target's own default, the larger of 5m and 3 x its interval."""
    max_concurrency: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1, le=256)
    max_response_bytes: int | None = Field(default=None, ge=MIN_RESPONSE_BYTES)
    """None: each target's provider's own default."""

    @model_validator(mode="after")
    def _stale_after_covers_an_interval(self) -> Defaults:
        if self.stale_after is not None and self.stale_after < self.interval:
            raise key_problem(
                "stale_after",
                f"must be at least interval ({format_duration(self.interval)}); "
                f"it is {format_duration(self.stale_after)}",
            )
        return self


class Config(StrictModel):
    """The whole file. ``targets`` is validated against the union of every provider's model."""

    web: WebConfig = WebConfig()
    log: LogConfig = LogConfig()
    defaults: Defaults = Defaults()
    sharding: Sharding = Sharding()
    max_concurrent_collections: int = Field(default=64, ge=1, le=10_000)
    max_response_bytes_in_flight: int = Field(
        default=DEFAULT_MAX_RESPONSE_BYTES_IN_FLIGHT, ge=MIN_RESPONSE_BYTES + RESPONSE_OVERHEAD
    )
    targets: Sequence[TargetConfig] = Field(default=())

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: dict[str, int] = {}
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise ValueError(
                    f"targets[{index}].name: {target.name!r} is already the name of "
                    f"targets[{seen[target.name]}]; target names must be unique"
                )
            seen[target.name] = index
        return self

    @model_validator(mode="after")
    def _answers_fit_in_flight(self) -> Config:
        for index, target in enumerate(self.targets):
            if response_reservation(target.max_response_bytes) > self.max_response_bytes_in_flight:
                raise ValueError(
                    f"targets[{index}].max_response_bytes: {target.max_response_bytes} does not "
                    f"fit in max_response_bytes_in_flight ({self.max_response_bytes_in_flight}) "
                    f"with the {RESPONSE_OVERHEAD} bytes a request reserves besides its body"
                )
        return self

    def secret_values(self) -> list[str]:
        return [value for target in self.targets for value in target.secret_values()]


@cache
def _config_model() -> type[Config]:
    """``Config`` with ``targets`` as a discriminated union over the registered providers."""
    models = tuple(provider.config_model for provider in registry().values())
    target_type: Any
    if len(models) == 1:
        target_type = models[0]
    else:
        target_type = Annotated[Union[models], Field(discriminator="provider")]  # noqa: UP007
    model: type[Config] = create_model(
        "Config", __base__=Config, targets=(list[target_type], Field(default_factory=list))
    )
    return model


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Every problem found in a config file; ``str()`` is one problem a line."""

    def __init__(self, problems: Sequence[ConfigProblem], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"invalid config {self.source}" if self.source else "invalid config"
        return head + ":\n" + "\n".join(f"  {problem}" for problem in self.problems)


def format_path(loc: Sequence[str | int]) -> str:
    """``("targets", 2, "resources", 0, "list_id")`` → ``targets[2].resources[0].list_id``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_VAR = re.compile(r"\$\$|\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def expand_env(
    node: Any, environ: Mapping[str, str], path: tuple[str | int, ...] = ()
) -> tuple[Any, list[ConfigProblem]]:
    """Replace ``${VAR}`` in every string (``$$`` is a literal ``$``); collect unset variables."""
    problems: list[ConfigProblem] = []
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if not _VAR_NAME.match(name):
                problems.append(ConfigProblem(format_path(path), f"invalid variable ${{{name}}}"))
                return ""
            if name not in environ:
                problems.append(
                    ConfigProblem(format_path(path), f"environment variable {name} is not set")
                )
                return ""
            return environ[name]

        return _VAR.sub(substitute, node), problems
    if isinstance(node, dict):
        out_dict: dict[Any, Any] = {}
        for key, value in node.items():
            out_dict[key], sub = expand_env(value, environ, (*path, str(key)))
            problems += sub
        return out_dict, problems
    if isinstance(node, list):
        out_list = []
        for index, value in enumerate(node):
            expanded, sub = expand_env(value, environ, (*path, index))
            out_list.append(expanded)
            problems += sub
        return out_list, problems
    return node, problems


def _inherit_defaults(raw: dict[str, Any]) -> dict[int, set[str]]:
    """Copy every ``defaults`` key a target does not set into it, and return which keys each
    target (by index) inherited. Only a valid ``defaults`` is copied, so an error in it is
    reported once, at ``defaults.<key>``. A key without a value in ``defaults`` (``stale_after``
    when not given) is left to the target's own default."""
    try:
        defaults = Defaults.model_validate(raw.get("defaults") or {})
    except ValidationError:
        return {}
    targets = raw.get("targets")
    if not isinstance(targets, list):
        return {}
    inherited: dict[int, set[str]] = {}
    for index, target in enumerate(targets):
        if isinstance(target, dict):
            for key in Defaults.model_fields:
                value = getattr(defaults, key)
                if value is not None and key not in target:
                    target[key] = value
                    inherited.setdefault(index, set()).add(key)
    return inherited


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def _problems_from(error: ValidationError) -> list[ConfigProblem]:
    provider_names = set(registry())
    known = f"known: {', '.join(sorted(provider_names))}"
    problems = []
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        # A discriminated union puts the provider's name into the location: targets[0].thulium.x
        if len(loc) >= 3 and loc[0] == "targets" and loc[2] in provider_names:
            del loc[2]
        # Errors raised by a model validator that already name their key start with the path.
        message = str(item["msg"]).removeprefix("Value error, ")
        kind = item["type"]
        ctx = item.get("ctx") or {}
        if kind in _MESSAGES:
            message = _MESSAGES[kind]
        elif kind == KEY_PROBLEM:
            loc.append(str(ctx["key"]))
            message = str(ctx["message"])
        elif kind == "union_tag_invalid":
            message = f"unknown provider {item['input'].get('provider')!r}; {known}"
            loc.append("provider")
        elif kind == "union_tag_not_found":
            message = f"required key is missing; {known}"
            loc.append("provider")
        elif kind == "too_short" and ctx.get("min_length") == 1:
            message = "must not be empty"
        elif kind == "literal_error" and loc[-1:] == ["provider"]:
            message = f"unknown provider {item['input']!r}; {known}"
        path = format_path(loc)
        head, sep, rest = message.partition(": ")
        if sep and (head.startswith("targets[") or head == path):
            path, message = head, rest
        problems.append(ConfigProblem(path, message))
    return problems


def parse_config(text: str, source: str = "", environ: Mapping[str, str] | None = None) -> Config:
    """Validate a config file's text; raise :class:`ConfigError` listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([ConfigProblem(where, f"YAML syntax error: {problem}")], source) from None
    return validate_config(raw, source, environ)


def validate_config(
    raw: object, source: str = "", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate a decoded config (a mapping); raise :class:`ConfigError` listing every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem("", "the file must be a YAML mapping")], source)
    expanded, problems = expand_env(raw, os.environ if environ is None else environ)
    inherited = _inherit_defaults(expanded)
    if expanded.get("targets") in (None, []):
        # An exporter without targets serves nothing but its own metrics: surely a mistake
        # (a file that is empty, or not the one meant).
        problems.append(ConfigProblem("targets", "at least one target is required"))
    try:
        config = _config_model().model_validate(expanded)
    except ValidationError as exc:
        # A key whose variable is unset has already been reported; its emptiness is no news.
        reported = {problem.path for problem in problems}
        for problem in _problems_from(exc):
            if problem.path in reported:
                continue
            index = _target_index(problem.path)
            key = problem.path.rpartition(".")[2]
            if index is not None and key in inherited.get(index, ()):
                problem = ConfigProblem(
                    problem.path, f"{problem.message} (inherited from defaults.{key})"
                )
            problems.append(problem)
    if problems:
        raise ConfigError(problems, source)
    return config


_TARGET_KEY = re.compile(r"^targets\[(\d+)\]\.[a-z_]+$")


def _target_index(path: str) -> int | None:
    """The index of ``targets[3].stale_after``; None for any other path."""
    match = _TARGET_KEY.match(path)
    return int(match.group(1)) if match else None


def config_warnings(config: Config) -> list[str]:
    """What is valid but not what it says, one line each, naming the key: a ``timeout`` longer
    than the target's ``interval`` is cut to ``interval`` (a run never overlaps the next)."""
    warnings = []
    for index, target in enumerate(config.targets):
        if target.timeout > target.interval:
            interval = format_duration(target.interval)
            warnings.append(
                f"targets[{index}].timeout: {format_duration(target.timeout)} is longer than "
                f"interval ({interval}); a collection is cut at {interval}"
            )
    return warnings


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", "the file does not exist")], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [ConfigProblem("", f"cannot read the file ({type(exc).__name__})")], str(path)
        ) from None
    return parse_config(text, str(path), environ)
