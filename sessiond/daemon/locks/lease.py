"""The daemon's etcd lease: granted once, renewed every lease_ttl/3, watched over.

Every daemon of a cluster holds one lease, holding the lock or not: its
renewals are how it knows the cluster is reachable (SPEC §10), and the keys
it puts (a place in line, the lock) live only as long as it does. The rule
for losing the lock is the lease's: no renewal for half of `lease_ttl` and
`on_lost` is told, with the instant by which nothing of the session may be
left (80% of `lease_ttl` after the last renewal) — before the cluster can
hand the lock to anyone else, since etcd counts the lease's time from a
renewal that happened no later than the one we saw succeed.

A lost lease is revoked as soon as etcd answers again, so that nobody waits
for it to expire, and a new one is granted. Renewals are the only wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

import grpc

from sessiond.daemon.clock import Clock, Timer
from sessiond.daemon.locks.transport import FAILURES, Etcd

log = logging.getLogger("sessiond")
LOST_AFTER = 0.5  # of lease_ttl without a renewal: the holder starts stopping its agents
KILL_AT = 0.8  # of lease_ttl after the last renewal: nothing of the session is left


class Lease:
    def __init__(
        self, ttl: float, clock: Clock,
        on_lost: Callable[[float], None], on_reach: Callable[[bool], None],
    ) -> None:  # fmt: skip
        self._etcd: Etcd | None = None
        self.ttl = ttl
        self._clock = clock
        self._on_lost = on_lost  # given the monotonic instant by which agents must be gone
        self._on_reach = on_reach
        self.id: int | None = None
        self._reachable: bool | None = None  # None: not asked yet
        self.settled = asyncio.Event()  # etcd answered, or did not, at least once
        self.last_ok: float | None = None  # monotonic instant of the last renewal that worked
        self.lost = False  # no renewal for LOST_AFTER: the lease is given up, to be revoked
        self._watchdog: Timer | None = None
        self._granted = asyncio.Event()

    @property
    def etcd(self) -> Etcd:
        assert self._etcd is not None, "used before use()"
        return self._etcd

    @property
    def timeout(self) -> float:
        """How long one call to etcd may take: a renewal must fit between two."""
        return self.ttl / 6

    async def ready(self) -> int:
        """The lease's id, once there is one."""
        await self._granted.wait()
        assert self.id is not None
        return self.id

    def use(self, etcd: Etcd) -> None:
        self._etcd = etcd

    async def run(self, resume: int | None) -> None:
        """Keep a lease for good: `resume` is the one a previous daemon held, if any."""
        self.id = resume
        while True:
            # A lost lease is never renewed again, even if etcd would still take it.
            if (self.id is None or self.lost) and not await self._replace():
                self._reached(False)
                await self._clock.sleep(self.ttl / 12)
                continue
            # Counted from the request, not the answer: etcd renewed no earlier than that,
            # so the lease outlives `sent` + ttl and the kill at 80% keeps its margin.
            sent = self._clock.monotonic()
            ok = await self._renew()
            if ok is False:  # gone: it expired while we were frozen, or away: kill at once
                self._lose(self._clock.monotonic() - KILL_AT * self.ttl)
                continue
            self._reached(ok is True)
            if ok:
                self.last_ok = sent
                self._arm(sent)
            await self._clock.sleep(self.ttl / 3 if ok else self.ttl / 12)

    async def _replace(self) -> bool:
        """Revoke a lost lease (its keys go with it) and grant a new one; False: not now."""
        try:
            if self.id is not None and await self._revoke():
                log.info("revoked the lost etcd lease %x", self.id)
            granted = await self.etcd.lease.grant(math.ceil(self.ttl), timeout=self.timeout)
        except FAILURES as exc:
            log.debug("etcd lease: %s", exc)
            return False
        self.id, self.lost = granted.ID, False
        self._granted.set()
        return True

    async def _renew(self) -> bool | None:
        """True: renewed; False: the lease no longer exists; None: etcd did not answer."""
        assert self.id is not None
        stream = self.etcd.lease.keep_alive(self.id)
        try:
            async with asyncio.timeout(self.timeout):
                async for answer in stream:
                    if answer.TTL > 0:
                        self._granted.set()
                    return answer.TTL > 0
        except FAILURES as exc:  # a member down, no leader, a cut: try again soon
            log.debug("etcd lease %x: no renewal: %r", self.id, exc)
        finally:
            stream.cancel()
        return None

    @property
    def reachable(self) -> bool:
        return bool(self._reachable)

    def _reached(self, now: bool) -> None:
        self.settled.set()
        if now != self._reachable:  # the first answer is news too, either way
            self._reachable = now
            self._on_reach(now)

    def _arm(self, renewed: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self._clock.at(renewed + LOST_AFTER * self.ttl, self._lose, renewed)

    def _lose(self, renewed: float) -> None:
        """No renewal since `renewed` for too long, or the lease is gone: give it up."""
        self._watchdog = None
        self.lost = True
        self._reached(False)
        self._on_lost(renewed + KILL_AT * self.ttl)

    async def _revoke(self) -> bool:
        """Revoke the lease: False if etcd no longer had it (expired); raises if unreachable."""
        assert self.id is not None
        try:
            await self.etcd.lease.revoke(self.id, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.NOT_FOUND:  # the lease expired meanwhile
                raise
            return False
        return True

    async def revoke(self) -> None:
        """At shutdown with nothing held: leave no key behind for others to wait on."""
        if self.id is not None:
            try:
                await self._revoke()
            except FAILURES as exc:
                log.debug("etcd lease %x: not revoked: %r", self.id, exc)
