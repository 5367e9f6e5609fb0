"""Which lock a daemon keeps: the machine's, or a cluster's (SPEC §10)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sessiond.core.settings import ClusterSettings
from sessiond.daemon.clock import Clock
from sessiond.daemon.locks import LockService, Spawn
from sessiond.daemon.locks.local import LocalLock


def lock_for(
    cluster: ClusterSettings, host: str, clock: Clock, spawn: Spawn, next_fence: Callable[[], int]
) -> LockService:
    """The lock [cluster] asks for; an etcd one is kept (lease, watch) by a task of `spawn`'s."""
    if cluster.backend != "etcd":
        return LocalLock(host, next_fence)
    from sessiond.daemon.locks.etcd import EtcdLock  # noqa: PLC0415 -- grpc: only for a cluster

    lock = EtcdLock(cluster, host, clock, spawn)
    lock.task = spawn(lock.run())
    return lock


def describe(lock: LockService) -> dict[str, Any]:
    """`daemon.cluster` of session.status: whose lock this is, and whether it answers."""
    return {"backend": lock.backend, "name": lock.name, "host": lock.host,
            "reachable": lock.reachable}  # fmt: skip
