"""What `sessionc top` shows: one frame, as lines of text, from what the daemon said.

Pure: `frame(view, width, height, now)` turns the last `session.status`, the
recent events and the selection into at most `height` lines of at most
`width` columns; top.py draws them with curses and `--once` prints them.
Every cell from the daemon goes through show.escape, so a name or a message
cannot drive the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sessiond.cli.show import (
    escape,
    event_line,
    fmt_bytes,
    fmt_duration,
    fmt_person,
    fmt_relative,
)

HEADERS = ("AGENT", "STATE", "PID", "UPTIME", "CPU%", "RSS", "RESTARTS", "BACKOFF", "LABELS")
KEYS = "↑↓ select  l log  r restart  s stop/start  k kill  p pause/resume  q quit"


@dataclass
class View:
    """What top knows: the last status, the events seen, who is selected, what to say."""

    status: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] | None = None  # the selected agent's log lines, while `l` shows them
    selected: int = 0
    message: str = ""  # the status line: an action's outcome, a refusal, reconnecting…
    connected: bool = True
    fetched: float = 0.0  # when `status` was asked (wall clock): backoff counts down from it

    @property
    def agents(self) -> list[dict[str, Any]]:
        session = (self.status or {}).get("session") or {}
        return list(session.get("agents") or [])

    def agent(self) -> dict[str, Any] | None:
        agents = self.agents
        return agents[min(self.selected, len(agents) - 1)] if agents else None


def frame(view: View, width: int, height: int, now: float) -> list[str]:
    """The whole screen: the session, its agents, then the events (or the log) below."""
    top = _head(view, now)
    if view.status is not None and view.status.get("session"):
        top += ["", *_agent_table(view, now)]
    lower = view.log if view.log is not None else [event_line(e) for e in view.events]
    title = f"── log of {_name(view.agent())} " if view.log is not None else "── events "
    room = max(height - len(top) - 3, 0)
    lines = [*top, "", title.ljust(width, "─"), *[escape(x) for x in lower[-room:]]]
    lines = lines[: max(height - 1, 0)]
    lines += [""] * (height - 1 - len(lines))
    lines.append(view.message or KEYS)
    return [line[:width] for line in lines]


def _head(view: View, now: float) -> list[str]:
    if not view.connected:
        return ["reconnecting… (the daemon is not answering)"]
    status = view.status or {}
    session = status.get("session")
    if not session:
        queue = status.get("queue") or []
        waiting = [f"  {escape(str(c.get('name')))} ({escape(str(c.get('user')))})"
                   + (f" on {escape(str(c['host']))}" if c.get("host") else "")
                   for c in queue]  # fmt: skip
        return ["no live session", *(["queue:", *waiting] if waiting else [])]
    return _session_lines(session, status.get("daemon") or {}, now)


def _session_lines(session: dict[str, Any], daemon: dict[str, Any], now: float) -> list[str]:
    people = ", ".join(fmt_person(p) for p in session.get("participants") or []) or "none"
    errors = session.get("errors") or {}
    last = errors.get("last") or {}
    last_text = f"  last: {last.get('agent') or 'an agent'}: {last.get('text')}" if last else ""
    lines = [
        f"session {session.get('name')}  {str(session.get('state', '?')).upper()}  owner "
        f"{fmt_person(session.get('owner'))}  participants {people}",
        f"idle {fmt_relative(session.get('idle_at'), now)}  expires "
        f"{fmt_relative(session.get('expires_at'), now)}  errors {errors.get('count', 0)}/"
        f"{errors.get('threshold', '?')}{last_text}",
    ]
    cluster = daemon.get("cluster") or {}
    if cluster.get("backend", "local") != "local":
        reach = "" if cluster.get("reachable") else "  (etcd UNREACHABLE)"
        lines.append(f"host {session.get('host')}  fence {session.get('fence')}{reach}")
    return [escape(line) for line in lines]


def _agent_table(view: View, now: float) -> list[str]:
    rows = [list(HEADERS)] + [_agent_cells(a, now, view.fetched) for a in view.agents]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    chosen = view.agent()
    lines = []
    for i, row in enumerate(rows):
        mark = "> " if i and chosen is not None and view.agents[i - 1] is chosen else "  "
        lines.append(mark + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return [line.rstrip() for line in lines]


def _agent_cells(agent: dict[str, Any], now: float, fetched: float) -> list[str]:
    cpu = agent.get("cpu_percent")
    return [escape(x) for x in (
        _name(agent), str(agent.get("state", "?")), str(agent.get("pid") or "-"),
        fmt_duration(agent.get("uptime")), "-" if cpu is None else f"{cpu:.1f}",
        fmt_bytes(agent.get("rss")), str(agent.get("restarts", 0)),
        _backoff(agent, now, fetched),
        ",".join(agent.get("labels") or []) or "-",
    )]  # fmt: skip


def _backoff(agent: dict[str, Any], now: float, fetched: float) -> str:
    """The countdown to a restart in backoff: 'in 4s', as of now, not of the fetch."""
    left = agent.get("restart_in")
    if left is None or agent.get("state") != "backoff":
        return "-"
    return f"in {fmt_duration(max(left - (now - fetched), 0))}"


def _name(agent: dict[str, Any] | None) -> str:
    return str((agent or {}).get("name", "-"))
