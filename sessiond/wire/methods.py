"""The method table: names, params, roles, handlers, results, errors; and its OpenRPC.

`METHODS` is the one list of what the daemon answers. Each entry names the
least role that may call it and the params it takes with their JSON types;
the dispatch (dispatch.py) checks both before the handler runs, so handlers
receive well-typed keyword arguments and only raise `DomainError`s. Each
entry also names its result's shape (schemas.py) and the domain errors it
may raise: `rpc.discover` renders the same table as an OpenRPC document
(`document()`), so the document cannot drift from what the daemon does.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sessiond import __version__
from sessiond.core.settings import SESSION_KEYS
from sessiond.daemon.access import Role
from sessiond.errors import (
    AgentNotFound,
    BadToken,
    ClusterUnavailable,
    DomainError,
    InvalidParams,
    InvalidState,
    LimitReached,
    NoSession,
    PermissionDenied,
    RemoteSession,
    SessionActive,
    SessionMismatch,
    StorageError,
    WaitTimeout,
)
from sessiond.wire.agent_handlers import (
    agent_checkpoint,
    agent_kill,
    agent_list,
    agent_report,
    agent_restart,
    agent_run,
    agent_start,
    agent_stop,
    logs_tail,
    metrics_get,
)
from sessiond.wire.handlers import (
    daemon_ping,
    events_tail,
    session_cleanup,
    session_export,
    session_get,
    session_health,
    session_history,
    session_join,
    session_leave,
    session_pause,
    session_reconnect,
    session_resume,
    session_start,
    session_status,
    session_stop,
    session_touch,
    subscribe,
)
from sessiond.wire.jsonrpc import JSON_TYPES, json_type
from sessiond.wire.schemas import (
    AGENT,
    AGENT_OR_OUTCOMES,
    AGENTS,
    EMPTY,
    SCHEMAS,
    SESSION,
    STRS,
    Schema,
    array,
    ref,
)

if TYPE_CHECKING:
    from sessiond.wire.context import Ctx


@dataclass(frozen=True)
class Param:
    name: str
    types: tuple[str, ...]
    required: bool = False
    # What rpc.discover says of it, where its JSON types alone would say less
    schema: Schema | None = field(default=None, compare=False)
    description: str = ""

    def check(self, value: Any) -> None:
        ok = any(
            isinstance(value, JSON_TYPES[t]) and not (t != "boolean" and isinstance(value, bool))
            for t in self.types
        )
        if not ok:
            raise InvalidParams(
                f"param '{self.name}' must be {' or '.join(self.types)}, not {json_type(value)}",
                "see 'rpc.discover' for every method's params",
            )


Handler = Callable[..., Any]  # a plain function, or a coroutine function that must wait


@dataclass(frozen=True)
class Method:
    """One method: who may call it, what it takes, what it returns, how it fails.

    `errors` are the domain errors its handler may raise; `all_errors` adds
    those every call may get: -32602 for a bad param, and PERMISSION_DENIED
    where the method needs more than the observer role.
    """

    name: str
    handler: Handler
    role: Role
    params: tuple[Param, ...] = ()
    result: Schema = field(default_factory=dict)  # {}: anything; each method names its own
    errors: tuple[type[DomainError], ...] = ()
    role_without_session: Role | None = None  # the role it needs when no session is live

    def needs(self, live: bool) -> Role:
        return self.role if live or self.role_without_session is None else self.role_without_session

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    @property
    def summary(self) -> str:
        return (self.handler.__doc__ or "").strip().splitlines()[0]

    @property
    def all_errors(self) -> tuple[type[DomainError], ...]:
        needs_role = (PermissionDenied,) if self.role > Role.OBSERVER else ()
        found = dict.fromkeys((*self.errors, *needs_role, InvalidParams))
        return tuple(sorted(found, key=lambda e: -e.code))


def P(name: str, *types: str, required: bool = False) -> Param:  # noqa: N802 -- reads as a table
    return Param(name, types, required)


NAME = P("name", "string", "null")
TTY = P("tty", "string", "null")
SESSION_PARAMS = tuple(P(key, "string", "number", "null") for key in SESSION_KEYS)


def rpc_discover(ctx: Ctx) -> dict[str, Any]:
    """This document: every method with its params, result and errors, as OpenRPC."""
    return openrpc()


ANYONE, PT, OW = Role.OBSERVER, Role.PARTICIPANT, Role.OWNER
TOKEN = Role.OBSERVER  # whoever holds an agent's token, whatever its uid: checked by the handler
# The agents a call acts on: exactly one of these (agent_handlers.single checks it).
ONE_OF = "exactly one of name, names and label"
PICK = (
    Param("name", ("string",), description=f"the agent; {ONE_OF}"),
    Param("names", ("array", "string"), schema={"anyOf": [{**STRS, "minItems": 1},
                                                          {"const": "all"}]},
          description=f'these agents, or "all" the live session\'s; {ONE_OF}'),
    Param("label", ("string",), description=f"the agents with this label; {ONE_OF}"),
)  # fmt: skip
# The domain errors of calls on the live session (manager.resolve and the state table); in a
# cluster, such a call must act where the session runs (SPEC §10).
LIVE = (NoSession, SessionMismatch, RemoteSession)
MOVE = (*LIVE, InvalidState, StorageError)
ON_AGENT = (NoSession, AgentNotFound, RemoteSession)
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("daemon.ping", daemon_ping, ANYONE, result=ref("daemon")),
    Method("rpc.discover", rpc_discover, ANYONE, result=ref("openrpc")),
    Method("session.status", session_status, ANYONE, result=ref("status")),
    Method("session.start", session_start, ANYONE, (
        NAME, P("template", "string", "null"), P("from", "string", "null"),
        P("wait", "number", "boolean", "null"), TTY, *SESSION_PARAMS), SESSION,
        (SessionActive, WaitTimeout, NoSession, PermissionDenied, InvalidState, StorageError,
         ClusterUnavailable)),
    Method("session.join", session_join, ANYONE, (NAME, TTY), SESSION, (*LIVE, StorageError)),
    Method("session.leave", session_leave, ANYONE, (NAME, TTY), SESSION, MOVE),
    Method("session.stop", session_stop, OW, (NAME, P("reason", "string", "null")), SESSION,
           LIVE),
    Method("session.pause", session_pause, PT, (NAME, P("reason", "string", "null")), SESSION,
           MOVE),
    Method("session.resume", session_resume, PT, (NAME,), SESSION, MOVE),
    Method("session.reconnect", session_reconnect, OW, (NAME,), SESSION, MOVE),
    Method("session.touch", session_touch, PT, (NAME,), SESSION, (*LIVE, StorageError)),
    Method("session.health", session_health, ANYONE, (NAME,), ref("health")),
    Method("session.get", session_get, ANYONE, (P("name", "string", required=True),), SESSION,
           (NoSession,)),
    # Checked by the handler against the session exported, live or closed (SPEC §2.5).
    Method("session.export", session_export, ANYONE, (P("name", "string", required=True),),
           ref("export"), (NoSession, PermissionDenied)),
    Method("session.history", session_history, ANYONE,
           (P("limit", "integer"), P("before", "string", "null")), array(SESSION)),
    # With no live session there is no owner: only an admin may end orphans (SPEC §2.5).
    Method("session.cleanup", session_cleanup, OW, (P("orphans_only", "boolean"),),
           ref("cleanup"), role_without_session=Role.ADMIN),
    Method("events.tail", events_tail, ANYONE,
           (P("lines", "integer"), P("session", "string", "null")), array(ref("event")),
           (NoSession,)),
    Method("subscribe", subscribe, ANYONE, (P("topics", "array", required=True),),
           ref("subscribed"), (NoSession, AgentNotFound, PermissionDenied)),
    Method("agent.list", agent_list, ANYONE, result=AGENTS),
    Method("agent.run", agent_run, OW, (
        P("command", "array", required=True), NAME, P("cwd", "string", "null"),
        P("env", "object", "null"), P("restart", "string", "null"),
        P("labels", "array", "null"), P("needs_network", "boolean")), AGENT,
        (NoSession, InvalidState, LimitReached, StorageError, RemoteSession)),
    Method("agent.start", agent_start, OW, PICK, AGENT_OR_OUTCOMES, (*ON_AGENT, InvalidState)),
    Method("agent.stop", agent_stop, OW, PICK, AGENT_OR_OUTCOMES, ON_AGENT),
    Method("agent.restart", agent_restart, OW, PICK, AGENT_OR_OUTCOMES,
           (*ON_AGENT, InvalidState)),
    Method("agent.kill", agent_kill, OW, (*PICK, P("signal", "string", "integer", "null")),
           AGENT_OR_OUTCOMES, (*ON_AGENT, InvalidState)),
    Method("agent.report", agent_report, TOKEN, (
        P("token", "string", required=True), P("metrics", "object", "null"),
        P("error", "string", "null"), P("activity", "boolean")), EMPTY,
        (BadToken, StorageError)),
    Method("agent.checkpoint", agent_checkpoint, TOKEN, (
        P("token", "string", required=True),
        P("data", "object", "array", "string", "number", "boolean", "null", required=True)),
        ref("checkpointed"), (BadToken, StorageError)),
    Method("logs.tail", logs_tail, PT, (
        Param("agent", ("string",), description="one agent; or names or label; none: all"),
        *PICK[1:], P("lines", "integer"),
        Param("since", ("string",), description="only the lines that came then or later")),
        ref("logs"), ON_AGENT),
    Method("metrics.get", metrics_get, ANYONE, result=ref("metrics")),
)}  # fmt: skip


def check_params(method: Method, params: dict[str, Any]) -> None:
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


@functools.cache
def openrpc() -> dict[str, Any]:
    """The OpenRPC 1.2.6 document of METHODS: made once, the same for every caller."""
    return document(__version__, METHODS.values())


def document(version: str, methods: Iterable[Method]) -> dict[str, Any]:
    """The OpenRPC 1.2.6 document of a method table: its shapes and errors as components."""
    table = list(methods)
    errors = sorted({e for m in table for e in m.all_errors}, key=lambda e: -e.code)
    return {
        "openrpc": "1.2.6",
        "info": {"title": "sessiond", "version": version},
        "methods": [_method(m) for m in table],
        "components": {
            "schemas": SCHEMAS,
            "errors": {e.name: {"code": e.code, "message": e.name} for e in errors},
        },
    }


def _method(m: Method) -> dict[str, Any]:
    return {
        "name": m.name,
        "summary": m.summary,
        "x-role": m.role.name.lower(),
        "paramStructure": "by-name",
        "params": [_param(p) for p in m.params],
        "result": {"name": _result_name(m.result), "schema": m.result},
        "errors": [_error_ref(e) for e in m.all_errors],
    }


def _param(p: Param) -> dict[str, Any]:
    found = {"name": p.name, "required": p.required, "schema": p.schema or {"type": list(p.types)}}
    return {**found, "description": p.description} if p.description else found


def _result_name(schema: Schema) -> str:
    """session, sessions, agent, agentOrOutcomes…: what a generated client calls the result."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array" and "$ref" in schema["items"]:
        return _result_name(schema["items"]) + "s"
    if "anyOf" in schema:
        first, *others = (_result_name(s) for s in schema["anyOf"])
        return first + "".join("Or" + other[:1].upper() + other[1:] for other in others)
    return "result"


def _error_ref(error: type[DomainError]) -> dict[str, str]:
    return {"$ref": f"#/components/errors/{error.name}"}
