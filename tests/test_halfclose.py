"""Half-closed clients (SPEC §6): every reply is sent after shutdown(SHUT_WR), then EOF.

socat and `nc -U -N` shut their write side once stdin ends; the calls that wait
(session.start, session.stop, agent.stop) must still be answered, in order.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import struct
import subprocess
import termios

import pytest

from harness import raw_connection, read_line, wait_for


def request(ident: int, method: str, **params: object) -> bytes:
    line = {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}
    return json.dumps(line).encode() + b"\n"


def replies_until_eof(sock: socket.socket) -> list[dict]:
    buffer, replies = bytearray(), []
    while (reply := read_line(sock, buffer)) is not None:
        replies.append(reply)
    assert buffer == b"", f"a reply cut off at EOF: {bytes(buffer)[:200]!r}"
    return replies


def half_closed(path, payload: bytes) -> list[dict]:
    sock = raw_connection(path)
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    try:
        return replies_until_eof(sock)
    finally:
        sock.close()


# A pipeline of calls that answer at once and calls that wait, as a script would send it.
PIPELINE = b"".join([
    request(1, "daemon.ping"),
    request(2, "session.start", name="piped", wait=10),
    request(3, "agent.run", command=["sleep", "60"], name="sleeper", cwd="/"),
    request(4, "agent.stop", name="sleeper"),
    request(5, "session.status"),
    request(6, "session.stop"),
])  # fmt: skip


def check_pipeline(replies: list[dict]) -> None:
    assert [r["id"] for r in replies] == [1, 2, 3, 4, 5, 6], replies
    assert all("result" in r for r in replies), replies
    assert replies[1]["result"]["state"] == "active"
    assert replies[3]["result"]["state"] == "stopped"
    assert replies[4]["result"]["session"]["name"] == "piped"
    assert replies[5]["result"]["state"] == "closed"


def test_every_reply_reaches_a_half_closed_socket(daemon):
    check_pipeline(half_closed(daemon.socket, PIPELINE))
    assert daemon.call("session.status")["session"] is None


def test_a_half_closed_waiter_is_answered_when_the_lock_frees(daemon):
    daemon.call("session.start", name="busy")
    waiter = raw_connection(daemon.socket, timeout=30)
    waiter.sendall(request(1, "session.start", name="next", wait=True))
    waiter.shutdown(socket.SHUT_WR)
    wait_for(lambda: daemon.call("session.status")["queue"], what="the half-closed waiter queued")
    daemon.call("session.stop")
    (reply,) = replies_until_eof(waiter)
    assert reply["id"] == 1 and reply["result"]["name"] == "next"
    waiter.close()


def test_a_half_closed_waiter_that_hangs_up_loses_its_place(daemon):
    daemon.call("session.start", name="busy")
    gone = raw_connection(daemon.socket)
    gone.sendall(request(1, "session.start", name="gone", wait=True))
    gone.shutdown(socket.SHUT_WR)
    wait_for(lambda: daemon.call("session.status")["queue"], what="the half-closed waiter queued")
    assert daemon.call("daemon.ping")  # still queued: a half-close alone is not a hang-up
    assert daemon.call("session.status")["queue"]
    gone.close()
    wait_for(lambda: daemon.call("session.status")["queue"] == [], what="the waiter to leave")
    daemon.call("session.stop")
    assert daemon.call("session.status")["session"] is None


def test_a_last_line_without_newline_is_a_line(daemon):
    (reply,) = half_closed(daemon.socket, request(7, "session.start", name="bare")[:-1])
    assert reply["id"] == 7 and reply["result"]["name"] == "bare"
    (cut,) = half_closed(daemon.socket, request(8, "session.stop")[:20])
    assert cut["error"]["code"] == -32700 and cut["id"] is None
    assert daemon.call("session.status")["session"]["name"] == "bare"


def unread_bytes(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def test_replies_past_the_reply_buffer_drain_after_a_half_close(daemon):
    # ~5 MiB of rpc.discover replies, unread until after the half-close: the daemon stops
    # reading at 4 MiB unsent and resumes as they drain; the waiting call last still answers.
    count = 5 * 1024 * 1024 // len(json.dumps(daemon.call("rpc.discover"))) + 1
    sock = raw_connection(daemon.socket, timeout=30)
    sock.sendall(request(0, "rpc.discover") * count + request(1, "session.start", name="after"))
    sock.shutdown(socket.SHUT_WR)
    # Replies pile up before any is read: the kernel's buffer fills, the daemon's grows.
    wait_for(lambda: unread_bytes(sock) >= 100_000, what="replies waiting in the socket")
    replies = replies_until_eof(sock)
    sock.close()
    assert [r["id"] for r in replies] == [0] * count + [1]
    assert replies[-1]["result"]["name"] == "after"


def test_a_half_closed_subscriber_keeps_its_events(daemon):
    sock = raw_connection(daemon.socket)
    sock.sendall(request(1, "subscribe", topics=["events"]))
    sock.shutdown(socket.SHUT_WR)
    buffer = bytearray()
    assert read_line(sock, buffer)["id"] == 1
    daemon.call("session.start", name="watched")
    event = read_line(sock, buffer)
    assert event is not None and event["method"] == "event"
    sock.close()


def run_tool(argv: list[str], payload: bytes) -> list[dict]:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"needs {argv[0]} (apt-get install socat netcat-openbsd)")
    done = subprocess.run(argv, input=payload, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def test_socat_prints_every_reply(daemon):
    # socat half-closes at the end of stdin, then waits -t seconds (0.5 by default) for replies.
    check_pipeline(run_tool(["socat", "-t", "20", "-", f"UNIX-CONNECT:{daemon.socket}"],
                            PIPELINE))  # fmt: skip


def test_nc_prints_every_reply(daemon):
    # -N: shutdown(SHUT_WR) at the end of stdin, then read until the daemon closes.
    check_pipeline(run_tool(["nc", "-U", "-N", str(daemon.socket)], PIPELINE))
