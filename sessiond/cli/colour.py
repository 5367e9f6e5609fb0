"""Colour on a terminal: whether sessionc colours a stream (`enabled`), and how (`paint`).

Colour is for a person at a terminal: never into a pipe or a file, never when
the user said no (`--no-color`, or NO_COLOR set to anything, per no-color.org),
and not on a terminal that says it cannot (TERM=dumb). States read alike
wherever they are shown (STATE_STYLES): green is running as it should, yellow
is waiting or halted, red is broken, dim is over or secondary.

A colour code is never put around text from the daemon as it came: `paint`
takes text that show.escape has escaped already, and returns it as `Painted`,
which escape passes as it is. So sessionc's own codes are the only ones that
reach the terminal. Like every module that `sessionc status` loads, this one
imports only the standard library.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing would cost every sessionc start milliseconds
if TYPE_CHECKING:
    from typing import IO, Any

SGR = {"green": "32", "yellow": "33", "red": "31", "dim": "2", "bold": "1",
       "cyan": "36", "magenta": "35", "blue": "34"}  # ECMA-48 graphic renditions  # fmt: skip
RESET = "\x1b[0m"
GREEN, YELLOW, RED, DIM, BOLD = "green", "yellow", "red", "dim", "bold"
NAME_STYLES = ("cyan", "magenta", "yellow", "green", "blue")  # one for each agent, in turn
# The states of sessions and agents (docs/wire.md) and of `health`, by how they look
STATE_STYLES = {
    **dict.fromkeys(("active", "running", "healthy"), GREEN),
    **dict.fromkeys(("starting", "idle", "paused", "suspended", "stopping", "stopped",
                     "backoff", "exited", "not_found"), YELLOW),
    **dict.fromkeys(("failed", "disconnected", "error"), RED),
    **dict.fromkeys(("closed", "expired"), DIM),
}  # fmt: skip


class Painted(str):
    """Text that is safe to print as it is: escaped, with sessionc's colour codes around parts.

    Only `paint` and show's joining of escaped parts make one.
    """

    __slots__ = ()


def enabled(stream: IO[str], args: Any) -> bool:
    """Whether to colour what sessionc writes to `stream` (sys.stdout or sys.stderr)."""
    if getattr(args, "no_color", False) or os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # not a file, or closed
        return False


def paint(escaped: str, style: str) -> Painted:
    """`escaped` (show.escape's output, never raw text) in `style`, one of SGR's."""
    return Painted(f"\x1b[{SGR[style]}m{escaped}{RESET}")


# The kinds of events (docs/wire.md) that name no state, by the last word: as the states look
EVENT_STYLES = {
    **dict.fromkeys(("started", "resumed", "reconnected", "adopted", "up"), GREEN),
    **dict.fromkeys(("restarting", "unwatched"), YELLOW),
    "down": RED,
}


def event_style(kind: str) -> str | None:
    """'session.paused' in paused's colour, 'network.down' in red; None for one not known."""
    last = kind.rpartition(".")[2]
    return state_style(last) or EVENT_STYLES.get(last)


def state_style(state: object) -> str | None:
    """The style of a session's, agent's or health's state; None for one not known."""
    return STATE_STYLES.get(state) if isinstance(state, str) else None
