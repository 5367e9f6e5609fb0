"""The live session's agents as the session sees them: launch, control, errors.

`Fleet` is the supervisor's `Hooks`: every agent change is written to the store and
published as an event (through the `Journal`), and every counted error is reported through
`Ports.error` to the sessions, which own the error window and the threshold. The fleet never
sees a session's state: it asks the sessions (`Ports`) whether an agent is to be held
stopped. Agent changes come in bursts (a crash loop, 200 agents starting), so their rows are
written in one transaction per turn of the event loop, not one each.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Protocol

from sessiond.core.agent import AgentRefused, AgentState, Desired
from sessiond.core.events import Kind
from sessiond.core.records import Session
from sessiond.core.reports import encoded_checkpoint
from sessiond.core.revive import Revival, revive_plan
from sessiond.core.session import State
from sessiond.core.settings import AgentSpec
from sessiond.daemon import logs, procs
from sessiond.daemon.clock import Clock
from sessiond.daemon.crew import (
    Crew,
    Runner,
    adhoc_spec,
    check_daemon_can_run_as,
    handed,
    owner_runner,
    signal_param,
    spec_from_dict,
)
from sessiond.daemon.gauges import Gauges
from sessiond.daemon.journal import Journal
from sessiond.daemon.ledger import Ledger
from sessiond.daemon.processes import Processes
from sessiond.daemon.roster import Roster
from sessiond.daemon.store import Store
from sessiond.daemon.supervisor import Agent, SpawnError, Supervisor
from sessiond.errors import (
    AgentNotFound,
    BadToken,
    DomainError,
    InvalidParams,
    InvalidState,
    StorageError,
)

if TYPE_CHECKING:
    from sessiond.daemon.access import Peer

log = logging.getLogger("sessiond")
RUNNABLE = (State.ACTIVE, State.IDLE, State.SUSPENDED)
STRAY_GRACE = 10.0  # seconds between SIGTERM and SIGKILL for what escaped a stopped agent


class Ports(Protocol):
    """What the fleet asks of the sessions (Sessions implements it)."""

    def holds(self, session_id: str, needs_network: bool) -> bool: ...  # SIGSTOP it?
    def error(self, session_id: str, agent: str, text: str, message: str) -> None: ...
    def live_name(self, session_id: str) -> str | None: ...  # if that session is live


class Fleet:
    def __init__(
        self, journal: Journal, crew: Crew, processes: Processes, clock: Clock,
        log_limits: tuple[int, int],
    ) -> None:  # fmt: skip
        self.clock = clock
        self.journal = journal
        self.store: Store = journal.store
        self.crew = crew
        self.procs = processes
        self.ports: Ports  # set by the Sessions that own this fleet
        self.supervisor = Supervisor(processes, self, self, clock)
        log_max_bytes, log_files = log_limits
        self.keeper = logs.KeeperLink(
            crew.state_dir, log_max_bytes, log_files, self._known_logs, clock
        )
        self.logs = logs.Followers(self._lines, self._wanted, clock)
        self.ledger = Ledger(journal, clock, self.supervisor.read_starts)
        self.gauges = Gauges(processes, clock)
        self.roster = Roster(crew, self.store, self.gauges, clock)
        self.wire, self.encoded = self.roster.wire, self.roster.encoded

    # -- Hooks ---------------------------------------------------------------

    def agent_changed(self, agent: Agent, kind: Kind, message: str) -> None:
        self.roster.changes += 1  # what it encoded before is out of date
        self.ledger.changed(agent, kind, message)
        if kind is Kind.AGENT_STARTED and self._held(agent):
            self.supervisor.pause(agent)  # recorded after its start

    def _lines(self, key: str, lines: list[str]) -> None:
        session_id, name = key.split("/", 1)
        if (live := self.ports.live_name(session_id)) is not None:
            entries = logs.entries(name, lines, self.clock.wall())
            self.journal.outlet.publish_lines(live, entries, logs.topics(session_id, name))

    def _wanted(self, key: str) -> bool:
        session_id, name = key.split("/", 1)
        live = self.ports.live_name(session_id)
        return live is not None and self.journal.outlet.wants(*logs.topics(session_id, name))

    def follow_logs(self, agent: Agent) -> None:
        """A subscriber to its lines arrived: send them from now on."""
        self.logs.follow(_log_key(agent), agent.log_path)

    # -- Output: each run of an agent writes into pipes to the log keeper -------

    def open(self, agent: Agent) -> tuple[int, int]:
        ends = self.keeper.pipes(_log_key(agent), agent.log_path)
        if self.journal.outlet.wants(logs.topics(agent.session_id, agent.name)[1]):
            self.follow_logs(agent)  # an agent added to a session whose logs are followed
        return ends

    def close(self, agent: Agent) -> None:
        self.keeper.release(_log_key(agent))

    def _known_logs(self) -> set[str]:
        return {_log_key(agent) for agent in self.crew.by_token.values()}

    def agent_error(self, agent: Agent, text: str) -> None:
        """An unexpected exit (`text` says how): one error of the agent's session."""
        self._error(agent, text, f"agent {agent.name} {text}")

    def _error(self, agent: Agent, text: str, message: str) -> None:
        self.ports.error(agent.session_id, agent.name, text, message)

    def reported_error(self, agent: Agent, text: str) -> None:
        """An error the agent reported itself (agent.report)."""
        self._error(agent, text, f"agent {agent.name} reported: {text}")

    # -- the session's agents ------------------------------------------------

    def launch(
        self, session: Session, specs: list[AgentSpec], checkpoints: dict[str, Any]
    ) -> str | None:
        """Start the template's agents; the first that cannot start fails the launch.

        Every agent's row is durable before the first process starts: a daemon
        killed half-way through knows each process it may find (SPEC §3, §6.2).
        """
        agents, runners = [], dict[str | None, Runner]()  # by user: 40 µs of lookups each
        try:
            for spec in specs:
                if (runner := runners.get(spec.user)) is None:
                    runner = Runner.for_user(spec.user) if spec.user else owner_runner(session)
                    check_daemon_can_run_as(runner)
                    runners[spec.user] = runner
                agents.append(self.crew.add(
                    session, spec, runner=runner, cwd=spec.cwd or runner.default_cwd(),
                    checkpoint=handed(checkpoints, spec.name, runner.uid),
                ))  # fmt: skip
            self.ledger.save_now(agents)
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
        self.keeper.attach()  # now that every agent is known: the others' pipes go
        census = self.procs.census()
        for agent, row in revived:
            pid = row["pid"]
            plan = revive_plan(row, self.procs.start_time(pid) if pid else None)
            if plan is Revival.START and (found := census.leader(row["token"])) is not None:
                # Started, but the daemon died before it wrote the pid: that process is it.
                pid, agent.start_ticks, agent.state = (
                    found,
                    self.procs.start_time(found),
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
        census = census or self.procs.census()
        for token, pids in census.marked().items():
            if token not in self.crew.by_token:
                for pid in pids:
                    self.supervisor.watch_orphan(pid, census.about(pid))

    def orphans(self) -> list[dict[str, Any]]:
        return [{"pid": pid, **about} for pid, about in sorted(self.supervisor.orphans.items())]

    async def kill_orphans(self) -> int:
        """SIGTERM every orphan, SIGKILL those left after 5 s; how many there were."""
        pids = set(self.supervisor.orphans)
        await self.procs.terminate(pids, 5.0)
        return len(pids)

    def _held(self, agent: Agent) -> bool:
        """Should this agent be stopped (SIGSTOP): its session is paused, or it needs the
        network and the session is suspended or about to be (the machine is offline)."""
        return self.ports.holds(agent.session_id, agent.spec.needs_network)

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
        found = self.procs.strays(keep)
        if not found:
            return
        log.warning("ending %d processes left behind by stopped agents: %s", len(found),
                    sorted(found))  # fmt: skip
        killed = await self.procs.terminate(found, grace)
        if killed:
            log.warning("sent SIGKILL to %s: still there %gs after SIGTERM", sorted(killed), grace)

    # -- calls ---------------------------------------------------------------

    def run(
        self, peer: Peer, live: Session, *, command: list[str], name: str | None,
        cwd: str | None, env: dict[str, Any] | None, restart: str | None, labels: list[Any],
        needs_network: bool, checkpoints: dict[str, Any],
    ) -> Agent:  # fmt: skip
        """Start an ad-hoc agent as the caller (`checkpoints`: the parent session's)."""
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
        checkpoint = handed(checkpoints, chosen, runner.uid)
        spec = adhoc_spec(chosen, command, restart, labels, needs_network)
        if self.crew.get(live.id, spec.name):
            raise InvalidParams(
                f"session {live.name} already has an agent named {spec.name}", "pick another --name"
            )
        extra = {str(k): str(v) for k, v in (env or {}).items()}
        agent = self.crew.add(
            live, spec, runner=runner, cwd=where, checkpoint=checkpoint, extra_env=extra
        )
        self._first_start(agent)
        return agent

    def _first_start(self, agent: Agent) -> None:
        """Its row, then its process; neither stays if either fails."""
        try:
            self.ledger.save_now([agent])  # on a full disk nothing starts (SPEC §6.2)
            self.supervisor.start(agent)
        except StorageError:
            self.crew.discard(agent)
            raise
        except SpawnError as exc:
            self.crew.discard(agent)
            raise InvalidParams(str(exc), exc.hint) from None

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
        number = signal_param(sig)
        try:
            self.supervisor.kill(agent, number)
        except AgentRefused:
            raise InvalidState(
                f"agent {name} is {agent.state.value}: no process to signal",
                f"start it with 'sessionc agent start {name}'",
            ) from None
        return agent

    def by_token(self, token: str, live: Session | None) -> Agent:
        agent = self.crew.by_token.get(token)
        if agent is None or live is None or agent.session_id != live.id:
            raise BadToken(
                "that agent token is not valid for the live session",
                "agent.* calls must come from an agent, with its SESSIOND_AGENT_TOKEN",
            )
        return agent

    def checkpoint(self, agent: Agent, data: Any) -> int:
        encoded = encoded_checkpoint(data)
        with self.store.transaction():
            return self.store.add_checkpoint(
                agent.session_id, agent.name, agent.uid, self.clock.wall(), encoded
            )

    def remove_files(self, session_id: str) -> None:
        """A pruned session's logs and checkpoints."""
        import shutil  # noqa: PLC0415 -- it, bz2 and lzma: 2 to 3 ms of a start

        for folder in ("logs", "checkpoints"):
            shutil.rmtree(self.crew.state_dir / folder / session_id, ignore_errors=True)

    def live_sessions(self) -> list[str]:
        return list(self.crew.sessions)


def _log_key(agent: Agent) -> str:
    return f"{agent.session_id}/{agent.name}"
