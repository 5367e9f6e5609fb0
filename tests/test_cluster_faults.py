"""The cluster lock under faults (SPEC §10), end to end: the holder's daemon killed or
restarted, etcd's quorum lost, one etcd member down. Hosts A, B are real daemons of one
real 3-member etcd (tests/clusterhosts.py); lease_ttl is 3 s, so the bounds the spec
sets are seconds here."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clusterhosts import (
    CLUSTER_UNAVAILABLE,
    LEASE_TTL,
    SESSION_ACTIVE,
    Hosts,
    agent_pids,
    background_start,
    end,
    finish,
    gone,
    reachable,
    refused,
    sigkill,
)
from etcdcluster import EtcdCluster

from harness import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def hosts(etcd_cluster: EtcdCluster, make_daemon, short_tmp: Path) -> Hosts:
    return Hosts(make_daemon, etcd_cluster.endpoints, short_tmp)


def holds_for(seconds: float, check: Callable[[], None]) -> None:
    """Run `check` (it asserts) over and over for `seconds`: what must not change."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.2)


def leader(cluster: EtcdCluster) -> int:
    rows = json.loads(cluster.etcdctl("endpoint", "status", "-w", "json").stdout)
    ids = {row["Status"]["header"]["member_id"]: row["Endpoint"] for row in rows}
    (lead,) = {row["Status"]["leader"] for row in rows}
    return cluster.endpoints.index(ids[lead])


def test_a_killed_holder_loses_the_lock_within_the_lease(hosts: Hosts) -> None:
    a, b = hosts["hostA"], hosts["hostB"]
    one = a.call("session.start", name="one", template="sleepers")
    pids = agent_pids(a)
    assert len(pids) == 2
    waiter = background_start(b, "two", "--wait")
    try:
        wait_for(lambda: [c["name"] for c in a.call("session.status")["queue"]] == ["two"],
                 what="B in line")  # fmt: skip
        killed = sigkill(a)  # the daemon only: its agents run on, as under systemd
        wait_for(lambda: waiter.poll() is not None, timeout=LEASE_TTL + 5, what="B's start")
        took = time.monotonic() - killed
        code, out, err = finish(waiter)
        assert code == 0, err
        assert (json.loads(out)["name"], json.loads(out)["host"]) == ("two", "hostB")
        assert took <= LEASE_TTL + 1, f"B got the lock {took:.2f}s after A's daemon died"
        assert not any(gone(pid) for pid in pids)  # nobody ended them meanwhile
    finally:
        end(waiter)
    a.restart()  # later than the lease: it finds the lock gone
    ended = wait_for(lambda: (s := a.call("session.get", name="one"))["state"] == "failed" and s,
                     what="A's old session failed")  # fmt: skip
    assert ended["id"] == one["id"]
    assert "cluster lock" in ended["close_reason"], ended["close_reason"]
    wait_for(lambda: all(gone(pid) for pid in pids), timeout=5.0, what="A's old agents gone")
    seen = a.call("session.status")["session"]
    assert (seen["name"], seen["host"]) == ("two", "hostB")
    assert refused(a, "session.start", name="three").code == SESSION_ACTIVE


def test_a_holder_restarted_within_the_lease_keeps_everything(hosts: Hosts) -> None:
    a, b = hosts["hostA"], hosts["hostB"]
    one = a.call("session.start", name="one", template="sleepers")
    pids = agent_pids(a)
    killed = sigkill(a)
    a.restart()
    assert time.monotonic() - killed < LEASE_TTL, "the daemon took longer than the lease"

    def unchanged() -> None:
        seen = a.call("session.status")["session"]
        assert seen is not None, a.log()
        assert (seen["id"], seen["state"], seen["fence"]) == (one["id"], "active", one["fence"])
        assert agent_pids(a) == pids
        error = refused(b, "session.start", name="two")
        assert (error.code, error.data["host"]) == (SESSION_ACTIVE, "hostA")

    holds_for(2 * LEASE_TTL, unchanged)  # renewed by the new daemon, past the old lease
    assert b.call("session.status")["session"]["fence"] == one["fence"]
    assert reachable(a) and reachable(b)


def test_a_lost_quorum_ends_the_holder_before_the_lease_can_expire(
    hosts: Hosts, etcd_cluster: EtcdCluster
) -> None:
    a, b = hosts["hostA"], hosts["hostB"]
    one = a.call("session.start", name="one", template="stubborn")  # stop_timeout 60s
    pids = agent_pids(a)
    assert len(pids) == 2
    # The leader and a follower: a leader left alone still renews leases until it steps
    # down (an election timeout later), a follower forwards renewals to the leader. So no
    # renewal of A's lease succeeds after this instant.
    frozen_members = [leader(etcd_cluster)]
    frozen_members.append(next(i for i in range(3) if i not in frozen_members))
    for i in frozen_members:
        etcd_cluster.stop(i)
    frozen = time.monotonic()
    try:
        wait_for(lambda: all(gone(pid) for pid in pids), timeout=LEASE_TTL + 5,
                 what="A's agents gone")  # fmt: skip
        took = time.monotonic() - frozen
        assert took < LEASE_TTL, f"A's agents were there {took:.2f}s after the quorum went"
        error = refused(b, "session.start", name="two")
        assert error.code == CLUSTER_UNAVAILABLE, error
    finally:
        for i in frozen_members:
            etcd_cluster.cont(i)
    ended = a.call("session.get", name="one")
    assert ended["state"] == "failed" and "cluster lock" in ended["close_reason"], ended
    health = a.call("session.health", name="one")
    assert health["healthy"] is False and "cluster lock" in health["message"], health
    events = a.call("events.tail", session=one["id"], lines=50)
    assert any("cluster lock" in json.dumps(e) for e in events), events
    killed = [line for line in a.log().splitlines() if "SIGKILL" in line]
    assert any("stubborn" in line for line in killed), a.log()  # at 80%, not stop_timeout
    etcd_cluster.wait_healthy()
    wait_for(lambda: reachable(a) and reachable(b), timeout=LEASE_TTL + 5,
             what="A and B reaching etcd again")  # fmt: skip
    two = b.call("session.start", name="two")
    assert (two["host"], two["state"]) == ("hostB", "active")
    assert two["fence"] > one["fence"]


def test_one_etcd_member_down_changes_nothing(hosts: Hosts, etcd_cluster: EtcdCluster) -> None:
    a, b = hosts["hostA"], hosts["hostB"]
    one = a.call("session.start", name="one", template="sleepers")
    pids = agent_pids(a)
    etcd_cluster.kill(next(i for i in range(3) if i != leader(etcd_cluster)))  # a follower

    def unchanged() -> None:
        seen = a.call("session.status")
        assert (seen["session"]["id"], seen["session"]["state"]) == (one["id"], "active")
        assert seen["daemon"]["cluster"]["reachable"] is True
        assert b.call("session.status")["daemon"]["cluster"]["reachable"] is True
        assert refused(b, "session.start", name="two").code == SESSION_ACTIVE

    holds_for(2 * LEASE_TTL, unchanged)
    assert not any(gone(pid) for pid in pids)
