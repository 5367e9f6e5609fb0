"""The use cases the RPC calls, in one place.

`App` is what the wire acts on: one method per use case (start a session,
stop an agent, export a session…), each taking plain values and the caller's
`Peer`, returning the result's wire form and raising only DomainErrors. It
composes the `Sessions` (the live session), the `Fleet` (its agents), the
store and the daemon's own facts; what a call needs of them it asks here, so
no handler reaches into them. The time comes from the daemon's `Clock`.

The daemon's facts (`about`, `cluster`, the configuration, the admin group's gid) are
read through callables each time: a reload replaces them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from sessiond.core import moves
from sessiond.core.events import Kind
from sessiond.core.health import health, remote_health
from sessiond.core.moves import TOUCH, Move
from sessiond.core.raw import Raw
from sessiond.core.records import Participant, Person, rfc3339
from sessiond.core.reports import check_metrics
from sessiond.core.session import Event
from sessiond.daemon import logs, metrics
from sessiond.daemon.access import Peer, Role, is_admin, role_of
from sessiond.daemon.crew import agent_wire, signal_param
from sessiond.errors import AgentNotFound, DomainError, InvalidParams, NoSession, PermissionDenied

if TYPE_CHECKING:
    from sessiond.core.records import Session
    from sessiond.core.settings import Config
    from sessiond.daemon.clock import Clock
    from sessiond.daemon.fleet import Fleet
    from sessiond.daemon.sessions import Sessions
    from sessiond.daemon.store import Store
    from sessiond.daemon.supervisor import Agent

Wire = dict[str, Any]
EXPORT_EVENTS = 1_000_000  # an export's events: all a session keeps (100,000), and then some


class App:
    """The daemon's use cases. `about()` is the daemon's version, pid, uptime and paths."""

    def __init__(
        self,
        *,
        sessions: Sessions,
        fleet: Fleet,
        store: Store,
        facts: Callable[[Agent], dict[str, Any]],
        clock: Clock,
        about: Callable[[], Wire],
        cluster: Callable[[], Wire],
        config: Callable[[], Config],
        admin_gid: Callable[[], int | None],
    ) -> None:
        self._sessions = sessions
        self._fleet = fleet
        self._store = store
        self._facts = facts  # an agent's CPU and memory, as last sampled (gauges.py)
        self._clock = clock
        self._cluster = cluster  # whose lock this is, and whether it answers (SPEC §10)
        self._config = config
        self._admin_gid = admin_gid
        self.about = about  # the callable itself: daemon.ping takes no detour

    # -- who calls -------------------------------------------------------------

    def is_admin(self, peer: Peer) -> bool:
        return is_admin(peer, self._admin_gid())

    def live(self) -> Session | None:
        """The live session, if any: what a caller's role is ranked against."""
        return self._sessions.live

    # -- sessions --------------------------------------------------------------

    def status(self) -> Wire:
        live = self._sessions.live
        return {
            # The configured templates: what `start --template` takes (and completion offers).
            "daemon": {
                **self.about(),
                "templates": sorted(self._config().templates),
                "cluster": self._cluster(),
            },
            "session": self._sessions.wire(live, encoded=True) if live else self._remote(),
            "queue": self._sessions.waiting(),
            "orphans": self._fleet.orphans(),
        }

    async def start(
        self, peer: Peer, admin: bool, tty: str | None, *, name: str | None,
        template: str | None, parent: str | None, overrides: dict[str, Any], wait: Any,
    ) -> Wire:  # fmt: skip
        """Start a session; with `wait` (seconds, or True for no limit) queue for the lock."""
        request = self._sessions.prepare_start(
            peer, tty, name=name, template=template, parent=parent, overrides=overrides,
            admin=admin,
        )  # fmt: skip
        if wait is None:
            wait = False
        elif wait is not True and wait is not False and float(wait) < 0:
            raise InvalidParams(
                "param 'wait' must be a number of seconds >= 0, or true",
                "use true to wait with no limit",
            )
        return self._sessions.wire(await self._sessions.start(request, wait))

    def join(self, peer: Peer, name: str | None, tty: str | None) -> Wire:
        sessions = self._sessions
        live = sessions.resolve(name)
        if peer.uid == live.owner.uid or peer.uid in live.participant_uids():
            return sessions.wire(sessions.move(TOUCH))  # already in: nothing new to record
        person = Participant(Person(peer.uid, peer.user, peer.pid, tty), self._clock.wall())
        others = tuple(p for p in live.participants if p.who.uid != peer.uid)
        return sessions.wire(sessions.move(
            Move(Event.ACTIVITY, Kind.SESSION_JOINED, f"{peer.user} joined session {live.name}",
                 {"participants": (*others, person)}),
            also=lambda: self._store.save_participant(
                live.id, {**person.who.to_wire(), "joined_at": person.joined_at}),
        ))  # fmt: skip

    def leave(self, peer: Peer, name: str | None) -> Wire:
        return self._sessions.wire(self._sessions.leave(peer, name))

    async def stop(self, peer: Peer, name: str | None, reason: str | None) -> Wire:
        return self._sessions.wire(await self._stop(peer, name, reason))

    async def _stop(self, peer: Peer, name: str | None, reason: str | None) -> Session:
        live = self._sessions.resolve(name)
        self._sessions.move(moves.stop(live.name, reason or f"stopped by {peer.user}"))
        await self._sessions.stopped(live.id)
        return self._sessions.find(live.id)

    def pause(self, peer: Peer, name: str | None, reason: str | None) -> Wire:
        live = self._sessions.resolve(name)
        why = reason or f"paused by {peer.user}"
        message = f"session {live.name} paused: {why}"
        moved = self._sessions.move(Move(Event.PAUSE, Kind.SESSION_PAUSED, message,
                                         {"pause_reason": why}))  # fmt: skip
        return self._sessions.wire(moved)

    def resume(self, peer: Peer, name: str | None) -> Wire:
        live = self._sessions.resolve(name)
        message = f"session {live.name} resumed by {peer.user}"
        moved = self._sessions.move(Move(Event.RESUME, Kind.SESSION_RESUMED, message,
                                         {"pause_reason": None}))  # fmt: skip
        return self._sessions.wire(moved)

    async def reconnect(self, peer: Peer, name: str | None) -> Wire:
        """Start a disconnected session's agents afresh, once the old ones are gone."""
        await self._sessions.terminated(self._sessions.resolve(name).id)
        live = self._sessions.resolve(name)
        reset = {"errors_reset_at": self._clock.wall(), "error_times": ()}
        message = f"session {live.name} reconnected by {peer.user}"
        moved = self._sessions.move(Move(Event.RECONNECT, Kind.SESSION_RECONNECTED, message, reset))
        return self._sessions.wire(moved)

    def touch(self, name: str | None) -> Wire:
        self._sessions.resolve(name)
        return self._sessions.wire(self._sessions.move(TOUCH))

    def remote(self, name: str | None = None) -> Wire | None:
        """The cluster's live session if it runs on another host (and is `name`, if given)."""
        found = self._sessions.lock.remote()
        if found is None or (name is not None and name not in (found["name"], found["id"])):
            return None
        return found

    def _remote(self, name: str | None = None) -> Wire | None:
        """The remote session's wire form: no agent of it runs here."""
        found = self.remote(name)
        return {**found, "agents": []} if found is not None else None

    def health(self, name: str | None) -> Wire:
        """The live session's health, or a past one's; an unknown name is `not_found`."""
        live = self._sessions.live
        if live is None and (remote := self.remote(name)) is not None:
            return remote_health(remote)
        now = self._clock.wall()
        if name is None or (live and name in (live.name, live.id)):
            return health(live, name, now, live.error_count(now) if live else 0)
        try:
            found = self._sessions.find(name)
        except NoSession:
            return health(None, name, now)
        return health(found, name, now)

    def get(self, name: str) -> Wire:
        if (remote := self._remote(name)) is not None:
            return remote
        return self._sessions.wire(self._sessions.find(name))

    def export(self, peer: Peer, admin: bool, name: str) -> Wire:
        """A session, live or closed, with its events and checkpoints: for its own people."""
        found = self._sessions.find(name)
        if role_of(peer, found.owner.uid, found.participant_uids(), admin) < Role.PARTICIPANT:
            raise PermissionDenied(
                f"{peer.user} may not export session {found.name}: only its owner, its "
                "participants and admins may",
                f"ask {found.owner.user} (its owner) or an admin",
            )
        checkpoints = self._store.checkpoints(found.id)
        return {
            "session": self._sessions.wire(found),
            "events": self._sessions.events(EXPORT_EVENTS, found.id),
            "metrics": dict(found.metrics),
            "checkpoints": [{**c, "time": rfc3339(c["time"])} for c in checkpoints],
        }

    def history(self, limit: int, before: float | None) -> list[Wire]:
        return [self._sessions.wire(s) for s in self._sessions.history(limit, before)]

    async def cleanup(self, peer: Peer, orphans_only: bool) -> Wire:
        """Stop the live session (unless orphans_only), then end the orphaned agents."""
        stopped = None
        if not orphans_only and self._sessions.live is not None:
            found = await self._stop(peer, None, f"cleaned up by {peer.user}")
            stopped = self._sessions.wire(found)
        return {"stopped": stopped, "orphans_killed": await self._fleet.kill_orphans()}

    def events(self, lines: int, session: str | None) -> list[Wire]:
        return self._sessions.events(lines, session)

    def metrics(self) -> Wire:
        return metrics.report(self._sessions)

    # -- agents ----------------------------------------------------------------

    def agent_list(self) -> Raw | list[Wire]:
        live = self._sessions.live
        return self._fleet.encoded(live) if live else []

    def agent_run(
        self, peer: Peer, *, command: list[Any], name: str | None, cwd: str | None,
        env: dict[str, Any] | None, restart: str | None, labels: list[Any],
        needs_network: bool,
    ) -> Wire:  # fmt: skip
        live = self._live()
        agent = self._fleet.run(
            peer, live, command=command, name=name, cwd=cwd, env=env, restart=restart,
            labels=labels, needs_network=needs_network,
            checkpoints=self._sessions.parent_checkpoints(live),
        )  # fmt: skip
        if needs_network:
            self._sessions.follow_network()
        self._sessions.on_change()  # the STATUS= line counts the agents
        return self._agent(agent)

    def agent_start(self, name: str) -> Wire:
        return self._agent(self._fleet.start(self._live(), name))

    async def agent_stop(self, name: str) -> Wire:
        return self._agent(await self._fleet.stop(self._live(), name))

    async def agent_restart(self, name: str) -> Wire:
        await self._fleet.stop(self._live(), name)
        return self._agent(self._fleet.start(self._live(), name))

    def agent_kill(self, name: str, signal: Any) -> Wire:
        return self._agent(self._fleet.kill(self._live(), name, signal))

    # -- groups of agents: by names, "all" or a label ------------------------------

    def each(self, names: list[str] | str | None, label: str | None,
             act: Callable[[str], Wire]) -> list[Wire]:  # fmt: skip
        """`act` on each agent of the group in turn; their outcomes, in the group's order."""
        group = self._group(names, label)
        return _outcomes(group, [_tried(act, name) for name in group])

    async def each_at_once(self, names: list[str] | str | None, label: str | None,
                           act: Callable[[str], Awaitable[Wire]]) -> list[Wire]:  # fmt: skip
        """`act` on every agent of the group at once, so that their stop_timeouts overlap."""
        group = self._group(names, label)
        done = await asyncio.gather(*(act(name) for name in group), return_exceptions=True)
        return _outcomes(group, done)

    def kill_each(
        self, names: list[str] | str | None, label: str | None, signal: Any
    ) -> list[Wire]:
        number = signal_param(signal)  # a bad signal is the call's: refused before any kill
        return self.each(names, label, lambda name: self.agent_kill(name, number))

    def _group(self, names: list[str] | str | None, label: str | None) -> list[str]:
        """The agents of the live session that `names` (a list, or "all") or `label` pick."""
        live = self._live()
        if isinstance(names, list):
            return list(dict.fromkeys(names))  # an unknown one fails alone, AGENT_NOT_FOUND
        agents = self._fleet.crew.agents(live.id)
        group = [a.name for a in agents if label is None or label in a.labels]
        if group:
            return group
        if label is None:
            raise AgentNotFound(f"session {live.name} has no agents",
                                "start one with 'sessionc run -- CMD'")  # fmt: skip
        labels = ", ".join(sorted({x for a in agents for x in a.labels})) or "none"
        raise AgentNotFound(f"session {live.name} has no agent labelled {label!r}",
                            f"its labels: {labels}")  # fmt: skip

    def report(
        self, token: str, metrics: dict[str, Any] | None, error: str | None, activity: bool
    ) -> None:
        """An agent's report: counters to add, an error of its own, or activity."""
        agent = self._fleet.by_token(token, self._sessions.live)
        if metrics:
            self._sessions.add_metrics(check_metrics(metrics))
        if error:
            self._fleet.reported_error(agent, error)
        if activity and self._sessions.live is not None:
            self._sessions.move(TOUCH)

    def checkpoint(self, token: str, data: Any) -> int:
        """Store an agent's checkpoint; its sequence number."""
        return self._fleet.checkpoint(self._fleet.by_token(token, self._sessions.live), data)

    def logs(self, agent: str | None, names: list[str] | str | None, label: str | None,
             lines: int, since: float | None) -> Wire:  # fmt: skip
        """The last lines of one agent, or of a group (every agent: names None), merged in
        time order; with `since`, only those that came then or later."""
        live = self._live()
        if agent is None and names is None and label is None:
            found = list(self._fleet.crew.agents(live.id))  # none yet is no error here
        else:
            group = [agent] if agent is not None else self._group(names, label)
            found = [self._fleet.find(live, name) for name in group]
        stamp = None if since is None else logs.stamp(since)
        entries = logs.merged({a.name: a.log_path for a in found}, lines, stamp)
        result: Wire = {"lines": [e["line"] for e in entries], "entries": entries}
        return {"agent": found[0].name, **result} if agent is not None else result

    def log_sources(
        self, peer: Peer, admin: bool, names: list[str], whole: bool
    ) -> tuple[str, list[Agent]]:
        """The live session's id, and its agents of these names (or all of them), if the
        caller may read their logs."""
        if not names and not whole:
            return "", []
        live = self._sessions.resolve(None)
        role = role_of(peer, live.owner.uid, live.participant_uids(), admin)
        if role < Role.PARTICIPANT:
            raise PermissionDenied(
                f"{peer.user} may not follow the logs of session {live.name}",
                f"join the session first with 'sessionc join {live.name}'",
            )
        if whole:
            return live.id, list(self._fleet.crew.agents(live.id))
        return live.id, [self._fleet.find(live, name) for name in names]

    def follow_logs(self, agents: list[Agent]) -> None:
        """Send these agents' lines from now on to whoever subscribed to them."""
        for agent in agents:
            self._fleet.follow_logs(agent)

    # -- helpers ---------------------------------------------------------------

    def _live(self) -> Session:
        return self._sessions.resolve(None)

    def _agent(self, agent: Agent) -> Wire:
        return agent_wire(agent, self._facts(agent), self._clock.monotonic())


def _tried(act: Callable[[str], Wire], name: str) -> Wire | DomainError:
    try:
        return act(name)
    except DomainError as exc:
        return exc


def _outcomes(names: list[str], results: Sequence[Wire | BaseException]) -> list[Wire]:
    """Each agent's outcome: {"name", "agent"}, or {"name", "error"} for a DomainError."""
    found = []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, DomainError):
            found.append({"name": name, "error": result.to_wire()})
        elif isinstance(result, BaseException):  # a bug, or a cancel: not an agent's outcome
            raise result
        else:
            found.append({"name": name, "agent": result})
    return found
