"""The method table: names, params, roles, handlers; and the error boundary.

`METHODS` is the one list of what the daemon answers. Each entry names the
least role that may call it and the params it takes with their JSON types;
`dispatch()` checks both before the handler runs, so handlers receive
well-typed keyword arguments and only raise `DomainError`s. Each entry also
names its result's shape (schemas.py) and the domain errors it may raise:
`rpc.discover` renders the same table as an OpenRPC document.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from jsonrpcserver import JsonRpcError, Success
from jsonrpcserver import async_dispatch_to_response as async_dispatch
from jsonrpcserver import dispatch_to_response as sync_dispatch
from jsonrpcserver.response import to_serializable_one
from jsonrpcserver.result import Result

from sessiond import __version__
from sessiond.core.settings import SESSION_KEYS
from sessiond.daemon.access import Peer, Role, role_of
from sessiond.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    AgentNotFound,
    BadToken,
    DomainError,
    InvalidParams,
    InvalidState,
    LimitReached,
    NoSession,
    PermissionDenied,
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
    TAIL_MAX_LINES,
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
from sessiond.wire.jsonrpc import (
    JSON_TYPES,
    REQUEST_HINT,
    dumps,
    invalid,
    json_type,
    not_a_request,
    valid_one,
    with_raw_ids,
)
from sessiond.wire.schemas import AGENT, AGENTS, EMPTY, SESSION, Schema, array, document, ref

if TYPE_CHECKING:
    from sessiond.main import Daemon
    from sessiond.wire.server import Connection

BATCH_MAX = 1000  # requests in one batch (SPEC §6)
TAIL_DEFAULTS = {"events.tail": 20, "logs.tail": 50}  # the handlers' default `lines`
BATCH_LINES_MAX = 2 * TAIL_MAX_LINES  # a batch's tails in all; an export counts as one full


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
                f"param '{self.name}' must be {' or '.join(self.types)}, not {json_type(value)}",
                "see 'rpc.discover' for every method's params",
            )


@dataclass(frozen=True)
class Ctx:
    peer: Peer
    admin: bool
    daemon: Daemon
    conn: Connection


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
AGENT_NAME = P("name", "string", required=True)
# The domain errors of calls on the live session (manager.resolve and the state table).
LIVE = (NoSession, SessionMismatch)
MOVE = (*LIVE, InvalidState, StorageError)
ON_AGENT = (NoSession, AgentNotFound)
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("daemon.ping", daemon_ping, ANYONE, result=ref("daemon")),
    Method("rpc.discover", rpc_discover, ANYONE, result=ref("openrpc")),
    Method("session.status", session_status, ANYONE, result=ref("status")),
    Method("session.start", session_start, ANYONE, (
        NAME, P("template", "string", "null"), P("from", "string", "null"),
        P("wait", "number", "boolean", "null"), TTY, *SESSION_PARAMS), SESSION,
        (SessionActive, WaitTimeout, NoSession, PermissionDenied, InvalidState, StorageError)),
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
           ref("subscribed"), (*ON_AGENT, PermissionDenied)),
    Method("agent.list", agent_list, ANYONE, result=AGENTS),
    Method("agent.run", agent_run, OW, (
        P("command", "array", required=True), NAME, P("cwd", "string", "null"),
        P("env", "object", "null"), P("restart", "string", "null"),
        P("labels", "array", "null"), P("needs_network", "boolean")), AGENT,
        (NoSession, InvalidState, LimitReached, StorageError)),
    Method("agent.start", agent_start, OW, (AGENT_NAME,), AGENT, (*ON_AGENT, InvalidState)),
    Method("agent.stop", agent_stop, OW, (AGENT_NAME,), AGENT, ON_AGENT),
    Method("agent.restart", agent_restart, OW, (AGENT_NAME,), AGENT, (*ON_AGENT, InvalidState)),
    Method("agent.kill", agent_kill, OW, (AGENT_NAME, P("signal", "string", "integer", "null")),
           AGENT, (*ON_AGENT, InvalidState)),
    Method("agent.report", agent_report, TOKEN, (
        P("token", "string", required=True), P("metrics", "object", "null"),
        P("error", "string", "null"), P("activity", "boolean")), EMPTY,
        (BadToken, StorageError)),
    Method("agent.checkpoint", agent_checkpoint, TOKEN, (
        P("token", "string", required=True),
        P("data", "object", "array", "string", "number", "boolean", "null", required=True)),
        ref("checkpointed"), (BadToken, StorageError)),
    Method("logs.tail", logs_tail, PT,
           (P("agent", "string", required=True), P("lines", "integer")), ref("logs"), ON_AGENT),
    Method("metrics.get", metrics_get, ANYONE, result=ref("metrics")),
)}  # fmt: skip


@functools.cache
def openrpc() -> dict[str, Any]:
    """The OpenRPC 1.2.6 document of METHODS: made once, the same for every caller."""
    return document(__version__, METHODS.values())


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


def _check_role(method: Method, ctx: Ctx) -> None:
    live = ctx.daemon.manager.live
    needed = method.needs(live is not None)
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


def _check_storable(name: str, value: Any) -> None:
    """Refuse what the store and the wire cannot hold: lone surrogates, NaN, infinities and
    integers beyond SQLite's 64 bits."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _is_unicode(item):
                raise InvalidParams(
                    f"param '{name}' holds a string that is not valid Unicode (a lone surrogate)",
                    "send UTF-8 text: \\ud800-\\udfff escapes only in pairs",
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidParams(
                    f"param '{name}' holds {item}: numbers must be finite",
                    "send plain JSON numbers: no NaN, Infinity or values beyond 1.8e308",
                )
        elif isinstance(item, int) and not -(2**63) <= item < 2**63:
            raise InvalidParams(
                f"param '{name}' holds an integer of {item.bit_length()} bits: at most 64",
                "send integers between -2**63 and 2**63-1",
            )
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _checked(method: Method, ctx: Ctx, args: tuple[Any, ...], params: dict[str, Any]) -> None:
    if args:
        raise InvalidParams(
            "params must be an object (by name), not a list", 'send {"params": {"name": ...}}'
        )
    for name, value in params.items():
        _check_storable(name, value)
    _check_params(method, params)
    _check_role(method, ctx)


def _rpc_error(exc: DomainError) -> JsonRpcError:
    wire = exc.to_wire()
    return JsonRpcError(wire["code"], wire["message"], wire["data"])


def _sync(method: Method) -> Callable[..., Result]:
    def call(ctx: Ctx, /, *args: Any, **params: Any) -> Result:
        try:
            _checked(method, ctx, args, params)
            return Success(method.handler(ctx, **params))
        except DomainError as exc:
            raise _rpc_error(exc) from None

    return _presigned(call)


def _presigned(call: Callable[..., Any]) -> Callable[..., Any]:
    # jsonrpcserver checks every call against inspect.signature(); computing it once
    # saves ~10 µs a request. Our own _check_params does the real checking.
    call.__signature__ = inspect.signature(call)  # type: ignore[attr-defined]
    return call


def _async(method: Method) -> Callable[..., Awaitable[Result]]:
    async def call(ctx: Ctx, /, *args: Any, **params: Any) -> Result:
        try:
            _checked(method, ctx, args, params)
            result = method.handler(ctx, **params)
            return Success(await result if method.is_async else result)
        except DomainError as exc:
            raise _rpc_error(exc) from None

    return _presigned(call)


# Requests whose methods all answer at once take the synchronous path: no task,
# no trip round the event loop. The rest (waiting for the lock, stopping agents)
# go through jsonrpcserver's async dispatcher.
_SYNC = {name: _sync(m) for name, m in METHODS.items() if not m.is_async}
_ASYNC = {name: _async(m) for name, m in METHODS.items()}


def _valid_request(request: Any) -> Any:
    """A cheap structural check in place of jsonrpcserver's jsonschema validator."""
    items = request if isinstance(request, list) else [request]
    if not items or not all(valid_one(r) for r in items):
        raise ValueError("not a JSON-RPC 2.0 request")
    return request


# jsonrpcserver answers these itself with a bare string as `data`; give them our shape.
_STANDARD = {
    PARSE_ERROR: ("the request is not valid JSON: {}", "send one JSON text per line"),
    INVALID_REQUEST: ("the request is not JSON-RPC 2.0: {}", REQUEST_HINT),
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


class _ParseFailure:
    """A deserializer that fails the way json.loads did, for jsonrpcserver's -32700."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self, _line: str) -> Any:
        raise ValueError(self.reason)


def _parse(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        return _ParseFailure(str(exc))
    except RecursionError:
        return _ParseFailure("nested too deeply")


def _needs_waiting(request: Any) -> bool:
    items = request if isinstance(request, list) else [request]
    return any(isinstance(r, dict) and r.get("method") in _ASYNC and r.get("method") not in _SYNC
               for r in items)  # fmt: skip


def _batch_lines(batch: list[Any]) -> int:
    """How many lines a batch's tails ask for; an export counts as a whole tail."""
    total = 0
    for member in batch:
        if not isinstance(member, dict):
            continue
        method, params = member.get("method"), member.get("params")
        lines = params.get("lines") if isinstance(params, dict) else None
        if method in TAIL_DEFAULTS:  # what the tail may return: 0 to TAIL_MAX_LINES
            asked = lines if isinstance(lines, int) else TAIL_DEFAULTS[method]
            total += min(max(asked, 0), TAIL_MAX_LINES)
        elif method == "session.export":
            total += TAIL_MAX_LINES
    return total


class _Prepared:
    """A line parsed once: what jsonrpcserver gets, and the errors of what is no request.

    Whatever is not a request is answered here (jsonrpcserver would drop its id):
    with its own id where one can be read, in a batch member by member.
    """

    def __init__(self, line: str) -> None:
        parsed = _parse(line)
        self.errors: list[dict[str, Any]] = []
        self.refusal: dict[str, Any] | None = None
        self.raw_ids = False
        if isinstance(parsed, list) and len(parsed) > BATCH_MAX:
            # Refused whole, before any member runs: its replies alone could take gigabytes.
            self.refusal = invalid(
                f"batch of {len(parsed)} requests: at most {BATCH_MAX} in one batch",
                f"send batches of {BATCH_MAX} requests or fewer",
            )
            parsed = []
        elif isinstance(parsed, list) and (weight := _batch_lines(parsed)) > BATCH_LINES_MAX:
            # The limits multiply: 1,000 tails of 10,000 lines would be ten million lines.
            self.refusal = invalid(
                f"batch asks for {weight} lines of tails and exports: at most "
                f"{BATCH_LINES_MAX} in one batch",
                "send large tails and exports one request at a time",
            )
            parsed = []
        elif not isinstance(parsed, _ParseFailure):
            parsed, self.raw_ids = with_raw_ids(parsed, line)
            parsed = self._sort(parsed)
        self.parsed = parsed
        self.loads: Callable[[str], Any] = (
            parsed if isinstance(parsed, _ParseFailure) else lambda _line: parsed
        )

    def _sort(self, parsed: Any) -> Any:
        """The requests to dispatch; the errors of the rest noted."""
        if parsed == []:
            self.refusal = invalid("an empty batch", f"a batch holds 1 to {BATCH_MAX} requests")
        elif isinstance(parsed, list):
            # JSON-RPC 2.0 §6: an invalid member gets its own error; the others still run.
            self.errors = [not_a_request(r) for r in parsed if not valid_one(r)]
            return [r for r in parsed if valid_one(r)]
        elif not valid_one(parsed):
            self.refusal = not_a_request(parsed)
        else:
            return parsed
        return []

    @property
    def waits(self) -> bool:
        return not isinstance(self.parsed, _ParseFailure) and _needs_waiting(self.parsed)

    @property
    def all_invalid(self) -> bool:
        return (bool(self.errors) or self.refusal is not None) and self.parsed == []

    def reply(self, response: Any) -> str:
        if self.refusal is not None:
            return dumps(self.refusal, self.raw_ids)
        if self.errors:
            response = [*(response or []), *self.errors]
        return "" if response is None else dumps(response, self.raw_ids)


def answer_now(line: str, ctx: Ctx) -> str | None:
    """The reply, if every method in the request answers at once; None otherwise."""
    request = _Prepared(line)
    if request.waits:
        return None
    if request.all_invalid:
        return request.reply(None)
    response = sync_dispatch(
        line, _SYNC, context=ctx, deserializer=request.loads, validator=_valid_request,
        post_process=_serializable,
    )  # fmt: skip
    return request.reply(response)


async def answer(line: str, ctx: Ctx) -> str:
    """The reply to any request, waiting as long as its methods need."""
    request = _Prepared(line)
    if request.all_invalid:
        return request.reply(None)
    response = await async_dispatch(
        line, _ASYNC, context=ctx, deserializer=request.loads, validator=_valid_request,
        post_process=_serializable,
    )  # fmt: skip
    return request.reply(response)
