"""A stdlib-only JSON-RPC 2.0 client for the sessiond socket (SPEC §6).

One `Client` holds one connection, opened on the first call. `call()` sends a
request with named params and an integer id, then reads `\\n`-terminated lines
until the response with that id arrives. Notifications that arrive meanwhile
are kept, in order, for `notifications()`, so a `subscribe` followed by a tail
loses nothing. Errors come back as exceptions:

    SessiondError
    ├── RemoteError       the daemon answered with a JSON-RPC error
    ├── ProtocolError     the daemon sent something that is not JSON-RPC
    └── Unreachable       no connection, or it went away (sessionc exits 3)
        ├── Disconnected  the daemon closed the connection
        └── NoReply       no reply within the timeout

The hints of the last three name what applies to the daemon's mode, as far as
the socket tells it (`daemon_mode`): `systemctl status sessiond` for the system
daemon, `systemctl --user …` or its stderr for a user daemon, both otherwise.

This module must stay cheap to import: `sessionc` starts with it.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections import deque
from types import EllipsisType

from sessiond import paths
from sessiond.errors import EXIT_UNREACHABLE, SessiondError, exit_code_for

TYPE_CHECKING = False  # typing and pathlib would cost every sessionc start milliseconds
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any, Self

START_HINT = (
    "start it with 'systemctl start sessiond' "
    "(or 'sessiond --user' for a daemon of your own), or pass --socket PATH"
)
# By the daemon's mode (daemon_mode): how to start it, and where it says what went wrong.
START_HINTS = {
    "system": START_HINT,
    "user": "start yours with 'systemctl --user start sessiond' or 'sessiond --user' "
    "('./dev run' in a clone), or the system one with 'systemctl start sessiond', "
    "or pass --socket PATH",
    None: START_HINT,
}
LOG_HINTS = {
    "system": "'systemctl status sessiond' and 'journalctl -u sessiond'",
    "user": "'systemctl --user status sessiond' and 'journalctl --user -u sessiond', "
    "or the daemon's stderr if you started it yourself ('sessiond --user', './dev run')",
    None: "'systemctl status sessiond' and 'journalctl -u sessiond' (with --user for a user "
    "daemon), or the daemon's stderr if you started it yourself",
}
NO_XDG_HINT = (
    "; XDG_RUNTIME_DIR is unset or unusable here, hence this fallback: a daemon started "
    "where it is set listens in $XDG_RUNTIME_DIR/sessiond (set it alike, or pass --socket)"
)


def daemon_mode(path: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """'system' or 'user', the mode of the daemon at `path`, as far as sessionc can tell.

    The default sockets tell (paths.client_socket's choices), and so does a socket
    that root does not own: a system daemon's is root's. None for any other.
    """
    if path == paths.SYSTEM_SOCKET:
        return "system"
    # The suffix first: user_socket() may import tempfile (and shutil, bz2…) for its fallback.
    if path.endswith(f"/{paths.APP}/{paths.SOCKET_NAME}") and path == paths.user_socket(environ):
        return "user"
    try:
        return "user" if os.stat(path).st_uid != 0 else None
    except OSError:
        return None


def start_hint(path: str, environ: Mapping[str, str] = os.environ) -> str:
    """How to start the daemon that sessionc looked for at `path`."""
    mode = daemon_mode(path, environ)
    fallback = mode == "user" and os.path.dirname(path) == paths.fallback_runtime_dir(os.getuid())
    return START_HINTS[mode] + (NO_XDG_HINT if fallback else "")


STANDARD_NAMES = {
    -32700: "PARSE_ERROR",
    -32600: "INVALID_REQUEST",
    -32601: "METHOD_NOT_FOUND",
    -32602: "INVALID_PARAMS",
    -32603: "INTERNAL_ERROR",
}
_RECV_SIZE = 65536


class RemoteError(SessiondError):
    """A JSON-RPC error object from the daemon: code, message, hint, name, data."""

    def __init__(
        self, code: int, message: str, hint: str = "", name: str = "", data: Any = None
    ) -> None:
        super().__init__(message, hint)
        self.code = code
        self.name = name or STANDARD_NAMES.get(code, "ERROR")
        self.data = data

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.code)

    @classmethod
    def from_wire(cls, error: Any) -> RemoteError:
        if not isinstance(error, dict):
            return cls(-32603, f"malformed error from sessiond: {error!r}")
        data = error.get("data")
        extra = data if isinstance(data, dict) else {}
        code = error.get("code")
        return cls(
            code=code if isinstance(code, int) else -32603,
            message=str(extra.get("message") or error.get("message") or "unknown error"),
            hint=str(extra.get("hint") or ""),
            name=str(extra.get("name") or ""),
            data=data,
        )


class ProtocolError(SessiondError):
    """The daemon sent a line that is not a JSON-RPC message."""


class Unreachable(SessiondError):
    """No usable connection to the daemon at `path`."""

    exit_code = EXIT_UNREACHABLE

    def __init__(
        self,
        path: str | os.PathLike[str],
        reason: str,
        hint: str = START_HINT,
        verb: str = "unable to reach",
    ) -> None:
        super().__init__(f"{verb} sessiond at {path}: {reason}", hint)
        self.path = str(path)
        self.reason = reason


class Disconnected(Unreachable):
    def __init__(self, path: str | os.PathLike[str], midway: bool = False) -> None:
        reason = "the daemon closed it" + (" in the middle of a reply" if midway else "")
        hint = f"see {LOG_HINTS[daemon_mode(os.fspath(path))]}"
        super().__init__(path, reason, hint, verb="lost the connection to")


class NoReply(Unreachable):
    def __init__(self, path: str | os.PathLike[str], seconds: float) -> None:
        reason = f"no reply within {seconds:g}s"
        logs = LOG_HINTS[daemon_mode(os.fspath(path))]
        hint = f"if the daemon is stuck, see {logs}; else raise --rpc-timeout"
        super().__init__(path, reason, hint, verb="gave up on")


def _connect_reason(exc: OSError, path: str) -> tuple[str, str]:
    """Turn a connect() failure into (reason, hint) a person can act on."""
    if isinstance(exc, FileNotFoundError):
        return "no socket there (the daemon is not running?)", start_hint(path)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (a stale socket: the daemon is not running?)", start_hint(path)
    if isinstance(exc, PermissionError):
        return "permission denied", (
            "ask an admin to add you to the daemon's socket group (default 'sessiond'), "
            "then log in again"
        )
    return exc.strerror or str(exc), start_hint(path)


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


class Client:
    """One connection to sessiond. Usable as a context manager; not thread-safe."""

    def __init__(self, path: str | os.PathLike[str], timeout: float | None = 30.0) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._scanned = 0
        self._ids = itertools.count(1)
        self._pending: deque[tuple[str, Any]] = deque()
        self._eof = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def connect(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except TimeoutError:
            sock.close()
            raise NoReply(self.path, self.timeout or 0) from None
        except OSError as exc:
            sock.close()
            raise Unreachable(self.path, *_connect_reason(exc, self.path)) from None
        self._sock = sock
        self._buf.clear()
        self._scanned = 0
        self._eof = False

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | EllipsisType | None = ...,
    ) -> Any:
        """Send one request and return its result; `timeout=None` waits for ever."""
        limit = self.timeout if timeout is ... else timeout
        deadline = None if limit is None else time.monotonic() + limit
        self.connect()
        request_id = next(self._ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        self._send(json.dumps(request, separators=(",", ":")).encode() + b"\n", limit)
        while True:
            message = self._read_message(deadline, limit)
            if self._is_notification(message):
                self._pending.append((message["method"], message.get("params")))
            elif message.get("id") == request_id:
                if "error" in message:
                    raise RemoteError.from_wire(message["error"])
                return message.get("result")
            elif message.get("id") is None and "error" in message:
                raise RemoteError.from_wire(message["error"])  # e.g. LIMIT_REACHED on connect

    def notifications(self, idle: float | None = None) -> Iterator[tuple[str, Any] | None]:
        """Yield (method, params) of every notification, blocking, until the daemon closes;
        with `idle`, None each time that many seconds pass without one. Between two, the
        caller may make calls: the notifications that come meanwhile are yielded next."""
        self.connect()
        while True:
            if self._pending:
                yield self._pending.popleft()
                continue
            try:
                deadline = None if idle is None else time.monotonic() + idle
                message = self._read_message(deadline, idle)
            except NoReply:
                yield None
                continue
            if self._is_notification(message):
                yield message["method"], message.get("params")
            elif message.get("id") is None and "error" in message:
                raise RemoteError.from_wire(message["error"])

    @staticmethod
    def _is_notification(message: dict[str, Any]) -> bool:
        return "id" not in message and isinstance(message.get("method"), str)

    def _send(self, data: bytes, limit: float | None) -> None:
        assert self._sock is not None
        self._sock.settimeout(limit)
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise NoReply(self.path, limit or 0) from None
        except OSError:  # EPIPE, ECONNRESET: the daemon went away
            raise Disconnected(self.path) from None

    def _read_message(self, deadline: float | None, limit: float | None) -> dict[str, Any]:
        while True:
            line = self._read_line(deadline, limit).strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError as exc:
                raise ProtocolError(
                    f"sessiond at {self.path} sent a line that is not JSON: {exc}",
                    "is --socket pointing at a sessiond socket?",
                ) from None
            if isinstance(message, dict):
                return message
            # A list would be a batch reply; this client never sends batches.

    def _read_line(self, deadline: float | None, limit: float | None) -> bytes:
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buf)
            chunk = self._recv(deadline, limit) if not self._eof else b""
            if chunk:
                self._buf += chunk
                continue
            self._eof = True
            rest = bytes(self._buf).strip()
            self._buf.clear()
            self._scanned = 0
            if rest and _is_json(rest):
                return rest  # a last message without its newline: take it, fail next time
            raise Disconnected(self.path, midway=bool(rest))

    def _recv(self, deadline: float | None, limit: float | None) -> bytes:
        assert self._sock is not None
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise NoReply(self.path, limit or 0)
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(_RECV_SIZE)
        except TimeoutError:
            raise NoReply(self.path, limit or 0) from None
        except ConnectionResetError:
            raise Disconnected(self.path) from None
