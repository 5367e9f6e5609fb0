"""The session state machine: data, no I/O.

Theory of operation. A session is in one `State`. Things that happen to it are
`Event`s: a user's call (PAUSE, STOP…), a deadline (IDLE_TIMEOUT, EXPIRE), a
condition (NETWORK_DOWN, ERROR_THRESHOLD) or the agents reporting back
(LAUNCHED, STOPPED). `TRANSITIONS` maps every (state, event) pair to one of:

  * a new state: the session moves, and `effects()` says what the shell must
    do to the agents and the lock on the way;
  * `STAY`: a written-out no-op (activity while paused is recorded by the
    shell but changes no state; a second STOP while stopping is harmless);
  * `REFUSE`: the call is not allowed in that state; `step()` raises
    `Refused`, which the RPC layer answers with INVALID_STATE.

The table is complete (a test walks every pair) and it is the only place
transitions are written: the diagram in docs/states.md is generated from it.

Legal moves (SPEC §2.1): starting→active|failed, active↔idle,
active|idle→paused, paused→active, active|idle→suspended, suspended→active,
active|idle|paused|suspended→disconnected, disconnected→active, any live
state→stopping→closed, any live state→expired.
"""

from __future__ import annotations

import enum
from typing import Final


class State(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    IDLE = "idle"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    DISCONNECTED = "disconnected"
    STOPPING = "stopping"
    CLOSED = "closed"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def live(self) -> bool:
        return self not in TERMINAL


TERMINAL: Final = frozenset({State.CLOSED, State.EXPIRED, State.FAILED})


class Event(enum.Enum):
    LAUNCHED = "launched"  # every agent of the session is running
    LAUNCH_FAILED = "launch_failed"  # an agent could not be started
    ACTIVITY = "activity"  # start, join, resume, reconnect, touch, report
    IDLE_TIMEOUT = "idle_timeout"  # no activity for idle_after
    PAUSE = "pause"
    RESUME = "resume"
    NETWORK_DOWN = "network_down"
    NETWORK_UP = "network_up"  # back for network_grace
    ERROR_THRESHOLD = "error_threshold"
    RECONNECT = "reconnect"
    STOP = "stop"  # a user, max_duration or stop_at
    STOPPED = "stopped"  # the last agent is gone
    EXPIRE = "expire"  # no activity for timeout
    LOCK_LOST = "lock_lost"  # the cluster lock is gone, or may go any moment (SPEC §10)


class Effect(enum.Enum):
    PAUSE_AGENTS = "pause_agents"  # SIGSTOP every agent group
    RESUME_AGENTS = "resume_agents"  # SIGCONT every agent group
    PAUSE_NETWORK_AGENTS = "pause_network_agents"
    RESUME_NETWORK_AGENTS = "resume_network_agents"
    TERMINATE_AGENTS = "terminate_agents"  # SIGTERM, then SIGKILL; keep the lock
    RESTART_AGENTS = "restart_agents"  # fresh processes after a reconnect
    STOP_AGENTS = "stop_agents"
    RELEASE_LOCK = "release_lock"


class Marker(enum.Enum):
    """The two outcomes of a table entry that are not a new state."""

    STAY = "stay"
    REFUSE = "refuse"


STAY: Final = Marker.STAY
REFUSE: Final = Marker.REFUSE
Outcome = State | Marker


class Refused(Exception):
    """An event that the state does not allow; names both."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"cannot {event.value.replace('_', ' ')} a session that is {state.value}")
        self.state = state
        self.event = event


S, E = State, Event


def _row(default: Outcome, *parts: dict[str, Outcome], **moves: Outcome) -> dict[Event, Outcome]:
    """One state's row: `default` for every event that `parts` and `moves` do not name."""
    row = {event: default for event in Event}
    for part in (*parts, moves):
        row.update({Event[name.upper()]: outcome for name, outcome in part.items()})
    return row


_ANY_LIVE: dict[str, Outcome] = {
    "stop": S.STOPPING, "expire": S.EXPIRED, "activity": STAY, "lock_lost": S.FAILED,
}  # fmt: skip

TRANSITIONS: Final[dict[State, dict[Event, Outcome]]] = {
    S.STARTING: _row(
        REFUSE, _ANY_LIVE, launched=S.ACTIVE, launch_failed=S.FAILED,
        idle_timeout=STAY, network_down=STAY, network_up=STAY, error_threshold=STAY,
    ),
    S.ACTIVE: _row(
        REFUSE, _ANY_LIVE, idle_timeout=S.IDLE, pause=S.PAUSED,
        network_down=S.SUSPENDED, network_up=STAY, error_threshold=S.DISCONNECTED,
    ),
    S.IDLE: _row(
        REFUSE, _ANY_LIVE, activity=S.ACTIVE, idle_timeout=STAY, pause=S.PAUSED,
        network_down=S.SUSPENDED, network_up=STAY, error_threshold=S.DISCONNECTED,
    ),
    S.PAUSED: _row(
        REFUSE, _ANY_LIVE, idle_timeout=STAY, resume=S.ACTIVE,
        network_down=STAY, network_up=STAY, error_threshold=S.DISCONNECTED,
    ),
    S.SUSPENDED: _row(
        REFUSE, _ANY_LIVE, idle_timeout=STAY, network_down=STAY,
        network_up=S.ACTIVE, error_threshold=S.DISCONNECTED,
    ),
    S.DISCONNECTED: _row(
        REFUSE, _ANY_LIVE, idle_timeout=STAY, network_down=STAY,
        network_up=STAY, error_threshold=STAY, reconnect=S.ACTIVE,
    ),
    S.STOPPING: _row(
        REFUSE, _ANY_LIVE, stop=STAY, stopped=S.CLOSED, idle_timeout=STAY,
        network_down=STAY, network_up=STAY, error_threshold=STAY,
    ),
    S.CLOSED: _row(REFUSE),
    S.EXPIRED: _row(REFUSE),
    S.FAILED: _row(REFUSE),
}  # fmt: skip


# Events that are activity: the session's last_activity becomes now.
ACTIVITY: Final = frozenset({E.ACTIVITY, E.RESUME, E.RECONNECT, E.LAUNCHED})
# Events that end a session: they go ahead on a full disk, their records written once
# space returns (SPEC §6.2; stopping is how an operator frees a disk).
ENDINGS: Final = frozenset({E.STOP, E.STOPPED, E.EXPIRE, E.LAUNCH_FAILED, E.LOCK_LOST})


def is_news(event: Event, moved: bool) -> bool:
    """Whether an event is recorded: a move always; a STAY only when it is activity that
    says something (a join), never a repeat such as a second STOP while stopping."""
    return moved or event is E.ACTIVITY


def effects(old: State, new: State) -> tuple[Effect, ...]:
    """What the shell must do to agents and the lock when a session moves."""
    if new is S.PAUSED:
        return (Effect.PAUSE_AGENTS,)
    if new is S.SUSPENDED:
        return (Effect.PAUSE_NETWORK_AGENTS,)
    if new is S.DISCONNECTED:
        return (Effect.TERMINATE_AGENTS,)
    if new is S.ACTIVE:
        return {
            S.PAUSED: (Effect.RESUME_AGENTS,),
            S.SUSPENDED: (Effect.RESUME_NETWORK_AGENTS,),
            S.DISCONNECTED: (Effect.RESTART_AGENTS,),
        }.get(old, ())
    if new is S.STOPPING:
        return (Effect.STOP_AGENTS,)
    if new in (S.EXPIRED, S.FAILED):
        return (Effect.STOP_AGENTS, Effect.RELEASE_LOCK)
    if new is S.CLOSED:
        return (Effect.RELEASE_LOCK,)
    return ()


def step(state: State, event: Event) -> tuple[State, tuple[Effect, ...]]:
    """The state after `event`, and the effects of getting there."""
    outcome = TRANSITIONS[state][event]
    if outcome is REFUSE:
        raise Refused(state, event)
    if outcome is STAY:
        return state, ()
    assert isinstance(outcome, State)
    return outcome, effects(state, outcome)


def diagram() -> str:
    """The table as a Mermaid state diagram (docs/states.md is this output)."""
    lines = ["```mermaid", "stateDiagram-v2", "    [*] --> starting"]
    for state, row in TRANSITIONS.items():
        for event, outcome in row.items():
            if isinstance(outcome, State):
                lines.append(f"    {state.value} --> {outcome.value}: {event.value}")
    lines += [f"    {s.value} --> [*]" for s in State if s in TERMINAL]
    return "\n".join([*lines, "```", ""])


if __name__ == "__main__":
    print(diagram(), end="")
