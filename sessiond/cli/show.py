"""What sessionc shows: pure functions from wire objects (docs/wire.md) to text lines.

No I/O: main.py's printers print what these return, through `escape`, so that
no control character from the daemon reaches a terminal (SPEC §7). With
`colour`, the functions that show states colour them (colour.py): such a line
is escaped here, part by part, and comes back `Painted`, which escape passes as
it is. The functions that show times take `now`, so that tests can pin the
clock. Like
main.py, this module imports only the standard library, and what only some
output needs (datetime, signal) where it is used: `sessionc status` must start
fast.
"""

from __future__ import annotations

import re
import time

from sessiond.cli.colour import DIM, RED, YELLOW, Painted, event_style, paint, state_style

TYPE_CHECKING = False  # typing would cost every sessionc start; see main.py
if TYPE_CHECKING:
    import datetime
    from collections.abc import Iterable
    from typing import Any

UNIT_SECONDS = (86400, 3600, 60, 1)  # d, h, m, s
# What escape() replaces: the C0 controls, DEL, the C1 controls (category Cc) and lone
# surrogates (Cs, which JSON's "\ud800" can carry and no terminal encoding can print).
_UNPRINTABLE = r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]"  # re's cache compiles it, once needed
_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v",
                  "\f": "\\f", "\r": "\\r"}  # fmt: skip
_SGR = r"\x1b\[[0-9;]*m"  # a colour code: in Painted text, only sessionc's own


def escape(text: str) -> str:
    r"""Text from the daemon, safe to print to a terminal: 'pts/1\x1b[2J' → 'pts/1\\x1b[2J'.

    Each control character is shown as a C escape, as systemctl does: \n, \t,
    \r, \a, \b, \v, \f, else \xNN as in Python's repr (systemd's cescape()
    writes \033 for \x1b); a lone surrogate as \udNNN. Tab and newline too:
    the only newline sessionc prints is the one that ends its own line, so a
    name or a reason cannot forge a line ('hint: …') or shift a column.
    Backslashes stay as they are, so that escaping twice changes nothing
    (table() measures escaped cells) and the backslashes of a JSON log line
    read as written; --json tells an escaped control from the same text typed.
    Painted text is escaped already, around its colour codes: it is returned as it is.
    """
    if isinstance(text, Painted) or text.isprintable():  # the usual cases, without a regex
        return text
    return re.sub(_UNPRINTABLE, _escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def width(text: str) -> int:
    """How many columns `text` takes once printed: its colour codes take none."""
    return len(re.sub(_SGR, "", text)) if isinstance(text, Painted) else len(text)


def coloured(text: str, style: str | None, colour: bool) -> str:
    """`text` escaped and painted in `style` when `colour` is on (and a style given); else as is."""
    return paint(escape(text), style) if colour and style else text


def joined(*parts: str) -> str:
    """The parts as one line: Painted, the plain parts escaped, if any part is; else plain."""
    if not any(isinstance(part, Painted) for part in parts):
        return "".join(parts)
    return Painted("".join(map(escape, parts)))


def fmt_duration(seconds: float | None) -> str:
    """45 → '45s', 90 → '1m30s', 5400 → '1h30m', 93600 → '1d2h': two leading units."""
    if seconds is None:
        return "-"
    left, amounts = int(max(seconds, 0)), []
    for unit in UNIT_SECONDS:
        amount, left = divmod(left, unit)
        amounts.append(amount)
    first = next((i for i, amount in enumerate(amounts) if amount), 3)
    shown = "".join(
        f"{amounts[i]}{'dhms'[i]}" for i in range(first, min(first + 2, 4)) if amounts[i]
    )
    return shown or "0s"


def fmt_bytes(size: float | None) -> str:
    """12_900_000 → '12.3M', in powers of 1024 like ps and top."""
    if size is None:
        return "-"
    value, unit = float(size), "B"
    for unit in "BKMGT":
        if value < 1024 or unit == "T":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)}B"
    return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"


def fmt_exit(code: int | None) -> str:
    """How an agent last ended: 0 → 'exited with 0', -9 → 'killed by SIGKILL'."""
    if code is None:
        return "-"
    if code >= 0:
        return f"exited with {code}"
    import signal  # noqa: PLC0415 -- 1 ms that `sessionc status` without agents need not pay

    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _datetime() -> Any:
    """The datetime module, imported when a time is first shown: CPython's C half alone when
    there is one, since 3.11's datetime.py first builds a pure-Python twin of every class
    (1.7 ms of import, against 0.3 ms)."""
    try:
        import _datetime as module  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:  # not CPython
        import datetime as module  # noqa: PLC0415
    return module


def parse_time(stamp: str | None) -> datetime.datetime | None:
    try:
        return _datetime().datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None


def fmt_relative(stamp: str | None, now: float | None = None) -> str:
    """An RFC 3339 time as 'in 24m' or '3m10s ago'."""
    when = parse_time(stamp)
    if when is None:
        return "-"
    delta = round(when.timestamp() - (time.time() if now is None else now))  # 44m59.9s is 45m
    if delta == 0:
        return "now"
    return f"in {fmt_duration(delta)}" if delta > 0 else f"{fmt_duration(-delta)} ago"


def fmt_clock(stamp: str | None, now: float | None = None, seconds: bool = False) -> str:
    """Local wall time: 'HH:MM' today, 'YYYY-MM-DD HH:MM' another day; 'HH:MM:SS' always."""
    when = parse_time(stamp)
    if when is None:
        return stamp or "-"
    local = when.astimezone()
    today = _datetime().datetime.fromtimestamp(time.time() if now is None else now).date()
    clock = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    return clock if seconds or local.date() == today else f"{local:%Y-%m-%d} {clock}"


def fmt_since(stamp: str | None, now: float | None = None) -> str:
    """'10:34 (12m ago)'."""
    return f"{fmt_clock(stamp, now)} ({fmt_relative(stamp, now)})"


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fmt_person(who: dict[str, Any] | None) -> str:
    """'alice on pts/3', or 'alice' with no terminal."""
    if not who:
        return "-"
    name = str(who.get("user") or f"uid {who.get('uid', '?')}")
    return f"{name} on {who['tty']}" if who.get("tty") else name


def columns(rows: Iterable[list[str]]) -> list[str]:
    """Cells aligned on the widest of their column, two spaces apart, like `ps`.

    Cells are measured escaped, as they will be printed, and Painted ones without their
    colour codes; a row with a Painted cell is a Painted line.
    """
    rows = [[escape(cell) for cell in row] for row in rows]
    if not any(isinstance(cell, Painted) for row in rows for cell in row):
        widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
        return ["  ".join(map(str.ljust, row, widths)).rstrip() for row in rows]
    widths = [max(map(width, column)) for column in zip(*rows, strict=True)]
    return [_aligned(row, widths) for row in rows]


def _aligned(row: list[str], widths: list[int]) -> str:
    """A row of columns() with colour: each cell padded to its column's width, no blanks
    at the end."""
    parts = [part for cell, w in zip(row, widths, strict=True)
             for part in (cell, " " * (w - width(cell) + 2))]  # fmt: skip
    while parts and not isinstance(parts[-1], Painted) and not parts[-1].rstrip():
        parts.pop()
    if parts and not isinstance(parts[-1], Painted):
        parts[-1] = parts[-1].rstrip()
    return joined(*parts)


def table(headers: list[str], rows: Iterable[list[str]], colour: bool = False) -> list[str]:
    """A header line (dim, with `colour`), then the rows, in aligned columns."""
    head, *lines = columns([headers, *rows])
    return [coloured(head, DIM, colour), *lines]


AGENT_HEADERS = ["AGENT", "PID", "STATE", "UPTIME", "MEM", "CPU%", "RESTARTS", "LAST-EXIT"]


def fmt_state(state: Any, colour: bool = False) -> str:
    """A state of a session, agent or health, in its colour when `colour` is on."""
    return coloured(str(state), state_style(state), colour)


def agent_row(agent: dict[str, Any], colour: bool = False) -> list[str]:
    cpu = agent.get("cpu_percent")
    return [
        str(agent.get("name", "?")),
        fmt_value(agent.get("pid")),
        fmt_state(agent.get("state", "?"), colour),
        fmt_duration(agent.get("uptime")),
        fmt_bytes(agent.get("rss")),
        "-" if cpu is None else f"{cpu:.1f}",
        fmt_value(agent.get("restarts", 0)),
        fmt_exit(agent.get("exit_code")),
    ]


def agent_lines(agents: list[dict[str, Any]], colour: bool = False) -> list[str]:
    """The agent table, then the counts by label ('labels: scan=2 backtest=1')."""
    counts: dict[str, int] = {}
    for agent in agents:
        for label in agent.get("labels") or []:
            counts[label] = counts.get(label, 0) + 1
    lines = table(AGENT_HEADERS, [agent_row(agent, colour) for agent in agents], colour)
    if counts:
        lines += ["", "labels: " + " ".join(f"{k}={n}" for k, n in counts.items())]
    return lines


def _field(key: str, value: str) -> str:
    return joined(f"{key + ':':<14}", value)


def _when_lines(session: dict[str, Any], now: float | None) -> list[str]:
    if session.get("closed_at"):
        reason = f": {session['close_reason']}" if session.get("close_reason") else ""
        return [_field("closed", f"{fmt_since(session['closed_at'], now)}{reason}")]
    if not session.get("expires_at"):
        return []
    expires = fmt_relative(session["expires_at"], now)
    if session.get("idle_at"):
        expires += f" (idle {fmt_relative(session['idle_at'], now)})"
    return [_field("expires", expires)]


def _host_lines(session: dict[str, Any]) -> list[str]:
    if not session.get("host"):
        return []  # an older daemon's session, or one from before hosts were kept
    return [_field("host", f"{session['host']}, fence {session.get('fence', 0)}")]


def errors_style(errors: dict[str, Any]) -> str | None:
    count, threshold = errors.get("count"), errors.get("threshold")
    if not isinstance(count, int) or count <= 0:
        return None
    return RED if isinstance(threshold, int) and count >= threshold else YELLOW


def _error_lines(errors: dict[str, Any], now: float | None, colour: bool) -> list[str]:
    """The errors counted against the threshold: yellow once there is one, red at the
    threshold; the last one, red."""
    lines = []
    if errors:
        limit = f"{errors.get('threshold', '?')} in {fmt_duration(errors.get('window'))}"
        count = f"{errors.get('count', 0)} of {limit}"
        lines.append(_field("errors", coloured(count, errors_style(errors), colour)))
    if errors.get("last"):
        last = errors["last"]
        who = f"agent {last.get('agent')}" if last.get("agent") else "an agent"
        text = f"{who}, {fmt_relative(last.get('at'), now)}: {last.get('text')}"
        lines.append(_field("last error", coloured(text, RED, colour)))
    return lines


def session_lines(
    session: dict[str, Any], now: float | None = None, colour: bool = False
) -> list[str]:
    """A session object as aligned 'key: value' lines, then its agents."""
    since = session.get("started_at") or session.get("created_at")
    people = ", ".join(fmt_person(p) for p in session.get("participants") or [])
    lines = [
        _field("session", str(session.get("name"))),
        _field("id", str(session.get("id"))),
        _field("state", fmt_state(session.get("state"), colour)),
        _field("owner", f"{fmt_person(session.get('owner'))}, since {fmt_since(since, now)}"),
        _field("participants", people or "none"),
        *_host_lines(session),
        *_when_lines(session, now),
        *_error_lines(session.get("errors") or {}, now, colour),
    ]
    for key in ("pause_reason", "template", "parent"):
        if session.get(key):
            lines.append(_field(key.replace("_", " "), str(session[key])))
    if session.get("metrics"):
        pairs = " ".join(f"{k}={fmt_value(v)}" for k, v in session["metrics"].items())
        lines.append(_field("metrics", pairs))
    agents = session.get("agents") or []
    return [*lines, "", *agent_lines(agents, colour)] if agents else lines


def status_lines(
    result: dict[str, Any], now: float | None = None, colour: bool = False
) -> list[str]:
    """`sessionc status`: the session, or 'no active session' and the daemon; orphans."""
    if result.get("session"):
        lines = session_lines(result["session"], now, colour)
    else:
        daemon = result.get("daemon") or {}
        pid, uptime = daemon.get("pid", "?"), fmt_duration(daemon.get("uptime"))
        mode = f", {daemon['mode']} mode" if daemon.get("mode") else ""
        lines = ["no active session", f"daemon: sessiond pid {pid}, up {uptime}{mode}"]
    orphans = len(result.get("orphans") or [])
    if orphans:
        noun = "process" if orphans == 1 else "processes"
        orphaned = f"{orphans} orphaned agent {noun} — run 'sessionc cleanup'"
        lines += ["", coloured(orphaned, YELLOW, colour)]
    return lines


def tree_lines(value: Any, indent: int = 0) -> list[str]:
    """Nested dicts and lists as indented 'key: value' lines (metrics)."""
    pad = "  " * indent
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = ((f"{k}:", v) for k, v in value.items())
    elif isinstance(value, list):
        items = (("-", item) for item in value)
    else:
        return [pad + fmt_value(value)]
    lines = []
    for label, item in items:
        if isinstance(item, (dict, list)) and item:
            lines += [pad + label, *tree_lines(item, indent + 1)]
        else:
            lines.append(f"{pad}{label} {'none' if item in ({}, []) else fmt_value(item)}")
    return lines


def history_lines(
    sessions: list[dict[str, Any]], now: float | None = None, colour: bool = False
) -> list[str]:
    headers = ["NAME", "ID", "STATE", "OWNER", "STARTED", "CLOSED", "REASON"]
    rows = [
        [str(s.get("name")), str(s.get("id", ""))[:8], fmt_state(s.get("state"), colour),
         str((s.get("owner") or {}).get("user") or "-"),
         fmt_clock(s.get("started_at") or s.get("created_at"), now),
         fmt_clock(s.get("closed_at"), now), str(s.get("close_reason") or "-")]
        for s in sessions
    ]  # fmt: skip
    return table(headers, rows, colour) if rows else ["no sessions yet"]


# The longest event kind, session.disconnected: `events -f` pads each kind to it, so that
# the lines that come later align with the ones before (a test holds the kinds to it).
EVENT_KIND_WIDTH = 20


def event_cells(event: dict[str, Any], colour: bool = False) -> list[str]:
    """Time, kind and message; the kind in the colour of the state it names, as
    'session.paused' in paused's and 'agent.failed' in failed's, when `colour` is on."""
    clock = fmt_clock(event.get("time"), seconds=True)
    kind = str(event.get("kind", "?"))
    painted = coloured(kind, event_style(kind), colour)
    return [clock, painted, str(event.get("message", ""))]


def event_line(event: dict[str, Any], colour: bool = False) -> str:
    """'10:34:05  session.started       session nightly started by alice' (`events -f`)."""
    clock, kind, message = map(escape, event_cells(event, colour))
    padding = " " * max(0, EVENT_KIND_WIDTH - width(kind))
    return Painted(f"{clock:<8}  {kind}{padding}  {message}".rstrip())  # each part escaped


def event_lines(events: list[dict[str, Any]], colour: bool = False) -> list[str]:
    """`events`: time, kind and message in columns as wide as their widest cell."""
    return columns(event_cells(event, colour) for event in events)


def health_lines(health: dict[str, Any], colour: bool = False) -> list[str]:
    steps = [f"  - {step}" for step in health.get("recovery") or []]
    status = fmt_state(health.get("status"), colour)
    return [joined(status, f": {health.get('message', '')}")] + (
        ["to recover:", *steps] if steps else []
    )
