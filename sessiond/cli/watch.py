"""`sessionc status --watch [SECONDS]`: the status again and again, as watch(1) shows a command.

For terminals where curses is unwanted (`sessionc top` is the full-screen
view): on a terminal each status replaces the last, the screen cleared and
the cursor sent home as `clear` does, and cut to the screen's height so that
its head does not scroll away; into a pipe or a file the statuses follow one
another, a blank line between two. Each starts with a header line that says
how often and when. A daemon that cannot be reached is one line of the
status, and the next one tries again on a new connection; Ctrl-C ends the
watch, which is not a failure.

What is printed is escaped like all sessionc's output (show.escape).
"""

from __future__ import annotations

import os
import sys
import time

from sessiond.cli.calls import UsageError
from sessiond.cli.client import Unreachable
from sessiond.cli.colour import DIM, RED
from sessiond.cli.show import coloured, escape, status_lines, width
from sessiond.errors import SessiondError

TYPE_CHECKING = False  # typing would cost milliseconds; see main.py
if TYPE_CHECKING:
    from sessiond.cli.client import Client

HOME_AND_CLEAR = "\x1b[H\x1b[2J"  # ECMA-48 CUP and ED: what clear(1) prints
SCREEN = os.terminal_size((80, 24))  # when the terminal does not say


def watch(client: Client, interval: float, colour: bool, as_json: bool = False) -> None:
    """Show the status every `interval` seconds until Ctrl-C."""
    if as_json:
        raise UsageError("--watch shows the status to a person, not as JSON",
                         "a script can run 'sessionc --json status' when it needs one")  # fmt: skip
    terminal = sys.stdout.isatty()
    first = True
    try:
        while True:
            began = time.monotonic()
            lines = [header(interval, colour), "", *status(client, colour)]
            if terminal:
                text = HOME_AND_CLEAR + as_text(fit(lines, screen(), colour))
            else:
                text = ("" if first else "\n") + as_text(lines)
            sys.stdout.write(text)
            sys.stdout.flush()
            first = False
            time.sleep(max(0.0, interval - (time.monotonic() - began)))  # until the next is due
    except KeyboardInterrupt:
        return


def header(interval: float, colour: bool) -> str:
    """'Every 2s: sessionc status    10:34:05', like watch(1)'s."""
    return coloured(f"Every {interval:g}s: sessionc status    {time.strftime('%H:%M:%S')}",
                    DIM, colour)  # fmt: skip


def status(client: Client, colour: bool) -> list[str]:
    """The status's lines, or the one line that says why there is none this time."""
    try:
        return status_lines(client.call("session.status"), colour=colour)
    except SessiondError as exc:
        client.close()  # whatever went wrong, the next status starts on a new connection
        if isinstance(exc, Unreachable):
            return [coloured(f"daemon unreachable at {exc.path}: {exc.reason}", RED, colour)]
        return [coloured(f"sessionc: {exc.message}", RED, colour)]


def as_text(lines: list[str]) -> str:
    return "".join(escape(line) + "\n" for line in lines)


def screen() -> os.terminal_size:
    """The terminal's size; 80 columns and 24 lines for what it does not say (a new pty: 0)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return SCREEN
    return os.terminal_size((size.columns or SCREEN.columns, size.lines or SCREEN.lines))


def fit(lines: list[str], size: os.terminal_size, colour: bool) -> list[str]:
    """The lines that fit on the screen, a wrapped line taking several rows, and the last row
    left for the cursor; when some do not fit, the last line says how many."""
    room, columns = max(size.lines - 1, 1), max(size.columns, 1)
    rows = [max(1, -(-width(escape(line)) // columns)) for line in lines]
    if sum(rows) <= room:
        return lines
    kept, used = 0, 0
    while used + rows[kept] <= room - 1:
        used += rows[kept]
        kept += 1
    more = len(lines) - kept
    return [*lines[:kept], coloured(f"… {more} more lines: a taller terminal shows them",
                                    DIM, colour)]  # fmt: skip
