"""The session lock behind one small interface, so that where it lives is a choice.

`LockService` is what the sessions ask of the lock: take it for a session
(waiting in line or not), release it, say who holds it and who waits.
`LocalLock` keeps it on this machine, recovered from the store's live session
after a restart; `EtcdLock` keeps it in an etcd cluster, shared by every
daemon with the same endpoints and `[cluster] name` (SPEC §10).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from sessiond.core.lock import Claim
from sessiond.core.records import Session

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class Busy(Exception):
    """The lock is held (or being handed to the first in line) and the start does not wait.

    `holder`: what the lock says of whoever has it (name, user, host…), when it
    knows more than this daemon's live session does; None: ask the live session.
    """

    def __init__(self, holder: dict[str, Any] | None = None) -> None:
        super().__init__("the session lock is taken")
        self.holder = holder


class LockService(Protocol):
    backend: str  # "local" or "etcd", as [cluster] backend says
    name: str  # [cluster] name
    host: str  # this daemon's name in the cluster
    # Told (why, the monotonic instant by which the held session's agents must be gone;
    # 0.0: none) when the lock is lost under the held session.
    on_lost: Callable[[str, float], None]
    on_change: Callable[[], None]  # who holds it, or whether it answers, changed elsewhere

    @property
    def reachable(self) -> bool:
        """Whether the lock's keeper answers (always, for the local lock)."""
        ...

    def holder(self) -> str | None:
        """The id of the session this daemon holds the lock for, if any."""
        ...

    def remote(self) -> dict[str, Any] | None:
        """The live session of the cluster when it runs on another host (with `fence`)."""
        ...

    def waiting(self) -> list[Claim]:
        """The claims in line, first first."""
        ...

    def claim(self, name: str, user: str, uid: int) -> Claim:
        """A new claim, not yet in line."""
        ...

    async def acquire(self, holder: str, claim: Claim, wait: float | bool) -> int:
        """Take the lock for session `holder` and return its fence; with `wait` False,
        raise Busy unless it is free now, else wait in line (`wait` seconds, True: no
        limit; TimeoutError). A start that does not wait overtakes no one in line."""
        ...

    def publish(self, session: Session) -> None:
        """The held session moved: what other hosts show of it."""
        ...

    def adopt(self, holder: str, fence: int) -> None:
        """After a restart: the store says session `holder` held the lock with `fence`."""
        ...

    def release(self, holder: str) -> None:
        """Session `holder` ended: the lock is free, and the first in line is told."""
        ...

    async def close(self) -> None:
        """The daemon stops: leave the lock as a restart within the lease finds it."""
        ...
