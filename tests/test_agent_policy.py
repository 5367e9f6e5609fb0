"""The agent state table and the restart verdict: pure, time as plain numbers."""

from __future__ import annotations

import pytest

from sessiond.core.agent import (
    REFUSE,
    STAY,
    TRANSITIONS,
    AgentEvent,
    AgentRefused,
    AgentState,
    Exit,
    describe_exit,
    on_exit,
    step,
)
from sessiond.core.revive import Revival, revive_plan
from sessiond.core.settings import AgentSpec, RestartPolicy

SPEC = AgentSpec(name="a", command=("x",), min_uptime=10, backoff_initial=1, backoff_max=30,
                 max_restarts=3)  # fmt: skip


def test_the_agent_table_is_complete():
    assert set(TRANSITIONS) == set(AgentState)
    for row in TRANSITIONS.values():
        assert set(row) == set(AgentEvent)


@pytest.mark.parametrize("state", list(AgentState))
@pytest.mark.parametrize("event", list(AgentEvent))
def test_every_agent_pair(state, event):
    outcome = TRANSITIONS[state][event]
    if outcome is REFUSE:
        with pytest.raises(AgentRefused) as refused:
            step(state, event)
        assert state.value in str(refused.value)
    else:
        assert step(state, event) == (state if outcome is STAY else outcome)


def verdict(code, ran_for=1.0, quick=0, spec=SPEC, sent=False, stopping=False):
    return on_exit(Exit(code, ran_for, sent, stopping), spec, quick)


@pytest.mark.parametrize(("k", "delay"), [(0, 1), (1, 2), (2, 4)])
def test_quick_exits_back_off_doubling(k, delay):
    v = verdict(1, ran_for=0.5, quick=k)
    assert (v.event, v.delay, v.quick_exits, v.error) == (AgentEvent.EXIT_RESTART, delay, k + 1,
                                                          True)  # fmt: skip


def test_the_fourth_quick_exit_fails_with_no_extra_error():
    v = verdict(1, ran_for=0.5, quick=3)
    assert v.event is AgentEvent.EXIT_FAILED and v.error is True  # the exit itself, once
    clean = verdict(0, ran_for=0.5, quick=3, spec=AgentSpec(name="a", command=("x",),
                    restart=RestartPolicy.ALWAYS, min_uptime=10))  # fmt: skip
    assert clean.event is AgentEvent.EXIT_FAILED and clean.error is False


def test_a_long_run_restarts_at_once_and_resets_the_count():
    v = verdict(-9, ran_for=60, quick=2)
    assert (v.event, v.delay, v.quick_exits, v.error) == (AgentEvent.EXIT_RESTART, 0, 0, True)


def test_exit_125_fails_at_once_and_counts_one_error():
    v = verdict(125, ran_for=60)
    assert (v.event, v.error) == (AgentEvent.EXIT_FAILED, True)


def test_policies_and_clean_exits():
    assert verdict(0).event is AgentEvent.EXIT_DONE  # on-failure, clean: done
    never = AgentSpec(name="a", command=("x",), restart=RestartPolicy.NEVER)
    assert verdict(2, spec=never).event is AgentEvent.EXIT_DONE
    assert verdict(2, spec=never).error is True
    assert verdict(-15, sent=True, ran_for=60).error is False  # a signal we sent
    assert verdict(-15, stopping=True).event is AgentEvent.EXIT_STOPPED
    assert verdict(None, ran_for=60).error is True  # unknown: adopted, not our child


def test_exit_descriptions():
    assert describe_exit(0) == "exited with 0"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with 3"


def row(state, pid=10, ticks=5, desired="running"):
    return {"state": state, "pid": pid, "start_ticks": ticks, "desired": desired}


@pytest.mark.parametrize(("found", "ticks_now", "plan"), [
    (row("running"), 5, Revival.ADOPT),
    (row("paused"), 5, Revival.ADOPT),
    (row("running"), 6, Revival.DIED),  # the pid was reused by another process
    (row("running"), None, Revival.DIED),
    (row("backoff", pid=None), None, Revival.START),
    (row("stopped", pid=None), None, Revival.START),  # our own shutdown stopped it
    (row("stopped", pid=None, desired="stopped"), None, Revival.LEAVE),  # a user did
    (row("failed", pid=None), None, Revival.LEAVE),
    (row("exited", pid=None), None, Revival.LEAVE),
])  # fmt: skip
def test_revive_plan(found, ticks_now, plan):
    assert revive_plan(found, ticks_now) is plan


def test_reasons_use_one_duration_form_and_no_nested_parentheses():
    stopped = on_exit(Exit(None, 5.0, signal_sent=False, stopping=True), SPEC, 0)
    assert stopped.reason.count("(") <= 1 and "((" not in stopped.reason.replace(" ", "")
    assert not any(ch in describe_exit(None) for ch in "()")
    gave_up = verdict(1, ran_for=0.5, quick=3)
    assert "within 10s" in gave_up.reason
    slow = AgentSpec(name="a", command=("x",), min_uptime=90, backoff_initial=90,
                     backoff_max=600)  # fmt: skip
    again = verdict(1, ran_for=5, quick=0, spec=slow)
    assert again.reason.endswith("restarting in 1m30s"), again.reason
