"""Agent, log and metrics handlers of the method table (methods.py).

Same conventions as handlers.py: params by name, one call of `ctx.app`, the
wire form out, only DomainErrors raised; `async` only where the call waits
(for a stop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessiond.wire.handlers import check_lines

if TYPE_CHECKING:
    from sessiond.wire.context import Ctx


def agent_list(ctx: Ctx) -> Any:
    """The live session's agents with pid, state, uptime, CPU, memory and restarts.

    {"method": "agent.list"} — sessionc agents"""
    return ctx.app.agent_list()


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
    return ctx.app.agent_run(
        ctx.peer, command=command, name=name, cwd=cwd, env=env, restart=restart,
        labels=labels or [], needs_network=needs_network,
    )  # fmt: skip


def agent_start(ctx: Ctx, name: str) -> Any:
    """Start a stopped, exited or failed agent afresh.

    {"method": "agent.start", "params": {"name": "scanner"}} — sessionc agent start scanner"""
    return ctx.app.agent_start(name)


async def agent_stop(ctx: Ctx, name: str) -> Any:
    """Stop an agent (SIGTERM, SIGKILL after stop_timeout); it stays stopped.

    {"method": "agent.stop", "params": {"name": "scanner"}} — sessionc agent stop scanner"""
    return await ctx.app.agent_stop(name)


async def agent_restart(ctx: Ctx, name: str) -> Any:
    """Stop an agent, then start it afresh.

    {"method": "agent.restart", "params": {"name": "scanner"}} — sessionc agent restart scanner"""
    return await ctx.app.agent_restart(name)


def agent_kill(ctx: Ctx, name: str, signal: Any = None) -> Any:
    """Send a signal (default TERM) to an agent's process group.

    {"method": "agent.kill", "params": {"name": "scanner", "signal": "HUP"}}
    — sessionc agent kill scanner --signal HUP"""
    return ctx.app.agent_kill(name, signal)


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
    ctx.app.report(token, metrics, error, activity)
    return {}


def agent_checkpoint(ctx: Ctx, token: str, data: Any) -> Any:
    """From an agent: store a JSON value (≤ 64 KiB) as its latest checkpoint.

    {"method": "agent.checkpoint", "params": {"token": "…", "data": {"cursor": 42}}}
    — sessionc report --checkpoint state.json"""
    return {"seq": ctx.app.checkpoint(token, data)}


def logs_tail(ctx: Ctx, agent: str, lines: int = 50) -> Any:
    """The last lines an agent wrote to stdout and stderr.

    {"method": "logs.tail", "params": {"agent": "scanner", "lines": 20}} — sessionc logs scanner"""
    check_lines(lines)
    return ctx.app.logs(agent, lines)


def metrics_get(ctx: Ctx) -> Any:
    """Sessions by state, errors, restarts, reported counters, per-agent CPU and memory.

    {"method": "metrics.get"} — sessionc metrics [--prometheus]"""
    return ctx.app.metrics()
