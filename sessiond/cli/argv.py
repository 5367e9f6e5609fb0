"""sessionc's command line read into a Namespace, from the tables of commands.py.

`sessionc status` must start fast. So a command line of global options and a
command without arguments of its own (`sessionc status --json`) is read
without argparse, by `parse_plain`; for any other, `build_parser` builds the
argparse subparser of the one command given (`command_word`), and the whole
tree only for help, no command or an unknown one. argparse is imported where it
is used. `rewrite_argv` first puts duration options in the form argparse reads
as meant.
"""

from __future__ import annotations

import re

from sessiond import __version__
from sessiond.cli.commands import (
    COMMANDS,
    DURATION,
    GLOBAL_OPTIONS,
    INTERVAL_TYPE,
    WAIT_TYPE,
    close_match,
    parse_duration,
)
from sessiond.terminal import help_formatter

TYPE_CHECKING = False  # typing would cost every sessionc start milliseconds
if TYPE_CHECKING:
    import argparse
    from argparse import Namespace
    from collections.abc import Iterable
    from typing import Any
else:
    from types import SimpleNamespace as Namespace  # argparse.Namespace for parse_plain, cheaply

EPILOG = """\
exit status: 0 ok, 1 other failure, 2 usage, 3 daemon unreachable,
  4 session active, mismatch or on another host, 5 no session or agent not found,
  6 permission denied or bad token, 7 wait timed out, 8 cluster unavailable,
  130 interrupted;
  health: 0 healthy, 5 not found, 1 otherwise.
--json prints one JSON document on stdout, {"error": {...}} on failure;
  'events -f' and 'logs -f' print one JSON value per line."""
GLOBAL_FLAGS = {"--json": 0, "--socket": 1, "--rpc-timeout": 1, "--no-color": 0, "--version": 0}


def rewrite_argv(argv: list[str]) -> list[str]:
    """The command line as argparse must see it for the duration options to read as meant.

    A value that starts with '-' is joined to its option (`--timeout -1m` → `--timeout=-1m`):
    argparse would take it for an option and say "expected one argument"; the duration check
    then says what is wrong with it. A bare `--wait` becomes `--wait=` (no limit), so that
    `start --wait NAME` keeps NAME; `--wait 90s` keeps its duration. Only the part before `--`
    is touched: what follows is an agent's command line.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    head: list[str] = []
    flags = duration_flags()
    for arg in argv[:end]:
        if head and head[-1] in flags and re.match(r"-[\d.]", arg):
            head[-1] = f"{head[-1]}={arg}"
        else:
            head.append(arg)
    head = [
        "--wait=" if arg == "--wait" and not _is_duration(head[i + 1 :][:1]) else arg
        for i, arg in enumerate(head)
    ]
    return head + argv[end:]


def duration_flags() -> set[str]:
    """The options whose value is a duration, of any command: --timeout, --wait…"""
    specs = [*GLOBAL_OPTIONS, *(spec for command in COMMANDS.values() for spec in command.args)]
    durations = (DURATION["type"], WAIT_TYPE, INTERVAL_TYPE)
    return {flag for flags, options in specs if options.get("type") in durations for flag in flags}


def _is_duration(words: list[str]) -> bool:
    try:
        return bool(words) and parse_duration(words[0]) >= 0
    except ValueError:
        return False


def command_word(argv: list[str]) -> str | None:
    """The command argparse will find in argv, if it is one of COMMANDS; else None.

    Only the global options may come before it. Anything else there (-h, --help,
    `--`, an unknown option) gives None, and so the whole parser tree.
    """
    i = 0
    while i < len(argv):
        word = argv[i]
        flag = word.partition("=")[0] if word.startswith("--") else word
        if flag not in GLOBAL_FLAGS or (flag != word and not GLOBAL_FLAGS[flag]):
            return word if word in COMMANDS else None
        i += 1 + (GLOBAL_FLAGS[flag] if flag == word else 0)
    return None


def parse_plain(argv: list[str]) -> Namespace | None:
    """What argparse makes of `[OPTION...] COMMAND [OPTION...]`, without argparse.

    COMMAND is given none of its own arguments, and has no positional one
    (`status`, `agents`, `history`…), and each OPTION is --json, --no-color,
    --socket or --rpc-timeout. For anything else, and for values that look like
    options or are not durations, None: argparse parses those, and says what is
    wrong.
    """
    values: dict[str, Any] = {"command": None, "socket": None, "json": False,
                              "rpc_timeout": 30.0, "no_color": False}  # fmt: skip
    words = iter(argv)
    for word in words:
        flag, equals, value = word.partition("=")
        if word in ("--json", "--no-color"):
            values[word[2:].replace("-", "_")] = True
        elif flag in ("--socket", "--rpc-timeout"):
            value = value if equals else next(words, "-")
            if value.startswith("-") and not equals:
                return None
            try:
                values[flag[2:].replace("-", "_")] = (
                    parse_duration(value) if flag == "--rpc-timeout" else value
                )
            except ValueError:
                return None
        elif values["command"] is None and word in COMMANDS:
            own = plain_defaults(word)
            if own is None:
                return None
            values.update(command=word, **own)
        else:
            return None
    return Namespace(**values) if values["command"] else None


def plain_defaults(command: str) -> dict[str, Any] | None:
    """The values argparse gives `command`'s own options when none is given (`status`:
    {"watch": None}); None for a command with a positional argument, which argparse reads."""
    values = {}
    for flags, options in COMMANDS[command].args:
        if not flags[0].startswith("-"):
            return None
        name = next((flag for flag in flags if flag.startswith("--")), flags[0])
        dest = options.get("dest") or name.lstrip("-").replace("-", "_")
        switch = options.get("action") == "store_true"
        values[dest] = options.get("default", False if switch else None)
    return values


def choice_error(value: str, choices: Iterable[str]) -> str:
    """argparse's message for a word not among `choices`, with the closest one, if any, and
    without the hidden commands: "invalid choice: 'stauts'; did you mean 'status'? (choose…)"."""
    hidden = {name for name, command in COMMANDS.items() if not command.help}
    shown = [str(choice) for choice in choices if choice not in hidden]
    guess = close_match(value, shown)
    maybe = f"; did you mean {guess!r}?" if guess else ""
    return f"invalid choice: {value!r}{maybe} (choose from {', '.join(map(repr, shown))})"


def parser_class() -> type[argparse.ArgumentParser]:
    """argparse's parser, whose message for a bad choice is choice_error()'s."""
    import argparse  # noqa: PLC0415 -- parse_plain does without

    class Parser(argparse.ArgumentParser):
        def _check_value(self, action: argparse.Action, value: Any) -> None:
            # argparse's one check of `choices`, for commands too (the same from 3.11 to 3.14)
            if action.choices is not None and value not in action.choices:
                raise argparse.ArgumentError(action, choice_error(str(value), action.choices))

    return Parser


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Global options work before and after the command: `sessionc status --json`.

    With `command`, only its subparser is built, which is all that parsing a
    command line whose command_word() it is needs: a few ms less at every start.
    The top level's usage and help (`sessionc -h`, `sessionc COMMAND -h`) do not
    change, as the usage names COMMAND, not the choices.
    """
    import argparse  # noqa: PLC0415 -- parse_plain does without

    parser = parser_class()(
        prog="sessionc",
        description="Talk to sessiond, the daemon that owns this machine's session lock.",
        epilog=EPILOG,
        formatter_class=help_formatter(argparse.RawDescriptionHelpFormatter),
        allow_abbrev=False,  # `--wai` must not turn into `--wait`
    )
    common = argparse.ArgumentParser(
        add_help=False, formatter_class=help_formatter(argparse.HelpFormatter)
    )
    for flags, options in GLOBAL_OPTIONS:
        parser.add_argument(*flags, **options)
        common.add_argument(*flags, **{**options, "default": argparse.SUPPRESS})
    parser.add_argument("--version", action="version", version=f"sessionc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if command is None else [command]:
        listed: dict[str, Any] = {"help": COMMANDS[name].help} if COMMANDS[name].help else {}
        p = sub.add_parser(name, **listed, description=COMMANDS[name].help,
                           parents=[common], formatter_class=common.formatter_class,
                           allow_abbrev=False)  # fmt: skip
        one_of = p.add_mutually_exclusive_group(required=True) if COMMANDS[name].one_of else p
        for spec in COMMANDS[name].args:
            flags, options = spec
            (one_of if spec in COMMANDS[name].one_of else p).add_argument(*flags, **options)
    return parser
