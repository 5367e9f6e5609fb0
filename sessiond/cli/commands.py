"""sessionc's command line, declared once: every command, its options, their values.

COMMANDS maps each command to a `Command`: the help that `sessionc --help`
lists (none for the hidden helper) and its arguments as argparse specs, made
by `arg()`. GLOBAL_OPTIONS are the options of every command. The parser
(argv.py), the completion scripts (completion.py) and the manual's tests read
these tables; what a command does with its arguments is main.ACTIONS'.

An option's value is checked by a small function that raises ValueError with
the whole message ("-1m is not a duration like 90s, 5m, 1h30m: a duration is
never negative"), made an argparse type by `_argtype`. Durations follow the
daemon's grammar, core.units', imported when one is read: its regexes would
cost `sessionc status` 2 ms.

Plain data and pure functions, on the standard library only: every sessionc
start imports this module.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # typing would cost every sessionc start milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    ArgSpec = tuple[tuple[str, ...], dict[str, Any]]

# core.settings.SESSION_KEYS, in its order: what `start --set KEY=VALUE` may set. settings.py
# is too heavy for sessionc to import (dataclasses); a test keeps the two in step.
SESSION_SET_KEYS = ("timeout", "idle_after", "error_threshold", "error_window", "max_agents",
                    "max_duration", "stop_at")  # fmt: skip
# start's params that are not settings, and what to give instead of `--set KEY=…`
RESERVED_SET_KEYS = {"name": "start [NAME]", "template": "--template T", "from": "--from OLD",
                     "wait": "--wait[=D]", "tty": "nothing: sessionc sends it"}  # fmt: skip
_DURATION_FORMS = "90s, 5m, 1h30m"
MIN_INTERVAL = 0.1  # seconds between two statuses of `status --watch`, at least
WATCH_INTERVAL = 2.0  # and without SECONDS, as watch(1)
_HHMM = r"([01]?\d|2[0-3]):[0-5]\d"


def close_match(word: str, words: Iterable[str]) -> str | None:
    """The word of `words` most like `word`, if one is close: 'stauts' → 'status'."""
    import difflib  # noqa: PLC0415 -- only a mistyped word needs it

    found = difflib.get_close_matches(word, list(words), n=1)
    return found[0] if found else None


# ---------------------------------------------------------------- values


def parse_duration(text: str) -> float:
    """'90s', '5m', '1h30m', '2d' or plain seconds ('90', '1.5') → seconds; never negative."""
    from sessiond.core import units  # noqa: PLC0415 -- 2 ms that `sessionc status` need not pay

    text = text.strip()
    try:
        return units.parse_duration(text)
    except ValueError:
        pass
    shown = f"{text or repr(text)} is not a duration like {_DURATION_FORMS}"
    if _well_formed(text):
        raise ValueError(f"{shown}: too long")
    if text.startswith("-") and _well_formed(text[1:].strip()):
        raise ValueError(f"{shown}: a duration is never negative")
    raise ValueError(f"{shown} or plain seconds")


def _well_formed(text: str) -> bool:
    """Whether `text` follows the grammar of durations, however long: '9'*400 does.

    Each number made 1 keeps the form ('123.45h' → '1.1h') and can no longer overflow.
    """
    from sessiond.core import units  # noqa: PLC0415 -- loaded by parse_duration

    try:
        units.parse_duration(re.sub("[0-9]+", "1", text))
    except ValueError:
        return False
    return True


def _argtype(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a function that raises ValueError with a full message."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except ValueError as exc:
            import argparse  # noqa: PLC0415 -- loaded by argv.build_parser

            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = check.__name__  # argparse names the type in some messages
    return convert


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"expected a whole number of at least 1 (got {text!r})")
    return int(text)


def _hhmm(text: str) -> str:
    if not re.fullmatch(_HHMM, text):
        raise ValueError(f"expected a time of day as HH:MM (got {text!r})")
    return text


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE (got {text!r})")
    return key.strip(), value


def _setting(text: str) -> tuple[str, str]:
    key, value = _pair(text)
    key = key.replace("-", "_")  # --set idle-after=2m, like the option
    if key in RESERVED_SET_KEYS:
        raise ValueError(f"{key} is not a [session] key: give {RESERVED_SET_KEYS[key]}")
    if key not in SESSION_SET_KEYS:
        guess = close_match(key, SESSION_SET_KEYS)
        maybe = f"; did you mean {guess}?" if guess else ""
        keys = ", ".join(SESSION_SET_KEYS)
        raise ValueError(f"{key} is not a [session] key{maybe} (the keys: {keys})")
    return key, value


def _metric(text: str) -> tuple[str, int | float]:
    key, value = _pair(text)
    try:
        return key, int(value) if value.strip().lstrip("-").isdigit() else float(value)
    except ValueError:
        raise ValueError(f"metric {key!r} must be a number (got {value!r})") from None


def _wait(text: str) -> float | bool:
    return True if text == "" else parse_duration(text)


def _interval(text: str) -> float:
    seconds = parse_duration(text)
    if seconds < MIN_INTERVAL:  # watch(1)'s floor: less would keep the daemon busy answering
        raise ValueError(f"expected an interval of at least {MIN_INTERVAL:g}s (got {text!r})")
    return seconds


# ---------------------------------------------------------------- the command table


def arg(*flags: str, **options: Any) -> ArgSpec:
    return flags, options


class Command:
    """One row of the command table: the help `sessionc --help` lists, the argparse specs.

    `one_of` are args of `args` of which exactly one must be given (argparse's required
    mutually exclusive group): `agent restart NAME` or `agent restart --label L`.
    """

    __slots__ = ("args", "help", "one_of")

    def __init__(
        self, help: str, args: tuple[ArgSpec, ...] = (), one_of: tuple[ArgSpec, ...] = ()
    ) -> None:
        self.help, self.args, self.one_of = help, args, one_of


NAME = arg("name", metavar="NAME", nargs="?")
DURATION = {"metavar": "D", "type": _argtype(parse_duration)}
WAIT_TYPE = _argtype(_wait)
INTERVAL_TYPE = _argtype(_interval)
COUNT = {"metavar": "N", "type": _argtype(_count)}
AGENT_OR_ALL = arg("name", metavar="NAME", nargs="?", help="the agent, or 'all' of them")
LABEL = arg("--label", metavar="L", help="the agents with label L, instead of NAME")
LABEL_ONLY = arg("--label", metavar="L", help="only the agents with label L")
FOLLOW = arg("-f", "--follow", action="store_true", help="then print new ones until Ctrl-C")
GLOBAL_OPTIONS = (
    arg("--socket", metavar="PATH", default=None,
        help="the daemon's socket (default: $SESSIOND_SOCKET, the system one, the user one)"),
    arg("--json", action="store_true", default=False, help="print the result as JSON"),
    arg("--rpc-timeout", metavar="SECONDS", type=DURATION["type"], default=30.0,
        help="give up on a reply after this long; 0 = never (default 30)"),
    arg("--no-color", action="store_true", default=False,
        help="no colour, even on a terminal (as with $NO_COLOR set)"),
)  # fmt: skip
COMMANDS: dict[str, Command] = {
    "status": Command("show the live session, its agents and the daemon", (
        arg("--watch", metavar="SECONDS", nargs="?", const=WATCH_INTERVAL, type=INTERVAL_TYPE,
            help="show it again every SECONDS (default 2) until Ctrl-C"),)),
    "top": Command("a live full-screen view of the session and its agents (q quits)",
                   (arg("--once", action="store_true", help="print one frame and exit"),)),
    "start": Command("start a session (take the lock)", (
        NAME, arg("--template", metavar="T", help="the agents and settings of template T"),
        arg("--timeout", help="expire after D without activity", **DURATION),
        arg("--idle-after", help="turn idle after D without activity", **DURATION),
        arg("--error-threshold", help="disconnect at N errors", **COUNT),
        arg("--max-duration", help="close after D in all", **DURATION),
        arg("--stop-at", metavar="HH:MM", type=_argtype(_hhmm), help="close at HH:MM daily"),
        arg("--set", metavar="KEY=VALUE", dest="settings", action="append",
            type=_argtype(_setting), help="any [session] key, for this session"),
        arg("--wait", metavar="D", nargs="?", const=True, type=WAIT_TYPE,
            help="queue until the lock is free (for at most D)"),
        arg("--from", metavar="OLD", dest="from_", help="continue session OLD"))),
    "join": Command("join the live session", (NAME,)),
    "leave": Command("leave the session"),
    "stop": Command("stop the session and its agents", (NAME,)),
    "pause": Command("pause the session (SIGSTOP its agents)",
                     (NAME, arg("--reason", metavar="R"))),
    "resume": Command("resume a paused session", (NAME,)),
    "reconnect": Command("start a disconnected session's agents again"),
    "touch": Command("record activity, keeping the session alive"),
    "health": Command("say whether the session is healthy and how to recover", (NAME,)),
    "run": Command("run CMD as an agent of the session", (
        arg("--name", metavar="N"),
        arg("--restart", metavar="P", choices=["on-failure", "always", "never"]),
        arg("--label", metavar="L", dest="labels", action="append"),
        arg("--needs-network", action="store_true", help="pause it while the network is down"),
        arg("cmdline", metavar="CMD [ARG...]", nargs="+", help="after '--'"))),
    "agents": Command("list the session's agents"),
    "agent": Command("start, stop, restart or kill agents: one, all, or those with a label", (
        arg("action", choices=["start", "stop", "restart", "kill"]), AGENT_OR_ALL, LABEL,
        arg("--signal", metavar="S", help="for kill: TERM, SIGKILL, 9… (default TERM)")),
        one_of=(AGENT_OR_ALL, LABEL)),
    "logs": Command("show agents' output: every agent's of the session, in time order", (
        arg("agents", metavar="AGENT", nargs="*", help="only these agents"),
        arg("--agent", metavar="A", action="append", help="only agent A (again for more)"),
        LABEL_ONLY, arg("-n", dest="lines", help="the last N lines", **COUNT),
        arg("--since", help="only the lines of the last D", **DURATION),
        arg("--no-prefix", action="store_true", help="no time and agent before each line"),
        arg("-f", "--follow", action="store_true",
            help="then print new lines, of agents started later too, until the session ends"))),
    "events": Command("show the event log",
                      (arg("-n", dest="lines", help="the last N events", **COUNT), FOLLOW)),
    "history": Command("list past sessions, newest first",
                       (arg("-n", dest="limit", help="at most N sessions", **COUNT),)),
    "show": Command("show one session, live or closed", (NAME,)),
    "export": Command("export a session with its events, metrics and checkpoints", (
        NAME, arg("-o", metavar="FILE", dest="output", help="write it to FILE"))),
    "metrics": Command("show the daemon's metrics",
                       (arg("--prometheus", action="store_true", help="as Prometheus text"),)),
    "cleanup": Command("stop the session and end orphaned agents",
                       (arg("--orphans-only", action="store_true",
                            help="only end orphaned agent processes"),)),
    "report": Command("report metrics, an error or a checkpoint, from inside an agent", (
        arg("--metric", metavar="K=V", dest="metrics", action="append", type=_argtype(_metric)),
        arg("--error", metavar="TEXT", help="counts as an error of the session"),
        arg("--checkpoint", metavar="FILE", help="store the JSON in FILE ('-': stdin)"))),
    "completion": Command("print a shell script that completes sessionc's words, to source",
                          (arg("shell", choices=["bash", "zsh"]),)),
    "__complete": Command("",  # no help: hidden; for the completion scripts
                          (arg("kind", choices=["templates", "agents", "agents-or-all",
                                                "labels", "sessions", "live"]),)),
}  # fmt: skip
