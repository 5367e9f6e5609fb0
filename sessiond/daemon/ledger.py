"""The agents' rows and events, written in one transaction per turn of the loop.

Agent changes come in bursts (a crash loop, 200 agents starting): every
change marks the agent dirty and queues its event, and one callback a turn
later writes them all (`Journal.transaction`: the events are published once
it commits). A disk that refuses keeps everything pending and is tried again
a second later (SPEC §6.2); a bug in one row costs only that row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sessiond.core.events import Kind
from sessiond.core.records import rfc3339
from sessiond.daemon.clock import Clock
from sessiond.daemon.crew import spec_json
from sessiond.daemon.journal import Journal
from sessiond.daemon.supervisor import Agent
from sessiond.errors import StorageError

log = logging.getLogger("sessiond")


class Ledger:
    def __init__(self, journal: Journal, clock: Clock, read_starts: Callable[[], None]) -> None:
        self.journal = journal
        self.read_starts = read_starts  # what rows need of new processes, read before they are
        self.store = journal.store
        self.clock = clock
        self._dirty: dict[Agent, None] = {}
        self._pending_events: list[tuple[Agent, Kind, str]] = []
        self._flush_armed = False

    def changed(self, agent: Agent, kind: Kind, message: str) -> None:
        self._dirty[agent] = None
        self._pending_events.append((agent, kind, message))
        if not self._flush_armed:
            self._flush_armed = True
            self.clock.soon(self._flush)

    def _flush(self) -> None:
        self._flush_armed = False
        dirty, events = list(self._dirty), self._pending_events
        try:
            self._write(dirty, events)
        except StorageError as exc:
            # Keep everything pending; the disk may come back (SPEC §6.2).
            log.error("%s; keeping %d agent changes to write again in 1s", exc.message,
                      len(self._pending_events))  # fmt: skip
            self._flush_armed = True
            self.clock.later(1.0, self._flush)
            return
        except Exception:  # a bug, not the disk: it must not stop every later write
            log.exception("internal error writing agent changes; writing them one by one")
            self._write_apart(dirty, events)
        self._dirty, self._pending_events = {}, []

    def _write(self, dirty: list[Agent], events: list[tuple[Agent, Kind, str]]) -> None:
        self.read_starts()
        with self.journal.transaction():
            for agent in dirty:
                self.store.save_agent(_agent_row(agent))
            for agent, kind, message in events:
                self.journal.event(
                    agent.session_id,
                    agent.session_name,
                    kind,
                    message,
                    {"agent": agent.name, "pid": agent.pid, "exit_code": agent.exit_code},
                )

    def _write_apart(self, dirty: list[Agent], events: list[tuple[Agent, Kind, str]]) -> None:
        """Each change in a transaction of its own: only the one that cannot be written is lost."""
        changes: list[tuple[list[Agent], list[tuple[Agent, Kind, str]]]] = [
            ([agent], []) for agent in dirty
        ] + [([], [event]) for event in events]
        for rows, items in changes:
            try:
                self._write(rows, items)
            except Exception:  # noqa: BLE001 -- said, and the others still written
                log.error("dropping an agent change that cannot be written: %r", (rows, items))

    def save_now(self, agents: list[Agent]) -> None:
        """Write these agents' rows before any process of theirs exists (StorageError if not)."""
        with self.journal.transaction():
            for agent in agents:
                self.store.save_agent(_agent_row(agent))

    def flush(self) -> None:
        """Write pending agent rows now (at shutdown, before the store closes)."""
        if self._dirty or self._pending_events:
            self._flush()


def _agent_row(agent: Agent) -> dict[str, Any]:
    return {
        "session_id": agent.session_id, "name": agent.name, "spec": spec_json(agent.spec),
        "uid": agent.uid, "gid": agent.gid, "groups": list(agent.groups), "token": agent.token,
        "cwd": agent.cwd, "env": agent.env, "state": agent.state.value,
        "desired": agent.desired.value,
        "pid": agent.pid, "start_ticks": agent.start_ticks, "started_at": agent.started_at,
        "restarts": agent.restarts, "exit_code": agent.exit_code,
    }  # fmt: skip


def stored_wire(row: dict[str, Any], session: str) -> dict[str, Any]:
    spec = row["spec"]
    return {
        "name": row["name"],
        "session": session,
        "state": row["state"],
        "pid": None,
        "started_at": rfc3339(row["started_at"]),
        "uptime": None,
        "restart_in": None,
        "restarts": row["restarts"],
        "exit_code": row["exit_code"],
        "cpu_percent": None,
        "rss": None,
        "labels": spec["labels"],
        "command": spec["command"],
        "uid": row["uid"],
        "restart": spec["restart"],
    }
