"""The live session's agents as the session sees them: launch, control, errors.

`Team` is the supervisor's `Hooks`: every agent change is written to the
store and published as an event, every counted error goes to the session's
error window, and reaching `error_threshold` disconnects the session. Agent
changes come in bursts (a crash loop, 200 agents starting), so their rows
are written in one transaction per turn of the event loop, not one each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from typing import TYPE_CHECKING, Any

from sessiond.core.agent import AgentRefused, AgentState, Desired
from sessiond.core.events import Kind
from sessiond.core.records import Session, rfc3339
from sessiond.core.revive import Revival, revive_plan
from sessiond.core.session import Event, State
from sessiond.core.settings import AgentSpec
from sessiond.daemon import logs, procs
from sessiond.daemon.crew import (
    CHECKPOINT_MAX_BYTES,
    Crew,
    Runner,
    adhoc_spec,
    agent_wire,
    check_daemon_can_run_as,
    spec_from_dict,
    spec_to_dict,
)
from sessiond.daemon.store import Store
from sessiond.daemon.supervisor import Agent, SpawnError, Supervisor
from sessiond.errors import (
    AgentNotFound,
    BadToken,
    DomainError,
    InvalidParams,
    InvalidState,
    PermissionDenied,
    StorageError,
)

if TYPE_CHECKING:
    from sessiond.daemon.access import Peer
    from sessiond.daemon.sessions import Manager

log = logging.getLogger("sessiond")
METRIC_RE = re.compile(r"[a-z_][a-z0-9_]{0,31}")
RUNNABLE = (State.ACTIVE, State.IDLE, State.SUSPENDED)
STRAY_GRACE = 10.0  # seconds between SIGTERM and SIGKILL for what escaped a stopped agent


class Team:
    def __init__(self, manager: Manager, store: Store, crew: Crew) -> None:
        self.manager = manager
        self.store = store
        self.crew = crew
        self.supervisor = Supervisor(crew.instance, self, self)
        daemon = manager.config.daemon
        self.keeper = logs.KeeperLink(
            crew.state_dir, daemon.log_max_bytes, daemon.log_files, self._known_logs
        )
        self.logs = logs.Followers(self._lines, self._wanted)
        self._dirty: dict[Agent, None] = {}
        self._pending_events: list[tuple[Agent, Kind, str]] = []
        self._flush_armed = False

    # -- Hooks ---------------------------------------------------------------

    def agent_changed(self, agent: Agent, kind: Kind, message: str) -> None:
        self._dirty[agent] = None
        self._pending_events.append((agent, kind, message))
        if not self._flush_armed:
            self._flush_armed = True
            asyncio.get_running_loop().call_soon(self._flush)
        if kind is Kind.AGENT_STARTED and self._held(agent):
            self.supervisor.pause(agent)  # recorded after its start

    def _lines(self, key: str, lines: list[str]) -> None:
        session_id, name = key.split("/", 1)
        live = self.manager.live
        if live is not None and live.id == session_id:
            self.manager.outlet.publish_lines(name, live.name, lines)

    def _wanted(self, key: str) -> bool:
        session_id, name = key.split("/", 1)
        live = self.manager.live
        return (
            live is not None and live.id == session_id and self.manager.outlet.wants(f"logs:{name}")
        )

    def follow_logs(self, agent: Agent) -> None:
        """A logs:AGENT subscriber arrived: send it lines from now on."""
        self.logs.follow(_log_key(agent), agent.log_path)

    # -- Output: each run of an agent writes into a pipe to the log keeper ------

    def open(self, agent: Agent) -> int:
        return self.keeper.pipe(_log_key(agent), agent.log_path)

    def close(self, agent: Agent) -> None:
        self.keeper.release(_log_key(agent))

    def _known_logs(self) -> set[str]:
        return {_log_key(agent) for agent in self.crew.by_token.values()}

    def agent_error(self, agent: Agent, text: str) -> None:
        """An unexpected exit (`text` says how): one error of the agent's session."""
        self._error(agent, text, f"agent {agent.name} {text}")

    def _error(self, agent: Agent, text: str, message: str) -> None:
        live = self.manager.live
        if live is not None and live.id == agent.session_id:
            self.manager.record_error(agent.name, text, message)

    def _flush(self) -> None:
        self._flush_armed = False
        dirty, events = list(self._dirty), self._pending_events
        try:
            self._write(dirty, events)
        except StorageError as exc:
            # Keep everything pending; the disk may come back (SPEC §6.2).
            log.error("%s; keeping %d agent changes to write again in 1s", exc.message,
                      len(self._pending_events))  # fmt: skip
            self._flush_armed = True
            asyncio.get_running_loop().call_later(1.0, self._flush)
            return
        except Exception:  # a bug, not the disk: it must not stop every later write
            log.exception("internal error writing agent changes; writing them one by one")
            self._write_apart(dirty, events)
        self._dirty, self._pending_events = {}, []

    def _write(self, dirty: list[Agent], events: list[tuple[Agent, Kind, str]]) -> None:
        with self.manager.transaction():
            for agent in dirty:
                self.store.save_agent(_agent_row(agent))
            for agent, kind, message in events:
                self.manager.event_for(
                    agent.session_id,
                    agent.session_name,
                    kind,
                    message,
                    {"agent": agent.name, "pid": agent.pid, "exit_code": agent.exit_code},
                )

    def _write_apart(self, dirty: list[Agent], events: list[tuple[Agent, Kind, str]]) -> None:
        """Each change in a transaction of its own: only the one that cannot be written is lost."""
        changes: list[tuple[list[Agent], list[tuple[Agent, Kind, str]]]] = [
            ([agent], []) for agent in dirty
        ] + [([], [event]) for event in events]
        for rows, items in changes:
            try:
                self._write(rows, items)
            except Exception:  # noqa: BLE001 -- said, and the others still written
                log.error("dropping an agent change that cannot be written: %r", (rows, items))

    def save_now(self, agents: list[Agent]) -> None:
        """Write these agents' rows before any process of theirs exists (StorageError if not)."""
        with self.manager.transaction():
            for agent in agents:
                self.store.save_agent(_agent_row(agent))

    # -- the session's agents ------------------------------------------------

    def launch(
        self, session: Session, specs: list[AgentSpec], checkpoints: dict[str, Any]
    ) -> str | None:
        """Start the template's agents; the first that cannot start fails the launch.

        Every agent's row is durable before the first process starts: a daemon
        killed half-way through knows each process it may find (SPEC §3, §6.2).
        """
        agents = []
        try:
            for spec in specs:
                runner = Runner.for_user(spec.user) if spec.user else _owner_runner(session)
                check_daemon_can_run_as(runner)
                agents.append(self.crew.add(
                    session, spec, runner=runner, cwd=spec.cwd or runner.default_cwd(),
                    checkpoint=handed(checkpoints, spec.name, runner.uid),
                ))  # fmt: skip
            self.save_now(agents)
            for agent in agents:
                self.supervisor.start(agent)
        except DomainError as exc:
            return exc.message
        except (SpawnError, AgentRefused) as exc:
            return str(exc)
        return None

    def adopt(self, live: Session) -> procs.Census:
        """After a daemon restart: take back the live session's agents (SPEC §3).

        An agent still alive, the same process by pid and start time, is watched
        again; one that died meanwhile is an exit under its restart policy; one a
        user stopped stays stopped; one stopped by our own shutdown starts again.
        Returns the census of /proc it read, which finds the orphans too.
        """
        rows = self.store.agents(live.id)
        revived = [(self._revive(live, row), row) for row in rows]
        if rows:  # now that every agent is known: the keeper's pipes of the others go
            self.keeper.attach()  # the adopted agents' output goes on being kept
        census = procs.Census(self.crew.instance)
        for agent, row in revived:
            pid = row["pid"]
            plan = revive_plan(row, procs.start_time(pid) if pid else None)
            if plan is Revival.START and (found := census.leader(row["token"])) is not None:
                # Started, but the daemon died before it wrote the pid: that process is it.
                pid, agent.start_ticks, agent.state = (
                    found,
                    procs.start_time(found),
                    AgentState.RUNNING,
                )
                plan = Revival.ADOPT
            if plan is Revival.ADOPT:
                self.supervisor.adopt(agent, pid)
                # The row may lag the process (a crash before it was written): settle both.
                self.supervisor.settle(agent, stopped=self._held(agent))
            elif plan is Revival.DIED:
                self.supervisor.died_meanwhile(agent)
            elif plan is Revival.START and live.state in RUNNABLE:
                self.supervisor.start(agent)
        return census

    def _revive(self, live: Session, row: dict[str, Any]) -> Agent:
        agent = Agent(
            name=row["name"], session_id=live.id, session_name=live.name,
            spec=spec_from_dict(row["spec"]), uid=row["uid"], gid=row["gid"],
            groups=tuple(row["groups"]), token=row["token"], cwd=row["cwd"], env=row["env"],
            log_path=self.crew.log_path(live.id, row["name"]),
            state=AgentState(row["state"]), desired=Desired(row["desired"]),
            restarts=row["restarts"], exit_code=row["exit_code"],
            started_at=row["started_at"], start_ticks=row["start_ticks"],
        )  # fmt: skip
        self.crew.restore(agent)
        return agent

    def find_orphans(self, census: procs.Census | None = None) -> None:
        """Processes with this daemon's marker that belong to no agent we know (SPEC §3)."""
        census = census or procs.Census(self.crew.instance)
        for token, pids in census.marked().items():
            if token not in self.crew.by_token:
                for pid in pids:
                    self.supervisor.watch_orphan(pid, census.about(pid))

    def orphans(self) -> list[dict[str, Any]]:
        return [{"pid": pid, **about} for pid, about in sorted(self.supervisor.orphans.items())]

    async def kill_orphans(self) -> int:
        """SIGTERM every orphan, SIGKILL those left after 5 s; how many there were."""
        pids = set(self.supervisor.orphans)
        await procs.terminate(pids, 5.0)
        return len(pids)

    def flush(self) -> None:
        """Write pending agent rows now (at shutdown, before the store closes)."""
        if self._dirty or self._pending_events:
            self._flush()

    def _held(self, agent: Agent) -> bool:
        """Should this agent be stopped (SIGSTOP): its session is paused, or it needs the
        network and the session is suspended or about to be (the machine is offline)."""
        live = self.manager.live
        if live is None or live.id != agent.session_id:
            return False
        offline = live.state is State.SUSPENDED or self.manager.online is False
        return live.state is State.PAUSED or (agent.spec.needs_network and offline)

    def needs_network(self, session_id: str) -> bool:
        return any(a.spec.needs_network for a in self.crew.agents(session_id))

    def pause_all(self, session_id: str, network_only: bool = False) -> None:
        for agent in self.crew.agents(session_id):
            if agent.spec.needs_network or not network_only:
                self.supervisor.pause(agent)

    def resume_all(self, session_id: str, network_only: bool = False) -> None:
        for agent in self.crew.agents(session_id):
            if (agent.spec.needs_network or not network_only) and not self._held(agent):
                self.supervisor.resume(agent)

    def restart_all(self, session_id: str) -> None:
        for agent in self.crew.agents(session_id):
            try:
                self.supervisor.start(agent)
            except SpawnError as exc:
                self.agent_error(agent, f"could not be started: {exc.reason}")

    def halt(self, session_id: str) -> None:
        """No agent of this session restarts from now on: its agents are about to stop."""
        for agent in self.crew.agents(session_id):
            self.supervisor.halt(agent)

    async def stop_all(self, session_id: str, forget: bool) -> None:
        agents = self.crew.agents(session_id)
        await self.supervisor.stop_all(agents)
        grace = max((a.spec.stop_timeout for a in agents), default=STRAY_GRACE)
        await self.sweep(grace)
        if forget:
            for agent in agents:
                self.logs.forget(_log_key(agent))
            self.crew.forget(session_id)

    async def sweep(self, grace: float) -> None:
        """End what escaped the stopped agents: SIGTERM, SIGKILL after `grace` (SPEC §3)."""
        running = {a.pid for a in self.crew.by_token.values() if a.pid is not None}
        keep = running | set(self.supervisor.orphans) | {self.keeper.pid or 0}
        found = procs.strays(keep)
        if not found:
            return
        log.warning("ending %d processes left behind by stopped agents: %s", len(found),
                    sorted(found))  # fmt: skip
        killed = await procs.terminate(found, grace)
        if killed:
            log.warning("sent SIGKILL to %s: still there %gs after SIGTERM", sorted(killed), grace)

    def wire(self, session: Session) -> list[dict[str, Any]]:
        agents = self.crew.agents(session.id)
        if not agents and not session.state.live:
            return [_stored_wire(r, session.name) for r in self.store.agents(session.id)]
        return [agent_wire(a, self.supervisor.facts(a)) for a in agents]

    # -- calls ---------------------------------------------------------------

    def run(
        self,
        peer: Peer,
        live: Session,
        *,
        command: list[str],
        name: str | None,
        cwd: str | None,
        env: dict[str, Any] | None,
        restart: str | None,
        labels: list[Any],
        needs_network: bool,
    ) -> Agent:
        if live.state not in RUNNABLE:
            raise InvalidState(
                f"session {live.name} is {live.state.value}: no agents start now",
                f"'sessionc health {live.name}' says what to do",
            )
        runner = Runner.for_peer(peer)
        check_daemon_can_run_as(runner)
        where = cwd or runner.default_cwd()
        if not os.path.isabs(where):
            raise InvalidParams(
                f"unable to run in {where}: not an absolute path", "pass cwd as an absolute path"
            )
        wanted = os.path.basename(command[0]) if command and isinstance(command[0], str) else ""
        chosen = name or self.crew.unique_name(live.id, wanted or "agent")
        checkpoint = handed(self.manager.parent_checkpoints(live), chosen, runner.uid)
        spec = adhoc_spec(chosen, command, restart, labels, needs_network)
        if self.crew.get(live.id, spec.name):
            raise InvalidParams(
                f"session {live.name} already has an agent named {spec.name}", "pick another --name"
            )
        extra = {str(k): str(v) for k, v in (env or {}).items()}
        agent = self.crew.add(
            live, spec, runner=runner, cwd=where, checkpoint=checkpoint, extra_env=extra
        )
        try:
            self.save_now([agent])  # on a full disk nothing starts (SPEC §6.2)
            self.supervisor.start(agent)
        except StorageError:
            self.crew.discard(agent)
            raise
        except SpawnError as exc:
            self.crew.discard(agent)
            raise InvalidParams(str(exc), exc.hint) from None
        if needs_network:
            self.manager.follow_network()
        self.manager.on_change()  # the STATUS= line counts the agents
        return agent

    def find(self, live: Session, name: str) -> Agent:
        agent = self.crew.get(live.id, name)
        if agent is None:
            names = ", ".join(a.name for a in self.crew.agents(live.id)) or "none"
            raise AgentNotFound(
                f"session {live.name} has no agent named {name!r}", f"its agents: {names}"
            )
        return agent

    def start(self, live: Session, name: str) -> Agent:
        agent = self.find(live, name)
        agent.desired = Desired.RUNNING
        try:
            self.supervisor.start(agent)
        except SpawnError as exc:
            raise InvalidParams(str(exc), exc.hint) from None
        except AgentRefused as exc:
            raise InvalidState(
                f"agent {name}: {exc}", f"stop it first: sessionc agent stop {name}"
            ) from None
        return agent

    async def stop(self, live: Session, name: str) -> Agent:
        agent = self.find(live, name)
        agent.desired = Desired.STOPPED  # and so it stays, across daemon restarts
        await self.supervisor.stop(agent)
        return agent

    def kill(self, live: Session, name: str, sig: Any) -> Agent:
        agent = self.find(live, name)
        try:
            self.supervisor.kill(agent, procs.signal_number(sig if sig is not None else "TERM"))
        except ValueError as exc:
            raise InvalidParams(
                f"param 'signal': {exc}", "use a name like TERM, HUP or a number"
            ) from None
        except AgentRefused:
            raise InvalidState(
                f"agent {name} is {agent.state.value}: no process to signal",
                f"start it with 'sessionc agent start {name}'",
            ) from None
        return agent

    def by_token(self, token: str) -> Agent:
        agent = self.crew.by_token.get(token)
        live = self.manager.live
        if agent is None or live is None or agent.session_id != live.id:
            raise BadToken(
                "that agent token is not valid for the live session",
                "agent.* calls must come from an agent, with its SESSIOND_AGENT_TOKEN",
            )
        return agent

    def report(
        self, token: str, metrics: dict[str, Any] | None, error: str | None, activity: bool
    ) -> None:
        agent = self.by_token(token)
        for key, value in (metrics or {}).items():
            if (
                not METRIC_RE.fullmatch(key)
                or isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise InvalidParams(
                    f"metric {key!r} = {value!r}: want a name like tokens and a finite number"
                    " >= 0 (counters only grow)",
                    'for example {"tokens": 1500, "cost": 0.025}',
                )
        if metrics:
            self.manager.add_metrics(metrics)
        if error:
            self._error(agent, error, f"agent {agent.name} reported: {error}")
        if activity and self.manager.live is not None:
            self.manager.move(Event.ACTIVITY, None, "")

    def checkpoint(self, token: str, data: Any) -> int:
        agent = self.by_token(token)
        encoded = json.dumps(data)
        if len(encoded.encode()) > CHECKPOINT_MAX_BYTES:
            raise InvalidParams(
                f"checkpoint of {len(encoded.encode())} bytes is over 64 KiB",
                "store a reference (a path) to large state instead",
            )
        with self.store.transaction():
            return self.store.add_checkpoint(
                agent.session_id, agent.name, agent.uid, time.time(), encoded
            )


def _owner_runner(session: Session) -> Runner:
    try:
        return Runner.for_user(session.owner.user)
    except PermissionDenied:  # an owner unknown to the user database: run as its bare uid
        return Runner(
            session.owner.uid,
            session.owner.uid,
            (session.owner.uid,),
            session.owner.user,
            "/",
            "/bin/sh",
        )


def _agent_row(agent: Agent) -> dict[str, Any]:
    return {
        "session_id": agent.session_id, "name": agent.name, "spec": spec_to_dict(agent.spec),
        "uid": agent.uid, "gid": agent.gid, "groups": list(agent.groups), "token": agent.token,
        "cwd": agent.cwd, "env": agent.env, "state": agent.state.value,
        "desired": agent.desired.value,
        "pid": agent.pid, "start_ticks": agent.start_ticks, "started_at": agent.started_at,
        "restarts": agent.restarts, "exit_code": agent.exit_code,
    }  # fmt: skip


def _stored_wire(row: dict[str, Any], session: str) -> dict[str, Any]:
    spec = row["spec"]
    return {
        "name": row["name"],
        "session": session,
        "state": row["state"],
        "pid": None,
        "started_at": rfc3339(row["started_at"]),
        "uptime": None,
        "restarts": row["restarts"],
        "exit_code": row["exit_code"],
        "cpu_percent": None,
        "rss": None,
        "labels": spec["labels"],
        "command": spec["command"],
        "uid": row["uid"],
        "restart": spec["restart"],
    }


def _log_key(agent: Agent) -> str:
    return f"{agent.session_id}/{agent.name}"


def handed(checkpoints: dict[str, tuple[int | None, Any]], name: str, uid: int) -> Any:
    """The parent's checkpoint for agent `name`, if the uid that stored it runs this one."""
    stored = checkpoints.get(name)
    return stored[1] if stored is not None and stored[0] == uid else None
