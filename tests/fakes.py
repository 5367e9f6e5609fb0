"""Fakes of the shell's edges, for in-process tests on a FakeClock (tests/test_inprocess.py).

`FakeProcesses` stands in for daemon/processes.py: the same methods, and no
process behind any of them. A spawn hands out the next pid (10001, 10002, …)
and records it; a signal is recorded, never sent; a process ends only when
the test says so (`exit`) or when the supervisor terminates it, and then it
is reaped through the `sigchld` callback, as main.py wires SIGCHLD to
`Supervisor.reap`. `RecordingOutlet` stands in for the daemon's outlet (the
system journal and the subscribers): it keeps what the journal published.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from typing import Any

FIRST_PID = 10001


class FakeCensus:
    """A pass over a /proc where no agent left its group and nobody carries a marker."""

    def members(self, pgid: int, token: str) -> set[int]:
        return set()

    def leader(self, token: str) -> int | None:
        return None

    def marked(self) -> dict[str, set[int]]:
        return {}

    def about(self, pid: int) -> dict[str, str | None]:
        return {"agent": None, "session_id": None}


class FakeProcesses:
    def __init__(self) -> None:
        self._pids = itertools.count(FIRST_PID)
        self.spawns: list[tuple[str, int]] = []  # (agent name, pid), in order
        self.signals: list[tuple[int, int]] = []  # (pgid, signal), in order
        self.terminated: list[list[int]] = []  # the pids (and group) of each terminate()
        self.live: set[int] = set()
        self._dead: list[tuple[int, int]] = []  # exited, not yet reaped
        self._watchers: dict[int, Callable[[], None]] = {}
        self.sigchld: Callable[[], None] = lambda: None  # the test wires Supervisor.reap

    # -- what the tests do to the processes ----------------------------------

    def exit(self, pid: int, code: int) -> None:
        """Process `pid` ends with `code` (-N: killed by signal N); SIGCHLD says so.

        The real SIGCHLD handler is a loop callback; calling it here, from the
        test or from terminate(), is the same to `reap`: neither sits inside
        another callback of the supervisor.
        """
        if pid not in self.live:
            raise ValueError(f"unable to end fake process {pid}: it is not running")
        self.live.discard(pid)
        if (gone := self._watchers.pop(pid, None)) is not None:
            gone()  # not our child: a pidfd says it ended, nobody reaps it
            return
        self._dead.append((pid, code))
        self.sigchld()

    def pids(self, name: str) -> list[int]:
        """Every pid agent `name` was spawned with, first first."""
        return [pid for agent, pid in self.spawns if agent == name]

    # -- the methods of daemon/processes.Processes ---------------------------

    def spawn(self, agent: Any, out: int, err: int) -> int:
        pid = next(self._pids)  # `out` and `err` are the supervisor's to close
        self.spawns.append((agent.spec.name, pid))
        self.live.add(pid)
        return pid

    def reap(self) -> list[tuple[int, int]]:
        dead, self._dead = self._dead, []
        return dead

    def watch(self, pid: int, gone: Callable[[], None]) -> bool:
        if pid not in self.live:
            return False
        self._watchers[pid] = gone
        return True

    def signal_group(self, pgid: int, sig: int) -> None:
        self.signals.append((pgid, sig))

    def start_time(self, pid: int) -> int | None:
        return pid if pid in self.live else None  # unique per run, as the kernel's ticks are

    def age(self, pid: int) -> float:
        return 0.0

    def census(self) -> FakeCensus:
        return FakeCensus()

    async def terminate(
        self, pids: set[int], grace: float, pgid: int | None = None,
        again: Callable[[], set[int]] | None = None,
    ) -> set[int]:  # fmt: skip
        """Every live one ends at SIGTERM: none needed SIGKILL."""
        targets = sorted(pids | ({pgid} if pgid is not None else set()))
        self.terminated.append(targets)
        for pid in targets:
            if pid in self.live:
                self.exit(pid, -signal.SIGTERM)
        return set()

    def strays(self, keep: set[int]) -> set[int]:
        return set()

    def usage(self, agent: Any) -> tuple[float, int] | None:
        return 0.0, 0


class RecordingOutlet:
    """The journal's outlet: what was published, in order; no subscriber wants anything."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lines: list[tuple[str, list[dict[str, Any]], tuple[str, ...]]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def publish_lines(
        self, session: str, entries: list[dict[str, Any]], topics: tuple[str, ...]
    ) -> None:
        self.lines.append((session, entries, topics))

    def wants(self, *topics: str) -> bool:
        return False

    def kinds(self, prefix: str = "") -> list[str]:
        """The kinds published so far (those starting with `prefix`), in order."""
        return [str(e["kind"]) for e in self.events if str(e["kind"]).startswith(prefix)]
