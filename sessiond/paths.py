"""Where the socket, the state and the config live (SPEC §5).

System mode takes systemd's RUNTIME_DIRECTORY / STATE_DIRECTORY with FHS
fallbacks; user mode takes platformdirs' user dirs. `sessionc` imports this
module, so it stays stdlib-light (no pathlib, no dataclasses: they cost the
client milliseconds at every start) and `user_runtime_dir()` follows the rule
platformdirs applies on Linux without importing it; a test holds the two to
the same answer.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

APP = "sessiond"
SOCKET_NAME = "sessiond.sock"
SYSTEM_RUNTIME_DIR = "/run/sessiond"
SYSTEM_STATE_DIR = "/var/lib/sessiond"
SYSTEM_SOCKET = f"{SYSTEM_RUNTIME_DIR}/{SOCKET_NAME}"


def first_dir(value: str) -> str:
    # systemd passes several directories colon-separated when a unit names several.
    return value.split(":", maxsplit=1)[0]


def _usable_runtime_dir(path: str, uid: int, may_be_missing: bool) -> bool:
    """A private directory of `uid`, or (for $XDG_RUNTIME_DIR) one not made yet."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return may_be_missing
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700


def user_runtime_dir(environ: Mapping[str, str] = os.environ) -> str:
    """platformdirs.user_runtime_dir("sessiond") without importing platformdirs."""
    uid = os.getuid()
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if xdg and _usable_runtime_dir(xdg, uid, may_be_missing=True):
        return os.path.join(xdg, APP)
    if _usable_runtime_dir(f"/run/user/{uid}", uid, may_be_missing=False):
        return f"/run/user/{uid}/{APP}"
    return fallback_runtime_dir(uid)


def fallback_runtime_dir(uid: int) -> str:
    """$TMPDIR/runtime-UID/sessiond: where neither $XDG_RUNTIME_DIR nor /run/user/UID will do."""
    import tempfile  # noqa: PLC0415 -- only this fallback needs it

    return os.path.join(tempfile.gettempdir(), f"runtime-{uid}", APP)


def user_socket(environ: Mapping[str, str] = os.environ) -> str:
    return os.path.join(user_runtime_dir(environ), SOCKET_NAME)


def system_socket(environ: Mapping[str, str] = os.environ) -> str:
    runtime = environ.get("RUNTIME_DIRECTORY")
    return os.path.join(first_dir(runtime) if runtime else SYSTEM_RUNTIME_DIR, SOCKET_NAME)


def system_state_dir(environ: Mapping[str, str] = os.environ) -> str:
    state = environ.get("STATE_DIRECTORY")
    return first_dir(state) if state else SYSTEM_STATE_DIR


def client_socket(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """--socket, then $SESSIOND_SOCKET, then the system socket if present, then the user one."""
    if explicit:
        return explicit
    if environ.get("SESSIOND_SOCKET"):
        return environ["SESSIOND_SOCKET"]
    if os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return user_socket(environ)
