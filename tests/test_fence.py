"""Hosts and fences on one machine (SPEC §10), against a real daemon: every session
carries the host it runs on and a fence larger than that of every session before it."""

from __future__ import annotations

import socket
import sqlite3

from harness import DaemonProcess

HOST = socket.gethostname()


def started_and_stopped(daemon: DaemonProcess, name: str) -> dict:
    session = daemon.call("session.start", name=name)
    daemon.call("session.stop")
    return session


def test_fences_grow_with_every_session_and_across_a_restart(daemon):
    sessions = [started_and_stopped(daemon, f"s{n}") for n in range(3)]
    fences = [s["fence"] for s in sessions]
    assert fences == sorted(set(fences)) and fences[0] > 0
    assert {s["host"] for s in sessions} == {HOST}
    # Kept with the session: a closed one says the fence it had.
    assert daemon.call("session.get", name="s1")["fence"] == fences[1]
    daemon.stop()
    daemon.restart()
    assert daemon.call("session.start", name="after")["fence"] > fences[-1]


def test_a_pruned_session_fence_is_never_handed_out_again(make_daemon):
    daemon = make_daemon("[daemon]\nhistory_days = 1\n")
    last = max(started_and_stopped(daemon, f"old{n}")["fence"] for n in range(2))
    daemon.stop()
    db = sqlite3.connect(daemon.state_dir / "sessiond.db")
    db.execute("UPDATE sessions SET closed_at = closed_at - 2 * 86400")
    db.commit()
    db.close()
    daemon.restart()
    assert daemon.call("session.history") == []  # no row is left to count from
    assert daemon.call("session.start", name="new")["fence"] > last


def test_cluster_host_names_this_daemon_on_its_sessions(make_daemon):
    daemon = make_daemon('[cluster]\nhost = "box-7"\n')
    assert daemon.call("session.start", name="s")["host"] == "box-7"
