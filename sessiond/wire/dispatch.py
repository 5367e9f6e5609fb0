"""The dispatch: a request line in, its reply line out, through the method table.

Each line is parsed once (`_Prepared`): what is no request is answered here
with its own id where one can be read, a batch member by member, and a
batch over its bounds is refused whole before any member runs. The rest goes
to jsonrpcserver with the table's handlers wrapped (`_sync`, `_async`): each
call's params are checked against the table (types, storable values), then
the caller's role against the live session, before its handler runs; a
DomainError becomes its JSON-RPC error. Requests whose methods all answer at
once take `answer_now`, with no task and no trip round the event loop.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, cast

from sessiond.daemon.access import Role, role_of
from sessiond.daemon.cluster import remote_error
from sessiond.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    DomainError,
    InvalidParams,
    PermissionDenied,
    RemoteSession,
)
from sessiond.wire.context import Ctx
from sessiond.wire.jsonrpc import (
    REQUEST_HINT,
    dumps,
    invalid,
    not_a_request,
    valid_one,
    with_raw_ids,
)
from sessiond.wire.lean import jsonrpcserver_lean
from sessiond.wire.limits import BATCH_LINES_MAX, BATCH_MAX, TAIL_MAX_LINES
from sessiond.wire.methods import METHODS, Method, check_params

with jsonrpcserver_lean():  # jsonrpcserver, finding the stand-ins (lean.py)
    from jsonrpcserver import JsonRpcError, Success
    from jsonrpcserver import async_dispatch_to_response as async_dispatch
    from jsonrpcserver import dispatch_to_response as sync_dispatch
    from jsonrpcserver.response import to_serializable_one
    from jsonrpcserver.result import Result

TAIL_DEFAULTS = {"events.tail": 20, "logs.tail": 50}  # the handlers' default `lines`


def _check_role(method: Method, ctx: Ctx) -> None:
    live = ctx.app.live()
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
    # Before any other error (SPEC §10): elsewhere, nothing else about the call matters.
    if RemoteSession in method.errors and (remote := ctx.app.remote()) is not None:
        raise remote_error(remote)
    if args:
        raise InvalidParams(
            "params must be an object (by name), not a list", 'send {"params": {"name": ...}}'
        )
    for name, value in params.items():
        _check_storable(name, value)
    check_params(method, params)
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


class _TakesAnything(inspect.Signature):
    """The signature of call(ctx, /, *args, **params), which binds whatever jsonrpcserver
    passes (it always passes the context): its bind() on every request cost ~4 µs of a
    ping's ~25 for an answer known in advance. check_params does the real checking."""

    __slots__ = ()

    def bind(self, /, *args: Any, **kwargs: Any) -> Any:
        return None


def _presigned(call: Callable[..., Any]) -> Callable[..., Any]:
    # jsonrpcserver checks every call against inspect.signature(): given once, not made
    # again per request (~10 µs), and one that never refuses.
    found = inspect.signature(call)
    call.__signature__ = _TakesAnything(list(found.parameters.values()))  # type: ignore[attr-defined]
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
