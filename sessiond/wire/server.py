"""The Unix socket server: who is let in, what answers their lines, who hears what.

The `Server` accepts connections (one `Connection` each, connection.py) and
counts them: more than max_clients connections, or max_clients_per_user of
one uid, get one LIMIT_REACHED line and are closed (root and admins are
always let in: one user's connections must never lock out the people who can
fix it). Each line goes to the dispatch (dispatch.py) with the caller's
`Ctx`; events and log lines go to the connections subscribed to them.

Everything it acts on is handed to it by main.py: the `App` the handlers
call, the limits (replaced on a reload), the TaskGroup's `spawn` and the
daemon's `Clock`. The peer is identified once, at accept, from SO_PEERCRED
(peers.py), never from anything the client sends.

The dispatcher (and jsonrpcserver with it) is imported with this module,
before the daemon says READY=1 (SPEC §8): the first request costs what any
other does (lean.py: without what jsonrpcserver loads for features sessiond
does not use).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from sessiond.errors import LimitReached
from sessiond.wire import dispatch
from sessiond.wire.connection import Connection, Spawn, encode
from sessiond.wire.context import Ctx
from sessiond.wire.limits import Limits

if TYPE_CHECKING:
    from sessiond.daemon.access import Peer
    from sessiond.daemon.app import App
    from sessiond.daemon.clock import Clock

__all__ = ["Limits", "Server"]


class Server:
    """Accepts connections and answers each line through the dispatch."""

    def __init__(self, app: App, limits: Limits, spawn: Spawn, clock: Clock) -> None:
        self.app = app
        self.limits = limits
        self.spawn = spawn
        self.clock = clock
        self.connections: set[Connection] = set()
        self.per_uid: collections.Counter[int] = collections.Counter()

    def connection(self) -> Connection:
        """A protocol for one accepted client (what loop.create_unix_server calls)."""
        return Connection(self)

    def is_admin(self, peer: Peer) -> bool:
        return self.app.is_admin(peer)

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

    def _context(self, conn: Connection) -> Ctx:
        """The connection's Ctx; made again only if a reload changed its admin standing."""
        assert conn.peer is not None
        admin = self.app.is_admin(conn.peer)
        ctx = conn.context
        if ctx is None or ctx.admin is not admin:
            ctx = conn.context = Ctx(conn.peer, admin, self.app, conn)
        return ctx

    def answer_now(self, line: bytes, conn: Connection) -> str | None:
        return dispatch.answer_now(line.decode("utf-8", "replace"), self._context(conn))

    async def answer(self, line: bytes, conn: Connection) -> str:
        return await dispatch.answer(line.decode("utf-8", "replace"), self._context(conn))

    def close_all(self) -> None:
        """The daemon is stopping: nothing more is sent to anyone."""
        for conn in list(self.connections):
            conn.abort()

    def wants(self, *topics: str) -> bool:
        return any(not conn.topics.isdisjoint(topics) for conn in self.connections)

    def broadcast(self, topics: tuple[str, ...], method: str, params: dict[str, Any]) -> None:
        """Notify each connection subscribed to any of `topics`, once."""
        subscribed = [conn for conn in self.connections if not conn.topics.isdisjoint(topics)]
        if subscribed:
            line = encode({"jsonrpc": "2.0", "method": method, "params": params})  # once
            for conn in subscribed:
                conn.notify(line)
