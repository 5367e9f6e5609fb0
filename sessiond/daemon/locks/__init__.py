"""The session lock behind one small interface, so that where it lives is a choice.

`LockService` is what the sessions ask of the lock: take it for a session,
queue for it, release it, say who holds it and who waits. `LocalLock` keeps
it on this machine, recovered from the store's live session after a restart;
a cluster lock (etcd) is a second implementation of the same interface.
"""

from __future__ import annotations

from typing import Protocol

from sessiond.core.lock import Claim


class LockService(Protocol):
    def holder(self) -> str | None:
        """The id of the session holding the lock, if one does."""
        ...

    def waiting(self) -> list[Claim]:
        """The claims in line, first first."""
        ...

    def claim(self, name: str, user: str, uid: int) -> Claim:
        """A new claim, not yet in line."""
        ...

    def free_for(self, claim: Claim | None) -> bool:
        """Whether `claim` (None: a start that does not queue) may take the lock now."""
        ...

    def take(self, holder: str, claim: Claim | None = None) -> None:
        """Take the lock for session `holder`; only when free_for(claim), with no await
        between the check and this call."""
        ...

    async def turn(self, claim: Claim, wait: float | None) -> None:
        """Queue `claim` and return once free_for(claim) (TimeoutError after `wait`);
        a cancelled or timed-out claim leaves the line."""
        ...

    def leave(self, claim: Claim) -> None:
        """`claim` is out of line (it took the lock, or gave up); the next is told."""
        ...

    def release(self, holder: str) -> None:
        """Session `holder` ended: the lock is free, and the first in line is told."""
        ...
