"""Calls on groups of agents (issue 13, item 3): `all` and `--label`, on the real daemon.

agent.start, .stop, .restart and .kill take `names` (a list, or "all") or
`label` instead of `name`, and answer one outcome per agent; sessionc prints a
line for each and exits with the status of the first agent that failed.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from test_agents import SLEEPER, agent, agents_of, ignores_sigterm

from harness import connect_as, read_line, wait_for
from sessiond.cli.client import RemoteError
from sessiond.cli.groups import group_status

WEB = agent("w1", SLEEPER, labels=["web"]) + agent("w2", SLEEPER, labels=["web", "edge"])
CONFIG = WEB + agent("db", SLEEPER) + '[templates.t]\nagents = ["w1", "w2", "db"]\n'
NOBODY = {"user": 65534, "group": 65534}
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEPER


def pids(daemon) -> dict[str, int | None]:
    return {name: a["pid"] for name, a in agents_of(daemon).items()}


@pytest.fixture
def crew(make_daemon):
    """A live session of w1 and w2 (label web) and db (no label), all running."""
    daemon = make_daemon(CONFIG)
    daemon.call("session.start", name="s", template="t")
    return daemon


def test_all_and_a_label_through_sessionc_one_line_per_agent(crew):
    before = pids(crew)
    done = crew.sessionc("agent", "restart", "all")
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "restarted w1\nrestarted w2\nrestarted db\n", ""
    )  # fmt: skip
    after = pids(crew)
    assert all(after[name] not in (None, before[name]) for name in before)
    done = crew.sessionc("agent", "stop", "--label", "web")
    assert (done.returncode, done.stdout) == (0, "stopped w1\nstopped w2\n")
    states = {name: a["state"] for name, a in agents_of(crew).items()}
    assert states == {"w1": "stopped", "w2": "stopped", "db": "running"}
    assert pids(crew)["db"] == after["db"]  # not of the label: left alone
    assert crew.sessionc("agent", "start", "--label", "edge").stdout == "started w2\n"
    outcomes = crew.sessionc_json("agent", "start", "all")
    assert [o["name"] for o in outcomes] == ["w1", "w2", "db"]
    assert all(o["agent"]["state"] == "running" for o in outcomes)


def test_one_agent_keeps_its_output_byte_for_byte(crew):
    done = crew.sessionc("agent", "restart", "w1")
    assert done.returncode == 0 and done.stderr == ""
    assert re.fullmatch(r"agent w1: running, pid \d+\n", done.stdout)
    assert crew.sessionc_json("agent", "stop", "w1")["state"] == "stopped"  # an agent, no list
    missing = crew.sessionc("agent", "stop", "nope")
    assert missing.returncode == 5 and missing.stderr.startswith("sessionc: session s has no")


def test_one_failing_agent_fails_the_exit_status_and_the_others_act(crew):
    crew.call("agent.stop", name="db")
    before = pids(crew)
    done = crew.sessionc("agent", "kill", "all")
    assert done.stdout == "killed w1\nkilled w2\n"
    assert done.stderr == "db: agent db is stopped: no process to signal\n"
    assert done.returncode == 1  # INVALID_STATE's, as `agent kill db` alone
    assert crew.sessionc("agent", "kill", "db").returncode == 1
    # SIGTERM ended them, and their restart policy started them again
    wait_for(lambda: all(pids(crew)[n] not in (None, before[n]) for n in ("w1", "w2")),
             what="w1 and w2 restarted after the kill")  # fmt: skip
    as_json = crew.sessionc("--json", "agent", "kill", "all", "--signal", "CONT")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)[2]["error"]["data"]["name"] == "INVALID_STATE"


def test_the_exit_status_is_the_first_failures() -> None:
    def failed(code: int) -> dict:
        return {"name": "x", "error": {"code": code, "message": "m", "data": {"hint": ""}}}

    agent_ok = {"name": "ok", "agent": {"name": "ok"}}
    assert group_status([agent_ok, failed(-32006), failed(-32005)]) == 5  # AGENT_NOT_FOUND
    assert group_status([failed(-32005), failed(-32006)]) == 1  # INVALID_STATE
    assert group_status([agent_ok]) == 0
    assert group_status({"name": "one agent"}) == 0


def test_groups_by_raw_rpc(crew):
    outcomes = crew.call("agent.stop", names=["db", "nope", "db"])  # db once
    assert [o["name"] for o in outcomes] == ["db", "nope"]
    assert outcomes[0]["agent"]["state"] == "stopped"
    assert outcomes[1]["error"]["code"] == -32006
    assert "its agents: w1, w2, db" in outcomes[1]["error"]["data"]["hint"]
    assert agents_of(crew)["db"]["state"] == "stopped"  # the unknown one stopped nothing else
    started = crew.call("agent.start", names="all")
    assert [(o["name"], o["agent"]["state"]) for o in started] == [
        ("w1", "running"), ("w2", "running"), ("db", "running")
    ]  # fmt: skip
    killed = crew.call("agent.kill", label="edge", signal="HUP")
    assert [o["name"] for o in killed] == ["w2"]
    with pytest.raises(RemoteError) as no_label:
        crew.call("agent.restart", label="nope")
    assert no_label.value.code == -32006
    assert no_label.value.hint == "its labels: edge, web"
    with pytest.raises(RemoteError) as bad_signal:  # the call's own param: no agent is killed
        crew.call("agent.kill", names="all", signal="NOPE")
    assert bad_signal.value.code == -32602


def test_a_group_stops_its_agents_at_once(make_daemon):
    slow = "".join(agent(f"s{i}", STUBBORN, stop_timeout="1s") for i in range(3))
    daemon = make_daemon(slow + '[templates.t]\nagents = ["s0", "s1", "s2"]\n')
    daemon.call("session.start", name="s", template="t")
    # Each has set SIG_IGN: then a stop takes all of stop_timeout.
    wait_for(lambda: all(ignores_sigterm(p) for p in pids(daemon).values() if p),
             what="every agent ignoring SIGTERM")  # fmt: skip
    began = time.monotonic()
    assert len(daemon.call("agent.stop", names="all")) == 3
    assert time.monotonic() - began < 2.5  # one stop_timeout, not three
    assert {a["state"] for a in agents_of(daemon).values()} == {"stopped"}


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"name": "w1", "names": ["w1"]}, "not 'name' and 'names'"),
        ({"names": "all", "label": "web"}, "not 'names' and 'label'"),
        ({}, "give exactly one of the params 'name', 'names' and 'label'"),
        ({"names": []}, "param 'names' must be \"all\" or a list of agent names"),
        ({"names": "every"}, "param 'names' must be \"all\""),
        ({"names": ["w1", 2]}, "param 'names' must be"),
    ],
)
def test_names_and_name_together_are_invalid_params_with_a_hint(crew, params, says):
    before = pids(crew)
    with pytest.raises(RemoteError) as refused:
        crew.call("agent.restart", **params)
    assert refused.value.code == -32602
    assert says in refused.value.message
    assert refused.value.hint == (
        'name one agent with "name", several with "names" (a list, or "all"), or "label"'
    )
    assert pids(crew) == before


def test_the_command_line_takes_one_of_name_all_and_label(crew):
    for argv in (["agent", "restart"], ["agent", "restart", "w1", "--label", "web"]):
        done = crew.sessionc(*argv)
        assert done.returncode == 2 and "usage:" in done.stderr, argv
    none = crew.sessionc("agent", "stop", "--label", "nope")
    assert none.returncode == 5
    assert none.stderr == (
        "sessionc: session s has no agent labelled 'nope'\nhint: its labels: edge, web\n"
    )
    crew.call("session.stop")
    assert crew.sessionc("agent", "restart", "all").returncode == 5  # NO_SESSION


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as uid 65534")
def test_an_observer_is_refused_a_group_as_one_agent(make_shared_daemon):
    daemon = make_shared_daemon(CONFIG)
    daemon.call("session.start", name="s", template="t")
    before = pids(daemon)
    for argv in (["restart", "all"], ["stop", "--label", "web"], ["kill", "w1"]):
        done = daemon.sessionc("agent", *argv, **NOBODY)
        assert done.returncode == 6, (argv, done.stderr)
        assert "may not call agent." in done.stderr and done.stdout == ""
    sock, buf = connect_as(daemon.socket, 65534, 65534), bytearray()
    line = {"jsonrpc": "2.0", "id": 1, "method": "agent.stop", "params": {"names": "all"}}
    sock.sendall(json.dumps(line).encode() + b"\n")
    reply = read_line(sock, buf)
    assert reply["error"]["code"] == -32004, reply
    assert "owner role" in reply["error"]["message"]
    assert pids(daemon) == before
