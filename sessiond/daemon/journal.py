"""Store transactions whose events are published only after they commit.

Sessions and the fleet both write through one `Journal`: a change and its
event are one transaction, and subscribers and the system journal hear of it
only once it is durable, so nobody is told of a change a crash could undo.
Writes the disk refused while a session was ending (`defer`) go first in the
next transaction that succeeds, in their order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from sessiond.core.events import Kind
from sessiond.core.records import rfc3339
from sessiond.daemon.clock import Clock
from sessiond.daemon.store import Store
from sessiond.errors import StorageError

log = logging.getLogger("sessiond")
RETRY_SECONDS = 1.0


class Outlet(Protocol):
    """Where events and agent output go: the journal and the subscribers."""

    def publish(self, event: dict[str, Any]) -> None: ...
    def publish_lines(
        self, session: str, entries: list[dict[str, Any]], topics: tuple[str, ...]
    ) -> None: ...  # each entry a `log` notification to the subscribers of any of `topics`
    def wants(self, *topics: str) -> bool: ...


class Journal:
    def __init__(self, store: Store, outlet: Outlet, clock: Clock) -> None:
        self.store = store
        self.outlet = outlet
        self.clock = clock
        self._unpublished: list[dict[str, Any]] = []
        self._deferred: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A store transaction whose events are published only once it committed."""
        self._unpublished.clear()
        with self.store.transaction():
            for write in self._deferred:
                write()
            yield
        self._deferred.clear()
        for event in self._unpublished:
            self.outlet.publish(event)
        self._unpublished.clear()

    def next_fence(self) -> int:
        """The local lock's next fence, counted in a transaction of its own: on a full
        disk a StorageError, and nothing taken."""
        with self.transaction():
            return self.store.next_fence()

    def event(
        self, session_id: str | None, name: str | None, kind: Kind, message: str,
        data: Mapping[str, Any],
    ) -> None:  # fmt: skip
        """Record an event inside transaction(); it is published once that commits."""
        now = self.clock.wall()
        seq = self.store.add_event(now, session_id, name, kind=kind, message=message, data=data)
        self._unpublished.append({
            "seq": seq, "time": rfc3339(now), "session": name, "session_id": session_id,
            "kind": kind, "message": message, "data": dict(data),
        })  # fmt: skip

    def defer(self, write: Callable[[], None]) -> None:
        """Write this when the disk takes it again, before anything else."""
        self._deferred.append(write)
        if len(self._deferred) == 1:
            self.clock.later(RETRY_SECONDS, self._write_deferred)

    def _write_deferred(self) -> None:
        if not self._deferred:
            return
        try:
            with self.transaction():
                pass
        except StorageError:
            self.clock.later(RETRY_SECONDS, self._write_deferred)
            return
        log.info("the disk took the records it had refused")
