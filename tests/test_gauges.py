"""An agent's CPU and memory, read from /proc off the request path (issue 14).

A status of 200 agents asked after a quiet second used to read /proc for each
of them before answering: 15 to 20 ms, on the request path. Now a look shows the
last sample and asks for the next, which the loop reads after the reply, a
slice at a time. The figures' arithmetic runs on a FakeClock and a stub of the
process layer; the slicing on the real clock and loop; the figures themselves
against a real daemon and a real agent's /proc.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

from test_agents import agents_of

from harness import wait_for
from sessiond.daemon.clock import FakeClock, SystemClock
from sessiond.daemon.gauges import MAX_AGE, SLICE, Gauges


class Usage:
    """The process layer's usage(): what each pid has used, and who was asked."""

    def __init__(self) -> None:
        self.used: dict[int, tuple[float, int]] = {}
        self.asked: list[int] = []

    def usage(self, agent) -> tuple[float, int] | None:
        self.asked.append(agent.pid)
        return self.used.get(agent.pid)


def running(pid: int, started: float) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, start_ticks=pid * 10, started_mono=started, facts=None)


NONE = {"cpu_percent": None, "rss": None}


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """The test, run in a loop of its own."""
    return lambda: asyncio.run(test())


def one_agent() -> tuple[FakeClock, Usage, Gauges, SimpleNamespace]:
    clock, procs = FakeClock(), Usage()
    return clock, procs, Gauges(procs, clock), running(100, clock.monotonic())  # type: ignore[arg-type]


async def look_after(seconds: float, clock: FakeClock, gauges: Gauges, worker) -> None:
    """A look `seconds` on, and the loop's next turn, which reads what it asked for."""
    await clock.advance(seconds)
    gauges.facts(worker)
    await clock.advance(0)


def figures(found: dict) -> dict:
    return {k: found[k] for k in ("cpu_percent", "rss", "cpu_seconds")}


@in_loop
async def test_a_look_reads_nothing_and_the_next_one_shows_what_was_read():
    clock, procs, gauges, worker = one_agent()
    procs.used[100] = (2.0, 4096)
    await clock.advance(4)
    assert figures(gauges.facts(worker)) == {**NONE, "cpu_seconds": None}
    assert procs.asked == []  # the look itself read no /proc
    await clock.advance(0)  # the loop's next turn
    assert procs.asked == [100]
    # 2 s of CPU in the 4 s since it started: 50 % of one CPU
    assert figures(gauges.facts(worker)) == {"cpu_percent": 50.0, "rss": 4096, "cpu_seconds": 2.0}
    await look_after(MAX_AGE / 2, clock, gauges, worker)
    assert procs.asked == [100]  # under a second old: shown again, not read again


@in_loop
async def test_cpu_is_since_the_last_sample_and_the_total_never_falls_across_runs():
    clock, procs, gauges, worker = one_agent()
    procs.used[100] = (1.0, 4096)
    await look_after(2, clock, gauges, worker)
    procs.used[100] = (1.25, 8192)
    await look_after(1, clock, gauges, worker)
    assert figures(gauges.facts(worker)) == {"cpu_percent": 25.0, "rss": 8192, "cpu_seconds": 1.25}
    worker.pid, worker.start_ticks, worker.started_mono = 200, 2000, clock.monotonic()
    # The new run is not sampled yet: no percent, no memory, and the sum so far.
    assert figures(gauges.facts(worker)) == {**NONE, "cpu_seconds": 1.25}
    procs.used[200] = (0.0, 4096)
    await clock.advance(0)  # read as it starts: nothing used yet
    procs.used[200] = (0.5, 4096)
    await look_after(1, clock, gauges, worker)
    assert figures(gauges.facts(worker)) == {"cpu_percent": 50.0, "rss": 4096, "cpu_seconds": 1.75}
    worker.pid = None
    assert figures(gauges.facts(worker)) == {**NONE, "cpu_seconds": 1.75}


@in_loop
async def test_a_process_gone_before_its_sample_keeps_the_last_figures():
    clock, procs, gauges, worker = one_agent()
    procs.used[100] = (1.0, 4096)
    await look_after(2, clock, gauges, worker)
    del procs.used[100]  # it exited; its SIGCHLD is on its way
    await look_after(2, clock, gauges, worker)
    assert figures(gauges.facts(worker)) == {"cpu_percent": 50.0, "rss": 4096, "cpu_seconds": 1.0}


@in_loop
async def test_many_agents_are_read_a_slice_per_turn_of_the_loop():
    clock, procs = SystemClock(), Usage()
    ticking = asyncio.create_task(clock.run())
    await asyncio.sleep(0)
    gauges = Gauges(procs, clock)  # type: ignore[arg-type]
    crowd = [running(pid, clock.monotonic()) for pid in range(1, 2 * SLICE + 21)]
    for worker in crowd:
        procs.used[worker.pid] = (0.0, 4096)
        gauges.facts(worker)
    assert procs.asked == []
    seen = []  # how many were read, each time the loop came round to this task
    async with asyncio.timeout(10):
        while len(procs.asked) < len(crowd):
            seen.append(len(procs.asked))
            await asyncio.sleep(0)
    ticking.cancel()
    steps = [b - a for a, b in zip([0, *seen], [*seen, len(crowd)], strict=True)]
    assert max(steps) <= SLICE  # who else waits waits for one slice at most
    assert sorted(procs.asked) == [w.pid for w in crowd]  # each once


def resident(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_real_agents_memory_is_what_proc_says(make_daemon):
    daemon = make_daemon('[agents.w]\ncommand = ["/bin/sleep", "1000"]\n'
                         '[templates.t]\nagents = ["w"]\n')  # fmt: skip
    daemon.call("session.start", name="s", template="t")
    pid = wait_for(lambda: agents_of(daemon)["w"]["pid"], what="w running")

    def as_proc_says() -> bool:
        shown = agents_of(daemon)["w"]  # a sample from before its exec is bigger
        return shown["rss"] is not None and abs(shown["rss"] - resident(pid)) < 256 << 10

    wait_for(as_proc_says, what="w's memory, as /proc/PID/statm has it")
    assert agents_of(daemon)["w"]["cpu_percent"] >= 0
