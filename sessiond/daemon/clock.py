"""Time for the shell: what time it is, and timers, owned by the daemon's TaskGroup.

Every module of the daemon reads the time and arms its timers through one
`Clock`, never through `time` or the loop: so a test can drive sessions,
agents and their policy with a `FakeClock` and cover an hour of deadlines in
milliseconds (as trio's MockClock does), and no timer outlives the daemon.

Timers are entries of one heap, not loop handles scattered about: the
`SystemClock` runs them from a single task that the daemon's TaskGroup owns,
woken by one loop handle at the nearest deadline. A callback that raises is
logged, and the others still run, as the loop itself would do.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sessiond")


class Timer:
    """One armed callback; `cancel()` before it is due and it never runs."""

    __slots__ = ("_clock", "args", "at", "cancelled", "fn")

    def __init__(
        self, at: float, fn: Callable[..., Any], args: tuple[Any, ...], clock: Clock
    ) -> None:
        self.at, self.fn, self.args, self.cancelled, self._clock = at, fn, args, False, clock

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._clock.cancelled += 1


class Clock:
    """The heap of timers; subclasses say what time it is and when the heap is run."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # equal instants run in the order they were armed
        self.cancelled = 0  # cancelled timers still in the heap

    def monotonic(self) -> float:
        raise NotImplementedError

    def wall(self) -> float:
        raise NotImplementedError

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call `fn(*args)` once `delay` seconds have passed (at once for delay <= 0)."""
        timer = Timer(self.monotonic() + max(delay, 0.0), fn, args, self)
        if self.cancelled > 64 and self.cancelled * 2 > len(self._heap):
            self._compact()  # each connection that goes cancels its idle timer: churn
        nearest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (timer.at, next(self._order), timer))
        if nearest is None or timer.at < nearest:
            self._nearer()
        return timer

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call `fn(*args)` at the monotonic instant `when`."""
        return self.later(when - self.monotonic(), fn, *args)

    def soon(self, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call `fn(*args)` once the current callback is done."""
        return self.later(0.0, fn, *args)

    async def sleep(self, delay: float) -> None:
        """Wait `delay` seconds of this clock (a FakeClock's too); cancelling disarms it."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.later(delay, _wake, woken)
        try:
            await woken
        finally:
            timer.cancel()

    def _nearer(self) -> None:
        """A timer earlier than every other was armed."""

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        self.cancelled = 0

    def _run_due(self) -> None:
        now = self.monotonic()
        while self._heap and self._heap[0][0] <= now:
            timer = heapq.heappop(self._heap)[2]
            if timer.cancelled:
                self.cancelled -= 1
            else:
                timer.cancelled = True  # done: a cancel() from now on counts nothing
                _call(timer)

    def _next_at(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
            self.cancelled -= 1
        return self._heap[0][0] if self._heap else None


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


def _call(timer: Timer) -> None:
    try:
        timer.fn(*timer.args)
    except Exception:  # one broken callback must not stop the others, nor the daemon
        log.exception("internal error in a timer callback %r", timer.fn)


class SystemClock(Clock):
    """The machine's clocks; `run()` is the task, in the daemon's TaskGroup, that fires timers."""

    def __init__(self) -> None:
        super().__init__()
        self._wake: asyncio.Event | None = None

    def monotonic(self) -> float:
        return time.monotonic()  # the loop's own clock: loop.time() is time.monotonic()

    def wall(self) -> float:
        return time.time()

    def _nearer(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        handle: asyncio.TimerHandle | None = None
        try:
            while True:
                self._run_due()
                nearest = self._next_at()
                if nearest is not None:
                    handle = loop.call_at(nearest, self._wake.set)
                if self._wake.is_set():  # armed meanwhile and due at once: the loop's
                    await asyncio.sleep(0)  # ready callbacks (replies, I/O) run first
                await self._wake.wait()
                self._wake.clear()
                if handle is not None:
                    handle.cancel()
                    handle = None
        finally:
            if handle is not None:
                handle.cancel()
            self._wake = None


class FakeClock(Clock):
    """Time that moves only when a test says so: `await clock.advance(3600)`.

    Timers fire in order, each at its own instant (the clock jumps from one to
    the next), and the loop runs between them, so tasks they start get to run.
    """

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        super().__init__()
        self.now = 1000.0
        self._wall_offset = wall - self.now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self._wall_offset

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        await settle()
        while (nearest := self._next_at()) is not None and nearest <= end:
            self.now = max(self.now, nearest)
            self._run_due()
            await settle()
        self.now = end

    def set_wall(self, wall: float) -> None:
        """Move the wall clock alone (a clock step); the monotonic clock does not see it."""
        self._wall_offset = wall - self.now


async def settle(turns: int = 20) -> None:
    """Let every ready callback and task run (a few turns of the loop)."""
    for _ in range(turns):
        await asyncio.sleep(0)
