"""What a restarted daemon does with each agent it finds in the store: pure.

A process is the agent only if both its pid and its start time (clock ticks
since boot, /proc/PID/stat field 22) match what the store recorded: pids are
reused, start times of a reused pid differ.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from .agent import AgentState, Desired

UP = {AgentState.RUNNING.value, AgentState.PAUSED.value, AgentState.STOPPING.value}
PENDING = {AgentState.STARTING.value, AgentState.BACKOFF.value}


class Revival(enum.Enum):
    ADOPT = "adopt"  # alive, the same process: watch it again
    DIED = "died"  # was up, is gone: an exit under its restart policy
    START = "start"  # was to be running and has no process: start afresh, no error
    LEAVE = "leave"  # stopped by a user, exited or failed: stays so


def revive_plan(row: Mapping[str, Any], ticks_now: int | None) -> Revival:
    """`ticks_now`: the start time of the process now holding row["pid"], if any."""
    state = row["state"]
    same = row["pid"] is not None and ticks_now is not None and ticks_now == row["start_ticks"]
    if state in UP:
        return Revival.ADOPT if same else Revival.DIED
    if state in PENDING:
        return Revival.START
    if state == AgentState.STOPPED.value and row["desired"] == Desired.RUNNING.value:
        return Revival.START  # stopped by the daemon's own shutdown (on_shutdown = "stop")
    return Revival.LEAVE
