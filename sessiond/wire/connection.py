"""One client connection: framing, limits, backpressure, half-close, subscriptions.

One `Connection` (an asyncio.Protocol) per client. Bytes are split into
lines as they arrive; lines that need no waiting are answered at once, in
order, and the first that must wait (the lock, agents stopping) goes with
those behind it to the connection's one worker task, so a connection's
replies come back in the order of its requests. Limits (SPEC §6, limits.py):

  * a line longer than max_request_bytes → -32600, connection closed;
  * a line left half-sent for client_timeout → connection closed;
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

Its timers are the daemon's `Clock`'s and its worker a task of the daemon's
TaskGroup (`Hub.spawn`): none outlives the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import select
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from sessiond.errors import INVALID_REQUEST, LimitReached
from sessiond.wire import peers
from sessiond.wire.limits import CLOSE_GRACE, QUEUE_MAX, REPLY_BUFFER_MAX, Limits

if TYPE_CHECKING:
    from sessiond.daemon.access import Peer
    from sessiond.daemon.clock import Clock, Timer
    from sessiond.wire.context import Ctx

log = logging.getLogger("sessiond.wire.server")
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class Hub(Protocol):
    """What a connection needs of the server that accepted it."""

    limits: Limits
    clock: Clock
    spawn: Spawn

    def is_admin(self, peer: Peer) -> bool: ...
    def refusal(self, uid: int) -> LimitReached | None: ...
    def admit(self, conn: Connection) -> None: ...
    def release(self, conn: Connection) -> None: ...
    def answer_now(self, line: bytes, conn: Connection) -> str | None: ...
    async def answer(self, line: bytes, conn: Connection) -> str: ...


def invalid_request(message: str, hint: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0", "id": None,
        "error": {"code": INVALID_REQUEST, "message": message,
                  "data": {"message": message, "hint": hint}},
    }  # fmt: skip


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Connection(asyncio.Protocol):
    def __init__(self, server: Hub) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.lines: collections.deque[bytes] = collections.deque()
        self.ready = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.cutoff: Timer | None = None
        self.worker: asyncio.Task[None] | None = None
        self.topics: frozenset[str] = frozenset()
        self.peer: Peer | None = None
        self.privileged = False  # root or an admin: no connection limit applies
        self.busy = False  # the worker has a request that must wait
        self.last_request = 0.0
        self.idle_timer: Timer | None = None
        self.grace: Timer | None = None  # the close's: abort unless the replies drain
        self.eof = False  # the client shut its side for writing: nothing more will be read
        self.hangup: select.epoll | None = None  # after EOF: readable once the client is gone
        self.context: Ctx | None = None  # made again only when the peer's admin standing changes

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = peers.peer_of(transport.get_extra_info("socket"))
        self.privileged = self.server.is_admin(self.peer)
        refusal = None if self.privileged else self.server.refusal(self.peer.uid)
        if refusal is not None:
            transport.write(encode({"jsonrpc": "2.0", "id": None, "error": refusal.to_wire()}))
            transport.close()
            return
        transport.set_write_buffer_limits(high=REPLY_BUFFER_MAX)
        self.server.admit(self)
        self.worker = self.server.spawn(self._work())
        self.last_request = self.server.clock.monotonic()
        self._arm_idle(self.server.limits.idle_client_timeout)

    def data_received(self, data: bytes) -> None:
        self.last_request = self.server.clock.monotonic()
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
        if peers.gone(self.transport):
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
        for timer in (self.cutoff, self.idle_timer, self.grace):
            if timer is not None:
                timer.cancel()
        if self.hangup is not None:
            asyncio.get_running_loop().remove_reader(self.hangup.fileno())
            self.hangup.close()
            self.hangup = None
        if self.worker is not None:
            self.worker.cancel()
        self.context = None  # it holds this connection: let both go now

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
            self.cutoff = self.server.clock.later(timeout, self._stalled)

    def _stalled(self) -> None:
        log.info(
            "closing a connection from uid %s: half-sent request for %ss",
            self.peer.uid if self.peer else "?",
            self.server.limits.client_timeout,
        )
        self.close()

    def _arm_idle(self, after: float) -> None:
        self.idle_timer = self.server.clock.later(after, self._idle_check)

    def _idle_check(self) -> None:
        """Close a connection that has done nothing for idle_client_timeout; else look later."""
        timeout = self.server.limits.idle_client_timeout
        waited = self.server.clock.monotonic() - self.last_request
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
        self.grace = self.server.clock.later(CLOSE_GRACE, self._abort_unless_draining, left)

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

    def notify(self, line: bytes) -> None:
        """Send an encoded notification; drop a subscriber that far behind."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > REPLY_BUFFER_MAX:
            log.warning(
                "dropping a subscriber (uid %s): it reads slower than events come",
                self.peer.uid if self.peer else "?",
            )
            self.abort()  # what it has not read it would never read
            return
        self.transport.write(line)
