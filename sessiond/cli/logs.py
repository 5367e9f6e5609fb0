"""`sessionc logs`: what agents printed, one agent's or the whole session's in time order.

The daemon stamps each line with when it came and from which stream
(logkeeper.py); `logs.tail` answers them merged in time order, and `subscribe`
to `logs` sends every new line of every agent of the session, those started
later too. Each agent's lines come in order, but the lines of two agents may
come in separate notifications, in the order the daemon read their logs: a
followed line waits here HOLD seconds for the lines that came before it, so
that what is printed is in time order (a line later than that is printed at
once, where it comes). A follower ends, with exit status 0, when the session
ends: after the lines its agents wrote while stopping, a last line says how.

Text leaves escaped (show.escape), never raw to a terminal; on a terminal each
agent's name has a colour of its own.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import sys
import time

from sessiond.cli.calls import STREAMED, UsageError, given
from sessiond.cli.colour import BOLD, DIM, NAME_STYLES, paint
from sessiond.cli.show import escape, parse_time

TYPE_CHECKING = False  # typing would cost every sessionc start milliseconds
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from sessiond.cli.client import Client

HOLD = 0.3  # seconds a followed line waits for other agents' earlier lines: 3 of their paces
ENDS = frozenset({"session.closed", "session.expired", "session.failed"})
TAIL_MAX = 10_000  # what logs.tail answers at most: `--since` without `-n` asks for that
FIELDS = ("time", "agent", "stream", "line")


class Printer:
    """Entries as lines, 'HH:MM:SS.mmm AGENT [err ]LINE' (or only LINE), or as JSON."""

    def __init__(self, args: argparse.Namespace, colour: bool, prefix: bool) -> None:
        self.json, self.colour = args.json, colour
        self.prefix = prefix and not args.no_prefix
        self.width = 0  # of the widest agent name yet: the lines stay in columns
        self.styles: dict[str, str] = {}  # each agent's colour, given in turn

    def entry(self, entry: dict[str, Any]) -> None:
        if self.json:
            print(json.dumps({key: entry.get(key) for key in FIELDS}))
            return
        text = escape(str(entry.get("line", "")))
        if self.prefix:
            agent = escape(str(entry.get("agent", "?")))
            self.width = max(self.width, len(agent))
            style = self.styles.setdefault(agent, NAME_STYLES[len(self.styles) % len(NAME_STYLES)])
            err = f"{self._paint('err', BOLD)} " if entry.get("stream") == "err" else ""
            clock = self._paint(_clock(entry.get("time")), DIM)
            text = f"{clock} {self._paint(agent.ljust(self.width), style)} {err}{text}"
        print(text)

    def end(self, event: dict[str, Any]) -> None:
        """The session ended: how, as the last line."""
        if self.json:
            print(json.dumps(event))
        else:
            print(self._paint(f"-- {escape(str(event.get('message', '')))}", DIM))

    def _paint(self, escaped: str, style: str) -> str:
        return paint(escaped, style) if self.colour else escaped


def do_logs(client: Client, args: argparse.Namespace, colour: bool) -> object:
    """Print the last lines; with -f, then every new one until the session ends."""
    agents = list(dict.fromkeys([*(args.agents or []), *(args.agent or [])]))
    if agents and args.label is not None:
        raise UsageError("give agents or --label, not both",
                         "'sessionc logs --label L' shows every agent labelled L")  # fmt: skip
    params = {**_pick(agents, args.label), **given(args, ["lines"])}
    if args.since is not None:
        params["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - args.since))
        params.setdefault("lines", TAIL_MAX)
    one = agents[0] if len(agents) == 1 else None
    printer = Printer(args, colour, prefix=one is None)
    if args.follow:
        follower = Follower(client, printer, agents, args.label)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                follower.run(params, one)
        finally:  # Ctrl-C, or the daemon went away: what came is shown
            follower.flush(float("inf"))
        return STREAMED
    for entry in client.call("logs.tail", params)["entries"]:
        printer.entry(entry)
    return STREAMED


class Follower:
    """The tail, then the new lines of the picked agents, in time order, until the end."""

    def __init__(
        self, client: Client, printer: Printer, agents: list[str], label: str | None
    ) -> None:
        self.client, self.printer = client, printer
        self.agents, self.label = set(agents), label
        self.labels: dict[str, list[str]] = {}  # of the agents known, for --label
        self.session: str | None = None  # the name of the session followed
        self.seen: set[tuple[Any, ...]] = set()  # the lines the tail showed
        self.held: list[tuple[str, int, float, dict[str, Any]]] = []  # time, n, came, entry
        self.count = itertools.count()  # orders the lines of one millisecond as they came
        self.ending: tuple[float, dict[str, Any]] | None = None  # when to end, and why

    def run(self, params: dict[str, Any], one: str | None) -> None:
        session = self.client.call("session.status").get("session") or {}
        self.session = session.get("name")
        self._learn(session.get("agents") or [])
        self.client.call("subscribe", {"topics": ["events", f"logs:{one}" if one else "logs"]})
        tail = self.client.call("logs.tail", params)["entries"]  # after subscribing: no gap
        for entry in tail:
            self.printer.entry(entry)
        self.seen = {_key(entry) for entry in tail}
        sys.stdout.flush()
        for note in self.client.notifications(idle=HOLD / 3):
            now = time.monotonic()
            method, what = note or ("", None)
            if isinstance(what, dict) and method == "log":
                self._log(what, now)
            elif isinstance(what, dict):
                self._event(what, now)
            if self.flush(now):
                return

    def _log(self, entry: dict[str, Any], now: float) -> None:
        agent = str(entry.get("agent"))
        if self.label is not None and agent not in self.labels:  # an agent started since
            self._learn(self.client.call("agent.list"))
        if self.agents and agent not in self.agents:
            return
        if self.label is not None and self.label not in self.labels.get(agent, []):
            return
        if _key(entry) not in self.seen:
            heapq.heappush(self.held, (str(entry.get("time") or ""), next(self.count), now, entry))

    def _event(self, event: dict[str, Any], now: float) -> None:
        if event.get("kind") in ENDS and event.get("session") == self.session:
            self.ending = (now + HOLD, event)  # its agents' last lines may still come

    def flush(self, now: float) -> bool:
        """Print the lines held long enough (all of them at the end); True at the end."""
        over = self.ending is not None and now >= self.ending[0]
        while self.held and (over or self.held[0][2] + HOLD <= now):
            self.printer.entry(heapq.heappop(self.held)[3])
        if over and self.ending is not None:
            self.printer.end(self.ending[1])
            self.ending = None  # said once
        sys.stdout.flush()
        return over

    def _learn(self, agents: list[dict[str, Any]]) -> None:
        self.labels.update({a["name"]: a.get("labels") or [] for a in agents})


def _key(entry: dict[str, Any]) -> tuple[Any, ...]:
    return entry.get("agent"), entry.get("time"), entry.get("line")


def _pick(agents: list[str], label: str | None) -> dict[str, Any]:
    if len(agents) == 1:
        return {"agent": agents[0]}
    if agents:
        return {"names": agents}
    return {} if label is None else {"label": label}


def _clock(stamp: Any) -> str:
    """'22:19:13.123', the local time of a line; blanks for a line of unknown time."""
    when = parse_time(stamp if isinstance(stamp, str) else None)
    if when is None:
        return " " * 12
    local = when.astimezone()
    return f"{local:%H:%M:%S}.{local.microsecond // 1000:03d}"
