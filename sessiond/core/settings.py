"""The settings: frozen dataclasses, and the one table per section that types them.

Every key is declared once, in a settings table (`DAEMON_KEYS`, `SESSION_KEYS`,
`CLUSTER_KEYS`, `AGENT_KEYS`, `TEMPLATE_KEYS`): its name; a small validator (validators.py) that
turns a raw value (TOML value, environment or `--set` string, JSON number) into a
typed one or raises ValueError whose message is the rule; the default, read from the
dataclass; a help line; for [session] keys, the environment variable. The same
tables drive the TOML parser (config.py), `SESSIOND_<KEY>` overrides, per-session
overrides (`session.start`, `--set`, templates) and the reference the docs show.

A session's settings, lowest precedence first: the dataclass defaults, [session]
in the file, `SESSIOND_<KEY>`, the template, that one session's overrides: each
step re-validates its raw values through the same table (`session_overrides`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from sessiond.core import validators as v
from sessiond.core.units import HOST_RE, HOST_RULE, NAME_RE, NAME_RULE
from sessiond.core.validators import Parser
from sessiond.errors import ConfigError, InvalidParams, Problem


class OnShutdown(enum.StrEnum):
    STOP = "stop"
    KEEP = "keep"


class RestartPolicy(enum.StrEnum):
    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class DaemonSettings:
    socket_group: str = "sessiond"
    admin_group: str = "sessiond-admin"
    on_shutdown: OnShutdown = OnShutdown.STOP
    max_clients: int = 256
    max_clients_per_user: int = 32
    idle_client_timeout: float = 600.0
    max_request_bytes: int = 1048576
    client_timeout: float = 30.0
    network_grace: float = 2.0
    history_days: int = 30
    log_max_bytes: int = 10485760
    log_files: int = 3


@dataclass(frozen=True)
class SessionSettings:
    timeout: float = 1800.0
    idle_after: float = 300.0
    error_threshold: int = 5
    error_window: float = 900.0
    max_agents: int = 64
    max_duration: float | None = None
    stop_at: str | None = None  # normalised "HH:MM", local time


@dataclass(frozen=True)
class ClusterSettings:
    backend: str = "local"  # or "etcd"
    endpoints: tuple[str, ...] = ()
    name: str = "default"
    host: str = ""  # "": the machine's host name, which the daemon looks up (core makes no calls)
    lease_ttl: float = 10.0
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def addresses(self) -> tuple[str, ...]:
        """The endpoints as "HOST:PORT", the scheme dropped: what a client dials."""
        return tuple(endpoint.rpartition("://")[2] for endpoint in self.endpoints)

    @property
    def tls(self) -> bool:
        return bool(self.ca_file) or any(e.startswith("https://") for e in self.endpoints)


@dataclass(frozen=True)
class AgentSpec:
    name: str
    command: tuple[str, ...]
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    user: str | None = None  # None: the session owner
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    min_uptime: float = 10.0
    max_restarts: int = 3
    stop_timeout: float = 10.0
    needs_network: bool = False
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Template:
    name: str
    agents: tuple[str, ...] = ()
    session: tuple[tuple[str, Any], ...] = ()  # validated [session] overrides, typed

    def apply(self, base: SessionSettings) -> SessionSettings:
        return replace(base, **dict(self.session))


@dataclass(frozen=True)
class Config:
    daemon: DaemonSettings = DaemonSettings()
    session: SessionSettings = SessionSettings()
    cluster: ClusterSettings = ClusterSettings()
    agents: Mapping[str, AgentSpec] = field(default_factory=lambda: MappingProxyType({}))
    templates: Mapping[str, Template] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None  # the file it came from; None for the embedded defaults


# --- the settings tables ------------------------------------------------------

_DURATION = v.duration()
_DURATION_OR_ZERO = v.duration(zero=True)
_DURATION_OR_NONE = v.duration(optional=True)
_LEASE_TTL = v.duration(least=3.0)  # renewed every third of it, given up at half (SPEC §10)
_DURATIONS = (_DURATION, _DURATION_OR_ZERO, _DURATION_OR_NONE, _LEASE_TTL)
_ACCOUNT = r"[^\s:/,]{1,256}"
_ACCOUNT_RULE = "must be a user or group name (no spaces, ':', ',' or '/')"
_FILE = v.text(r"(?:/[^\0]*)?", 'must be an absolute path, or "" for none')
_LABELS = v.names("must be a list of distinct labels, each " + NAME_RULE.removeprefix("must be "))


@dataclass(frozen=True)
class Setting:
    key: str
    parse: Parser
    default: Any  # dataclasses.MISSING: required
    help: str
    env: str | None = None  # the SESSIOND_<KEY> override, for [session] keys
    shown: str = ""  # the default as the docs show it, when not derived from `default`

    @property
    def duration(self) -> bool:
        return self.parse in _DURATIONS


def _table(cls: type, env: bool, rows: Iterable[tuple[Any, ...]]) -> dict[str, Setting]:
    defaults = {f.name: f.default for f in fields(cls)}
    table = {}
    for key, parse, text, *more in rows:
        variable = f"SESSIOND_{key.upper()}" if env else None
        table[key] = Setting(key, parse, defaults[key], text, variable, *more)
    return table


DAEMON_KEYS = _table(DaemonSettings, False, [
    ("socket_group", v.text(_ACCOUNT, _ACCOUNT_RULE), "group allowed on the socket (system mode)"),
    ("admin_group", v.text(_ACCOUNT, _ACCOUNT_RULE), "its members are admins of every session"),
    ("on_shutdown", v.choice(OnShutdown), 'on SIGTERM, "stop" the agents or "keep" them running'),
    ("max_clients", v.integer(1, 65536), "connections at once"),
    ("max_clients_per_user", v.integer(1, 65536),
     "connections of one uid at once (root and admins: no limit of their own)"),
    ("idle_client_timeout", _DURATION,
     "a connection with no request and no subscription is closed after this"),
    ("max_request_bytes", v.integer(1024, 64 << 20), "longest request line"),
    ("client_timeout", _DURATION, "a half-sent request is cut off after this"),
    ("network_grace", _DURATION_OR_ZERO, "the network must be back this long to resume"),
    ("history_days", v.integer(1, 36500), "closed sessions are kept this many days"),
    ("log_max_bytes", v.integer(4096), "per agent log file, then rotated"),
    ("log_files", v.integer(1, 1000), "agent log files kept, counting the current one"),
])  # fmt: skip
SESSION_KEYS = _table(SessionSettings, True, [
    ("timeout", _DURATION, "no activity for this long: the session expires"),
    ("idle_after", _DURATION, "no activity for this long: the session is idle"),
    ("error_threshold", v.integer(1, 1_000_000), "this many errors: disconnected"),
    ("error_window", _DURATION, "errors older than this no longer count"),
    ("max_agents", v.integer(1, 10000), "agents in one session at most"),
    ("max_duration", _DURATION_OR_NONE, 'the session is closed after this; "" for none'),
    ("stop_at", v.clock, 'the session is closed at this local time "HH:MM"; "" for none'),
])  # fmt: skip
CLUSTER_KEYS = _table(ClusterSettings, False, [
    ("backend", v.text("local|etcd", 'must be "local" or "etcd"'),
     '"local": the lock is this machine\'s; "etcd": one lock across the daemons of a cluster'),
    ("endpoints", v.endpoints, "etcd members' client URLs; any one will do"),
    ("name", v.text(NAME_RE.pattern, NAME_RULE + " (the lock's keys are /sessiond/NAME/…)"),
     "daemons with the same endpoints and name share one lock (keys under /sessiond/NAME/)"),
    ("host", v.text(f"|{HOST_RE.pattern}", HOST_RULE + ', or "" for the machine\'s'),
     'this daemon\'s name in the cluster; "" for the machine\'s host name'),
    ("lease_ttl", _LEASE_TTL, "how long the cluster waits for a silent holder"),
    ("ca_file", _FILE, 'CA certificates of the https endpoints; "" for the system\'s'),
    ("cert_file", _FILE, 'client certificate, with key_file; "" for none'),
    ("key_file", _FILE, 'its private key, with cert_file; "" for none'),
])  # fmt: skip
AGENT_KEYS = _table(AgentSpec, False, [
    ("command", v.command, "argv, required; never a shell string", '["/usr/bin/prog", "arg"]'),
    ("cwd", v.text(r"/[^\0]*", "must be an absolute path", optional=True), "working directory"),
    ("env", v.environment, "extra environment variables", "{}"),
    ("user", v.text(_ACCOUNT, _ACCOUNT_RULE, optional=True), 'run as; "" for the session owner'),
    ("restart", v.choice(RestartPolicy), '"on-failure", "always" or "never"'),
    ("backoff_initial", _DURATION, "first delay in a crash loop; doubles each time"),
    ("backoff_max", _DURATION, "longest delay in a crash loop"),
    ("min_uptime", _DURATION, "an exit sooner than this is a quick exit (crash loop)"),
    ("max_restarts", v.integer(0, 10000), "restarts after quick exits in a row, then failed"),
    ("stop_timeout", _DURATION, "SIGTERM, then SIGKILL after this"),
    ("needs_network", v.boolean, "paused while there is no default route"),
    ("labels", _LABELS, "labels to count agents by"),
])  # fmt: skip
TEMPLATE_KEYS = {
    "agents": Setting(
        "agents", v.names("must be a list of agent names, each once"), (), "agents started with it"
    ),
    **SESSION_KEYS,
}
SECTIONS = {"daemon": DAEMON_KEYS, "session": SESSION_KEYS, "cluster": CLUSTER_KEYS}
NAMED_SECTIONS = {"agents": AGENT_KEYS, "templates": TEMPLATE_KEYS}  # [agents.NAME], …
ENV_KEYS = {s.env: s for s in SESSION_KEYS.values() if s.env}


class Problems(list[Problem]):
    """The problems found in one source: a file, "environment", "session.start"."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def add(self, key: str, value: Any, rule: str) -> None:
        # TOML allows an empty key ("" = 1): show it quoted rather than as nothing.
        self.append(Problem(self.file, key or '""', value, rule))


def parse_table(
    raw: Mapping[str, Any], table: Mapping[str, Setting], where: str, problems: Problems
) -> dict[str, Any]:
    """Typed values of the known keys in `raw`; a problem for each bad or unknown key."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in table:
            shown = None if isinstance(value, Mapping) else value
            problems.add(where + key, shown, f"unknown key; known keys: {', '.join(table)}")
            continue
        try:
            values[key] = table[key].parse(value)
        except ValueError as exc:
            problems.add(where + key, value, str(exc))
    return values


def session_overrides(
    base: SessionSettings, overrides: Mapping[str, object], origin: str
) -> SessionSettings:
    """`base` with one session's [session] keys ("45m", 2700, "" for none) applied.

    `origin` ("session.start", "--set", "templates.NAME") is the file in the problems.
    """
    problems = Problems(origin)
    values = parse_table(overrides, SESSION_KEYS, "", problems)
    if problems:
        raise ConfigError(problems)
    return replace(base, **values)


def session_settings_to_wire(s: SessionSettings) -> dict[str, Any]:
    """A session's `settings` on the wire: durations as float seconds, None for none."""
    wire = {key: getattr(s, key) for key in SESSION_KEYS}
    for key, setting in SESSION_KEYS.items():
        if setting.duration and wire[key] is not None:
            wire[key] = float(wire[key])
    return wire


def settings_for(
    base: SessionSettings, templates: Mapping[str, Template], template: str | None,
    overrides: Mapping[str, object],
) -> SessionSettings:  # fmt: skip
    """One session's settings: `base` ([session] and the environment), then the template's
    keys, then the caller's; each re-validated by SESSION_KEYS. InvalidParams if one is bad."""
    try:
        if template is not None:
            found = templates.get(template)
            if found is None:
                known = ", ".join(sorted(templates)) or "none are configured"
                raise InvalidParams(f"no template named '{template}'", f"known templates: {known}")
            base = session_overrides(base, dict(found.session), f"templates.{template}")
        return session_overrides(base, overrides, "session.start")
    except ConfigError as exc:
        raise InvalidParams(
            "; ".join(f"{p.key} = {p.value!r}: {p.rule}" for p in exc.problems),
            "see 'man sessiond.toml' for the [session] keys",
        ) from None
