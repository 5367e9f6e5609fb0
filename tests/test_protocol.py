"""The wire: framing, limits and malformed input against a live daemon."""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import pytest

from harness import connect_as, raw_connection, read_line, wait_for
from sessiond.wire.methods import METHODS


def ask(sock, buffer, line: bytes):
    sock.sendall(line)
    return read_line(sock, buffer)


PING = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}\n'


def test_malformed_json_keeps_the_connection(daemon):
    sock, buf = raw_connection(daemon.socket), bytearray()
    reply = ask(sock, buf, b"{not json\n")
    assert reply["error"]["code"] == -32700
    assert reply["id"] is None
    assert "not valid JSON" in reply["error"]["data"]["message"]
    assert ask(sock, buf, PING)["result"]["pid"] == daemon.proc.pid


def test_invalid_request_unknown_method_and_bad_params(daemon):
    sock, buf = raw_connection(daemon.socket), bytearray()
    assert ask(sock, buf, b'{"jsonrpc":"1.0","id":1,"method":"x"}\n')["error"]["code"] == -32600
    assert ask(sock, buf, b"[]\n")["error"]["code"] == -32600
    unknown = ask(sock, buf, b'{"jsonrpc":"2.0","id":2,"method":"session.explode"}\n')
    assert unknown["error"]["code"] == -32601
    assert "session.explode" in unknown["error"]["data"]["message"]
    extra = ask(sock, buf, b'{"jsonrpc":"2.0","id":3,"method":"session.get",'
                           b'"params":{"name":"a","colour":"red"}}\n')  # fmt: skip
    assert extra["error"]["code"] == -32602
    assert "'colour'" in extra["error"]["message"]
    missing = ask(sock, buf, b'{"jsonrpc":"2.0","id":4,"method":"session.get"}\n')
    assert missing["error"]["code"] == -32602
    assert "'name'" in missing["error"]["message"]
    typed = ask(sock, buf, b'{"jsonrpc":"2.0","id":5,"method":"session.history",'
                           b'"params":{"limit":"ten"}}\n')  # fmt: skip
    assert typed["error"]["code"] == -32602
    assert "'limit' must be integer" in typed["error"]["message"]
    positional = ask(sock, buf, b'{"jsonrpc":"2.0","id":6,"method":"session.get",'
                                b'"params":["a"]}\n')  # fmt: skip
    assert positional["error"]["code"] == -32602
    assert ask(sock, buf, PING)["id"] == 1


def test_batches_and_notifications(daemon):
    sock, buf = raw_connection(daemon.socket), bytearray()
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "daemon.ping"},
        {"jsonrpc": "2.0", "method": "session.start", "params": {"name": "quiet"}},
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
    ]
    replies = ask(sock, buf, json.dumps(batch).encode() + b"\n")
    assert sorted(r["id"] for r in replies) == ["a", "b"]
    # The notification ran, and got no answer: the next line answers the next request.
    assert daemon.call("session.status")["session"]["name"] == "quiet"
    sock.sendall(b'{"jsonrpc":"2.0","method":"session.touch"}\n')
    assert ask(sock, buf, PING)["id"] == 1


def test_oversized_request_closes_only_that_connection(make_daemon):
    daemon = make_daemon("[daemon]\nmax_request_bytes = 4096\n")
    bystander, bbuf = raw_connection(daemon.socket), bytearray()
    sock, buf = raw_connection(daemon.socket), bytearray()
    huge = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":{"x":"' + b"a" * 8000
    reply = ask(sock, buf, huge + b'"}}\n')
    assert reply["error"]["code"] == -32600
    assert "max_request_bytes" in reply["error"]["message"]
    assert read_line(sock, buf) is None  # closed
    assert ask(bystander, bbuf, PING)["result"]["pid"] == daemon.proc.pid


def test_half_sent_line_is_cut_after_client_timeout(make_daemon):
    daemon = make_daemon('[daemon]\nclient_timeout = "1s"\n')
    idle = raw_connection(daemon.socket)  # connected, sends nothing: not cut
    sock = raw_connection(daemon.socket)
    sock.sendall(b'{"jsonrpc":"2.0","id":1,"meth')
    began = time.monotonic()
    assert sock.recv(100) == b""
    assert 0.8 < time.monotonic() - began < 5
    assert ask(idle, bytearray(), PING)["id"] == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as uid 65534")
def test_max_clients_refuses_with_limit_reached_but_lets_root_in(make_shared_daemon):
    daemon = make_shared_daemon("max_clients = 3\n")
    held = [connect_as(daemon.socket, 65534, 65534) for _ in range(3)]
    for s in held:
        assert ask(s, bytearray(), PING)["id"] == 1
    refused = read_line(connect_as(daemon.socket, 65534, 65534), bytearray())
    assert refused["error"]["code"] == -32007
    assert "max_clients" in refused["error"]["data"]["hint"]
    # Root (and admins) are always let in: one user's connections never lock them out.
    assert ask(raw_connection(daemon.socket), bytearray(), PING)["id"] == 1
    held.pop().close()
    wait_for(lambda: _can_ping(connect_as(daemon.socket, 65534, 65534)), what="a free slot")


def _can_ping(sock: socket.socket) -> bool:
    reply = ask(sock, bytearray(), PING)
    return reply is not None and "result" in reply


def test_rpc_discover_describes_every_method(daemon):
    doc = daemon.call("rpc.discover")
    assert doc["openrpc"].startswith("1.")
    names = [m["name"] for m in doc["methods"]]
    assert names == list(METHODS)
    start = next(m for m in doc["methods"] if m["name"] == "session.start")
    params = {p["name"] for p in start["params"]}
    assert {"name", "template", "from", "wait", "tty", "timeout", "stop_at"} <= params


def test_user_mode_socket_is_private(daemon):
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
def test_second_uid_observes_joins_but_cannot_stop(make_shared_daemon):
    daemon = make_shared_daemon('admin_group = "root"\n')
    sock_stat = os.stat(daemon.socket)
    assert stat.S_IMODE(sock_stat.st_mode) == 0o660
    daemon.call("session.start", name="shared", tty="pts/1")
    nobody = {"user": 65534, "group": 65534}

    status = daemon.sessionc("--json", "status", **nobody)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["session"]["name"] == "shared"

    paused = daemon.sessionc("pause", **nobody)
    assert paused.returncode == 6
    assert "join the session first" in paused.stderr

    joined = daemon.sessionc("--json", "join", "shared", **nobody)
    assert joined.returncode == 0, joined.stderr
    assert [p["uid"] for p in json.loads(joined.stdout)["participants"]] == [65534]
    assert daemon.sessionc("touch", **nobody).returncode == 0

    stop = daemon.sessionc("stop", "shared", **nobody)
    assert stop.returncode == 6
    assert "PERMISSION" in stop.stderr.upper() or "may not" in stop.stderr
    assert daemon.call("session.status")["session"]["state"] == "active"
    assert daemon.sessionc("leave", **nobody).returncode == 0
    assert daemon.call("session.status")["session"]["participants"] == []
    assert daemon.sessionc("stop", "shared").returncode == 0


# -- ids (SPEC §6: strings or any JSON numbers, echoed as sent) -----------------------------


def ask_raw(sock, buffer: bytearray, line: bytes) -> bytes:
    """The reply line as the daemon wrote it: an id's text is what is being tested."""
    sock.sendall(line + b"\n")
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the daemon closed the connection"
        buffer += chunk
    end = buffer.index(b"\n")
    raw = bytes(buffer[:end])
    del buffer[: end + 1]
    return raw


@pytest.mark.parametrize("ident", [b"1.5", b"1.0", b"1e3", b"-2.50E+2", b"1E400", b"0.1"])
def test_any_number_id_is_answered_with_the_same_text(daemon, ident):
    sock, buf = raw_connection(daemon.socket), bytearray()
    quick = ask_raw(sock, buf, b'{"jsonrpc":"2.0","id":' + ident + b',"method":"daemon.ping"}')
    assert quick.endswith(b',"id":' + ident + b"}"), quick
    assert json.loads(quick)["result"]["pid"] == daemon.proc.pid
    # A method that waits takes the other path through the dispatcher; the same id comes back.
    waited = ask_raw(sock, buf, b'{"jsonrpc":"2.0","id":' + ident + b',"method":"session.stop"}')
    assert waited.endswith(b',"id":' + ident + b"}"), waited
    assert json.loads(waited)["error"]["data"]["name"] == "NO_SESSION"


def test_an_invalid_request_gets_its_error_with_its_id_if_it_can_be_read(daemon):
    sock, buf = raw_connection(daemon.socket), bytearray()
    cases = {
        b'{"jsonrpc":"1.0","id":7,"method":"x"}': (b"7", "'jsonrpc'"),
        b'{"jsonrpc":"2.0","id":"a","method":5}': (b'"a"', "'method'"),
        b'{"jsonrpc":"2.0","id":2.50,"method":"daemon.ping","params":"x"}': (b"2.50", "'params'"),
        b'{"id":1e3,"method":"daemon.ping"}': (b"1e3", "'jsonrpc'"),
        b'{"jsonrpc":"2.0","id":true,"method":"daemon.ping"}': (b"null", "'id'"),
        b'{"jsonrpc":"2.0","id":{"n":1},"method":"daemon.ping"}': (b"null", "'id'"),
        b'"ping"': (b"null", "JSON object"),
    }
    for line, (ident, named) in cases.items():
        raw = ask_raw(sock, buf, line)
        assert raw.endswith(b',"id":' + ident + b"}"), (line, raw)
        error = json.loads(raw)["error"]
        assert error["code"] == -32600 and named in error["data"]["message"], (line, error)
    assert ask(sock, buf, PING)["id"] == 1


def test_a_batch_answers_each_member_with_its_own_id(daemon):
    sock, buf = raw_connection(daemon.socket), bytearray()
    batch = (b'[{"jsonrpc":"2.0","id":1e3,"method":"daemon.ping"},'
             b'{"jsonrpc":"1.0","id":7,"method":"daemon.ping"},'
             b'{"jsonrpc":"2.0","id":2.0,"method":"nope"},'
             b'{"jsonrpc":"2.0","method":"daemon.ping"},'
             b'5]')  # fmt: skip
    raw = ask_raw(sock, buf, batch)
    for ident in (b'"id":1e3}', b'"id":7}', b'"id":2.0}', b'"id":null}'):
        assert raw.count(ident) == 1, (ident, raw)
    replies = {json.dumps(r["id"]): r for r in json.loads(raw)}
    assert replies["1000.0"]["result"]["pid"] == daemon.proc.pid
    assert replies["7"]["error"]["code"] == -32600
    assert replies["2.0"]["error"]["code"] == -32601
    assert replies["null"]["error"]["code"] == -32600
    assert len(replies) == 4  # the notification got no reply
