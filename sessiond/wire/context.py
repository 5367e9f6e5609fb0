"""What a handler is handed: who calls, whether an admin, the app, the connection.

`Ctx` is the whole of a handler's world: the caller as the kernel named it,
the `App` whose one use case it calls, and the connection only as something
that can take subscriptions. One is made per connection and made again only
when the caller's admin standing changes (a reload can change admin_group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sessiond.daemon.access import Peer

if TYPE_CHECKING:
    from sessiond.daemon.app import App


class Subscriber(Protocol):
    """What a handler may do with the connection it answers on."""

    def subscribe(self, topics: frozenset[str]) -> None: ...


@dataclass(frozen=True)
class Ctx:
    peer: Peer
    admin: bool
    app: App
    conn: Subscriber
