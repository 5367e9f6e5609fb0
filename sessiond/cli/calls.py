"""What sessionc's commands ask of the daemon: handlers that make the RPC calls.

A handler takes the client and the parsed arguments and returns the raw
result; main.ACTIONS pairs it with the printer that shows it. These print
nothing: the handlers that stream or write files, and those that read the
terminal, are main.py's. `*_status` functions make a result an exit status.
"""

from __future__ import annotations

import json
import os
import re
import sys

from sessiond.cli.client import Client, RemoteError
from sessiond.cli.commands import COMMANDS, GLOBAL_OPTIONS
from sessiond.cli.groups import group_params
from sessiond.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, NoSession, SessiondError

TYPE_CHECKING = False  # typing would cost every sessionc start milliseconds
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable
    from typing import Any

    Handler = Callable[[Client, argparse.Namespace], Any]

EXIT_NOT_FOUND = 5
# The first 8 hex digits of a session's id, as `history` shows it, or more of it.
_ID_PREFIX = r"[0-9a-f]{8}[0-9a-f-]{0,27}"
PREFIX_SEARCH = 1000  # sessions searched for an id prefix: all that `history -n 1000` can show
START_PARAMS = ("name", "template", "from_", "wait", "timeout", "idle_after",
                "error_threshold", "max_duration", "stop_at")  # fmt: skip


STREAMED = object()  # returned by a follower, which printed everything itself


class UsageError(SessiondError):
    exit_code = EXIT_USAGE


class NotFound(SessiondError):
    exit_code = EXIT_NOT_FOUND


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """Params from the options that were given; `from_` is sent as `from`."""
    values = {name.rstrip("_"): getattr(args, name, None) for name in names}
    return {key: value for key, value in values.items() if value is not None and value is not False}


def rpc(method: str, *names: str) -> Handler:
    """A handler that sends the named options that were given as params."""
    return lambda client, args: client.call(method, given(args, names))


def start_timeout(wait: float | bool | None, rpc_timeout: float | None) -> float | None:
    """A waiting start must not be cut by --rpc-timeout: wait plus that as a margin."""
    if wait is True or rpc_timeout is None:
        return None
    return rpc_timeout + (wait or 0)


def start_status(session: Any) -> int:
    return EXIT_FAILURE if isinstance(session, dict) and session.get("state") == "failed" else 0


def health_exit(health: Any) -> int:
    if health.get("healthy"):
        return EXIT_OK
    return EXIT_NOT_FOUND if health.get("status") == "not_found" else EXIT_FAILURE


def do_run(client: Client, args: argparse.Namespace) -> Any:
    # The caller's environment is not sent: an agent gets a clean one (PATH, HOME, USER,
    # LOGNAME, SHELL), its configured env and SESSIOND_*, as a template agent does.
    params = {"command": args.cmdline, "cwd": os.getcwd()}
    options = given(args, ["name", "restart", "labels", "needs_network"])
    return client.call("agent.run", {**params, **options})


def do_agent(client: Client, args: argparse.Namespace) -> Any:
    params = group_params(args)  # NAME; or `all` or --label, a group (groups.py)
    if args.signal is not None:
        if args.action != "kill":
            raise UsageError(
                "--signal goes with 'agent kill' only", "sessionc agent kill NAME --signal KILL"
            )
        params["signal"] = int(args.signal) if args.signal.isdigit() else args.signal
    return client.call(f"agent.{args.action}", params)


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


def do_show(client: Client, args: argparse.Namespace) -> Any:
    return call_for_session(client, "session.get", args)


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


def do_completion(client: Client, args: argparse.Namespace) -> Any:
    from sessiond.cli import completion  # noqa: PLC0415 -- not loaded at every sessionc start

    return completion.script(args.shell, COMMANDS, GLOBAL_OPTIONS)


def do_complete(client: Client, args: argparse.Namespace) -> Any:
    from sessiond.cli import completion  # noqa: PLC0415 -- not loaded at every sessionc start

    return completion.names(client, args.kind)
