"""JSON-RPC 2.0 requests, without jsonrpcserver's help: what is one, and its reply's id.

jsonrpcserver answers what is not a request with `id: null`, and Python's
json reads an id of 1e3 as 1000.0 (and 1e400 as inf, which it cannot even
write back). SPEC §6: ids are strings or any JSON numbers, echoed as sent,
and an invalid request whose id can be read gets its error with that id. So
a line is sorted here first (rpc._Prepared): a request is `valid_one`; what
is not gets `not_a_request`, naming the member at fault, with `readable_id`;
and a fractional or exponent id is kept as its text (`RawId`) until `dumps`
writes the reply line.
"""

from __future__ import annotations

import json
from typing import Any

from sessiond.core.raw import Raw
from sessiond.core.records import random_hex
from sessiond.errors import INVALID_REQUEST

# Where a Raw goes while the rest of a reply is encoded: no client can write it, as the
# nonce is made when the daemon starts and \x00 is written \u0000.
_MARK = f"\x00raw{random_hex(8)}:"

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),),
}  # fmt: skip


def json_type(value: Any) -> str:
    for name, types in JSON_TYPES.items():
        if isinstance(value, types) and not (name != "boolean" and isinstance(value, bool)):
            return name
    return type(value).__name__


class RawId:
    """A fractional or exponent id (1.0, 1e3, 1e400), kept as the client wrote it.

    Python's json would read 1e3 as 1000.0 and write it back so, and 1e400 as
    inf, which it cannot write as JSON at all: the reply carries the text sent.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def is_id(ident: Any) -> bool:
    """A JSON-RPC 2.0 id: a string, any number, or null (absent: a notification)."""
    if isinstance(ident, bool):
        return False
    return ident is None or isinstance(ident, str | int | float | RawId)


def valid_one(r: Any) -> bool:
    return (
        isinstance(r, dict) and r.get("jsonrpc") == "2.0" and isinstance(r.get("method"), str)
        and isinstance(r.get("params", {}), dict | list) and is_id(r.get("id"))
    )  # fmt: skip


def problem(r: Any) -> str:
    """What makes `r` (not valid_one) something other than a request."""
    if not isinstance(r, dict):
        return f"a request is a JSON object, not {json_type(r)}"
    checks = (
        ("jsonrpc", r.get("jsonrpc") == "2.0", '"2.0"'),
        ("method", isinstance(r.get("method"), str), "a string"),
        ("params", isinstance(r.get("params", {}), dict | list), "an object or an array"),
        ("id", is_id(r.get("id")), "a string, a number or null"),
    )
    key, _, rule = next(check for check in checks if not check[1])
    given = f"got {_shown(r[key], 40)}" if key in r else "it is missing"
    return f"member '{key}' must be {rule} ({given})"


def _shown(value: Any, width: int) -> str:
    return json.dumps(value, default=lambda raw: float(raw.text))[:width]


def readable_id(r: Any) -> Any:
    """The id an invalid request's error goes back with: its own, if it is an id."""
    ident = r.get("id") if isinstance(r, dict) else None
    return ident if is_id(ident) else None


def with_raw_ids(parsed: Any, line: str) -> tuple[Any, bool]:
    """`parsed` with each float id replaced by its RawId; and whether there was any."""
    items = parsed if isinstance(parsed, list) else [parsed]
    floats = [i for i, r in enumerate(items) if isinstance(r, dict) and type(r.get("id")) is float]
    if not floats:
        return parsed, False
    raw = json.loads(line, parse_float=RawId)  # read again, rarely: only for such ids
    raw_items = raw if isinstance(raw, list) else [raw]
    for i in floats:
        items[i]["id"] = raw_items[i]["id"]
    return parsed, True


def dumps(response: Any, raw_ids: bool) -> str:
    """One reply line; with raw ids, each response's id is written as it was sent."""
    if not raw_ids:
        return encode(response)
    if isinstance(response, list):
        return "[" + ",".join(dumps(r, raw_ids) for r in response) + "]"
    ident = response.get("id")
    if not isinstance(ident, RawId):
        return encode(response)
    rest = encode({k: v for k, v in response.items() if k != "id"})
    return f'{rest[:-1]},"id":{ident.text}}}'


_RAWS: list[Raw] = []  # those of the reply being encoded: encode() runs on the loop alone


def _mark(found: object) -> str:
    if not isinstance(found, Raw):
        raise TypeError(f"Object of type {type(found).__name__} is not JSON serializable")
    _RAWS.append(found)
    return f"{_MARK}{len(_RAWS) - 1}"


# Made once: json.dumps with options makes an encoder a call (1.5 of a ping's µs).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_mark)


def encode(value: Any) -> str:
    """Compact JSON, with the text of each Raw in it put in as it is."""
    try:
        text = _ENCODER.encode(value)
        for n, raw in enumerate(_RAWS):
            text = text.replace(json.dumps(f"{_MARK}{n}"), raw.text, 1)
        return text
    finally:
        _RAWS.clear()


def invalid(text: str, hint: str, ident: Any = None) -> dict[str, Any]:
    error = {"code": INVALID_REQUEST, "message": "Invalid request",
             "data": {"message": text, "hint": hint}}  # fmt: skip
    return {"jsonrpc": "2.0", "error": error, "id": ident}


REQUEST_HINT = 'send {"jsonrpc": "2.0", "method": "…", "params": {…}, "id": 1}'


def not_a_request(r: Any) -> dict[str, Any]:
    """The error of a line, or a batch member, that is not a request: with its id if readable."""
    return invalid(
        f"not a JSON-RPC 2.0 request: {problem(r)}: {_shown(r, 200)}",
        REQUEST_HINT,
        readable_id(r),
    )
