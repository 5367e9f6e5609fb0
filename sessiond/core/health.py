"""`session.health`: how a session is doing, said as a person would say it.

Pure: a session snapshot (or None) and `now` in, the health object out
(SPEC §2.4). `recovery` is never empty unless the session is healthy.
Beyond the SPEC's statuses, a session stopped by a user reports `closed` and
one that could not start reports `failed`: both are facts a person asking
about that name wants, and neither is healthy.
"""

from __future__ import annotations

from typing import Any

from sessiond.core.units import format_duration

from .records import Session
from .session import State


def _result(status: str, message: str, *recovery: str) -> dict[str, Any]:
    healthy = status in ("healthy", "idle")
    return {"status": status, "healthy": healthy, "message": message, "recovery": list(recovery)}


def health(
    session: Session | None, asked: str | None, now: float, errors: int = 0
) -> dict[str, Any]:
    if session is None:
        if asked:
            return _result(
                "not_found",
                f"There is no session named '{asked}'.",
                f"sessionc start {asked}",
                "sessionc history",
            )
        return _result("not_found", "No session is active.", "sessionc start NAME")
    if errors and session.state in (State.ACTIVE, State.IDLE):
        return _errors(session, errors)
    return _BY_STATE[session.state](session, now)


def _last(s: Session) -> str:
    """The last error, as a sentence: ' The last error: agent w: disk quota exceeded.'"""
    last = s.last_error
    if last is None:
        return ""
    who = f"agent {last.agent}" if last.agent else "an agent"
    return f" The last error: {who}: {last.text.rstrip('.')}."


def _errors(s: Session, count: int) -> dict[str, Any]:
    window = format_duration(s.settings.error_window)
    agent = s.last_error.agent if s.last_error and s.last_error.agent else "AGENT"
    return _result(
        "error",
        f"Session {s.name} has {count} error{'s' if count != 1 else ''} in the last {window}; "
        f"at {s.settings.error_threshold} its agents are stopped.{_last(s)}",
        f"sessionc logs {agent} -n 50",
        "sessionc events  # every error, with its text",
    )


def _live(s: Session, now: float) -> dict[str, Any]:
    left = format_duration(max(0, round(s.last_activity + s.settings.timeout - now)))
    return _result(
        "healthy", f"Session {s.name} is active; it expires after {left} without activity."
    )


def _idle(s: Session, now: float) -> dict[str, Any]:
    quiet = format_duration(max(0, round(now - s.last_activity)))
    left = format_duration(max(0, round(s.last_activity + s.settings.timeout - now)))
    return _result(
        "idle",
        f"Session {s.name} has had no activity for {quiet}; it expires in {left}.",
        f"sessionc touch  # to keep {s.name} alive",
    )


def _paused(s: Session, now: float) -> dict[str, Any]:
    why = f" ({s.pause_reason})" if s.pause_reason else ""
    return _result(
        "paused",
        f"Session {s.name} is paused{why}; its agents are stopped.",
        f"sessionc resume {s.name}",
    )


def _suspended(s: Session, now: float) -> dict[str, Any]:
    return _result(
        "suspended",
        f"Session {s.name} is suspended because the network is down; "
        "it resumes by itself when the network is back.",
        "ip route  # check for a default route",
        f"sessionc stop {s.name}",
    )


def _disconnected(s: Session, now: float) -> dict[str, Any]:
    window = format_duration(s.settings.error_window)
    return _result(
        "disconnected",
        f"Session {s.name} hit {s.settings.error_threshold} errors "
        f"within {window}; its agents were stopped.{_last(s)}",
        "sessionc logs  # see what failed",
        "sessionc reconnect",
        f"sessionc stop {s.name}",
    )


def _stopping(s: Session, now: float) -> dict[str, Any]:
    return _result(
        "stopping",
        f"Session {s.name} is stopping its agents.",
        "sessionc status  # wait for it to close",
    )


def _expired(s: Session, now: float) -> dict[str, Any]:
    quiet = format_duration(s.settings.timeout)
    return _result(
        "expired",
        f"Your session {s.name} expired after {quiet} without activity.",
        f"sessionc start {s.name} --from {s.name}",
    )


def _closed(s: Session, now: float) -> dict[str, Any]:
    why = f": {s.close_reason}" if s.close_reason else ""
    return _result(
        "closed", f"Session {s.name} was closed{why}.", f"sessionc start {s.name} --from {s.name}"
    )


def _failed(s: Session, now: float) -> dict[str, Any]:
    why = f": {s.close_reason}" if s.close_reason else ""
    return _result(
        "failed",
        f"Session {s.name} failed{why}.",
        "sessionc events  # see what happened",
        f"sessionc start {s.name}",
    )


_BY_STATE = {
    State.STARTING: _live, State.ACTIVE: _live, State.IDLE: _idle, State.PAUSED: _paused,
    State.SUSPENDED: _suspended, State.DISCONNECTED: _disconnected, State.STOPPING: _stopping,
    State.EXPIRED: _expired, State.CLOSED: _closed, State.FAILED: _failed,
}  # fmt: skip


_REMOTE = {"starting": "healthy", "active": "healthy"}  # else the state is the status


def remote_health(facts: dict[str, Any]) -> dict[str, Any]:
    """The health of the cluster's live session where it does not run: what its host
    published (its state), and where to ask for more (SPEC §10)."""
    name, state, host = facts.get("name", ""), str(facts.get("state", "")), facts.get("host")
    status = _REMOTE.get(state, state)
    return _result(
        status, f"Session {name} is {state} on host {host}.",
        *([] if status in ("healthy", "idle") else [f"ssh {host} sessionc health {name}"]),
    )  # fmt: skip
