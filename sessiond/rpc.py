"""The method table: names, params, roles, handlers; and the error boundary.

`METHODS` is the one list of what the daemon answers. Each entry names the
least role that may call it and the params it takes with their JSON types;
`dispatch()` checks both before the handler runs, so handlers receive
well-typed keyword arguments and only raise `DomainError`s. `rpc.discover`
renders the same table as an OpenRPC document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from jsonrpcserver import JsonRpcError, Success
from jsonrpcserver import async_dispatch_to_response as dispatch_to_response
from jsonrpcserver.response import to_serializable_one
from jsonrpcserver.result import Result

from . import __version__
from .access import Peer, Role, role_of
from .config import SESSION_KEYS
from .errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    DomainError,
    InvalidParams,
    NoSession,
    PermissionDenied,
)
from .health import health
from .records import parse_rfc3339

if TYPE_CHECKING:
    from .daemon import Daemon
    from .server import Connection

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),),
}  # fmt: skip


@dataclass(frozen=True)
class Param:
    name: str
    types: tuple[str, ...]
    required: bool = False

    def check(self, value: Any) -> None:
        ok = any(
            isinstance(value, JSON_TYPES[t]) and not (t != "boolean" and isinstance(value, bool))
            for t in self.types
        )
        if not ok:
            raise InvalidParams(
                f"param '{self.name}' must be {' or '.join(self.types)}, not {_json_type(value)}",
                "see 'rpc.discover' for every method's params",
            )


@dataclass(frozen=True)
class Ctx:
    peer: Peer
    admin: bool
    daemon: Daemon
    conn: Connection


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    role: Role
    params: tuple[Param, ...] = ()

    @property
    def summary(self) -> str:
        return (self.handler.__doc__ or "").strip().splitlines()[0]


def _json_type(value: Any) -> str:
    for name, types in JSON_TYPES.items():
        if isinstance(value, types) and not (name != "boolean" and isinstance(value, bool)):
            return name
    return type(value).__name__


def P(name: str, *types: str, required: bool = False) -> Param:  # noqa: N802 -- reads as a table
    return Param(name, types, required)


NAME = P("name", "string", "null")
TTY = P("tty", "string", "null")
SESSION_PARAMS = tuple(P(key, "string", "number", "null") for key in SESSION_KEYS)

# -- handlers ---------------------------------------------------------------
# Each docstring's first line is the OpenRPC summary; the second shows the
# wire request and the sessionc form.


async def daemon_ping(ctx: Ctx) -> dict[str, Any]:
    """Is the daemon there: its version, pid and uptime.

    {"method": "daemon.ping"} — sessionc status"""
    return ctx.daemon.about()


async def rpc_discover(ctx: Ctx) -> dict[str, Any]:
    """This document: every method with its params, as OpenRPC."""
    return openrpc()


async def session_status(ctx: Ctx) -> dict[str, Any]:
    """The daemon, the live session (or null) and orphaned agent processes.

    {"method": "session.status"} — sessionc status"""
    live = ctx.daemon.manager.live
    return {
        "daemon": ctx.daemon.about(),
        "session": live.to_wire() if live else None,
        "queue": ctx.daemon.manager.waiting(),
        "orphans": [],
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
        ctx.peer, tty, name=name, template=template, parent=parent, overrides=overrides
    )
    if wait is None or wait is False:
        return manager.start(request).to_wire()
    limit = None if wait is True else float(wait)
    if limit is not None and limit < 0:
        raise InvalidParams(
            "param 'wait' must be a number of seconds >= 0, or true",
            "use true to wait with no limit",
        )
    return (await manager.start_waiting(request, limit)).to_wire()


async def session_join(ctx: Ctx, name: str | None = None, tty: str | None = None) -> Any:
    """Join the live session as a participant (counts as activity).

    {"method": "session.join", "params": {"name": "nightly"}} — sessionc join nightly"""
    return ctx.daemon.manager.join(ctx.peer, name, tty).to_wire()


async def session_leave(ctx: Ctx, name: str | None = None, tty: str | None = None) -> Any:
    """Stop participating in the live session.

    {"method": "session.leave"} — sessionc leave"""
    return ctx.daemon.manager.leave(ctx.peer, name).to_wire()


async def session_stop(ctx: Ctx, name: str | None = None, reason: str | None = None) -> Any:
    """Stop the live session and release the lock.

    {"method": "session.stop", "params": {"name": "nightly"}} — sessionc stop nightly"""
    return ctx.daemon.manager.stop(ctx.peer, name, reason).to_wire()


async def session_pause(ctx: Ctx, name: str | None = None, reason: str | None = None) -> Any:
    """Pause the live session (its agents get SIGSTOP).

    {"method": "session.pause", "params": {"reason": "lunch"}} — sessionc pause --reason lunch"""
    return ctx.daemon.manager.pause(ctx.peer, name, reason).to_wire()


async def session_resume(ctx: Ctx, name: str | None = None) -> Any:
    """Resume a paused session (counts as activity).

    {"method": "session.resume"} — sessionc resume"""
    return ctx.daemon.manager.resume(ctx.peer, name).to_wire()


async def session_reconnect(ctx: Ctx, name: str | None = None) -> Any:
    """Bring a disconnected session back: reset its errors, start its agents.

    {"method": "session.reconnect"} — sessionc reconnect"""
    return ctx.daemon.manager.reconnect(ctx.peer, name).to_wire()


async def session_touch(ctx: Ctx, name: str | None = None) -> Any:
    """Record activity, keeping the session from going idle or expiring.

    {"method": "session.touch"} — sessionc touch"""
    return ctx.daemon.manager.touch(name).to_wire()


async def session_health(ctx: Ctx, name: str | None = None) -> Any:
    """How the session is doing, in a sentence, with steps to recover.

    {"method": "session.health", "params": {"name": "nightly"}} — sessionc health nightly"""
    manager = ctx.daemon.manager
    if name is None or (manager.live and name in (manager.live.name, manager.live.id)):
        return health(manager.live, name, time.time())
    try:
        return health(manager.find(name), name, time.time())
    except NoSession:
        return health(None, name, time.time())


async def session_get(ctx: Ctx, name: str) -> Any:
    """One session, live or past, by name or id.

    {"method": "session.get", "params": {"name": "nightly"}} — sessionc show nightly"""
    return ctx.daemon.manager.find(name).to_wire()


async def session_export(ctx: Ctx, name: str) -> Any:
    """One session with its whole event log, metrics and checkpoints.

    {"method": "session.export", "params": {"name": "nightly"}} — sessionc export nightly"""
    manager = ctx.daemon.manager
    found = manager.find(name)
    return {
        "session": found.to_wire(),
        "events": manager.events(1_000_000, found.id),
        "metrics": dict(found.metrics),
        "checkpoints": [],
    }


async def session_history(ctx: Ctx, limit: int = 20, before: str | None = None) -> Any:
    """Sessions, newest first.

    {"method": "session.history", "params": {"limit": 5}} — sessionc history -n 5"""
    if not 1 <= limit <= 1000:
        raise InvalidParams(f"param 'limit' must be 1 to 1000 (got {limit})", "ask for fewer")
    cutoff = _time_param("before", before)
    return [s.to_wire() for s in ctx.daemon.manager.history(limit, cutoff)]


async def session_cleanup(ctx: Ctx, orphans_only: bool = False) -> Any:
    """Stop the live session (unless orphans_only) and end orphaned agents.

    {"method": "session.cleanup"} — sessionc cleanup"""
    manager = ctx.daemon.manager
    stopped = None
    if not orphans_only and manager.live is not None:
        stopped = manager.stop(ctx.peer, None, f"cleaned up by {ctx.peer.user}").to_wire()
    return {"stopped": stopped, "orphans_killed": 0}


async def events_tail(ctx: Ctx, lines: int = 20, session: str | None = None) -> Any:
    """The last events, oldest first, of every session or of one.

    {"method": "events.tail", "params": {"lines": 50}} — sessionc events -n 50"""
    if not 1 <= lines <= 100_000:
        raise InvalidParams(f"param 'lines' must be 1 to 100000 (got {lines})", "ask for fewer")
    return ctx.daemon.manager.events(lines, session)


async def subscribe(ctx: Ctx, topics: list[Any]) -> Any:
    """Receive `event` notifications on this connection.

    {"method": "subscribe", "params": {"topics": ["events"]}} — sessionc events -f"""
    for topic in topics:
        if topic != "events":
            raise InvalidParams(
                f"unknown topic {topic!r}", "the topics are 'events' and 'logs:AGENT'"
            )
    ctx.conn.subscribe(frozenset(topics))
    return {"topics": sorted(set(topics))}


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


ANYONE, PT, OW = Role.OBSERVER, Role.PARTICIPANT, Role.OWNER
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("daemon.ping", daemon_ping, ANYONE),
    Method("rpc.discover", rpc_discover, ANYONE),
    Method("session.status", session_status, ANYONE),
    Method("session.start", session_start, ANYONE, (
        NAME, P("template", "string", "null"), P("from", "string", "null"),
        P("wait", "number", "boolean", "null"), TTY, *SESSION_PARAMS)),
    Method("session.join", session_join, ANYONE, (NAME, TTY)),
    Method("session.leave", session_leave, ANYONE, (NAME, TTY)),
    Method("session.stop", session_stop, OW, (NAME, P("reason", "string", "null"))),
    Method("session.pause", session_pause, PT, (NAME, P("reason", "string", "null"))),
    Method("session.resume", session_resume, PT, (NAME,)),
    Method("session.reconnect", session_reconnect, OW, (NAME,)),
    Method("session.touch", session_touch, PT, (NAME,)),
    Method("session.health", session_health, ANYONE, (NAME,)),
    Method("session.get", session_get, ANYONE, (P("name", "string", required=True),)),
    Method("session.export", session_export, PT, (P("name", "string", required=True),)),
    Method("session.history", session_history, ANYONE,
           (P("limit", "integer"), P("before", "string", "null"))),
    Method("session.cleanup", session_cleanup, OW, (P("orphans_only", "boolean"),)),
    Method("events.tail", events_tail, ANYONE,
           (P("lines", "integer"), P("session", "string", "null"))),
    Method("subscribe", subscribe, ANYONE, (P("topics", "array", required=True),)),
)}  # fmt: skip


def openrpc() -> dict[str, Any]:
    return {
        "openrpc": "1.2.6",
        "info": {"title": "sessiond", "version": __version__},
        "methods": [
            {
                "name": m.name,
                "summary": m.summary,
                "x-role": m.role.name.lower(),
                "paramStructure": "by-name",
                "params": [
                    {"name": p.name, "required": p.required, "schema": {"type": list(p.types)}}
                    for p in m.params
                ],
                "result": {"name": "result", "schema": {}},
            }
            for m in METHODS.values()
        ],
    }


def _check_params(method: Method, params: dict[str, Any]) -> None:
    known = {p.name: p for p in method.params}
    for key, value in params.items():
        if key not in known:
            names = ", ".join(known) or "none"
            raise InvalidParams(f"{method.name} has no param '{key}'", f"its params: {names}")
        known[key].check(value)
    for p in method.params:
        if p.required and p.name not in params:
            raise InvalidParams(
                f"{method.name} needs param '{p.name}'",
                "see 'rpc.discover' for every method's params",
            )


def _check_role(method: Method, ctx: Ctx, params: dict[str, Any]) -> None:
    live = ctx.daemon.manager.live
    needed = method.role
    if method.name == "session.cleanup" and live is None:
        needed = Role.ADMIN
    owner = live.owner.uid if live else None
    role = role_of(ctx.peer, owner, live.participant_uids() if live else frozenset(), ctx.admin)
    if role < needed:
        raise PermissionDenied(
            f"{ctx.peer.user} may not call {method.name}: it needs the "
            f"{needed.name.lower()} role, and {ctx.peer.user} is {role.name.lower()}",
            _role_hint(needed, live.name if live else None),
        )


def _role_hint(needed: Role, session: str | None) -> str:
    if needed is Role.PARTICIPANT and session:
        return f"join the session first with 'sessionc join {session}'"
    return "ask the session's owner or an admin (root or a member of admin_group)"


def _bound(method: Method) -> Callable[..., Awaitable[Result]]:
    async def call(ctx: Ctx, *args: Any, **params: Any) -> Result:
        try:
            if args:
                raise InvalidParams(
                    "params must be an object (by name), not a list",
                    'send {"params": {"name": ...}}',
                )
            _check_params(method, params)
            _check_role(method, ctx, params)
            return Success(await method.handler(ctx, **params))
        except DomainError as exc:
            wire = exc.to_wire()
            raise JsonRpcError(wire["code"], wire["message"], wire["data"]) from None

    return call


_DISPATCH = {name: _bound(m) for name, m in METHODS.items()}


def _valid_request(request: Any) -> Any:
    """A cheap structural check in place of jsonrpcserver's jsonschema validator."""
    items = request if isinstance(request, list) else [request]
    if not items or not all(
        isinstance(r, dict) and r.get("jsonrpc") == "2.0" and isinstance(r.get("method"), str)
        and isinstance(r.get("params", {}), dict | list)
        and (r.get("id") is None or isinstance(r.get("id"), str | int))
        for r in items
    ):  # fmt: skip
        raise ValueError("not a JSON-RPC 2.0 request")
    return request


# jsonrpcserver answers these itself with a bare string as `data`; give them our shape.
_STANDARD = {
    PARSE_ERROR: ("the request is not valid JSON: {}", "send one JSON text per line"),
    INVALID_REQUEST: ("the request is not JSON-RPC 2.0: {}",
                      'send {"jsonrpc": "2.0", "method": "…", "params": {…}, "id": 1}'),
    METHOD_NOT_FOUND: ("unknown method '{}'", "'rpc.discover' lists every method"),
    INTERNAL_ERROR: ("internal error: {}", "this is a bug in sessiond; the journal has details"),
}  # fmt: skip


def _serializable(response: Any) -> Any:
    out = cast(dict[str, Any], to_serializable_one(response))  # one response, never a batch
    error = out.get("error")
    if error and error["code"] in _STANDARD and not isinstance(error.get("data"), dict):
        text, hint = _STANDARD[error["code"]]
        error["data"] = {"message": text.format(error.get("data", "")), "hint": hint}
    return out


async def dispatch(line: str, ctx: Ctx) -> str:
    """One line in, one line out ("" for notifications)."""
    response = await dispatch_to_response(
        line, _DISPATCH, context=ctx, validator=_valid_request, post_process=_serializable
    )
    return "" if response is None else json.dumps(response, separators=(",", ":"))
