"""Unit tests of the rules that moved into the core: the lock and its queue, the moves a
session is given, what an agent may report, the agent table's effects, the clocks."""

from __future__ import annotations

import uuid

import pytest

from sessiond.core import moves, policy
from sessiond.core.agent import AgentEffect, AgentEvent, AgentState, halts, move
from sessiond.core.events import Kind
from sessiond.core.lock import Claim, Lock
from sessiond.core.policy import Deadline, Reason
from sessiond.core.records import Participant, Person, Session, check_leave, new_id
from sessiond.core.reports import added, check_metrics, encoded_checkpoint
from sessiond.core.session import ACTIVITY, ENDINGS, Event, State, is_news
from sessiond.core.settings import SessionSettings, Template, settings_for
from sessiond.errors import InvalidParams, InvalidState

A, B, C = Claim(1, "a", "ann", 1000), Claim(2, "b", "bob", 1001), Claim(3, "c", "cy", 1002)


def test_a_held_lock_is_free_for_nobody():
    lock = Lock("s1", (A,))
    assert not lock.free_for(None) and not lock.free_for(A.ticket)


def test_a_freed_lock_is_for_the_first_in_line_only():
    lock = Lock("s1").enqueue(A).enqueue(B).release("s1")
    assert lock.next() == A
    assert lock.free_for(A.ticket)
    assert not lock.free_for(B.ticket) and not lock.free_for(None)  # nobody overtakes the line


def test_taking_removes_the_claim_and_the_next_waits_for_the_next_release():
    lock = Lock(None, (A, B)).take("s2", A.ticket)
    assert (lock.holder, lock.queue, lock.next()) == ("s2", (B,), None)
    assert lock.release("s2").next() == B


def test_a_claim_that_gives_up_leaves_the_line_in_order():
    lock = Lock(None, (A, B, C)).withdraw(B.ticket)
    assert lock.queue == (A, C)


def test_a_stale_release_changes_nothing():
    assert Lock("s2").release("s1") == Lock("s2")


def test_an_empty_free_lock_is_free_for_a_start_that_does_not_queue():
    assert Lock().free_for(None)


S = SessionSettings(idle_after=300, timeout=1800, max_duration=3600, stop_at="16:00")


@pytest.mark.parametrize(
    ("reason", "event", "kind", "said"),
    [
        (Reason.IDLE, Event.IDLE_TIMEOUT, Kind.SESSION_IDLE, "idle after 5m"),
        (Reason.TIMEOUT, Event.EXPIRE, Kind.SESSION_EXPIRED, "expired: no activity for 30m"),
        (Reason.MAX_DURATION, Event.STOP, Kind.SESSION_STOPPING, "max_duration 1h reached"),
        (Reason.STOP_AT, Event.STOP, Kind.SESSION_STOPPING, "stop_at 16:00 reached"),
    ],
)
def test_each_deadline_makes_its_move(reason, event, kind, said):
    found = moves.deadline(Deadline(0.0, event, reason), S, "n")
    assert (found.event, found.kind) == (event, kind)
    assert said in found.message


def test_a_stop_records_its_reason():
    assert moves.stop("n", "stopped by ann").changes == {"close_reason": "stopped by ann"}


@pytest.mark.parametrize(
    ("online", "wanted", "state", "expected"),
    [
        (False, True, State.ACTIVE, Event.NETWORK_DOWN),
        (False, True, State.IDLE, Event.NETWORK_DOWN),
        (False, False, State.ACTIVE, None),  # no agent needs it
        (False, True, State.PAUSED, None),
        (None, True, State.ACTIVE, None),  # not known yet
        (True, True, State.SUSPENDED, Event.NETWORK_UP),
        (True, False, State.SUSPENDED, Event.NETWORK_UP),  # its agent went: resume
        (True, True, State.ACTIVE, None),
    ],
)
def test_the_network_rule(online, wanted, state, expected):
    found = moves.network(online, wanted, state, True, "n")
    assert (found.event if found else None) is expected


def test_a_network_no_longer_watched_resumes_and_says_so():
    found = moves.network(True, True, State.SUSPENDED, False, "n")
    assert found is not None and "network not watched" in found.message


def test_activity_and_endings():
    assert Event.RESUME in ACTIVITY and Event.PAUSE not in ACTIVITY
    assert Event.STOP in ENDINGS and Event.PAUSE not in ENDINGS


def test_a_repeat_is_no_news_but_a_join_is():
    assert is_news(Event.STOP, moved=True)
    assert not is_news(Event.STOP, moved=False)  # a second stop while stopping
    assert is_news(Event.ACTIVITY, moved=False)  # a join while paused


def _session(owner: int = 1000, participants: tuple[int, ...] = ()) -> Session:
    who = Person(owner, "ann", None, None)
    return Session(
        id="i", name="n", state=State.ACTIVE, owner=who, settings=SessionSettings(),
        created_at=0.0, last_activity=0.0, host="h", fence=1,
        participants=tuple(Participant(Person(u, f"u{u}", None, None), 0.0) for u in participants),
    )  # fmt: skip


def test_the_owner_cannot_leave():
    with pytest.raises(InvalidState, match="owns session 'n' and cannot leave"):
        check_leave(_session(), 1000, "ann")


def test_only_a_participant_may_leave():
    with pytest.raises(InvalidState, match="is not a participant"):
        check_leave(_session(participants=(1001,)), 1002, "cy")
    check_leave(_session(participants=(1001,)), 1001, "bob")


def test_a_template_sits_between_the_base_and_the_caller():
    templates = {"t": Template("t", (), (("timeout", 60.0), ("idle_after", 30.0)))}
    found = settings_for(SessionSettings(), templates, "t", {"timeout": "2m"})
    assert (found.timeout, found.idle_after) == (120.0, 30.0)


def test_an_unknown_template_or_bad_value_is_invalid_params():
    with pytest.raises(InvalidParams, match="no template named 'x'"):
        settings_for(SessionSettings(), {}, "x", {})
    with pytest.raises(InvalidParams, match="timeout"):
        settings_for(SessionSettings(), {}, None, {"timeout": "soon"})


@pytest.mark.parametrize("bad", [{"Tokens": 1}, {"t": -1}, {"t": True}, {"t": float("inf")}])
def test_metrics_are_named_finite_counters(bad):
    with pytest.raises(InvalidParams, match="counters only grow"):
        check_metrics(bad)


def test_totals_that_overflow_are_refused():
    assert added({"t": 1}, {"t": 2, "u": 0.5}) == {"t": 3, "u": 0.5}
    with pytest.raises(InvalidParams, match="not a finite number"):
        added({"t": 1e308}, {"t": 1e308})


def test_a_checkpoint_is_at_most_64_kib_of_json():
    assert encoded_checkpoint({"a": 1}) == '{"a": 1}'
    with pytest.raises(InvalidParams, match="over 64 KiB"):
        encoded_checkpoint("x" * 65536)


@pytest.mark.parametrize(
    ("state", "event", "effects"),
    [
        (AgentState.RUNNING, AgentEvent.PAUSE, (AgentEffect.SIGSTOP,)),
        (AgentState.PAUSED, AgentEvent.RESUME, (AgentEffect.SIGCONT,)),
        (AgentState.BACKOFF, AgentEvent.BACKOFF_OVER,
         (AgentEffect.CANCEL_RESTART, AgentEffect.SPAWN)),
        (AgentState.BACKOFF, AgentEvent.STOP, (AgentEffect.CANCEL_RESTART,)),
        (AgentState.EXITED, AgentEvent.START, (AgentEffect.SPAWN,)),
        (AgentState.PAUSED, AgentEvent.PAUSE, ()),
    ],
)  # fmt: skip
def test_the_agent_table_says_what_to_do_to_the_process(state, event, effects):
    assert move(state, event)[1] == effects


def test_a_stop_halts_at_once_only_what_has_no_process_to_wait_for():
    assert {s for s in AgentState if halts(s)} == {AgentState.BACKOFF, AgentState.STARTING}


def test_clocks_convert_wall_to_monotonic_once_per_session():
    first = policy.clocks_for(900.0, 950.0, None, now_mono=10.0, now_wall=1000.0, previous=None)
    assert (first.started, first.last_activity) == (-90.0, -40.0)
    # The wall clock steps an hour: the start stays; only new activity is converted again.
    later = policy.clocks_for(900.0, 4600.0, None, now_mono=11.0, now_wall=4601.0, previous=first)
    assert (later.started, later.last_activity) == (-90.0, 10.0)
    # A move that is not activity, after the step: same stored activity, same instant.
    moved = policy.clocks_for(900.0, 4600.0, None, now_mono=50.0, now_wall=9000.0, previous=later)
    assert (moved.started, moved.last_activity) == (-90.0, 10.0)


def test_a_new_id_is_a_random_uuid_4_written_as_uuid_writes_it():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
