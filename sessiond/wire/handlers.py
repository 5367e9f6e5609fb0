"""Session handlers of the method table (rpc.py).

Each handler takes the call's `Ctx` and its params by name, returns the
result's wire form, and raises only DomainErrors. Its docstring's first line is
the OpenRPC summary; the second shows the wire request and the sessionc form.
Handlers are plain functions unless they must wait (for the lock, for agents
to stop): those are `async` and take the slower dispatch path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sessiond.core.health import health
from sessiond.core.records import Session, parse_rfc3339, rfc3339
from sessiond.daemon.access import Role, role_of
from sessiond.errors import InvalidParams, NoSession, PermissionDenied

if TYPE_CHECKING:
    from sessiond.wire.methods import Ctx

TAIL_MAX_LINES = 10_000  # events.tail and logs.tail, a call (SPEC §6)


def check_lines(lines: int) -> None:
    if not 1 <= lines <= TAIL_MAX_LINES:
        raise InvalidParams(
            f"param 'lines' must be 1 to {TAIL_MAX_LINES} (got {lines})",
            "ask for fewer; 'sessionc export' gives a session's whole event log",
        )


def daemon_ping(ctx: Ctx) -> dict[str, Any]:
    """Is the daemon there: its version, pid and uptime.

    {"method": "daemon.ping"} — sessionc status"""
    return ctx.daemon.about()


def session_status(ctx: Ctx) -> dict[str, Any]:
    """The daemon, the live session (or null) and orphaned agent processes.

    {"method": "session.status"} — sessionc status"""
    live = ctx.daemon.manager.live
    return {
        # The configured templates: what `start --template` takes (and shell completion offers).
        "daemon": {**ctx.daemon.about(), "templates": sorted(ctx.daemon.config.templates)},
        "session": _wire(ctx, live) if live else None,
        "queue": ctx.daemon.manager.waiting(),
        "orphans": ctx.daemon.manager.team.orphans(),
    }


async def session_start(
    ctx: Ctx, name: str | None = None, template: str | None = None, wait: Any = None,
    tty: str | None = None, **overrides: Any,
) -> dict[str, Any]:  # fmt: skip
    """Take the lock: start a session, or queue for it with `wait`.

    {"method": "session.start", "params": {"name": "nightly", "wait": 60}} — sessionc start"""
    manager = ctx.daemon.manager
    parent = overrides.pop("from", None)
    request = manager.prepare_start(
        ctx.peer, tty, name=name, template=template, parent=parent, overrides=overrides,
        admin=ctx.admin,
    )  # fmt: skip
    if wait is None or wait is False:
        return _wire(ctx, manager.start(request))
    limit = None if wait is True else float(wait)
    if limit is not None and limit < 0:
        raise InvalidParams(
            "param 'wait' must be a number of seconds >= 0, or true",
            "use true to wait with no limit",
        )
    return _wire(ctx, await manager.start_waiting(request, limit))


def session_join(ctx: Ctx, name: str | None = None, tty: str | None = None) -> Any:
    """Join the live session as a participant (counts as activity).

    {"method": "session.join", "params": {"name": "nightly"}} — sessionc join nightly"""
    return _wire(ctx, ctx.daemon.manager.join(ctx.peer, name, tty))


def session_leave(ctx: Ctx, name: str | None = None, tty: str | None = None) -> Any:
    """Stop participating in the live session.

    {"method": "session.leave"} — sessionc leave"""
    return _wire(ctx, ctx.daemon.manager.leave(ctx.peer, name))


async def session_stop(ctx: Ctx, name: str | None = None, reason: str | None = None) -> Any:
    """Stop the live session and release the lock.

    {"method": "session.stop", "params": {"name": "nightly"}} — sessionc stop nightly"""
    return _wire(ctx, await ctx.daemon.manager.stop(ctx.peer, name, reason))


def session_pause(ctx: Ctx, name: str | None = None, reason: str | None = None) -> Any:
    """Pause the live session (its agents get SIGSTOP).

    {"method": "session.pause", "params": {"reason": "lunch"}} — sessionc pause --reason lunch"""
    return _wire(ctx, ctx.daemon.manager.pause(ctx.peer, name, reason))


def session_resume(ctx: Ctx, name: str | None = None) -> Any:
    """Resume a paused session (counts as activity).

    {"method": "session.resume"} — sessionc resume"""
    return _wire(ctx, ctx.daemon.manager.resume(ctx.peer, name))


async def session_reconnect(ctx: Ctx, name: str | None = None) -> Any:
    """Bring a disconnected session back: reset its errors, start its agents.

    {"method": "session.reconnect"} — sessionc reconnect"""
    return _wire(ctx, await ctx.daemon.manager.reconnect(ctx.peer, name))


def session_touch(ctx: Ctx, name: str | None = None) -> Any:
    """Record activity, keeping the session from going idle or expiring.

    {"method": "session.touch"} — sessionc touch"""
    return _wire(ctx, ctx.daemon.manager.touch(name))


def session_health(ctx: Ctx, name: str | None = None) -> Any:
    """How the session is doing, in a sentence, with steps to recover.

    {"method": "session.health", "params": {"name": "nightly"}} — sessionc health nightly"""
    manager = ctx.daemon.manager
    if name is None or (manager.live and name in (manager.live.name, manager.live.id)):
        now = time.time()
        errors = manager.live.error_count(now) if manager.live else 0
        return health(manager.live, name, now, errors)
    try:
        return health(manager.find(name), name, time.time())
    except NoSession:
        return health(None, name, time.time())


def session_get(ctx: Ctx, name: str) -> Any:
    """One session, live or past, by name or id.

    {"method": "session.get", "params": {"name": "nightly"}} — sessionc show nightly"""
    return _wire(ctx, ctx.daemon.manager.find(name))


def session_export(ctx: Ctx, name: str) -> Any:
    """One session with its whole event log, metrics and checkpoints.

    {"method": "session.export", "params": {"name": "nightly"}} — sessionc export nightly"""
    manager = ctx.daemon.manager
    found = manager.find(name)
    if role_of(ctx.peer, found.owner.uid, found.participant_uids(), ctx.admin) < Role.PARTICIPANT:
        raise PermissionDenied(
            f"{ctx.peer.user} may not export session {found.name}: only its owner, its "
            "participants and admins may",
            f"ask {found.owner.user} (its owner) or an admin",
        )
    return {
        "session": _wire(ctx, found),
        "events": manager.events(1_000_000, found.id),
        "metrics": dict(found.metrics),
        "checkpoints": [
            {**c, "time": rfc3339(c["time"])} for c in manager.store.checkpoints(found.id)
        ],
    }


def session_history(ctx: Ctx, limit: int = 20, before: str | None = None) -> Any:
    """Sessions, newest first.

    {"method": "session.history", "params": {"limit": 5}} — sessionc history -n 5"""
    if not 1 <= limit <= 1000:
        raise InvalidParams(f"param 'limit' must be 1 to 1000 (got {limit})", "ask for fewer")
    cutoff = _time_param("before", before)
    return [_wire(ctx, s) for s in ctx.daemon.manager.history(limit, cutoff)]


async def session_cleanup(ctx: Ctx, orphans_only: bool = False) -> Any:
    """Stop the live session (unless orphans_only) and end orphaned agents.

    {"method": "session.cleanup"} — sessionc cleanup"""
    manager = ctx.daemon.manager
    stopped = None
    if not orphans_only and manager.live is not None:
        found = await manager.stop(ctx.peer, None, f"cleaned up by {ctx.peer.user}")
        stopped = _wire(ctx, found)
    return {"stopped": stopped, "orphans_killed": await manager.team.kill_orphans()}


def events_tail(ctx: Ctx, lines: int = 20, session: str | None = None) -> Any:
    """The last events, oldest first, of every session or of one.

    {"method": "events.tail", "params": {"lines": 50}} — sessionc events -n 50"""
    check_lines(lines)
    return ctx.daemon.manager.events(lines, session)


def subscribe(ctx: Ctx, topics: list[Any]) -> Any:
    """Receive `event` notifications, or an agent's `log` lines, on this connection.

    {"method": "subscribe", "params": {"topics": ["events", "logs:scanner"]}}
    — sessionc events -f, sessionc logs scanner -f"""
    manager = ctx.daemon.manager
    agents = []
    for topic in topics:
        if topic == "events":
            continue
        if not isinstance(topic, str) or not topic.startswith("logs:"):
            raise InvalidParams(
                f"unknown topic {topic!r}", "the topics are 'events' and 'logs:AGENT'"
            )
        live = manager.resolve(None)
        if not can_read_logs(ctx, live):
            raise PermissionDenied(
                f"{ctx.peer.user} may not follow the logs of session {live.name}",
                f"join the session first with 'sessionc join {live.name}'",
            )
        agents.append(manager.team.find(live, topic.removeprefix("logs:")))
    ctx.conn.subscribe(frozenset(topics))
    for agent in agents:
        manager.team.follow_logs(agent)
    return {"topics": sorted(set(topics))}


def can_read_logs(ctx: Ctx, live: Session) -> bool:
    role = role_of(ctx.peer, live.owner.uid, live.participant_uids(), ctx.admin)
    return role >= Role.PARTICIPANT


def _wire(ctx: Ctx, session: Session) -> dict[str, Any]:
    return ctx.daemon.manager.wire(session)


def _time_param(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise InvalidParams(
            f"param '{name}' must be an RFC 3339 time (got {value!r})",
            "for example 2026-11-22T10:00:00Z",
        ) from None
