"""Agent logs on the daemon's side: the pipes to the log keeper, tails, followers.

The log keeper (logkeeper.py, a process of its own) writes and rotates every
agent's log; the daemon does no file I/O of a size an agent chooses. Here:

  * `KeeperLink` gives each agent run a pipe: the write end becomes the
    agent's stdout and stderr, the read end goes to the keeper, and a
    duplicate of it stays here, so that the agent never gets EPIPE while
    either process is alive. A keeper that dies is started again and handed
    the pipes again; a daemon that restarts asks the running keeper for them.
  * `tail()` reads the last lines of a log and its rotated copies, at most
    TAIL_MAX_BYTES of them.
  * `Followers` send new lines to `logs:AGENT` subscribers: inotify on the
    log's directory (the keeper rotates by rename), at most one read every
    FOLLOW_PACE seconds and FOLLOW_MAX_LINES lines a read; a follower that
    falls further behind skips ahead and says how much it skipped. Nothing is
    watched while nobody follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .logkeeper import PACKET_MAX, SOCKET_NAME

log = logging.getLogger("sessiond.logs")

TAIL_MAX_BYTES = 4 << 20  # a logs.tail reads at most this much, whatever it asks for
BLOCK = 64 * 1024
FOLLOW_PACE = 0.1  # seconds between two reads of a followed log
FOLLOW_MAX_BYTES = 256 * 1024  # read at most this much of a followed log at a time
FOLLOW_MAX_LINES = 1000  # and send at most this many lines of it
KEEPER_TIMEOUT = 5.0  # seconds the daemon waits on the keeper's socket, at most

IN_MODIFY, IN_CREATE, IN_MOVED_TO = 0x2, 0x100, 0x80


def tail(path: Path, count: int, rotated: int = 3) -> list[str]:
    """The last `count` lines of a log, reaching into its rotated copies if needed."""
    lines: list[str] = []
    budget = TAIL_MAX_BYTES
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

    def __init__(self, state_dir: Path, max_bytes: int, files: int) -> None:
        self.path = state_dir / SOCKET_NAME
        self.max_bytes, self.files = max_bytes, files
        self.sock: socket.socket | None = None
        self.held: dict[str, list[tuple[int, str]]] = {}  # key -> our read ends, their paths
        self.pid: int | None = None  # the keeper's, once known

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
        self._watch()

    def pipe(self, key: str, path: Path) -> int:
        """A new pipe for an agent run: its write end, for the agent's stdout and stderr."""
        self.attach()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))  # there at once
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        self.held.setdefault(key, []).append((read_end, str(path)))
        self._send_keep(key, str(path), read_end)
        return write_end

    def release(self, key: str) -> None:
        """An agent run ended: the keeper drains what is left; we need not hold its pipes."""
        for fd, _ in self.held.pop(key, []):
            os.close(fd)

    def limits(self, max_bytes: int, files: int) -> None:
        self.max_bytes, self.files = max_bytes, files
        if self.sock is not None:
            self._send({"op": "limits", "max_bytes": max_bytes, "files": files})

    def close(self) -> None:
        """The daemon is going: the keeper goes on alone while agents write."""
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
        keeper = subprocess.Popen(
            [sys.executable, "-m", "sessiond.logkeeper", str(listener.fileno())],
            stdin=subprocess.DEVNULL, pass_fds=(listener.fileno(),), start_new_session=True,
        )  # fmt: skip
        listener.close()
        self.sock, self.pid = sock, keeper.pid
        log.debug("log keeper started (pid %d)", keeper.pid)
        for key, pipes in self.held.items():  # a keeper that died: hand the pipes again
            for fd, path in pipes:
                self._send_keep(key, path, fd)
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
                self.pid = int(message["pid"])
                return
            for fd in fds:
                os.set_inheritable(fd, False)
                self.held.setdefault(message["key"], []).append((fd, message["path"]))

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
        self._disconnect()
        self._start()

    def _send_keep(self, key: str, path: str, fd: int) -> None:
        message = {"op": "keep", "key": key, "path": path,
                   "max_bytes": self.max_bytes, "files": self.files}  # fmt: skip
        self._send(message, fd)

    def _send(self, message: dict[str, object], fd: int | None = None) -> None:
        assert self.sock is not None
        packet = json.dumps(message).encode()
        try:
            if fd is None:
                self.sock.send(packet)
            else:
                socket.send_fds(self.sock, [packet], [fd])
        except OSError as exc:
            log.warning("unable to reach the log keeper (%s): starting another", exc)
            self._lost()  # re-sends everything held, this pipe included


class Follower:
    """New lines of one agent's log, for its subscribers; paced and bounded."""

    def __init__(self, key: str, path: Path, send: Callable[[str, list[str]], None]) -> None:
        self.key, self.path, self.send = key, path, send
        self.file = _open_at_end(path)
        self.partial = b""
        self.timer: asyncio.TimerHandle | None = None
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = IN_MODIFY | IN_CREATE | IN_MOVED_TO
        libc.inotify_add_watch(self.fd, str(path.parent).encode(), mask)
        asyncio.get_running_loop().add_reader(self.fd, self._woken)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        else:
            asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
        if self.file is not None:
            self.file.close()

    def _woken(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass
        self.read()
        # At most one read a FOLLOW_PACE: meanwhile the kernel coalesces the events.
        asyncio.get_running_loop().remove_reader(self.fd)
        self.timer = asyncio.get_running_loop().call_later(FOLLOW_PACE, self._resume)

    def _resume(self) -> None:
        self.timer = None
        asyncio.get_running_loop().add_reader(self.fd, self._woken)

    def read(self) -> None:
        if self.file is None:
            self.file = _open_at_end(self.path, at_end=False)
            if self.file is None:
                return
        lines, skipped = self._new_lines()
        if _rotated(self.path, self.file):
            more, more_skipped = self._new_lines()  # the end of the file before the rename
            self.file.close()
            self.file, self.partial = _open_at_end(self.path, at_end=False), b""
            lines, skipped = lines + more, skipped + more_skipped
            if self.file is not None:
                more, more_skipped = self._new_lines()
                lines, skipped = lines + more, skipped + more_skipped
        cut = max(0, len(lines) - FOLLOW_MAX_LINES)
        if skipped or cut:
            note = (
                f"[sessiond: skipped {skipped} bytes and {cut} lines: they came faster than shown]"
            )
            lines = [note, *lines[cut:]]
        if lines:
            self.send(self.key, lines)

    def _new_lines(self) -> tuple[list[str], int]:
        """The complete lines written since the last read, and the bytes skipped to keep up."""
        assert self.file is not None
        size, at = os.fstat(self.file.fileno()).st_size, self.file.tell()
        if size < at:  # truncated in place (log_files = 1)
            self.file.seek(0)
            at, self.partial = 0, b""
        skipped = 0
        if size - at > FOLLOW_MAX_BYTES:
            self.file.seek(size - FOLLOW_MAX_BYTES)
            skipped = size - FOLLOW_MAX_BYTES - at + len(self.partial) + len(self.file.readline())
            self.partial = b""  # and resume at the start of a line
        data = self.partial + self.file.read(FOLLOW_MAX_BYTES)
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:][-FOLLOW_MAX_BYTES:]
        text = data[:cut].decode("utf-8", "replace").splitlines()
        return text, skipped


class Followers:
    """The followed logs, by key: one Follower while anybody subscribes."""

    def __init__(self, send: Callable[[str, list[str]], None], wanted: Callable[[str], bool]):
        self.send = send
        self.wanted = wanted
        self.by_key: dict[str, Follower] = {}

    def follow(self, key: str, path: Path) -> None:
        if key not in self.by_key:
            self.by_key[key] = Follower(key, path, self._send)

    def forget(self, key: str) -> None:
        follower = self.by_key.pop(key, None)
        if follower is not None:
            follower.close()

    def close(self) -> None:
        for key in list(self.by_key):
            self.forget(key)

    def _send(self, key: str, lines: list[str]) -> None:
        if self.wanted(key):
            self.send(key, lines)
        else:
            asyncio.get_running_loop().call_soon(self.forget, key)  # nobody left to read it


def _open_at_end(path: Path, at_end: bool = True) -> IO[bytes] | None:
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return None
    if at_end:
        file.seek(0, os.SEEK_END)
    return file


def _rotated(path: Path, file: IO[bytes]) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return True
