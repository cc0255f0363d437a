"""The turnstile: one pass per loop iteration, in arrival order, a cancelled waiter skipped."""

from __future__ import annotations

import asyncio

from exporter.turnstile import Turnstile


class IterationCounter:
    """Counts event-loop iterations: a callback that re-schedules itself runs once in each."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_one_pass_per_iteration_in_arrival_order() -> None:
    turnstile = Turnstile()
    iterations = IterationCounter()
    passed: list[tuple[int, int]] = []

    async def worker(number: int) -> None:
        await turnstile.turn()
        passed.append((number, iterations.count))

    await asyncio.gather(*(worker(n) for n in range(10)))
    iterations.stop()
    assert [number for number, _ in passed] == list(range(10))
    at = [iteration for _, iteration in passed]
    assert len(set(at)) == 10, "two passed in one iteration"


async def test_an_uncontended_turn_does_not_wait() -> None:
    turnstile = Turnstile()
    task = asyncio.ensure_future(turnstile.turn())
    await asyncio.sleep(0)  # one step: it passed without suspending
    assert task.done()


async def test_a_cancelled_waiter_gives_up_its_turn() -> None:
    turnstile = Turnstile()
    first, doomed, after = (asyncio.ensure_future(turnstile.turn()) for _ in range(3))
    await asyncio.sleep(0)  # all three asked in one iteration: the first passed, two wait
    assert first.done()
    assert not doomed.done()
    doomed.cancel()
    await asyncio.wait_for(after, 1)
    assert doomed.cancelled()
