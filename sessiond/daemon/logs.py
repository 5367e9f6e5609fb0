"""Agent logs on the daemon's side: the pipes to the log keeper, and tails.

The log keeper (logkeeper.py, a process of its own) writes and rotates every
agent's log; the daemon does no file I/O of a size an agent chooses. Here:

  * `KeeperLink` gives each agent run two pipes: their write ends become the
    agent's stdout and stderr, the read ends go to the keeper, and
    duplicates of them stay here, so that the agent never gets EPIPE while
    either process is alive. A keeper that dies is started again and handed
    the pipes again; a daemon that restarts asks the running keeper for them.
  * `tail()` reads the last lines of a log and its rotated copies, at most
    TAIL_MAX_BYTES of them; `entry()` reads the time and stream the keeper
    stamped on a line, and `merged()` puts several agents' lines in time order.
  * `Followers` (follow.py, named here too) send new lines to `logs:AGENT`
    subscribers: paced, bounded inotify followers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessiond.daemon import logkeeper
from sessiond.daemon.clock import Clock, Timer
from sessiond.daemon.follow import Followers
from sessiond.daemon.logkeeper import (
    PACKET_MAX,
    PROTOCOL,
    SOCKET_NAME,
    STAMP_SIZE,
    STREAMS,
    stamp,
)

# Followers and stamp too: the fleet finds all it needs of logs here
__all__ = ["Followers", "KeeperLink", "entries", "entry", "merged", "stamp", "tail", "topics"]

log = logging.getLogger("sessiond.daemon.logs")

TAIL_MAX_BYTES = 4 << 20  # a logs.tail reads at most this much, whatever it asks for
BLOCK = 64 * 1024
KEEPER_TIMEOUT = 5.0  # seconds the daemon waits on the keeper's socket, at most
KEEPER_RETRY = 1.0  # seconds between two tries to start a keeper that could not start


@dataclass(frozen=True, slots=True)
class Held:
    """A read end the daemon holds of one stream of an agent run."""

    fd: int
    path: str
    stream: str


def entry(agent: str, text: str, unknown: str | None = None) -> dict[str, Any]:
    """A line of a log as the wire shows it, {time, agent, stream, line}, from its stamp.
    A line with no stamp (written before logs were stamped; a follower's note) is
    `out`, at time `unknown`."""
    head = STAMP_SIZE + 5  # the stamp, a space, the stream, a space
    stream, after = text[STAMP_SIZE + 1 : head - 1], text[head - 1 : head]
    if stream in STREAMS and text[STAMP_SIZE - 1 : STAMP_SIZE + 1] == "Z " and after == " ":
        return {"time": text[:STAMP_SIZE], "agent": agent, "stream": stream, "line": text[head:]}
    return {"time": unknown, "agent": agent, "stream": "out", "line": text}


def entries(agent: str, lines: list[str], now: float) -> list[dict[str, Any]]:
    """Lines of a log as entries; one unstamped (a follower's note) came `now`."""
    at = stamp(now)
    return [entry(agent, line, at) for line in lines]


def merged(
    logs: dict[str, Path], count: int, since: str | None = None, rotated: int = 3
) -> list[dict[str, Any]]:
    """The last `count` lines of these agents' logs (by name), in time order; with `since`
    (a stamp), only those stamped then or later. All of them read at most TAIL_MAX_BYTES,
    or BLOCK each."""
    budget = max(BLOCK, TAIL_MAX_BYTES // max(1, len(logs)))
    each = []
    for agent, path in logs.items():
        entries = [entry(agent, text) for text in tail(path, count, rotated, budget)]
        if since is not None:
            entries = [e for e in entries if e["time"] is not None and e["time"] >= since]
        each.append(entries)
    return list(heapq.merge(*each, key=lambda e: e["time"] or ""))[-count:] if count else []


def topics(session_id: str, name: str) -> tuple[str, str]:
    """Where an agent's lines go: to the subscribers of that agent of that session, and of
    the whole session. A topic names the session, so that a subscriber never gets the
    lines of a later session's agent of the same name, which may be another user's."""
    return f"logs:{name}@{session_id}", f"logs@{session_id}"


def tail(path: Path, count: int, rotated: int = 3, budget: int = TAIL_MAX_BYTES) -> list[str]:
    """The last `count` lines of a log, reaching into its rotated copies if needed."""
    lines: list[str] = []
    for n in range(rotated):
        file = path if n == 0 else path.with_name(f"{path.name}.{n}")
        try:
            found, used = _last_lines(file, count - len(lines), budget)
        except FileNotFoundError:
            break
        lines, budget = found + lines, budget - used
        if len(lines) >= count or budget <= 0:
            break
    return lines[-count:] if count else []


def _last_lines(path: Path, count: int, budget: int) -> tuple[list[str], int]:
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        while end > 0 and data.count(b"\n") <= count and len(data) < budget:
            start = max(0, end - BLOCK, end - (budget - len(data)))
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    text = data.decode("utf-8", "replace").splitlines()
    if end > 0 and text:
        text = text[1:]  # cut at the budget: its first line is only a part
    return text[-count:], len(data)


class KeeperLink:
    """The daemon's end of the log keeper: pipes out, a keeper always there."""

    def __init__(
        self,
        state_dir: Path,
        max_bytes: int,
        files: int,
        known: Callable[[], set[str]],
        clock: Clock,
    ) -> None:
        self.path = state_dir / SOCKET_NAME
        self.clock = clock
        self.max_bytes, self.files = max_bytes, files
        self.known = known  # the keys of the agents the daemon knows: their pipes are kept
        self.sock: socket.socket | None = None
        self.held: dict[str, list[Held]] = {}  # key -> our read ends
        self.pid: int | None = None  # the keeper's, once known
        self.protocol = 1  # the keeper's (logkeeper.PROTOCOL), once known
        self.code = _code_on_disk()  # the keeper's, as this daemon loaded it
        self.retry: Timer | None = None  # armed while a keeper could not be started

    def attach(self) -> None:
        """Reach the keeper that outlived the previous daemon, and take its pipes; or start one."""
        if self.sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.settimeout(KEEPER_TIMEOUT)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            self._start()
            return
        self.sock = sock
        try:
            self._take_pipes()
        except (OSError, ValueError) as exc:
            log.warning("the log keeper did not hand its pipes over (%s): starting another", exc)
            self._lost()
            return
        known = self.known()
        for key in [k for k in self.held if k not in known]:
            self.release(key)  # an orphan's: the keeper drains it, we need not hold it
        self._watch()

    def pipes(self, key: str, path: Path) -> tuple[int, int]:
        """New pipes for an agent run: their write ends, for its stdout and its stderr."""
        self.attach()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the keeper makes the file
        ends, run = [], []
        for stream in STREAMS:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            run.append(Held(read_end, str(path), stream))
            ends.append(write_end)
        self.held.setdefault(key, []).extend(run)
        self._send_keep(key, run)
        return ends[0], ends[1]

    def release(self, key: str) -> None:
        """An agent run ended: the keeper drains what is left; we need not hold its pipes."""
        for held in self.held.pop(key, []):
            os.close(held.fd)

    def limits(self, max_bytes: int, files: int) -> None:
        self.max_bytes, self.files = max_bytes, files
        if self.sock is not None:
            self._send({"op": "limits", "max_bytes": max_bytes, "files": files})

    def close(self) -> None:
        """The daemon is going: the keeper goes on alone while agents write."""
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        self._disconnect()
        for key in list(self.held):
            self.release(key)

    def _disconnect(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self.sock)
            self.sock.close()
            self.sock = None

    # -- the keeper ------------------------------------------------------------

    def _start(self) -> None:
        # Bind, connect, then start the keeper on the listening socket: it accepts us
        # first, and nothing another process does between can come in between.
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        listener.listen(4)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.settimeout(KEEPER_TIMEOUT)
        sock.connect(str(self.path))
        # -P and cwd /: the daemon may have been started anywhere, and -m would put
        # that directory first on the keeper's import path (root importing what is there).
        keeper = subprocess.Popen(
            [sys.executable, "-P", "-m", "sessiond.daemon.logkeeper", str(listener.fileno())],
            stdin=subprocess.DEVNULL, pass_fds=(listener.fileno(),), start_new_session=True,
            cwd="/",
        )  # fmt: skip
        listener.close()
        # A package changed on disk since this daemon started may be older: a pipe a packet.
        same = _code_on_disk() == self.code
        self.sock, self.pid, self.protocol = sock, keeper.pid, PROTOCOL if same else 1
        log.debug("log keeper started (pid %d)", keeper.pid)
        for key, pipes in self.held.items():  # a keeper that died: hand the pipes again
            if not self._send_keep(key, pipes):
                break  # the next keeper was handed them all, or will be
        self._watch()

    def _take_pipes(self) -> None:
        assert self.sock is not None
        self.sock.send(json.dumps({"op": "give"}).encode())
        while True:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, PACKET_MAX, 1)
            if not data:
                raise OSError("the keeper closed the connection")
            message = json.loads(data)
            if message["op"] == "end":
                self.pid, self.protocol = int(message["pid"]), int(message.get("version", 1))
                return
            for fd in fds:
                os.set_inheritable(fd, False)
                held = Held(fd, str(message["path"]), str(message.get("stream", "out")))
                self.held.setdefault(message["key"], []).append(held)

    def _watch(self) -> None:
        with contextlib.suppress(RuntimeError):  # no loop yet: attach() at start-up
            assert self.sock is not None
            asyncio.get_running_loop().add_reader(self.sock, self._readable)

    def _readable(self) -> None:
        # The keeper never speaks unasked: readable means it ended.
        assert self.sock is not None
        try:
            data = self.sock.recv(PACKET_MAX)
        except OSError:
            data = b""
        if not data:
            log.warning("the log keeper (pid %s) ended: starting another", self.pid)
            self._lost()

    def _lost(self) -> None:
        """The keeper ended or stopped answering: end it for sure, start another."""
        if self.retry is not None:  # one try pending at most, and close() can cancel it
            self.retry.cancel()
            self.retry = None
        self._disconnect()
        if self.pid is not None and _is_keeper(self.pid):
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)  # a wedged one must not write beside the next
        try:
            self._start()
        except OSError as exc:
            log.error("unable to start the log keeper: %s; trying again in %gs", exc,
                      KEEPER_RETRY)  # fmt: skip
            self.retry = self.clock.later(KEEPER_RETRY, self._lost)

    def _send_keep(self, key: str, pipes: list[Held]) -> bool:
        """Hand the keeper these pipes of an agent; whether it got them (if not, every pipe
        held goes to the next keeper). A run's go in one packet if the keeper takes that
        (PROTOCOL 2): at 200 agents starting, 400 packets filled the socket's buffer while
        the keeper, niced, waited for a core, and each spawn then waited for the keeper."""
        limits = {"max_bytes": self.max_bytes, "files": self.files}
        if self.protocol >= 2 and len(pipes) <= len(STREAMS):  # a key's pipes share its path
            streams = [held.stream for held in pipes]
            message = {"op": "keep", "key": key, "path": pipes[0].path, "streams": streams}
            return self._send({**message, **limits}, [held.fd for held in pipes])
        for held in pipes:
            message = {"op": "keep", "key": key, "path": held.path, "stream": held.stream}
            if not self._send({**message, **limits}, [held.fd]):
                return False  # the next keeper was handed every pipe held, these included
        return True

    def _send(self, message: dict[str, object], fds: list[int] | None = None) -> bool:
        """Whether the keeper got it; if not, another keeper is started (or will be)."""
        assert self.sock is not None
        packet = json.dumps(message).encode()
        try:
            if fds is None:
                self.sock.send(packet)
            else:
                socket.send_fds(self.sock, [packet], fds)
        except OSError as exc:
            log.warning("unable to reach the log keeper (%s): starting another", exc)
            self._lost()  # re-sends everything held, this pipe included
            return False
        return True


def _code_on_disk() -> tuple[int, int, int] | None:
    """Which logkeeper.py a keeper started now would run: its inode, size and mtime."""
    try:
        found = os.stat(logkeeper.__file__)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def _is_keeper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"sessiond.daemon.logkeeper" in f.read()
    except OSError:
        return False
