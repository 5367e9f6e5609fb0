"""The etcd client: etcd3aio, used as a transport only (KV, lease and watch calls).

Chosen over aetcd because it balances over several endpoints (one member
down changes nothing) and speaks TLS; its own Lock is not used (lost its
lease in a test, and etcd-io/etcd#9921). Both are imported only with
`backend = "etcd"`: grpc costs ~130 ms of start-up that a local daemon
does not pay.

gRPC's round-robin target takes addresses, not names: host names in
`endpoints` are resolved here, once, off the event loop. With TLS, the
certificate must name the first endpoint's host (gRPC checks one name for
the whole list); without `ca_file`, the system's CA certificates are used.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from etcd3aio import Etcd3Client, EtcdError
from etcd3aio.kv import KVService
from etcd3aio.lease import LeaseService
from etcd3aio.watch import WatchService

if TYPE_CHECKING:
    from sessiond.core.settings import ClusterSettings

# What a call to etcd may raise when a member is down, there is no leader, or the
# network is cut: all of it means "not now", never a bug of ours.
FAILURES = (EtcdError, grpc.RpcError, TimeoutError, OSError)
SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's bundle


@dataclass(frozen=True)
class Etcd:
    """The three services sessiond calls, on one channel."""

    kv: KVService
    lease: LeaseService
    watch: WatchService


async def connect(settings: ClusterSettings) -> Etcd:
    """A connected client over every endpoint (raises OSError if no name resolves)."""
    addresses = await asyncio.to_thread(_resolve, settings.addresses())
    ca = chain = key = None
    server_name = None
    if settings.tls:
        ca = (Path(settings.ca_file) if settings.ca_file else SYSTEM_CAS).read_bytes()
        if settings.cert_file:
            chain = Path(settings.cert_file).read_bytes()
            key = Path(settings.key_file).read_bytes()
        server_name = settings.addresses()[0].rpartition(":")[0]
    # The lease says once that etcd is unreachable (and again when it is back); the
    # client's watch would say so every few seconds for as long as it lasts.
    logging.getLogger("etcd3aio").setLevel(logging.ERROR)
    # Retries are the lease's and the lock's to decide: one attempt per call here.
    client = Etcd3Client(addresses, rpc_max_attempts=1, tls_server_name=server_name,
                         ca_cert=ca, cert_chain=chain, cert_key=key)  # fmt: skip
    await client.connect()
    assert client.kv and client.lease and client.watch  # connect() made them
    return Etcd(client.kv, client.lease, client.watch)


def _resolve(addresses: tuple[str, ...]) -> list[str]:
    found = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue  # a name that does not resolve now is a member down: the others serve
        found.append(f"{infos[0][4][0]}:{port}")
    if not found:
        raise OSError(f"no etcd endpoint resolves: {', '.join(addresses)}")
    return found
