"""What one uid may not take from another: exports, --from, checkpoints, working directories.

A system daemon run as root; the other party is uid 65534 (nobody), through the
real sessionc (a readable copy of it), or through socat for the raw calls that
sessionc does not make (agent.run with a cwd of its choosing).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_agents import SLEEPER, agent, agents_of, alive, marked_processes

from harness import DaemonProcess, wait_for
from sessiond.cli.client import RemoteError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as uid 65534")

NOBODY = {"user": 65534, "group": 65534}
PERMISSION_DENIED = -32004
INVALID_PARAMS = -32602

# An agent in /bin/sh (uid 65534 cannot run root's pyenv python): it stores the
# checkpoint {"by": its name} with its token, then exits.
CHECKPOINT_SH = r"""
request='{"jsonrpc":"2.0","id":1,"method":"agent.checkpoint",'
request=$request'"params":{"token":"%s","data":{"by":"%s"}}}\n'
printf "$request" "$SESSIOND_AGENT_TOKEN" "$SESSIOND_AGENT" |
    socat -t 10 - "UNIX-CONNECT:$SESSIOND_SOCKET"
"""


def call_as_nobody(daemon: DaemonProcess, method: str, **params: object) -> dict:
    """One raw JSON-RPC call on the socket as uid 65534: the reply object.

    socat half-closes after the line; the daemon drops the reply of a call that it
    must wait on (session.start, session.stop) then, so use this for the others only.
    """
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    done = subprocess.run(
        ["socat", "-t", "10", "-", f"UNIX-CONNECT:{daemon.socket}"], input=line + "\n",
        capture_output=True, text=True, timeout=30, extra_groups=[], cwd="/", **NOBODY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        entries = f.read().decode(errors="replace").split("\0")
    return dict(e.split("=", 1) for e in entries if "=" in e)


def test_export_is_denied_to_a_stranger_to_that_session_though_it_owns_the_live_one(
    make_shared_daemon,
):
    daemon = make_shared_daemon()
    daemon.call("session.start", name="private")
    daemon.call("session.stop")
    assert daemon.sessionc("start", "theirs", **NOBODY).returncode == 0
    refused = daemon.sessionc("export", "private", **NOBODY)
    assert refused.returncode == 6, refused.stderr
    assert "may not export session private" in refused.stderr
    assert refused.stdout == ""
    raw = call_as_nobody(daemon, "session.export", name="private")
    assert raw["error"]["code"] == PERMISSION_DENIED
    assert "result" not in raw
    # Its own session it may export, and an admin (root) may export either.
    own = daemon.sessionc("export", "theirs", **NOBODY)
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["session"]["name"] == "theirs"
    assert daemon.call("session.export", name="private")["session"]["name"] == "private"
    assert daemon.call("session.export", name="theirs")["session"]["name"] == "theirs"


def test_export_of_a_closed_session_is_for_its_owner_and_its_participants(make_shared_daemon):
    daemon = make_shared_daemon()
    assert daemon.sessionc("start", "theirs", **NOBODY).returncode == 0
    assert daemon.sessionc("stop", **NOBODY).returncode == 0
    daemon.call("session.start", name="shared")
    assert daemon.sessionc("join", "shared", **NOBODY).returncode == 0
    daemon.call("session.stop")
    daemon.call("session.start", name="left")
    assert daemon.sessionc("join", "left", **NOBODY).returncode == 0
    assert daemon.sessionc("leave", **NOBODY).returncode == 0
    daemon.call("session.stop")
    assert daemon.call("session.status")["session"] is None  # no live session to lean on
    for name in ("theirs", "shared"):
        allowed = daemon.sessionc("export", name, **NOBODY)
        assert allowed.returncode == 0, f"{name}: {allowed.stderr}"
        exported = json.loads(allowed.stdout)["session"]
        assert (exported["name"], exported["state"]) == (name, "closed")
    # Not listed among its participants when it closed: a stranger to it.
    assert 65534 not in {p["uid"] for p in daemon.call("session.get", name="left")["participants"]}
    refused = daemon.sessionc("export", "left", **NOBODY)
    assert refused.returncode == 6, refused.stderr
    assert "may not export session left" in refused.stderr


def test_start_from_a_session_of_another_owner_is_denied(make_shared_daemon):
    daemon = make_shared_daemon()
    roots = daemon.call("session.start", name="roots")
    daemon.call("session.stop")
    refused = daemon.sessionc("start", "mine", "--from", "roots", **NOBODY)
    assert refused.returncode == 6, refused.stderr
    assert "may not start from session roots" in refused.stderr
    by_id = daemon.sessionc("start", "mine", "--from", roots["id"], **NOBODY)
    assert by_id.returncode == 6, by_id.stderr
    assert daemon.call("session.status")["session"] is None  # nothing started, lock free
    # Its own old session it may continue; an admin (root) may continue anyone's.
    assert daemon.sessionc("start", "theirs", **NOBODY).returncode == 0
    theirs = daemon.call("session.stop")
    own = daemon.sessionc("--json", "start", "next", "--from", "theirs", **NOBODY)
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["parent"] == theirs["id"]
    assert daemon.sessionc("stop", **NOBODY).returncode == 0
    admins = daemon.call("session.start", name="admin", **{"from": "theirs"})
    assert admins["parent"] == theirs["id"]


def test_a_checkpoint_is_not_handed_to_an_agent_of_another_uid(make_shared_daemon):
    # "worker" runs as the owner (root); "keeper" as nobody, the uid that stores both.
    config = agent("worker", SLEEPER)
    config += '[agents.keeper]\ncommand = ["sleep", "100"]\nuser = "nobody"\ncwd = "/"\n'
    daemon = make_shared_daemon(config + '[templates.t]\nagents = ["worker", "keeper"]\n')
    assert daemon.sessionc("start", "one", **NOBODY).returncode == 0
    for name in ("worker", "keeper"):
        ran = daemon.sessionc("run", "--name", name, "--restart", "never", "--",
                              "/bin/sh", "-c", CHECKPOINT_SH, **NOBODY)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
    stored = wait_for(
        lambda: len(c := daemon.call("session.export", name="one")["checkpoints"]) == 2 and c,
        what="both of nobody's agents to store a checkpoint",
    )
    assert {c["agent"]: c["data"] for c in stored} == {"worker": {"by": "worker"},
                                                       "keeper": {"by": "keeper"}}  # fmt: skip
    assert daemon.sessionc("stop", **NOBODY).returncode == 0
    two = daemon.call("session.start", name="two", template="t", **{"from": "one"})
    assert two["state"] == "active"
    running = agents_of(daemon)
    worker, keeper = running["worker"]["pid"], running["keeper"]["pid"]
    assert os.stat(f"/proc/{worker}").st_uid == 0
    assert os.stat(f"/proc/{keeper}").st_uid == 65534
    assert "SESSIOND_CHECKPOINT" not in environ(worker)
    # The same uid still gets its checkpoint: only the uid's mismatch withholds it.
    handed = environ(keeper)["SESSIOND_CHECKPOINT"]
    assert json.loads(Path(handed).read_text()) == {"by": "keeper"}


def test_a_cwd_symlink_into_a_directory_the_caller_may_not_enter_is_refused(
    make_shared_daemon, short_tmp
):
    daemon = make_shared_daemon()
    secret = short_tmp / "secret"
    secret.mkdir(mode=0o700)
    inner = secret / "inner"  # itself open: only its parent keeps nobody out
    inner.mkdir(mode=0o755)
    public = short_tmp / "public"
    public.mkdir(mode=0o755)
    os.chown(public, 65534, 65534)
    link = public / "in"
    link.symlink_to(inner)
    os.lchown(link, 65534, 65534)
    assert daemon.sessionc("start", "s", **NOBODY).returncode == 0
    reply = call_as_nobody(daemon, "agent.run", command=["sleep", "100"], name="peek",
                           cwd=str(link))  # fmt: skip
    assert "result" not in reply, f"the agent started: {reply}"
    error = RemoteError.from_wire(reply["error"])
    assert error.code == INVALID_PARAMS
    assert f"may not enter its directory {link}: Permission denied" in error.message
    assert "peek" not in agents_of(daemon)
    assert marked_processes(daemon) == []
    # A symlink into a directory that nobody may enter is followed, as nobody.
    own = public / "own"
    own.mkdir()
    os.chown(own, 65534, 65534)
    (public / "to-own").symlink_to(own)
    ran = call_as_nobody(daemon, "agent.run", command=["sleep", "100"], name="fine",
                         cwd=str(public / "to-own"))  # fmt: skip
    assert "result" in ran, ran
    pid = ran["result"]["pid"]
    assert os.readlink(f"/proc/{pid}/cwd") == str(own)
    assert daemon.sessionc("stop", **NOBODY).returncode == 0
    assert not alive(pid)
