"""The session state machine and the timing policy: pure, with plain numbers for time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sessiond.core import policy
from sessiond.core.session import (
    REFUSE,
    STAY,
    TERMINAL,
    TRANSITIONS,
    Effect,
    Event,
    Refused,
    State,
    diagram,
    step,
)

LEGAL = {  # SPEC §2.1, written out independently of the table
    (State.STARTING, State.ACTIVE), (State.STARTING, State.FAILED),
    (State.ACTIVE, State.IDLE), (State.IDLE, State.ACTIVE),
    (State.ACTIVE, State.PAUSED), (State.IDLE, State.PAUSED), (State.PAUSED, State.ACTIVE),
    (State.ACTIVE, State.SUSPENDED), (State.IDLE, State.SUSPENDED),
    (State.SUSPENDED, State.ACTIVE),
    *((s, State.DISCONNECTED) for s in (State.ACTIVE, State.IDLE, State.PAUSED, State.SUSPENDED)),
    (State.DISCONNECTED, State.ACTIVE),
    *((s, State.STOPPING) for s in State if s.live and s is not State.STOPPING),
    (State.STOPPING, State.CLOSED),
    *((s, State.EXPIRED) for s in State if s.live),
    *((s, State.FAILED) for s in State if s.live),  # §10: the cluster lock lost
}  # fmt: skip


def test_the_table_is_complete():
    assert set(TRANSITIONS) == set(State)
    for state, row in TRANSITIONS.items():
        assert set(row) == set(Event), state


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_pair(state, event):
    outcome = TRANSITIONS[state][event]
    if outcome is REFUSE:
        with pytest.raises(Refused) as refused:
            step(state, event)
        assert refused.value.state is state and refused.value.event is event
        assert state.value in str(refused.value)
    elif outcome is STAY:
        assert step(state, event) == (state, ())
    else:
        new, _ = step(state, event)
        assert (state, new) in LEGAL, f"{state} --{event}--> {new} is not in SPEC §2.1"


def test_every_legal_move_is_reachable():
    reachable = {
        (s, o) for s, row in TRANSITIONS.items() for o in row.values() if isinstance(o, State)
    }
    assert reachable == LEGAL


def test_terminal_states_refuse_everything():
    for state in TERMINAL:
        assert all(o is REFUSE for o in TRANSITIONS[state].values())
        assert not state.live


@pytest.mark.parametrize(("old", "event", "effects"), [
    (State.ACTIVE, Event.PAUSE, (Effect.PAUSE_AGENTS,)),
    (State.PAUSED, Event.RESUME, (Effect.RESUME_AGENTS,)),
    (State.IDLE, Event.NETWORK_DOWN, (Effect.PAUSE_NETWORK_AGENTS,)),
    (State.SUSPENDED, Event.NETWORK_UP, (Effect.RESUME_NETWORK_AGENTS,)),
    (State.ACTIVE, Event.ERROR_THRESHOLD, (Effect.TERMINATE_AGENTS,)),
    (State.DISCONNECTED, Event.RECONNECT, (Effect.RESTART_AGENTS,)),
    (State.PAUSED, Event.STOP, (Effect.STOP_AGENTS,)),
    (State.STOPPING, Event.STOPPED, (Effect.RELEASE_LOCK,)),
    (State.IDLE, Event.EXPIRE, (Effect.STOP_AGENTS, Effect.RELEASE_LOCK)),
    (State.STARTING, Event.LAUNCH_FAILED, (Effect.STOP_AGENTS, Effect.RELEASE_LOCK)),
    (State.IDLE, Event.ACTIVITY, ()),
])  # fmt: skip
def test_effects_of_moves(old, event, effects):
    assert step(old, event)[1] == effects


# -- policy, with a fake clock: plain numbers ------------------------------------


def clocks(started=0.0, activity=0.0, stop_at=None):
    return policy.Clocks(started=started, last_activity=activity, stop_at=stop_at)


def test_active_session_turns_idle_first():
    found = policy.deadlines(State.ACTIVE, clocks(activity=100), 300, 1800, None)
    nearest = policy.nearest(found)
    assert (nearest.at, nearest.event) == (400, Event.IDLE_TIMEOUT)


def test_idle_session_expires_from_its_last_activity():
    nearest = policy.nearest(policy.deadlines(State.IDLE, clocks(activity=100), 300, 1800, None))
    assert (nearest.at, nearest.event) == (1900, Event.EXPIRE)


@pytest.mark.parametrize("state", [State.PAUSED, State.SUSPENDED, State.DISCONNECTED,
                                   State.STOPPING, State.STARTING])  # fmt: skip
def test_timeout_applies_to_every_live_state(state):
    found = policy.deadlines(state, clocks(activity=10), 300, 60, None)
    assert [(d.at, d.event) for d in found] == [(70, Event.EXPIRE)]


def test_no_deadlines_once_closed():
    assert policy.deadlines(State.CLOSED, clocks(), 1, 1, 1) == []
    assert policy.nearest([]) is None


def test_max_duration_and_stop_at_close_the_session():
    found = policy.deadlines(State.ACTIVE, clocks(started=0, activity=50, stop_at=500),
                             300, 1800, 200)  # fmt: skip
    nearest = policy.nearest(found)
    assert (nearest.at, nearest.event, nearest.reason) == (200, Event.STOP, "max_duration")
    found = policy.deadlines(State.IDLE, clocks(started=0, activity=50, stop_at=120),
                             300, 1800, 200)  # fmt: skip
    assert policy.nearest(found).reason == "stop_at"


def test_next_stop_at_is_today_or_tomorrow():
    tz = dt.timezone(dt.timedelta(hours=2))
    morning = dt.datetime(2026, 11, 22, 9, 30, tzinfo=tz).timestamp()
    today = policy.next_stop_at(morning, (16, 0), tz)
    assert dt.datetime.fromtimestamp(today, tz) == dt.datetime(2026, 11, 22, 16, 0, tzinfo=tz)
    evening = dt.datetime(2026, 11, 22, 17, 0, tzinfo=tz).timestamp()
    tomorrow = policy.next_stop_at(evening, (16, 0), tz)
    assert dt.datetime.fromtimestamp(tomorrow, tz) == dt.datetime(2026, 11, 23, 16, 0, tzinfo=tz)
    exactly = dt.datetime(2026, 11, 22, 16, 0, tzinfo=tz).timestamp()
    assert policy.next_stop_at(exactly, (16, 0), tz) == tomorrow


def test_error_window_forgets_old_errors():
    assert policy.errors_in_window([0, 10, 890, 899], now=900, window=900) == 3
    assert policy.errors_in_window([], now=5, window=1) == 0


@pytest.mark.parametrize(
    ("k", "delay"), [(0, 0), (1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (9, 30)]
)
def test_backoff_doubles_and_caps(k, delay):
    assert policy.backoff_delay(k, initial=1, maximum=30) == delay


def test_the_docs_diagram_is_generated_from_the_table():
    doc = (Path(__file__).parent.parent / "docs" / "states.md").read_text()
    assert doc.endswith(diagram())


def test_the_threshold_disconnects_only_where_the_table_says():
    where = {st for st in State if policy.disconnects(5, 5, st)}
    assert where == {State.ACTIVE, State.IDLE, State.PAUSED, State.SUSPENDED}
    assert not policy.disconnects(4, 5, State.ACTIVE)
