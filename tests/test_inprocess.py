"""The daemon's shell driven in-process: real Sessions, Fleet, Supervisor, Journal and
SQLite store, on a FakeClock and FakeProcesses (tests/fakes.py), with no daemon and no
agent process. Each test checks states, recorded event kinds, spawns and signals at the
exact simulated instants a rule names (idle_after=300: at +299 s active, at +300 s idle),
and runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import FIRST_PID, FakeProcesses, RecordingOutlet

from sessiond.core.agent import AgentState
from sessiond.core.records import Session
from sessiond.core.session import State
from sessiond.core.settings import AgentSpec, Config, Template
from sessiond.daemon.access import Peer
from sessiond.daemon.clock import FakeClock
from sessiond.daemon.crew import Crew
from sessiond.daemon.fleet import Fleet
from sessiond.daemon.journal import Journal
from sessiond.daemon.locks.local import LocalLock
from sessiond.daemon.sessions import Sessions
from sessiond.daemon.store import Store

WALL = 1_800_000_000.0  # 2027-01-15 08:00 UTC: the fake wall clock at the start
NAME = "n"


class Failures(logging.Handler):
    """Errors the shell logged: a timer callback that raised is logged, not raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Shell:
    clock: FakeClock
    procs: FakeProcesses
    outlet: RecordingOutlet
    store: Store
    fleet: Fleet
    sessions: Sessions
    t0: float = 0.0  # the monotonic instant the session started

    async def start(self, **overrides: Any) -> Session:
        peer = Peer(os.getuid(), os.getgid(), os.getpid())
        request = self.sessions.prepare_start(
            peer, None, name=NAME, template="t", parent=None, overrides=overrides
        )
        self.t0 = self.clock.monotonic()
        return await self.sessions.start(request, False)

    async def at(self, seconds: float) -> None:
        """Move the clock to `seconds` after the start, firing every timer due by then."""
        await self.clock.advance(self.t0 + seconds - self.clock.monotonic())

    @property
    def session(self) -> Session:
        return self.sessions.find(NAME)  # the live one, or the one that just ended

    @property
    def state(self) -> State:
        return self.session.state

    def agent_state(self, name: str) -> AgentState:
        agent = self.fleet.crew.get(self.session.id, name)
        assert agent is not None, f"no agent {name} in the crew"
        return agent.state

    def stored_kinds(self) -> list[str]:
        return [e["kind"] for e in self.store.events(1000, self.session.id)]


def config(*agents: AgentSpec) -> Config:
    return Config(
        agents={a.name: a for a in agents},
        templates={"t": Template("t", tuple(a.name for a in agents))},
    )


def agent(name: str = "a", **given: Any) -> AgentSpec:
    return AgentSpec(name, command=("/bin/true",), **given)


def _devnull(_agent: object) -> tuple[int, int]:
    """Where a fake run's stdout and stderr go."""
    flags = os.O_WRONLY | os.O_CLOEXEC
    return os.open(os.devnull, flags), os.open(os.devnull, flags)


@contextlib.asynccontextmanager
async def shell(tmp_path: Path, cfg: Config, wall: float = WALL) -> AsyncIterator[Shell]:
    """The shell as main.py wires it, with the fakes at its edges."""
    clock, procs, outlet = FakeClock(wall=wall), FakeProcesses(), RecordingOutlet()
    store = Store.open(tmp_path / "state")
    failures = Failures()
    logging.getLogger("sessiond").addHandler(failures)
    try:
        async with asyncio.TaskGroup() as tg:  # owns the stop tasks, as the daemon's does
            crew = Crew(tmp_path / "state", str(tmp_path / "sessiond.sock"))
            journal = Journal(store, outlet, clock)
            fleet = Fleet(journal, crew, procs, clock, (1 << 20, 3))  # type: ignore[arg-type]
            # Fleet.open hands each agent run pipes to the log keeper, a process of its own
            # (logs.KeeperLink) and not under test here: the fake runs write to /dev/null.
            # The supervisor closes the fds it is given; there is no pipe for close to drop.
            fleet.open = _devnull  # type: ignore[method-assign]
            fleet.close = lambda agent: None  # type: ignore[method-assign]
            spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]] = tg.create_task
            sessions = Sessions(cfg, journal, fleet, LocalLock("here", journal.next_fence), spawn,
                                clock=clock, host="here")  # fmt: skip
            procs.sigchld = fleet.supervisor.reap  # main.py: add_signal_handler(SIGCHLD, …)
            yield Shell(clock, procs, outlet, store, fleet, sessions)
            await clock.advance(0)  # the last agent changes are written
        assert not failures.records, [r.getMessage() for r in failures.records]
    finally:
        logging.getLogger("sessiond").removeHandler(failures)
        store.close()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


# -- deadlines ----------------------------------------------------------------


@pytest.mark.timeout(10)
def test_a_session_is_idle_at_idle_after_and_not_a_moment_before(tmp_path):
    async def main() -> None:
        async with shell(tmp_path, config()) as sh:
            await sh.start(idle_after=300, timeout=1800)
            await sh.at(299)
            assert sh.state is State.ACTIVE
            await sh.at(300)
            assert sh.state is State.IDLE
            kinds = ["session.starting", "session.started", "session.idle"]
            assert sh.outlet.kinds() == kinds
            assert sh.stored_kinds() == kinds  # published only what was committed

    run(main)


@pytest.mark.timeout(10)
def test_a_session_expires_at_timeout_and_its_agents_stop(tmp_path):
    async def main() -> None:
        async with shell(tmp_path, config(agent("a"))) as sh:
            started = await sh.start(idle_after=300, timeout=1800)
            await sh.at(1799)
            assert sh.state is State.IDLE
            assert sh.procs.terminated == []
            await sh.at(1800)
            assert sh.state is State.EXPIRED
            assert sh.session.close_reason == "expired: no activity for 30m"
            assert sh.sessions.live is None and sh.sessions.lock.holder() is None
            assert sh.procs.terminated == [[FIRST_PID]] and not sh.procs.live
            assert sh.fleet.crew.agents(started.id) == []  # forgotten once stopped
            await sh.at(1801)
            assert sh.outlet.kinds("session.") == [
                "session.starting", "session.started", "session.idle", "session.expired",
            ]  # fmt: skip
            assert sh.outlet.kinds("agent.") == ["agent.started", "agent.stopped"]

    run(main)


@pytest.mark.timeout(10)
def test_max_duration_stops_the_session_at_its_instant(tmp_path):
    async def main() -> None:
        async with shell(tmp_path, config(agent("a"))) as sh:
            await sh.start(max_duration=600, idle_after=3600, timeout=7200)
            await sh.at(599)
            assert sh.state is State.ACTIVE
            await sh.at(600)
            assert sh.state is State.CLOSED
            assert sh.session.close_reason == "max_duration 10m reached"
            assert sh.procs.terminated == [[FIRST_PID]]
            assert sh.sessions.lock.holder() is None
            assert sh.outlet.kinds("session.") == [
                "session.starting", "session.started", "session.stopping", "session.closed",
            ]  # fmt: skip

    run(main)


@pytest.mark.timeout(10)
def test_stop_at_stops_the_session_at_that_local_time(tmp_path):
    nine = dt.datetime(2027, 1, 15, 9, 0).timestamp()  # naive: the machine's local time

    async def main() -> None:
        async with shell(tmp_path, config(), wall=nine) as sh:
            await sh.start(stop_at="09:20", idle_after=3600, timeout=7200)
            await sh.at(1199)
            assert sh.state is State.ACTIVE
            await sh.at(1200)
            assert sh.state is State.CLOSED
            assert sh.session.close_reason == "stop_at 09:20 reached"
            assert sh.outlet.kinds()[-2:] == ["session.stopping", "session.closed"]

    run(main)


@pytest.mark.timeout(10)
def test_a_simulated_half_hour_from_idle_to_expired_takes_under_two_seconds(tmp_path):
    async def main() -> None:
        async with shell(tmp_path, config(agent("a"))) as sh:
            await sh.start(idle_after=300, timeout=1800)
            for second in range(1, 1801):  # every simulated second, and a check at each
                await sh.at(second)
                want = (State.ACTIVE if second < 300 else
                        State.IDLE if second < 1800 else State.EXPIRED)  # fmt: skip
                assert sh.state is want, f"at +{second}s"

    began = time.monotonic()
    run(main)
    assert time.monotonic() - began < 2.0


# -- agents -------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_quick_exits_back_off_doubling_up_to_backoff_max_then_the_agent_fails(tmp_path):
    crash = agent("crash", min_uptime=10, backoff_initial=1, backoff_max=4, max_restarts=4)

    async def main() -> None:
        async with shell(tmp_path, config(crash)) as sh:
            await sh.start(error_threshold=100)  # five errors here; the threshold is another test's
            now = 0.0
            for delay in (1.0, 2.0, 4.0, 4.0):  # 1, 2, 4, then capped at backoff_max
                sh.procs.exit(sh.procs.pids("crash")[-1], 1)  # at once: a quick exit
                assert sh.agent_state("crash") is AgentState.BACKOFF
                before = len(sh.procs.spawns)
                await sh.at(now + delay - 0.5)
                assert len(sh.procs.spawns) == before, f"respawned before +{now + delay}s"
                await sh.at(now + delay)
                assert len(sh.procs.spawns) == before + 1, f"not respawned at +{now + delay}s"
                assert sh.agent_state("crash") is AgentState.RUNNING
                now += delay
            sh.procs.exit(sh.procs.pids("crash")[-1], 1)  # the fifth quick exit: > max_restarts
            assert sh.agent_state("crash") is AgentState.FAILED
            await sh.at(now + 60)
            assert sh.procs.spawns == [("crash", FIRST_PID + n) for n in range(5)]
            assert sh.fleet.crew.get(sh.session.id, "crash").restarts == 4
            assert sh.outlet.kinds("agent.") == [
                *["agent.started", "agent.backoff"] * 4, "agent.started", "agent.failed",
            ]  # fmt: skip
            assert sh.outlet.kinds("session.error") == ["session.error"] * 5
            assert sh.state is State.ACTIVE
            assert sh.procs.signals == []

    run(main)


@pytest.mark.timeout(10)
def test_errors_within_error_window_disconnect_and_older_ones_do_not_count(tmp_path):
    flaky = agent("flaky", min_uptime=5)  # each run is long enough: restarted at once

    async def main() -> None:
        async with shell(tmp_path, config(flaky)) as sh:
            await sh.start(error_threshold=3, error_window=60)
            for second in (10, 20, 70):  # at +70 the error of +10 is 60 s old: it is gone
                await sh.at(second)
                sh.procs.exit(sh.procs.pids("flaky")[-1], 1)
                assert sh.state is State.ACTIVE, f"at +{second}s"
            assert sh.session.error_count(sh.clock.wall()) == 2
            await sh.at(79)  # the error of +20 is 59 s old: three within the window
            sh.procs.exit(sh.procs.pids("flaky")[-1], 1)
            assert sh.state is State.DISCONNECTED
            await sh.at(80)
            assert sh.sessions.lock.holder() == sh.session.id  # a disconnect keeps the lock
            assert sh.agent_state("flaky") is AgentState.STOPPED
            assert sh.procs.pids("flaky") == [FIRST_PID + n for n in range(4)]  # no respawn
            counts = [e["data"]["count"] for e in sh.outlet.events
                      if e["kind"] == "session.error"]  # fmt: skip
            assert counts == [1, 2, 2, 3]
            assert sh.outlet.kinds("session.")[-2:] == ["session.error", "session.disconnected"]

    run(main)


@pytest.mark.timeout(10)
def test_offline_suspends_the_session_and_stops_only_the_agent_that_needs_the_network(
    tmp_path,
):
    cfg = config(agent("net", needs_network=True), agent("local"))

    async def main() -> None:
        async with shell(tmp_path, cfg) as sh:
            watched: list[float] = []
            sh.sessions.net.watch_network = lambda: watched.append(sh.clock.monotonic())
            await sh.start(idle_after=3600, timeout=7200)
            net, local = FIRST_PID, FIRST_PID + 1
            await sh.at(100)
            assert watched and watched[0] == sh.t0  # from the start: an agent needs it
            sh.sessions.net.network(False)
            assert sh.state is State.SUSPENDED
            assert sh.procs.signals == [(net, signal.SIGSTOP)]
            await sh.at(399)
            assert sh.state is State.SUSPENDED
            assert sh.agent_state("net") is AgentState.PAUSED
            assert sh.agent_state("local") is AgentState.RUNNING
            await sh.at(400)
            sh.sessions.net.network(True)
            assert sh.state is State.ACTIVE
            assert sh.procs.signals == [(net, signal.SIGSTOP), (net, signal.SIGCONT)]
            assert local not in {pgid for pgid, _ in sh.procs.signals}
            await sh.at(401)
            assert sh.agent_state("net") is AgentState.RUNNING
            assert sh.outlet.kinds()[-6:] == [
                "network.down", "session.suspended", "agent.paused",
                "network.up", "session.resumed", "agent.running",
            ]  # fmt: skip

    run(main)


@pytest.mark.timeout(10)
def test_a_wall_clock_step_moves_no_deadline(tmp_path):
    async def main() -> None:
        async with shell(tmp_path, config(agent("net", needs_network=True))) as sh:
            await sh.start(idle_after=3600, timeout=7200)
            await sh.at(100)
            sh.clock.set_wall(sh.clock.wall() + 3600)  # the wall clock steps an hour ahead
            await sh.at(200)
            sh.sessions.net.network(False)  # a move that is not activity: suspended
            await sh.at(7199)
            assert sh.state is State.SUSPENDED
            await sh.at(7200)
            assert sh.state is State.EXPIRED

    run(main)


# -- the agents as status sends them ------------------------------------------


@pytest.mark.timeout(10)
def test_the_agents_encoded_for_status_are_their_wire_form_at_every_step(tmp_path):
    crash = agent("crash", min_uptime=10, backoff_initial=5, labels=("scan",))

    async def main() -> None:
        async with shell(tmp_path, config(agent("a"), crash)) as sh:
            await sh.start(error_threshold=100)

            def same() -> None:
                sent = json.loads(sh.fleet.encoded(sh.session).text)
                assert sent == sh.fleet.wire(sh.session)

            same()  # just started: nothing sampled yet
            await sh.at(2.05)
            same()  # sampled, and 2.1 s of uptime
            sh.procs.exit(sh.procs.pids("crash")[-1], 1)
            await sh.at(3.33)
            same()  # in backoff: its countdown, its exit
            await sh.at(7.5)
            same()  # restarted: a new run
            assert sh.fleet.wire(sh.session)[1]["pid"] == sh.procs.pids("crash")[1]

    run(main)


def test_a_run_s_start_time_is_read_after_the_spawn_and_before_its_row_is_written(tmp_path):
    crash = agent("crash", min_uptime=10, backoff_initial=5)

    async def main() -> None:
        async with shell(tmp_path, config(crash)) as sh:
            await sh.start(error_threshold=100)
            first = sh.fleet.crew.get(sh.session.id, "crash")
            assert first is not None and first.pid is not None
            assert first.start_ticks is None  # not read while the exec may still run
            await sh.at(0)
            (row,) = sh.store.agents(sh.session.id)
            assert (row["pid"], row["start_ticks"]) == (first.pid, first.start_ticks)
            assert first.start_ticks == sh.procs.start_time(first.pid)  # the fake's ticks

            sh.procs.exit(first.pid, 1)
            await sh.at(5.5)  # restarted after its backoff: a new run, read anew
            (row,) = sh.store.agents(sh.session.id)
            assert row["pid"] == sh.procs.pids("crash")[1]
            assert row["start_ticks"] == sh.procs.start_time(row["pid"])

    run(main)
