"""What a start must pass before it may take the lock, and the refusal when it cannot.

Everything here is checked without the lock: the name, the settings (with
the template's, re-validated), `--from OLD` (its owner or an admin, and only
a closed session). A start is then one synchronous step in `Sessions`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sessiond.core.records import Person, Session, check_name, generated_name
from sessiond.core.settings import AgentSpec, Config, SessionSettings, settings_for
from sessiond.daemon.access import Peer
from sessiond.daemon.locks import LockService
from sessiond.errors import InvalidState, PermissionDenied, SessionActive


@dataclass(frozen=True)
class StartRequest:
    name: str
    owner: Person
    settings: SessionSettings
    template: str | None
    parent: str | None


def prepare(
    config: Config, find: Callable[[str], Session], peer: Peer, tty: str | None, *,
    name: str | None, template: str | None, parent: str | None, overrides: Mapping[str, Any],
    admin: bool = False,
) -> StartRequest:  # fmt: skip
    """Check everything about a start that does not depend on the lock."""
    settings = settings_for(config.session, config.templates, template, overrides)
    parent_id = _parent_id(find(parent), parent, peer, admin) if parent else None
    owner = Person(peer.uid, peer.user, peer.pid, tty)
    return StartRequest(
        check_name(name) if name else generated_name(), owner, settings, template, parent_id
    )


def template_agents(config: Config, template: str | None) -> list[AgentSpec]:
    if template is None:
        return []
    return [config.agents[name] for name in config.templates[template].agents]


def active_error(
    live: Session | None, lock: LockService, holder: dict[str, Any] | None
) -> SessionActive:
    """Why a start that does not wait is refused: who holds the lock (here or on another
    host, as the lock says: `holder`), or who is next; `data` names session, owner, host."""
    if live is not None:
        name, user, tty, since, host = (live.name, live.owner.user, live.owner.tty,
                                        live.started_at, lock.host)  # fmt: skip
    elif holder is not None and "state" in holder:  # a session, not a claim being handed
        owner = holder.get("owner") or {}
        name, user, tty = str(holder.get("name")), str(owner.get("user")), owner.get("tty")
        since, host = holder.get("started_at"), str(holder.get("host"))
    else:  # free, and being handed to the first in line (`holder`: a claim, in a cluster)
        return _handed(holder or (lock.waiting()[0].to_wire() if lock.waiting() else {}), lock)
    where = f" on host {host}" if host != lock.host else ""
    at = f", {tty}" if tty else ""
    clock = _since(since)
    join = f"ssh {host} sessionc join {name}" if where else f"sessionc join {name}"
    error = SessionActive(
        f"session '{name}' is already active{where} (owner {user}{at}, since {clock})",
        f"join it with '{join}', or wait with 'sessionc start --wait'",
    )
    error.details = {"session": name, "owner": user, "host": host}
    return error


def _handed(first: dict[str, Any], lock: LockService) -> SessionActive:
    name, user, host = first.get("name"), first.get("user"), first.get("host")
    where = f" on host {host}" if host not in (None, lock.host) else ""
    who = f"'{name}' ({user}){where}" if name else "the first in line"
    error = SessionActive(f"the session lock is being handed to {who}, first in line",
                          "wait with 'sessionc start --wait'")  # fmt: skip
    error.details = {"session": name, "owner": user, "host": host or lock.host}
    return error


def _since(when: float | str | None) -> str:
    """HH:MM of a start: epoch seconds here, RFC 3339 from another host."""
    if isinstance(when, str):
        return dt.datetime.fromisoformat(when).astimezone().strftime("%H:%M")
    return dt.datetime.fromtimestamp(when or 0).strftime("%H:%M")


def _parent_id(found: Session, parent: str, peer: Peer, admin: bool) -> str:
    """--from OLD: OLD's owner and admins only, since its checkpoints come with it."""
    if not admin and peer.uid != found.owner.uid:
        raise PermissionDenied(
            f"{peer.user} may not start from session {found.name}: only its owner "
            f"({found.owner.user}) and admins may",
            "start without --from, or ask its owner or an admin",
        )
    if found.state.live:
        raise InvalidState(
            f"session '{parent}' is still live", "--from takes a closed session: stop it first"
        )
    return found.id
