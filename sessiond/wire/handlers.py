"""Session handlers of the method table (methods.py).

Each handler takes the call's `Ctx` and its params by name, makes one call
of `ctx.app`, and returns the result's wire form; it raises only
DomainErrors. What it checks itself is the wire's own: a param's range, an
RFC 3339 time, a topic's spelling. Its docstring's first line is the OpenRPC
summary; the second shows the wire request and the sessionc form. Handlers
are plain functions unless they must wait (for the lock, for agents to
stop): those are `async` and take the slower dispatch path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessiond.core.records import parse_rfc3339
from sessiond.daemon.logs import topics as log_topics
from sessiond.errors import InvalidParams
from sessiond.wire.limits import TAIL_MAX_LINES

if TYPE_CHECKING:
    from sessiond.wire.context import Ctx


def check_lines(lines: int) -> None:
    if not 1 <= lines <= TAIL_MAX_LINES:
        raise InvalidParams(
            f"param 'lines' must be 1 to {TAIL_MAX_LINES} (got {lines})",
            "ask for fewer; 'sessionc export' gives a session's whole event log",
        )


def daemon_ping(ctx: Ctx) -> dict[str, Any]:
    """Is the daemon there: its version, pid and uptime.

    {"method": "daemon.ping"} — sessionc status"""
    return ctx.app.about()


def session_status(ctx: Ctx) -> dict[str, Any]:
    """The daemon, the live session (or null) and orphaned agent processes.

    {"method": "session.status"} — sessionc status"""
    return ctx.app.status()


async def session_start(
    ctx: Ctx, name: str | None = None, template: str | None = None, wait: Any = None,
    tty: str | None = None, **overrides: Any,
) -> dict[str, Any]:  # fmt: skip
    """Take the lock: start a session, or queue for it with `wait`.

    {"method": "session.start", "params": {"name": "nightly", "wait": 60}} — sessionc start"""
    parent = overrides.pop("from", None)
    return await ctx.app.start(
        ctx.peer, ctx.admin, tty, name=name, template=template, parent=parent,
        overrides=overrides, wait=wait,
    )  # fmt: skip


def session_join(ctx: Ctx, name: str | None = None, tty: str | None = None) -> Any:
    """Join the live session as a participant (counts as activity).

    {"method": "session.join", "params": {"name": "nightly"}} — sessionc join nightly"""
    return ctx.app.join(ctx.peer, name, tty)


def session_leave(ctx: Ctx, name: str | None = None, tty: str | None = None) -> Any:
    """Stop participating in the live session.

    {"method": "session.leave"} — sessionc leave"""
    return ctx.app.leave(ctx.peer, name)


async def session_stop(ctx: Ctx, name: str | None = None, reason: str | None = None) -> Any:
    """Stop the live session and release the lock.

    {"method": "session.stop", "params": {"name": "nightly"}} — sessionc stop nightly"""
    return await ctx.app.stop(ctx.peer, name, reason)


def session_pause(ctx: Ctx, name: str | None = None, reason: str | None = None) -> Any:
    """Pause the live session (its agents get SIGSTOP).

    {"method": "session.pause", "params": {"reason": "lunch"}} — sessionc pause --reason lunch"""
    return ctx.app.pause(ctx.peer, name, reason)


def session_resume(ctx: Ctx, name: str | None = None) -> Any:
    """Resume a paused session (counts as activity).

    {"method": "session.resume"} — sessionc resume"""
    return ctx.app.resume(ctx.peer, name)


async def session_reconnect(ctx: Ctx, name: str | None = None) -> Any:
    """Bring a disconnected session back: reset its errors, start its agents.

    {"method": "session.reconnect"} — sessionc reconnect"""
    return await ctx.app.reconnect(ctx.peer, name)


def session_touch(ctx: Ctx, name: str | None = None) -> Any:
    """Record activity, keeping the session from going idle or expiring.

    {"method": "session.touch"} — sessionc touch"""
    return ctx.app.touch(name)


def session_health(ctx: Ctx, name: str | None = None) -> Any:
    """How the session is doing, in a sentence, with steps to recover.

    {"method": "session.health", "params": {"name": "nightly"}} — sessionc health nightly"""
    return ctx.app.health(name)


def session_get(ctx: Ctx, name: str) -> Any:
    """One session, live or past, by name or id.

    {"method": "session.get", "params": {"name": "nightly"}} — sessionc show nightly"""
    return ctx.app.get(name)


def session_export(ctx: Ctx, name: str) -> Any:
    """One session with its whole event log, metrics and checkpoints.

    {"method": "session.export", "params": {"name": "nightly"}} — sessionc export nightly"""
    return ctx.app.export(ctx.peer, ctx.admin, name)


def session_history(ctx: Ctx, limit: int = 20, before: str | None = None) -> Any:
    """Sessions, newest first.

    {"method": "session.history", "params": {"limit": 5}} — sessionc history -n 5"""
    if not 1 <= limit <= 1000:
        raise InvalidParams(f"param 'limit' must be 1 to 1000 (got {limit})", "ask for fewer")
    return ctx.app.history(limit, time_param("before", before))


async def session_cleanup(ctx: Ctx, orphans_only: bool = False) -> Any:
    """Stop the live session (unless orphans_only) and end orphaned agents.

    {"method": "session.cleanup"} — sessionc cleanup"""
    return await ctx.app.cleanup(ctx.peer, orphans_only)


def events_tail(ctx: Ctx, lines: int = 20, session: str | None = None) -> Any:
    """The last events, oldest first, of every session or of one.

    {"method": "events.tail", "params": {"lines": 50}} — sessionc events -n 50"""
    check_lines(lines)
    return ctx.app.events(lines, session)


def subscribe(ctx: Ctx, topics: list[Any]) -> Any:
    """Receive `event` notifications, and `log` lines of agents (`logs:AGENT`) or of
    every agent of the live session, those added later too (`logs`), on this connection.

    {"method": "subscribe", "params": {"topics": ["events", "logs"]}}
    — sessionc events -f, sessionc logs -f"""
    names, whole, misspelt = _log_topics(topics)
    session_id, agents = ctx.app.log_sources(ctx.peer, ctx.admin, names, whole)  # errors first
    if misspelt is not None:
        raise misspelt
    ctx.conn.subscribe(frozenset(_scoped(topic, session_id) for topic in topics))
    ctx.app.follow_logs(agents)  # once subscribed: their first lines find the subscriber
    return {"topics": sorted(set(topics))}


def _log_topics(topics: list[Any]) -> tuple[list[str], bool, InvalidParams | None]:
    """The agents of the `logs:AGENT` topics up to the first misspelt topic, whether
    `logs` is one, and the misspelt one's error."""
    names: list[str] = []
    whole = False
    for topic in topics:
        if topic == "events":
            continue
        if topic == "logs":
            whole = True
        elif isinstance(topic, str) and topic.startswith("logs:"):
            names.append(topic.removeprefix("logs:"))
        else:
            hint = "the topics are 'events', 'logs' and 'logs:AGENT'"
            return names, whole, InvalidParams(f"unknown topic {topic!r}", hint)
    return names, whole, None


def _scoped(topic: str, session_id: str) -> str:
    """A log topic of the session it was asked in, as the fleet publishes it."""
    if topic == "logs":
        return log_topics(session_id, "")[1]
    if topic.startswith("logs:"):
        return log_topics(session_id, topic.removeprefix("logs:"))[0]
    return topic


def time_param(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise InvalidParams(
            f"param '{name}' must be an RFC 3339 time (got {value!r})",
            "for example 2026-11-22T10:00:00Z",
        ) from None
