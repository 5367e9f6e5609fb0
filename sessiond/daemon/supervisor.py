"""The agent supervisor: spawn, reap, restart, signal, stop. The I/O shell.

Decisions come from core/agent.py (`move` and its effects, `on_exit`); this
module carries them out, on processes reached through `Processes` and with
timers from the `Clock` (both injected: tests drive it in-process). Deaths
are learnt from SIGCHLD (waitpid gives the status) the moment they happen; a
restart that is due at once happens inside that handler. Each agent leads
its own session and process group (setsid), so signals go to the group and a
daemon that dies does not take paused agents with it. Stopping finds
stragglers that left the group through the environment marker (procs.Census)
and waits on pidfds, never by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sessiond.core.agent import (
    AgentEffect,
    AgentEvent,
    AgentRefused,
    AgentState,
    Desired,
    Exit,
    describe_exit,
    halts,
    move,
    on_exit,
    step,
)
from sessiond.core.events import Kind
from sessiond.core.settings import AgentSpec
from sessiond.daemon import procs
from sessiond.daemon.access import user_name
from sessiond.daemon.clock import Clock, Timer
from sessiond.daemon.processes import CwdRefused, Processes

log = logging.getLogger("sessiond.agents")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class SpawnError(Exception):
    """An agent's command could not be started; the message names both."""

    def __init__(self, message: str, hint: str, reason: str) -> None:
        super().__init__(message)
        self.hint = hint
        self.reason = reason  # the message without "unable to start agent NAME: "


class Hooks(Protocol):
    def agent_changed(self, agent: Agent, kind: Kind, message: str) -> None: ...
    def agent_error(self, agent: Agent, text: str) -> None: ...  # "exited with 1", …


class Output(Protocol):
    """Where an agent's stdout and stderr go (logs.KeeperLink, through the Team)."""

    def open(self, agent: Agent) -> tuple[int, int]: ...  # stdout's, stderr's; caller closes
    def close(self, agent: Agent) -> None: ...  # that run ended


@dataclass(eq=False)
class Agent:
    """One supervised agent, across its restarts."""

    name: str
    session_id: str
    session_name: str
    spec: AgentSpec
    uid: int
    gid: int
    groups: tuple[int, ...]
    token: str
    cwd: str
    env: dict[str, str]
    log_path: Path
    state: AgentState = AgentState.STOPPED
    desired: Desired = Desired.RUNNING
    pid: int | None = None
    start_ticks: int | None = None
    started_mono: float = 0.0
    started_at: float | None = None
    restarts: int = 0
    quick_exits: int = 0
    exit_code: int | None = None
    signal_sent: bool = False
    timer: Timer | None = None
    ended: asyncio.Future[int | None] | None = None
    checkpoint: str | None = None  # the file SESSIOND_CHECKPOINT names
    facts: tuple[float, dict[str, Any]] | None = None  # (sampled at, figures): gauges.py
    wired: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # crew.agent_wire's, by run
    encoded: tuple[dict[str, Any], str] | None = None  # crew.agent_json's still part

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels


class Supervisor:
    def __init__(self, procs: Processes, hooks: Hooks, output: Output, clock: Clock) -> None:
        self.procs = procs
        self.clock = clock
        self.hooks = hooks
        self.output = output
        self.by_pid: dict[int, Agent] = {}
        self.orphans: dict[int, dict[str, Any]] = {}
        self.unread: dict[int, Agent] = {}  # spawned, their start time not read yet

    # -- spawning ------------------------------------------------------------

    def spawn(self, agent: Agent) -> None:
        """Start the process of an agent in `starting`; SpawnError names command and reason."""
        out, err = self.output.open(agent)
        try:
            pid = self.procs.spawn(agent, out, err)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            self.output.close(agent)
            agent.state = step(agent.state, AgentEvent.SPAWN_FAILED)
            message, hint, reason = _spawn_failure(agent, exc)
            self.hooks.agent_changed(agent, Kind.AGENT_FAILED, message)
            raise SpawnError(message, hint, reason) from None
        finally:
            os.close(out)
            os.close(err)
        agent.pid, agent.start_ticks = pid, None  # read_starts() reads it
        self.unread[pid] = agent
        agent.started_mono, agent.started_at = self.clock.monotonic(), self.clock.wall()
        agent.signal_sent = False  # exit_code stays: the last run's
        agent.ended = asyncio.get_running_loop().create_future()
        self.by_pid[pid] = agent
        agent.state = step(agent.state, AgentEvent.SPAWNED)
        self.hooks.agent_changed(
            agent, Kind.AGENT_STARTED, f"agent {agent.name} started (pid {pid})"
        )

    def read_starts(self) -> None:
        """Read the start time of each process spawned since the last call: the identity
        that its ledger row keeps. Read at once, it waits for the exec to end (0.37 ms an
        agent on the test VM against 20 µs a turn later); the ledger calls this before it
        writes, and a pid is not reused before its reap, which clears `agent.pid`."""
        unread, self.unread = self.unread, {}
        for pid, agent in unread.items():
            if agent.pid != pid:
                continue  # reaped meanwhile
            agent.start_ticks = self.procs.start_time(pid)
            if agent.start_ticks is None:  # not read (no fd left?): at the next write, then
                self.unread[pid] = agent

    # -- deaths --------------------------------------------------------------

    def reap(self) -> None:
        """SIGCHLD: collect every dead child; agents get their exit handled."""
        for pid, code in self.procs.reap():
            agent = self.by_pid.pop(pid, None)
            if agent is None:
                continue  # an orphan of an agent's tree, re-parented to us (subreaper)
            try:
                self._exited(agent, code)
            except Exception:  # the next child must still be reaped
                log.exception("internal error handling the exit of agent %s", agent.name)

    def adopt(self, agent: Agent, pid: int) -> None:
        """Watch again an agent that outlived the previous daemon (not our child: a pidfd)."""
        agent.ended = asyncio.get_running_loop().create_future()
        agent.pid = pid
        agent.started_mono = self.clock.monotonic() - self.procs.age(pid)
        if not self.procs.watch(pid, lambda: self._exited(agent, None)):
            agent.pid = None
            self._exited(agent, None)  # it ended between the census and now
            return
        self.hooks.agent_changed(
            agent, Kind.AGENT_ADOPTED, f"agent {agent.name} adopted (pid {pid})"
        )

    def watch_orphan(self, pid: int, about: dict[str, Any]) -> None:
        """Count an orphaned agent process until it ends (a pidfd says when)."""

        def gone() -> None:
            self.orphans.pop(pid, None)

        if self.procs.watch(pid, gone):
            self.orphans[pid] = about

    def died_meanwhile(self, agent: Agent) -> None:
        """An agent that was up when the previous daemon died, and is gone now."""
        agent.ended = asyncio.get_running_loop().create_future()
        wall = self.clock.wall()
        agent.started_mono = self.clock.monotonic() - (wall - (agent.started_at or wall))
        self._exited(agent, None)

    def _exited(self, agent: Agent, code: int | None) -> None:
        self.output.close(agent)
        agent.exit_code, agent.pid = code, None
        ran_for = self.clock.monotonic() - agent.started_mono
        stopping = agent.state is AgentState.STOPPING
        verdict = on_exit(
            Exit(code, ran_for, agent.signal_sent, stopping), agent.spec, agent.quick_exits
        )
        agent.quick_exits = verdict.quick_exits
        agent.state = step(agent.state, verdict.event)
        if agent.ended is not None and not agent.ended.done():
            agent.ended.set_result(code)
        at_once = verdict.event is AgentEvent.EXIT_RESTART and verdict.delay <= 0
        kind = Kind.AGENT_RESTARTING if at_once else Kind.of_agent(agent.state)
        self.hooks.agent_changed(agent, kind, f"agent {agent.name} {verdict.reason}")
        if verdict.error:
            self.hooks.agent_error(agent, describe_exit(code))
        # Decided after the error counted: one that disconnected the session halted the agent.
        if verdict.event is AgentEvent.EXIT_RESTART and agent.state is AgentState.BACKOFF:
            if verdict.delay <= 0:
                self._restart_now(agent)
            else:
                agent.timer = self.clock.later(verdict.delay, self._restart_now, agent)

    def _restart_now(self, agent: Agent) -> None:
        agent.timer = None
        if agent.state is not AgentState.BACKOFF:
            return
        agent.restarts += 1
        try:
            self._move(agent, AgentEvent.BACKOFF_OVER)
        except SpawnError as exc:
            self.hooks.agent_error(agent, f"could not be started again: {exc.reason}")

    # -- control -------------------------------------------------------------

    def _move(self, agent: Agent, event: AgentEvent) -> bool:
        """Step the agent's table and carry out its effects; whether it moved."""
        old = agent.state
        agent.state, effects = move(old, event)
        for effect in effects:
            if effect is AgentEffect.CANCEL_RESTART and agent.timer is not None:
                agent.timer.cancel()
                agent.timer = None
            elif effect is AgentEffect.SIGSTOP or effect is AgentEffect.SIGCONT:
                self._signal(agent, signal.SIGSTOP if effect is AgentEffect.SIGSTOP
                             else signal.SIGCONT)  # fmt: skip
            elif effect is AgentEffect.SPAWN:
                self.spawn(agent)
        return agent.state is not old

    def start(self, agent: Agent) -> None:
        """A fresh start (a user's, or a reconnect's): the crash count begins again."""
        agent.quick_exits = 0
        self._move(agent, AgentEvent.START)

    def pause(self, agent: Agent) -> None:
        if agent.pid is not None and self._moved(agent, AgentEvent.PAUSE):
            self.hooks.agent_changed(agent, Kind.AGENT_PAUSED, f"agent {agent.name} paused")

    def resume(self, agent: Agent) -> None:
        if agent.pid is not None and self._moved(agent, AgentEvent.RESUME):
            self.hooks.agent_changed(agent, Kind.AGENT_RUNNING, f"agent {agent.name} resumed")

    def _moved(self, agent: Agent, event: AgentEvent) -> bool:
        """A session's pause or resume of all its agents: one that cannot (starting) is left."""
        with contextlib.suppress(AgentRefused):
            return self._move(agent, event)
        return False

    def settle(self, agent: Agent, stopped: bool) -> None:
        """An adopted agent: stopped or running as its session wants, whatever its row said."""
        self._signal(agent, signal.SIGSTOP if stopped else signal.SIGCONT)
        want = AgentState.PAUSED if stopped else AgentState.RUNNING
        if agent.state in (AgentState.RUNNING, AgentState.PAUSED) and agent.state is not want:
            verb = "paused" if stopped else "resumed"
            agent.state = step(agent.state, AgentEvent.PAUSE if stopped else AgentEvent.RESUME)
            self.hooks.agent_changed(agent, Kind.of_agent(want), f"agent {agent.name} {verb}")

    def kill(self, agent: Agent, sig: int) -> None:
        if agent.pid is None:
            raise AgentRefused(agent.state, AgentEvent.STOP)
        agent.signal_sent = True  # a user's kill is deliberate: not counted as an error
        self._signal(agent, sig)

    def _signal(self, agent: Agent, sig: int) -> None:
        if agent.pid is not None:
            self.procs.signal_group(agent.pid, sig)

    def halt(self, agent: Agent) -> None:
        """No restart from now on: a stop is coming. At once, so that no respawn slips in."""
        if halts(agent.state):
            self._move(agent, AgentEvent.STOP)
            self.hooks.agent_changed(agent, Kind.AGENT_STOPPED, f"agent {agent.name} stopped")

    async def stop(self, agent: Agent, census: procs.Census | None = None) -> None:
        """SIGTERM to the agent's group and stragglers; SIGKILL after stop_timeout."""
        self.halt(agent)
        if agent.pid is None or agent.state is AgentState.STOPPING:
            return
        agent.state = step(agent.state, AgentEvent.STOP)
        agent.signal_sent = True
        pgid, ended, token = agent.pid, agent.ended, agent.token
        everyone = (census or self.procs.census()).members(pgid, token)
        deadline = self.clock.monotonic() + agent.spec.stop_timeout
        killed = await self.procs.terminate(
            everyone | {pgid}, agent.spec.stop_timeout, pgid,
            again=lambda: self.procs.census().members(pgid, token),
        )  # fmt: skip
        if killed:
            log.warning("agent %s did not stop within %gs of SIGTERM; sent SIGKILL to %s",
                        agent.name, agent.spec.stop_timeout, sorted(killed))  # fmt: skip
        if ended is not None:
            left = deadline - self.clock.monotonic()
            await asyncio.wait_for(asyncio.shield(ended), max(1.0, left))

    async def stop_all(self, agents: list[Agent]) -> None:
        if agents:
            census = self.procs.census()  # one pass over /proc for all of them
            await asyncio.gather(*(self.stop(a, census) for a in agents))


def _spawn_failure(agent: Agent, exc: Exception) -> tuple[str, str, str]:
    """The message, hint and reason of a command that could not be started."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    # The kernel's errno does not say what was missing: the directory or the command.
    entering = isinstance(exc, CwdRefused) or (
        isinstance(exc, OSError) and exc.filename == agent.cwd
    )
    user = user_name(agent.uid)
    if entering:
        reason = f"{user} may not enter its directory {agent.cwd}: {why}"
        hint = f"give the agent a cwd that {user} may enter"
    else:
        reason = f"{agent.spec.command[0]}: {why} (run as {user})"
        hint = "check the command name and that it is executable"
    return f"unable to start agent {agent.name}: {reason}", hint, reason
