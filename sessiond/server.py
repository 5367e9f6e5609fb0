"""The Unix socket server: framing, limits, peers, subscribers.

One `Connection` (an asyncio.Protocol) per client. Bytes are split into
lines as they arrive; complete lines go to a bounded per-connection queue
that one worker task drains in order, so a connection's replies come back in
the order of its requests. Limits (SPEC §6):

  * a line longer than max_request_bytes → -32600, connection closed;
  * a line left half-sent for client_timeout → connection closed;
  * more than max_clients connections, or max_clients_per_user of one uid
    → one LIMIT_REACHED line, closed (root and admins are always let in:
    one user's connections must never lock out the people who can fix it);
  * no request, none in progress and no subscription for idle_client_timeout
    → closed;
  * a queue of more than QUEUE_MAX unanswered lines → reading paused;
  * replies unsent past REPLY_BUFFER_MAX (the client is not reading) → no more
    of its lines are answered or read until they drain; a subscriber that far
    behind is dropped.

The peer is identified once, at accept, from SO_PEERCRED (and SO_PEERGROUPS
for supplementary groups), never from anything the client sends.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .access import Peer, groups_of, is_admin
from .errors import INVALID_REQUEST, LimitReached

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("sessiond.server")

QUEUE_MAX = 64
REPLY_BUFFER_MAX = 4 * 1024 * 1024
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


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
            if exc.errno == 34:  # ERANGE: more groups than fit
                size *= 4
                continue
            return groups_of(uid, gid)  # kernels before 4.13
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw))
    return groups_of(uid, gid)


def invalid_request(message: str, hint: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0", "id": None,
        "error": {"code": INVALID_REQUEST, "message": message,
                  "data": {"message": message, "hint": hint}},
    }  # fmt: skip


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.lines: collections.deque[bytes] = collections.deque()
        self.ready = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.cutoff: asyncio.TimerHandle | None = None
        self.worker: asyncio.Task[None] | None = None
        self.topics: frozenset[str] = frozenset()
        self.peer: Peer | None = None
        self.privileged = False  # root or an admin: no connection limit applies
        self.busy = False  # the worker has a request that must wait
        self.last_request = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = peer_of(transport.get_extra_info("socket"))
        self.privileged = is_admin(self.peer, self.server.daemon.admin_gid)
        refusal = None if self.privileged else self.server.refusal(self.peer.uid)
        if refusal is not None:
            transport.write(encode({"jsonrpc": "2.0", "id": None, "error": refusal.to_wire()}))
            transport.close()
            return
        transport.set_write_buffer_limits(high=REPLY_BUFFER_MAX)
        self.server.admit(self)
        self.worker = self.server.spawn(self._work())
        self.last_request = asyncio.get_running_loop().time()
        self._arm_idle(self.server.limits.idle_client_timeout)

    def data_received(self, data: bytes) -> None:
        self.last_request = asyncio.get_running_loop().time()
        self.buffer += data
        limit = self.server.limits.max_request_bytes
        start = 0  # one cut at the end: a read of 3,000 pipelined lines is not 3,000 moves
        while (end := self.buffer.find(b"\n", start)) >= 0:
            if end - start > limit:
                return self._refuse_oversized()
            self.lines.append(bytes(self.buffer[start:end]))
            start = end + 1
        del self.buffer[:start]
        if len(self.buffer) > limit:
            return self._refuse_oversized()
        self._watch_partial_line()
        self.answer_ready_lines()
        if len(self.lines) >= QUEUE_MAX and self.transport is not None:
            self.transport.pause_reading()

    def answer_ready_lines(self) -> None:
        """Answer queued lines at once while they need no waiting; hand the rest to the worker."""
        while self.lines and not self.busy and self.writable.is_set():
            reply = self.server.answer_now(self.lines[0], self)
            if reply is None:
                self.busy = True
                self.ready.set()
                return
            self.lines.popleft()
            self.send(reply)
        if self.transport is not None and len(self.lines) < QUEUE_MAX and self.writable.is_set():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.release(self)
        for timer in (self.cutoff, self.idle_timer):
            if timer is not None:
                timer.cancel()
        if self.worker is not None:
            self.worker.cancel()

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests.
        self.writable.clear()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        if not self.busy:
            self.answer_ready_lines()  # resumes reading once the queue is short again

    # -- framing and limits --------------------------------------------------

    def _refuse_oversized(self) -> None:
        self.answer_ready_lines()  # what came before it in the same read is still answered
        limit = self.server.limits.max_request_bytes
        self._send_now(invalid_request(
            f"request too large: more than max_request_bytes ({limit}) before a newline",
            "send one JSON-RPC request per line, each under max_request_bytes",
        ))  # fmt: skip
        self.buffer.clear()
        self.close()

    def _watch_partial_line(self) -> None:
        if not self.buffer:
            if self.cutoff is not None:
                self.cutoff.cancel()
                self.cutoff = None
        elif self.cutoff is None:
            timeout = self.server.limits.client_timeout
            self.cutoff = asyncio.get_running_loop().call_later(timeout, self._stalled)

    def _stalled(self) -> None:
        log.info(
            "closing a connection from uid %s: half-sent request for %ss",
            self.peer.uid if self.peer else "?",
            self.server.limits.client_timeout,
        )
        self.close()

    def _arm_idle(self, after: float) -> None:
        self.idle_timer = asyncio.get_running_loop().call_later(after, self._idle_check)

    def _idle_check(self) -> None:
        """Close a connection that has done nothing for idle_client_timeout; else look later."""
        timeout = self.server.limits.idle_client_timeout
        waited = asyncio.get_running_loop().time() - self.last_request
        if self.topics or self.busy or self.lines or self.buffer or waited < timeout:
            self._arm_idle(max(timeout - waited, 1.0))
            return
        log.info("closing a connection from uid %s: idle for %ss",
                 self.peer.uid if self.peer else "?", timeout)  # fmt: skip
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _send_now(self, message: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(message))

    # -- requests ------------------------------------------------------------

    def send(self, reply: str) -> None:
        if reply and self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.encode() + b"\n")

    async def _work(self) -> None:
        """Answer, in order, the requests that must wait (the lock, agents stopping)."""
        try:
            while True:
                await self.ready.wait()
                self.ready.clear()
                reply = await self.server.answer(self.lines.popleft(), self)
                await self.writable.wait()
                self.send(reply)
                self.busy = False
                self.answer_ready_lines()
        except asyncio.CancelledError:
            pass  # the client went away; whatever it was waiting for is abandoned
        except Exception:  # one broken connection must not end the daemon
            log.exception("internal error while serving a connection; closing it")
            self.close()

    # -- subscriptions -------------------------------------------------------

    def subscribe(self, topics: frozenset[str]) -> None:
        self.topics |= topics

    def notify(self, topic: str, method: str, params: dict[str, Any]) -> None:
        if topic not in self.topics or self.transport is None or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > REPLY_BUFFER_MAX:
            log.warning(
                "dropping a subscriber (uid %s): it reads slower than events come",
                self.peer.uid if self.peer else "?",
            )
            self.close()
            return
        self.transport.write(encode({"jsonrpc": "2.0", "method": method, "params": params}))


@dataclass(frozen=True)
class Limits:
    max_clients: int
    max_clients_per_user: int
    idle_client_timeout: float
    max_request_bytes: int
    client_timeout: float


class Server:
    """Accepts connections and answers each line through `rpc.dispatch`."""

    def __init__(self, daemon: Daemon, limits: Limits, spawn: Spawn) -> None:
        self.daemon = daemon
        self.limits = limits
        self.spawn = spawn
        self.connections: set[Connection] = set()
        self.per_uid: collections.Counter[int] = collections.Counter()
        self._rpc: Any = None

    def refusal(self, uid: int) -> LimitReached | None:
        """Why a new connection of `uid` (neither root nor an admin) is not let in, if so."""
        limits = self.limits
        if len(self.connections) >= limits.max_clients:
            return LimitReached(
                f"too many clients: {limits.max_clients} connections already",
                "retry later, or raise max_clients in the [daemon] config",
            )
        if self.per_uid[uid] >= limits.max_clients_per_user:
            return LimitReached(
                f"too many connections of uid {uid}: {limits.max_clients_per_user} already",
                "close some (or wait for idle ones to time out), or raise "
                "max_clients_per_user in the [daemon] config",
            )
        return None

    def admit(self, conn: Connection) -> None:
        assert conn.peer is not None
        self.connections.add(conn)
        self.per_uid[conn.peer.uid] += 1

    def release(self, conn: Connection) -> None:
        if conn in self.connections and conn.peer is not None:
            self.connections.discard(conn)
            self.per_uid[conn.peer.uid] -= 1
            if not self.per_uid[conn.peer.uid]:
                del self.per_uid[conn.peer.uid]

    def load_rpc(self) -> Any:
        """Import the dispatcher (and jsonrpcserver) on first use: start-up does not need it."""
        if self._rpc is None:
            from . import rpc  # noqa: PLC0415 -- deferred past READY=1 on purpose

            self._rpc = rpc
        return self._rpc

    def _context(self, conn: Connection) -> Any:
        assert conn.peer is not None
        admin = is_admin(conn.peer, self.daemon.admin_gid)
        return self.load_rpc().Ctx(conn.peer, admin, self.daemon, conn)

    def answer_now(self, line: bytes, conn: Connection) -> str | None:
        rpc = self.load_rpc()
        return rpc.answer_now(line.decode("utf-8", "replace"), self._context(conn))

    async def answer(self, line: bytes, conn: Connection) -> str:
        rpc = self.load_rpc()
        return await rpc.answer(line.decode("utf-8", "replace"), self._context(conn))

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()

    def wants(self, topic: str) -> bool:
        return any(topic in conn.topics for conn in self.connections)

    def broadcast(self, topic: str, method: str, params: dict[str, Any]) -> None:
        for conn in list(self.connections):
            conn.notify(topic, method, params)
