"""Where a daemon lives (its socket and state directory), and the lock: one daemon there."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sessiond.errors import StartupError
from sessiond.paths import system_socket, system_state_dir, user_socket


@dataclass(frozen=True)
class DaemonPaths:
    socket: Path
    state_dir: Path


def user_state_dir(environ: Mapping[str, str] = os.environ) -> str:
    """platformdirs.user_state_dir("sessiond") on Linux, without importing platformdirs (whose
    import the daemon need not pay): $XDG_STATE_HOME if absolute, else ~/.local/state."""
    xdg = environ.get("XDG_STATE_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.expanduser("~/.local/state")
    return os.path.join(base, "sessiond")


def daemon_paths(user_mode: bool, socket_path: str | None, state_dir: str | None) -> DaemonPaths:
    """--socket / --state-dir, else the mode's defaults (SPEC §5)."""
    if user_mode:
        socket_path, state_dir = socket_path or user_socket(), state_dir or user_state_dir()
    return DaemonPaths(Path(socket_path or system_socket()), Path(state_dir or system_state_dir()))


class InstanceLock:
    """One daemon per state directory: an flock on STATE_DIR/sessiond.lock."""

    def __init__(self, state_dir: Path, user_mode: bool = False) -> None:
        self.path = state_dir / "sessiond.lock"
        self.fd = -1
        self.stop = "kill PID" if user_mode else "systemctl stop sessiond"

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise StartupError(
                f"unable to start: another sessiond (pid {holder}) is running on the state "
                f"directory {self.path.parent}",
                f"stop it first ('{self.stop.replace('PID', holder)}'), or give this one its "
                "own --state-dir",
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
