"""Where the socket, the state and the config live (SPEC §5).

System mode takes systemd's RUNTIME_DIRECTORY / STATE_DIRECTORY with FHS
fallbacks; user mode takes platformdirs' user dirs. This module is stdlib-only
because `sessionc` imports it: `user_runtime_dir()` follows the rule
platformdirs applies on Linux, and a test holds the two to the same answer.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP = "sessiond"
SOCKET_NAME = "sessiond.sock"
SYSTEM_RUNTIME_DIR = Path("/run/sessiond")
SYSTEM_STATE_DIR = Path("/var/lib/sessiond")
SYSTEM_SOCKET = SYSTEM_RUNTIME_DIR / SOCKET_NAME


def _first(value: str) -> Path:
    # systemd passes several directories colon-separated when a unit names several.
    return Path(value.split(":")[0])


def _private_dir(path: str, uid: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700


def user_runtime_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """platformdirs.user_runtime_dir("sessiond") without importing platformdirs."""
    uid = os.getuid()
    for candidate in (environ.get("XDG_RUNTIME_DIR", ""), f"/run/user/{uid}"):
        if candidate and _private_dir(candidate, uid):
            return Path(candidate) / APP
    return Path(tempfile.gettempdir()) / f"runtime-{uid}" / APP


def user_socket(environ: Mapping[str, str] = os.environ) -> Path:
    return user_runtime_dir(environ) / SOCKET_NAME


def client_socket(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """--socket, then $SESSIOND_SOCKET, then the system socket if present, then the user one."""
    if explicit:
        return Path(explicit)
    if environ.get("SESSIOND_SOCKET"):
        return Path(environ["SESSIOND_SOCKET"])
    if SYSTEM_SOCKET.exists():
        return SYSTEM_SOCKET
    return user_socket(environ)


@dataclass(frozen=True)
class DaemonPaths:
    socket: Path
    state_dir: Path


def daemon_paths(
    user_mode: bool,
    socket: str | None,
    state_dir: str | None,
    environ: Mapping[str, str] = os.environ,
) -> DaemonPaths:
    if user_mode:
        import platformdirs  # noqa: PLC0415 -- only user mode needs it

        default_socket = user_socket(environ)
        default_state = Path(platformdirs.user_state_dir(APP))
    else:
        runtime = environ.get("RUNTIME_DIRECTORY")
        state = environ.get("STATE_DIRECTORY")
        default_socket = (_first(runtime) if runtime else SYSTEM_RUNTIME_DIR) / SOCKET_NAME
        default_state = _first(state) if state else SYSTEM_STATE_DIR
    return DaemonPaths(
        socket=Path(socket) if socket else default_socket,
        state_dir=Path(state_dir) if state_dir else default_state,
    )
