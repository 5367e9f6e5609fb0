"""The session manager: the lock, the wait queue, deadlines, and the store.

Every call that changes the session is synchronous from its check to its
commit: no `await` sits between "is the lock free?" and the row that takes
it, so twenty racing `start`s give exactly one winner. Each change builds the
next `Session`, writes it and its event in one transaction, and only then
becomes current; the reply goes out after the commit.

One timer is armed, at the nearest deadline of the live session
(policy.deadlines); nothing polls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import shutil
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from sessiond.config import ConfigError
from sessiond.core import policy
from sessiond.core.events import Kind
from sessiond.core.records import Participant, Person, Session, check_name, generated_name, rfc3339
from sessiond.core.session import TERMINAL, Effect, Event, Refused, State, step
from sessiond.core.settings import AgentSpec, Config, OnShutdown, SessionSettings, session_overrides
from sessiond.core.units import format_duration, parse_clock
from sessiond.daemon.access import Peer
from sessiond.daemon.crew import Crew
from sessiond.daemon.fleet import Team
from sessiond.daemon.store import Store
from sessiond.errors import (
    InvalidParams,
    InvalidState,
    NoSession,
    PermissionDenied,
    SessionActive,
    SessionMismatch,
    StorageError,
    WaitTimeout,
)

Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]


class Outlet(Protocol):
    """Where events and agent output go: the journal and the subscribers."""

    def publish(self, event: dict[str, Any]) -> None: ...
    def publish_lines(self, agent: str, session: str, lines: list[str]) -> None: ...
    def wants(self, topic: str) -> bool: ...


@dataclass(frozen=True)
class StartRequest:
    name: str
    owner: Person
    settings: SessionSettings
    template: str | None
    parent: str | None


@dataclass
class _Waiter:
    request: StartRequest
    future: asyncio.Future[Session]


log = logging.getLogger("sessiond")
PRUNE_EVERY = 86400.0
RETRY_SECONDS = 1.0


def _since(epoch: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch or 0).strftime("%H:%M")


class Manager:
    def __init__(
        self, store: Store, config: Config, outlet: Outlet, crew: Crew, spawn: Spawn
    ) -> None:
        self.store = store
        self.spawn = spawn
        self.config = config
        self.outlet = outlet
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._terminating: dict[str, asyncio.Task[None]] = {}  # disconnects' agents, stopping
        self.live: Session | None = None
        self._ended: Session | None = None  # the last session that was live here
        self._clocks: policy.Clocks | None = None
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._unpublished: list[dict[str, Any]] = []
        self._deferred: list[Callable[[], None]] = []  # writes the disk refused (_ENDINGS)
        self.on_change: Callable[[], None] = lambda: None
        self.online: bool | None = None  # unknown until netwatch's first reading
        self.watch_network: Callable[[], None] = lambda: None
        self.network_watched = True  # until netwatch finds it cannot
        self.team = Team(self, store, crew)

    # -- loading -------------------------------------------------------------

    def load(self) -> None:
        """Take the live session back from the store after a (re)start."""
        row = self.store.live_session()
        if row is None:
            self.team.find_orphans()
            return
        since = row["errors_reset_at"] or 0.0
        errors = tuple(self.store.error_times(row["id"], since))
        found = Session.from_row(row, self.store.participants(row["id"]), errors)
        self._set_live(found)
        census = self.team.adopt(found)  # one pass over /proc serves the orphans too
        if found.state is State.STARTING:
            self.move(
                Event.LAUNCH_FAILED,
                Kind.SESSION_FAILED,
                "the daemon restarted while the session was starting",
                close_reason="daemon restarted while starting",
            )
        elif found.state is State.STOPPING:
            self._stopping[found.id] = self.spawn(self._stop_agents(found))
        self.team.find_orphans(census)
        self._arm()
        asyncio.get_running_loop().call_soon(self.follow_network)

    # -- the lock ------------------------------------------------------------

    def prepare_start(
        self, peer: Peer, tty: str | None, *, name: str | None, template: str | None,
        parent: str | None, overrides: Mapping[str, Any], admin: bool = False,
    ) -> StartRequest:  # fmt: skip
        """Check everything about a start that does not depend on the lock."""
        settings = self._settings_for(template, overrides)
        parent_id = self._parent_id(parent, peer, admin) if parent else None
        owner = Person(peer.uid, peer.user, peer.pid, tty)
        return StartRequest(
            check_name(name) if name else generated_name(), owner, settings, template, parent_id
        )

    def start(self, request: StartRequest) -> Session:
        if self.live is not None:
            raise self._active_error()
        return self._launch(request)

    async def start_waiting(self, request: StartRequest, wait: float | None) -> Session:
        """Queue behind the live session, first come first served; `wait=None`: no limit."""
        if self.live is None and not self._queue:
            return self._launch(request)
        waiter = _Waiter(request, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        try:
            return await asyncio.wait_for(waiter.future, wait)
        except TimeoutError:
            raise WaitTimeout(
                f"gave up waiting for session {self.live.name if self.live else ''!s}"
                f" after {format_duration(wait or 0)}",
                "wait longer with 'sessionc start --wait=DURATION', or join it",
            ) from None
        finally:
            if waiter in self._queue:
                self._queue.remove(waiter)

    def waiting(self) -> list[dict[str, Any]]:
        """The start queue, first in line first."""
        return [
            {"name": w.request.name, "user": w.request.owner.user, "uid": w.request.owner.uid}
            for w in self._queue
            if not w.future.done()
        ]

    def _hand_over(self) -> None:
        """The lock is free: start the session of the first waiter still there."""
        while self._queue and self.live is None:
            waiter = self._queue.popleft()
            if waiter.future.done():
                continue
            try:
                waiter.future.set_result(self._launch(waiter.request))
            except Exception as exc:  # noqa: BLE001 -- the waiter gets whatever failed
                waiter.future.set_exception(exc)

    def _launch(self, request: StartRequest) -> Session:
        now = time.time()
        fresh = Session(
            id=str(uuid.uuid4()), name=request.name, state=State.STARTING,
            owner=request.owner, settings=request.settings, created_at=now,
            last_activity=now, started_at=now, template=request.template,
            parent=request.parent,
        )  # fmt: skip
        with self.transaction():
            self.store.save_session(fresh.to_row())
            self._event(fresh, Kind.SESSION_STARTING, f"session {fresh.name} starting for "
                        f"{fresh.owner.user}", {"owner": fresh.owner.to_wire()})  # fmt: skip
        self._set_live(fresh)
        failure = self.team.launch(fresh, self._template_agents(request.template),
                                   self.parent_checkpoints(fresh))  # fmt: skip
        if failure is not None:
            return self.move(Event.LAUNCH_FAILED, Kind.SESSION_FAILED,
                             f"session {fresh.name} failed to start: {failure}",
                             close_reason=failure)  # fmt: skip
        return self.move(Event.LAUNCHED, Kind.SESSION_STARTED,
                         f"session {fresh.name} started by {fresh.owner.user}")  # fmt: skip

    def _template_agents(self, template: str | None) -> list[AgentSpec]:
        if template is None:
            return []
        return [self.config.agents[name] for name in self.config.templates[template].agents]

    def parent_checkpoints(self, session: Session) -> dict[str, Any]:
        return self.store.latest_checkpoints(session.parent) if session.parent else {}

    def _active_error(self) -> SessionActive:
        live = self.live
        assert live is not None
        tty = f", {live.owner.tty}" if live.owner.tty else ""
        return SessionActive(
            f"session '{live.name}' is already active (owner {live.owner.user}{tty},"
            f" since {_since(live.started_at)})",
            f"join it with 'sessionc join {live.name}', or wait with 'sessionc start --wait'",
        )

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

    def join(self, peer: Peer, name: str | None, tty: str | None) -> Session:
        live = self.resolve(name)
        if peer.uid == live.owner.uid or peer.uid in live.participant_uids():
            return self.move(Event.ACTIVITY, None, "")  # already in: nothing new to record
        person = Participant(Person(peer.uid, peer.user, peer.pid, tty), time.time())
        others = tuple(p for p in live.participants if p.who.uid != peer.uid)
        return self.move(
            Event.ACTIVITY, Kind.SESSION_JOINED, f"{peer.user} joined session {live.name}",
            participants=(*others, person),
            also=lambda: self.store.save_participant(
                live.id, {**person.who.to_wire(), "joined_at": person.joined_at}),
        )  # fmt: skip

    def leave(self, peer: Peer, name: str | None) -> Session:
        live = self.resolve(name)
        if peer.uid == live.owner.uid:
            raise InvalidState(
                f"{peer.user} owns session '{live.name}' and cannot leave it",
                f"stop it with 'sessionc stop {live.name}'",
            )
        if peer.uid not in live.participant_uids():
            raise InvalidState(
                f"{peer.user} is not a participant of session '{live.name}'",
                f"join it first with 'sessionc join {live.name}'",
            )
        left = dataclasses.replace(
            live, participants=tuple(p for p in live.participants if p.who.uid != peer.uid)
        )
        with self.transaction():
            self.store.delete_participant(live.id, peer.uid)
            self._event(
                live,
                Kind.SESSION_LEFT,
                f"{peer.user} left session {live.name}",
                {"user": peer.user, "uid": peer.uid},
            )
        self._set_live(left)
        return left

    async def stop(self, peer: Peer, name: str | None, reason: str | None) -> Session:
        live = self.resolve(name)
        self._stop(live, reason or f"stopped by {peer.user}")
        await self.stopped(live.id)
        return self.find(live.id)

    async def stopped(self, session_id: str) -> None:
        """Wait until the agents of a stopping session are gone."""
        task = self._stopping.get(session_id)
        if task is not None:
            await asyncio.shield(task)

    def _stop(self, live: Session, why: str) -> Session:
        return self.move(Event.STOP, Kind.SESSION_STOPPING, f"session {live.name} stopping: {why}",
                         close_reason=why)  # fmt: skip

    async def _stop_agents(self, session: Session) -> None:
        try:
            await self.team.stop_all(session.id, forget=True)
        finally:
            self._stopping.pop(session.id, None)
        live = self.live
        if live is not None and live.id == session.id and live.state is State.STOPPING:
            self.move(Event.STOPPED, Kind.SESSION_CLOSED,
                      f"session {live.name} closed: {live.close_reason}")  # fmt: skip

    def pause(self, peer: Peer, name: str | None, reason: str | None) -> Session:
        live = self.resolve(name)
        why = reason or f"paused by {peer.user}"
        return self.move(
            Event.PAUSE, Kind.SESSION_PAUSED, f"session {live.name} paused: {why}", pause_reason=why
        )

    def resume(self, peer: Peer, name: str | None) -> Session:
        live = self.resolve(name)
        return self.move(
            Event.RESUME,
            Kind.SESSION_RESUMED,
            f"session {live.name} resumed by {peer.user}",
            pause_reason=None,
        )

    async def _terminate(self, session_id: str) -> None:
        try:
            await self.team.stop_all(session_id, forget=False)
        finally:
            self._terminating.pop(session_id, None)

    async def reconnect(self, peer: Peer, name: str | None) -> Session:
        """Start a disconnected session's agents afresh, once the old ones are gone."""
        live = self.resolve(name)
        if (terminating := self._terminating.get(live.id)) is not None:
            await asyncio.shield(terminating)
            live = self.resolve(name)
        return self.move(
            Event.RECONNECT,
            Kind.SESSION_RECONNECTED,
            f"session {live.name} reconnected by {peer.user}",
            errors_reset_at=time.time(),
            error_times=(),
        )

    def touch(self, name: str | None) -> Session:
        self.resolve(name)
        return self.move(Event.ACTIVITY, None, "")

    # -- moving --------------------------------------------------------------

    def move(
        self, event: Event, kind: Kind | None, message: str,
        also: Callable[[], None] | None = None, **changes: Any,
    ) -> Session:  # fmt: skip
        """Apply `event` to the live session: step, persist, then make current."""
        live = self.live
        assert live is not None
        try:
            new_state, effects = step(live.state, event)
        except Refused as exc:
            raise InvalidState(f"{exc} ('{live.name}')", _state_hint(live)) from None
        now = time.time()
        if event in _ACTIVITY:
            changes["last_activity"] = now
        if new_state in TERMINAL:
            changes["closed_at"] = now
        became = dataclasses.replace(live, state=new_state, **changes)
        moved = new_state is not live.state
        row = became.to_row()

        def write() -> None:
            self.store.save_session(row)
            if also is not None:
                also()
            if kind:
                self._event(
                    became, kind, message, {"from": live.state.value, "to": new_state.value}
                )
            elif moved:
                self._event(
                    became,
                    Kind.of_session(new_state),
                    f"session {live.name} is {new_state.value} again",
                    {},
                )

        try:
            with self.transaction():
                write()
        except StorageError as exc:
            if event not in _ENDINGS or not exc.transient:
                raise
            # Stopping is how an operator frees a disk (SPEC §6.2): it happens now, and
            # its record is written, before anything else, once space returns.
            log.error("%s; session %s is %s all the same, its record written when space "
                      "returns", exc.message, live.name, new_state.value)  # fmt: skip
            self._defer(write)
        self._set_live(became)
        self._run(effects, became)
        return became

    def _run(self, effects: tuple[Effect, ...], session: Session) -> None:
        team, sid = self.team, session.id
        for effect in effects:
            if effect is Effect.PAUSE_AGENTS or effect is Effect.PAUSE_NETWORK_AGENTS:
                team.pause_all(sid, network_only=effect is Effect.PAUSE_NETWORK_AGENTS)
            elif effect is Effect.RESUME_AGENTS or effect is Effect.RESUME_NETWORK_AGENTS:
                team.resume_all(sid, network_only=effect is Effect.RESUME_NETWORK_AGENTS)
            elif effect is Effect.RESTART_AGENTS:
                team.restart_all(sid)
            elif effect is Effect.TERMINATE_AGENTS:
                team.halt(sid)  # before the stop task runs: a crash being handled must not respawn
                self._terminating[sid] = self.spawn(self._terminate(sid))
            elif effect is Effect.STOP_AGENTS and sid not in self._stopping:
                team.halt(sid)
                self._stopping[sid] = self.spawn(self._stop_agents(session))
            elif effect is Effect.RELEASE_LOCK:
                self._hand_over()
        self._arm()
        self.on_change()
        # Started, resumed or reconnected while offline: suspended once this move is done.
        asyncio.get_running_loop().call_soon(self.follow_network)

    # -- network -------------------------------------------------------------

    def network(self, online: bool) -> None:
        """netwatch: the machine went offline, or has been back for network_grace."""
        previous, self.online = self.online, online
        if online and previous is False:  # online at start-up is no news
            grace = format_duration(self.config.daemon.network_grace)
            self._network_event(
                True, Kind.NETWORK_UP, f"network up: a default route is back for {grace}"
            )
        elif not online and previous is not False:
            self._network_event(False, Kind.NETWORK_DOWN,
                                "network down: no default route via an interface up")  # fmt: skip
        self.follow_network()

    def network_blind(self) -> None:
        """netwatch cannot watch the network (any more): nothing waits for it."""
        self.network_watched = False
        self.online = True
        self._network_event(True, Kind.NETWORK_UNWATCHED, "network no longer watched: agents "
                            "with needs_network run regardless")  # fmt: skip
        self.follow_network()

    def _network_event(self, online: bool, kind: Kind, message: str) -> None:
        live = self.live
        try:
            with self.transaction():
                self.event_for(live.id if live else None, live.name if live else None,
                               kind, message, {"online": online})  # fmt: skip
        except StorageError as exc:
            log.error("%s; the event '%s' is not recorded", exc.message, message)

    def follow_network(self) -> None:
        """Suspend the live session while offline if an agent needs the network; resume it.

        The network is watched from the first agent that needs it on (or a
        suspended session, whose agents were not all written down): pyroute2
        costs ~11 MiB and ~300 modules, which a daemon without such agents is
        spared. A move the disk cannot take is tried again a second later.
        """
        live = self.live
        if live is None:
            return
        wanted = self.team.needs_network(live.id)
        if wanted or live.state is State.SUSPENDED:
            self.watch_network()
        try:
            if self.online is False and wanted and live.state in (State.ACTIVE, State.IDLE):
                self.move(Event.NETWORK_DOWN, Kind.SESSION_SUSPENDED,
                          f"session {live.name} suspended: network down",
                          pause_reason="network down")  # fmt: skip
            elif self.online is True and live.state is State.SUSPENDED:
                why = "the network is back" if self.network_watched else "network not watched"
                self.move(Event.NETWORK_UP, Kind.SESSION_RESUMED,
                          f"session {live.name} resumed: {why}", pause_reason=None)  # fmt: skip
        except StorageError as exc:
            log.error("%s; retrying in %gs", exc.message, RETRY_SECONDS)
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self.follow_network)

    def _set_live(self, session: Session) -> None:
        previous = self.live
        self.live = session if session.state.live else None
        if self.live is None:
            self._ended = session  # as fresh as the store's row, or fresher (_defer)
            self._clocks = None
            return
        now_mono, now_wall = time.monotonic(), time.time()
        if previous is None or previous.id != session.id or self._clocks is None:
            started = now_mono - (now_wall - (session.started_at or session.created_at))
            stop_at = None
            if session.settings.stop_at:
                wall = policy.next_stop_at(
                    session.started_at or session.created_at, parse_clock(session.settings.stop_at)
                )
                stop_at = now_mono + (wall - now_wall)
            self._clocks = policy.Clocks(started, started, stop_at)
        activity = now_mono - (now_wall - session.last_activity)
        self._clocks = dataclasses.replace(self._clocks, last_activity=activity)

    # -- deadlines -----------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self._next_deadline()
        if due is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(max(due.at, loop.time()), self._fire)

    def _next_deadline(self) -> policy.Deadline | None:
        live, clocks = self.live, self._clocks
        if live is None or clocks is None:
            return None
        s = live.settings
        return policy.nearest(
            policy.deadlines(live.state, clocks, s.idle_after, s.timeout, s.max_duration)
        )

    def _fire(self) -> None:
        try:
            self._fire_due()
        except StorageError as exc:
            # The disk is full or read-only: say so and try again, never lose the deadline.
            log.error("%s; retrying in %gs", exc.message, RETRY_SECONDS)
            self._timer = asyncio.get_running_loop().call_later(RETRY_SECONDS, self._fire)

    def _fire_due(self) -> None:
        self._timer = None
        due = self._next_deadline()
        if due is None or due.at > time.monotonic():
            self._arm()
            return
        live = self.live
        assert live is not None
        s = live.settings
        if due.event is Event.IDLE_TIMEOUT:
            self.move(
                due.event,
                Kind.SESSION_IDLE,
                f"session {live.name} is idle after "
                f"{format_duration(s.idle_after)} without activity",
            )
        elif due.event is Event.EXPIRE:
            why = f"no activity for {format_duration(s.timeout)}"
            self.move(
                due.event,
                Kind.SESSION_EXPIRED,
                f"session {live.name} expired: {why}",
                close_reason=f"expired: {why}",
            )
        elif due.reason == "max_duration":
            self._stop(live, f"max_duration {format_duration(s.max_duration or 0)} reached")
        else:
            self._stop(live, f"stop_at {s.stop_at} reached")

    def record_error(self, agent: str | None, text: str, message: str) -> None:
        """One error of the live session, kept with its text (SPEC §2.3); at
        error_threshold the session is disconnected. Counted even if the disk refuses it."""
        live = self.live
        assert live is not None
        now, s = time.time(), live.settings
        text, message = _clip(text), _clip(message)
        became = live.with_error(agent, text, now)
        count = became.error_count(now)
        window = format_duration(s.error_window)
        try:
            with self.transaction():
                self.store.add_error(live.id, now, agent, text)
                self.store.save_session(became.to_row())
                self._event(
                    became,
                    Kind.SESSION_ERROR,
                    f"session {live.name}: error {count} of {s.error_threshold} within "
                    f"{window}: {message}",
                    {"agent": agent, "text": text, "count": count},
                )
        except StorageError as exc:
            log.error("%s; the error is counted but not stored: %s", exc.message, message)
        self._set_live(became)
        if policy.disconnects(count, s.error_threshold, became.state):
            try:
                self.move(Event.ERROR_THRESHOLD, Kind.SESSION_DISCONNECTED,
                          f"session {live.name} disconnected: {count} errors within {window}"
                          f" (threshold {s.error_threshold}), the last: {message}")  # fmt: skip
            except StorageError as exc:
                log.error("%s; the session could not be disconnected", exc.message)

    def add_metrics(self, metrics: Mapping[str, float]) -> None:
        live = self.live
        assert live is not None
        totals = dict(live.metrics)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0) + value
            if not math.isfinite(totals[key]):
                raise InvalidParams(
                    f"metric {key!r}: {live.metrics.get(key, 0)!r} + {value!r} is not a finite"
                    " number", "report smaller amounts, or start a new session",
                )  # fmt: skip
        became = dataclasses.replace(live, metrics=MappingProxyType(totals))
        with self.transaction():
            self.store.save_session(became.to_row())
        self._set_live(became)

    def prune(self) -> None:
        """Forget closed sessions older than history_days, with their logs; again in a day."""
        cutoff = time.time() - self.config.daemon.history_days * 86400
        try:
            with self.transaction():
                gone = self.store.prune(cutoff)
        except StorageError as exc:
            log.error("%s", exc.message)
            gone = []
        for session_id in gone:
            for folder in ("logs", "checkpoints"):
                shutil.rmtree(self.team.crew.state_dir / folder / session_id, ignore_errors=True)
        if gone:
            log.info("pruned %d sessions closed more than %d days ago", len(gone),
                     self.config.daemon.history_days)  # fmt: skip
        asyncio.get_running_loop().call_later(PRUNE_EVERY, self.prune)

    async def shutdown(self, on_shutdown: OnShutdown) -> None:
        """The daemon is going: stop every agent, or leave them for the next daemon."""
        if on_shutdown is OnShutdown.STOP:
            live_ids = list(self.team.crew.sessions)
            await asyncio.gather(*(self.team.stop_all(sid, forget=False) for sid in live_ids))
        for task in list(self._stopping.values()):
            await asyncio.shield(task)
        self.team.flush()

    # -- reads ---------------------------------------------------------------

    def wire(self, session: Session) -> dict[str, Any]:
        """The session's wire form, with its agents and its error count."""
        found = session.to_wire()
        found["agents"] = self.team.wire(session)
        found["errors"]["count"] = session.error_count(time.time())
        return found

    def find(self, name_or_id: str) -> Session:
        for known in (self.live, self._ended):
            if known is not None and name_or_id in (known.name, known.id):
                return known
        row = self.store.find_session(name_or_id)
        if row is None:
            raise NoSession(
                f"no session named '{name_or_id}'",
                "'sessionc history' lists the sessions this daemon knows",
            )
        return Session.from_row(row, self.store.participants(row["id"]))

    def history(self, limit: int, before: float | None) -> list[Session]:
        return [
            Session.from_row(r, self.store.participants(r["id"]))
            for r in self.store.history(limit, before)
        ]

    def events(self, limit: int, session: str | None) -> list[dict[str, Any]]:
        session_id = self.find(session).id if session else None
        return [_event_wire(e) for e in self.store.events(limit, session_id)]

    # -- helpers -------------------------------------------------------------

    def _settings_for(self, template: str | None, overrides: Mapping[str, Any]) -> SessionSettings:
        base = self.config.session
        try:
            if template is not None:
                found = self.config.templates.get(template)
                if found is None:
                    known = ", ".join(sorted(self.config.templates)) or "none are configured"
                    raise InvalidParams(
                        f"no template named '{template}'", f"known templates: {known}"
                    )
                base = session_overrides(base, dict(found.session), f"templates.{template}")
            return session_overrides(base, overrides, "session.start")
        except ConfigError as exc:
            raise InvalidParams(
                "; ".join(f"{p.key} = {p.value!r}: {p.rule}" for p in exc.problems),
                "see 'man sessiond.toml' for the [session] keys",
            ) from None

    def _parent_id(self, parent: str, peer: Peer, admin: bool) -> str:
        """--from OLD: OLD's owner and admins only, since its checkpoints come with it."""
        found = self.find(parent)
        if not admin and peer.uid != found.owner.uid:
            raise PermissionDenied(
                f"{peer.user} may not start from session {found.name}: only its owner "
                f"({found.owner.user}) and admins may",
                "start without --from, or ask its owner or an admin",
            )
        if found.state.live:
            raise InvalidState(
                f"session '{parent}' is still live", "--from takes a closed session: stop it first"
            )
        return found.id

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A store transaction whose events are published only once it committed.

        Writes that the disk refused earlier (_defer) go first, in their order.
        """
        self._unpublished.clear()
        with self.store.transaction():
            for write in self._deferred:
                write()
            yield
        self._deferred.clear()
        for event in self._unpublished:
            self.outlet.publish(event)
        self._unpublished.clear()

    def _defer(self, write: Callable[[], None]) -> None:
        self._deferred.append(write)
        if len(self._deferred) == 1:
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._write_deferred)

    def _write_deferred(self) -> None:
        if not self._deferred:
            return
        try:
            with self.transaction():
                pass
        except StorageError:
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._write_deferred)
            return
        log.info("the disk took the records it had refused")

    def _event(self, s: Session, kind: Kind, message: str, data: Mapping[str, Any]) -> None:
        self.event_for(s.id, s.name, kind, message, data)

    def event_for(
        self, session_id: str | None, name: str | None, kind: Kind, message: str,
        data: Mapping[str, Any],
    ) -> None:  # fmt: skip
        """Record an event inside transaction(); it is published once that commits."""
        now = time.time()
        seq = self.store.add_event(now, session_id, name, kind=kind, message=message, data=data)
        self._unpublished.append(
            {
                "seq": seq,
                "time": rfc3339(now),
                "session": name,
                "session_id": session_id,
                "kind": kind,
                "message": message,
                "data": dict(data),
            }
        )


_ACTIVITY = frozenset({Event.ACTIVITY, Event.RESUME, Event.RECONNECT, Event.LAUNCHED})
ERROR_TEXT_MAX = 2000  # characters of an error's text kept: a report may hold a megabyte


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


# Moves that end a session go ahead on a full disk; their records are written later.
_ENDINGS = frozenset({Event.STOP, Event.STOPPED, Event.EXPIRE, Event.LAUNCH_FAILED})


def _state_hint(s: Session) -> str:
    return {
        State.PAUSED: f"resume it with 'sessionc resume {s.name}'",
        State.DISCONNECTED: "reconnect it with 'sessionc reconnect', or stop it",
        State.SUSPENDED: "it resumes by itself when the network is back",
        State.STOPPING: "wait for it to close",
    }.get(s.state, f"'sessionc health {s.name}' says what it can do next")


def _event_wire(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "time": rfc3339(row["time"]),
        "session": row["session"],
        "session_id": row["session_id"],
        "kind": row["kind"],
        "message": row["message"],
        "data": row["data"],
    }
