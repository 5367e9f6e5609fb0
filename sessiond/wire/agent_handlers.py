"""Agent, log and metrics handlers of the method table (methods.py).

Same conventions as handlers.py: params by name, one call of `ctx.app`, the
wire form out, only DomainErrors raised; `async` only where the call waits
(for a stop). The calls on agents act on one (`name`) or on a group (`names`,
or `label`): a group's result is one outcome per agent, its agent or its
error, so that one agent's failure does not keep the others from acting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessiond.errors import InvalidParams
from sessiond.wire.handlers import check_lines, time_param

if TYPE_CHECKING:
    from sessiond.wire.context import Ctx

GROUP_HINT = 'name one agent with "name", several with "names" (a list, or "all"), or "label"'


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


def single(name: str | None, names: Any, label: str | None, one: str = "name") -> str | None:
    """`name` (the param `one`) for a call on one agent; None for one on a group, whose
    params are checked."""
    given = [f"'{key}'" for key, value in ((one, name), ("names", names), ("label", label))
             if value is not None]  # fmt: skip
    if len(given) != 1:
        but = f", not {' and '.join(given)}" if given else ""
        raise InvalidParams(f"give exactly one of the params '{one}', 'names' and 'label'{but}",
                            GROUP_HINT.replace('"name"', f'"{one}"'))  # fmt: skip
    listed = isinstance(names, list) and bool(names) and all(isinstance(n, str) for n in names)
    if names is not None and names != "all" and not listed:
        raise InvalidParams("param 'names' must be \"all\" or a list of agent names", GROUP_HINT)
    return name


def agent_start(
    ctx: Ctx, name: str | None = None, names: Any = None, label: str | None = None
) -> Any:
    """Start a stopped, exited or failed agent afresh, or each of a group.

    {"method": "agent.start", "params": {"name": "scanner"}} — sessionc agent start scanner"""
    if (one := single(name, names, label)) is not None:
        return ctx.app.agent_start(one)
    return ctx.app.each(names, label, ctx.app.agent_start)


async def agent_stop(
    ctx: Ctx, name: str | None = None, names: Any = None, label: str | None = None
) -> Any:
    """Stop an agent (SIGTERM, SIGKILL after stop_timeout), or a group; they stay stopped.

    {"method": "agent.stop", "params": {"names": "all"}} — sessionc agent stop all"""
    if (one := single(name, names, label)) is not None:
        return await ctx.app.agent_stop(one)
    return await ctx.app.each_at_once(names, label, ctx.app.agent_stop)


async def agent_restart(
    ctx: Ctx, name: str | None = None, names: Any = None, label: str | None = None
) -> Any:
    """Stop an agent, or a group, then start it afresh.

    {"method": "agent.restart", "params": {"label": "scan"}}
    — sessionc agent restart --label scan"""
    if (one := single(name, names, label)) is not None:
        return await ctx.app.agent_restart(one)
    return await ctx.app.each_at_once(names, label, ctx.app.agent_restart)


def agent_kill(
    ctx: Ctx, name: str | None = None, names: Any = None, label: str | None = None,
    signal: Any = None,
) -> Any:  # fmt: skip
    """Send a signal (default TERM) to an agent's process group, or to each of a group's.

    {"method": "agent.kill", "params": {"name": "scanner", "signal": "HUP"}}
    — sessionc agent kill scanner --signal HUP"""
    if (one := single(name, names, label)) is not None:
        return ctx.app.agent_kill(one, signal)
    return ctx.app.kill_each(names, label, signal)


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


def logs_tail(
    ctx: Ctx, *, agent: str | None = None, names: Any = None, label: str | None = None,
    lines: int = 50, since: str | None = None,
) -> Any:  # fmt: skip
    """The last lines an agent wrote to stdout and stderr; or a group's (names, label) or
    every agent's of the session (none of the three), merged in time order.

    {"method": "logs.tail", "params": {"agent": "scanner", "lines": 20}} — sessionc logs scanner
    {"method": "logs.tail", "params": {"since": "2026-12-02T10:00:00Z"}} — logs --since 2h"""
    check_lines(lines)
    if agent is not None or names is not None or label is not None:
        single(agent, names, label, one="agent")  # one of the three, well formed
    return ctx.app.logs(agent, names, label, lines, time_param("since", since))


def metrics_get(ctx: Ctx) -> Any:
    """Sessions by state, errors, restarts, reported counters, per-agent CPU and memory.

    {"method": "metrics.get"} — sessionc metrics [--prometheus]"""
    return ctx.app.metrics()
