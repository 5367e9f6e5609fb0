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
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sessiond.daemon.logkeeper import PACKET_MAX, SOCKET_NAME

log = logging.getLogger("sessiond.daemon.logs")

TAIL_MAX_BYTES = 4 << 20  # a logs.tail reads at most this much, whatever it asks for
BLOCK = 64 * 1024
FOLLOW_PACE = 0.1  # seconds between two reads of a followed log
FOLLOW_MAX_BYTES = 256 * 1024  # read at most this much of a followed log at a time
FOLLOW_MAX_LINES = 200  # and send at most this many lines of it: a person reads fewer
KEEPER_TIMEOUT = 5.0  # seconds the daemon waits on the keeper's socket, at most
KEEPER_RETRY = 1.0  # seconds between two tries to start a keeper that could not start

IN_MODIFY, IN_MOVE_SELF, IN_DELETE_SELF = 0x2, 0x800, 0x400
_EVENT = struct.Struct("iIII")  # struct inotify_event, before its name


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

    def __init__(
        self, state_dir: Path, max_bytes: int, files: int, known: Callable[[], set[str]]
    ) -> None:
        self.path = state_dir / SOCKET_NAME
        self.max_bytes, self.files = max_bytes, files
        self.known = known  # the keys of the agents the daemon knows: their pipes are kept
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
        known = self.known()
        for key in [k for k in self.held if k not in known]:
            self.release(key)  # an orphan's: the keeper drains it, we need not hold it
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
        # -P and cwd /: the daemon may have been started anywhere, and -m would put
        # that directory first on the keeper's import path (root importing what is there).
        keeper = subprocess.Popen(
            [sys.executable, "-P", "-m", "sessiond.daemon.logkeeper", str(listener.fileno())],
            stdin=subprocess.DEVNULL, pass_fds=(listener.fileno(),), start_new_session=True,
            cwd="/",
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
        """The keeper ended or stopped answering: end it for sure, start another."""
        self._disconnect()
        if self.pid is not None and _is_keeper(self.pid):
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)  # a wedged one must not write beside the next
        try:
            self._start()
        except OSError as exc:
            log.error("unable to start the log keeper: %s; trying again in %gs", exc,
                      KEEPER_RETRY)  # fmt: skip
            asyncio.get_running_loop().call_later(KEEPER_RETRY, self._lost)

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

    def __init__(self, key: str, path: Path) -> None:
        self.key, self.path = key, path
        self.file = _open_at_end(path)
        self.partial = b""
        self.wd: int | None = None  # its inotify watch, while one is set
        self.timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.file is not None:
            self.file.close()

    def read(self) -> list[str]:
        if self.file is None:
            self.file = _open_at_end(self.path, at_end=False)
            if self.file is None:
                return []
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
        return lines

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
    """The followed logs, by key, on one inotify instance (root has only 128 of them).

    Each followed file has a watch (IN_MODIFY, and IN_MOVE_SELF for a rotation).
    After a read the watch is taken off for FOLLOW_PACE, so that an agent writing
    flat out costs one wake-up a FOLLOW_PACE, not one a write; then it is set
    again, on whatever file the path names now, and read. A follower nobody
    wants any more is dropped at its next wake.
    """

    def __init__(self, send: Callable[[str, list[str]], None], wanted: Callable[[str], bool]):
        self.send = send
        self.wanted = wanted
        self.by_key: dict[str, Follower] = {}
        self.by_wd: dict[int, Follower] = {}
        self.fd = -1
        self._libc = ctypes.CDLL(None, use_errno=True)

    def follow(self, key: str, path: Path) -> None:
        if key in self.by_key:
            return
        if self.fd < 0:
            self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if self.fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1 failed")
            asyncio.get_running_loop().add_reader(self.fd, self._woken)
        follower = self.by_key[key] = Follower(key, path)
        self._watch(follower)

    def forget(self, key: str) -> None:
        follower = self.by_key.pop(key, None)
        if follower is not None:
            self._unwatch(follower)
            follower.close()

    def close(self) -> None:
        for key in list(self.by_key):
            self.forget(key)
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1

    def _watch(self, follower: Follower) -> None:
        mask = IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF
        wd = self._libc.inotify_add_watch(self.fd, str(follower.path).encode(), mask)
        if wd >= 0:
            follower.wd = wd
            self.by_wd[wd] = follower
        else:  # not there yet (between a rotation's rename and the new file): look again
            self._pause(follower)

    def _unwatch(self, follower: Follower) -> None:
        if follower.wd is not None:
            self.by_wd.pop(follower.wd, None)
            self._libc.inotify_rm_watch(self.fd, follower.wd)
            follower.wd = None

    def _woken(self) -> None:
        woken: dict[str, Follower] = {}
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.fd, 65536):
                at = 0
                while at + _EVENT.size <= len(data):
                    wd, _mask, _cookie, length = _EVENT.unpack_from(data, at)
                    at += _EVENT.size + length
                    if (follower := self.by_wd.get(wd)) is not None:
                        woken[follower.key] = follower
        for follower in woken.values():
            self._unwatch(follower)
            self._visit(follower)

    def _visit(self, follower: Follower) -> None:
        if not self.wanted(follower.key):
            self.forget(follower.key)
            return
        if lines := follower.read():
            self.send(follower.key, lines)
        self._pause(follower)

    def _pause(self, follower: Follower) -> None:
        loop = asyncio.get_running_loop()
        follower.timer = loop.call_later(FOLLOW_PACE, self._resume, follower)

    def _resume(self, follower: Follower) -> None:
        follower.timer = None
        if self.by_key.get(follower.key) is not follower:
            return
        self._watch(follower)
        if follower.wd is not None:
            if not self.wanted(follower.key):
                self.forget(follower.key)
            elif lines := follower.read():  # what came while it was not watched
                self.send(follower.key, lines)


def _is_keeper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"sessiond.daemon.logkeeper" in f.read()
    except OSError:
        return False


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
