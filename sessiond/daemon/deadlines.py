"""The live session's deadlines: one timer, armed at the nearest (policy.deadlines).

The store keeps a session's instants on the wall clock; the timer runs on
the monotonic one, converted once per session (policy.clocks_for), so a
clock step neither fires nor delays a deadline. What a deadline that fell
due does is core/moves.deadline; nothing polls.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sessiond.core import moves, policy
from sessiond.core.moves import Move
from sessiond.core.records import Session
from sessiond.core.units import parse_clock
from sessiond.daemon.clock import Clock, Timer
from sessiond.errors import StorageError

log = logging.getLogger("sessiond")
RETRY_SECONDS = 1.0


class Host(Protocol):
    """What falls due acts on (Sessions)."""

    live: Session | None

    def move(self, m: Move) -> Session: ...


class Deadlines:
    def __init__(self, sessions: Host, clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock
        self._clocks: policy.Clocks | None = None
        self._timer: Timer | None = None

    def track(self, live: Session | None, same: bool) -> None:
        """The live session changed (`same`: it is the one tracked so far, moved on)."""
        if live is None:
            self._clocks = None
            return
        stop_at = parse_clock(live.settings.stop_at) if live.settings.stop_at else None
        self._clocks = policy.clocks_for(
            live.started_at or live.created_at, live.last_activity, stop_at,
            now_mono=self.clock.monotonic(), now_wall=self.clock.wall(),
            previous=self._clocks if same else None,
        )  # fmt: skip

    def arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self._next()
        if due is not None:
            self._timer = self.clock.at(due.at, self._fire)

    def _next(self) -> policy.Deadline | None:
        live, clocks = self.sessions.live, self._clocks
        if live is None or clocks is None:
            return None
        s = live.settings
        return policy.nearest(
            policy.deadlines(live.state, clocks, s.idle_after, s.timeout, s.max_duration)
        )

    def _fire(self) -> None:
        self._timer = None
        due = self._next()
        try:
            if due is None or due.at > self.clock.monotonic():
                self.arm()
            elif (live := self.sessions.live) is not None:
                self.sessions.move(moves.deadline(due, live.settings, live.name))
        except StorageError as exc:
            # The disk is full or read-only: say so and try again, never lose the deadline.
            log.error("%s; retrying in %gs", exc.message, RETRY_SECONDS)
            self._timer = self.clock.later(RETRY_SECONDS, self._fire)
