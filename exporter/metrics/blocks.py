"""A target's samples as text: one block per family served per target (the providers' families in
their declared order, then the exporter's own per-target ones), rendered from the target's facts
and its previous blocks.

A series' line prefix (``name{labels} ``) is made once, when the series first shows; afterwards it
is cut from the series' line in the target's previous blocks (a line is its prefix, then the value,
which has no space), so that its label text is held once, in the blocks. A block that renders to
the same bytes again stays the same object.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from exporter.collect.targets import SeriesKey, Target
from exporter.metrics.render import FamilyFormat, format_value
from exporter.metrics.self_metrics import (
    DURATION,
    ERRORS,
    INTERVAL,
    LAST_SUCCESS,
    PER_TARGET,
    SUCCESS,
)
from exporter.providers.base import MetricSpec
from exporter.providers.errors import Reason


class TargetBlocks(NamedTuple):
    """One target rendered: a block per family (``b""`` where it has no sample)."""

    blocks: tuple[bytes, ...]
    line_keys: tuple[SeriesKey, ...]
    """The series of each line of the provider families' blocks, in block order."""
    error_count: int
    """The sum of the target's error counts as rendered (they only grow)."""
    expires: float
    """When the next of its served series goes stale (``inf`` if none will)."""


NOTHING = TargetBlocks((), (), 0, math.inf)
"""What a target shows before its first rendering."""
Constant = Sequence[tuple[str, str]]
"""A target's constant labels (its config's ``labels``), as (name, value) pairs."""


def _line_prefix(line: bytes) -> bytes:
    """A rendered line's ``name{labels} ``: all of it up to its value (which has no space)."""
    return line[: line.rindex(b" ") + 1]


def _prefix(block: bytes, family: FamilyFormat, values: Sequence[str], constant: Constant) -> bytes:
    """The line prefix of the one line of ``block``, or ``family``'s for ``values`` and the
    target's ``constant`` labels when empty."""
    if block:
        return _line_prefix(block)
    return family.prefix(values, constant).encode()


def _line(
    block: bytes, family: FamilyFormat, values: Sequence[str], value: bytes, constant: Constant
) -> bytes:
    """The one line of ``family`` for ``values`` with the formatted ``value``; ``block`` itself
    when it says the same."""
    line = b"%s%s\n" % (_prefix(block, family, values, constant), value)
    return block if line == block else line


class TargetRenderer:
    """Renders targets into the families served per target. ``metrics`` are the providers'
    metric descriptions, by provider name."""

    def __init__(self, metrics: Mapping[str, Sequence[MetricSpec]]) -> None:
        provider_families: dict[str, FamilyFormat] = {}
        for specs in metrics.values():
            for spec in specs:
                provider_families[spec.name] = FamilyFormat(
                    spec.name, "gauge", spec.help, ("account", *spec.labels)
                )
        self.families: tuple[FamilyFormat, ...] = (*provider_families.values(), *PER_TARGET)
        """The families rendered per target: the providers' (served only when some target has
        samples in them), then the exporter's own."""
        self.provider_family_count = len(provider_families)
        self._slots = {family.name: slot for slot, family in enumerate(self.families)}

    def render(self, target: Target, now: float, previous: TargetBlocks) -> TargetBlocks:
        """The target's blocks at ``now``: its provider series visible then (the staleness rule,
        :meth:`~exporter.collect.targets.TargetState.visible`) and its lines of the exporter's
        per-target families."""
        if not target.config.enabled:
            return TargetBlocks((b"",) * len(self.families), (), 0, math.inf)
        constant = tuple(target.config.labels.items())
        visible, expires = target.state.visible(now, target.config.stale_after)
        blocks, line_keys = self._provider_blocks(target.name, visible, previous, constant)
        own, error_count = self._own_blocks(target, previous, constant)
        return TargetBlocks((*blocks, *own), line_keys, error_count, expires)

    def _provider_blocks(
        self,
        account: str,
        visible: Collection[tuple[SeriesKey, float]],
        previous: TargetBlocks,
        constant: Constant,
    ) -> tuple[list[bytes], tuple[SeriesKey, ...]]:
        families = self.families
        base = self.provider_family_count
        slots = self._slots
        old = previous.blocks
        known: dict[SeriesKey, bytes] = {}
        if previous.line_keys:
            old_lines = b"".join(old[:base]).split(b"\n")
            known = {
                key: _line_prefix(line)
                for key, line in zip(previous.line_keys, old_lines, strict=False)
            }
        # Per provider family slot: its lines and their series' keys.
        shown: dict[int, tuple[list[bytes], list[SeriesKey]]] = {}
        for key, value in visible:
            slot = slots[key[0]]
            prefix = known.get(key)
            if prefix is None:
                prefix = families[slot].prefix((account, *key[1]), constant).encode()
            entry = shown.get(slot)
            if entry is None:
                entry = shown[slot] = ([], [])
            entry[0].append(prefix + format_value(value).encode())
            entry[1].append(key)
        blocks = [b""] * base
        line_keys: list[SeriesKey] = []
        for slot in sorted(shown):
            slot_lines, slot_keys = shown[slot]
            block = b"\n".join(slot_lines) + b"\n"
            blocks[slot] = old[slot] if old and old[slot] == block else block
            line_keys += slot_keys
        return blocks, tuple(line_keys)

    def _own_blocks(
        self, target: Target, previous: TargetBlocks, constant: Constant
    ) -> tuple[list[bytes], int]:
        """The target's lines of the exporter's per-target families, and its error count."""
        state, config = target.state, target.config
        pair = (config.provider, config.name)
        old = previous.blocks[self.provider_family_count :] or (b"",) * len(PER_TARGET)
        success, duration, last_success, interval, errors = old
        latest = state.latest
        if latest is not None:
            success = _line(success, SUCCESS, pair, b"1.0" if latest.ok else b"0.0", constant)
            took = format_value(latest.duration).encode()
            duration = _line(duration, DURATION, pair, took, constant)
        if state.last_success is not None:
            when = format_value(state.last_success).encode()
            last_success = _line(last_success, LAST_SUCCESS, pair, when, constant)
        # A target's interval never changes (another config is another target record).
        interval = interval or _line(
            b"", INTERVAL, pair, format_value(config.interval).encode(), constant
        )
        # Error counts only grow: their sum tells whether one did.
        error_count = sum(state.errors.values())
        if not errors or error_count != previous.error_count:
            prefixes = (
                [_line_prefix(line) for line in errors.split(b"\n")[:-1]]
                if errors
                else [ERRORS.prefix((*pair, str(reason)), constant).encode() for reason in Reason]
            )
            counts = [state.errors.get(reason, 0) for reason in Reason]
            errors = b"".join(
                [
                    b"%s%s\n" % (prefix, format_value(count).encode())
                    for prefix, count in zip(prefixes, counts, strict=True)
                ]
            )
        return [success, duration, last_success, interval, errors], error_count
