"""The CPU and memory of the running agents, sampled off the request path (issue 14).

No request reads /proc. Status, agent.list, top and metrics.get show each
agent's last sample, and a request that finds it over a second old, or of an
earlier run, asks for a new one. The samples are read after the reply, on the
loop, SLICE agents at a time, so a request or a death that comes meanwhile waits
for one slice at most (10 reads of /proc/PID/stat, ~0.2 ms), not for 1,000
agents: with 50 a slice, a kill -9 just after a status waited ~2 ms more.

Nobody asking, nothing is read: idle agents cost the daemon no CPU. So the first
look after a quiet spell shows what the look before it left, and asks for new
figures, which a look a moment later shows; a watcher (`status --watch`, top, a
status loop) sees figures of the last second. A run not sampled yet shows none.

`cpu_percent` is of one CPU, since the run's previous sample (or its start);
`cpu_seconds`, the CPU time of every run of the agent so far, never falls: it
adds the current run's user and system time (and that of the children it
waited for) to what the runs before it had used when last sampled. A run's CPU
after its last sample is not seen, and the sum starts again with a new daemon
(as an exporter's counters do).
"""

from __future__ import annotations

from typing import Any

from sessiond.daemon.clock import Clock, Timer
from sessiond.daemon.processes import Processes
from sessiond.daemon.supervisor import Agent

MAX_AGE = 1.0  # seconds a sample is shown for before a look asks for a new one
SLICE = 10  # agents sampled in one turn of the loop


class Gauges:
    def __init__(self, procs: Processes, clock: Clock) -> None:
        self.procs, self.clock = procs, clock
        self._due: dict[int, Agent] = {}  # by id(): agents compare by identity
        self._timer: Timer | None = None

    def facts(self, agent: Agent, now: float | None = None) -> dict[str, Any]:
        """`cpu_percent`, `rss` and `cpu_seconds` of the agent's last sample; no I/O."""
        now = self.clock.monotonic() if now is None else now
        sampled_at, before = agent.facts or (0.0, None)
        this_run = before is not None and before["run"] == (agent.pid, agent.start_ticks)
        if agent.pid is not None and (not this_run or now - sampled_at >= MAX_AGE):
            self._ask(agent)
        if before is not None and this_run:
            return before
        spent = before["cpu_seconds"] if before is not None else None  # of earlier runs
        return {"cpu_percent": None, "rss": None, "cpu_seconds": spent}

    def _ask(self, agent: Agent) -> None:
        self._due[id(agent)] = agent
        if self._timer is None:
            self._timer = self.clock.soon(self._sample_due)

    def _sample_due(self) -> None:
        """A slice of the agents asked for; the rest once the loop has served who waits."""
        self._timer = None
        now = self.clock.monotonic()
        for _ in range(min(SLICE, len(self._due))):
            self._sample(self._due.popitem()[1], now)
        if self._due:
            self._timer = self.clock.soon(self._sample_due)

    def _sample(self, agent: Agent, now: float) -> None:
        found = self.procs.usage(agent)
        if found is None:  # gone, or not yet: its exit is on its way
            return
        used, rss = found
        sampled_at, before = agent.facts or (0.0, None)
        run = (agent.pid, agent.start_ticks)
        last = (before["cpu_seconds"] or 0.0) if before is not None else 0.0
        if before is not None and before["run"] == run:
            base, since, used_before = before["cpu_before"], sampled_at, before["run_cpu"]
        else:  # the first sample of this run: since it started
            base, since, used_before = last, agent.started_mono, 0.0
        percent = (used - used_before) * 100 / (now - since) if now > since else 0.0
        agent.facts = (
            now,
            {
                "cpu_percent": round(max(percent, 0.0), 1),
                "rss": rss,
                "cpu_seconds": max(last, round(base + used, 3)),
                "cpu_before": base,
                "run": run,
                "run_cpu": used,
            },
        )
