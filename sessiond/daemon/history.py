"""Past sessions: found by name or id, listed, their events, and pruned after history_days."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sessiond.core.records import Session, rfc3339
from sessiond.daemon.clock import Clock
from sessiond.daemon.journal import Journal
from sessiond.errors import NoSession, StorageError

log = logging.getLogger("sessiond")
PRUNE_EVERY = 86400.0


class History:
    def __init__(
        self, journal: Journal, clock: Clock, days: Callable[[], int],
        remove_files: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.journal = journal
        self.store = journal.store
        self.clock = clock
        self.days = days  # read each time: a reload may change history_days
        self.remove_files = remove_files

    def find(self, name_or_id: str) -> Session:
        row = self.store.find_session(name_or_id)
        if row is None:
            raise NoSession(
                f"no session named '{name_or_id}'",
                "'sessionc history' lists the sessions this daemon knows",
            )
        return Session.from_row(row, self.store.participants(row["id"]))

    def sessions(self, limit: int, before: float | None) -> list[Session]:
        return [
            Session.from_row(r, self.store.participants(r["id"]))
            for r in self.store.history(limit, before)
        ]

    def events(self, limit: int, session_id: str | None) -> list[dict[str, Any]]:
        return [_event_wire(e) for e in self.store.events(limit, session_id)]

    def prune(self) -> None:
        """Forget closed sessions older than history_days, with their logs; again in a day."""
        days = self.days()
        try:
            with self.journal.transaction():
                gone = self.store.prune(self.clock.wall() - days * 86400)
        except StorageError as exc:
            log.error("%s", exc.message)
            gone = []
        for session_id in gone:
            self.remove_files(session_id)
        if gone:
            log.info("pruned %d sessions closed more than %d days ago", len(gone), days)
        self.clock.later(PRUNE_EVERY, self.prune)


def _event_wire(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "time": rfc3339(row["time"]),
        "session": row["session"],
        "session_id": row["session_id"],
        "kind": row["kind"],
        "message": row["message"],
        "data": row["data"],
    }
