"""The sessions: the live one, its lock, its deadlines, its errors and the network.

Every call that changes the session is synchronous from its check to its
commit: no `await` sits between "is the lock free?" and the row that takes
it, so twenty racing `start`s give exactly one winner. Each change builds the
next `Session`, writes it and its event in one transaction, and only then
becomes current; the reply goes out after the commit.

The rules are the core's (core/session.py, core/moves.py, core/policy.py);
deadlines are daemon/deadlines.py, the network daemon/online.py, the lock a
`LockService` (daemon/locks), the agents a `Fleet`, whose `Ports` this is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any

from sessiond.core import moves, policy
from sessiond.core.events import Kind
from sessiond.core.moves import Move
from sessiond.core.records import Session, check_leave, clip_error, new_id
from sessiond.core.reports import added
from sessiond.core.session import ACTIVITY as ACTIVITY_EVENTS
from sessiond.core.session import ENDINGS, TERMINAL, Effect, Event, Refused, State, is_news, step
from sessiond.core.settings import Config, OnShutdown
from sessiond.core.units import format_duration
from sessiond.daemon.access import Peer
from sessiond.daemon.clock import Clock
from sessiond.daemon.cluster import LockNews
from sessiond.daemon.deadlines import Deadlines
from sessiond.daemon.fleet import Fleet
from sessiond.daemon.history import History
from sessiond.daemon.journal import Journal
from sessiond.daemon.locks import Busy, LockService
from sessiond.daemon.online import Online
from sessiond.daemon.starts import StartRequest, active_error, prepare, template_agents
from sessiond.errors import InvalidState, NoSession, SessionMismatch, StorageError, WaitTimeout

Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
log = logging.getLogger("sessiond")


class Sessions:
    def __init__(
        self, config: Config, journal: Journal, fleet: Fleet, lock: LockService, spawn: Spawn,
        *, clock: Clock, host: str,
    ) -> None:  # fmt: skip
        self.config = config
        self.host = host  # this daemon's: where the sessions it starts run (SPEC §10)
        self.journal = journal
        self.store = journal.store
        self.fleet = fleet
        fleet.ports = self
        self.lock = lock
        self.spawn = spawn
        self.clock = clock
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._terminating: dict[str, asyncio.Task[None]] = {}  # disconnects' agents, stopping
        self.live: Session | None = None
        self._ended: Session | None = None  # the last session that was live here
        self.deadlines = Deadlines(self, clock)
        self.on_change: Callable[[], None] = lambda: None
        self.net = Online(self, journal, clock, lambda: self.config.daemon.network_grace)
        self.follow_network = self.net.follow
        self.past = History(journal, clock, lambda: self.config.daemon.history_days,
                               fleet.remove_files)  # fmt: skip
        lock.on_lost = LockNews(self, fleet.crew, fleet.procs, clock).lost

    # -- loading -------------------------------------------------------------

    def load(self) -> None:
        """Take the live session back from the store after a (re)start."""
        row = self.store.live_session()
        if row is None:
            self.fleet.keeper.attach()  # the log keeper starts with us, not in a launch
            self.fleet.find_orphans()
            return
        since = row["errors_reset_at"] or 0.0
        errors = tuple(self.store.error_times(row["id"], since))
        found = Session.from_row(row, self.store.participants(row["id"]), errors)
        self.lock.adopt(found.id, found.fence)
        self._set_live(found)
        census = self.fleet.adopt(found)  # one pass over /proc serves the orphans too
        if found.state is State.STARTING:
            self.move(Move(Event.LAUNCH_FAILED, Kind.SESSION_FAILED,
                           "the daemon restarted while the session was starting",
                           {"close_reason": "daemon restarted while starting"}))  # fmt: skip
        elif found.state is State.STOPPING:
            self._stopping[found.id] = self.spawn(self._stop_agents(found))
        self.fleet.find_orphans(census)
        self.deadlines.arm()
        self.clock.soon(self.follow_network)

    # -- the lock ------------------------------------------------------------

    def prepare_start(self, peer: Peer, tty: str | None, **given: Any) -> StartRequest:
        """Check a start before the lock (daemon/starts.py)."""
        return prepare(self.config, self.find, peer, tty, **given)

    async def start(self, request: StartRequest, wait: float | bool) -> Session:
        """Take the lock and launch; `wait`: False, seconds in line, or True (no limit)."""
        owner, session_id = request.owner, new_id()
        claim = self.lock.claim(request.name, owner.user, owner.uid)
        try:
            fence = await self.lock.acquire(session_id, claim, wait)
        except Busy as busy:
            raise active_error(self.live, self.lock, busy.holder) from None
        except TimeoutError:
            live = self.live or self.lock.remote()
            raise WaitTimeout(
                f"gave up waiting for session {live.name if isinstance(live, Session) else ''}"
                f" after {format_duration(0 if wait is True else float(wait))}",
                "wait longer with 'sessionc start --wait=DURATION', or join it",
            ) from None
        return self._launch(request, session_id, fence)

    def waiting(self) -> list[dict[str, Any]]:
        """The start queue, first in line first."""
        return [claim.to_wire() for claim in self.lock.waiting()]

    def _launch(self, request: StartRequest, session_id: str, fence: int) -> Session:
        now = self.clock.wall()
        fresh = Session(
            id=session_id, name=request.name, state=State.STARTING,
            owner=request.owner, settings=request.settings, created_at=now,
            last_activity=now, host=self.host, fence=fence,
            started_at=now, template=request.template, parent=request.parent,
        )  # fmt: skip
        try:
            with self.journal.transaction():
                self.store.save_session(fresh.to_row())
                self._event(fresh, Kind.SESSION_STARTING, f"session {fresh.name} starting for "
                            f"{fresh.owner.user}", {"owner": fresh.owner.to_wire()})  # fmt: skip
        except BaseException:
            self.lock.release(session_id)
            raise
        self._set_live(fresh)
        failure = self.fleet.launch(fresh, template_agents(self.config, request.template),
                                   self.parent_checkpoints(fresh))  # fmt: skip
        if failure is not None:
            return self.move(Move(Event.LAUNCH_FAILED, Kind.SESSION_FAILED,
                                  f"session {fresh.name} failed to start: {failure}",
                                  {"close_reason": failure}))  # fmt: skip
        return self.move(Move(Event.LAUNCHED, Kind.SESSION_STARTED,
                              f"session {fresh.name} started by {fresh.owner.user}"))  # fmt: skip

    def parent_checkpoints(self, session: Session) -> dict[str, Any]:
        return self.store.latest_checkpoints(session.parent) if session.parent else {}

    # -- user calls on the live session ---------------------------------------

    def resolve(self, name: str | None) -> Session:
        """The live session, checked against the name (or id) the caller gave."""
        live = self.live
        if live is None:
            raise NoSession(
                "no session is active" if not name else f"no active session named '{name}'",
                "start one with 'sessionc start NAME'; 'sessionc history' lists past ones",
            )
        if name and name not in (live.name, live.id):
            raise SessionMismatch(
                f"session '{name}' is not the active session; '{live.name}' is",
                f"use 'sessionc join {live.name}', or wait with 'sessionc start {name} --wait'",
            )
        return live

    def leave(self, peer: Peer, name: str | None) -> Session:
        live = self.resolve(name)
        check_leave(live, peer.uid, peer.user)
        left = dataclasses.replace(
            live, participants=tuple(p for p in live.participants if p.who.uid != peer.uid)
        )
        with self.journal.transaction():
            self.store.delete_participant(live.id, peer.uid)
            self._event(live, Kind.SESSION_LEFT, f"{peer.user} left session {live.name}",
                        {"user": peer.user, "uid": peer.uid})  # fmt: skip
        self._set_live(left)
        return left

    async def stopped(self, session_id: str) -> None:
        """Wait until the agents of a stopping session are gone."""
        task = self._stopping.get(session_id)
        if task is not None:
            await asyncio.shield(task)

    async def _stop_agents(self, session: Session) -> None:
        try:
            await self.fleet.stop_all(session.id, forget=True)
        finally:
            self._stopping.pop(session.id, None)
        live = self.live
        if live is not None and live.id == session.id and live.state is State.STOPPING:
            self.move(Move(Event.STOPPED, Kind.SESSION_CLOSED,
                           f"session {live.name} closed: {live.close_reason}"))  # fmt: skip

    async def terminated(self, session_id: str) -> None:
        """Wait until a disconnected session's agents are gone."""
        if (terminating := self._terminating.get(session_id)) is not None:
            await asyncio.shield(terminating)

    async def _terminate(self, session_id: str) -> None:
        try:
            await self.fleet.stop_all(session_id, forget=False)
        finally:
            self._terminating.pop(session_id, None)

    # -- moving --------------------------------------------------------------

    def move(self, m: Move, also: Callable[[], None] | None = None) -> Session:
        """Apply `m` to the live session: step, persist, then make current."""
        live = self.live
        assert live is not None
        try:
            new_state, effects = step(live.state, m.event)
        except Refused as exc:
            raise InvalidState(f"{exc} ('{live.name}')", _state_hint(live)) from None
        moved = new_state is not live.state
        if not is_news(m.event, moved):
            return live  # a repeat (a second stop while stopping): nothing to write or do
        now, changes = self.clock.wall(), dict(m.changes)
        if m.event in ACTIVITY_EVENTS:
            changes["last_activity"] = now
        if new_state in TERMINAL:
            changes["closed_at"] = now
        became = dataclasses.replace(live, state=new_state, **changes)
        self._write(became, live.state, m, moved, also)
        self._set_live(became)
        self._run(effects, became)
        return became

    def _write(
        self, became: Session, was: State, m: Move, moved: bool, also: Callable[[], None] | None
    ) -> None:
        row = became.to_row()

        def write() -> None:
            self.store.save_session(row)
            if also is not None:
                also()
            if m.kind:
                fields = {"from": was.value, "to": became.state.value}
                self._event(became, m.kind, m.message, fields)
            elif moved:
                self._event(became, Kind.of_session(became.state),
                            f"session {became.name} is {became.state.value} again", {})  # fmt: skip

        try:
            with self.journal.transaction():
                write()
        except StorageError as exc:
            if m.event not in ENDINGS or not exc.transient:
                raise
            # Stopping is how an operator frees a disk (SPEC §6.2): it happens now, and
            # its record is written, before anything else, once space returns.
            log.error("%s; session %s is %s all the same, its record written when space "
                      "returns", exc.message, became.name, became.state.value)  # fmt: skip
            self.journal.defer(write)

    def _run(self, effects: tuple[Effect, ...], session: Session) -> None:
        fleet, sid = self.fleet, session.id
        for effect in effects:
            if effect is Effect.PAUSE_AGENTS or effect is Effect.PAUSE_NETWORK_AGENTS:
                fleet.pause_all(sid, network_only=effect is Effect.PAUSE_NETWORK_AGENTS)
            elif effect is Effect.RESUME_AGENTS or effect is Effect.RESUME_NETWORK_AGENTS:
                fleet.resume_all(sid, network_only=effect is Effect.RESUME_NETWORK_AGENTS)
            elif effect is Effect.RESTART_AGENTS:
                fleet.restart_all(sid)
            elif effect is Effect.TERMINATE_AGENTS:
                fleet.halt(sid)  # before the stop task runs: a crash being handled must not respawn
                self._terminating[sid] = self.spawn(self._terminate(sid))
            elif effect is Effect.STOP_AGENTS and sid not in self._stopping:
                fleet.halt(sid)
                self._stopping[sid] = self.spawn(self._stop_agents(session))
            elif effect is Effect.RELEASE_LOCK:
                self.lock.release(sid)
        self.deadlines.arm()
        self.on_change()
        # Started, resumed or reconnected while offline: suspended once this move is done.
        self.clock.soon(self.follow_network)

    def _set_live(self, session: Session) -> None:
        previous = self.live
        self.live = session if session.state.live else None
        if self.live is None:
            self._ended = session  # as fresh as the store's row, or fresher (journal.defer)
        else:
            self.lock.publish(self.live)  # what the cluster's other hosts show of it
        self.deadlines.track(self.live, same=previous is not None and previous.id == session.id)

    # -- the fleet's ports ---------------------------------------------------

    def holds(self, session_id: str, needs_network: bool) -> bool:
        """Should an agent be stopped (SIGSTOP): its session is paused, or it needs the
        network and the session is suspended or about to be (the machine is offline)."""
        live = self.live
        if live is None or live.id != session_id:
            return False
        offline = live.state is State.SUSPENDED or self.net.online is False
        return live.state is State.PAUSED or (needs_network and offline)

    def live_name(self, session_id: str) -> str | None:
        live = self.live
        return live.name if live is not None and live.id == session_id else None

    def error(self, session_id: str, agent: str | None, text: str, message: str) -> None:
        """One error of the live session, kept with its text (SPEC §2.3); at
        error_threshold the session is disconnected. Counted even if the disk refuses it."""
        live = self.live
        if live is None or live.id != session_id:
            return
        now, s = self.clock.wall(), live.settings
        text, message = clip_error(text), clip_error(message)
        became = live.with_error(agent, text, now)
        count = became.error_count(now)
        self._set_live(became)
        line = (f"session {live.name}: error {count} of {s.error_threshold} within "
                f"{format_duration(s.error_window)}: {message}")  # fmt: skip
        record = (now, agent, text, {"agent": agent, "text": text, "count": count}, line)
        if not policy.disconnects(count, s.error_threshold, became.state):
            # Written once the crashed agent runs again (the supervisor restarts it after
            # this returns): a commit waits for the disk, the restart need not.
            self.clock.soon(self._record_error, became.id, record)
            return
        self._record_error(became.id, record)
        try:
            self.move(moves.threshold(live.name, count, s, message))
        except StorageError as exc:
            log.error("%s; the session could not be disconnected", exc.message)

    def _record_error(self, session_id: str, record: tuple[Any, ...]) -> None:
        now, agent, text, data, line = record
        session = self.find(session_id)  # as it is now: it may have moved on since
        try:
            with self.journal.transaction():
                self.store.add_error(session_id, now, agent, text)
                self.store.save_session(session.to_row())
                self._event(session, Kind.SESSION_ERROR, line, data)
        except StorageError as exc:
            log.error("%s; the error is counted but not stored: %s", exc.message, line)

    def add_metrics(self, metrics: Mapping[str, float]) -> None:
        live = self.live
        assert live is not None
        became = dataclasses.replace(live, metrics=MappingProxyType(added(live.metrics, metrics)))
        with self.journal.transaction():
            self.store.save_session(became.to_row())
        self._set_live(became)

    def _event(self, s: Session, kind: Kind, message: str, data: Mapping[str, Any]) -> None:
        self.journal.event(s.id, s.name, kind, message, data)

    # -- reads ---------------------------------------------------------------

    def wire(self, session: Session, encoded: bool = False) -> dict[str, Any]:
        """The session's wire form, with its agents (`encoded`: as one Raw) and its
        error count."""
        found = session.to_wire()
        found["agents"] = self.fleet.encoded(session) if encoded else self.fleet.wire(session)
        found["errors"]["count"] = session.error_count(self.clock.wall())
        return found

    def find(self, name_or_id: str) -> Session:
        for known in (self.live, self._ended):
            if known is not None and name_or_id in (known.name, known.id):
                return known
        return self.past.find(name_or_id)

    def history(self, limit: int, before: float | None) -> list[Session]:
        return self.past.sessions(limit, before)

    def events(self, limit: int, session: str | None) -> list[dict[str, Any]]:
        return self.past.events(limit, self.find(session).id if session else None)

    def prune(self) -> None:
        self.past.prune()

    async def shutdown(self, on_shutdown: OnShutdown) -> None:
        """The daemon is going: stop every agent, or leave them for the next daemon."""
        if on_shutdown is OnShutdown.STOP:
            live_ids = self.fleet.live_sessions()
            await asyncio.gather(*(self.fleet.stop_all(sid, forget=False) for sid in live_ids))
        for task in list(self._stopping.values()):
            await asyncio.shield(task)
        self.fleet.ledger.flush()


def _state_hint(s: Session) -> str:
    return {
        State.PAUSED: f"resume it with 'sessionc resume {s.name}'",
        State.DISCONNECTED: "reconnect it with 'sessionc reconnect', or stop it",
        State.SUSPENDED: "it resumes by itself when the network is back",
        State.STOPPING: "wait for it to close",
    }.get(s.state, f"'sessionc health {s.name}' says what it can do next")
