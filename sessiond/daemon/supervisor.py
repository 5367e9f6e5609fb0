"""The agent supervisor: spawn, reap, restart, signal, stop. The I/O shell.

Decisions come from agent.py (`step`, `on_exit`); this module carries them
out on real processes. Deaths are learnt from SIGCHLD (waitpid gives the
status) the moment they happen; a restart that is due at once happens inside
that handler. Each agent leads its own session and process group (setsid), so
signals go to the group and a daemon that dies does not take paused agents
with it. Stopping finds stragglers that left the group through the
environment marker (procs.Census) and waits on pidfds, never by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sessiond.core.agent import (
    AgentEvent,
    AgentRefused,
    AgentState,
    Desired,
    Exit,
    describe_exit,
    on_exit,
    step,
)
from sessiond.core.events import Kind
from sessiond.core.settings import AgentSpec
from sessiond.daemon import procs
from sessiond.daemon.access import user_name

log = logging.getLogger("sessiond.agents")
FACTS_MAX_AGE = 1.0  # seconds a sample of an agent's CPU and memory is shown for
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class SpawnError(Exception):
    """An agent's command could not be started; the message names both."""

    def __init__(self, message: str, hint: str, reason: str) -> None:
        super().__init__(message)
        self.hint = hint
        self.reason = reason  # the message without "unable to start agent NAME: "


class CwdRefused(OSError):
    """The agent's user may not enter its working directory."""


class Hooks(Protocol):
    def agent_changed(self, agent: Agent, kind: Kind, message: str) -> None: ...
    def agent_error(self, agent: Agent, text: str) -> None: ...  # "exited with 1", …


class Output(Protocol):
    """Where an agent's stdout and stderr go (logs.KeeperLink, through the Team)."""

    def open(self, agent: Agent) -> int: ...  # a write end, for one run; closed by the caller
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
    timer: asyncio.TimerHandle | None = None
    ended: asyncio.Future[int | None] | None = None
    popen: subprocess.Popen[bytes] | None = None
    stats: Any = None  # psutil.Process, made on first use
    checkpoint: str | None = None  # the file SESSIOND_CHECKPOINT names
    facts: tuple[float, int, dict[str, Any]] | None = None  # (sampled at, pid, figures)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels


class Supervisor:
    def __init__(self, instance: str, hooks: Hooks, output: Output) -> None:
        self.instance = instance
        self.hooks = hooks
        self.output = output
        self.by_pid: dict[int, Agent] = {}
        self.orphans: dict[int, dict[str, Any]] = {}

    # -- spawning ------------------------------------------------------------

    def spawn(self, agent: Agent) -> None:
        """Start the process of an agent in `starting`; SpawnError names command and reason."""
        try:
            agent.popen = self._popen(agent)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            self.output.close(agent)
            agent.state = step(agent.state, AgentEvent.SPAWN_FAILED)
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
            message = f"unable to start agent {agent.name}: {reason}"
            self.hooks.agent_changed(agent, Kind.AGENT_FAILED, message)
            raise SpawnError(message, hint, reason) from None
        pid = agent.popen.pid
        agent.pid, agent.start_ticks = pid, procs.start_time(pid)
        agent.started_mono, agent.started_at = time.monotonic(), time.time()
        agent.signal_sent, agent.stats = False, None  # exit_code stays: the last run's
        agent.ended = asyncio.get_running_loop().create_future()
        self.by_pid[pid] = agent
        agent.state = step(agent.state, AgentEvent.SPAWNED)
        self.hooks.agent_changed(
            agent, Kind.AGENT_STARTED, f"agent {agent.name} started (pid {pid})"
        )

    def _popen(self, agent: Agent) -> subprocess.Popen[bytes]:
        out = self.output.open(agent)
        try:
            if os.geteuid() == 0 and (agent.uid, agent.gid) != (0, 0):
                return _popen_as(agent, out)
            return subprocess.Popen(
                agent.spec.command, cwd=agent.cwd, env=agent.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, start_new_session=True, close_fds=True,
            )  # fmt: skip
        finally:
            os.close(out)

    # -- deaths --------------------------------------------------------------

    def reap(self) -> None:
        """SIGCHLD: collect every dead child; agents get their exit handled."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            agent = self.by_pid.pop(pid, None)
            if agent is None:
                continue  # an orphan of an agent's tree, re-parented to us (subreaper)
            try:
                self._exited(agent, os.waitstatus_to_exitcode(status))
            except Exception:  # the next child must still be reaped
                log.exception("internal error handling the exit of agent %s", agent.name)

    def adopt(self, agent: Agent, pid: int) -> None:
        """Watch again an agent that outlived the previous daemon (not our child: a pidfd)."""
        loop = asyncio.get_running_loop()
        fd = os.pidfd_open(pid)
        agent.pid = pid
        agent.started_mono = time.monotonic() - procs.age(pid)
        agent.ended = loop.create_future()
        loop.add_reader(fd, self._adopted_exited, agent, fd)
        self.hooks.agent_changed(
            agent, Kind.AGENT_ADOPTED, f"agent {agent.name} adopted (pid {pid})"
        )

    def _adopted_exited(self, agent: Agent, fd: int) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        self._exited(agent, None)

    def watch_orphan(self, pid: int, about: dict[str, Any]) -> None:
        """Count an orphaned agent process until it ends (a pidfd says when)."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        self.orphans[pid] = about
        asyncio.get_running_loop().add_reader(fd, self._orphan_gone, pid, fd)

    def _orphan_gone(self, pid: int, fd: int) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        self.orphans.pop(pid, None)

    def died_meanwhile(self, agent: Agent) -> None:
        """An agent that was up when the previous daemon died, and is gone now."""
        agent.ended = asyncio.get_running_loop().create_future()
        agent.started_mono = time.monotonic() - (time.time() - (agent.started_at or time.time()))
        self._exited(agent, None)

    def _exited(self, agent: Agent, code: int | None) -> None:
        self.output.close(agent)
        if agent.popen is not None:
            agent.popen.returncode = code  # reaped here, not by Popen
        agent.exit_code, agent.pid = code, None
        ran_for = time.monotonic() - agent.started_mono
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
            self._schedule_restart(agent, verdict.delay)

    def _schedule_restart(self, agent: Agent, delay: float) -> None:
        if delay <= 0:
            self._restart_now(agent)
            return
        agent.timer = asyncio.get_running_loop().call_later(delay, self._restart_now, agent)

    def _restart_now(self, agent: Agent) -> None:
        agent.timer = None
        if agent.state is not AgentState.BACKOFF:
            return
        agent.state = step(agent.state, AgentEvent.BACKOFF_OVER)
        agent.restarts += 1
        try:
            self.spawn(agent)
        except SpawnError as exc:
            self.hooks.agent_error(agent, f"could not be started again: {exc.reason}")

    # -- control -------------------------------------------------------------

    def start(self, agent: Agent) -> None:
        """A fresh start (a user's, or a reconnect's): the crash count begins again."""
        agent.state = step(agent.state, AgentEvent.START)
        agent.quick_exits = 0
        if agent.state is AgentState.STARTING:
            self.spawn(agent)

    def pause(self, agent: Agent) -> None:
        if agent.state is AgentState.RUNNING and agent.pid is not None:
            self._signal(agent, signal.SIGSTOP)
            agent.state = step(agent.state, AgentEvent.PAUSE)
            self.hooks.agent_changed(agent, Kind.AGENT_PAUSED, f"agent {agent.name} paused")

    def resume(self, agent: Agent) -> None:
        if agent.state is AgentState.PAUSED and agent.pid is not None:
            self._signal(agent, signal.SIGCONT)
            agent.state = step(agent.state, AgentEvent.RESUME)
            self.hooks.agent_changed(agent, Kind.AGENT_RUNNING, f"agent {agent.name} resumed")

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
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(agent.pid, sig)

    def halt(self, agent: Agent) -> None:
        """No restart from now on: a stop is coming. At once, so that no respawn slips in."""
        if agent.timer is not None:
            agent.timer.cancel()
            agent.timer = None
        if agent.state in (AgentState.BACKOFF, AgentState.STARTING):
            agent.state = step(agent.state, AgentEvent.STOP)
            self.hooks.agent_changed(agent, Kind.AGENT_STOPPED, f"agent {agent.name} stopped")

    async def stop(self, agent: Agent, census: procs.Census | None = None) -> None:
        """SIGTERM to the agent's group and stragglers; SIGKILL after stop_timeout."""
        self.halt(agent)
        if agent.pid is None or agent.state is AgentState.STOPPING:
            return
        agent.state = step(agent.state, AgentEvent.STOP)
        agent.signal_sent = True
        pgid, ended = agent.pid, agent.ended
        everyone = (census or procs.Census(self.instance)).members(pgid, agent.token)
        deadline = time.monotonic() + agent.spec.stop_timeout
        killed = await procs.terminate(
            everyone | {pgid}, agent.spec.stop_timeout, pgid,
            again=lambda: procs.Census(self.instance).members(pgid, agent.token),
        )  # fmt: skip
        if killed:
            log.warning("agent %s did not stop within %gs of SIGTERM; sent SIGKILL to %s",
                        agent.name, agent.spec.stop_timeout, sorted(killed))  # fmt: skip
        if ended is not None:
            await asyncio.wait_for(asyncio.shield(ended), max(1.0, deadline - time.monotonic()))

    async def stop_all(self, agents: list[Agent]) -> None:
        if agents:
            census = procs.Census(self.instance)  # one pass over /proc for all of them
            await asyncio.gather(*(self.stop(a, census) for a in agents))

    # -- facts ---------------------------------------------------------------

    def facts(self, agent: Agent) -> dict[str, Any]:
        """CPU% and RSS from psutil, sampled only when asked and at most once a second;
        `cpu_seconds`, the CPU time of every run of the agent so far, which never falls.

        Reading /proc for 200 agents costs ~14 ms here; a status loop or a
        terminal refreshing every 100 ms gets the figures of the last second.
        `cpu_seconds` adds the current run's user and system time (and that of
        the children it waited for) to what the runs before it had used when
        last sampled: a run's CPU after its last sample is not seen, and the sum
        starts again with a new daemon (as an exporter's counters do).
        """
        sampled_at, _, before = agent.facts or (0.0, 0, None)
        if agent.pid is None:
            spent = before["cpu_seconds"] if before is not None else None
            return {"cpu_percent": None, "rss": None, "cpu_seconds": spent}
        now, run = time.monotonic(), (agent.pid, agent.start_ticks)
        same_run = before is not None and before["run"] == run
        if before is not None and same_run and now - sampled_at < FACTS_MAX_AGE:
            return before
        last = (before["cpu_seconds"] or 0.0) if before is not None else 0.0
        base = before["cpu_before"] if before is not None and same_run else last  # earlier runs
        found = self._sample(agent)
        used = found.pop("run_cpu_seconds")
        spent = max(last, round(base + (used or 0.0), 3))
        found |= {"cpu_seconds": spent, "cpu_before": base, "run": run}
        agent.facts = (now, agent.pid, found)
        return found

    def _sample(self, agent: Agent) -> dict[str, Any]:
        import psutil  # noqa: PLC0415 -- loaded on the first status that shows agents

        try:
            if agent.stats is None or agent.stats.pid != agent.pid:
                agent.stats = psutil.Process(agent.pid)
            with agent.stats.oneshot():
                times = agent.stats.cpu_times()
                return {
                    "cpu_percent": agent.stats.cpu_percent(None),
                    "rss": agent.stats.memory_info().rss,
                    "run_cpu_seconds": times.user + times.system
                    + times.children_user + times.children_system,
                }  # fmt: skip
        except psutil.Error:
            return {"cpu_percent": None, "rss": None, "run_cpu_seconds": None}


def _popen_as(agent: Agent, out: int) -> subprocess.Popen[bytes]:
    """Start an agent as its own user, entering its directory with that user's rights.

    CPython's `cwd=` is entered before the switch of uid (as root), so the child
    enters it itself, after the switch, where symlinks, modes and ACLs are all
    checked against the agent's user. `user=` already rules out vfork, so the
    preexec_fn costs no more than the fork did; the daemon has no threads that
    it could deadlock. The errno of a refused chdir comes back on a pipe.
    """
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    cwd = agent.cwd

    def enter() -> None:
        try:
            os.chdir(cwd)
        except OSError as exc:
            os.write(report_w, str(exc.errno).encode())
            raise

    try:
        return subprocess.Popen(
            agent.spec.command, env=agent.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, close_fds=True, user=agent.uid, group=agent.gid,
            extra_groups=list(agent.groups),
            preexec_fn=enter,  # noqa: PLW1509 -- after the uid switch; the daemon has no threads
        )  # fmt: skip
    except subprocess.SubprocessError:
        os.close(report_w)
        report_w = -1
        errno = os.read(report_r, 16)
        if errno:
            number = int(errno)
            raise CwdRefused(number, os.strerror(number), cwd) from None
        raise
    finally:
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)
