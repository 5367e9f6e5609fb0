"""Every bound of the wire, in one place (SPEC §6; docs/wire.md, Limits).

`Limits` are the bounds the `[daemon]` config sets, read again on a reload;
the constants are fixed. What happens past each is said beside it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_clients: int  # connections at once → one LIMIT_REACHED line, closed
    max_clients_per_user: int  # connections of one uid → the same
    idle_client_timeout: float  # seconds with no request, none in progress → closed
    max_request_bytes: int  # a line longer → -32600, closed
    client_timeout: float  # seconds a line may stay half-sent → closed


QUEUE_MAX = 64  # unanswered lines of one connection → its reading paused
REPLY_BUFFER_MAX = 4 * 1024 * 1024  # unsent reply bytes → reading paused; a subscriber dropped
CLOSE_GRACE = 5.0  # seconds a closed connection has to take its last replies → aborted
TAIL_MAX_LINES = 10_000  # events.tail and logs.tail, a call → -32602
BATCH_MAX = 1000  # requests in one batch → -32600 for the whole batch
BATCH_LINES_MAX = 2 * TAIL_MAX_LINES  # a batch's tails in all, an export counting as one full
