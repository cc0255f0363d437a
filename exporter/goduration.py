"""Go durations (``time.ParseDuration``): ``231.374251ms``, ``2m3.5s``, ``850µs``, ``-1.5h``.

The one parser of the syntax, for a provider answer that reports a Go duration and for a web
config file in the exporter-toolkit format. It follows Go: an optional sign, then one or more
decimal numbers (ASCII digits, ``.5`` and ``5.`` allowed), each with a unit (ns, us/µs/μs, ms, s,
m, h), a unit given twice allowed; ``0`` alone needs no unit; anything outside Go's range
(``-2**63`` to ``2**63 - 1`` nanoseconds) overflows. Digits below a nanosecond are truncated.
"""

from __future__ import annotations

GO_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
GO_MAX_NS = 2**63 - 1
"""Nanoseconds in the longest Go duration (about 292 years); the shortest is ``-2**63``."""
_DIGITS = frozenset("0123456789")
_INT_DIGITS = 20
"""More significant digits than these before the point overflow in any unit."""
_FRACTION_DIGITS = 30
"""Digits after the point past these are below a nanosecond in any unit."""


def parse_go_duration_ns(text: str) -> int:
    """``text`` as a Go duration, in whole nanoseconds. Raises ValueError naming the text (its
    first 40 characters) and, where there is one, the reason."""
    shown = repr(text[:40])
    rest = text
    negative = False
    if rest[:1] in ("+", "-"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {shown}")
    limit = GO_MAX_NS + 1 if negative else GO_MAX_NS
    total = 0
    pos, end = 0, len(rest)
    while pos < end:
        start = pos
        while pos < end and rest[pos] in _DIGITS:
            pos += 1
        whole = rest[start:pos]
        fraction = ""
        if pos < end and rest[pos] == ".":
            pos += 1
            start = pos
            while pos < end and rest[pos] in _DIGITS:
                pos += 1
            fraction = rest[start:pos]
        elif not whole:
            raise ValueError(f"invalid duration {shown}")
        if not whole and not fraction:
            raise ValueError(f"invalid duration {shown}: a number without digits")
        start = pos
        while pos < end and rest[pos] != "." and rest[pos] not in _DIGITS:
            pos += 1
        unit = rest[start:pos]
        if not unit:
            raise ValueError(f"invalid duration {shown}: a number without a unit")
        scale = GO_UNIT_NS.get(unit)
        if scale is None:
            raise ValueError(f"invalid duration {shown}: unknown unit {unit[:10]!r}")
        if len(whole.lstrip("0")) > _INT_DIGITS:
            raise ValueError(f"invalid duration {shown}: overflow")
        total += int(whole or "0") * scale
        fraction = fraction[:_FRACTION_DIGITS]
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > limit:
            raise ValueError(f"invalid duration {shown}: overflow")
    return -total if negative else total
