"""Who is at the other end of a connection, from the kernel's word only (STYLE 7).

SO_PEERCRED gives the uid, gid and pid, SO_PEERGROUPS the supplementary
groups; both become one `Peer` at accept. Whether the peer is still there
after a half-close is asked of the socket too (`gone`).
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import struct

from sessiond.daemon.access import Peer, groups_of

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


def peer_of(sock: socket.socket) -> Peer:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(uid=uid, gid=gid, pid=pid, groups=_peer_groups(sock, uid, gid))


def _peer_groups(sock: socket.socket, uid: int, gid: int) -> frozenset[int]:
    size = 64
    while size <= 65536:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size * 4)
        except OSError as exc:
            if exc.errno == errno.ERANGE:  # more groups than fit
                size *= 4
                continue
            return groups_of(uid, gid)  # kernels before 4.13
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw))
    return groups_of(uid, gid)


def gone(transport: asyncio.Transport | None) -> bool:
    """Whether the peer closed both ways: a Unix socket then reports POLLHUP, which poll
    always reports (no event asked for); a half-close (shutdown(SHUT_WR)) does not."""
    if transport is None:
        return True
    poller = select.poll()
    poller.register(transport.get_extra_info("socket").fileno(), 0)
    return bool(poller.poll(0))
