"""Network awareness: a real daemon in its own network namespace, a veth pair, real routes.

The daemon runs under `ip netns exec`, so the default route it watches is the
namespace's; the tests take it away and give it back with `ip route` and see
the agents stop (state T) and continue, and the session go `suspended` and back.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from test_agents import SLEEPER, agent, agents_of, proc_state

from harness import fill, wait_for
from sessiond.cli.client import RemoteError
from sessiond.daemon.netwatch import Route, is_online

GATEWAY = "10.77.0.2"


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = ("ip", "netns", "exec", name)

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True)

    def route_down(self) -> None:
        self.ip("route", "del", "default")

    def route_up(self) -> None:
        self.ip("route", "add", "default", "via", GATEWAY, "dev", "v0")


@pytest.fixture
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace and a veth pair")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip (apt-get install iproute2)")
    ns = Netns(f"sdt-{uuid.uuid4().hex[:8]}")
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    try:
        # The dummy link type is missing from these kernels: a veth pair has a carrier.
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        for link in ("lo", "v0", "v1"):
            ns.ip("link", "set", link, "up")
        ns.ip("addr", "add", "10.77.0.1/24", "dev", "v0")
        ns.route_up()
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=False)


def network_config(grace: str) -> str:
    return (
        f'[daemon]\nnetwork_grace = "{grace}"\n'
        + agent("net", SLEEPER, needs_network=True)
        + agent("local", SLEEPER)
        + '[templates.t]\nagents = ["net", "local"]\n'
    )


def started(make_daemon, netns: Netns, grace: str = "1s"):
    """A daemon in the namespace running session s of template t, and its net agent's pid."""
    daemon = make_daemon(network_config(grace), prefix=netns.prefix)
    daemon.call("session.start", name="s", template="t")
    return daemon, agents_of(daemon)["net"]["pid"]


def kinds(daemon) -> list[str]:
    return [e["kind"] for e in daemon.call("events.tail", lines=200)]


def event_time(daemon, kind: str) -> float:
    found = [e for e in daemon.call("events.tail", lines=200) if e["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} event, got {found}"
    return dt.datetime.fromisoformat(found[0]["time"]).timestamp()


def state(daemon) -> str:
    return daemon.call("session.status")["session"]["state"]


def test_route_loss_suspends_network_agents_and_its_return_resumes_them(make_daemon, netns):
    daemon, net = started(make_daemon, netns)
    local = agents_of(daemon)["local"]["pid"]

    netns.route_down()
    wait_for(lambda: proc_state(net) == "T" and state(daemon) == "suspended",
             timeout=2, what="the network agent stopped and the session suspended")  # fmt: skip
    session = daemon.call("session.status")["session"]
    assert session["pause_reason"] == "network down"
    assert proc_state(local) != "T", "an agent without needs_network keeps running"
    assert agents_of(daemon)["net"]["state"] == "paused"
    assert daemon.call("session.health")["status"] == "suspended"
    assert "network.down" in kinds(daemon) and "session.suspended" in kinds(daemon)

    back = time.time()
    netns.route_up()
    wait_for(lambda: state(daemon) == "active" and proc_state(net) not in ("T", None),
             timeout=5, what="the session active again and the agent running")  # fmt: skip
    assert event_time(daemon, "session.resumed") >= back + 1.0, "resumed before the grace"
    assert agents_of(daemon)["net"]["pid"] == net, "resumed, not restarted"
    assert {"network.up", "session.resumed"} <= set(kinds(daemon))

    netns.ip("link", "set", "v0", "down")  # the interface of the default route goes down
    wait_for(lambda: proc_state(net) == "T" and state(daemon) == "suspended",
             timeout=2, what="suspended again when the route's interface went down")  # fmt: skip


def test_a_daemon_restarted_while_offline_keeps_the_session_suspended(make_daemon, netns):
    daemon, net = started(make_daemon, netns)
    netns.route_down()
    wait_for(lambda: state(daemon) == "suspended", timeout=2, what="suspended")
    daemon.kill9()
    daemon.restart()
    wait_for(lambda: kinds(daemon).count("network.down") == 2, what="the new daemon's reading")
    assert state(daemon) == "suspended" and proc_state(net) == "T"
    assert agents_of(daemon)["net"]["pid"] == net, "adopted, still stopped"
    netns.route_up()
    wait_for(lambda: state(daemon) == "active" and proc_state(net) not in ("T", None),
             timeout=5, what="resumed by the new daemon")  # fmt: skip


def test_a_user_resume_while_offline_leaves_network_agents_stopped(make_daemon, netns):
    daemon, net = started(make_daemon, netns)
    local = agents_of(daemon)["local"]["pid"]
    daemon.call("session.pause")
    netns.route_down()
    wait_for(lambda: "network.down" in kinds(daemon), timeout=2, what="the network.down event")
    assert state(daemon) == "paused", "a user's pause outranks the network"
    daemon.call("session.resume")
    wait_for(lambda: state(daemon) == "suspended", timeout=2, what="suspended after the resume")
    assert proc_state(net) == "T" and proc_state(local) != "T"
    net_events = [e["kind"] for e in daemon.call("events.tail", lines=200)
                  if e["message"].startswith("agent net ")]  # fmt: skip
    assert net_events == ["agent.started", "agent.paused"], "never continued while offline"


def test_an_agent_found_running_after_a_crash_is_stopped_again(make_daemon, netns):
    daemon, net = started(make_daemon, netns)
    netns.route_down()
    wait_for(lambda: proc_state(net) == "T", timeout=2, what="the agent stopped")
    daemon.kill9()
    # What a crash between the session's move and the agent's row would leave behind.
    os.kill(net, signal.SIGCONT)
    wait_for(lambda: proc_state(net) != "T", what="the agent running without a daemon")
    daemon.restart()
    wait_for(lambda: proc_state(net) == "T", timeout=2, what="stopped again by the new daemon")
    assert state(daemon) == "suspended" and agents_of(daemon)["net"]["state"] == "paused"


def test_a_return_the_disk_cannot_record_resumes_once_it_can(make_daemon, netns, tiny_state_dir):
    daemon = make_daemon(network_config("0.5s"), start=False, prefix=netns.prefix)
    daemon.state_dir = tiny_state_dir / "state"
    daemon.start()
    daemon.call("session.start", name="s", template="t")
    net = agents_of(daemon)["net"]["pid"]
    netns.route_down()
    wait_for(lambda: state(daemon) == "suspended", timeout=2, what="suspended")
    filler = fill(tiny_state_dir)
    with pytest.raises(RemoteError) as full:
        for _ in range(50):  # the WAL may hold a few pages' slack
            daemon.call("session.touch")
    assert full.value.code == -32010
    netns.route_up()
    wait_for(lambda: "retrying in 1s" in daemon.log(), what="the failed resume, to be retried")
    assert state(daemon) == "suspended" and proc_state(net) == "T"
    filler.unlink()
    wait_for(lambda: state(daemon) == "active" and proc_state(net) != "T",
             timeout=5, what="resumed by the retry")  # fmt: skip


def test_a_flap_shorter_than_the_grace_changes_nothing(make_daemon, netns):
    grace = 4.0
    daemon, net = started(make_daemon, netns, f"{grace:g}s")
    netns.route_down()
    wait_for(lambda: state(daemon) == "suspended", timeout=2, what="suspended")

    netns.route_up()
    # The flap itself: the route is back for half the grace, then gone again. These
    # sleeps shape the stimulus; every outcome below is waited for, not slept for.
    time.sleep(grace / 2)
    assert state(daemon) == "suspended" and proc_state(net) == "T"
    netns.route_down()
    time.sleep(0.5)
    assert state(daemon) == "suspended" and proc_state(net) == "T"

    back = time.time()
    netns.route_up()
    wait_for(lambda: state(daemon) == "active", timeout=grace + 4, what="resumed after the flap")
    # Had the flap been taken for a return, the resume would have come grace/2 - 0.5 s
    # after the first return, that is 1.5 s before this bound.
    assert event_time(daemon, "session.resumed") >= back + grace - 1.0
    assert kinds(daemon).count("network.down") == 1
    assert kinds(daemon).count("network.up") == 1


def test_an_agent_that_needs_the_network_started_while_it_is_down_is_held(make_daemon, netns):
    daemon = make_daemon('[daemon]\nnetwork_grace = "1s"\n', prefix=netns.prefix)
    daemon.call("session.start", name="plain")
    assert daemon.sessionc("run", "--name", "calc", "--", "sleep", "1000").returncode == 0
    netns.route_down()
    # No agent needs the network yet: the daemon does not even watch it (pyroute2 unloaded).
    run = daemon.sessionc("run", "--needs-network", "--name", "fetch", "--", "sleep", "1000")
    assert run.returncode == 0, run.stderr
    wait_for(lambda: state(daemon) == "suspended", timeout=2, what="suspended by the new agent")
    pid, calc = (agents_of(daemon)[n]["pid"] for n in ("fetch", "calc"))
    wait_for(lambda: proc_state(pid) == "T", timeout=2, what="the new agent stopped")
    assert proc_state(calc) != "T"
    events = [(e["kind"], e["message"]) for e in daemon.call("events.tail", lines=200)]
    down = next(i for i, (kind, _) in enumerate(events) if kind == "network.down")
    fetch = [kind for kind, message in events if "agent fetch" in message]
    assert fetch == ["agent.started", "agent.paused"], events
    assert down > events.index(("agent.started", f"agent fetch started (pid {pid})")), events
    netns.route_up()
    wait_for(lambda: state(daemon) == "active" and proc_state(pid) != "T",
             timeout=5, what="resumed")  # fmt: skip


def test_without_rtnetlink_agents_run_and_the_daemon_says_so(make_daemon, short_tmp):
    # What a sandbox without AF_NETLINK looks like from inside: pyroute2 cannot be had.
    shadow = short_tmp / "no-netlink"
    shadow.mkdir()
    (shadow / "pyroute2.py").write_text("raise ImportError('rtnetlink blocked for this test')\n")
    daemon = make_daemon(network_config("1s"), env={"PYTHONPATH": str(shadow)})
    daemon.call("session.start", name="s", template="t")
    wait_for(lambda: "network.unwatched" in kinds(daemon), what="the network.unwatched event")
    assert "<4>network awareness is off (rtnetlink: rtnetlink blocked" in daemon.log()
    net = agents_of(daemon)["net"]
    assert net["state"] == "running" and proc_state(net["pid"]) != "T"
    assert state(daemon) == "active"


@pytest.mark.parametrize(
    ("up", "defaults", "online"),
    [
        ([2], [Route((2,))], True),
        ([], [Route((2,))], False),  # the route's interface is down
        ([2], [], False),  # no default route
        ([3], [Route((2, 3))], True),  # multipath: one hop is enough
        ([], [Route(())], True),  # a nexthop object: no device to judge by
    ],
)
def test_online_means_a_default_route_via_an_interface_that_is_up(up, defaults, online):
    assert is_online(up, defaults) is online
