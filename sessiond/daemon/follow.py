"""New lines of agents' logs for `logs:AGENT` subscribers: paced inotify followers.

`Followers` watches each followed log with inotify on one instance (the
keeper rotates by rename, so a rotation is IN_MOVE_SELF), reads at most once
every FOLLOW_PACE seconds and sends at most FOLLOW_MAX_LINES lines a read; a
follower that falls further behind skips ahead and says how much it skipped.
Nothing is watched while nobody follows. The pauses are timers of the
daemon's clock, so they end with the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sessiond.daemon.clock import Clock, Timer

FOLLOW_PACE = 0.1  # seconds between two reads of a followed log
FOLLOW_MAX_BYTES = 256 * 1024  # read at most this much of a followed log at a time
FOLLOW_MAX_LINES = 200  # and send at most this many lines of it: a person reads fewer

IN_MODIFY, IN_MOVE_SELF, IN_DELETE_SELF = 0x2, 0x800, 0x400
IN_MOVED_TO, IN_CREATE, IN_ONLYDIR = 0x80, 0x100, 0x1000000
_EVENT = struct.Struct("iIII")  # struct inotify_event, before its name


class Follower:
    """New lines of one agent's log, for its subscribers; paced and bounded."""

    def __init__(self, key: str, path: Path) -> None:
        self.key, self.path = key, path
        self.file = _open_at_end(path)
        self.partial = b""
        self.wd: int | None = None  # its inotify watch, while one is set
        self.awaiting: int | None = None  # its directory's watch, while the file is not there
        self.timer: Timer | None = None

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
    again, on whatever file the path names now, and read. A log that is not there
    (the keeper makes it at its agent's first output, and anew after a rotation's
    rename) is awaited by a watch of its directory (IN_CREATE, IN_MOVED_TO), one for
    every follower waiting there. A follower nobody wants any more is dropped at its
    next wake.
    """

    def __init__(
        self,
        send: Callable[[str, list[str]], None],
        wanted: Callable[[str], bool],
        clock: Clock,
    ) -> None:
        self.send = send
        self.wanted = wanted
        self.clock = clock
        self.by_key: dict[str, Follower] = {}
        self.by_wd: dict[int, Follower] = {}
        self.awaited: dict[int, dict[bytes, Follower]] = {}  # by directory watch, by file name
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
        else:  # not made yet (the keeper makes it at the first output), or mid-rotation
            self._await(follower)

    def _await(self, follower: Follower) -> None:
        """Watch the log's directory until the log is there; the paced retry without one."""
        mask = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR
        wd = self._libc.inotify_add_watch(self.fd, str(follower.path.parent).encode(), mask)
        if wd < 0:  # no directory yet either: no agent run of that session has started
            self._pause(follower)
            return
        follower.awaiting = wd
        self.awaited.setdefault(wd, {})[follower.path.name.encode()] = follower
        if follower.path.exists():  # made between the two watches
            self._arrived(follower)

    def _arrived(self, follower: Follower) -> None:
        self._unwatch(follower)
        self._resume(follower)

    def _unwatch(self, follower: Follower) -> None:
        if follower.wd is not None:
            self.by_wd.pop(follower.wd, None)
            self._libc.inotify_rm_watch(self.fd, follower.wd)
            follower.wd = None
        if follower.awaiting is not None:
            waiting = self.awaited.get(follower.awaiting, {})
            waiting.pop(follower.path.name.encode(), None)
            if not waiting:  # the last follower waiting in that directory
                self.awaited.pop(follower.awaiting, None)
                self._libc.inotify_rm_watch(self.fd, follower.awaiting)
            follower.awaiting = None

    def _woken(self) -> None:
        woken: dict[str, Follower] = {}
        arrived: dict[str, Follower] = {}
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.fd, 65536):
                at = 0
                while at + _EVENT.size <= len(data):
                    wd, _mask, _cookie, length = _EVENT.unpack_from(data, at)
                    name = data[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0")
                    at += _EVENT.size + length
                    if (follower := self.by_wd.get(wd)) is not None:
                        woken[follower.key] = follower
                    elif (follower := self.awaited.get(wd, {}).get(name)) is not None:
                        arrived[follower.key] = follower
        for follower in woken.values():
            self._unwatch(follower)
            self._visit(follower)
        for follower in arrived.values():
            if follower.awaiting is not None:  # not forgotten meanwhile
                self._arrived(follower)

    def _visit(self, follower: Follower) -> None:
        if not self.wanted(follower.key):
            self.forget(follower.key)
            return
        if lines := follower.read():
            self.send(follower.key, lines)
        self._pause(follower)

    def _pause(self, follower: Follower) -> None:
        follower.timer = self.clock.later(FOLLOW_PACE, self._resume, follower)

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
