"""sessionc: the command-line client of sessiond (SPEC §7), and its entry point `main`.

A command's words are declared in commands.COMMANDS and read by argv.py; what
it does is its row of ACTIONS here: a handler that makes the RPC calls and
returns the raw result (most are calls.py's), a printer that shows the result
to a person, and (for `start` and `health`) how the result maps to an exit
status. `--json` replaces the printer with one JSON document. Handlers do not
print, except the followers, which stream until Ctrl-C, the daemon leaves or
(`logs -f`) the session ends.

All of sessionc's output leaves from this module, but the screens that a live
view redraws (`status --watch`: watch.py) and the lines of `logs` (logs.py,
one object a line with --json), which escape alike. What the
printers show comes from show.py's pure `*_lines` and `fmt_*` helpers, which
turn wire objects (docs/wire.md) into text. Every line of text leaves through `say`, which
escapes control characters (show.escape): no name, reason, tty or log line
from the daemon drives the terminal. `--json` prints json.dumps, whose ASCII
output escapes them already, and keeps every byte. On a terminal, states and
errors are in colour (colour.py): painted around text escaped already, never
into a pipe, nor with --no-color or $NO_COLOR.

This module imports only the standard library and sessiond's stdlib-only
modules: `sessionc status` must start fast. What only some commands need
(argparse, datetime, signal, the completion scripts) is imported where it is
used.
"""

from __future__ import annotations

import json
import os
import sys

from sessiond import __version__
from sessiond.cli.argv import (
    EPILOG,
    build_parser,
    choice_error,
    command_word,
    duration_flags,
    parse_plain,
    rewrite_argv,
)
from sessiond.cli.calls import (
    EXIT_NOT_FOUND,
    PREFIX_SEARCH,
    START_PARAMS,
    STREAMED,
    call_for_session,
    do_agent,
    do_complete,
    do_completion,
    do_report,
    do_run,
    do_show,
    given,
    health_exit,
    rpc,
    start_status,
    start_timeout,
)
from sessiond.cli.client import Client
from sessiond.cli.colour import DIM, RED, enabled
from sessiond.cli.commands import COMMANDS, GLOBAL_OPTIONS, RESERVED_SET_KEYS, SESSION_SET_KEYS
from sessiond.cli.groups import group_status, per_agent
from sessiond.cli.show import (
    agent_lines,
    coloured,
    escape,
    event_line,
    event_lines,
    fmt_relative,
    fmt_state,
    health_lines,
    history_lines,
    joined,
    session_lines,
    status_lines,
    tree_lines,
)
from sessiond.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, SessiondError
from sessiond.paths import client_socket

TYPE_CHECKING = False  # typing and dataclasses would cost every sessionc start ~15 ms
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable
    from typing import IO, Any, NoReturn

    from sessiond.cli.calls import Handler

    Printer = Callable[[Any, argparse.Namespace], None]

# What tests and the manuals reach through sessionc's entry point, besides what is defined here.
__all__ = ["COMMANDS", "EPILOG", "EXIT_NOT_FOUND", "GLOBAL_OPTIONS", "PREFIX_SEARCH",
           "RESERVED_SET_KEYS", "SESSION_SET_KEYS", "__version__", "build_parser",
           "choice_error", "command_word", "duration_flags", "health_exit", "main",
           "parse_plain", "rewrite_argv"]  # fmt: skip

EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------- printers


def say(line: str, file: IO[str] | None = None, flush: bool = False) -> None:
    """Print one line of text output (stdout by default), its control characters escaped."""
    print(escape(line), file=file, flush=flush)


def echo(lines: Iterable[str]) -> None:
    for line in lines:
        say(line)


def colour(args: argparse.Namespace) -> bool:
    """Whether stdout's lines are in colour: on a terminal, unless told not to."""
    return enabled(sys.stdout, args)


def lines_of(render: Callable[..., list[str]]) -> Printer:
    """The printer of what `render` makes of a result, in colour on a terminal."""
    return lambda result, args: echo(render(result, colour=colour(args)))


def complain(message: str, hint: str, args: argparse.Namespace) -> None:
    """`sessionc: MESSAGE` (red on a terminal) and `hint: HINT` (dim), on stderr."""
    on = enabled(sys.stderr, args)
    say(coloured(f"sessionc: {message}", RED, on), file=sys.stderr)
    if hint:
        say(coloured(f"hint: {hint}", DIM, on), file=sys.stderr)


def show_action(verb: str) -> Printer:
    def printer(session: Any, args: argparse.Namespace) -> None:
        state = fmt_state(session.get("state"), colour(args))
        line = joined(f"{verb} session {session.get('name')} (", state, ")")
        expires = session.get("expires_at")
        say(joined(line, f", expires {fmt_relative(expires)}" if expires else ""))

    return printer


def show_started(session: Any, args: argparse.Namespace) -> None:
    if session.get("state") != "failed":
        return show_action("started")(session, args)
    complain(f"session {session.get('name')} failed to start: {session.get('close_reason')}",
             "fix the agent's command in the config; 'sessionc events' shows what happened",
             args)  # fmt: skip
    return None


def show_agent(agent: Any, args: argparse.Namespace) -> None:
    pid = f", pid {agent['pid']}" if agent.get("pid") else ""
    say(joined(f"agent {agent.get('name')}: ", fmt_state(agent.get("state"), colour(args)), pid))


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


# ---------------------------------------------------------------- handlers of the terminal


def controlling_tty() -> str | None:
    """'pts/3' for the terminal on stdin; None when stdin is not a terminal."""
    try:
        return os.ttyname(0).removeprefix("/dev/")
    except OSError:
        return None


def with_tty(params: dict[str, Any]) -> dict[str, Any]:
    tty = controlling_tty()
    return {**params, "tty": tty} if tty else params


def do_top(client: Client, args: argparse.Namespace) -> Any:
    from sessiond.cli import top  # noqa: PLC0415 -- curses: only top needs it

    if args.once:
        return top.once(client.path, colour(args))
    top.live(client.path, colour(args))
    return STREAMED


def do_status(client: Client, args: argparse.Namespace) -> Any:
    if args.watch is None:
        return client.call("session.status")
    from sessiond.cli.watch import watch  # noqa: PLC0415 -- only --watch needs it

    watch(client, args.watch, colour(args), args.json)
    return STREAMED


def do_start(client: Client, args: argparse.Namespace) -> Any:
    params = {**dict(args.settings or []), **given(args, START_PARAMS)}
    timeout = start_timeout(args.wait, client.timeout)
    return client.call("session.start", with_tty(params), timeout=timeout)


def do_join(client: Client, args: argparse.Namespace) -> Any:
    return client.call("session.join", with_tty(given(args, ["name"])))


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
        for note in client.notifications():  # never None: no idle asked for
            params = note[1] if note is not None else None
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
    return follow(client, args, ["events"], lambda: client.call("events.tail", params),
                  lambda event: event_line(event, colour(args)))  # fmt: skip


def do_logs(client: Client, args: argparse.Namespace) -> Any:
    from sessiond.cli.logs import do_logs as logs  # noqa: PLC0415 -- heapq, only here

    return logs(client, args, colour(args))


def do_export(client: Client, args: argparse.Namespace) -> Any:
    result = call_for_session(client, "session.export", args)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as file:
                file.write(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise SessiondError(f"unable to write {args.output}: {exc.strerror}") from None
    return result


# ---------------------------------------------------------------- what each command does


def _exit_ok(_result: Any) -> int:
    return EXIT_OK


class Action:
    """What one command of COMMANDS does: its RPC calls, its output, its exit status."""

    __slots__ = ("exit_status", "run", "show")

    def __init__(
        self, run: Handler, show: Printer, exit_status: Callable[[Any], int] = _exit_ok
    ) -> None:
        self.run, self.show, self.exit_status = run, show, exit_status


ACTIONS: dict[str, Action] = {  # in the order of COMMANDS, one for each
    "status": Action(do_status, lines_of(status_lines)),
    "top": Action(do_top, lambda r, a: echo(r)),
    "start": Action(do_start, show_started, start_status),
    "join": Action(do_join, show_action("joined")),
    "leave": Action(rpc("session.leave"), show_action("left")),
    "stop": Action(rpc("session.stop", "name"), show_action("stopped")),
    "pause": Action(rpc("session.pause", "name", "reason"), show_action("paused")),
    "resume": Action(rpc("session.resume", "name"), show_action("resumed")),
    "reconnect": Action(rpc("session.reconnect"), show_action("reconnected")),
    "touch": Action(rpc("session.touch"), show_action("touched")),
    "health": Action(rpc("session.health", "name"), lines_of(health_lines), health_exit),
    "run": Action(do_run, show_agent),
    "agents": Action(
        rpc("agent.list"), lambda r, a: echo(agent_lines(r, colour(a)) if r else ["no agents"])
    ),
    "agent": Action(do_agent, per_agent(show_agent), group_status),
    "logs": Action(do_logs, lambda r, a: None),
    "events": Action(do_events, lambda r, a: echo(event_lines(r, colour(a)))),
    "history": Action(rpc("session.history", "limit"), lines_of(history_lines)),
    "show": Action(do_show, lines_of(session_lines)),
    "export": Action(do_export, show_export),
    "metrics": Action(rpc("metrics.get"), show_metrics),
    "cleanup": Action(rpc("session.cleanup", "orphans_only"), show_cleanup),
    "report": Action(do_report, lambda r, a: None),
    "completion": Action(do_completion, lambda r, a: print(r, end="")),  # not daemon text
    "__complete": Action(do_complete, lambda r, a: echo(r)),
}


# ---------------------------------------------------------------- main


def report_error(exc: SessiondError, args: argparse.Namespace) -> int:
    """`sessionc: MESSAGE` and `hint: HINT` on stderr; with --json, also {"error"} on stdout."""
    status = getattr(exc, "exit_code", EXIT_FAILURE)
    if args.json:
        error = {
            "name": getattr(exc, "name", type(exc).__name__),
            "message": exc.message,
            "hint": exc.hint,
            "code": getattr(exc, "code", None),
            "exit_status": status,
        }
        print(json.dumps({"error": error}))  # one line: it may end a stream of lines
    complain(exc.message, exc.hint, args)
    return status


def run(args: argparse.Namespace) -> int:
    action = ACTIONS[args.command]
    with Client(client_socket(args.socket), args.rpc_timeout or None) as client:
        result = action.run(client, args)
    if result is STREAMED:
        return EXIT_OK
    if args.json:
        print(json.dumps(result, indent=2))  # ensure_ascii: controls come out as \u001b
    else:
        action.show(result, args)
    return action.exit_status(result)


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
        return report_error(exc, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `sessionc events | head` left early: nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def entry() -> NoReturn:
    """The `sessionc` command: main(), its output flushed, then out at once.

    os._exit skips the interpreter's teardown, which frees every module and object one by
    one: 3 ms of the 30 ms of a `sessionc status` on the 2-core test machine, for nothing,
    since sessionc registers no atexit handler and the kernel closes its socket.
    """
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # as in main: the reader left early
        status = status or EXIT_FAILURE
    except OSError as exc:  # a full disk under `sessionc status > file`
        say(f"sessionc: cannot write the output: {exc.strerror}", file=sys.stderr)
        status = status or EXIT_FAILURE
    os._exit(status)  # stderr is line-buffered: what was said to it is out


if __name__ == "__main__":
    entry()
