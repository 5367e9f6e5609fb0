"""tests/etcdcluster.py itself: a real 3-member etcd cluster, as the cluster-lock tests use it."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import etcdcluster
import pytest
from etcdcluster import EtcdCluster


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def leader_index(cluster: EtcdCluster) -> int:
    rows = json.loads(cluster.etcdctl("endpoint", "status", "-w", "json").stdout)
    endpoint_of = {row["Status"]["header"]["member_id"]: row["Endpoint"] for row in rows}
    leaders = {row["Status"]["leader"] for row in rows}
    assert len(leaders) == 1, rows
    return cluster.endpoints.index(endpoint_of[leaders.pop()])


def test_the_cluster_comes_up_healthy_with_three_members(etcd_cluster: EtcdCluster) -> None:
    endpoints = etcd_cluster.endpoints
    assert len(endpoints) == 3
    assert all(e.startswith("http://127.0.0.1:") for e in endpoints)
    assert etcd_cluster.health() == dict.fromkeys(endpoints, True)
    members = json.loads(etcd_cluster.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert sorted(m["name"] for m in members) == ["m0", "m1", "m2"]
    assert sorted(url for m in members for url in m["clientURLs"]) == sorted(endpoints)
    assert len(set(etcd_cluster.pids)) == 3
    assert all(alive(pid) for pid in etcd_cluster.pids)


def test_a_key_put_on_one_member_is_read_on_another(etcd_cluster: EtcdCluster) -> None:
    first, *_, last = etcd_cluster.endpoints
    put = etcd_cluster.etcdctl("put", "/sessiond/test/key", "value 1", endpoints=[first])
    assert put.returncode == 0, put.stderr
    got = etcd_cluster.etcdctl("get", "/sessiond/test/key", "--print-value-only",
                               endpoints=[last])  # fmt: skip
    assert (got.returncode, got.stdout) == (0, "value 1\n"), got.stderr


def test_killing_the_leader_leaves_the_others_healthy(etcd_cluster: EtcdCluster) -> None:
    leader = leader_index(etcd_cluster)
    pid = etcd_cluster.pids[leader]
    etcd_cluster.kill(leader)
    assert not alive(pid)
    others = [i for i in range(3) if i != leader]
    etcd_cluster.wait_healthy(others, timeout=15)  # a new leader, and writes commit again
    endpoints = [etcd_cluster.endpoints[i] for i in others]
    put = etcd_cluster.etcdctl("put", "after", "the leader died", endpoints=endpoints)
    assert put.returncode == 0, put.stderr
    etcd_cluster.restart(leader)
    assert alive(etcd_cluster.pids[leader]) and etcd_cluster.pids[leader] != pid
    got = etcd_cluster.etcdctl("get", "after", "--print-value-only",
                               endpoints=[etcd_cluster.endpoints[leader]])  # fmt: skip
    assert got.stdout == "the leader died\n"  # it caught up with what it missed


def test_a_stopped_member_answers_nothing_until_continued(etcd_cluster: EtcdCluster) -> None:
    etcd_cluster.stop(1)
    try:
        health = etcd_cluster.health()
        assert health[etcd_cluster.endpoints[1]] is False
        etcd_cluster.wait_healthy([0, 2], timeout=15)
    finally:
        etcd_cluster.cont(1)
    etcd_cluster.wait_healthy(timeout=15)


def test_close_leaves_no_etcd_process(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path).start()
    cluster.stop(2)  # a frozen member is ended too
    pids = cluster.pids
    assert len(pids) == 3 and all(alive(pid) for pid in pids)
    cluster.close()
    assert not [pid for pid in pids if alive(pid)]
    cluster.close()  # twice is harmless: nothing of anybody else's is signalled


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_taken_before_etcd_binds_it_means_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    picks: list[int] = []
    real = etcdcluster.free_port

    def pick() -> int:  # the first port handed out is one somebody else holds
        picks.append(real() if picks else taken_port)
        return picks[-1]

    monkeypatch.setattr(etcdcluster, "free_port", pick)
    with EtcdCluster(tmp_path) as cluster:
        assert len(picks) >= 12, "a second round of ports"
        assert taken_port not in cluster.client_ports + cluster.peer_ports
        assert cluster.health() == dict.fromkeys(cluster.endpoints, True)


def test_without_etcd_the_tests_skip_and_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="apt-get install etcd-server etcd-client"):
        EtcdCluster(tmp_path)
