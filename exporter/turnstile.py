"""Turns of the event loop for work that follows a provider's answer.

asyncio runs every callback that is ready before it polls sockets again. When many collections'
answers arrive together (64 requests sent at once come back at once), each woken collection
decodes, parses, records and renders in the same loop iteration, during which no scrape is read or
answered. :meth:`Turnstile.turn` lets one caller through per loop iteration and queues the others,
each in its own later iteration, so between any two collections' work the loop polls its sockets
and scrapes are served. An uncontended turn costs one ``call_soon``."""

from __future__ import annotations

import asyncio
from collections import deque


class Turnstile:
    """One pass per event-loop iteration, first come first served. The scheduler makes one and
    hands it to every target's provider client."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._busy = False

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests run many): start afresh
            self._loop, self._waiters, self._busy = loop, deque(), False
        if not self._busy:
            self._busy = True
            loop.call_soon(self._next)
            return
        waiter = loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def _next(self) -> None:
        """A new iteration: the next waiter runs in the one after (or the turnstile is free)."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter (its deadline passed) gives up its turn
                waiter.set_result(None)
                assert self._loop is not None
                self._loop.call_soon(self._next)
                return
        self._busy = False
