"""What `sessionc top` shows: one frame, as lines of text, from what the daemon said.

Pure: `frame(view, width, height, now)` turns the last `session.status`, the
recent events and the selection into at most `height` lines of at most
`width` columns; top.py draws them with curses and `--once` prints them.
Every cell from the daemon goes through show.escape, so a name or a message
cannot drive the terminal. With `View.colour`, states, errors and events are
painted as `sessionc status` paints them (colour.py): top.py turns the codes
into curses attributes, and `--once` prints them to a terminal as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sessiond.cli.colour import RED, Painted, state_style
from sessiond.cli.show import (
    coloured,
    errors_style,
    escape,
    event_line,
    fmt_bytes,
    fmt_duration,
    fmt_person,
    fmt_relative,
    fmt_state,
    joined,
    width,
)

HEADERS = ("AGENT", "STATE", "PID", "UPTIME", "CPU%", "RSS", "RESTARTS", "BACKOFF", "LABELS")
SGR_PARTS = re.compile(r"(\x1b\[[0-9;]*m)|([^\x1b]+)")  # a Painted line: codes, and text
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
    colour: bool = False  # paint states, errors and events

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
    if view.log is not None:
        lower = [escape(line) for line in view.log]
    else:
        lower = [event_line(e, view.colour) for e in view.events]
    title = f"── log of {_name(view.agent())} " if view.log is not None else "── events "
    room = max(height - len(top) - 3, 0)
    lines = [*top, "", title.ljust(width, "─"), *lower[-room:]]
    lines = lines[: max(height - 1, 0)]
    lines += [""] * (height - 1 - len(lines))
    lines.append(escape(view.message) or KEYS)
    return [cut(line, width) for line in lines]


def cut(line: str, columns: int) -> str:
    """`line` cut to `columns` on the screen; a Painted line cut between its codes."""
    if not isinstance(line, Painted) or "\x1b" not in line:
        return line[:columns]  # escaped already: escaping it again changes nothing
    out, shown = [], 0
    for code, text in SGR_PARTS.findall(line):
        if code:
            out.append(code)
        elif shown < columns:
            out.append(text[: columns - shown])
            shown += len(out[-1])
    return Painted("".join(out) + ("\x1b[0m" if out and out[-1] != "\x1b[0m" else ""))


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
    return _session_lines(session, status.get("daemon") or {}, now, view.colour)


def _session_lines(
    session: dict[str, Any], daemon: dict[str, Any], now: float, colour: bool
) -> list[str]:
    people = ", ".join(fmt_person(p) for p in session.get("participants") or []) or "none"
    errors = session.get("errors") or {}
    last = errors.get("last") or {}
    last_text = f"last: {last.get('agent') or 'an agent'}: {last.get('text')}" if last else ""
    state = str(session.get("state", "?"))
    count = f"{errors.get('count', 0)}/{errors.get('threshold', '?')}"
    lines = [
        joined(f"session {session.get('name')}  ",
               coloured(state.upper(), state_style(state), colour),
               f"  owner {fmt_person(session.get('owner'))}  participants {people}"),
        joined(f"idle {fmt_relative(session.get('idle_at'), now)}  expires "
               f"{fmt_relative(session.get('expires_at'), now)}  errors ",
               coloured(count, errors_style(errors), colour),
               "  " if last_text else "", coloured(last_text, RED, colour)),
    ]  # fmt: skip
    cluster = daemon.get("cluster") or {}
    if cluster.get("backend", "local") != "local":
        reach = "" if cluster.get("reachable") else "  (etcd UNREACHABLE)"
        lines.append(f"host {session.get('host')}  fence {session.get('fence')}{reach}")
    return [escape(line) for line in lines]


def _agent_table(view: View, now: float) -> list[str]:
    rows = [list(HEADERS)]
    rows += [_agent_cells(a, now, view.fetched, view.colour) for a in view.agents]
    widths = [max(width(row[i]) for row in rows) for i in range(len(HEADERS))]
    chosen = view.agent()
    lines = []
    for i, row in enumerate(rows):
        mark = "> " if i and chosen is not None and view.agents[i - 1] is chosen else "  "
        cells = [part for c, w in zip(row, widths, strict=True)
                 for part in (c, " " * (w - width(c) + 2))]  # fmt: skip
        lines.append(joined(mark, *cells[:-1]))
    return [Painted(line.rstrip()) if isinstance(line, Painted) else line.rstrip()
            for line in lines]  # fmt: skip


def _agent_cells(agent: dict[str, Any], now: float, fetched: float, colour: bool) -> list[str]:
    cpu = agent.get("cpu_percent")
    state = fmt_state(agent.get("state", "?"), colour)
    return [escape(x) for x in (
        _name(agent), state, str(agent.get("pid") or "-"),
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
