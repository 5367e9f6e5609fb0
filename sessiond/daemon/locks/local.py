"""The lock on this machine: core.lock's data, with a future per waiter.

The store's live session is the lock's durable form: after a restart the
daemon takes it back from there (`adopt`). Waiters live only in memory, as
their clients' connections do. The fence is a counter kept in the store
(`next_fence`), so that it grows across restarts too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from sessiond.core.lock import Claim, Lock
from sessiond.core.records import Session
from sessiond.daemon.locks import Busy


class LocalLock:
    backend = "local"
    name = "default"
    reachable = True

    def __init__(self, host: str, next_fence: Callable[[], int]) -> None:
        self.host = host
        self.on_lost: Callable[[str, float], None] = lambda why, by: None  # never lost
        self.on_change: Callable[[], None] = lambda: None  # nothing changes it from outside
        self.state = Lock()
        self._next_fence = next_fence
        self._turns: dict[int, asyncio.Future[None]] = {}
        self._tickets = itertools.count(1)

    def holder(self) -> str | None:
        return self.state.holder

    def remote(self) -> dict[str, Any] | None:
        return None

    def waiting(self) -> list[Claim]:
        return list(self.state.queue)

    def claim(self, name: str, user: str, uid: int) -> Claim:
        return Claim(next(self._tickets), name, user, uid)

    async def acquire(self, holder: str, claim: Claim, wait: float | bool) -> int:
        # No await between the check and the take when the lock is free: twenty racing
        # starts give exactly one winner.
        if self.state.free_for(None):
            fence = self._next_fence()  # first: a full disk takes nothing
            self.state = self.state.take(holder)
            return fence
        if wait is False:
            raise Busy()
        await self._turn(claim, None if wait is True else wait)
        try:
            fence = self._next_fence()
            self.state = self.state.take(holder, claim.ticket)
        finally:
            self._leave(claim)
        return fence

    async def _turn(self, claim: Claim, wait: float | None) -> None:
        self.state = self.state.enqueue(claim)
        if self.state.free_for(claim.ticket):
            return
        turn = self._turns[claim.ticket] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(turn, wait)
        except BaseException:
            self._leave(claim)  # its turn may have come as it gave up: the next one's, then
            raise
        finally:
            self._turns.pop(claim.ticket, None)

    def publish(self, session: Session) -> None:
        """Nobody else shows this session: nothing to publish."""

    def adopt(self, holder: str, fence: int) -> None:
        self.state = Lock(holder)

    def _leave(self, claim: Claim) -> None:
        self.state = self.state.withdraw(claim.ticket)
        self._wake()

    def release(self, holder: str) -> None:
        self.state = self.state.release(holder)
        self._wake()

    def _wake(self) -> None:
        first = self.state.next()
        if first is not None and (turn := self._turns.get(first.ticket)) and not turn.done():
            turn.set_result(None)

    async def close(self) -> None:
        """The store keeps the lock: nothing to do."""
