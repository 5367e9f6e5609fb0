"""Faults from outside: a full disk, many idle clients, a store aged past history_days."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from harness import fill, raw_connection, read_line, wait_for
from sessiond.cli.client import RemoteError

PING = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}\n'


def test_a_full_disk_gives_storage_error_and_recovers(make_daemon, tiny_state_dir):
    daemon = make_daemon(start=False)
    daemon.state_dir = tiny_state_dir / "state"
    daemon.start()
    daemon.call("session.start", name="before")
    daemon.call("session.stop")
    filler = fill(tiny_state_dir)
    with pytest.raises(RemoteError) as full:
        for n in range(50):  # the WAL may hold a few pages' slack
            daemon.call("session.start", name=f"full-{n}")
            daemon.call("session.stop")
    assert full.value.code == -32010
    assert full.value.hint
    # Reads go on, and the daemon is alive.
    assert daemon.call("daemon.ping")["pid"] == daemon.proc.pid
    assert daemon.call("session.history", limit=1)
    done = daemon.sessionc("start", "refused")
    assert done.returncode == 1 and "unable to write the store" in done.stderr
    filler.unlink()
    live = daemon.call("session.status")["session"]
    if live is not None:  # a start whose stop failed: its session is still live
        daemon.call("session.stop")
    assert daemon.call("session.start", name="after")["state"] == "active"
    daemon.call("session.stop")
    daemon.stop()
    db = sqlite3.connect(daemon.state_dir / "sessiond.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_hundred_idle_connections_do_not_starve_a_pinging_client(daemon):
    idle = [raw_connection(daemon.socket) for _ in range(200)]
    sock, buf = raw_connection(daemon.socket), bytearray()
    began = time.monotonic()
    for _ in range(100):
        sock.sendall(PING)
        assert read_line(sock, buf)["id"] == 1
    assert time.monotonic() - began < 5
    for s in idle[:100]:
        s.close()
    sock.sendall(PING)
    assert read_line(sock, buf)["id"] == 1
    # The closed ones are released: the daemon sees their EOFs when the loop gets to
    # them, which may be after the ping's answer.
    wait_for(lambda: len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) < 200, what="fds released")


def test_a_client_that_vanishes_mid_request_costs_nothing(daemon):
    for _ in range(50):
        s = raw_connection(daemon.socket)
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"session.sta')
        s.close()
    wait_for(lambda: len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) < 30, what="fds released")
    assert daemon.call("daemon.ping")["pid"] == daemon.proc.pid


def test_closed_sessions_older_than_history_days_are_pruned(make_daemon):
    daemon = make_daemon("[daemon]\nhistory_days = 1\n")
    old = daemon.call("session.start", name="old")
    daemon.call("session.stop")
    recent = daemon.call("session.start", name="recent")
    daemon.call("session.stop")
    daemon.stop()
    files = {}  # what their agents would have left: a log and a checkpoint each
    for session in (old, recent):
        for folder in ("logs", "checkpoints"):
            path = daemon.state_dir / folder / session["id"]
            path.mkdir(parents=True)
            (path / "a.log").write_text("x\n")
            files.setdefault(session["name"], []).append(path)
    db = sqlite3.connect(daemon.state_dir / "sessiond.db")
    db.execute("UPDATE sessions SET closed_at = closed_at - 2 * 86400 WHERE id = ?", (old["id"],))
    # The machine's own events (a network change with no session live): one old, one new.
    for age, kind in ((2 * 86400, "network.old"), (0, "network.new")):
        db.execute("INSERT INTO events (time, kind, message) VALUES (?, ?, 'x')",
                   (time.time() - age, kind))  # fmt: skip
    db.commit()
    db.close()
    daemon.restart()
    assert [s["name"] for s in daemon.call("session.history")] == ["recent"]
    assert "pruned 1 sessions" in daemon.log()
    assert not any(path.exists() for path in files["old"])
    assert all((path / "a.log").exists() for path in files["recent"])
    kinds = [e["kind"] for e in daemon.call("events.tail", lines=100)]
    assert "network.new" in kinds and "network.old" not in kinds
