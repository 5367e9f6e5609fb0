"""The sessions' side of a lock shared across hosts (SPEC §10).

A session that runs on another host is seen here through the lock (its
published facts and fence): calls that must act where it runs are refused
with the host to go to. A lock lost under a live session here fails the
session at once, and whatever of its agents is left when the lease could
expire is killed, whatever their stop_timeout.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, Protocol

from sessiond.core.events import Kind
from sessiond.core.moves import Move
from sessiond.core.records import Session
from sessiond.core.session import Event
from sessiond.daemon.clock import Clock
from sessiond.daemon.locks import LockService
from sessiond.daemon.supervisor import Agent
from sessiond.errors import RemoteSession

log = logging.getLogger("sessiond")


class Host(Protocol):
    live: Session | None

    def move(self, m: Move) -> Session: ...


class Agents(Protocol):
    def agents(self, session_id: str) -> list[Agent]: ...


class Signals(Protocol):
    def signal_group(self, pgid: int, sig: int) -> None: ...


def remote_error(remote: dict[str, Any]) -> RemoteSession:
    name, host = remote.get("name", ""), remote.get("host", "")
    error = RemoteSession(
        f"session '{name}' runs on host {host}, not here: act on it there",
        f"ssh {host} sessionc join {name}",
    )
    error.details = {"session": name, "host": host}
    return error


def status_line(live: Session | None, agents: int, lock: LockService) -> str:
    """systemd's STATUS=: the session here, or where it runs, and the cluster's state."""
    cluster = ""
    if lock.backend != "local":
        cluster = f"; cluster {lock.name} {'reachable' if lock.reachable else 'UNREACHABLE'}"
    if live is not None:
        people = len(live.participants)
        return (f"STATUS=session {live.name} {live.state.value}, {_count(agents, 'agent')}, "
                f"{_count(people, 'participant')}{cluster}")  # fmt: skip
    if (remote := lock.remote()) is not None:
        return (f"STATUS=session {remote.get('name')} {remote.get('state')} on host "
                f"{remote.get('host')}{cluster}")  # fmt: skip
    return f"STATUS=no active session{cluster}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class LockNews:
    def __init__(self, sessions: Host, crew: Agents, procs: Signals, clock: Clock) -> None:
        self.sessions = sessions
        self.crew = crew
        self.procs = procs
        self.clock = clock

    def lost(self, why: str, kill_by: float) -> None:
        """The lock is gone (or may be handed on at any moment): end the session now."""
        live = self.sessions.live
        if live is None:
            return
        self.sessions.move(
            Move(
                Event.LOCK_LOST,
                Kind.SESSION_FAILED,
                f"session {live.name} failed: {why}",
                {"close_reason": why},
            )
        )
        if kill_by > 0:  # SIGTERM now (the session's stop), SIGKILL what is left by then
            self.clock.at(kill_by, self._kill, live.id)

    def _kill(self, session_id: str) -> None:
        for agent in self.crew.agents(session_id):
            if agent.pid is not None:
                log.warning("agent %s still there as the cluster lock may expire: SIGKILL",
                            agent.name)  # fmt: skip
                self.procs.signal_group(agent.pid, signal.SIGKILL)
