"""One exception tree, one code table.

    SessiondError                 message + hint; never escapes main()
    ├── ConfigError               bad TOML, key, value or path; lists problems
    ├── StartupError              the daemon cannot start (lock held, bind failed)
    └── DomainError               answered to a client; has a JSON-RPC code
        ├── SessionActive         -32001  SESSION_ACTIVE
        ├── NoSession             -32002  NO_SESSION
        ├── SessionMismatch       -32003  SESSION_MISMATCH
        ├── PermissionDenied      -32004  PERMISSION_DENIED
        ├── InvalidState          -32005  INVALID_STATE
        ├── AgentNotFound         -32006  AGENT_NOT_FOUND
        ├── LimitReached          -32007  LIMIT_REACHED
        ├── WaitTimeout           -32008  WAIT_TIMEOUT
        ├── BadToken              -32009  BAD_TOKEN
        ├── StorageError          -32010  STORAGE_ERROR
        ├── RemoteSession         -32011  REMOTE_SESSION
        ├── ClusterUnavailable    -32012  CLUSTER_UNAVAILABLE
        └── InvalidParams         -32602  (standard JSON-RPC)

Handlers raise; the RPC boundary turns an exception into an error object with
`to_wire()`, and `sessionc` turns a code back into an exit status with
`EXIT_CODES`. Nobody else builds error dicts. This module is stdlib-only: the
client imports it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing and dataclasses would cost sessionc ~15 ms at every start
if TYPE_CHECKING:
    from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class SessiondError(Exception):
    """An error with a one-sentence message and a hint saying what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Problem:
    """One thing wrong with a configuration: where, what, and the rule broken."""

    __slots__ = ("file", "key", "rule", "value")

    def __init__(self, file: str, key: str, value: Any, rule: str) -> None:
        self.file, self.key, self.value, self.rule = file, key, value, rule

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((self.file, self.key, self.rule))

    def _fields(self) -> tuple[Any, ...]:
        return (self.file, self.key, self.value, self.rule)

    def __repr__(self) -> str:
        return f"Problem{self._fields()!r}"

    def __str__(self) -> str:
        shown = "" if self.value is None else f" = {self.value!r}"
        return f"{self.file}: {self.key}{shown}: {self.rule}"


class ConfigError(SessiondError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"invalid configuration ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}):\n{lines}",
            "fix the keys above; 'sessiond --check-config' checks a file without starting",
        )


class StartupError(SessiondError):
    pass


class DomainError(SessiondError):
    code: int = INTERNAL_ERROR
    name: str = "INTERNAL_ERROR"
    details: dict[str, Any] | None = None  # more of `data`, for scripts (SESSION_ACTIVE's host)

    def to_wire(self) -> dict[str, Any]:
        data = {"name": self.name, "message": self.message, "hint": self.hint}
        extra = self.details or {}
        return {"code": self.code, "message": self.message, "data": {**extra, **data}}


class SessionActive(DomainError):
    code, name = -32001, "SESSION_ACTIVE"


class NoSession(DomainError):
    code, name = -32002, "NO_SESSION"


class SessionMismatch(DomainError):
    code, name = -32003, "SESSION_MISMATCH"


class PermissionDenied(DomainError):
    code, name = -32004, "PERMISSION_DENIED"


class InvalidState(DomainError):
    code, name = -32005, "INVALID_STATE"


class AgentNotFound(DomainError):
    code, name = -32006, "AGENT_NOT_FOUND"


class LimitReached(DomainError):
    code, name = -32007, "LIMIT_REACHED"


class WaitTimeout(DomainError):
    code, name = -32008, "WAIT_TIMEOUT"


class BadToken(DomainError):
    code, name = -32009, "BAD_TOKEN"


class StorageError(DomainError):
    code, name = -32010, "STORAGE_ERROR"
    transient = True  # the disk (full, read-only): the same write may succeed later


class RemoteSession(DomainError):
    code, name = -32011, "REMOTE_SESSION"


class ClusterUnavailable(DomainError):
    code, name = -32012, "CLUSTER_UNAVAILABLE"


class InvalidParams(DomainError):
    code, name = INVALID_PARAMS, "INVALID_PARAMS"


# sessionc exit statuses (SPEC §7), by JSON-RPC error code.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_CODES: dict[int, int] = {
    SessionActive.code: 4,
    SessionMismatch.code: 4,
    RemoteSession.code: 4,  # like SESSION_ACTIVE: the lock is taken, here by another host
    NoSession.code: 5,
    AgentNotFound.code: 5,
    PermissionDenied.code: 6,
    BadToken.code: 6,
    WaitTimeout.code: 7,
    ClusterUnavailable.code: 8,
}


def exit_code_for(code: int) -> int:
    return EXIT_CODES.get(code, EXIT_FAILURE)
