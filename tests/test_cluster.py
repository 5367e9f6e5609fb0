"""One session lock across hosts, on a real 3-member etcd (SPEC §10), end to end: several
real daemons on this machine play hosts A, B, C of one cluster (tests/clusterhosts.py).
The faults (a daemon killed, etcd members down) are in test_cluster_faults.py."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from clusterhosts import (
    CLUSTER_UNAVAILABLE,
    LEASE_TTL,
    LOCK_NAME,
    REMOTE_SESSION,
    SESSION_ACTIVE,
    Hosts,
    background_start,
    end,
    finish,
    journal_says,
    race,
    reachable,
    refused,
)
from etcdcluster import EtcdCluster, free_port

from harness import DaemonProcess, wait_for

pytestmark = pytest.mark.timeout(60)
USER = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def hosts(etcd_cluster: EtcdCluster, make_daemon, short_tmp: Path) -> Hosts:
    return Hosts(make_daemon, etcd_cluster.endpoints, short_tmp)


def test_a_session_on_one_host_is_active_on_every_host(hosts: Hosts) -> None:
    a, b = hosts["hostA"], hosts["hostB"]
    a.call("session.start", name="one")
    error = refused(b, "session.start", name="two")  # at once: A's start has returned
    assert error.code == SESSION_ACTIVE and error.name == "SESSION_ACTIVE"
    assert "session 'one' is already active on host hostA" in str(error), error
    assert {k: error.data[k] for k in ("session", "owner", "host")} == {
        "session": "one", "owner": USER, "host": "hostA"}  # fmt: skip
    done = b.sessionc("start", "two")
    assert done.returncode == 4, done.stderr
    assert "session 'one' is already active on host hostA" in done.stderr
    assert "ssh hostA sessionc join one" in done.stderr
    assert b.call("session.history") == []  # nothing of it was started on B


def test_a_start_as_soon_as_the_daemon_is_ready_takes_the_lock(hosts: Hosts) -> None:
    # READY=1 means no start-up work is left (SPEC §8), and etcd is healthy: the lock is
    # there to take, not CLUSTER_UNAVAILABLE.
    daemon = hosts.add("hostA", hosts.endpoints, settle=False)
    session = daemon.call("session.start", name="early")
    assert (session["name"], session["host"], session["state"]) == ("early", "hostA", "active")


def host_seen(daemon: DaemonProcess) -> str | None:
    """Where the cluster's live session runs, as `daemon` sees it."""
    return (daemon.call("session.status")["session"] or {}).get("host")


def test_racing_starts_on_three_hosts_have_one_winner(hosts: Hosts) -> None:
    daemons = [hosts[host] for host in ("hostA", "hostB", "hostC")]
    for round_ in range(3):
        replies = race(daemons, "session.start", {"name": f"race{round_}"})
        winners = [i for i, reply in enumerate(replies) if "result" in reply]
        assert len(winners) == 1, replies
        losers = [reply for reply in replies if "result" not in reply]
        assert [reply["error"]["code"] for reply in losers] == [SESSION_ACTIVE] * 2, replies
        winner = daemons[winners[0]]
        host = replies[winners[0]]["result"]["host"]
        assert host == f"host{'ABC'[winners[0]]}"
        for daemon in daemons:  # every host agrees on where it runs
            wait_for(lambda d=daemon, h=host: host_seen(d) == h, what=f"the session on {host}")
        winner.call("session.stop")
        for daemon in daemons:
            wait_for(lambda d=daemon: d.call("session.status")["session"] is None,
                     what="the lock free everywhere")  # fmt: skip


def test_a_started_session_is_not_in_the_queue_of_its_own_host(hosts: Hosts) -> None:
    a = hosts["hostA"]
    session = a.call("session.start", name="one")
    status = a.call("session.status")
    assert status["session"]["id"] == session["id"]
    assert status["queue"] == [], "the session that holds the lock is also shown waiting"


def test_a_stopped_session_frees_the_lock_on_every_host(hosts: Hosts) -> None:
    daemons = [hosts[host] for host in ("hostA", "hostB", "hostC")]
    fences = []
    for n in range(12):
        here, there = daemons[n % 3], daemons[(n + 1) % 3]
        fences.append(here.call("session.start", name=f"s{n}")["fence"])
        wait_for(lambda d=there: d.call("session.status")["session"], what=f"s{n} seen elsewhere")
        here.call("session.stop")
        for daemon in daemons:
            wait_for(lambda d=daemon: d.call("session.status")["session"] is None,
                     timeout=LEASE_TTL, what=f"the lock free on every host after s{n}")  # fmt: skip
    assert fences == sorted(set(fences)), fences


def queue_of(hosts: Hosts, host: str) -> list[tuple[str, str]]:
    return [(c["name"], c["host"]) for c in hosts[host].call("session.status")["queue"]]


def test_start_wait_queues_across_hosts_first_come_first_served(hosts: Hosts) -> None:
    a, b, c = hosts["hostA"], hosts["hostB"], hosts["hostC"]
    a.call("session.start", name="first")
    second = background_start(b, "second", "--wait")
    try:
        wait_for(lambda: queue_of(hosts, "hostA") == [("second", "hostB")], what="B in line")
        third = background_start(c, "third", "--wait")
        try:
            line = [("second", "hostB"), ("third", "hostC")]
            for host in ("hostA", "hostB", "hostC"):
                wait_for(lambda h=host: queue_of(hosts, h) == line, what=f"the line on {host}")
            assert c.call("session.status")["session"]["name"] == "first"
            a.call("session.stop")
            code, out, err = finish(second)
            assert code == 0, err
            started = json.loads(out)
            assert (started["name"], started["host"]) == ("second", "hostB")
            assert third.poll() is None  # still in line, now first
            wait_for(lambda: queue_of(hosts, "hostA") == [("third", "hostC")], what="C first")
            assert b.call("session.status")["session"]["name"] == "second"
            b.call("session.stop")
            code, out, err = finish(third)
            assert code == 0, err
            assert (json.loads(out)["name"], json.loads(out)["host"]) == ("third", "hostC")
            wait_for(lambda: queue_of(hosts, "hostA") == [], what="nobody left in line")
        finally:
            end(third)
    finally:
        end(second)


def test_fences_grow_across_hosts_and_reach_the_agents(hosts: Hosts) -> None:
    fences = []
    for n, host in enumerate(("hostA", "hostB", "hostC", "hostA", "hostB")):
        daemon = hosts[host]
        session = daemon.call("session.start", name=f"s{n}", template="fence")
        assert session["host"] == host
        assert hosts.fence_of(f"s{n}") == session["fence"]
        assert daemon.call("session.get", name=f"s{n}")["fence"] == session["fence"]
        fences.append(session["fence"])
        daemon.call("session.stop")
    assert fences == sorted(set(fences)) and fences[0] > 0, fences


def test_calls_that_act_where_the_session_runs_are_refused_elsewhere(hosts: Hosts) -> None:
    a, b = hosts["hostA"], hosts["hostB"]
    session = a.call("session.start", name="one", template="sleepers")
    wait_for(lambda: b.call("session.status")["session"], what="A's session, seen on B")
    calls = [
        ("session.join", {}), ("session.join", {"name": "one"}), ("session.stop", {}),
        ("session.pause", {}), ("agent.restart", {"name": "sleeper"}),
        ("logs.tail", {"agent": "sleeper"}),
        # Whatever else is wrong with them, the host is the first thing said.
        ("session.stop", {"name": "another"}), ("agent.restart", {"name": "nosuch"}),
        ("logs.tail", {}), ("session.pause", {"reason": 7}), ("session.touch", {"x": 1}),
    ]  # fmt: skip
    for method, params in calls:
        error = refused(b, method, **params)
        assert (error.code, error.name) == (REMOTE_SESSION, "REMOTE_SESSION"), (method, error)
        assert "ssh hostA" in error.hint, (method, error.hint)
    done = b.sessionc("join", "one")
    assert done.returncode == 4, done.stderr
    assert "ssh hostA sessionc join one" in done.stderr
    # Read-only calls answer on B, with what A published.
    seen = b.call("session.status")
    assert (seen["session"]["name"], seen["session"]["host"]) == ("one", "hostA")
    assert seen["session"]["fence"] == session["fence"]
    assert seen["daemon"]["cluster"] == {
        "backend": "etcd", "name": LOCK_NAME, "host": "hostB", "reachable": True}  # fmt: skip
    got = b.call("session.get", name="one")
    for key in ("name", "id", "state", "owner", "host", "fence", "started_at", "expires_at"):
        assert key in got, key
    assert (got["id"], got["host"], got["fence"]) == (session["id"], "hostA", session["fence"])
    assert (got["state"], got["owner"]["user"]) == ("active", USER)
    assert got["started_at"] == session["started_at"]
    health = b.call("session.health")
    assert health["healthy"] is True and "hostA" in health["message"], health
    assert b.call("agent.list") == []
    assert len(a.call("agent.list")) == 2  # nothing on A moved
    assert a.call("session.status")["session"]["state"] == "active"


def test_a_daemon_serves_while_etcd_is_unreachable(make_daemon, short_tmp: Path) -> None:
    closed = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]  # nobody listens there
    lone = Hosts(make_daemon, closed, short_tmp).add("hostX", closed, settle=False)
    wait_for(lambda: not reachable(lone), timeout=LEASE_TTL, what="reachable false")
    status = lone.call("session.status")
    assert status["daemon"]["cluster"] == {
        "backend": "etcd", "name": LOCK_NAME, "host": "hostX", "reachable": False}  # fmt: skip
    assert (status["session"], status["queue"]) == (None, [])
    error = refused(lone, "session.start", name="x")
    assert (error.code, error.name) == (CLUSTER_UNAVAILABLE, "CLUSTER_UNAVAILABLE")
    for endpoint in closed:
        assert endpoint.removeprefix("http://") in str(error), error
    done = lone.sessionc("start", "x")
    assert done.returncode == 8, done.stderr
    assert closed[0].removeprefix("http://") in done.stderr
    assert lone.call("session.history") == []
    # It says so in STATUS= and in the journal (at a level a default daemon logs).
    wait_for(lambda: lone.read_notices(0.1) or any(
        n.startswith("STATUS=") and "unreachable" in n.lower() for n in lone.notices),
        timeout=LEASE_TTL, what="STATUS= saying etcd is unreachable")  # fmt: skip
    journal_says(lone, ("etcd", "unreachable"), LEASE_TTL)


def test_check_config_names_etcd_without_reaching_it(make_daemon, short_tmp: Path) -> None:
    endpoints = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    daemon = Hosts(make_daemon, endpoints, short_tmp).add("hostA", endpoints, start=False)
    sessiond = Path(sys.executable).parent / "sessiond"  # the installed one
    done = subprocess.run([str(sessiond), "--check-config", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"{daemon.config_path}: configuration is valid; cluster backend: "
                           f"etcd (name {LOCK_NAME}, 3 endpoints)\n")  # fmt: skip
