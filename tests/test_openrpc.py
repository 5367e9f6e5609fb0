"""rpc.discover: an OpenRPC 1.2.6 document whose types match what the daemon sends (issue 10).

No package on PyPI or Debian ships the OpenRPC meta-schema, so the rules of
the OpenRPC 1.2.6 specification that a JSON Schema can state are written out
below (`OPENRPC_1_2_6`), and the rest (unique names, references that resolve,
schemas that are themselves valid draft-7 JSON Schema) are checked by hand.
The part a generated client lives on is the second test: every method is
called on a real daemon, and each result is held against the schema that
method declares, with every object closed (a member sent but not declared
fails), and each domain error against the errors it declares.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from test_agents import SLEEPER, agent, agents_of
from test_errors import token_of

from harness import connect_as, raw_connection, read_line, wait_for
from sessiond.core.health import health
from sessiond.core.records import Person, Session
from sessiond.core.session import State
from sessiond.core.settings import SessionSettings
from sessiond.wire.methods import METHODS

EXTENSIONS = {"^x-": {}}


def _closed(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties,
            "patternProperties": EXTENSIONS, "additionalProperties": False}  # fmt: skip


def _named(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": item}


REFERENCE = {"type": "object", "required": ["$ref"], "additionalProperties": False,
             "properties": {"$ref": {"type": "string"}}}  # fmt: skip
JSON_SCHEMA = {"type": ["object", "boolean"]}  # checked as draft 7 by check_schema below
CONTENT_DESCRIPTOR = _closed(["name", "schema"], {
    "name": {"type": "string", "minLength": 1}, "summary": {"type": "string"},
    "description": {"type": "string"}, "required": {"type": "boolean"},
    "schema": JSON_SCHEMA, "deprecated": {"type": "boolean"},
})  # fmt: skip
ERROR = {"type": "object", "required": ["code", "message"], "additionalProperties": False,
         "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                        "data": {}}}  # fmt: skip


def OR_REF(schema: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 -- reads as the spec's "| Reference"
    return {"oneOf": [schema, REFERENCE]}


# OpenRPC 1.2.6 (spec.open-rpc.org), section by section: the fields each object may have,
# those it must have, and their types; "^x-" extensions allowed wherever the spec allows them.
OPENRPC_1_2_6 = _closed(["openrpc", "info", "methods"], {
    "openrpc": {"type": "string", "pattern": r"^1\.2\.\d+$"},
    "info": _closed(["title", "version"], {
        "title": {"type": "string"}, "description": {"type": "string"},
        "termsOfService": {"type": "string"}, "version": {"type": "string"},
        "contact": {"type": "object"}, "license": {"type": "object"},
    }),
    "servers": {"type": "array", "items": {"type": "object", "required": ["url"]}},
    "methods": {"type": "array", "items": _closed(["name", "params", "result"], {
        "name": {"type": "string", "minLength": 1}, "summary": {"type": "string"},
        "description": {"type": "string"}, "tags": {"type": "array"},
        "externalDocs": {"type": "object"}, "servers": {"type": "array"},
        "paramStructure": {"enum": ["by-name", "by-position", "either"]},
        "params": {"type": "array", "items": OR_REF(CONTENT_DESCRIPTOR)},
        "result": OR_REF(CONTENT_DESCRIPTOR),
        "errors": {"type": "array", "items": OR_REF(ERROR)},
        "links": {"type": "array"}, "examples": {"type": "array"},
        "deprecated": {"type": "boolean"},
    })},
    "components": _closed([], {
        "schemas": _named(JSON_SCHEMA), "contentDescriptors": _named(CONTENT_DESCRIPTOR),
        "errors": _named(ERROR), "links": _named({"type": "object"}),
        "examples": _named({"type": "object"}), "examplePairings": _named({"type": "object"}),
        "tags": _named({"type": "object"}),
    }),
    "externalDocs": {"type": "object"},
})  # fmt: skip


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("$ref"), str):
            yield value["$ref"]
        for item in value.values():
            yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only references inside the document"
    found: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(found, dict) and part in found, f"{ref} does not resolve"
        found = found[part]
    return found


def test_rpc_discover_follows_openrpc_1_2_6_and_declares_results_and_errors(daemon):
    doc = daemon.call("rpc.discover")
    jsonschema.Draft7Validator(OPENRPC_1_2_6).validate(doc)
    names = [m["name"] for m in doc["methods"]]
    assert names == list(METHODS) and len(set(names)) == len(names)
    for method in doc["methods"]:
        params = [p["name"] for p in method["params"]]
        assert len(set(params)) == len(params), method["name"]
        for p in method["params"]:
            jsonschema.Draft7Validator.check_schema(p["schema"])
        result = method["result"]["schema"]
        jsonschema.Draft7Validator.check_schema(result)
        assert result != {}, f"{method['name']} declares no result type"
        declared = {pointer(doc, e["$ref"])["code"] for e in method.get("errors", [])}
        assert -32602 in declared, f"{method['name']}: every method may get INVALID_PARAMS"
        needs_role = method["x-role"] in ("participant", "owner")
        assert (-32004 in declared) >= needs_role, f"{method['name']}: PERMISSION_DENIED"
    for ref in set(refs(doc)):
        pointer(doc, ref)  # every $ref resolves inside the document
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft7Validator.check_schema(schema)
    codes = {e["code"] for e in doc["components"]["errors"].values()}
    assert len(codes) == len(doc["components"]["errors"])  # one name per code
    by_name = {m["name"]: m for m in doc["methods"]}
    assert by_name["session.start"]["result"]["schema"] == {"$ref": "#/components/schemas/session"}
    start_errors = {e["$ref"].rsplit("/", 1)[1] for e in by_name["session.start"]["errors"]}
    assert {"SESSION_ACTIVE", "WAIT_TIMEOUT"} <= start_errors
    agent_schema = doc["components"]["schemas"]["agent"]
    assert {"pid", "restarts", "cpu_percent", "rss"} <= set(agent_schema["required"])


# -- every reply of a real daemon against its declared shape --------------------------------


def closed(schema: Any) -> Any:
    """`schema` with every object that lists its properties closed to others."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    found = {k: closed(v) for k, v in schema.items()}
    if "properties" in found and "additionalProperties" not in found:
        found["additionalProperties"] = False
    return found


class Checker:
    """Calls methods on one connection and holds every reply against the document."""

    def __init__(self, sock: socket.socket, doc: dict[str, Any]) -> None:
        self.sock, self.buf = sock, bytearray()
        self.components = closed(doc.get("components", {}))
        self.methods = {m["name"]: m for m in doc["methods"]}
        self.answered: set[str] = set()
        self.refused: dict[str, set[int]] = {}
        self.next_id = 0

    def validate(self, schema: dict[str, Any], value: Any, what: str) -> None:
        whole = {"allOf": [closed(schema)], "components": self.components}
        errors = sorted(jsonschema.Draft7Validator(whole).iter_errors(value), key=str)
        assert not errors, f"{what} does not match its schema: " + "; ".join(
            f"at {list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5]
        )

    def call(self, method: str, **params: Any) -> Any:
        self.next_id += 1
        line = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.sock.sendall(json.dumps(line).encode() + b"\n")
        reply = read_line(self.sock, self.buf)
        assert isinstance(reply, dict) and reply["id"] == self.next_id, reply
        return self.check(method, reply)

    def check(self, method: str, reply: dict[str, Any]) -> Any:
        spec = self.methods[method]
        if "result" in reply:
            self.validate(spec["result"]["schema"], reply["result"], f"the result of {method}")
            self.answered.add(method)
            return reply["result"]
        code = reply["error"]["code"]
        declared = {self.components["errors"][e["$ref"].rsplit("/", 1)[1]]["code"]
                    for e in spec.get("errors", [])}  # fmt: skip
        assert code in declared, f"{method} answered {code}, which it does not declare: {reply}"
        self.refused.setdefault(method, set()).add(code)
        return None


def test_every_reply_of_the_daemon_matches_the_schema_its_method_declares(
    make_daemon, make_shared_daemon
):
    config = agent("w", SLEEPER) + '[templates.t]\nagents = ["w"]\nerror_threshold = 100\n'
    root = os.geteuid() == 0  # then a second uid (65534) joins and leaves
    daemon = make_shared_daemon(config) if root else make_daemon(config)
    doc = daemon.call("rpc.discover")
    c = Checker(raw_connection(daemon.socket), doc)
    c.check("rpc.discover", {"result": doc})
    for method in ("daemon.ping", "session.status", "session.health", "metrics.get",
                   "agent.list", "session.history", "events.tail"):  # fmt: skip
        c.call(method)
    c.call("session.get", name="nope")  # NO_SESSION
    c.call("agent.start", name="w")  # NO_SESSION
    c.call("daemon.ping", colour="red")  # INVALID_PARAMS
    c.call("session.start", name="s1", template="t")
    c.call("session.start", name="other")  # SESSION_ACTIVE
    c.call("session.start", name="other", wait=0.1)  # WAIT_TIMEOUT
    wait_for(lambda: agents_of(daemon)["w"]["state"] == "running", what="w running")
    c.call("session.join", name="s2")  # SESSION_MISMATCH
    c.call("session.join")
    c.call("session.leave")  # INVALID_STATE: the owner cannot leave
    if root:
        other = Checker(connect_as(daemon.socket, 65534, 65534), doc)
        other.call("session.join", tty="pts/9")
        c.call("session.status")  # with a participant
        other.call("session.stop")  # PERMISSION_DENIED
        other.call("session.leave")
        other.call("session.leave")  # INVALID_STATE: not a participant
        assert other.refused["session.stop"] == {-32004}
        c.answered |= other.answered
    c.call("session.touch")
    c.call("session.reconnect")  # INVALID_STATE: not disconnected
    c.call("session.pause", reason="lunch")
    c.call("session.status")
    c.call("session.resume")
    c.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="r", labels=["x"])
    c.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="r")  # INVALID_PARAMS
    c.call("agent.kill", name="r", signal="TERM")
    wait_for(lambda: agents_of(daemon)["r"]["restarts"] == 1, what="r restarted")
    c.call("agent.stop", name="r")
    c.call("agent.kill", name="r")  # INVALID_STATE: no process
    c.call("agent.start", name="r")
    c.call("agent.restart", name="r")
    c.call("agent.start", name="nope")  # AGENT_NOT_FOUND
    # Groups: an outcome per agent, its agent or its error
    assert [len(o) for o in c.call("agent.restart", names="all")] == [2, 2]
    outcomes = c.call("agent.stop", names=["r", "nope"])
    assert ["agent" in outcomes[0], "error" in outcomes[1]] == [True, True]
    assert "error" in c.call("agent.kill", label="x", signal="HUP")[0]  # r is stopped
    c.call("agent.start", label="x")
    c.call("agent.start", label="nope")  # AGENT_NOT_FOUND
    c.call("agent.stop", name="r", names=["r"])  # INVALID_PARAMS
    token = token_of(daemon, "w")
    c.call("agent.report", token=token, metrics={"tokens": 1500, "cost": 0.025}, activity=True)
    c.call("agent.report", token=token, error="disk quota exceeded")
    c.call("agent.report", token="forged")  # BAD_TOKEN
    c.call("agent.checkpoint", token=token, data={"cursor": 42})
    c.call("logs.tail", agent="w", lines=5)
    c.call("logs.tail", agent="nope")  # AGENT_NOT_FOUND
    c.call("events.tail", lines=100)
    c.call("events.tail", session="nope")  # NO_SESSION
    c.call("subscribe", topics=["logs:nope"])  # AGENT_NOT_FOUND
    c.call("session.health", name="s1")
    c.call("session.get", name="s1")
    c.call("agent.list")
    c.call("metrics.get")
    c.call("session.status")
    c.call("session.export", name="s1")
    events = raw_connection(daemon.socket)
    ebuf = bytearray()
    events.sendall(
        b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"topics":["events"]}}\n'
    )
    c.check("subscribe", read_line(events, ebuf))
    c.call("session.stop", reason="done")
    notice = read_line(events, ebuf)  # session.stopping, published to subscribers
    assert notice["method"] == "event"
    c.validate({"$ref": "#/components/schemas/event"}, notice["params"], "an event notification")
    c.call("session.stop")  # NO_SESSION
    c.call("session.get", name="s1")  # closed: its agents come from the store
    c.call("session.history", limit=5)
    c.call("session.start", name="s3", error_threshold=1, **{"from": "s1"})
    c.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="r")
    c.call("agent.report", token=token_of(daemon, "r"), error="one error disconnects s3")
    # Not while the disconnect is still stopping r: a reconnect then is an internal error
    # (team.restart_all meets AgentRefused), a bug of its own.
    wait_for(lambda: agents_of(daemon)["r"]["state"] == "stopped", what="r stopped")
    c.call("session.reconnect")
    c.call("session.cleanup")
    c.call("session.cleanup", orphans_only=True)
    expected = set(METHODS) - (set() if root else {"session.leave"})
    assert c.answered == expected, f"never answered: {expected - c.answered}"
    assert c.refused["session.start"] == {-32001, -32008}
    assert c.refused["agent.report"] == {-32009}
    assert c.refused["agent.kill"] == {-32005}


@pytest.mark.parametrize("state", [*State, None])
def test_the_health_of_a_session_in_any_state_matches_its_schema(state):
    from sessiond.wire.schemas import SCHEMAS  # noqa: PLC0415 -- new with the schemas: fails alone

    now = time.time()
    session = None if state is None else Session(
        "id", "s", state, Person(0, "root", None, None), SessionSettings(),
        created_at=now - 3600, last_activity=now - 3600, started_at=now - 3600, host="h",
        fence=1,
    )  # fmt: skip
    for errors in (0, 3):
        jsonschema.Draft7Validator(closed(SCHEMAS["health"])).validate(
            health(session, "s", now, errors)
        )
