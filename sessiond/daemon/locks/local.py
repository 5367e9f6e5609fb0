"""The lock on this machine: core.lock's data, with a future per waiter.

The store's live session is the lock's durable form: after a restart the
daemon takes it back from there (`LocalLock(holder)`). Waiters live only in
memory, as their clients' connections do.
"""

from __future__ import annotations

import asyncio
import itertools

from sessiond.core.lock import Claim, Lock


class LocalLock:
    def __init__(self, holder: str | None = None) -> None:
        self.state = Lock(holder)
        self._turns: dict[int, asyncio.Future[None]] = {}
        self._tickets = itertools.count(1)

    def holder(self) -> str | None:
        return self.state.holder

    def waiting(self) -> list[Claim]:
        return list(self.state.queue)

    def claim(self, name: str, user: str, uid: int) -> Claim:
        return Claim(next(self._tickets), name, user, uid)

    def free_for(self, claim: Claim | None) -> bool:
        return self.state.free_for(claim.ticket if claim else None)

    def take(self, holder: str, claim: Claim | None = None) -> None:
        self.state = self.state.take(holder, claim.ticket if claim else None)

    async def turn(self, claim: Claim, wait: float | None) -> None:
        self.state = self.state.enqueue(claim)
        if self.free_for(claim):
            return
        turn = self._turns[claim.ticket] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(turn, wait)
        except BaseException:
            self.leave(claim)  # its turn may have come as it gave up: the next one's, then
            raise
        finally:
            self._turns.pop(claim.ticket, None)

    def leave(self, claim: Claim) -> None:
        self.state = self.state.withdraw(claim.ticket)
        self._wake()

    def release(self, holder: str) -> None:
        self.state = self.state.release(holder)
        self._wake()

    def _wake(self) -> None:
        first = self.state.next()
        if first is not None and (turn := self._turns.get(first.ticket)) and not turn.done():
            turn.set_result(None)
