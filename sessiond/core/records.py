"""Session records and their wire form.

A `Session` is a frozen snapshot: the manager builds the next one with
`dataclasses.replace`, writes it to the store, and only then makes it
current, so a failed write leaves the daemon exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

from sessiond.core.settings import SessionSettings, session_settings_to_wire
from sessiond.core.units import NAME_RE

from ..errors import InvalidParams, InvalidState
from .policy import errors_in_window
from .session import State


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidParams(
            f"invalid session name {name!r}",
            "a name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def check_leave(session: Session, uid: int, user: str) -> None:
    """Who may leave: a participant; never the owner, who stops the session instead."""
    if uid == session.owner.uid:
        raise InvalidState(
            f"{user} owns session '{session.name}' and cannot leave it",
            f"stop it with 'sessionc stop {session.name}'",
        )
    if uid not in session.participant_uids():
        raise InvalidState(
            f"{user} is not a participant of session '{session.name}'",
            f"join it first with 'sessionc join {session.name}'",
        )


def random_hex(nbytes: int) -> str:
    """secrets.token_hex(nbytes), which is this: importing secrets loads hmac, random and
    hashlib, which maps OpenSSL's libcrypto (2 to 7 ms of the daemon's start-up)."""
    return os.urandom(nbytes).hex()


def generated_name() -> str:
    return f"s-{random_hex(4)}"


def new_id() -> str:
    """A random UUID, version 4, as str(uuid.uuid4()) writes it, without the uuid module:
    importing it runs platform.system(), 3 ms of the daemon's start-up."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # the version: 4
    raw[8] = raw[8] & 0x3F | 0x80  # the variant: RFC 4122
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


ERROR_TEXT_MAX = 2000  # characters of an error's text kept: a report may hold a megabyte


def clip_error(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Person:
    uid: int
    user: str
    pid: int | None
    tty: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"uid": self.uid, "user": self.user, "pid": self.pid, "tty": self.tty}


@dataclass(frozen=True)
class Participant:
    who: Person
    joined_at: float

    def to_wire(self) -> dict[str, Any]:
        return {**self.who.to_wire(), "joined_at": rfc3339(self.joined_at)}


@dataclass(frozen=True)
class ErrorNote:
    """The last error of a session: which agent, what it said, when (SPEC §2.3)."""

    agent: str | None
    text: str
    at: float

    def to_wire(self) -> dict[str, Any]:
        return {"agent": self.agent, "text": self.text, "at": rfc3339(self.at)}


@dataclass(frozen=True)
class Session:
    id: str
    name: str
    state: State
    owner: Person
    settings: SessionSettings
    created_at: float
    last_activity: float
    # Where it runs, and its fence: larger than that of every session that took the lock
    # before it (SPEC §10); 0 for sessions from before fences.
    host: str
    fence: int
    started_at: float | None = None
    template: str | None = None
    parent: str | None = None
    closed_at: float | None = None
    close_reason: str | None = None
    pause_reason: str | None = None
    errors_reset_at: float | None = None
    # The times of the errors that may still count, since the last reconnect: the
    # session's own, so a new session starts with none (SPEC §2.3).
    error_times: tuple[float, ...] = ()
    last_error: ErrorNote | None = None
    participants: tuple[Participant, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def participant_uids(self) -> frozenset[int]:
        return frozenset(p.who.uid for p in self.participants)

    def error_count(self, now: float) -> int:
        """Errors within error_window of `now` (none once the session has ended)."""
        if not self.state.live:
            return 0
        return errors_in_window(list(self.error_times), now, self.settings.error_window)

    def with_error(self, agent: str | None, text: str, now: float) -> Session:
        """This session after one more error; times older than the window are forgotten."""
        window = self.settings.error_window
        kept = tuple(t for t in self.error_times if now - t < window)
        return replace(self, error_times=(*kept, now), last_error=ErrorNote(agent, text, now))

    def to_row(self) -> dict[str, Any]:
        last = self.last_error
        return {
            "id": self.id, "name": self.name, "state": self.state.value,
            "owner_uid": self.owner.uid, "owner_user": self.owner.user,
            "owner_pid": self.owner.pid, "owner_tty": self.owner.tty,
            "template": self.template, "parent": self.parent,
            "settings": session_settings_to_wire(self.settings), "metrics": dict(self.metrics),
            "created_at": self.created_at, "started_at": self.started_at,
            "last_activity": self.last_activity, "closed_at": self.closed_at,
            "close_reason": self.close_reason, "pause_reason": self.pause_reason,
            "errors_reset_at": self.errors_reset_at,
            "last_error_agent": last.agent if last else None,
            "last_error_text": last.text if last else None,
            "last_error_at": last.at if last else None,
            "host": self.host, "fence": self.fence,
        }  # fmt: skip

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], participants: list[dict[str, Any]],
        error_times: tuple[float, ...] = (),
    ) -> Session:  # fmt: skip
        owner = Person(row["owner_uid"], row["owner_user"], row["owner_pid"], row["owner_tty"])
        people = tuple(
            Participant(Person(p["uid"], p["user"], p["pid"], p["tty"]), p["joined_at"])
            for p in participants
        )
        return cls(
            id=row["id"], name=row["name"], state=State(row["state"]), owner=owner,
            settings=SessionSettings(**row["settings"]), created_at=row["created_at"],
            last_activity=row["last_activity"], host=row["host"], fence=row["fence"],
            started_at=row["started_at"],
            template=row["template"], parent=row["parent"], closed_at=row["closed_at"],
            close_reason=row["close_reason"], pause_reason=row["pause_reason"],
            errors_reset_at=row["errors_reset_at"], error_times=error_times,
            last_error=None if row["last_error_at"] is None else ErrorNote(
                row["last_error_agent"], row["last_error_text"], row["last_error_at"]),
            participants=people, metrics=MappingProxyType(row["metrics"]),
        )  # fmt: skip

    def to_wire(self) -> dict[str, Any]:
        """The session on the wire, but its agents and error count, which the shell puts
        in (a fresh top level and `errors`, so it may; what is below is shared)."""
        made = self._wire
        return {**made, "errors": {**made["errors"]}}

    @cached_property
    def _wire(self) -> dict[str, Any]:
        """Made once: a snapshot never changes, and a status loop asks for the same one
        (its nine times and the settings cost ~30 us to write out)."""
        s = self.settings
        live = self.state.live
        return {
            "name": self.name, "id": self.id, "state": self.state.value,
            "owner": self.owner.to_wire(), "template": self.template, "parent": self.parent,
            "created_at": rfc3339(self.created_at), "started_at": rfc3339(self.started_at),
            "last_activity": rfc3339(self.last_activity),
            "expires_at": rfc3339(self.last_activity + s.timeout) if live else None,
            "idle_at": rfc3339(self.last_activity + s.idle_after)
            if self.state is State.ACTIVE else None,
            "closed_at": rfc3339(self.closed_at), "close_reason": self.close_reason,
            "pause_reason": self.pause_reason,
            "participants": [p.to_wire() for p in self.participants],
            "agents": [],
            "errors": {"count": 0, "threshold": s.error_threshold, "window": s.error_window,
                       "last": self.last_error.to_wire() if self.last_error else None},
            "metrics": dict(self.metrics),
            "settings": session_settings_to_wire(s),
            "host": self.host, "fence": self.fence,
        }  # fmt: skip
