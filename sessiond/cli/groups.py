"""sessionc's calls on groups of agents: `agent ACTION all` and `agent ACTION --label L`.

A group is one RPC call (`agent.restart` with `names: "all"` or `label`),
whose result is one outcome per agent, {"name", "agent"} or {"name",
"error"} (docs/wire.md): one agent's failure does not keep the others from
acting. sessionc prints a line for each, `restarted worker-1` on stdout or
`worker-2: MESSAGE` on stderr (red on a terminal), and exits with the
status that the first agent to fail would have given alone (EXIT_CODES: 5
for AGENT_NOT_FOUND, 1 for INVALID_STATE…), or 0 if none failed. A call on
one agent (NAME) prints and exits as it always has.
"""

from __future__ import annotations

import sys

from sessiond.cli.client import RemoteError
from sessiond.cli.colour import RED, enabled
from sessiond.cli.show import coloured, escape
from sessiond.errors import EXIT_OK

TYPE_CHECKING = False  # typing would cost every sessionc start milliseconds
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    Printer = Callable[[Any, argparse.Namespace], None]

ALL = "all"  # `agent ACTION all`: every agent of the live session
DONE = {"start": "started", "stop": "stopped", "restart": "restarted", "kill": "killed"}


def group_params(args: argparse.Namespace) -> dict[str, Any]:
    """The params that name the agents: `name`, or a group's `names: "all"` or `label`."""
    if args.label is not None:
        return {"label": args.label}
    return {"names": ALL} if args.name == ALL else {"name": args.name}


def per_agent(show_one: Printer) -> Printer:
    """`show_one` for a call on one agent; for a group's outcomes, a line per agent."""

    def show(result: Any, args: argparse.Namespace) -> None:
        if not isinstance(result, list):
            return show_one(result, args)
        for outcome in result:
            name = outcome.get("name")
            if "error" in outcome:
                message = RemoteError.from_wire(outcome["error"]).message
                line = coloured(f"{name}: {message}", RED, enabled(sys.stderr, args))
                print(escape(line), file=sys.stderr)
            else:
                print(escape(f"{DONE[args.action]} {name}"))
        return None

    return show


def group_status(result: Any) -> int:
    """The exit status of the first agent of a group to fail; 0 for one agent's success."""
    failed = [o["error"] for o in result if "error" in o] if isinstance(result, list) else []
    return RemoteError.from_wire(failed[0]).exit_code if failed else EXIT_OK
