"""metrics.get: one health report, as JSON and as Prometheus text exposition."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .session import State

if TYPE_CHECKING:
    from .manager import Manager


def report(manager: Manager) -> dict[str, Any]:
    live = manager.live
    by_state = {s.value: 0 for s in State} | manager.store.count_by_state()
    agents = manager.team.wire(live) if live else []
    found = {
        "sessions": by_state,
        "session": None if live is None else {"name": live.name, "state": live.state.value},
        "errors": live.error_count(time.time()) if live else 0,
        "restarts": sum(a["restarts"] for a in agents),
        "counters": dict(live.metrics) if live else {},
        "agents": [
            {k: a[k] for k in ("name", "state", "pid", "cpu_percent", "rss", "restarts", "labels")}
            for a in agents
        ],
    }
    found["prometheus"] = prometheus(found)
    return found


def _series(name: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP sessiond_{name} {help_text}", f"# TYPE sessiond_{name} {kind}"]
    return lines + [f"sessiond_{name}{labels} {value:g}" for labels, value in rows]


def _label(**pairs: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs.items()
    )
    return "{" + inner + "}"


def prometheus(found: dict[str, Any]) -> str:
    session = found["session"]["name"] if found["session"] else ""
    agents = [a for a in found["agents"] if a["pid"] is not None]
    lines = [
        *_series(
            "sessions",
            "gauge",
            "Sessions in the store by state.",
            [(_label(state=s), n) for s, n in found["sessions"].items()],
        ),
        *_series(
            "session_errors",
            "gauge",
            "Errors counted in the live session's window.",
            [(_label(session=session), found["errors"])] if session else [],
        ),
        *_series(
            "agent_restarts_total",
            "counter",
            "Restarts of each agent of the live session.",
            [(_label(agent=a["name"]), a["restarts"]) for a in found["agents"]],
        ),
        *_series(
            "reported_total",
            "counter",
            "Counters reported by agents (agent.report).",
            [(_label(name=k), v) for k, v in found["counters"].items()],
        ),
        *_series(
            "agent_cpu_percent",
            "gauge",
            "CPU use of each running agent since the last ask.",
            [(_label(agent=a["name"]), a["cpu_percent"] or 0) for a in agents],
        ),
        *_series(
            "agent_rss_bytes",
            "gauge",
            "Resident memory of each running agent.",
            [(_label(agent=a["name"]), a["rss"] or 0) for a in agents],
        ),
    ]
    return "\n".join(lines) + "\n"
