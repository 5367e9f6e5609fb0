"""Agent logs: files the agents write themselves, bounded, tailed, followed.

An agent's stdout and stderr are a file it holds open (O_APPEND), so nothing
it writes depends on the daemon being alive. The daemon learns that a log
grew from inotify, not by polling, and then (a) rotates it once it passes
log_max_bytes, copying it to NAME.log.1 (older ones shift to .2 …) and
truncating it in place — the agent's O_APPEND writes carry on at the new
end, as with logrotate's copytruncate; and (b) sends new lines to `logs:NAME`
subscribers. A chatty log with no subscriber wakes the daemon at most once
a second: its watch is dropped for a second after each wake.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x00000002
_EVENT = struct.Struct("iIII")
QUIET_SECONDS = 1.0
BLOCK = 64 * 1024


def tail(path: Path, count: int, rotated: int = 3) -> list[str]:
    """The last `count` lines of a log, reaching into its rotated copies if needed."""
    lines: list[str] = []
    for n in range(rotated):
        file = path if n == 0 else path.with_name(f"{path.name}.{n}")
        try:
            lines = _last_lines(file, count - len(lines)) + lines
        except FileNotFoundError:
            break
        if len(lines) >= count:
            break
    return lines[-count:] if count else []


def _last_lines(path: Path, count: int) -> list[str]:
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            start = max(0, end - BLOCK)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    text = data.decode("utf-8", "replace").splitlines()
    return text[-count:]


def rotate(path: Path, files: int) -> None:
    """Copy-truncate: NAME.log → NAME.log.1, older copies shift, at most `files` in all."""
    for n in range(files - 1, 1, -1):
        older = path.with_name(f"{path.name}.{n - 1}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n}"))
    if files > 1:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as f:
        f.truncate(0)


class Watcher:
    """inotify on agent logs: rotation and live lines."""

    def __init__(
        self,
        max_bytes: int,
        files: int,
        on_lines: Callable[[str, list[str]], None],
        wanted: Callable[[str], bool],
    ) -> None:
        self.max_bytes, self.files = max_bytes, files
        self.on_lines = on_lines  # (key, new lines)
        self.wanted = wanted  # is anybody subscribed to this key?
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.paths: dict[str, Path] = {}
        self.offsets: dict[str, int] = {}
        self.by_wd: dict[int, str] = {}
        self.wd_of: dict[str, int] = {}
        self.quiet: dict[str, asyncio.TimerHandle] = {}
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def follow(self, key: str, path: Path) -> None:
        self.paths[key] = path
        self.offsets.setdefault(key, _size(path))
        self._watch(key)

    def forget(self, key: str) -> None:
        self._unwatch(key)
        if (timer := self.quiet.pop(key, None)) is not None:
            timer.cancel()
        self.paths.pop(key, None)
        self.offsets.pop(key, None)

    def subscribed(self, key: str) -> None:
        """A subscriber arrived: lines from now on, without the quiet period."""
        if key in self.paths:
            self.offsets[key] = _size(self.paths[key])
            self._rewatch(key)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)

    def _watch(self, key: str) -> None:
        if key in self.wd_of:
            return
        wd = self._libc.inotify_add_watch(self.fd, str(self.paths[key]).encode(), IN_MODIFY)
        if wd >= 0:
            self.by_wd[wd], self.wd_of[key] = key, wd

    def _unwatch(self, key: str) -> None:
        wd = self.wd_of.pop(key, None)
        if wd is not None:
            self.by_wd.pop(wd, None)
            self._libc.inotify_rm_watch(self.fd, wd)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        keys, offset = set(), 0
        while offset + _EVENT.size <= len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + length
            if wd in self.by_wd:
                keys.add(self.by_wd[wd])
        for key in keys:
            self._grew(key)

    def _grew(self, key: str) -> None:
        path = self.paths.get(key)
        if path is None:
            return
        if self.wanted(key):
            self._send_new_lines(key, path)
        if _size(path) > self.max_bytes:
            rotate(path, self.files)
            self.offsets[key] = 0
        if not self.wanted(key) and key not in self.quiet:
            self._unwatch(key)
            loop = asyncio.get_running_loop()
            self.quiet[key] = loop.call_later(QUIET_SECONDS, self._rewatch, key)

    def _rewatch(self, key: str) -> None:
        if (timer := self.quiet.pop(key, None)) is not None:
            timer.cancel()
        if key in self.paths:
            self._watch(key)
            if _size(self.paths[key]) > self.max_bytes:
                self._grew(key)

    def _send_new_lines(self, key: str, path: Path) -> None:
        start = self.offsets.get(key, 0)
        if start > _size(path):  # truncated under us (rotated, or by hand)
            start = 0
        try:
            with path.open("rb") as f:
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a half-written line waits for its end
        if complete:
            self.offsets[key] = start + len(complete)
            self.on_lines(key, complete.decode("utf-8", "replace").splitlines())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
