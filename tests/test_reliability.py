"""The daemon dies, the agents do not: re-adoption, shutdown modes, orphans."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable

import pytest
from test_agents import SLEEPER, agent, agents_of, alive, marked_processes, proc_state

from harness import wait_for

THREE = (
    agent("a", SLEEPER, min_uptime="1s") + agent("b", SLEEPER, min_uptime="1s")
    + agent("c", SLEEPER, min_uptime="1s") + '[templates.t]\nagents = ["a", "b", "c"]\n'
)  # fmt: skip
COUNTER = "import time\nfor i in range(10**6):\n    print(i, flush=True); time.sleep(0.05)"


def pids(daemon) -> dict[str, int]:
    return {name: a["pid"] for name, a in agents_of(daemon).items()}


def test_kill9_keeps_agents_and_the_next_daemon_adopts_them(make_daemon):
    daemon = make_daemon(THREE)
    daemon.call("session.start", name="s", template="t")
    before = pids(daemon)
    daemon.kill9()
    assert all(alive(pid) for pid in before.values())
    daemon.restart()
    assert pids(daemon) == before
    assert {a["state"] for a in agents_of(daemon).values()} == {"running"}
    assert daemon.call("session.status")["orphans"] == []
    # Still supervised: a kill after the adoption is noticed and restarted.
    wait_for(lambda: agents_of(daemon)["a"]["uptime"] >= 1.2, what="a past min_uptime")
    os.kill(before["a"], signal.SIGKILL)
    back = wait_for(lambda: (p := pids(daemon)["a"]) not in (None, before["a"]) and p,
                    timeout=3, what="a restarted")  # fmt: skip
    assert alive(back)
    assert agents_of(daemon)["a"]["restarts"] == 1


def run_counter(daemon, cwd) -> Callable[[], int]:
    """Start a session with an agent that prints 0, 1, 2…; a reader of its last number."""
    session = daemon.call("session.start", name="s")
    daemon.call("agent.run", command=[sys.executable, "-c", COUNTER], name="counter",
                cwd=str(cwd))  # fmt: skip
    log = daemon.state_dir / "logs" / session["id"] / "counter.log"

    def last() -> int:
        lines = log.read_text().split() if log.exists() else []  # the keeper makes it
        return int(lines[-1]) if lines else -1

    return last


def test_a_log_has_no_gap_across_a_daemon_kill_and_restart(daemon, short_tmp):
    last = run_counter(daemon, short_tmp)
    wait_for(lambda: last() >= 5, what="the counter to print")
    daemon.kill9()
    down = last()
    wait_for(lambda: last() > down + 10, what="the counter to print while the daemon is down")
    daemon.restart()
    wait_for(lambda: last() > down + 30, what="more lines after the restart")
    numbers = [int(x) for x in daemon.call("logs.tail", agent="counter", lines=10_000)["lines"]]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert numbers[0] == 0 and numbers[-1] > down + 30


def test_on_shutdown_stop_stops_agents_and_the_next_daemon_starts_them(make_daemon):
    daemon = make_daemon(THREE)
    daemon.call("session.start", name="s", template="t")
    before = pids(daemon)
    assert daemon.stop() == 0
    assert not any(alive(pid) for pid in before.values())
    daemon.restart()
    after = agents_of(daemon)
    assert {a["state"] for a in after.values()} == {"running"}
    assert not set(before.values()) & {a["pid"] for a in after.values()}
    assert daemon.call("session.status")["session"]["errors"]["count"] == 0


def test_on_shutdown_keep_leaves_agents_for_the_next_daemon(make_daemon):
    daemon = make_daemon('[daemon]\non_shutdown = "keep"\n' + THREE)
    daemon.call("session.start", name="s", template="t")
    before = pids(daemon)
    assert daemon.stop() == 0
    assert all(alive(pid) for pid in before.values())
    daemon.restart()
    assert pids(daemon) == before
    daemon.call("session.stop")
    assert not any(alive(pid) for pid in before.values())


def test_desired_state_survives_a_restart(make_daemon):
    daemon = make_daemon(THREE)
    daemon.call("session.start", name="s", template="t")
    daemon.sessionc("agent", "stop", "b")
    daemon.sessionc("pause")
    paused = [p for n, p in pids(daemon).items() if n != "b"]
    wait_for(lambda: all(proc_state(p) == "T" for p in paused), what="agents stopped")
    daemon.kill9()
    daemon.restart()
    after = agents_of(daemon)
    assert after["b"]["state"] == "stopped" and after["b"]["pid"] is None
    assert daemon.call("session.status")["session"]["state"] == "paused"
    assert all(proc_state(p) == "T" for p in paused)
    daemon.sessionc("resume")
    wait_for(lambda: all(proc_state(p) in ("S", "R") for p in paused), what="resumed")
    assert agents_of(daemon)["b"]["state"] == "stopped"


def test_orphans_after_the_store_is_lost_and_cleanup(make_daemon):
    daemon = make_daemon(THREE)
    daemon.call("session.start", name="s", template="t")
    before = set(pids(daemon).values())
    daemon.kill9()
    for name in os.listdir(daemon.state_dir):
        if name.startswith("sessiond.db"):
            os.unlink(daemon.state_dir / name)
    daemon.restart()
    status = daemon.call("session.status")
    assert status["session"] is None
    assert {o["pid"] for o in status["orphans"]} == before
    assert {o["agent"] for o in status["orphans"]} == {"a", "b", "c"}
    shown = daemon.sessionc("status").stdout
    assert "3 orphaned agent processes" in shown and "sessionc cleanup" in shown
    cleaned = daemon.sessionc_json("cleanup", "--orphans-only")
    assert cleaned["orphans_killed"] == 3
    assert not any(alive(pid) for pid in before)
    assert daemon.call("session.status")["orphans"] == []
    assert marked_processes(daemon) == []


def test_agents_of_another_daemon_are_not_orphans(make_daemon):
    first = make_daemon(THREE, name="one")
    first.call("session.start", name="s", template="t")
    second = make_daemon(name="two")
    assert second.call("session.status")["orphans"] == []
    assert len(marked_processes(first)) == 3


@pytest.mark.timeout(120)
def test_a_stop_of_1000_agents_ends_them_all_and_writes_no_python_noise(make_daemon):
    # Their SIGCHLDs, all within one callback, overfill the loop's wakeup socket: Python
    # wrote 'Exception ignored when trying to write to the signal wakeup fd' and a
    # traceback for each one past the first ~700, and could spin there (procs.wake_only).
    names = [f"s{i:04d}" for i in range(1000)]
    config = "".join(f'[agents.{n}]\ncommand = ["/bin/sleep", "infinity"]\n' for n in names)
    daemon = make_daemon(config + f"[templates.t]\nagents = {json.dumps(names)}\n"
                         "max_agents = 1000\n")  # fmt: skip
    daemon.call("session.start", name="s", template="t")

    def every_pid() -> list[int] | None:
        found = [a["pid"] for a in daemon.call("agent.list") if a["pid"]]
        return found if len(found) == len(names) else None

    running = wait_for(every_pid, timeout=60, what="1,000 agents running")
    assert daemon.stop() == 0
    assert not any(alive(pid) for pid in running)
    assert "Exception ignored" not in daemon.log()
