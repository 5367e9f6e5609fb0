"""The session lock across hosts, on etcd (SPEC §10), after the Go recipe.

etcd's client/v3/concurrency mutex, written here over etcd3aio's plain KV,
lease and watch calls (its own Lock is neither FIFO nor safe, etcd-io/etcd#9921):

  * every claim, a start that holds or one that waits, is a key
    `/sessiond/NAME/lock/<lease>-<n>` put with the daemon's lease (lease.py),
    so that it dies with the daemon;
  * the key with the lowest create revision holds the lock, and that
    revision is the session's fence: strictly growing, as revisions are;
  * the others wait in create-revision order, first come first served.

Each daemon watches the whole prefix once: what it sees is the cluster's live
session for `status` anywhere, and the line for `start --wait`, so a waiter
needs no watch of its own; when the cache says it is first, a linearizable
read confirms it (and that its key still exists) before it takes the lock.
The holder's key carries its session's facts (name, owner, host, state…),
updated as the session moves, for the hosts where it does not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from etcd3aio import SortOrder, SortTarget

from sessiond.core.lock import Claim
from sessiond.daemon.clock import Clock
from sessiond.daemon.locks import Busy, Spawn
from sessiond.daemon.locks.lease import KILL_AT, LOST_AFTER, Lease
from sessiond.daemon.locks.transport import FAILURES, connect
from sessiond.errors import ClusterUnavailable

if TYPE_CHECKING:
    from sessiond.core.records import Session
    from sessiond.core.settings import ClusterSettings

log = logging.getLogger("sessiond")


@dataclass(frozen=True)
class Entry:
    """One key under the lock's prefix: a holder or a waiter."""

    key: bytes
    revision: int  # its create revision: its place in line, and the holder's fence
    lease: int
    value: dict[str, Any]

    @property
    def session(self) -> str | None:
        """The session it holds the lock for, once that session published its state."""
        return self.value.get("id") if "state" in self.value else None


class EtcdLock:
    backend = "etcd"

    def __init__(self, settings: ClusterSettings, host: str, clock: Clock, spawn: Spawn) -> None:
        self.name, self.host = settings.name, host
        self._clock, self._spawn = clock, spawn
        self.endpoints = settings.endpoints
        self._prefix = f"/sessiond/{settings.name}/lock/".encode()
        self._settings = settings
        # Told (why, the monotonic instant by which its agents must be gone) when the
        # held session lost the lock; 0.0: no such instant, stop them as usual.
        self.on_lost: Callable[[str, float], None] = lambda why, by: None
        self.lease = Lease(settings.lease_ttl, clock, self._lost, self._reach)
        self._entries: tuple[Entry, ...] = ()
        self._revision = 0  # of the last read: the watch goes on from there
        self._deleting: dict[bytes, asyncio.Task[None]] = {}  # our keys, and who deletes them
        self._changed = asyncio.Event()
        self._tickets = itertools.count(1)
        self._held: tuple[str, bytes, int] | None = None  # (session id, its key, fence)
        self._adopted: tuple[str, int] | None = None  # (session id, fence) to find again
        self._latest: Session | None = None  # the held session as it last moved
        self._moved = asyncio.Event()
        self.on_change: Callable[[], None] = lambda: None
        self.task: asyncio.Task[None] | None = None  # run(), in the daemon's TaskGroup

    # -- what the sessions read ------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self.lease.reachable

    def holder(self) -> str | None:
        return self._held[0] if self._held else None

    def first(self) -> Entry | None:
        return self._head(self._entries)

    def _head(self, entries: tuple[Entry, ...]) -> Entry | None:
        """The holder, or the first in line: our own keys being deleted are dead already
        (a session that ended here must not hold up the next start here)."""
        return next((e for e in entries if e.key not in self._deleting), None)

    def remote(self) -> dict[str, Any] | None:
        """The cluster's live session when it runs on another host: its facts and fence."""
        first = self.first()
        if first is None or first.session is None or first.value.get("host") == self.host:
            return None
        return {**first.value, "fence": first.revision}

    def waiting(self) -> list[Claim]:
        # The first key holds the lock, published or not yet: the line is behind it.
        line = [e for e in self._entries if e.key not in self._deleting][1:]
        return [Claim(e.revision, e.value.get("name", ""), e.value.get("user", ""),
                      e.value.get("uid", -1), e.value.get("host")) for e in line]  # fmt: skip

    def claim(self, name: str, user: str, uid: int) -> Claim:
        return Claim(next(self._tickets), name, user, uid, self.host)

    # -- taking and giving back ------------------------------------------------

    async def acquire(self, holder: str, claim: Claim, wait: float | bool) -> int:
        """Put the claim's key; hold once it is first (the fence), or fail (Busy) when
        it is not and `wait` is False. `wait`: seconds in line, True for no limit."""
        lease = await self._lease_now()
        key = self._prefix + f"{lease:x}-{claim.ticket}".encode()
        value = {"name": claim.name, "user": claim.user, "uid": claim.uid, "host": self.host,
                 "for": holder}  # fmt: skip
        try:
            put = await self._call(self.lease.etcd.kv.put(key, _encode(value), lease=lease,
                                                       timeout=self.lease.timeout))  # fmt: skip
            if wait is False:
                first = await self._first()
                if first is None or first.key != key:
                    raise Busy(first.value if first is not None else None)
            else:
                async with asyncio.timeout(None if wait is True else wait):
                    await self._turn(key)
        except BaseException:
            self._forget(key, lease)  # the put may have reached etcd even if its answer did not
            raise
        fence = int(put.header.revision)  # the new key's create revision
        self._held = (holder, key, fence)
        return fence

    async def _turn(self, key: bytes) -> None:
        """Until `key` is first in line; raises if its lease (and so the key) was lost."""
        while True:
            if self.lease.lost:
                raise ClusterUnavailable(
                    "lost the place in line: no etcd renewal for half of lease_ttl",
                    f"check etcd ({', '.join(self.endpoints)}), then start again",
                )
            if (first := self.first()) is not None and first.key == key:
                entries = await self._call(self._read())  # linearizable: the cache may lag
                if (head := self._head(entries)) is not None and head.key == key:
                    return
            self._changed.clear()
            await self._changed.wait()

    def publish(self, session: Session) -> None:
        """The held session moved: the publisher tells etcd, at its pace (latest only)."""
        self._latest = session
        self._moved.set()

    def release(self, holder: str) -> None:
        if self._held is not None and self._held[0] == holder:
            self._forget(self._held[1], self.lease.id or 0)
            self._held = None

    def adopt(self, session: str, fence: int) -> None:
        """After a restart: the store says `session` held the lock with `fence`; run()
        checks that its key still exists, else the session lost the lock meanwhile."""
        self._adopted = (session, fence)

    # -- etcd ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, then watch the prefix, keep the lease, publish the holder's facts:
        for good (the daemon cancels it as it stops)."""
        while True:
            try:
                client = await connect(self._settings)
                break
            except OSError as exc:  # no endpoint's name resolves: try again, as for a cut
                log.warning("etcd: %s", exc)
                await self._clock.sleep(self.lease.ttl / 3)
        self.lease.use(client)
        await asyncio.gather(self._watch(), self._publisher(), self._keep())

    async def _keep(self) -> None:
        await self.lease.run(await self._resume())

    async def close(self) -> None:
        """The daemon stops: with nothing held, revoke the lease (our keys in line go with
        it); a held lock stays, for a daemon restarted within lease_ttl (SPEC §10)."""
        # A delete retrying while etcd is away sleeps on the clock, which stops with the
        # daemon: cancelled here, or the daemon's TaskGroup would wait for it for good.
        # The revoke below takes those keys with the lease.
        for task in list(self._deleting.values()):
            task.cancel()
        if self._held is None and self.lease.id is not None:
            await self.lease.revoke()
        if self.task is not None:
            self.task.cancel()

    async def _resume(self) -> int | None:
        """The lease a previous daemon held for the adopted session, if etcd still has it."""
        if self._adopted is None:
            return None
        session, fence = self._adopted
        give_up = self._clock.monotonic() + LOST_AFTER * self.lease.ttl
        while True:
            try:
                entries = await self._read()
                break
            except FAILURES:  # the rule of lease.py, from the daemon's start
                if self._clock.monotonic() >= give_up:
                    self.on_lost(
                        "lost the cluster lock: etcd unreachable since sessiond started",
                        give_up + (KILL_AT - LOST_AFTER) * self.lease.ttl,
                    )
                    return None
                await self._clock.sleep(self.lease.ttl / 12)
        for entry in entries:
            if entry.value.get("id", entry.value.get("for")) == session and (
                entry.revision == fence
            ):
                self._held = (session, entry.key, entry.revision)
                self._moved.set()  # its facts, published before the lock was found again
                return entry.lease
        self.on_lost("lost the cluster lock while sessiond was down", 0.0)
        return None

    async def _watch(self) -> None:
        end = _prefix_end(self._prefix)
        while True:
            try:
                self._seen(await self._read())
                async for _ in self.lease.etcd.watch.watch(self._prefix, end, self._revision + 1):
                    self._seen(await self._read())
            except FAILURES as exc:
                log.debug("etcd watch: %r", exc)
            await self._clock.sleep(self.lease.ttl / 12)

    def _seen(self, entries: tuple[Entry, ...]) -> None:
        self._entries = entries
        self._changed.set()
        self.on_change()

    async def _publisher(self) -> None:
        while True:
            await self._moved.wait()
            self._moved.clear()
            held, session = self._held, self._latest
            if held is None or session is None or session.id != held[0]:
                continue
            _, key, fence = held
            value = _encode({**facts(session), "host": self.host})
            kv = self.lease.etcd.kv
            try:
                # Only onto the key as it was created: a put after the session's release
                # deleted it would create it again, and hold up everyone for our lease's life.
                await kv.txn([kv.txn_compare_create_revision(key, fence)],
                             [kv.txn_op_put(key, value, lease=await self.lease.ready())],
                             timeout=self.lease.timeout)  # fmt: skip
            except FAILURES as exc:
                log.debug("etcd: the session's facts not published: %r", exc)

    async def _read(self) -> tuple[Entry, ...]:
        found = await self.lease.etcd.kv.get(
            self._prefix, _prefix_end(self._prefix), sort_order=SortOrder.ASCEND,
            sort_target=SortTarget.CREATE, timeout=self.lease.timeout,
        )  # fmt: skip
        self._revision = found.header.revision
        return tuple(Entry(kv.key, kv.create_revision, kv.lease, _decode(kv.value))
                     for kv in found.kvs)  # fmt: skip

    async def _first(self) -> Entry | None:
        return self._head(await self._call(self._read()))

    async def _lease_now(self) -> int:
        if not self.lease.settled.is_set():  # a start as the daemon comes up: its first try
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lease.settled.wait(), self.lease.ttl / 3)
        if not self.lease.reachable or self.lease.lost:
            raise self._unavailable()
        return await self.lease.ready()

    async def _call(self, call: Any) -> Any:
        try:
            return await call
        except (Busy, ClusterUnavailable, asyncio.CancelledError):
            raise
        except FAILURES as exc:
            log.debug("etcd: %r", exc)
            raise self._unavailable() from None

    def _unavailable(self) -> ClusterUnavailable:
        return ClusterUnavailable(
            f"the cluster lock is unavailable: no etcd member answers "
            f"({', '.join(self.endpoints)})",
            "check that etcd runs and is reachable from this host ('etcdctl endpoint health')",
        )

    def _forget(self, key: bytes, lease: int) -> None:
        """Delete a key of ours in the background, until etcd says it is gone or its lease
        is: a key left in line would hold everyone behind it for as long as we live."""

        async def delete() -> None:
            while self.lease.id == lease and not self.lease.lost:
                try:
                    await self.lease.etcd.kv.delete(key, timeout=self.lease.timeout)
                    return
                except FAILURES as exc:
                    log.debug("etcd: %r not deleted yet: %r", key, exc)
                await self._clock.sleep(self.lease.ttl / 12)

        task = self._deleting[key] = self._spawn(delete())
        task.add_done_callback(lambda _: self._deleting.pop(key, None))

    # -- the lease's news ------------------------------------------------------

    def _lost(self, kill_by: float) -> None:
        self._changed.set()  # waiters find out
        if self._held is not None:
            self._held = None
            self.on_lost("lost the cluster lock: no etcd renewal for half of lease_ttl",
                          kill_by)  # fmt: skip

    def _reach(self, reachable: bool) -> None:
        level = logging.INFO if reachable else logging.WARNING
        log.log(level, "etcd %s (%s)", "reachable" if reachable else "unreachable: no renewal "
                "of the lease", ", ".join(self.endpoints))  # fmt: skip
        self.on_change()


REMOTE_FIELDS = ("id", "name", "state", "owner", "started_at", "expires_at", "created_at",
                 "template", "participants", "pause_reason")  # fmt: skip


def facts(session: Session) -> dict[str, Any]:
    """What other hosts show of a session that runs here (SPEC §10: session.get there)."""
    wire = session.to_wire()
    return {key: wire[key] for key in REMOTE_FIELDS if key in wire}


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])
