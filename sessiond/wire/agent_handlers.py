"""Agent, log and metrics handlers of the method table (rpc.py).

Same conventions as handlers.py: params by name, the wire form out, only
DomainErrors raised; `async` only where the call waits (for a stop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessiond.daemon import logs, metrics
from sessiond.daemon.crew import agent_wire
from sessiond.daemon.supervisor import Agent
from sessiond.wire.handlers import check_lines

if TYPE_CHECKING:
    from sessiond.core.records import Session
    from sessiond.wire.methods import Ctx


def _live(ctx: Ctx) -> Session:
    return ctx.daemon.manager.resolve(None)


def _agent(ctx: Ctx, agent: Agent) -> dict[str, Any]:
    return agent_wire(agent, ctx.daemon.manager.team.supervisor.facts(agent))


def agent_list(ctx: Ctx) -> Any:
    """The live session's agents with pid, state, uptime, CPU, memory and restarts.

    {"method": "agent.list"} — sessionc agents"""
    live = ctx.daemon.manager.live
    return ctx.daemon.manager.team.wire(live) if live else []


def agent_run(
    ctx: Ctx,
    *,
    command: list[Any],
    name: str | None = None,
    cwd: str | None = None,
    env: dict[str, Any] | None = None,
    restart: str | None = None,
    labels: list[Any] | None = None,
    needs_network: bool = False,
) -> Any:
    """Start an ad-hoc agent in the live session, with the caller's uid and gid.

    {"method": "agent.run", "params": {"command": ["sleep", "60"]}} — sessionc run -- sleep 60"""
    team = ctx.daemon.manager.team
    agent = team.run(
        ctx.peer,
        _live(ctx),
        command=command,
        name=name,
        cwd=cwd,
        env=env,
        restart=restart,
        labels=labels or [],
        needs_network=needs_network,
    )
    return _agent(ctx, agent)


def agent_start(ctx: Ctx, name: str) -> Any:
    """Start a stopped, exited or failed agent afresh.

    {"method": "agent.start", "params": {"name": "scanner"}} — sessionc agent start scanner"""
    return _agent(ctx, ctx.daemon.manager.team.start(_live(ctx), name))


async def agent_stop(ctx: Ctx, name: str) -> Any:
    """Stop an agent (SIGTERM, SIGKILL after stop_timeout); it stays stopped.

    {"method": "agent.stop", "params": {"name": "scanner"}} — sessionc agent stop scanner"""
    return _agent(ctx, await ctx.daemon.manager.team.stop(_live(ctx), name))


async def agent_restart(ctx: Ctx, name: str) -> Any:
    """Stop an agent, then start it afresh.

    {"method": "agent.restart", "params": {"name": "scanner"}} — sessionc agent restart scanner"""
    team = ctx.daemon.manager.team
    await team.stop(_live(ctx), name)
    return _agent(ctx, team.start(_live(ctx), name))


def agent_kill(ctx: Ctx, name: str, signal: Any = None) -> Any:
    """Send a signal (default TERM) to an agent's process group.

    {"method": "agent.kill", "params": {"name": "scanner", "signal": "HUP"}}
    — sessionc agent kill scanner --signal HUP"""
    return _agent(ctx, ctx.daemon.manager.team.kill(_live(ctx), name, signal))


def agent_report(
    ctx: Ctx,
    *,
    token: str,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
    activity: bool = False,
) -> Any:
    """From an agent: add to the session's counters, report an error, or record activity.

    {"method": "agent.report", "params": {"token": "…", "metrics": {"tokens": 10}}}
    — sessionc report --metric tokens=10"""
    ctx.daemon.manager.team.report(token, metrics, error, activity)
    return {}


def agent_checkpoint(ctx: Ctx, token: str, data: Any) -> Any:
    """From an agent: store a JSON value (≤ 64 KiB) as its latest checkpoint.

    {"method": "agent.checkpoint", "params": {"token": "…", "data": {"cursor": 42}}}
    — sessionc report --checkpoint state.json"""
    return {"seq": ctx.daemon.manager.team.checkpoint(token, data)}


def logs_tail(ctx: Ctx, agent: str, lines: int = 50) -> Any:
    """The last lines an agent wrote to stdout and stderr.

    {"method": "logs.tail", "params": {"agent": "scanner", "lines": 20}} — sessionc logs scanner"""
    check_lines(lines)
    found = ctx.daemon.manager.team.find(_live(ctx), agent)
    return {"agent": found.name, "lines": logs.tail(found.log_path, lines)}


def metrics_get(ctx: Ctx) -> Any:
    """Sessions by state, errors, restarts, reported counters, per-agent CPU and memory.

    {"method": "metrics.get"} — sessionc metrics [--prometheus]"""
    return metrics.report(ctx.daemon.manager)
