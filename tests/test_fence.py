"""Hosts and fences on one machine (SPEC §10), against a real daemon: every session
carries the host it runs on and a fence larger than that of every session before it,
which its agents get as SESSIOND_FENCE."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path

from harness import DaemonProcess, wait_for

HOST = socket.gethostname()
# Writes its SESSIOND_FENCE to argv[1] (by a rename: the test never reads half a file).
FENCE_WRITER = """
import os, sys, time
with open(sys.argv[1] + ".new", "w") as f:
    f.write(os.environ["SESSIOND_FENCE"])
os.rename(sys.argv[1] + ".new", sys.argv[1])
while True: time.sleep(1)
"""


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


def fence_of_agent(daemon: DaemonProcess, out: Path) -> int:
    return int(wait_for(lambda: out.exists() and out.read_text(), what="the agent's fence"))


def test_agents_get_the_fence_and_keep_it_across_a_daemon_restart(daemon, short_tmp):
    started_and_stopped(daemon, "before")  # so that the fence is not merely the first
    session = daemon.call("session.start", name="s")
    out = short_tmp / "fence"
    daemon.call("agent.run", command=[sys.executable, "-c", FENCE_WRITER, str(out)],
                name="writer", cwd=str(short_tmp))  # fmt: skip
    assert fence_of_agent(daemon, out) == session["fence"] > 1
    daemon.kill9()
    daemon.restart()
    # Run anew by the next daemon, the agent has the environment it was started with.
    out.unlink()
    os.kill(daemon.call("agent.list")[0]["pid"], signal.SIGKILL)
    assert fence_of_agent(daemon, out) == session["fence"]


def test_status_names_the_local_cluster_and_the_session_host(daemon):
    local = {"backend": "local", "name": "default", "host": HOST, "reachable": True}
    assert daemon.call("session.status")["daemon"]["cluster"] == local
    session = daemon.call("session.start", name="s")
    status = daemon.call("session.status")
    assert status["daemon"]["cluster"] == local
    assert (status["session"]["host"], status["session"]["fence"]) == (HOST, session["fence"])
    line = f"host:         {HOST}, fence {session['fence']}"
    assert line in daemon.sessionc("status").stdout.splitlines()
    daemon.call("session.stop")
    assert line in daemon.sessionc("show", "s").stdout.splitlines()


def test_cluster_host_names_this_daemon_on_its_sessions(make_daemon):
    daemon = make_daemon('[cluster]\nhost = "box-7"\n')
    assert daemon.call("session.status")["daemon"]["cluster"]["host"] == "box-7"
    assert daemon.call("session.start", name="s")["host"] == "box-7"
