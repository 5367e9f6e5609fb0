"""Fuzzing: the config and param checks in-process, and the live wire.

The Hypothesis properties run the real `load_config`, `parse_duration`,
`session_overrides` and `rpc._check_params` on random input. The wire fuzz
drives a real daemon subprocess over several connections with random bytes,
non-requests, requests, batches, notifications and oversized lines, from a
fixed `random.Random(seed)` (set FUZZ_SEED to replay another), and checks
every reply, the daemon's fds and RSS, and that no event is lost.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import string
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import DaemonProcess, raw_connection, wait_for
from sessiond.config import load_config
from sessiond.core.settings import (
    AGENT_KEYS,
    DAEMON_KEYS,
    ENV_KEYS,
    SESSION_KEYS,
    TEMPLATE_KEYS,
    SessionSettings,
    session_overrides,
)
from sessiond.core.units import parse_duration
from sessiond.errors import ConfigError, InvalidParams
from sessiond.wire.methods import METHODS
from sessiond.wire.methods import check_params as _check_params

SEED = int(os.environ.get("FUZZ_SEED", "20261122"))
LIMIT = 65536
CONFIG = f"[daemon]\nmax_request_bytes = {LIMIT}\n"
FUZZ = settings(max_examples=150, deadline=None)

# --- in-process properties: config --------------------------------------------

INTERESTING_TEXT = [
    "", " ", "0", "-1", "90s", "5m", "1h30m", "1d", "1.5s", "0s", "3651d", "1e3", "16:00",
    "7:05", "24:00", "stop", "keep", "on-failure", "always", "never", "sessiond", "a b",
    "/tmp", "relative", "x" * 70, "nightly", "SESSIOND_X", "A=B", "\0", "\u00e9t\u00e9",
]  # fmt: skip
NAMES = st.sampled_from(["scanner", "web", "a", "x-1", "", "bad name", ".dot", "é", "9" * 65])
JUNK_KEYS = st.sampled_from(["", "colour", "ctx", " ", "daemon", "é", "a.b"]) | st.text(max_size=8)
SCALARS = (
    st.sampled_from(INTERESTING_TEXT)
    | st.text(max_size=20)
    | st.integers(-(2**63), 2**63 - 1)
    | st.sampled_from([0, 1, -1, 1023, 1024, 65536, 64 << 20, (64 << 20) + 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(JUNK_KEYS | NAMES, inner, max_size=3)
    ),
    max_leaves=8,
)


def section(keys: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(sorted(keys)) | JUNK_KEYS, TOML_VALUES, max_size=6)


AGENT_TABLE = st.dictionaries(
    st.sampled_from(sorted(AGENT_KEYS)) | JUNK_KEYS,
    TOML_VALUES | st.lists(st.sampled_from(["/bin/true", "", "-m", "\0"]), max_size=3),
    max_size=6,
)
TEMPLATE_TABLE = st.dictionaries(
    st.sampled_from(sorted(TEMPLATE_KEYS)) | JUNK_KEYS,
    TOML_VALUES | st.lists(NAMES, max_size=3),
    max_size=6,
)
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "daemon": section(DAEMON_KEYS) | TOML_VALUES,
        "session": section(SESSION_KEYS) | TOML_VALUES,
        "agents": st.dictionaries(NAMES, AGENT_TABLE | TOML_VALUES, max_size=3),
        "templates": st.dictionaries(NAMES, TEMPLATE_TABLE | TOML_VALUES, max_size=3),
    },
)
ENVIRON = st.dictionaries(
    st.sampled_from([*sorted(k for k in ENV_KEYS if k), "SESSIOND_BOGUS", "HOME"]),
    st.sampled_from(INTERESTING_TEXT) | st.text(max_size=10).filter(lambda s: "\0" not in s),
    max_size=4,
)


def toml_key(key: str) -> str:
    return toml_string(key)


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if " " <= ch <= "~" and ch not in '"\\':
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}")
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    """`doc` as TOML: scalars as `key = value`, tables as [headers] (dotted for nested ones)."""
    lines: list[str] = []

    def emit(path: list[str], table: dict[str, Any]) -> None:
        if path:
            lines.append("[" + ".".join(toml_key(p) for p in path) + "]")
        for key, value in table.items():
            if not isinstance(value, dict):
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                emit([*path, key], value)

    emit([], doc)
    return "\n".join(lines) + "\n"


def assert_only_config_errors(content: bytes, environ: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="sd-fuzz-") as tmp:
        path = Path(tmp) / "sessiond.toml"
        path.write_bytes(content)
        try:
            load_config(path, environ)
        except ConfigError as exc:
            assert exc.problems, "a ConfigError with no problems"
            for p in exc.problems:
                assert isinstance(p.file, str) and p.file, f"problem without a file: {p!r}"
                assert isinstance(p.key, str) and p.key, f"problem without a key: {p!r}"
                assert isinstance(p.rule, str) and p.rule, f"problem without a rule: {p!r}"
            assert str(exc)


@FUZZ
@given(DOCUMENTS, st.dictionaries(JUNK_KEYS, section(SESSION_KEYS), max_size=2), ENVIRON)
def test_load_config_raises_only_config_errors_naming_file_key_and_rule(doc, extra, environ):
    doc = {**extra, **doc}
    assert_only_config_errors(toml_document(doc).encode(), environ)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), ENVIRON)
def test_load_config_on_arbitrary_bytes_raises_only_config_errors(content, environ):
    assert_only_config_errors(content, environ)


@FUZZ
@given(
    st.text(max_size=40)
    | st.from_regex(r"\s*[0-9.]{0,400}\s*[dhms]?\s*[0-9.]{0,5}[dhms]?\s*", fullmatch=True)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
)
def test_parse_duration_raises_only_value_error(value):
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert isinstance(seconds, float) and 0 <= seconds < float("inf")


SESSION_OVERRIDES = st.dictionaries(
    st.sampled_from(sorted(SESSION_KEYS)) | JUNK_KEYS,
    TOML_VALUES | st.none() | st.integers(),
    max_size=6,
)


@FUZZ
@given(SESSION_OVERRIDES)
def test_session_overrides_raises_only_config_error(overrides):
    try:
        settings_ = session_overrides(SessionSettings(), overrides, "session.start")
    except ConfigError as exc:
        assert exc.problems
        assert all(
            p.file == "session.start" and (p.key in overrides or p.key == '""') and p.rule
            for p in exc.problems
        )
        return
    assert isinstance(settings_, SessionSettings)


# --- in-process properties: params ---------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def method_and_params(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(METHODS)))
    known = [p.name for p in METHODS[name].params]
    keys = st.sampled_from(known) | JUNK_KEYS if known else JUNK_KEYS
    return name, draw(st.dictionaries(keys, JSON_VALUES, max_size=5))


@settings(max_examples=400, deadline=None)
@given(method_and_params())
def test_check_params_raises_nothing_or_invalid_params_naming_a_param(case):
    name, params = case
    method = METHODS[name]
    try:
        _check_params(method, params)
    except InvalidParams as exc:
        candidates = {*params, *(p.name for p in method.params)}
        assert any(f"'{c}'" in exc.message for c in candidates), exc.message
        assert exc.code == -32602 and exc.hint


# --- the live wire ---------------------------------------------------------------

NOID = object()  # a request sent without an id: a notification
STATE_CHANGING = {
    "session.start", "session.join", "session.leave", "session.pause", "session.resume",
    "session.reconnect", "session.touch",
}  # fmt: skip
EXCLUDED = {"session.stop", "session.cleanup", "subscribe", "agent.run", "agent.start",
            "agent.stop", "agent.restart", "agent.kill"}  # fmt: skip
REQUESTABLE = sorted(set(METHODS) - EXCLUDED)
READ_ONLY = sorted(set(REQUESTABLE) - STATE_CHANGING)  # the only ones sent as notifications
JUNK_METHODS = [
    "", "nope", "session.explode", "rpc.", "session.start ", "SESSION.STATUS", "__init__",
    "daemon.ping\u0000", "agent", ".", "session..get", "\u00e9v\u00e9nement", "x" * 300,
]  # fmt: skip


@dataclass
class Line:
    data: bytes
    kind: str  # raw, nonrequest, request, notification, batch, empty-batch, oversized
    rid: Any = NOID  # the request's id, for kind "request"
    well_formed: bool = True  # a JSON-RPC 2.0 request object (or batch of them)
    methods: dict[Any, str] = field(default_factory=dict)  # id → method
    batch_ids: list[Any] = field(default_factory=list)

    def __str__(self) -> str:
        shown = self.data[:300]
        more = f"... ({len(self.data)} bytes)" if len(self.data) > 300 else ""
        return f"{self.kind} line {shown!r}{more}"


def tail_lines(line: Line) -> int:
    """The lines a batch's tails may return in all, an export counting 10,000 (SPEC §6)."""
    total = 0
    for member in json.loads(line.data):
        params = member.get("params") if isinstance(member, dict) else None
        method = member.get("method") if isinstance(member, dict) else None
        lines = params.get("lines") if isinstance(params, dict) else None
        if method in ("events.tail", "logs.tail"):
            default = 20 if method == "events.tail" else 50
            total += min(max(lines if isinstance(lines, int) else default, 0), 10_000)
        elif method == "session.export":
            total += 10_000
    return total


def readable_id(line: Line) -> Any:
    """The id an invalid request's error must carry (SPEC §6): its own if it can be read."""
    try:
        obj = json.loads(line.data)
    except ValueError:
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, str | int | float) and not isinstance(rid, bool) else None


class Maker:
    """Random lines from one random.Random: same seed, same lines."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_id = 0

    def new_id(self) -> tuple[Any, bool]:
        r = self.rng.random()
        self.next_id += 1
        if r < 0.7:
            return self.next_id, True
        if r < 0.85:
            return f"id-{self.next_id}-\u00e9", True
        if r < 0.9:
            return None, True
        if r < 0.95:  # any JSON number is an id (SPEC §6), echoed as sent
            return self.rng.choice([1.5, -0.5, 1e300, 2.0]), True
        return self.rng.choice([[1], {"a": 1}, True]), False

    # -- values ---------------------------------------------------------------

    def text(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            return rng.choice(INTERESTING_TEXT)
        if r < 0.4:
            return rng.choice(
                [
                    "2026-01-01T00:00:00Z",
                    "0001-01-01T00:00:00Z",
                    "9999-12-31T23:59:59Z",
                    "2026-13-40T25:61:61Z",
                    "2026-01-01T00:00:00+99:00",
                    "2026",
                ]
            )
        if r < 0.45:
            return rng.choice(string.ascii_letters) * rng.randint(1000, 10_000)  # huge
        alphabet = string.printable + "\u00e9\u4e2d\U0001f600\u0000\u2028\ufeff"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))

    def number(self) -> Any:
        return self.rng.choice(
            [
                0,
                1,
                -1,
                20,
                100_000,
                100_001,
                2**31,
                2**63,
                -(2**70),
                10**400,
                0.5,
                -0.0,
                1e308,
                float("inf"),
                float("nan"),
            ]
        )

    def nested(self) -> Any:
        value: Any = self.rng.choice([1, "x", None, [], {}])
        for _ in range(self.rng.randint(10, 200)):
            value = [value] if self.rng.random() < 0.5 else {"a": value}
        return value

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.1:
            return None
        if r < 0.2:
            return rng.random() < 0.5
        if r < 0.35:
            return self.number()
        if r < 0.65 or depth > 2:
            return self.text()
        if r < 0.75:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        if r < 0.85:
            return {self.text()[:20]: self.value(depth + 1) for _ in range(rng.randint(0, 4))}
        return self.nested()

    def typed(self, types: tuple[str, ...]) -> Any:
        kind = self.rng.choice(types)
        return {
            "string": self.text,
            "integer": lambda: self.rng.choice([1, 5, 20, 1000, 100_000]),
            "number": lambda: self.rng.choice([1, 60, 0.5, "90s", 2**40]),
            "boolean": lambda: self.rng.random() < 0.5,
            "null": lambda: None,
            "array": lambda: [self.text() for _ in range(self.rng.randint(0, 3))],
            "object": lambda: {"K": self.text()},
        }[kind]()

    def params(self, method: str) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.05:
            return NOID  # no params at all
        if r < 0.1:
            return [self.value() for _ in range(rng.randint(0, 3))]
        known = METHODS[method].params if method in METHODS else ()
        params: dict[str, Any] = {}
        for p in known:
            if rng.random() < 0.5:
                params[p.name] = self.typed(p.types) if rng.random() < 0.6 else self.value()
        if rng.random() < 0.15:
            junk = rng.choice(["colour", "", "ctx", "params", "x" * 500, self.text()[:40]])
            params[junk] = self.value()
        params.pop("wait", None)  # a waiting start would block its connection
        return params

    # -- requests -------------------------------------------------------------

    def method(self, notification: bool) -> str:
        rng = self.rng
        if rng.random() < 0.12:
            return rng.choice(JUNK_METHODS)
        return rng.choice(READ_ONLY if notification else REQUESTABLE)

    def request(self, notification: bool) -> tuple[dict[str, Any], Any, bool]:
        method = self.method(notification)
        obj: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        params = self.params(method)
        if params is not NOID:
            obj["params"] = params
        rid, valid = (NOID, True) if notification else self.new_id()
        if rid is not NOID:
            obj["id"] = rid
        return obj, rid, valid

    def nonrequest(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                self.value,
                lambda: {"jsonrpc": "1.0", "id": 1, "method": "daemon.ping"},
                lambda: {"jsonrpc": "2.0", "id": 1},
                lambda: {"jsonrpc": "2.0", "id": 1, "method": 5},
                lambda: {"jsonrpc": "2.0", "id": 1, "method": "daemon.ping", "params": "x"},
                lambda: {"jsonrpc": "2.0", "id": 1, "method": "daemon.ping", "params": None},
                lambda: {"id": 1, "method": "daemon.ping"},
                lambda: {"jsonrpc": 2.0, "method": "daemon.ping"},
                lambda: {self.text()[:10]: self.value()},
                lambda: [1, 2, 3],
                lambda: [{"jsonrpc": "2.0"}],
            ]
        )()

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=self.rng.random() < 0.5).encode()

    def make(self) -> Line:
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            alphabet = rng.choice(
                [bytes(range(256)).replace(b"\n", b""), string.printable.encode()]
            )
            junk = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
            return Line(junk.replace(b"\n", b"") + b"\n", "raw")
        if r < 0.2:  # a request cut short
            whole = self.dumps(self.request(False)[0])
            return Line(whole[: rng.randint(1, len(whole) - 1)] + b"\n", "raw")
        if r < 0.3:
            value = self.nonrequest()
            if (
                isinstance(value, dict)
                and value.get("jsonrpc") == "2.0"
                and isinstance(value.get("method"), str)
            ):  # a junk text key could not make it a request, but be sure
                value = [value, 1]
            return Line(self.dumps(value) + b"\n", "nonrequest", well_formed=False)
        if r < 0.31:
            return Line(b"[]\n", "empty-batch", well_formed=False)
        if r < 0.315:
            pad = b"a" * (LIMIT + rng.randint(1, 10_000))
            data = rng.choice(
                [
                    b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":{"x":"'
                    + pad
                    + b'"}}',
                    pad,
                ]
            )
            return Line(data + b"\n", "oversized")
        if r < 0.4:
            obj, _, _ = self.request(True)
            return self.bounded(Line(self.dumps(obj) + b"\n", "notification", methods={}))
        if r < 0.5:
            return self.bounded(self.batch())
        obj, rid, valid = self.request(False)
        well_formed = valid and isinstance(obj.get("params", {}), dict | list)
        line = Line(
            self.dumps(obj) + b"\n",
            "request",
            rid,
            well_formed=well_formed,
            methods={_key(rid): obj["method"]} if valid or rid is True else {},
        )
        return self.bounded(line)

    def batch(self) -> Line:
        rng = self.rng
        items: list[Any] = []
        methods: dict[Any, str] = {}
        ids: list[Any] = []
        for _ in range(rng.randint(1, 6)):
            notification = rng.random() < 0.3
            obj, _, _ = self.request(notification)
            if not notification:
                self.next_id += 1
                obj["id"] = self.next_id
                methods[_key(self.next_id)] = obj["method"]
                ids.append(self.next_id)
            if "params" in obj and not isinstance(obj["params"], dict | list):
                obj["params"] = {}
            items.append(obj)
        well_formed = rng.random() > 0.15
        if not well_formed:
            items.insert(rng.randrange(len(items) + 1), self.nonrequest())
        data = self.dumps(items) + b"\n"
        return Line(data, "batch", well_formed=well_formed, methods=methods, batch_ids=ids)

    def bounded(self, line: Line) -> Line:
        """Keep a line meant to be answered under the limit: else send a small one."""
        if len(line.data) <= LIMIT // 2:
            return line
        self.next_id += 1
        ping = {"jsonrpc": "2.0", "id": self.next_id, "method": "daemon.ping"}
        return Line(
            self.dumps(ping) + b"\n",
            "request",
            self.next_id,
            methods={_key(self.next_id): "daemon.ping"},
        )


def _key(rid: Any) -> Any:
    return json.dumps(rid)


class Conn:
    def __init__(self, path: Path) -> None:
        self.sock = raw_connection(path, timeout=15.0)
        self.buf = bytearray()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def line(self) -> bytes | None:
        """The next raw reply line, or None at EOF (or a reset, which is EOF with unread input)."""
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        end = self.buf.index(b"\n")
        raw = bytes(self.buf[:end])
        del self.buf[: end + 1]
        return raw

    def close(self) -> None:
        self.sock.close()


@dataclass
class Stats:
    sent: Counter[str] = field(default_factory=Counter)
    acked: Counter[str] = field(default_factory=Counter)  # successes per method
    internal_errors: list[str] = field(default_factory=list)
    single_error_for_bad_batch: int = 0
    oversized_replied: int = 0


class Fuzz:
    """One round of the wire fuzz; every failure names the seed and the line."""

    def __init__(self, daemon: DaemonProcess, seed: int) -> None:
        self.daemon = daemon
        self.path = daemon.socket
        self.seed = seed
        self.stats = Stats()

    def fail(self, line: Line | str, why: str) -> None:
        errors = [t for t in self.daemon.log().splitlines() if t.startswith(("<3>", "<2>"))]
        raise AssertionError(
            f"wire fuzz (FUZZ_SEED={self.seed}): {why}\n  sent: {line}\n  daemon errors:\n"
            + "\n".join(errors[-40:])
        )

    def reply(self, conn: Conn, line: Line) -> Any:
        try:
            raw = conn.line()
        except TimeoutError:
            self.fail(line, f"no reply within {conn.sock.gettimeout()}s")
        if raw is None:
            self.fail(line, "the connection closed instead of answering")
        try:
            return json.loads(raw)
        except ValueError:
            self.fail(line, f"the reply is not JSON: {raw[:300]!r}")
        return None

    def check_response(self, r: Any, line: Line, methods: dict[Any, str]) -> None:
        if not isinstance(r, dict) or r.get("jsonrpc") != "2.0" or "id" not in r:
            self.fail(line, f"not a JSON-RPC 2.0 response: {r!r:.300}")
        if ("result" in r) == ("error" in r):
            self.fail(line, f"a response needs result xor error: {r!r:.300}")
        if "error" in r:
            error = r["error"]
            if not isinstance(error, dict) or type(error.get("code")) is not int:
                self.fail(line, f"an error needs an int code: {r!r:.300}")
            if not isinstance(error.get("message"), str):
                self.fail(line, f"an error needs a message: {r!r:.300}")
            if error["code"] == -32603:
                self.stats.internal_errors.append(f"{line}\n    → {r!r:.500}")
        elif _key(r["id"]) in methods:
            self.stats.acked[methods[_key(r["id"])]] += 1

    def check(self, conn: Conn, line: Line) -> None:
        kind = line.kind
        if kind in ("notification",):
            return  # checked by the next reply on this connection being the next one expected
        if kind == "batch" and line.well_formed and not line.batch_ids:
            return  # a batch of notifications only: no reply
        r = self.reply(conn, line)
        if kind == "batch" and tail_lines(line) > 20_000:
            if not (isinstance(r, dict) and r.get("error", {}).get("code") == -32600):
                self.fail(line, f"a batch asking for over 20,000 lines needs -32600: {r!r:.300}")
            return
        if kind == "batch" and line.well_formed:
            if not isinstance(r, list):
                self.fail(line, f"a batch with requests needs an array reply: {r!r:.300}")
            for item in r:
                self.check_response(item, line, line.methods)
            got = sorted(item["id"] for item in r)
            if got != sorted(line.batch_ids):
                self.fail(line, f"batch reply ids {got} for requests {sorted(line.batch_ids)}")
            return
        if kind == "batch" or (kind == "nonrequest" and isinstance(r, list)):
            # JSON-RPC 2.0 §6: valid members are answered, each invalid one gets -32600.
            if isinstance(r, dict):
                self.stats.single_error_for_bad_batch += 1
            items = r if isinstance(r, list) else [r]
            for item in items:
                self.check_response(item, line, line.methods if kind == "batch" else {})
            answered = set(line.methods) if kind == "batch" else set()
            invalid = [i for i in items if i["id"] is None or _key(i["id"]) not in answered]
            if not invalid or any(i.get("error", {}).get("code") != -32600 for i in invalid):
                self.fail(line, f"each invalid batch member needs -32600: {r!r:.300}")
            return
        self.check_response(r, line, line.methods)
        if kind == "request" and line.well_formed:
            if r["id"] != line.rid or type(r["id"]) is not type(line.rid):
                self.fail(line, f"reply id {r['id']!r} for request id {line.rid!r}")
            return
        if kind == "request" and isinstance(line.rid, bool):
            return  # not a valid id; sessiond echoes it (true is an int to Python)
        if "error" not in r or r["id"] != readable_id(line):
            self.fail(line, f"malformed input needs an error with its id, if readable: {r!r:.300}")
        code = r["error"]["code"]
        expected = {"raw": (-32700, -32600), "oversized": (-32600,)}.get(kind, (-32600,))
        if code not in expected:
            self.fail(line, f"error code {code} for a {kind} line, expected one of {expected}")

    def check_closed(self, conn: Conn, line: Line) -> None:
        raw = conn.line()
        if raw is not None:
            r = json.loads(raw)
            if r.get("error", {}).get("code") != -32600 or "max_request_bytes" not in json.dumps(r):
                self.fail(
                    line, f"an oversized line needs -32600 naming max_request_bytes: {r!r:.300}"
                )
            self.stats.oversized_replied += 1
            raw = conn.line()
        if raw is not None:
            self.fail(line, f"the connection stayed open after an oversized line: {raw[:200]!r}")

    def finish(self, conn: Conn, maker: Maker) -> None:
        """A last ping on `conn`: its reply must be the very next line, and the last."""
        maker.next_id += 1
        ping = Line(
            maker.dumps({"jsonrpc": "2.0", "id": maker.next_id, "method": "daemon.ping"}) + b"\n",
            "request",
            maker.next_id,
        )
        conn.send(ping.data)
        self.check(conn, ping)
        if conn.buf:
            self.fail(ping, f"unexpected extra output on the connection: {bytes(conn.buf[:200])!r}")

    def run(
        self, lines: int = 3000, connections: int = 8, every: int = 50, hook: Any = None
    ) -> Stats:
        rng = random.Random(self.seed)
        maker = Maker(rng)
        pool = [Conn(self.path) for _ in range(connections)]
        sent = next_hook = 0
        try:
            while sent < lines:
                i = rng.randrange(connections)
                burst: list[Line] = []
                for _ in range(rng.randint(1, 6)):
                    burst.append(maker.make())
                    if burst[-1].kind == "oversized":
                        break
                for line in burst:
                    self.stats.sent[line.kind] += 1
                # An oversized line goes alone, once the replies before it are read:
                # the daemon answers what came before it in the same read, except a
                # request still waiting (a start) when it closes the connection.
                groups = [burst[:-1], burst[-1:]] if burst[-1].kind == "oversized" else [burst]
                for group in filter(None, groups):
                    pool[i].send(b"".join(line.data for line in group))
                    for line in group:
                        if line.kind == "oversized":
                            self.check_closed(pool[i], line)
                            pool[i].close()
                            pool[i] = Conn(self.path)
                        else:
                            self.check(pool[i], line)
                sent += len(burst)
                if hook is not None and sent >= next_hook:
                    hook()
                    next_hook = sent + every
            for conn in pool:
                self.finish(conn, maker)
        finally:
            for conn in pool:
                conn.close()
        return self.stats


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Rpc:
    """A plain request/reply connection for the test's own calls."""

    def __init__(self, path: Path) -> None:
        self.conn = Conn(path)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        assert self.conn.send(json.dumps(request).encode() + b"\n")
        raw = self.conn.line()
        assert raw is not None, f"no reply to {method}"
        reply = json.loads(raw)
        assert reply["id"] == self.next_id, reply
        return reply


def ping_pid(daemon) -> int:
    return daemon.call("daemon.ping")["pid"]


def test_wire_fuzz_every_request_line_gets_one_valid_jsonrpc_reply(make_daemon):
    daemon = make_daemon(CONFIG)
    pid = ping_pid(daemon)
    print(f"wire fuzz seed: FUZZ_SEED={SEED}")
    stats = Fuzz(daemon, SEED).run()
    assert sum(stats.sent.values()) >= 3000
    assert all(
        stats.sent[k]
        for k in ("raw", "nonrequest", "request", "notification", "batch", "oversized")
    )
    print(
        f"sent {dict(stats.sent)}; oversized answered {stats.oversized_replied};"
        f" bad batches answered with one error {stats.single_error_for_bad_batch}"
    )
    assert stats.oversized_replied, "no oversized line got its -32600 before the close"
    assert not stats.internal_errors, "internal errors:\n" + "\n".join(stats.internal_errors)
    assert ping_pid(daemon) == pid
    assert daemon.proc.poll() is None


def test_wire_fuzz_leaves_fds_at_baseline_and_rss_flat(make_daemon):
    daemon = make_daemon(CONFIG)
    pid = ping_pid(daemon)
    baseline = fd_count(pid)
    print(f"wire fuzz seed: FUZZ_SEED={SEED}; fds at start {baseline}, rss {rss_bytes(pid)}")

    def settled_fds() -> int:
        return wait_for(
            lambda: abs(fd_count(pid) - baseline) <= 2 and fd_count(pid),
            timeout=10,
            what=f"the daemon's fds back to {baseline} ± 2",
        )

    Fuzz(daemon, SEED).run()
    settled_fds()
    first = rss_bytes(pid)
    Fuzz(daemon, SEED).run()  # the identical round
    settled_fds()
    second = rss_bytes(pid)
    print(f"rss after round 1: {first}, after round 2: {second}")
    assert second - first < 20 * 1024 * 1024, f"RSS grew {second - first} bytes in one round"
    assert ping_pid(daemon) == pid


def test_wire_fuzz_loses_no_event(make_daemon):
    daemon = make_daemon(CONFIG)
    pid = ping_pid(daemon)
    subscriber = Rpc(daemon.socket)
    assert subscriber.call("subscribe", topics=["events"])["result"] == {"topics": ["events"]}
    driver = Rpc(daemon.socket)
    before = driver.call("events.tail", lines=10_000)["result"]
    start_seq = before[-1]["seq"] if before else 0
    driven: Counter[str] = Counter()
    cycle = itertools.count()

    def drive() -> None:
        method = [
            "session.start",
            "session.touch",
            "session.pause",
            "session.touch",
            "session.resume",
        ][next(cycle) % 5]
        params = {"name": f"fuzz-{driver.next_id}"} if method == "session.start" else {}
        reply = driver.call(method, **params)
        assert "result" in reply or "error" in reply
        if "result" in reply:
            driven[method] += 1

    print(f"wire fuzz seed: FUZZ_SEED={SEED}")
    stats = Fuzz(daemon, SEED).run(hook=drive)
    acked = stats.acked + driven
    events = [e for e in driver.call("events.tail", lines=10_000)["result"] if e["seq"] > start_seq]
    seqs = [e["seq"] for e in events]
    assert seqs, "the fuzz made no event"
    assert seqs[0] == start_seq + 1, f"events before {seqs[0]} are missing"
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"gaps or repeats in event seqs: {seqs}"

    got: list[int] = []
    subscriber.conn.sock.settimeout(0.05)

    def received_all() -> bool:
        try:
            while (raw := subscriber.conn.line()) is not None:
                note = json.loads(raw)
                assert note["method"] == "event", note
                got.append(note["params"]["seq"])
        except TimeoutError:
            pass
        return bool(got) and got[-1] >= seqs[-1]

    wait_for(received_all, timeout=10, what=f"the subscriber to see event {seqs[-1]}")
    assert got == seqs, "the subscriber's events differ from events.tail"

    kinds = Counter(e["kind"] for e in events)
    print(
        f"events {seqs[0]}..{seqs[-1]}: {dict(kinds)}; acked {dict(acked)}; driven {dict(driven)}"
    )
    assert driven["session.pause"] and driven["session.resume"], driven
    assert kinds["session.started"] == acked["session.start"], (kinds, acked)
    assert kinds["session.paused"] == acked["session.pause"], (kinds, acked)
    assert kinds["session.resumed"] == acked["session.resume"], (kinds, acked)
    subscriber.conn.close()
    driver.conn.close()
    assert ping_pid(daemon) == pid


# --- what the fuzz found (each was a daemon bug, now fixed) -- ----------------------------


@pytest.mark.parametrize("content", [b'[""]\n', b'"" = 1\n'])
def test_empty_top_level_key_is_a_problem_with_a_non_empty_key(content, short_tmp):
    path = short_tmp / "sessiond.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert all(p.key for p in caught.value.problems), caught.value.problems


def test_deeply_nested_line_gets_an_error_reply_and_keeps_the_connection(make_daemon):
    daemon = make_daemon(CONFIG)
    rpc = Rpc(daemon.socket)
    assert rpc.conn.send(b"[" * 5000 + b"\n")
    raw = rpc.conn.line()
    assert raw is not None, "the connection closed with no reply"
    assert json.loads(raw)["error"]["code"] in (-32700, -32600)
    assert rpc.call("daemon.ping")["result"]["pid"] == daemon.proc.pid


def test_lines_pipelined_before_an_oversized_one_are_still_answered(make_daemon):
    daemon = make_daemon(CONFIG)
    conn = Conn(daemon.socket)
    ping = b'{"jsonrpc":"2.0","id":7,"method":"daemon.ping"}\n'
    assert conn.send(ping + b"a" * (LIMIT + 10) + b"\n")
    first = conn.line()
    assert first is not None and json.loads(first).get("id") == 7, first
    second = conn.line()
    assert second is not None and json.loads(second)["error"]["code"] == -32600
    assert conn.line() is None


def test_batch_with_an_invalid_member_gets_an_array_of_replies(daemon):
    # JSON-RPC 2.0 §6: each member is answered on its own, an invalid one with -32600.
    conn = Conn(daemon.socket)
    assert conn.send(b'[{"jsonrpc":"2.0","id":1,"method":"daemon.ping"},1]\n')
    raw = conn.line()
    assert raw is not None
    replies = json.loads(raw)
    assert isinstance(replies, list), replies
    assert sorted(json.dumps(r["id"]) for r in replies) == ["1", "null"]


def test_param_named_ctx_gets_invalid_params_naming_it_in_data(daemon):
    rpc = Rpc(daemon.socket)
    error = rpc.call("daemon.ping", ctx=1)["error"]
    assert error["code"] == -32602
    assert isinstance(error["data"], dict), error
    assert "'ctx'" in error["data"]["message"]
