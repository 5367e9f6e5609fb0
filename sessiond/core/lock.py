"""The active-session lock and its wait queue, as data.

One session holds the lock at a time (SPEC §2). A start that finds it held
either fails at once or queues; the queue is first come, first served, and a
waiter that gives up or goes away leaves it. When the holder ends, the lock
is free for the *first* waiter only: a start that did not queue does not
overtake the line (`free_for`). Each change returns a new `Lock`; the shell
(daemon/locks) keeps the current one and wakes whoever is next.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Claim:
    """One start waiting for the lock."""

    ticket: int
    name: str
    user: str
    uid: int
    host: str | None = None  # where it waits, in a cluster

    def to_wire(self) -> dict[str, object]:
        found: dict[str, object] = {"name": self.name, "user": self.user, "uid": self.uid}
        if self.host is not None:
            found["host"] = self.host
        return found


@dataclass(frozen=True)
class Lock:
    holder: str | None = None  # the id of the session that holds it
    queue: tuple[Claim, ...] = ()

    def free_for(self, ticket: int | None) -> bool:
        """Whether the claim `ticket` (None: a start that did not queue) may take it now."""
        if self.holder is not None:
            return False
        return not self.queue or self.queue[0].ticket == ticket

    def take(self, holder: str, ticket: int | None = None) -> Lock:
        assert self.free_for(ticket), "taken while not free for this claim"
        return Lock(holder, tuple(c for c in self.queue if c.ticket != ticket))

    def release(self, holder: str) -> Lock:
        """The holder ended; a release by anyone else (a stale one) changes nothing."""
        return replace(self, holder=None) if self.holder == holder else self

    def enqueue(self, claim: Claim) -> Lock:
        return replace(self, queue=(*self.queue, claim))

    def withdraw(self, ticket: int) -> Lock:
        return replace(self, queue=tuple(c for c in self.queue if c.ticket != ticket))

    def next(self) -> Claim | None:
        """The claim whose turn it is, if the lock is free and someone waits."""
        return self.queue[0] if self.holder is None and self.queue else None
