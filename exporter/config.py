"""The configuration file: YAML → ``${VAR}`` expansion → ``defaults`` inheritance → pydantic models.

Every problem is reported as ``key.path[0].key: what is wrong``, all of them at once, and the CLI
exits with status 2 (see ``docs/configuration.md``).
"""

from __future__ import annotations

import difflib
import glob
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from exporter.bounded import (
    CONFIG_FILE_MAX_BYTES,
    TARGET_FILES_MAX,
    TARGET_FILES_MAX_TOTAL_BYTES,
    FileProblem,
    YAMLProblem,
    load_yaml,
    read_text,
)
from exporter.providers import registry
from exporter.providers.http import RESPONSE_OVERHEAD, response_reservation
from exporter.schema.target import (
    MIN_RESPONSE_BYTES,
    TARGET_LABELS,
    Defaults,
    TargetConfig,
    label_clash,
)
from exporter.schema.types import KEY_PROBLEM, Duration, StrictModel, format_duration

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:10057"
DEFAULT_MAX_RESPONSE_BYTES_IN_FLIGHT = 64 * 1024 * 1024


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[::1]:port`` → (host, port); an empty host means all."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f"{value!r} is not host:port")
    if host.startswith("[") or host.endswith("]") or "[" in port_text or "]" in port_text:
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"{value!r} is not host:port: a [ has no matching ] or the reverse")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{value!r}: an IPv6 address goes in brackets, as in [::1]:10057")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{value!r} has no valid port")
    port = int(port_text)
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
        return check_telemetry_path(value)


RESERVED_PATHS = ("/", "/-/reload", "/healthz", "/readyz", "/api/v1/targets")
"""The exporter's other endpoints: ``web.telemetry_path`` may be none of them."""
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")
"""An RFC 3986 path segment without percent-encoding: no {, }, ?, #, %, space or non-ASCII."""


def check_telemetry_path(value: str) -> str:
    """A plain absolute path: it is the route of ``/metrics`` as written, not a pattern."""
    if not value.startswith("/"):
        raise ValueError("must be an absolute path, starting with /")
    if value in RESERVED_PATHS:
        raise ValueError(
            f"must not be one of the exporter's other paths ({', '.join(RESERVED_PATHS)})"
        )
    segments = value[1:].split("/")
    if value.endswith("/"):
        segments.pop()  # a trailing / is part of the path
    for segment in segments:
        if not segment:
            raise ValueError("must not have an empty segment (//)")
        if segment in (".", ".."):
            raise ValueError("must not have . or .. segments")
        if not _PATH_SEGMENT.fullmatch(segment):
            raise ValueError(
                "must be a plain path, as it is served: no {, }, ?, #, %, spaces or non-ASCII "
                "characters"
            )
    return value


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "logfmt", "console"] = "json"


def _name_taken(name: str, first: str) -> str:
    """The problem of a target named as ``first`` (its key) already is."""
    return f"{name!r} is already the name of {first}; target names must be unique"


def _does_not_fit(max_response_bytes: int, in_flight: int) -> str | None:
    """The problem of a target whose answers cannot fit in ``max_response_bytes_in_flight``, or
    None when they fit."""
    if response_reservation(max_response_bytes) <= in_flight:
        return None
    return (
        f"{max_response_bytes} does not fit in max_response_bytes_in_flight ({in_flight}) "
        f"with the {RESPONSE_OVERHEAD} bytes a request reserves besides its body"
    )


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
    target_files: Sequence[str] = Field(default=())
    """Globs, relative to the config file's directory, of files that each hold a list of targets."""
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    """Each target's key by name, where the targets come from several files:
    ``targets[3]`` or ``targets.d/acme.yaml[0]``."""
    _notes: list[str] = PrivateAttr(default_factory=list)
    """What reading the target files found valid but worth a warning."""

    def where(self, index: int) -> str:
        """The key of ``targets[index]`` in the files: ``targets[3]`` or ``targets.d/a.yaml[0]``."""
        return self._origins.get(self.targets[index].name, f"targets[{index}]")

    def source_of(self, index: int) -> str:
        """The file ``targets[index]`` came from (``targets.d/a.yaml``), or ``targets``."""
        return self.where(index).rpartition("[")[0]

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: dict[str, int] = {}
        for index, target in enumerate(self.targets):
            if target.name in seen:
                taken = _name_taken(target.name, f"targets[{seen[target.name]}]")
                raise ValueError(f"targets[{index}].name: {taken}")
            seen[target.name] = index
        return self

    @model_validator(mode="after")
    def _answers_fit_in_flight(self) -> Config:
        for index, target in enumerate(self.targets):
            unfit = _does_not_fit(target.max_response_bytes, self.max_response_bytes_in_flight)
            if unfit:
                raise ValueError(f"targets[{index}].max_response_bytes: {unfit}")
        return self

    def secret_values(self) -> list[str]:
        return [value for target in self.targets for value in target.secret_values()]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """This config with the dotted keys of ``overrides`` (``web.listen_address``,
        ``log.level``: what the command line's flags set) in place of its own values. A value its
        key does not accept raises ValueError with the reason."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            sections.setdefault(section, {})[name] = value
        update: dict[str, Any] = {}
        for section, values in sections.items():
            current = getattr(self, section)
            try:
                update[section] = type(current).model_validate({**current.model_dump(), **values})
            except ValidationError as exc:
                raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self.model_copy(update=update)


@cache
def _target_type() -> Any:
    """A discriminated union over the registered providers' config models."""
    models = tuple(provider.config_model for provider in registry().values())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="provider")]  # noqa: UP007


@cache
def _target_adapter() -> TypeAdapter[TargetConfig]:
    return TypeAdapter(_target_type())


@cache
def _config_model() -> type[Config]:
    """``Config`` with ``targets`` as a discriminated union over the registered providers."""
    target_type: Any = _target_type()
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
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
EXPANSION_MAX_CHARS = CONFIG_FILE_MAX_BYTES
"""The most characters that ``${VAR}`` substitutions may add to a config, all together."""


def expand_env(
    node: Any, environ: Mapping[str, str], path: tuple[str | int, ...] = ()
) -> tuple[Any, list[ConfigProblem]]:
    """Replace ``${VAR}`` in every string (``$$`` is a literal ``$``); collect unset variables,
    values that are not valid UTF-8, and substitutions past :data:`EXPANSION_MAX_CHARS`."""
    problems: list[ConfigProblem] = []
    budget = EXPANSION_MAX_CHARS

    def expand(node: Any, path: tuple[str | int, ...]) -> Any:
        nonlocal budget
        if isinstance(node, str):

            def substitute(match: re.Match[str]) -> str:
                nonlocal budget
                if match.group(0) == "$$":
                    return "$"
                name = match.group(1)
                where = format_path(path)
                if not _VAR_NAME.fullmatch(name):
                    problems.append(ConfigProblem(where, f"invalid variable ${{{name}}}"))
                    return ""
                if name not in environ:
                    problems.append(ConfigProblem(where, f"environment variable {name} is not set"))
                    return ""
                value = environ[name]
                if _SURROGATE.search(value):  # bytes that are not UTF-8, as Python decodes them
                    problems.append(
                        ConfigProblem(where, f"environment variable {name} is not valid UTF-8")
                    )
                    return ""
                budget -= len(value)
                if budget < 0:
                    if budget + len(value) >= 0:  # reported once, where it was passed
                        problems.append(
                            ConfigProblem(
                                where,
                                f"environment variables add more than "
                                f"{EXPANSION_MAX_CHARS:,} characters to the file in all",
                            )
                        )
                    return ""
                return value

            return _VAR.sub(substitute, node)
        if isinstance(node, dict):
            return {key: expand(value, (*path, str(key))) for key, value in node.items()}
        if isinstance(node, list):
            return [expand(value, (*path, index)) for index, value in enumerate(node)]
        return node

    return expand(node, path), problems


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
            own = target.get("labels", {})
            if defaults.labels and isinstance(own, dict):
                # Key by key: the target's own labels over those of defaults.
                target["labels"] = {**defaults.labels, **own}
                inherited.setdefault(index, set()).update(
                    f"labels.{name}" for name in defaults.labels if name not in own
                )
            for key in Defaults.model_fields:
                if key == "labels":
                    continue
                value = getattr(defaults, key)
                if value is not None and key not in target:
                    target[key] = value
                    inherited.setdefault(index, set()).add(key)
    return inherited


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_unicode": "must be UTF-8 text",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "set_type": "must be a list",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
}
_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]+$"
MAX_PROBLEMS = 100
"""Problems listed in one error; the rest are counted."""


def _phrase(kind: str, message: str, ctx: Mapping[str, Any], value: object) -> str:
    """A pydantic error in the words of the rest of the config's errors."""
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind in _BOUNDS:
        key, text = _BOUNDS[kind]
        phrase = text.format(ctx.get(key))
        if isinstance(value, int | float) and not isinstance(value, bool):
            phrase += f"; it is {value}"
        return phrase
    if kind in ("too_short", "string_too_short"):
        least = ctx.get("min_length")
        if least == 1:
            return "must not be empty"
        unit = "items" if kind == "too_short" else "characters"
        return f"must have at least {least} {unit}"
    if kind in ("too_long", "string_too_long"):
        unit = "items" if kind == "too_long" else "characters"
        return f"must have at most {ctx.get('max_length')} {unit}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == _CONTROL_CHARACTERS:
            return "must not contain control characters (such as a newline or a tab)"
        return f"must match the pattern {ctx.get('pattern')}"
    if kind in ("literal_error", "enum"):
        return f"must be {ctx.get('expected')}"
    # Errors of the config's own validators are already phrased; pydantic's others start with
    # "Input should be ...".
    message = message.removeprefix("Value error, ")
    for prefix in ("Input should be ", "Value should be "):
        if message.startswith(prefix):
            return "must be " + message.removeprefix(prefix)
    return message


def unknown_key(key: object, allowed: Sequence[str]) -> str:
    """``unknown key``, with the nearest of the ``allowed`` keys when one is close:
    ``unknown key; did you mean password_file?``."""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            return f"unknown key; did you mean {close[0]}?"
    return "unknown key"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _keys_at(loc: Sequence[str | int]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` (a location as pydantic reports it: a target's
    provider is part of it); empty where that is not one model."""
    models: list[type[BaseModel]] = [_config_model()]
    providers = registry()
    for part in loc:
        if isinstance(part, int):
            continue
        inner = [
            m
            for model in models
            if part in model.model_fields
            for m in _models_in(model.model_fields[part].annotation)
        ]
        if not inner and part in providers:  # the branch of the targets' union
            inner = [providers[part].config_model]
        if not inner:
            return []
        models = inner
    return list(models[0].model_fields) if len(models) == 1 else []


def validation_problems(
    error: ValidationError, prefix: tuple[str | int, ...] = ()
) -> Iterator[ConfigProblem]:
    """The problems of ``error``, whose locations are relative to ``prefix``."""
    provider_names = set(registry())
    known = f"known: {', '.join(sorted(provider_names))}"
    for item in error.errors(include_url=False):
        loc = [*prefix, *item["loc"]]
        kind = item["type"]
        ctx = item.get("ctx") or {}
        message = _phrase(kind, str(item["msg"]), ctx, item.get("input"))
        if kind == "extra_forbidden":
            # In a target file the keys are those of targets.
            allowed = _keys_at(loc[:-1]) or _keys_at(["targets", *loc[1:-1]])
            message = unknown_key(loc[-1], allowed)
        # A discriminated union puts the provider's name into the location: targets[0].thulium.x
        # (or targets.d/acme.yaml[0].thulium.x)
        if len(loc) >= 3 and isinstance(loc[1], int) and loc[2] in provider_names:
            del loc[2]
        # Errors raised by a model validator that already name their key start with the path.
        if kind == KEY_PROBLEM:
            loc.append(str(ctx["key"]))
            message = str(ctx["message"])
        elif kind == "union_tag_invalid":
            message = f"unknown provider {item['input'].get('provider')!r}; {known}"
            loc.append("provider")
        elif kind == "union_tag_not_found":
            message = f"required key is missing; {known}"
            loc.append("provider")
        elif kind == "literal_error" and loc[-1:] == ["provider"]:
            message = f"unknown provider {item['input']!r}; {known}"
        path = format_path(loc)
        head, sep, rest = message.partition(": ")
        if sep and (head.startswith("targets[") or head == path):
            path, message = head, rest
        yield ConfigProblem(path, message)


def yaml_problem(exc: YAMLProblem, file: str = "") -> ConfigProblem:
    """A YAML document refused by :func:`exporter.bounded.load_yaml`, at its key or line (in
    ``file``, a target file's label, when given)."""
    if exc.path:
        return ConfigProblem(format_path((file, *exc.path) if file else exc.path), exc.message)
    line = f"line {exc.line}, column {exc.column}" if exc.line else ""
    return ConfigProblem(": ".join(part for part in (file, line) if part), exc.message)


def parse_config(
    text: str,
    source: str = "",
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate a config file's text; raise :class:`ConfigError` listing every problem.
    ``target_files`` are relative to ``base_dir`` (the current directory when None)."""
    try:
        raw = load_yaml(text, max_chars=CONFIG_FILE_MAX_BYTES)
    except YAMLProblem as exc:
        raise ConfigError([yaml_problem(exc)], source) from None
    return validate_config(raw, source, environ, base_dir)


def validate_config(
    raw: object,
    source: str = "",
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate a decoded config (a mapping); raise :class:`ConfigError` listing every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem("", "the file must be a YAML mapping")], source)
    environ = os.environ if environ is None else environ
    expanded, problems = expand_env(raw, environ)
    inherited = _inherit_defaults(expanded)
    found = len(problems)
    files, notes = _read_target_files(expanded, base_dir or Path.cwd(), environ, problems)
    if expanded.get("targets") in (None, []) and not any(file.targets for file in files):
        # An exporter without targets serves nothing but its own metrics: surely a mistake
        # (a file that is empty, or not the one meant). A target file that could not be read
        # may hold some: its problem is the one to report.
        if "target_files" not in expanded:
            problems.append(ConfigProblem("targets", "at least one target is required"))
        elif len(problems) == found:
            problems.append(
                ConfigProblem(
                    "targets",
                    "at least one target is required, here or in the files that target_files "
                    "matches",
                )
            )
    listed = _Problems(problems, inherited)
    target_problems = _Problems([], inherited, listed.reported)
    targets = expanded.get("targets")
    if isinstance(targets, list):
        # One target at a time: the errors of one validation, and the memory they take, are
        # bounded by the size of a target, however many targets the file has.
        validated = _validate_targets(targets, "targets", target_problems)
        # The rest, and what concerns the targets together (unique names), once all are valid.
        expanded = {**expanded, "targets": validated if len(validated) == len(targets) else []}
    from_files = []
    for file in files:
        file_problems = _Problems([], file.inherited, listed.reported)
        from_files.append(_validate_targets(file.targets, file.label, file_problems))
        target_problems.extend(file_problems)
    try:
        config = _config_model().model_validate(expanded)
    except ValidationError as exc:
        listed.add_errors(exc)
    listed.extend(target_problems)  # after the others, in the order of the file's keys
    if files and not listed.problems:
        config = _with_target_files(config, files, from_files, listed)
    if listed.problems:
        raise ConfigError(listed.result(), source)
    config._notes = notes
    return config


def _validate_targets(targets: list[Any], key: str, problems: _Problems) -> list[Any]:
    """The targets of the list at ``key`` that are valid; the others' problems are added."""
    validated: list[Any] = []
    for index, target in enumerate(targets):
        if _size(target, MAX_TARGET_NODES) > MAX_TARGET_NODES:
            problems.add(
                ConfigProblem(
                    f"{key}[{index}]",
                    f"has more than {MAX_TARGET_NODES:,} keys, values and items",
                )
            )
            continue
        try:
            validated.append(_target_adapter().validate_python(target))
        except ValidationError as exc:
            problems.add_errors(exc, (key, index))
            continue
        clashes = _label_clashes(validated[-1], index, problems.inherited.get(index, set()), key)
        for problem in clashes:
            problems.add(problem)
    return validated


def _label_clashes(
    target: TargetConfig, index: int, inherited: set[str], key: str = "targets"
) -> list[ConfigProblem]:
    """A constant label of ``target`` named like a label its series already carry: the
    exporter's (``account``, ``provider``, ``reason``) or one of its provider's metrics
    (``campaign_id``)."""
    provider = registry().get(target.provider)
    specs = provider.metrics if provider is not None else ()
    carried = tuple(
        dict.fromkeys([*TARGET_LABELS, *(label for spec in specs for label in spec.labels)])
    )
    problems = []
    for name in target.labels:
        if name in carried:
            message = label_clash(name, carried)
            if f"labels.{name}" in inherited:
                message += f" (inherited from defaults.labels.{name})"
            problems.append(ConfigProblem(f"{key}[{index}].labels.{name}", message))
    return problems


MAX_TARGET_NODES = 10_000
"""Keys, values and items of one target: far more than a target needs (an Altcraft target with
2,000 resources has 10,000), and what bounds the errors of validating it."""


def _size(node: Any, limit: int) -> int:
    """The keys, values and items in ``node``, counted up to just past ``limit``."""
    count, stack = 0, [node]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


class _Problems:
    """A config's problems as they are found: the first :data:`MAX_PROBLEMS` listed, the rest
    counted. A key whose variable is unset has already been reported, so its emptiness is no
    news; a problem with a value a target inherited from ``defaults`` says so."""

    def __init__(
        self,
        problems: list[ConfigProblem],
        inherited: dict[int, set[str]],
        reported: set[str] | None = None,
    ) -> None:
        self.problems = problems
        self.reported = {problem.path for problem in problems} if reported is None else reported
        self.inherited = inherited
        self.more = 0

    def add(self, problem: ConfigProblem) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.more += 1
            return
        if problem.path in self.reported:
            return
        index = _target_index(problem.path)
        key = problem.path.rpartition(".")[2]
        if index is not None and key in self.inherited.get(index, ()):
            problem = ConfigProblem(
                problem.path, f"{problem.message} (inherited from defaults.{key})"
            )
        self.problems.append(problem)

    def add_errors(self, error: ValidationError, prefix: tuple[str | int, ...] = ()) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.more += error.error_count()  # without building the problems
            return
        for problem in validation_problems(error, prefix):
            self.add(problem)

    def extend(self, other: _Problems) -> None:
        room = max(0, MAX_PROBLEMS - len(self.problems))
        self.problems += other.problems[:room]
        self.more += len(other.problems[room:]) + other.more

    def result(self) -> list[ConfigProblem]:
        if not self.more:
            return self.problems
        return [*self.problems, ConfigProblem("", f"... and {self.more:,} more problems")]


_TARGET_KEY = re.compile(r"^[^\[\]]+\[(\d+)\]\.[a-z_]+$")


def _target_index(path: str) -> int | None:
    """The index of ``targets[3].stale_after`` (or ``targets.d/a.yaml[3].stale_after``); None for
    any other path."""
    match = _TARGET_KEY.match(path)
    return int(match.group(1)) if match else None


def config_warnings(config: Config) -> list[str]:
    """What is valid but not what it says, one line each, naming the key: a ``timeout`` longer
    than the target's ``interval`` is cut to ``interval`` (a run never overlaps the next)."""
    warnings = list(config._notes)
    for index, target in enumerate(config.targets):
        if target.timeout > target.interval:
            interval = format_duration(target.interval)
            warnings.append(
                f"{config.where(index)}.timeout: {format_duration(target.timeout)} is longer than "
                f"interval ({interval}); a collection is cut at {interval}"
            )
    return warnings


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file: a regular file of at most
    :data:`~exporter.bounded.CONFIG_FILE_MAX_BYTES`."""
    try:
        text = read_text(path, CONFIG_FILE_MAX_BYTES)
    except FileProblem as exc:
        raise ConfigError([ConfigProblem("", f"the file {exc}")], str(path)) from None
    return parse_config(text, str(path), environ, Path(path).parent)


# -- target files -----------------------------------------------------------------------------


class TooManyTargetFiles(ValueError):
    pass


def target_file_paths(globs: Sequence[str], base_dir: Path) -> tuple[list[Path], list[int]]:
    """The files that ``globs`` (relative to ``base_dir``) match, each once, in sorted order,
    directories left out; and the indexes of the globs that match none. Raise
    :class:`TooManyTargetFiles` past :data:`~exporter.bounded.TARGET_FILES_MAX` files."""
    found: set[str] = set()
    unmatched: list[int] = []
    for index, pattern in enumerate(globs):
        matched = False
        for match in glob.iglob(os.path.join(base_dir, pattern), recursive=True):
            if os.path.isdir(match):
                continue
            matched = True
            found.add(os.path.normpath(match))
            if len(found) > TARGET_FILES_MAX:
                raise TooManyTargetFiles(
                    f"the globs match more than {TARGET_FILES_MAX:,} files, the most that is read"
                )
        if not matched:
            unmatched.append(index)
    return [Path(path) for path in sorted(found)], unmatched


@dataclass
class _TargetFile:
    label: str
    """The file's path as errors name it: relative to the config file's directory if within."""
    targets: list[Any]
    """As decoded, ``${VAR}`` expanded and ``defaults`` inherited."""
    inherited: dict[int, set[str]]


def _label(path: Path, base_dir: Path) -> str:
    try:
        return str(path.relative_to(os.path.normpath(base_dir)))
    except ValueError:
        return str(path)


def _read_target_files(
    expanded: dict[str, Any],
    base_dir: Path,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> tuple[list[_TargetFile], list[str]]:
    """The target files that ``target_files`` matches, read with the config file's bounds, and
    warnings (a glob that matches no file); their problems are added to ``problems``."""
    globs = expanded.get("target_files")
    if not isinstance(globs, list) or not all(isinstance(item, str) and item for item in globs):
        return [], []  # the model reports what is wrong with it
    try:
        paths, unmatched = target_file_paths(globs, base_dir)
    except TooManyTargetFiles as exc:
        problems.append(ConfigProblem("target_files", str(exc)))
        return [], []
    notes = [f"target_files[{index}]: {globs[index]!r} matches no file" for index in unmatched]
    files: list[_TargetFile] = []
    total = 0
    for path in paths:
        label = _label(path, base_dir)
        try:
            text = read_text(path, CONFIG_FILE_MAX_BYTES)
        except FileProblem as exc:
            problems.append(ConfigProblem(label, f"the file {exc}"))
            continue
        total += len(text)
        if total > TARGET_FILES_MAX_TOTAL_BYTES:
            problems.append(
                ConfigProblem(
                    "target_files",
                    f"the files matched have more than {TARGET_FILES_MAX_TOTAL_BYTES:,} "
                    "characters in all, the most that is read",
                )
            )
            break
        try:
            data = load_yaml(text, max_chars=CONFIG_FILE_MAX_BYTES)
        except YAMLProblem as exc:
            problems.append(yaml_problem(exc, label))
            continue
        if data is None:
            data = []  # an empty file: no targets (yet)
        if not isinstance(data, list):
            problems.append(
                ConfigProblem(label, "the file must be a YAML list of targets, as under targets")
            )
            continue
        targets, more = expand_env(data, environ, (label,))
        problems += more
        inherited = _inherit_defaults({"defaults": expanded.get("defaults"), "targets": targets})
        files.append(_TargetFile(label, targets, inherited))
    return files, notes


def _with_target_files(
    config: Config, files: list[_TargetFile], validated: list[list[Any]], problems: _Problems
) -> Config:
    """``config`` with the targets of ``files`` after its own; names unique across all of them,
    each target's answers within ``max_response_bytes_in_flight``."""
    origins = {target.name: f"targets[{index}]" for index, target in enumerate(config.targets)}
    merged = list(config.targets)
    for file, targets in zip(files, validated, strict=True):
        for index, target in enumerate(targets):
            where = f"{file.label}[{index}]"
            if target.name in origins:
                taken = _name_taken(target.name, origins[target.name])
                problems.add(ConfigProblem(f"{where}.name", taken))
                continue
            unfit = _does_not_fit(target.max_response_bytes, config.max_response_bytes_in_flight)
            if unfit:
                problems.add(ConfigProblem(f"{where}.max_response_bytes", unfit))
            origins[target.name] = where
            merged.append(target)
    result = config.model_copy(update={"targets": merged})
    result._origins = origins
    return result
