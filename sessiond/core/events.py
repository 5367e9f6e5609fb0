"""The kinds of the event log, one enum: the names on the wire and in the journal.

A session's move to a state is `session.<state>` and an agent's `agent.<state>`
(`of_session`, `of_agent`); the others name what happened rather than where it
led. StrEnum: a kind is its wire string, in the store and in JSON alike.
"""

from __future__ import annotations

import enum

from .agent import AgentState
from .session import State


class Kind(enum.StrEnum):
    SESSION_STARTING = "session.starting"
    SESSION_ACTIVE = "session.active"
    SESSION_IDLE = "session.idle"
    SESSION_PAUSED = "session.paused"
    SESSION_SUSPENDED = "session.suspended"
    SESSION_DISCONNECTED = "session.disconnected"
    SESSION_STOPPING = "session.stopping"
    SESSION_CLOSED = "session.closed"
    SESSION_EXPIRED = "session.expired"
    SESSION_FAILED = "session.failed"
    SESSION_STARTED = "session.started"
    SESSION_JOINED = "session.joined"
    SESSION_LEFT = "session.left"
    SESSION_RESUMED = "session.resumed"
    SESSION_RECONNECTED = "session.reconnected"
    SESSION_ERROR = "session.error"
    AGENT_STARTING = "agent.starting"
    AGENT_RUNNING = "agent.running"
    AGENT_BACKOFF = "agent.backoff"
    AGENT_PAUSED = "agent.paused"
    AGENT_STOPPING = "agent.stopping"
    AGENT_STOPPED = "agent.stopped"
    AGENT_EXITED = "agent.exited"
    AGENT_FAILED = "agent.failed"
    AGENT_STARTED = "agent.started"
    AGENT_ADOPTED = "agent.adopted"
    AGENT_RESTARTING = "agent.restarting"
    NETWORK_UP = "network.up"
    NETWORK_DOWN = "network.down"
    NETWORK_UNWATCHED = "network.unwatched"

    @classmethod
    def of_session(cls, state: State) -> Kind:
        return cls(f"session.{state.value}")

    @classmethod
    def of_agent(cls, state: AgentState) -> Kind:
        return cls(f"agent.{state.value}")


# The journal files these at warning: failures, and what stops agents (log.priority).
WARNINGS = frozenset({Kind.AGENT_FAILED, Kind.NETWORK_DOWN, Kind.SESSION_DISCONNECTED,
                      Kind.SESSION_FAILED, Kind.SESSION_ERROR})  # fmt: skip
CRASHES = frozenset({Kind.AGENT_BACKOFF, Kind.AGENT_RESTARTING, Kind.AGENT_EXITED})
