"""`sessionc top`: the live view a person keeps open in a tmux pane (curses).

One connection subscribes to the daemon's events, another asks: the status
again after each event and once a second (the daemon samples CPU and memory
at most that often anyway), the events' tail once. Nothing else wakes top:
select() waits on the subscription, the keyboard and the next second. When
the daemon goes away top says "reconnecting…", tries every second, and
comes back. Actions are the daemon's calls, made as the caller: a refusal
shows the daemon's message and hint on the last line.
"""

from __future__ import annotations

import contextlib
import curses
import json
import os
import select
import shutil
import socket
import sys
import time
from typing import Any

from sessiond.cli.client import Client, Disconnected, RemoteError
from sessiond.cli.colour import SGR
from sessiond.cli.frame import SGR_PARTS, View, frame
from sessiond.errors import SessiondError

EVENTS_KEPT = 200
LOG_LINES = 200
TICK = 1.0  # seconds between status refreshes without news: uptimes, CPU, countdowns
RUNNING = ("running", "starting", "backoff", "paused")
Failure = (SessiondError, OSError, ValueError)  # the daemon gone, refused, or garbled


class Feed:
    """The subscription to events: a socket for select() and the notifications read."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self._buf = b""
        request = {"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                   "params": {"topics": ["events"]}}  # fmt: skip
        try:
            self.sock.connect(path)
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            reply = self._reply()
        except OSError:
            self.sock.close()
            raise Disconnected(path) from None
        if "error" in reply:  # e.g. LIMIT_REACHED: the daemon's words
            self.sock.close()
            raise RemoteError.from_wire(reply["error"])
        self.sock.setblocking(False)

    def _reply(self) -> dict[str, Any]:
        """Wait for the subscribe's reply: subscribed from then on (events before it stay)."""
        kept: list[bytes] = []
        while True:
            while b"\n" not in self._buf:
                if not (chunk := self.sock.recv(65536)):
                    raise ConnectionResetError("sessiond closed the subscription")
                self._buf += chunk
            line, self._buf = self._buf.split(b"\n", 1)
            message = json.loads(line) if line.strip() else {}
            if "id" in message:
                self._buf = b"".join(k + b"\n" for k in kept) + self._buf
                return dict(message)
            kept.append(line)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[dict[str, Any]]:
        """The events that arrived; OSError once the daemon closed the connection."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                raise ConnectionResetError("sessiond closed the subscription")
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        found = [json.loads(line) for line in lines if line.strip()]
        return [m["params"] for m in found if m.get("method") == "event"]

    def close(self) -> None:
        self.sock.close()


class Top:
    def __init__(self, path: str, colour: bool = False) -> None:
        self.path = path
        self.view = View(colour=colour)
        self.attributes: dict[str, int] = {}  # a colour code of the frame's -> its curses attr
        self.calls: Client | None = None
        self.feed: Feed | None = None

    def connect(self) -> None:
        self._close()  # what a connect that failed half-way left
        self.calls = Client(self.path, timeout=5)
        self.calls.connect()  # no daemon: sessionc's usual message and exit status
        self.feed = Feed(self.path)  # subscribed before the tail: no event falls between
        self.view.events = list(self.calls.call("events.tail", {"lines": 50}))
        self.view.connected = True
        self.view.message = ""
        self.refresh()

    def _close(self) -> None:
        for part in (self.feed, self.calls):
            if part is not None:
                part.close()
        self.feed = self.calls = None

    def disconnect(self) -> None:
        self._close()
        self.view.connected = False
        self.view.message = "reconnecting…"

    def refresh(self) -> None:
        assert self.calls is not None
        self.view.status = self.calls.call("session.status")
        self.view.fetched = time.time()
        agent = self.view.agent()
        if self.view.log is not None and agent is not None:
            self.view.log = self.calls.call("logs.tail", {"agent": agent["name"],
                                                          "lines": LOG_LINES})["lines"]  # fmt: skip

    def news(self) -> None:
        assert self.feed is not None
        events = self.feed.read()
        if events:
            # One published between the subscribe and the tail came both ways: once, by seq.
            seen = max((_seq(e) for e in self.view.events[-50:]), default=0)
            fresh = [e for e in events if not _seq(e) or _seq(e) > seen]
            self.view.events = (self.view.events + fresh)[-EVENTS_KEPT:]
            self.refresh()

    # -- keys ------------------------------------------------------------------

    def key(self, screen: curses.window, key: int) -> bool:
        """Act on one key; False: quit."""
        view = self.view
        if key in (ord("q"), ord("Q")):
            return False
        if key in (curses.KEY_UP, curses.KEY_DOWN):
            last = max(len(view.agents) - 1, 0)
            view.selected = min(max(view.selected + (1 if key == curses.KEY_DOWN else -1), 0),
                                last)  # fmt: skip
        elif key == ord("l"):
            view.log = None if view.log is not None else []
            self._try(self.refresh, "")
        elif key in (ord("r"), ord("s"), ord("k"), ord("p")):
            self._try(lambda: self._act(screen, chr(key)), None)
        return True

    def _act(self, screen: curses.window, key: str) -> None:
        assert self.calls is not None
        agent, session = self.view.agent(), (self.view.status or {}).get("session") or {}
        if key == "p":
            paused = session.get("state") == "paused"
            self.calls.call("session.resume" if paused else "session.pause")
            self.view.message = "resumed the session" if paused else "paused the session"
            return
        if agent is None:
            self.view.message = "no agent selected"
            return
        name = agent["name"]
        if key == "r":
            self.calls.call("agent.restart", {"name": name})
            self.view.message = f"restarted {name}"
        elif key == "s":
            running = agent.get("state") in RUNNING
            self.calls.call("agent.stop" if running else "agent.start", {"name": name})
            self.view.message = f"{'stopped' if running else 'started'} {name}"
        elif (sig := ask(screen, f"signal to send to {name} (TERM): ")) is not None:
            self.calls.call("agent.kill", {"name": name, "signal": sig or "TERM"})
            self.view.message = f"sent SIG{(sig or 'TERM').upper().removeprefix('SIG')} to {name}"

    def _try(self, action: Any, done: str | None) -> None:
        try:
            action()
        except RemoteError as exc:  # refused: the daemon says why, and what to do
            self.view.message = f"{exc.message}" + (f" — {exc.hint}" if exc.hint else "")
            return
        except Failure:
            self.disconnect()
            return
        if done is not None:
            self.view.message = done

    # -- the loop ----------------------------------------------------------------

    def run(self, screen: curses.window) -> int:
        curses.curs_set(0)
        self.view.colour = self.view.colour and curses.has_colors()
        if self.view.colour:
            self.attributes = _attributes()
        screen.nodelay(True)
        screen.keypad(True)
        next_tick = 0.0
        while True:
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TICK
                self._tick()
            self.draw(screen)
            waits: list[Any] = [sys.stdin] + ([self.feed] if self.feed else [])
            ready = select.select(waits, [], [], max(next_tick - time.monotonic(), 0))[0]
            if self.feed is not None and self.feed in ready:
                self._try(self.news, None)
            while (key := screen.getch()) != -1:
                if key != curses.KEY_RESIZE and not self.key(screen, key):
                    return 0

    def _tick(self) -> None:
        if self.feed is None:
            self._try(self.connect, None)
        else:
            self._try(self.refresh, None)

    def draw(self, screen: curses.window) -> None:
        height, width = screen.getmaxyx()
        screen.erase()
        for row, line in enumerate(frame(self.view, width, height, time.time())):
            with contextlib.suppress(curses.error):  # curses cannot write past the last cell
                self._put(screen, row, line, width - 1)
        screen.refresh()

    def _put(self, screen: curses.window, row: int, line: str, columns: int) -> None:
        """One line of the frame, its colour codes as curses attributes."""
        at, attribute = 0, curses.A_NORMAL
        for code, text in SGR_PARTS.findall(line):
            if code:
                attribute = self.attributes.get(code, curses.A_NORMAL)
            elif at < columns:
                screen.addstr(row, at, text[: columns - at], attribute)
                at += len(text[: columns - at])


def _seq(event: dict[str, Any]) -> int:
    seq = event.get("seq")
    return seq if isinstance(seq, int) else 0


def ask(screen: curses.window, prompt: str) -> str | None:
    """A line typed on the last row; None if Esc."""
    height, width = screen.getmaxyx()
    screen.nodelay(False)
    curses.echo()
    try:
        screen.move(height - 1, 0)
        screen.clrtoeol()
        screen.addstr(height - 1, 0, prompt[: width - 1])
        typed = screen.getstr(height - 1, min(len(prompt), width - 1), 16)
    finally:
        curses.noecho()
        screen.nodelay(True)
    text = typed.decode(errors="replace").strip()
    return None if "\x1b" in text else text


def _attributes() -> dict[str, int]:
    """The curses attribute of each colour code that colour.paint writes."""
    curses.start_color()
    background = -1  # the terminal's own
    try:
        curses.use_default_colors()
    except curses.error:
        background = curses.COLOR_BLACK
    colours = {"green": curses.COLOR_GREEN, "yellow": curses.COLOR_YELLOW,
               "red": curses.COLOR_RED, "cyan": curses.COLOR_CYAN,
               "magenta": curses.COLOR_MAGENTA, "blue": curses.COLOR_BLUE}  # fmt: skip
    found = {"dim": curses.A_DIM, "bold": curses.A_BOLD}
    for pair, (name, number) in enumerate(colours.items(), start=1):
        curses.init_pair(pair, number, background)
        found[name] = curses.color_pair(pair)
    return {f"\x1b[{SGR[name]}m": attribute for name, attribute in found.items()}


def once(path: str, colour: bool = False) -> list[str]:
    """`top --once`: one frame, as wide as the terminal, without the padding or the keys."""
    top = Top(path, colour)
    top.connect()
    top.disconnect()
    top.view.connected, top.view.message = True, ""
    size = shutil.get_terminal_size((100, 40))
    lines = frame(top.view, size.columns, size.lines, time.time())[:-1]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def live(path: str, colour: bool = False) -> int:
    top = Top(path, colour)
    top.connect()  # a daemon that is not there: sessionc's usual message, not a screen
    # curses takes LINES and COLUMNS, when set, over the terminal's size, and then ignores
    # every resize: a shell that exports them (or a parent that imported readline) would
    # pin the frame. The terminal's own size it is.
    for name in ("LINES", "COLUMNS"):
        os.environ.pop(name, None)
    return int(curses.wrapper(top.run))
