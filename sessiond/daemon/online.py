"""The network rule's shell: netwatch's readings in, a session suspended or resumed out.

A session whose agents need the network is suspended while the machine is
offline and resumed once the network has been back for network_grace; the
rule itself is core/moves.network. Its events are recorded here too, and the
network is watched only from the first agent that needs it (`watch_network`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sessiond.core import moves
from sessiond.core.events import Kind
from sessiond.core.moves import Move
from sessiond.core.records import Session
from sessiond.core.session import State
from sessiond.core.units import format_duration
from sessiond.daemon.clock import Clock
from sessiond.daemon.journal import Journal
from sessiond.errors import StorageError

if TYPE_CHECKING:
    from sessiond.daemon.fleet import Fleet

log = logging.getLogger("sessiond")
RETRY_SECONDS = 1.0


class Host(Protocol):
    """What the rule acts on (Sessions)."""

    live: Session | None
    fleet: Fleet

    def move(self, m: Move) -> Session: ...


class Online:
    def __init__(
        self, sessions: Host, journal: Journal, clock: Clock, grace: Callable[[], float]
    ) -> None:
        self.sessions = sessions
        self.journal = journal
        self.clock = clock
        self.grace = grace  # read each time: a reload may change it
        self.online: bool | None = None  # unknown until netwatch's first reading
        self.watched = True  # until netwatch finds it cannot
        self.watch_network: Callable[[], None] = lambda: None

    def network(self, online: bool) -> None:
        """netwatch: the machine went offline, or has been back for network_grace."""
        previous, self.online = self.online, online
        if online and previous is False:  # online at start-up is no news
            grace = format_duration(self.grace())
            self._network_event(
                True, Kind.NETWORK_UP, f"network up: a default route is back for {grace}"
            )
        elif not online and previous is not False:
            self._network_event(False, Kind.NETWORK_DOWN,
                                "network down: no default route via an interface up")  # fmt: skip
        self.follow()

    def blind(self) -> None:
        """netwatch cannot watch the network (any more): nothing waits for it."""
        self.watched = False
        self.online = True
        self._network_event(True, Kind.NETWORK_UNWATCHED, "network no longer watched: agents "
                            "with needs_network run regardless")  # fmt: skip
        self.follow()

    def _network_event(self, online: bool, kind: Kind, message: str) -> None:
        live = self.sessions.live
        try:
            with self.journal.transaction():
                self.journal.event(live.id if live else None, live.name if live else None,
                                   kind, message, {"online": online})  # fmt: skip
        except StorageError as exc:
            log.error("%s; the event '%s' is not recorded", exc.message, message)

    def follow(self) -> None:
        """Suspend the live session while offline if an agent needs the network; resume it.

        The network is watched from the first agent that needs it on (or a
        suspended session, whose agents were not all written down): pyroute2
        costs ~11 MiB and ~300 modules, which a daemon without such agents is
        spared. A move the disk cannot take is tried again a second later.
        """
        live = self.sessions.live
        if live is None:
            return
        wanted = self.sessions.fleet.needs_network(live.id)
        if wanted or live.state is State.SUSPENDED:
            self.watch_network()
        found = moves.network(self.online, wanted, live.state, self.watched, live.name)
        try:
            if found is not None:
                self.sessions.move(found)
        except StorageError as exc:
            log.error("%s; retrying in %gs", exc.message, RETRY_SECONDS)
            self.clock.later(RETRY_SECONDS, self.follow)
