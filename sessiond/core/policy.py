"""Timeouts, idle, the error window and restart backoff: pure functions of time.

Every function takes `now` (and other instants) as plain seconds on one clock
and returns instants or counts; nothing here reads a clock. The daemon feeds
`time.monotonic()`; tests feed numbers.

A session has up to four deadlines (SPEC §2.3). The nearest one is the only
timer the daemon arms:

  idle      last_activity + idle_after      only while `active`      → IDLE_TIMEOUT
  expire    last_activity + timeout         every live state         → EXPIRE
  duration  started + max_duration                                   → STOP
  stop_at   next local HH:MM after start   (wall clock, see below)   → STOP
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from .session import TRANSITIONS, Event, State


class Reason(enum.StrEnum):
    IDLE = "idle"
    TIMEOUT = "timeout"
    MAX_DURATION = "max_duration"
    STOP_AT = "stop_at"


@dataclass(frozen=True)
class Deadline:
    at: float
    event: Event
    reason: Reason


@dataclass(frozen=True)
class Clocks:
    """The session's instants on the monotonic clock (`stop_at` already converted)."""

    started: float
    last_activity: float
    stop_at: float | None
    # The stored wall-clock activity `last_activity` was converted from: a move
    # that is not activity leaves it as it was, and so the deadline.
    activity_wall: float | None = None


def deadlines(
    state: State,
    clocks: Clocks,
    idle_after: float,
    timeout: float,
    max_duration: float | None,
) -> list[Deadline]:
    if not state.live:
        return []
    found = [Deadline(clocks.last_activity + timeout, Event.EXPIRE, Reason.TIMEOUT)]
    if state is State.ACTIVE:
        found.append(Deadline(clocks.last_activity + idle_after, Event.IDLE_TIMEOUT, Reason.IDLE))
    if max_duration is not None:
        found.append(Deadline(clocks.started + max_duration, Event.STOP, Reason.MAX_DURATION))
    if clocks.stop_at is not None:
        found.append(Deadline(clocks.stop_at, Event.STOP, Reason.STOP_AT))
    return found


def nearest(found: Iterable[Deadline]) -> Deadline | None:
    return min(found, key=lambda d: d.at, default=None)


def clocks_for(
    started_wall: float, last_activity_wall: float, stop_at: tuple[int, int] | None, *,
    now_mono: float, now_wall: float, previous: Clocks | None,
) -> Clocks:  # fmt: skip
    """A session's instants on the monotonic clock, from the wall-clock ones it stores.

    The store keeps wall-clock times (they survive a reboot); deadlines run on
    the monotonic clock (a clock step must not fire them). `previous`, the same
    session's clocks, keeps its start and stop_at where they were, and its last
    activity unless that changed: only new activity is converted, so a
    wall-clock step moves no deadline.
    """
    if previous is None:
        started = now_mono - (now_wall - started_wall)
        at = None
        if stop_at is not None:
            at = now_mono + (next_stop_at(started_wall, stop_at) - now_wall)
        previous = Clocks(started, started, at)
    elif previous.activity_wall == last_activity_wall:
        return previous
    activity = now_mono - (now_wall - last_activity_wall)
    return Clocks(previous.started, activity, previous.stop_at, last_activity_wall)


def next_stop_at(started_wall: float, hhmm: tuple[int, int], tz: dt.tzinfo | None = None) -> float:
    """The first local wall-clock HH:MM strictly after `started_wall` (epoch seconds).

    `tz=None` means the machine's local time, as `stop_at` promises.
    """
    start = dt.datetime.fromtimestamp(started_wall, tz).astimezone(tz)
    hour, minute = hhmm
    candidate = start.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= start:
        candidate = (candidate + dt.timedelta(days=1)).replace(hour=hour, minute=minute)
    return candidate.timestamp()


def disconnects(count: int, threshold: int, state: State) -> bool:
    """Whether `count` errors disconnect a session in `state`: at `threshold`, wherever the
    table moves ERROR_THRESHOLD to DISCONNECTED (not while starting, stopping or already so)."""
    return count >= threshold and TRANSITIONS[state][Event.ERROR_THRESHOLD] is State.DISCONNECTED


def errors_in_window(times: Iterable[float], now: float, window: float) -> int:
    """How many errors still count: those newer than `window` seconds."""
    return sum(1 for t in times if now - t < window)


def backoff_delay(quick_exits: int, initial: float, maximum: float) -> float:
    """Delay before the restart that follows the k-th quick exit in a row (k ≥ 1)."""
    if quick_exits < 1:
        return 0.0
    return min(initial * 2 ** (quick_exits - 1), maximum)
