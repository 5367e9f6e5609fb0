"""The shapes of the results on the wire, as JSON Schema (draft 7).

docs/wire.md says the same in prose. Each method of the table in methods.py
names its result here; `methods.document()` renders that table as OpenRPC
1.2.6 for rpc.discover, with `SCHEMAS` as its `components.schemas` and the
errors as `components.errors`, so a generated client gets one type per shape
(session, agent, event, health…) and each method's errors by name. Objects
are open: a later sessiond may add members, never drop or retype one. The
states and the session settings come from their own tables, so a new state
or key cannot be forgotten here; health's statuses are listed here, and a
test asks health() of every state. The tests hold every real reply of the
daemon against the schema of its method, with every object closed: a member
added to the wire but not here fails them.
"""

from __future__ import annotations

from typing import Any

from sessiond.core.agent import AgentState
from sessiond.core.session import State
from sessiond.core.settings import SESSION_KEYS, RestartPolicy

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time",
                "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"}  # fmt: skip
STRS: Schema = {"type": "array", "items": STR}
COUNTERS: Schema = {"type": "object", "additionalProperties": NUM}
EMPTY: Schema = {"type": "object", "properties": {}, "additionalProperties": False}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def null_or(schema: Schema) -> Schema:
    if "type" not in schema or "enum" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(
    required: dict[str, Schema], optional: dict[str, Schema] | None = None, description: str = ""
) -> Schema:
    properties = {**required, **(optional or {})}
    found: Schema = {"type": "object", "properties": properties, "required": list(required)}
    return {**found, "description": description} if description else found


def enum(values: list[str]) -> Schema:
    return {"type": "string", "enum": values}


def _setting(key: str) -> Schema:
    setting = SESSION_KEYS[key]
    if setting.duration:
        kind = NUM
    elif isinstance(setting.default, int):
        kind = INT
    else:
        kind = STR
    found = {**kind, "description": setting.help}
    return null_or(found) if setting.default is None else found


LOG_ENTRY = obj({"time": null_or(TIME), "agent": STR, "stream": enum(["out", "err"]),
                 "line": STR})  # fmt: skip
PERSON = {"uid": INT, "user": STR, "pid": null_or(INT), "tty": null_or(STR)}
DAEMON = {"version": STR, "pid": INT, "uptime": NUM, "mode": enum(["system", "user"]),
          "socket": STR, "state_dir": STR}  # fmt: skip
CLUSTER = obj(
    {"backend": enum(["local", "etcd"]), "name": STR, "host": STR, "reachable": BOOL},
    description="whose lock this daemon shares (SPEC §10)",
)
HEALTH_STATUSES = ["healthy", "idle", "error", "not_found", "paused", "suspended",
                   "disconnected", "stopping", "closed", "expired", "failed"]  # fmt: skip

SCHEMAS: dict[str, Schema] = {
    "person": obj(PERSON),
    "participant": obj({**PERSON, "joined_at": TIME}),
    "lastError": obj({"agent": null_or(STR), "text": STR, "at": TIME},
                     description="the session's last error (SPEC §2.3)"),
    "settings": obj({key: _setting(key) for key in SESSION_KEYS}),
    "agent": obj({
        "name": STR, "session": STR, "state": enum([s.value for s in AgentState]),
        "pid": null_or(INT), "started_at": null_or(TIME),
        "uptime": null_or({**NUM, "description": "seconds; null when not running"}),
        "restart_in": null_or({**NUM, "description": "in backoff: seconds to the next start"}),
        "restarts": {**INT, "description": "automatic restarts in this session; never falls"},
        "exit_code": null_or({**INT, "description": ">= 0 a status, -N killed by signal N"}),
        "cpu_percent": null_or({**NUM, "description": "of one CPU, since the previous sample"}),
        "rss": null_or({**INT, "description": "resident memory, bytes"}),
        "labels": STRS, "command": STRS, "uid": INT,
        "restart": enum([p.value for p in RestartPolicy]),
    }, {
        "exit": null_or({**STR, "description": "exit_code in words"}),
        "cpu_seconds": null_or({**NUM, "description": "CPU time of all its runs; never falls"}),
    }),
    "session": obj({
        "name": STR, "id": STR, "state": enum([s.value for s in State]), "owner": ref("person"),
        "template": null_or(STR), "parent": null_or(STR), "created_at": TIME,
        "started_at": null_or(TIME), "last_activity": TIME, "expires_at": null_or(TIME),
        "idle_at": null_or(TIME), "closed_at": null_or(TIME), "close_reason": null_or(STR),
        "pause_reason": null_or(STR), "participants": array(ref("participant")),
        "agents": array(ref("agent")),
        "errors": obj({"count": INT, "threshold": INT, "window": NUM,
                       "last": null_or(ref("lastError"))}),
        "metrics": COUNTERS, "settings": ref("settings"),
        "host": {**STR, "description": "where it runs (SPEC §10)"},
        "fence": {**INT, "description": "larger than every earlier session's of the same lock"},
    }),
    "health": obj({"status": enum(HEALTH_STATUSES), "healthy": BOOL, "message": STR,
                   "recovery": STRS}),
    "event": obj({"seq": INT, "time": TIME, "session": null_or(STR),
                  "session_id": null_or(STR), "kind": STR, "message": STR,
                  "data": {"type": "object"}}),
    "daemon": obj(DAEMON),
    "status": obj({
        "daemon": obj({**DAEMON, "templates": STRS, "cluster": CLUSTER}),
        "session": null_or(ref("session")),
        "queue": array(obj({"name": STR, "user": STR, "uid": INT})),
        "orphans": array(obj({"pid": INT, "agent": null_or(STR), "session_id": null_or(STR)})),
    }),
    "export": obj({
        "session": ref("session"), "events": array(ref("event")), "metrics": COUNTERS,
        "checkpoints": array(obj({"agent": STR, "seq": INT, "time": TIME, "data": {},
                                  "uid": null_or(INT)})),
    }),
    "cleanup": obj({"stopped": null_or(ref("session")), "orphans_killed": INT}),
    "error": obj({"code": INT, "message": STR,
                  "data": obj({"name": STR, "message": STR, "hint": STR})},
                 description="a JSON-RPC error object, as a call on a group gives it per agent"),
    "outcome": {**obj({"name": STR}, {"agent": ref("agent"), "error": ref("error")},
                      description="one agent's part in a call on a group: the agent, or why not"),
                "oneOf": [{"required": ["agent"]}, {"required": ["error"]}]},
    "subscribed": obj({"topics": STRS}),
    "checkpointed": obj({"seq": INT}),
    "logs": obj({"lines": STRS, "entries": {"type": "array", "items": LOG_ENTRY}},
                {"agent": STR}, "the lines, and each with its agent, when it came and its stream"),
    "metrics": obj({
        "version": STR, "sessions": {"type": "object", "additionalProperties": INT},
        "session": null_or(obj({"name": STR, "id": STR, "state": enum([s.value for s in State])})),
        "errors": INT, "restarts": INT, "counters": COUNTERS,
        "agents": array(obj({
            "name": STR, "state": enum([s.value for s in AgentState]), "pid": null_or(INT),
            "cpu_percent": null_or(NUM), "cpu_seconds": null_or(NUM), "rss": null_or(INT),
            "restarts": INT, "labels": STRS})),
        "prometheus": {**STR, "description": "the same, as Prometheus text exposition 0.0.4"},
    }),
    "openrpc": obj({"openrpc": STR, "info": obj({"title": STR, "version": STR}),
                    "methods": array({"type": "object"})}, {"components": {"type": "object"}},
                   description="an OpenRPC 1.2.6 document: this one"),
}  # fmt: skip

# Results, by what the method table says each method returns.
SESSION, AGENT, AGENTS = ref("session"), ref("agent"), array(ref("agent"))
# agent.start, .stop, .restart, .kill: one agent by `name`, or a group's outcomes in order
AGENT_OR_OUTCOMES: Schema = {"anyOf": [AGENT, array(ref("outcome"))]}
