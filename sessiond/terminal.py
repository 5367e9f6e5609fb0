"""The terminal's width for argparse's help, found as shutil finds it, without shutil.

argparse's HelpFormatter imports shutil (and with it bz2 and lzma, 2 to 3 ms) for the
width each time one is made without one, and `add_argument` makes one: the daemon
and sessionc pay it at every start though neither prints help then. Both hand their
parsers `help_formatter(...)`, which gives argparse the width it would have found.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


def terminal_columns() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__  # None when Python started without one
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (ValueError, OSError):  # closed, or not a terminal
            columns = 0
    return columns or 80


def help_formatter(kind: type[argparse.HelpFormatter]) -> Callable[..., argparse.HelpFormatter]:
    """`kind` made with the width argparse would take (its columns less 2), read when made."""
    return lambda prog: kind(prog, width=terminal_columns() - 2)
