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

A client may half-close after its last request (shutdown(SHUT_WR), as socat
and `nc -N` do): the connection stays open until every line read is answered
and written, then the daemon closes it. A half-closed subscriber keeps its
notifications until it closes. A client gone for good (the socket hung up,
not just shut for writing) is dropped at once: what it waited for is abandoned.

The peer is identified once, at accept, from SO_PEERCRED (and SO_PEERGROUPS
for supplementary groups), never from anything the client sends.

The dispatcher (`rpc`, and jsonrpcserver with it) is imported with this module,
before the daemon says READY=1 (SPEC §8): the first request costs what any
other does. What jsonrpcserver loads for features sessiond does not use (a
jsonschema validator, an HTTP server) is left unloaded (`_jsonrpcserver_lean`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import select
import socket
import struct
import sys
import types
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sessiond.daemon.access import Peer, groups_of, is_admin
from sessiond.errors import INVALID_REQUEST, LimitReached

if TYPE_CHECKING:
    from sessiond.main import Daemon

log = logging.getLogger("sessiond.wire.server")


class _DeferredValidator:
    """What jsonrpcserver.main gets for `jsonschema.validators.validator_for(schema)`: a
    validator class that loads the real one only if its `validate` is ever called."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema

    @classmethod
    def check_schema(cls, schema: Any) -> None:
        pass  # jsonrpcserver's own schema, checked by the real class if it is ever used

    def validate(self, instance: Any) -> None:
        from jsonschema.validators import validator_for  # noqa: PLC0415 -- the deferred load

        validator_for(self.schema)(self.schema).validate(instance)


def _serve(*args: Any, **kwargs: Any) -> Any:
    """jsonrpcserver.serve (its HTTP server, which sessiond never runs), loaded if called."""
    from jsonrpcserver.server import serve  # noqa: PLC0415 -- the deferred load

    return serve(*args, **kwargs)


def _stand_ins() -> dict[str, types.ModuleType]:
    """Modules jsonrpcserver imports at import time for what sessiond never uses.

    `jsonrpcserver.main` builds a jsonschema validator for its default `validator=`; rpc
    passes its own structural check to every dispatch (jsonschema, referencing and attrs:
    ~50 ms). `jsonrpcserver.server` is an HTTP server (http.server, email, html: ~15 ms).
    """
    validators = types.ModuleType("jsonschema.validators")
    validators.__dict__["validator_for"] = lambda _schema, default=None: _DeferredValidator
    package = types.ModuleType("jsonschema")
    package.__dict__.update(__path__=[], validators=validators)  # a package of this one module
    http = types.ModuleType("jsonrpcserver.server")
    http.__dict__["serve"] = _serve
    return {"jsonschema": package, "jsonschema.validators": validators,
            "jsonrpcserver.server": http}  # fmt: skip


@contextlib.contextmanager
def _jsonrpcserver_lean() -> Iterator[None]:
    """Import jsonrpcserver with `_stand_ins()` in place of what it does not need loaded.

    Each stand-in loads the real module only if it is called; once jsonrpcserver is
    imported the stand-ins leave sys.modules, so any later import gets the real module.
    """
    # What a test or a tool has loaded already costs nothing more: the real module stays.
    stand_ins = {name: module for name, module in _stand_ins().items()
                 if name.split(".")[0] not in sys.modules}  # fmt: skip
    sys.modules |= stand_ins
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


with _jsonrpcserver_lean():
    from sessiond.wire import methods as rpc  # and jsonrpcserver with it, finding the stand-ins

QUEUE_MAX = 64
REPLY_BUFFER_MAX = 4 * 1024 * 1024
CLOSE_GRACE = 5.0  # seconds a closed connection has to take its last replies
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


def _peer_gone(transport: asyncio.Transport | None) -> bool:
    """Whether the peer closed both ways: a Unix socket then reports POLLHUP, which poll
    always reports (no event asked for); a half-close (shutdown(SHUT_WR)) does not."""
    if transport is None:
        return True
    poller = select.poll()
    poller.register(transport.get_extra_info("socket").fileno(), 0)
    return bool(poller.poll(0))


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
        self.eof = False  # the client shut its side for writing: nothing more will be read
        self.hangup: select.epoll | None = None  # after EOF: readable once the client is gone

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
        if len(self.lines) >= QUEUE_MAX:
            self._reading(False)

    def eof_received(self) -> bool:
        """The client half-closed (SPEC §6): answer what it sent, then close; True keeps
        the transport open for the replies (asyncio would close it on a falsy return)."""
        if _peer_gone(self.transport):
            return False  # closed both ways, not half-closed: nobody is left to answer
        self.eof = True
        if self.buffer:
            # A last line without its newline is a line all the same: EOF ends it as a newline
            # would. Complete JSON is answered; a cut-off text gets -32700 like any bad line.
            self.lines.append(bytes(self.buffer))
            self.buffer.clear()
        self._watch_partial_line()  # nothing half-sent is left: the client_timeout cutoff goes
        self._watch_hangup()
        self.answer_ready_lines()
        return True

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
        if len(self.lines) < QUEUE_MAX and self.writable.is_set():
            self._reading(True)
        if self.eof and not self.lines and not self.busy and not self.topics:
            self.close()  # close() lets the replies drain first (within CLOSE_GRACE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.release(self)
        for timer in (self.cutoff, self.idle_timer):
            if timer is not None:
                timer.cancel()
        if self.hangup is not None:
            asyncio.get_running_loop().remove_reader(self.hangup.fileno())
            self.hangup.close()
            self.hangup = None
        if self.worker is not None:
            self.worker.cancel()

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests.
        self.writable.clear()
        self._reading(False)

    def resume_writing(self) -> None:
        self.writable.set()
        if not self.busy:
            self.answer_ready_lines()  # resumes reading once the queue is short again

    # -- framing and limits --------------------------------------------------

    def _reading(self, on: bool) -> None:
        """Pause or resume reading requests; after EOF there is nothing left to read (and
        resuming would make asyncio read the EOF again)."""
        if self.transport is None or self.eof:
            return
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def _watch_hangup(self) -> None:
        """After EOF, learn when the client is gone for good, not merely half-closed.

        A Unix socket reports EPOLLHUP once its peer has closed both directions, and a
        half-close does not; epoll always reports it, so registering no events waits for that
        alone (the socket itself stays readable at EOF, so the loop cannot watch it directly).
        """
        if self.transport is None or self.hangup is not None:
            return
        self.hangup = select.epoll(1)
        self.hangup.register(self.transport.get_extra_info("socket").fileno(), 0)
        asyncio.get_running_loop().add_reader(self.hangup.fileno(), self._on_hangup)

    def _on_hangup(self) -> None:
        # No reply can reach it: stop now, so a wait for the lock does not outlive its caller.
        if self.hangup is not None:
            asyncio.get_running_loop().remove_reader(self.hangup.fileno())
        self.abort()

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
        # A client that does not read its replies is not busy but stuck: it goes too.
        stuck = not self.writable.is_set()
        working = (self.topics or self.busy or self.lines or self.buffer) and not stuck
        if working or waited < timeout:
            self._arm_idle(max(timeout - waited, 1.0))
            return
        log.info("closing a connection from uid %s: %s for %ss",
                 self.peer.uid if self.peer else "?",
                 "not reading its replies" if stuck else "idle", timeout)  # fmt: skip
        if stuck:
            self.abort()
        else:
            self.close()

    def close(self) -> None:
        """Close once what is queued for the client is sent; abort it if that takes too long.

        asyncio's close() waits for the write buffer to drain, which a client that does
        not read never lets happen: it would hold its memory, its slot and the daemon's
        shutdown for ever.
        """
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            self._abort_unless_draining(-1)

    def _abort_unless_draining(self, before: int) -> None:
        """Abort a closed connection whose replies made no way in CLOSE_GRACE; else wait on."""
        if self.transport is None or (left := self.transport.get_write_buffer_size()) == 0:
            return
        if before != -1 and left >= before:
            self.abort()
            return
        loop = asyncio.get_running_loop()
        loop.call_later(CLOSE_GRACE, self._abort_unless_draining, left)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

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

    def notify(self, topic: str, line: bytes) -> None:
        """Send an encoded notification, if subscribed; drop a subscriber that far behind."""
        if topic not in self.topics or self.transport is None or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > REPLY_BUFFER_MAX:
            log.warning(
                "dropping a subscriber (uid %s): it reads slower than events come",
                self.peer.uid if self.peer else "?",
            )
            self.abort()  # what it has not read it would never read
            return
        self.transport.write(line)


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

    def _context(self, conn: Connection) -> rpc.Ctx:
        assert conn.peer is not None
        admin = is_admin(conn.peer, self.daemon.admin_gid)
        return rpc.Ctx(conn.peer, admin, self.daemon, conn)

    def answer_now(self, line: bytes, conn: Connection) -> str | None:
        return rpc.answer_now(line.decode("utf-8", "replace"), self._context(conn))

    async def answer(self, line: bytes, conn: Connection) -> str:
        return await rpc.answer(line.decode("utf-8", "replace"), self._context(conn))

    def close_all(self) -> None:
        """The daemon is stopping: nothing more is sent to anyone."""
        for conn in list(self.connections):
            conn.abort()

    def wants(self, topic: str) -> bool:
        return any(topic in conn.topics for conn in self.connections)

    def broadcast(self, topic: str, method: str, params: dict[str, Any]) -> None:
        subscribed = [conn for conn in self.connections if topic in conn.topics]
        if subscribed:
            line = encode({"jsonrpc": "2.0", "method": method, "params": params})  # once
            for conn in subscribed:
                conn.notify(topic, line)
