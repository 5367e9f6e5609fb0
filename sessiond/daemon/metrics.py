"""metrics.get: one health report, as JSON and as Prometheus text exposition.

The text follows the exposition format 0.0.4 and promtool's lint: one HELP and
one TYPE per family, counters named `_total`, base units (`_seconds`,
`_bytes`), every value written exactly (an int as its digits, a float as the
shortest text that reads back the same: never `{:g}`, which rounds 1564672 to
1.56467e+06). A figure that belongs to a session carries `session` (its name)
and `session_id`: names come back every night, ids never do, so a counter of
tomorrow's `nightly` is a new series instead of a fall. Counters never fall
while the daemon runs: `agent_restarts_total` is the agent record's `restarts`
(every automatic restart of that agent in that session, stored, never reset by
a fresh start), `agent_cpu_seconds_total` adds up every run of the agent
(supervisor.facts), `reported_total` only grows (SPEC §3.1).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sessiond import __version__
from sessiond.core.session import State

if TYPE_CHECKING:
    from sessiond.daemon.sessions import Sessions

AGENT_FIGURES = ("name", "state", "pid", "cpu_percent", "cpu_seconds", "rss", "restarts", "labels")


def report(sessions: Sessions) -> dict[str, Any]:
    live = sessions.live
    by_state = {s.value: 0 for s in State} | sessions.store.count_by_state()
    agents = sessions.fleet.wire(live) if live else []
    session = {"name": live.name, "id": live.id, "state": live.state.value} if live else None
    found = {
        "version": __version__,
        "sessions": by_state,
        "session": session,
        "errors": live.error_count(sessions.clock.wall()) if live else 0,
        "restarts": sum(a["restarts"] for a in agents),
        "counters": dict(live.metrics) if live else {},
        "agents": [{k: a.get(k) for k in AGENT_FIGURES} for a in agents],
    }
    found["prometheus"] = prometheus(found)
    return found


def number(value: float) -> str:
    """A sample value, exactly: 1564672, 0.025, 1e+300; NaN and ±Inf as Prometheus spells them."""
    if isinstance(value, int):  # bool too: 1 or 0
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(text: str, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _labels(**pairs: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v, True)}"' for k, v in pairs.items()) + "}"


def _family(name: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> list[str]:
    head = [f"# HELP sessiond_{name} {_escape(help_text, False)}", f"# TYPE sessiond_{name} {kind}"]
    return head + [f"sessiond_{name}{where} {number(value)}" for where, value in rows]


def prometheus(found: dict[str, Any]) -> str:
    live = found["session"]
    of = {"session": live["name"], "session_id": live["id"]} if live else {}
    agents = found["agents"] if live else []
    running = [a for a in agents if a["pid"] is not None]
    lines = [
        *_family("build_info", "gauge", "The sessiond version, as a label; always 1.",
                 [(_labels(version=found["version"]), 1)]),
        *_family("sessions", "gauge", "Sessions in the store by state.",
                 [(_labels(state=s), n) for s, n in found["sessions"].items()]),
        *_family("session_errors", "gauge", "Errors counted in the live session's window.",
                 [(_labels(**of), found["errors"])] if live else []),
        *_family("reported_total", "counter", "Counters reported by agents (agent.report).",
                 [(_labels(**of, name=k), v) for k, v in found["counters"].items()]),
        *_family("agent_restarts_total", "counter",
                 "Automatic restarts of each agent of the live session.",
                 [(_labels(**of, agent=a["name"]), a["restarts"]) for a in agents]),
        *_family("agent_cpu_seconds_total", "counter",
                 "CPU time (user and system) of each agent, over all its runs in the session.",
                 [(_labels(**of, agent=a["name"]), a["cpu_seconds"] or 0) for a in agents]),
        *_family("agent_rss_bytes", "gauge", "Resident memory of each running agent.",
                 [(_labels(**of, agent=a["name"]), a["rss"]) for a in running
                  if a["rss"] is not None]),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"
