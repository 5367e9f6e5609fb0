"""What each happening does to a session: the table's event, its record, the fields set.

The shell applies a `Move` with `Sessions.move()`: one step of the session
table (core/session.py), one row and one event written in one transaction.
The wording of the event log and the rules that pick the event live here,
next to each other: a deadline that fell due, the network going and coming,
a stop and its reason, the error threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import Kind
from .policy import Deadline, Reason
from .session import Event, State
from .settings import SessionSettings
from .units import format_duration


@dataclass(frozen=True)
class Move:
    event: Event
    kind: Kind | None  # None: recorded as the state it reaches, if it moved
    message: str
    changes: Mapping[str, Any] = field(default_factory=dict)  # Session fields it sets


TOUCH = Move(Event.ACTIVITY, None, "")  # activity that is no news of its own


def stop(name: str, why: str) -> Move:
    return Move(Event.STOP, Kind.SESSION_STOPPING, f"session {name} stopping: {why}",
                {"close_reason": why})  # fmt: skip


def deadline(due: Deadline, s: SessionSettings, name: str) -> Move:
    """The move a deadline that fell due makes (policy.deadlines says which is due)."""
    if due.reason is Reason.IDLE:
        idle = format_duration(s.idle_after)
        return Move(due.event, Kind.SESSION_IDLE,
                    f"session {name} is idle after {idle} without activity")  # fmt: skip
    if due.reason is Reason.TIMEOUT:
        why = f"no activity for {format_duration(s.timeout)}"
        return Move(due.event, Kind.SESSION_EXPIRED, f"session {name} expired: {why}",
                    {"close_reason": f"expired: {why}"})  # fmt: skip
    if due.reason is Reason.MAX_DURATION:
        return stop(name, f"max_duration {format_duration(s.max_duration or 0)} reached")
    return stop(name, f"stop_at {s.stop_at} reached")


def network(
    online: bool | None, wanted: bool, state: State, watched: bool, name: str
) -> Move | None:
    """Suspend a session while offline if an agent of it needs the network; resume it once
    the network is back (or can no longer be watched: nothing then waits for it)."""
    if online is False and wanted and state in (State.ACTIVE, State.IDLE):
        return Move(Event.NETWORK_DOWN, Kind.SESSION_SUSPENDED,
                    f"session {name} suspended: network down",
                    {"pause_reason": "network down"})  # fmt: skip
    if online is True and state is State.SUSPENDED:
        why = "the network is back" if watched else "network not watched"
        return Move(Event.NETWORK_UP, Kind.SESSION_RESUMED, f"session {name} resumed: {why}",
                    {"pause_reason": None})  # fmt: skip
    return None


def threshold(name: str, count: int, s: SessionSettings, last: str) -> Move:
    window = format_duration(s.error_window)
    return Move(Event.ERROR_THRESHOLD, Kind.SESSION_DISCONNECTED,
                f"session {name} disconnected: {count} errors within {window}"
                f" (threshold {s.error_threshold}), the last: {last}")  # fmt: skip
