"""Whether the machine is online, learnt from rtnetlink events (SPEC §3).

Online means: a default route exists via an interface that is up and running
(IFF_UP and IFF_RUNNING, i.e. administratively up with a carrier). The
watcher subscribes to link, address and route events and, when one arrives
that may change that (any link or address event, a route event only for a
default route), reads the links and routes again; events that arrive during a
read are folded into the next one. A VPN pushing a thousand routes thus costs
the parsing of their events and no read at all. It reads rather than patches
its state from the events because the kernel does not announce every route it
drops (IPv4 routes of a link that goes down vanish silently). Nothing polls:
with no netlink traffic the task sleeps in the kernel.

Going offline is reported at once; coming back is reported only once the
machine has stayed online for `grace` seconds, so a link that flaps keeps a
suspended session suspended instead of toggling it.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from sessiond.daemon.clock import Clock, Timer

log = logging.getLogger("sessiond")

IFF_UP = 0x1
IFF_RUNNING = 0x40
RTN_UNICAST = 1
RT_TABLE_LOCAL = 255
ROUTE_EVENTS = ("RTM_NEWROUTE", "RTM_DELROUTE")
# RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400


@dataclass(frozen=True)
class Route:
    """A default route as far as being online goes: which interfaces it leaves by."""

    interfaces: tuple[int, ...]  # empty: a nexthop object or a route with no device


def is_online(up: Iterable[int], defaults: Iterable[Route]) -> bool:
    """A default route exists via an interface that is up (pure, for tests)."""
    running = set(up)
    return any(
        not route.interfaces or any(i in running for i in route.interfaces) for route in defaults
    )


def describe(online: bool) -> str:
    return "a default route is up" if online else "no default route via an interface that is up"


def _default_route(msg: Any) -> Route | None:
    if msg["dst_len"] != 0 or msg["type"] != RTN_UNICAST:
        return None
    if msg.get("table") == RT_TABLE_LOCAL:
        return None
    hops = msg.get("multipath") or ()
    oifs = [h["oif"] for h in hops] if hops else [msg.get("oif")]
    return Route(tuple(i for i in oifs if i))


def _may_matter(msg: Any) -> bool:
    """Any link or address event may; of the routes, only a default route's can."""
    return msg.get("event") not in ROUTE_EVENTS or msg["dst_len"] == 0


class NetWatch:
    """Tells `on_change(online)` when the machine goes offline, and when it is back.

    `on_blind()` says the network can no longer be watched (no rtnetlink in a
    sandbox, or an error reading it): nothing should wait for it any more.
    """

    def __init__(
        self,
        on_change: Callable[[bool], None],
        on_blind: Callable[[], None],
        grace: Callable[[], float],
        clock: Clock,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
    ) -> None:
        self.clock = clock
        self.spawn = spawn  # the daemon's TaskGroup's: the listener is one of its tasks
        self.on_change = on_change
        self.on_blind = on_blind
        self.grace = grace  # read when needed: a reload may change it
        self.online: bool | None = None  # None until the first reading
        self._back: Timer | None = None

    async def run(self) -> None:
        try:
            # ~150 ms of imports: in a thread, so that the event loop keeps serving.
            pyroute2 = await asyncio.to_thread(importlib.import_module, "pyroute2")
            monitor = pyroute2.AsyncIPRoute()
            await monitor.bind(groups=GROUPS)
            query = pyroute2.AsyncIPRoute()
        except Exception as exc:  # noqa: BLE001 -- no netlink here (a sandbox): say so, run on
            log.warning("network awareness is off (rtnetlink: %s); agents with "
                        "needs_network run regardless", exc)  # fmt: skip
            self.on_blind()
            return
        changed = asyncio.Event()
        listener = self.spawn(self._listen(monitor, changed))
        try:
            await self._watch(query, changed, listener)
        except Exception:
            # A bug here must not take the daemon down, nor leave a session suspended.
            log.exception("network awareness stopped; agents with needs_network run regardless")
            self.on_blind()
        finally:
            listener.cancel()
            if self._back is not None:
                self._back.cancel()
            monitor.close()
            query.close()

    async def _listen(self, monitor: Any, changed: asyncio.Event) -> None:
        """Flag that something changed; a burst of events is then read back in one dump."""
        try:
            while True:
                try:
                    async for msg in monitor.get():
                        if _may_matter(msg):
                            changed.set()
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    # The kernel dropped events for a full buffer: the dump still tells.
                    log.info("rtnetlink: %s; reading the links and routes again", exc)
                    changed.set()
        finally:
            changed.set()  # wake _watch, to see this task end

    async def _watch(
        self, query: Any, changed: asyncio.Event, listener: asyncio.Task[None]
    ) -> None:
        self._reading(await self._read(query), first=True)
        while True:
            await changed.wait()
            changed.clear()
            if listener.done():
                listener.result()  # its error, raised here
            self._reading(await self._read(query))

    async def _read(self, ipr: Any) -> bool:
        up = [link["index"] async for link in await ipr.link("dump")
              if link["flags"] & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING]  # fmt: skip
        routes = [r async for r in await ipr.route("dump")]
        return is_online(up, filter(None, map(_default_route, routes)))

    def _reading(self, online: bool, first: bool = False) -> None:
        if first:
            # Already up when we started: nobody knows for how long, so no grace.
            self.online = online
            self.on_change(online)
            return
        if not online:
            if self._back is not None:
                self._back.cancel()
                self._back = None
            if self.online:
                self.online = False
                self.on_change(False)
        elif not self.online and self._back is None:
            self._back = self.clock.later(self.grace(), self._stayed_up)

    def _stayed_up(self) -> None:
        self._back = None
        self.online = True
        self.on_change(True)
