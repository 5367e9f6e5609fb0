"""The agent state machine and restart policy: data, no I/O.

Theory of operation. An agent is one supervised process (and its group).
Its `AgentState` moves on `AgentEvent`s through `TRANSITIONS`, a complete
table like the session's: a new state, `STAY` (a written-out no-op) or
`REFUSE` (the caller asked for something that state cannot do).

What happens when a process exits is decided by `on_exit()`, a pure
function of the exit, the agent's restart policy and how long it ran
(SPEC §3, after s6 and systemd):

  * it was being stopped (by a user, a session stop or a disconnect)
    → `stopped`, no error;
  * status 125 → `failed` at once, one error (s6: "do not restart me");
  * otherwise a non-zero status, or a signal the daemon did not send, is
    one error;
  * restart = never, or on-failure after a clean exit → `exited`;
  * it ran at least `min_uptime` → restart at once, the crash count reset;
  * it ran less (a quick exit, the k-th in a row) → restart after
    `backoff_initial * 2**(k-1)` capped at `backoff_max`, unless k exceeds
    `max_restarts`: then `failed`, adding no further error.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sessiond.core.settings import AgentSpec, RestartPolicy
from sessiond.core.units import format_duration

from .policy import backoff_delay
from .session import REFUSE, STAY, Marker

DO_NOT_RESTART = 125


class AgentState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    FAILED = "failed"


class Desired(enum.Enum):
    """What a user asked of an agent; kept across daemon restarts (a stopped one stays so)."""

    RUNNING = "running"
    STOPPED = "stopped"


class AgentEvent(enum.Enum):
    SPAWNED = "spawned"
    SPAWN_FAILED = "spawn_failed"
    EXIT_RESTART = "exit_restart"  # on_exit() said: again, maybe after a delay
    EXIT_DONE = "exit_done"  # on_exit() said: exited
    EXIT_FAILED = "exit_failed"  # on_exit() said: failed
    EXIT_STOPPED = "exit_stopped"  # it was being stopped
    BACKOFF_OVER = "backoff_over"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    START = "start"


Outcome = AgentState | Marker  # STAY and REFUSE mean what they mean in session.py


class AgentRefused(Exception):
    def __init__(self, state: AgentState, event: AgentEvent) -> None:
        super().__init__(f"cannot {event.value.replace('_', ' ')} an agent that is {state.value}")
        self.state, self.event = state, event


A, V = AgentState, AgentEvent
_EXITS = {
    V.EXIT_RESTART: A.BACKOFF,
    V.EXIT_DONE: A.EXITED,
    V.EXIT_FAILED: A.FAILED,
    V.EXIT_STOPPED: A.STOPPED,
}
_DOWN = {A.STOPPED, A.EXITED, A.FAILED}


def _row(default: Outcome, *parts: Mapping[AgentEvent, Outcome]) -> dict[AgentEvent, Outcome]:
    row = dict.fromkeys(AgentEvent, default)
    for part in parts:
        row.update(part)
    return row


TRANSITIONS: Final[dict[AgentState, dict[AgentEvent, Outcome]]] = {
    A.STARTING: _row(REFUSE, {V.SPAWNED: A.RUNNING, V.SPAWN_FAILED: A.FAILED,
                              V.STOP: A.STOPPED}),
    A.RUNNING: _row(REFUSE, _EXITS, {V.PAUSE: A.PAUSED, V.RESUME: STAY, V.STOP: A.STOPPING,
                                     V.START: STAY}),
    A.BACKOFF: _row(REFUSE, {V.BACKOFF_OVER: A.STARTING, V.PAUSE: STAY, V.RESUME: STAY,
                             V.STOP: A.STOPPED, V.START: A.STARTING}),
    A.PAUSED: _row(REFUSE, _EXITS, {V.RESUME: A.RUNNING, V.PAUSE: STAY, V.STOP: A.STOPPING,
                                    V.START: STAY}),
    A.STOPPING: _row(REFUSE, {**dict.fromkeys(_EXITS, A.STOPPED), V.STOP: STAY,
                              V.PAUSE: STAY, V.RESUME: STAY}),
    **{state: _row(REFUSE, {V.START: A.STARTING, V.STOP: STAY, V.PAUSE: STAY,
                            V.RESUME: STAY}) for state in _DOWN},
}  # fmt: skip


class AgentEffect(enum.Enum):
    """What the supervisor must do to the process when an agent moves."""

    SPAWN = "spawn"  # start a process: the agent is starting
    SIGSTOP = "sigstop"  # to its group: paused
    SIGCONT = "sigcont"  # to its group: running again
    CANCEL_RESTART = "cancel_restart"  # a restart was due after a backoff: not any more


def effects(old: AgentState, new: AgentState) -> tuple[AgentEffect, ...]:
    found = []
    if old is A.BACKOFF and new is not A.BACKOFF:
        found.append(AgentEffect.CANCEL_RESTART)
    if new is A.STARTING and old is not A.STARTING:
        found.append(AgentEffect.SPAWN)
    if (old, new) == (A.RUNNING, A.PAUSED):
        found.append(AgentEffect.SIGSTOP)
    if (old, new) == (A.PAUSED, A.RUNNING):
        found.append(AgentEffect.SIGCONT)
    return tuple(found)


def step(state: AgentState, event: AgentEvent) -> AgentState:
    outcome = TRANSITIONS[state][event]
    if outcome is REFUSE:
        raise AgentRefused(state, event)
    return state if outcome is STAY else outcome  # type: ignore[return-value]


def move(state: AgentState, event: AgentEvent) -> tuple[AgentState, tuple[AgentEffect, ...]]:
    """The state after `event`, and what must be done to the process to get there."""
    new = step(state, event)
    return new, effects(state, new)


def halts(state: AgentState) -> bool:
    """Whether a stop ends the agent at once, with no process to wait for (a restart that
    was due, a start under way): the stop that is coming must not race a respawn."""
    return TRANSITIONS[state][V.STOP] is A.STOPPED


@dataclass(frozen=True)
class Exit:
    """How a process ended: `code` ≥ 0 for an exit status, -N for signal N, None unknown.

    The status is unknown for an agent adopted after a daemon restart: it is
    not the new daemon's child, so nobody can wait() for it.
    """

    code: int | None
    ran_for: float
    signal_sent: bool  # the daemon sent the signal that killed it
    stopping: bool  # a stop was under way


@dataclass(frozen=True)
class Verdict:
    event: AgentEvent
    error: bool  # counts against the session's error threshold
    delay: float  # before the restart, for EXIT_RESTART
    quick_exits: int  # the crash-loop count after this exit
    reason: str


def describe_exit(code: int | None) -> str:
    if code is None:
        return "ended; a restarted sessiond cannot know its status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


def on_exit(exit: Exit, spec: AgentSpec, quick_exits: int) -> Verdict:
    """What to do after a process ended (see the module docstring)."""
    said = describe_exit(exit.code)
    if exit.stopping:
        return Verdict(V.EXIT_STOPPED, False, 0.0, 0, f"stopped ({said})")
    code = exit.code
    error = code is None or code > 0 or (code < 0 and not exit.signal_sent)
    if exit.code == DO_NOT_RESTART:
        return Verdict(V.EXIT_FAILED, True, 0.0, quick_exits, f"{said}: do not restart")
    clean = exit.code == 0
    if spec.restart is RestartPolicy.NEVER or (spec.restart is RestartPolicy.ON_FAILURE and clean):
        return Verdict(V.EXIT_DONE, error, 0.0, 0, said)
    if exit.ran_for >= spec.min_uptime:
        return Verdict(V.EXIT_RESTART, error, 0.0, 0, f"{said}; restarting")
    quick = quick_exits + 1
    if quick > spec.max_restarts:
        reason = (
            f"{said} {quick} times in a row within {format_duration(spec.min_uptime)}; giving up"
        )
        return Verdict(V.EXIT_FAILED, error, 0.0, quick, reason)
    delay = backoff_delay(quick, spec.backoff_initial, spec.backoff_max)
    return Verdict(
        V.EXIT_RESTART, error, delay, quick, f"{said}; restarting in {format_duration(delay)}"
    )
