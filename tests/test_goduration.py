"""The one Go duration parser (``time.ParseDuration``), which altcraft's answers and the web
config's ``rate_limit.interval`` share: Go's range at both ends, ASCII digits only, and the
reason named in the error."""

from __future__ import annotations

import pytest

from exporter.goduration import GO_MAX_NS, parse_go_duration_ns
from exporter.providers.altcraft import GoDurationError
from exporter.providers.altcraft import parse_go_duration as altcraft_duration
from exporter.web.webconfig import parse_go_duration as web_duration


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("231.374251ms", 231_374_251),
        ("1.5ns", 1),
        (".5s", 500_000_000),
        ("5.s", 5_000_000_000),
        ("+1m", 60_000_000_000),
        ("-0", 0),
        ("2562047h47m16.854775807s", GO_MAX_NS),
        ("-2562047h47m16.854775808s", -GO_MAX_NS - 1),  # Go's shortest, -2**63
    ],
)
def test_go_durations_in_nanoseconds(text: str, ns: int) -> None:
    assert parse_go_duration_ns(text) == ns


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2562047h47m16.854775808s", "overflow"),
        ("-2562047h47m16.854775809s", "overflow"),
        ("1" * 5000 + "s", "overflow"),
        ("1.5", "a number without a unit"),
        (".s", "a number without digits"),
        ("1d", "unknown unit 'd'"),
        ("٣s", "s'$"),  # an Arabic-Indic digit: Go reads ASCII digits only
        ("1 second", "unknown unit ' second'"),
    ],
)
def test_go_duration_errors_name_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^invalid duration '.*{reason}"):
        parse_go_duration_ns(text)


def test_a_long_text_is_shown_cut() -> None:
    with pytest.raises(ValueError, match="overflow") as info:
        parse_go_duration_ns("1" * 5000 + "s")
    assert len(str(info.value)) < 100


@pytest.mark.parametrize("text", ["٣s", "2562047h47m16.854775808s"])
def test_altcraft_and_the_web_config_refuse_alike(text: str) -> None:
    with pytest.raises(GoDurationError):
        altcraft_duration(text)
    with pytest.raises(ValueError, match="use a string such as 1s"):
        web_duration(text)


def test_the_web_config_still_reads_a_bare_number_as_nanoseconds() -> None:
    assert web_duration(1_500_000_000) == 1.5
    assert web_duration("1.5s") == 1.5
