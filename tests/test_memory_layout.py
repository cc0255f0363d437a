"""What the store keeps per series, and that keeping less changes no byte: a series' line prefix
lives only in its target's blocks, a block rendering the same bytes stays the same object, and a
success keeps no time per series. (The byte-for-byte equality under any history is
``tests/test_exposition.py``'s property test; a body built once per change is tested there too.)"""

from __future__ import annotations

from exporter.collect.snapshot import Snapshot
from exporter.collect.targets import Target
from exporter.providers.base import Sample
from exporter.providers.errors import Reason
from tests.conftest import FakeClock
from tests.test_exposition import ACTIVE, COMPLETION, RECORDS, check_all, new_exporter

AWKWARD = ["a b", 'x} 1.0 "y"', "line\nbreak", "back\\slash", "юникод ✓", "", " "]


def snapshot(
    state: Target, clock: FakeClock, value: float, ok: bool = True, labels: list[str] = AWKWARD
) -> Snapshot:
    samples = [Sample(RECORDS, (label,), value + i) for i, label in enumerate(labels)]
    samples.append(Sample(COMPLETION, (labels[0],), value / 10))
    samples.append(Sample(ACTIVE, (), float(len(labels))))
    return Snapshot(
        target=state.name,
        provider="thulium",
        ok=ok,
        samples=tuple(samples) if ok else tuple(samples[:2]),
        started_at=clock.time(),
        duration=0.1,
        reason=None if ok else Reason.TIMEOUT,
        error=None if ok else "timed out",
    )


def test_line_prefixes_come_back_from_the_blocks_for_any_label_value() -> None:
    clock = FakeClock()
    exporter = new_exporter(clock, ['acc "one" two', "z"])
    store = exporter.store
    first, second = exporter.targets
    for round_ in range(1, 5):
        store.record(snapshot(first, clock, 10.0 * round_))
        store.record(snapshot(second, clock, -1.5 * round_, labels=AWKWARD[::-1]))
        check_all(exporter)
        clock.advance(30)
    # A failure keeps the series it did not deliver, until they go stale; then a success.
    store.record(snapshot(first, clock, 7.0, ok=False))
    check_all(exporter)
    clock.advance(first.config.stale_after + 1)
    check_all(exporter)
    store.record(snapshot(first, clock, 8.0, labels=["new one", *AWKWARD]))
    check_all(exporter)


def test_a_block_rendering_the_same_bytes_stays_the_same_object() -> None:
    clock = FakeClock()
    exporter = new_exporter(clock, ["t"])
    store = exporter.store
    (target,) = exporter.targets
    state = target.state
    store.record(snapshot(target, clock, 1.0))
    before = state.blocks
    store.record(snapshot(target, clock, 1.0))  # same values, same time, same duration
    assert state.blocks is not before
    assert all(now is was for now, was in zip(state.blocks, before, strict=True))
    store.record(snapshot(target, clock, 2.0))
    records = store.families.index(next(f for f in store.families if f.name == RECORDS))
    assert state.blocks[records] is not before[records]
    assert state.blocks[records] != before[records]


def test_after_a_success_every_series_was_seen_then() -> None:
    clock = FakeClock()
    exporter = new_exporter(clock, ["t"])
    store = exporter.store
    (target,) = exporter.targets
    state = target.state
    store.record(snapshot(target, clock, 1.0, labels=["a", "b", "c"]))
    assert state.seen == {}  # implied: every series at last_success
    success = state.last_success
    clock.advance(60)
    store.record(snapshot(target, clock, 2.0, ok=False, labels=["a", "b", "c"]))
    assert set(state.seen) == set(state.series)
    delivered = {(RECORDS, ("a",)), (RECORDS, ("b",))}
    assert {key for key, at in state.seen.items() if at == success} == set(state.series) - delivered
    assert state.errors == {Reason.TIMEOUT: 1}
    check_all(exporter)
    store.record(snapshot(target, clock, 3.0, labels=["a"]))
    assert state.seen == {}
    check_all(exporter)
