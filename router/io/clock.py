"""The clock the router's shell keeps time with: the event loop in production, a fake one in tests.

Every deadline of the router (a connection's head, linger, stall, flush and idle deadlines, the prober's
interval, the drain budget) is read and scheduled through a `Clock`, so a test moves time by hand instead
of waiting for it. An asyncio event loop is a Clock as it is (`time`, `call_at`), with no wrapper on the
data path. Network timeouts of real sockets (the box connect timeout) stay on the loop's own timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Protocol

__all__ = ["Clock", "Timer", "sleep", "wait_event"]


class Timer(Protocol):
    """A scheduled callback."""

    def cancel(self) -> None:
        """Do not run it (no-op when it ran already)."""


class Clock(Protocol):
    """Monotonic time in seconds, and callbacks at a point of it."""

    def time(self) -> float:
        """Now."""

    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer:
        """Run `callback` once `time()` reached `when` (at or after it)."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def sleep(clock: Clock, seconds: float) -> None:
    """Return after `seconds` of `clock` time."""
    done = asyncio.get_running_loop().create_future()
    timer = clock.call_at(clock.time() + seconds, partial(_resolve, done))
    try:
        await done
    finally:
        timer.cancel()


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` for at most `seconds` of `clock` time; whether it was set."""
    if event.is_set():
        return True
    loop = asyncio.get_running_loop()
    spent = loop.create_future()
    timer = clock.call_at(clock.time() + seconds, partial(_resolve, spent))
    waiter = loop.create_task(event.wait())
    try:
        await asyncio.wait((waiter, spent), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        waiter.cancel()
        spent.cancel()
    return event.is_set()
