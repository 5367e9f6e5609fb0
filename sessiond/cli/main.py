"""sessionc: the command-line client of sessiond (SPEC §7).

Every command is declared once, in COMMANDS: its help, its arguments, a
handler that makes the RPC calls and returns the raw result, a printer that
shows the result to a person, and (for `health`) how the result maps to an exit
status. `--json` replaces the printer with one JSON document. Handlers do not
print, except the `-f` followers, which stream until Ctrl-C or the daemon
leaves. What the printers show comes from show.py's pure `*_lines` and `fmt_*`
helpers, which turn wire objects (docs/wire.md) into text. Every line of text
leaves through `say`, which escapes control characters (show.escape): no name,
reason, tty or log line from the daemon drives the terminal. `--json` prints
json.dumps, whose ASCII output escapes them already, and keeps every byte.

This module imports only the standard library and sessiond's stdlib-only
modules (errors, paths, client, show): `sessionc status` must start fast. So a
command line of global options and a command without arguments of its own
(`sessionc status --json`) is read without argparse; for any other, `main`
builds the argparse subparser of the one command given (the whole tree only
for help, no command or an unknown one); and what only some commands need
(argparse, datetime, signal) is imported where it is used.
"""

from __future__ import annotations

import json
import os
import re
import sys

from sessiond import __version__
from sessiond.cli.client import Client, RemoteError
from sessiond.cli.show import (
    UNIT_SECONDS,
    agent_lines,
    escape,
    event_line,
    event_lines,
    fmt_relative,
    health_lines,
    history_lines,
    log_line,
    session_lines,
    status_lines,
    tree_lines,
)
from sessiond.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, NoSession, SessiondError
from sessiond.paths import client_socket

TYPE_CHECKING = False  # typing and dataclasses would cost every sessionc start ~15 ms
if TYPE_CHECKING:
    import argparse
    from argparse import Namespace
    from collections.abc import Callable, Iterable
    from typing import IO, Any

    Handler = Callable[[Client, argparse.Namespace], Any]
    Printer = Callable[[Any, argparse.Namespace], None]
    ArgSpec = tuple[tuple[str, ...], dict[str, Any]]
else:
    from types import SimpleNamespace as Namespace  # argparse.Namespace for parse_plain, cheaply

STREAMED = object()  # returned by a follower, which printed everything itself
EXIT_INTERRUPTED = 130
EXIT_NOT_FOUND = 5
# config.SESSION_KEYS, in its order: what `start --set KEY=VALUE` may set. config.py is too
# heavy for sessionc to import (dataclasses, pathlib, tomllib); a test keeps the two in step.
SESSION_SET_KEYS = ("timeout", "idle_after", "error_threshold", "error_window", "max_agents",
                    "max_duration", "stop_at")  # fmt: skip
# start's params that are not settings, and what to give instead of `--set KEY=…`
RESERVED_SET_KEYS = {"name": "start [NAME]", "template": "--template T", "from": "--from OLD",
                     "wait": "--wait[=D]", "tty": "nothing: sessionc sends it"}  # fmt: skip
_NUMBER = r"(\d+(?:\.\d+)?)"
# The config's grammar (config._DURATION_RE), spaces between parts included: "1h 30m".
_DURATION = r"\s*".join(f"(?:{_NUMBER}{unit})?" for unit in "dhms")  # re's cache compiles
_DURATION_FORMS = "90s, 5m, 1h30m"
_HHMM = r"([01]?\d|2[0-3]):[0-5]\d"
# The first 8 hex digits of a session's id, as `history` shows it, or more of it.
_ID_PREFIX = r"[0-9a-f]{8}[0-9a-f-]{0,27}"
PREFIX_SEARCH = 1000  # sessions searched for an id prefix: all that `history -n 1000` can show


class UsageError(SessiondError):
    exit_code = EXIT_USAGE


class NotFound(SessiondError):
    exit_code = EXIT_NOT_FOUND


def close_match(word: str, words: Iterable[str]) -> str | None:
    """The word of `words` most like `word`, if one is close: 'stauts' → 'status'."""
    import difflib  # noqa: PLC0415 -- only a mistyped word needs it

    found = difflib.get_close_matches(word, list(words), n=1)
    return found[0] if found else None


# ---------------------------------------------------------------- parsing


def parse_duration(text: str) -> float:
    """'90s', '5m', '1h30m', '2d' or plain seconds ('90', '1.5') → seconds; never negative."""
    text = text.strip()
    seconds = _seconds(text)
    if seconds is not None and seconds < float("inf"):
        return seconds
    shown = f"{text or repr(text)} is not a duration like {_DURATION_FORMS}"
    if seconds is not None:
        raise ValueError(f"{shown}: too long")
    if text.startswith("-") and _seconds(text[1:].strip()) is not None:
        raise ValueError(f"{shown}: a duration is never negative")
    raise ValueError(f"{shown} or plain seconds")


def _seconds(text: str) -> float | None:
    """The seconds in a duration as the config writes it; None if it is not one."""
    if re.fullmatch(_NUMBER, text):
        return float(text)
    match = re.fullmatch(_DURATION, text)
    if not text or match is None:
        return None
    return sum(float(n) * unit for n, unit in zip(match.groups(), UNIT_SECONDS, strict=True) if n)


def _argtype(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a function that raises ValueError with a full message."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except ValueError as exc:
            import argparse  # noqa: PLC0415 -- loaded by build_parser

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
    durations = (DURATION["type"], WAIT_TYPE)
    return {flag for flags, options in specs if options.get("type") in durations for flag in flags}


def _is_duration(words: list[str]) -> bool:
    try:
        return bool(words) and parse_duration(words[0]) >= 0
    except ValueError:
        return False


# ---------------------------------------------------------------- printers


def say(line: str, file: IO[str] | None = None, flush: bool = False) -> None:
    """Print one line of text output (stdout by default), its control characters escaped."""
    print(escape(line), file=file, flush=flush)


def echo(lines: Iterable[str]) -> None:
    for line in lines:
        say(line)


def show_action(verb: str) -> Printer:
    def printer(session: Any, args: argparse.Namespace) -> None:
        line = f"{verb} session {session.get('name')} ({session.get('state')})"
        expires = session.get("expires_at")
        say(line + (f", expires {fmt_relative(expires)}" if expires else ""))

    return printer


def show_started(session: Any, args: argparse.Namespace) -> None:
    if session.get("state") != "failed":
        return show_action("started")(session, args)
    say(f"sessionc: session {session.get('name')} failed to start: "
        f"{session.get('close_reason')}", file=sys.stderr)  # fmt: skip
    say("hint: fix the agent's command in the config; 'sessionc events' shows what happened",
        file=sys.stderr)  # fmt: skip
    return None


def _start_status(session: Any) -> int:
    return EXIT_FAILURE if isinstance(session, dict) and session.get("state") == "failed" else 0


def show_agent(agent: Any, args: argparse.Namespace) -> None:
    pid = f", pid {agent['pid']}" if agent.get("pid") else ""
    say(f"agent {agent.get('name')}: {agent.get('state')}{pid}")


def show_logs(result: Any, args: argparse.Namespace) -> None:
    tails = {args.agent: result} if args.agent else result
    for agent, tail in tails.items():
        echo(log_line({"agent": agent, "line": line}, not args.agent) for line in tail["lines"])


def show_export(result: Any, args: argparse.Namespace) -> None:
    if args.output:
        say(f"exported session {(result.get('session') or {}).get('name')} to {args.output}")
    else:
        print(json.dumps(result, indent=2))  # JSON: ASCII, its controls escaped


def show_cleanup(result: Any, args: argparse.Namespace) -> None:
    if result.get("stopped"):
        say(f"stopped session {result['stopped'].get('name')}")
    killed = result.get("orphans_killed", 0)
    say(f"ended {killed} orphaned agent process{'' if killed == 1 else 'es'}")


def show_metrics(result: Any, args: argparse.Namespace) -> None:
    if not args.prometheus:
        echo(tree_lines({k: v for k, v in result.items() if k != "prometheus"}))
        return
    text = result.get("prometheus")
    if not isinstance(text, str):
        raise SessiondError("sessiond sent no Prometheus text", "drop --prometheus")
    echo(text.removesuffix("\n").split("\n"))  # each line as written, but escaped


# ---------------------------------------------------------------- handlers


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """Params from the options that were given; `from_` is sent as `from`."""
    values = {name.rstrip("_"): getattr(args, name, None) for name in names}
    return {key: value for key, value in values.items() if value is not None and value is not False}


def rpc(method: str, *names: str) -> Handler:
    """A handler that sends the named options that were given as params."""
    return lambda client, args: client.call(method, given(args, names))


def controlling_tty() -> str | None:
    """'pts/3' for the terminal on stdin; None when stdin is not a terminal."""
    try:
        return os.ttyname(0).removeprefix("/dev/")
    except OSError:
        return None


def with_tty(params: dict[str, Any]) -> dict[str, Any]:
    tty = controlling_tty()
    return {**params, "tty": tty} if tty else params


def start_timeout(wait: float | bool | None, rpc_timeout: float | None) -> float | None:
    """A waiting start must not be cut by --rpc-timeout: wait plus that as a margin."""
    if wait is True or rpc_timeout is None:
        return None
    return rpc_timeout + (wait or 0)


START_PARAMS = ("name", "template", "from_", "wait", "timeout", "idle_after",
                "error_threshold", "max_duration", "stop_at")  # fmt: skip


def do_start(client: Client, args: argparse.Namespace) -> Any:
    params = {**dict(args.settings or []), **given(args, START_PARAMS)}
    timeout = start_timeout(args.wait, client.timeout)
    return client.call("session.start", with_tty(params), timeout=timeout)


def do_join(client: Client, args: argparse.Namespace) -> Any:
    return client.call("session.join", with_tty(given(args, ["name"])))


def do_run(client: Client, args: argparse.Namespace) -> Any:
    # The caller's environment is not sent: an agent gets a clean one (PATH, HOME, USER,
    # LOGNAME, SHELL), its configured env and SESSIOND_*, as a template agent does.
    params = {"command": args.cmdline, "cwd": os.getcwd()}
    options = given(args, ["name", "restart", "labels", "needs_network"])
    return client.call("agent.run", {**params, **options})


def do_agent(client: Client, args: argparse.Namespace) -> Any:
    params: dict[str, Any] = {"name": args.name}
    if args.signal is not None:
        if args.action != "kill":
            raise UsageError(
                "--signal goes with 'agent kill' only", "sessionc agent kill NAME --signal KILL"
            )
        params["signal"] = int(args.signal) if args.signal.isdigit() else args.signal
    return client.call(f"agent.{args.action}", params)


def follow(
    client: Client,
    args: argparse.Namespace,
    topics: list[str],
    fetch_tail: Callable[[], list[Any]],
    render: Callable[[Any], str],
) -> object:
    """Subscribe, print the tail, then each notification until Ctrl-C or the daemon leaves."""

    def emit(item: Any) -> None:
        if args.json:
            print(json.dumps(item), flush=True)  # one line of ASCII, its controls escaped
        else:
            say(render(item), flush=True)

    try:
        client.call("subscribe", {"topics": topics})
        tail = fetch_tail()  # after subscribing, so that nothing falls in between
        seen = max((i["seq"] for i in tail if isinstance(i, dict) and "seq" in i), default=None)
        for item in tail:
            emit(item)
        for _method, params in client.notifications():
            seq = params.get("seq") if isinstance(params, dict) else None
            if seen is None or not isinstance(seq, int) or seq > seen:  # else shown in the tail
                emit(params)
    except KeyboardInterrupt:
        pass
    return STREAMED


def do_events(client: Client, args: argparse.Namespace) -> Any:
    params = given(args, ["lines"])
    if not args.follow:
        return client.call("events.tail", params)
    return follow(client, args, ["events"], lambda: client.call("events.tail", params), event_line)


def do_logs(client: Client, args: argparse.Namespace) -> Any:
    agents = [args.agent] if args.agent else [a["name"] for a in client.call("agent.list")]
    if not agents:
        raise SessiondError("no agents to show the logs of", "start one: 'sessionc run -- CMD'")

    def tails() -> dict[str, Any]:
        return {a: client.call("logs.tail", {"agent": a, **given(args, ["lines"])}) for a in agents}

    def entries() -> list[Any]:
        return [{"agent": a, "line": line} for a, tail in tails().items() for line in tail["lines"]]

    if args.follow:
        topics = [f"logs:{agent}" for agent in agents]
        return follow(client, args, topics, entries, lambda e: log_line(e, not args.agent))
    return tails()[args.agent] if args.agent else tails()


def call_for_session(client: Client, method: str, args: argparse.Namespace) -> Any:
    """`method` (session.get, session.export) for NAME: a name, an id, or the start of an id
    (the 8 hex digits that `history` shows); without NAME, the live session, else the latest."""
    if args.name is None:
        return client.call(method, {"name": default_session(client, args.command)})
    try:
        return client.call(method, {"name": args.name})
    except RemoteError as exc:
        if exc.code != NoSession.code or not re.fullmatch(_ID_PREFIX, args.name):
            raise
    return client.call(method, {"name": id_starting(client, args.name)})


def default_session(client: Client, command: str) -> str:
    """The id of the live session, else of the latest one."""
    live = client.call("session.status").get("session")
    latest = [live] if live else client.call("session.history", {"limit": 1})
    if not latest:
        raise NotFound(f"no session to {command}: none is live, and none is in the history",
                       "start one: 'sessionc start [NAME]'")  # fmt: skip
    return str(latest[0]["id"])


def id_starting(client: Client, prefix: str) -> str:
    """The one id, among the latest PREFIX_SEARCH sessions', that starts with `prefix`."""
    sessions = client.call("session.history", {"limit": PREFIX_SEARCH})
    found = {str(s["id"]): s.get("name") for s in sessions if str(s["id"]).startswith(prefix)}
    if not found:
        raise NotFound(f"no session named '{prefix}', nor one whose id starts with it",
                       "'sessionc history' lists the sessions this daemon knows")  # fmt: skip
    if len(found) > 1:
        ids = ", ".join(f"{i} ({name})" for i, name in found.items())
        raise UsageError(f"more than one session's id starts with {prefix}: {ids}",
                         "give more of the id, or all of it")  # fmt: skip
    return next(iter(found))


def do_export(client: Client, args: argparse.Namespace) -> Any:
    result = call_for_session(client, "session.export", args)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as file:
                file.write(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise SessiondError(f"unable to write {args.output}: {exc.strerror}") from None
    return result


def read_checkpoint(path: str) -> Any:
    """The one JSON value in FILE, or on stdin for '-'."""
    try:
        if path == "-":
            return json.loads(sys.stdin.read())
        with open(path, encoding="utf-8") as file:
            return json.loads(file.read())
    except OSError as exc:
        raise SessiondError(f"unable to read checkpoint {path}: {exc.strerror}") from None
    except ValueError as exc:
        hint = 'a checkpoint is one JSON value, e.g. {"offset": 1200}'
        raise SessiondError(f"unable to read checkpoint {path}: not JSON ({exc})", hint) from None


def do_report(client: Client, args: argparse.Namespace) -> Any:
    token = os.environ.get("SESSIOND_AGENT_TOKEN")
    if not token:
        raise SessiondError(
            "unable to report: SESSIOND_AGENT_TOKEN is not set",
            "'sessionc report' runs inside an agent started by sessiond, which sets the token",
        )
    data = read_checkpoint(args.checkpoint) if args.checkpoint else None
    result: dict[str, Any] = {}
    if args.metrics or args.error is not None or not args.checkpoint:
        params = {"token": token, **given(args, ["error"])}
        if args.metrics:
            params["metrics"] = dict(args.metrics)
        if len(params) == 1:
            params["activity"] = True  # a bare `sessionc report` is a heartbeat
        result.update(client.call("agent.report", params) or {})
    if args.checkpoint:
        result.update(client.call("agent.checkpoint", {"token": token, "data": data}) or {})
    return result


def health_exit(health: Any) -> int:
    if health.get("healthy"):
        return EXIT_OK
    return EXIT_NOT_FOUND if health.get("status") == "not_found" else EXIT_FAILURE


def do_completion(client: Client, args: argparse.Namespace) -> Any:
    from sessiond.cli import completion  # noqa: PLC0415 -- not loaded at every sessionc start

    return completion.script(args.shell, COMMANDS, GLOBAL_OPTIONS)


def do_complete(client: Client, args: argparse.Namespace) -> Any:
    from sessiond.cli import completion  # noqa: PLC0415 -- not loaded at every sessionc start

    return completion.names(client, args.kind)


# ---------------------------------------------------------------- the command table


def arg(*flags: str, **options: Any) -> ArgSpec:
    return flags, options


def _exit_ok(_result: Any) -> int:
    return EXIT_OK


class Command:
    """One row of the command table: help, argparse specs, RPC call, output."""

    __slots__ = ("args", "exit_status", "help", "run", "show")

    def __init__(
        self, help: str, run: Handler, show: Printer, args: tuple[ArgSpec, ...] = (),
        exit_status: Callable[[Any], int] = _exit_ok,
    ) -> None:  # fmt: skip
        self.help, self.run, self.show, self.args = help, run, show, args
        self.exit_status = exit_status


NAME = arg("name", metavar="NAME", nargs="?")
DURATION = {"metavar": "D", "type": _argtype(parse_duration)}
WAIT_TYPE = _argtype(_wait)
COUNT = {"metavar": "N", "type": _argtype(_count)}
FOLLOW = arg("-f", "--follow", action="store_true", help="then print new ones until Ctrl-C")
GLOBAL_OPTIONS = (
    arg("--socket", metavar="PATH", default=None,
        help="the daemon's socket (default: $SESSIOND_SOCKET, the system one, the user one)"),
    arg("--json", action="store_true", default=False, help="print the result as JSON"),
    arg("--rpc-timeout", metavar="SECONDS", type=DURATION["type"], default=30.0,
        help="give up on a reply after this long; 0 = never (default 30)"),
)  # fmt: skip
COMMANDS: dict[str, Command] = {
    "status": Command("show the live session, its agents and the daemon",
                      rpc("session.status"), lambda r, a: echo(status_lines(r))),
    "start": Command("start a session (take the lock)", do_start, show_started, (
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
        arg("--from", metavar="OLD", dest="from_", help="continue session OLD")),
        _start_status),
    "join": Command("join the live session", do_join, show_action("joined"), (NAME,)),
    "leave": Command("leave the session", rpc("session.leave"), show_action("left")),
    "stop": Command("stop the session and its agents", rpc("session.stop", "name"),
                    show_action("stopped"), (NAME,)),
    "pause": Command("pause the session (SIGSTOP its agents)", rpc("session.pause", "name",
                     "reason"), show_action("paused"), (NAME, arg("--reason", metavar="R"))),
    "resume": Command("resume a paused session", rpc("session.resume", "name"),
                      show_action("resumed"), (NAME,)),
    "reconnect": Command("start a disconnected session's agents again",
                         rpc("session.reconnect"), show_action("reconnected")),
    "touch": Command("record activity, keeping the session alive", rpc("session.touch"),
                     show_action("touched")),
    "health": Command("say whether the session is healthy and how to recover",
                      rpc("session.health", "name"), lambda r, a: echo(health_lines(r)),
                      (NAME,), health_exit),
    "run": Command("run CMD as an agent of the session", do_run, show_agent, (
        arg("--name", metavar="N"),
        arg("--restart", metavar="P", choices=["on-failure", "always", "never"]),
        arg("--label", metavar="L", dest="labels", action="append"),
        arg("--needs-network", action="store_true", help="pause it while the network is down"),
        arg("cmdline", metavar="CMD [ARG...]", nargs="+", help="after '--'"))),
    "agents": Command("list the session's agents", rpc("agent.list"),
                      lambda r, a: echo(agent_lines(r) if r else ["no agents"])),
    "agent": Command("start, stop, restart or kill one agent", do_agent, show_agent, (
        arg("action", choices=["start", "stop", "restart", "kill"]),
        arg("name", metavar="NAME"),
        arg("--signal", metavar="S", help="for kill: TERM, SIGKILL, 9… (default TERM)"))),
    "logs": Command("show an agent's output (every agent's without AGENT)", do_logs,
                    show_logs, (arg("agent", metavar="AGENT", nargs="?"),
                                arg("-n", dest="lines", help="the last N lines", **COUNT),
                                FOLLOW)),
    "events": Command("show the event log", do_events,
                      lambda r, a: echo(event_lines(r)),
                      (arg("-n", dest="lines", help="the last N events", **COUNT), FOLLOW)),
    "history": Command("list past sessions, newest first", rpc("session.history", "limit"),
                       lambda r, a: echo(history_lines(r)),
                       (arg("-n", dest="limit", help="at most N sessions", **COUNT),)),
    "show": Command("show one session, live or closed",
                    lambda client, args: call_for_session(client, "session.get", args),
                    lambda r, a: echo(session_lines(r)), (NAME,)),
    "export": Command("export a session with its events, metrics and checkpoints",
                      do_export, show_export, (NAME, arg(
                          "-o", metavar="FILE", dest="output", help="write it to FILE"))),
    "metrics": Command("show the daemon's metrics", rpc("metrics.get"), show_metrics,
                       (arg("--prometheus", action="store_true", help="as Prometheus text"),)),
    "cleanup": Command("stop the session and end orphaned agents",
                       rpc("session.cleanup", "orphans_only"), show_cleanup,
                       (arg("--orphans-only", action="store_true",
                            help="only end orphaned agent processes"),)),
    "report": Command("report metrics, an error or a checkpoint, from inside an agent",
                      do_report, lambda r, a: None, (
        arg("--metric", metavar="K=V", dest="metrics", action="append", type=_argtype(_metric)),
        arg("--error", metavar="TEXT", help="counts as an error of the session"),
        arg("--checkpoint", metavar="FILE", help="store the JSON in FILE ('-': stdin)"))),
    "completion": Command("print a shell script that completes sessionc's words, to source",
                          do_completion, lambda r, a: print(r, end=""),  # not daemon text
                          (arg("shell", choices=["bash", "zsh"]),)),
    "__complete": Command("", do_complete, lambda r, a: echo(r),  # no help: hidden; for scripts
                          (arg("kind", choices=["templates", "agents", "sessions", "live"]),)),
}  # fmt: skip

EPILOG = """\
exit status: 0 ok, 1 other failure, 2 usage, 3 daemon unreachable,
  4 session active or mismatch, 5 no session or agent not found,
  6 permission denied or bad token, 7 wait timed out, 130 interrupted;
  health: 0 healthy, 5 not found, 1 otherwise.
--json prints one JSON document on stdout, {"error": {...}} on failure;
  'events -f' and 'logs -f' print one JSON value per line."""


def terminal_columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil (and bz2, lzma, fnmatch)."""
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


GLOBAL_FLAGS = {"--json": 0, "--socket": 1, "--rpc-timeout": 1, "--version": 0}


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

    COMMAND is one without arguments of its own (`status`, `agents`…) and each
    OPTION is --json, --socket or --rpc-timeout. For anything else, and for
    values that look like options or are not durations, None: argparse parses
    those, and says what is wrong.
    """
    values: dict[str, Any] = {"command": None, "socket": None, "json": False, "rpc_timeout": 30.0}
    words = iter(argv)
    for word in words:
        flag, equals, value = word.partition("=")
        if word == "--json":
            values["json"] = True
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
        elif values["command"] is None and word in COMMANDS and not COMMANDS[word].args:
            values["command"] = word
        else:
            return None
    return Namespace(**values) if values["command"] else None


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

    def formatter(kind: type[argparse.HelpFormatter]) -> Callable[..., argparse.HelpFormatter]:
        # argparse's, with the width that it would take by importing shutil, bz2 and lzma
        return lambda prog: kind(prog, width=terminal_columns() - 2)

    parser = parser_class()(
        prog="sessionc",
        description="Talk to sessiond, the daemon that owns this machine's session lock.",
        epilog=EPILOG,
        formatter_class=formatter(argparse.RawDescriptionHelpFormatter),
        allow_abbrev=False,  # `--wai` must not turn into `--wait`
    )
    common = argparse.ArgumentParser(
        add_help=False, formatter_class=formatter(argparse.HelpFormatter)
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
        for flags, options in COMMANDS[name].args:
            p.add_argument(*flags, **options)
    return parser


# ---------------------------------------------------------------- main


def report_error(exc: SessiondError, as_json: bool) -> int:
    """`sessionc: MESSAGE` and `hint: HINT` on stderr; with --json, also {"error"} on stdout."""
    status = getattr(exc, "exit_code", EXIT_FAILURE)
    if as_json:
        error = {
            "name": getattr(exc, "name", type(exc).__name__),
            "message": exc.message,
            "hint": exc.hint,
            "code": getattr(exc, "code", None),
            "exit_status": status,
        }
        print(json.dumps({"error": error}))  # one line: it may end a stream of lines
    say(f"sessionc: {exc.message}", file=sys.stderr)
    if exc.hint:
        say(f"hint: {exc.hint}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    command = COMMANDS[args.command]
    with Client(client_socket(args.socket), args.rpc_timeout or None) as client:
        result = command.run(client, args)
    if result is STREAMED:
        return EXIT_OK
    if args.json:
        print(json.dumps(result, indent=2))  # ensure_ascii: controls come out as \u001b
    else:
        command.show(result, args)
    return command.exit_status(result)


def main(argv: list[str] | None = None) -> int:
    """sessionc's entry point: the exit status of SPEC §7."""
    argv = rewrite_argv(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_plain(argv) or build_parser(command_word(argv)).parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return run(args)
    except SessiondError as exc:
        return report_error(exc, args.json)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `sessionc events | head` left early: nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
