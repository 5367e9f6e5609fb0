"""Configuration: TOML and environment in, one frozen `Config` out.

Every key is declared once, in a settings table (`DAEMON_KEYS`, `SESSION_KEYS`,
`AGENT_KEYS`, `TEMPLATE_KEYS`): its name; a small validator that turns a raw
value (TOML value, environment or `--set` string, JSON number) into a typed one
or raises ValueError whose message is the rule; the default, read from the
dataclass; a help line; for [session] keys, the environment variable. The same
tables drive the TOML parser, `SESSIOND_<KEY>` overrides, per-session overrides
(`session.start`, `--set`, templates) and `reference()`, which the docs show.

Nothing here exits or logs: every problem is collected with file, key, value
and rule, and all are raised at once as one `ConfigError`. A session's
settings, lowest precedence first: the dataclass defaults, [session] in the
file, `SESSIOND_<KEY>`, the template, that one session's overrides.
"""

from __future__ import annotations

import enum
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sessiond.errors import ConfigError, Problem

DURATION_RULE = "must be a duration like 90s, 5m, 1h30m or plain seconds"
CLOCK_RULE = "must be a time of day HH:MM, 24-hour (00:00 to 23:59)"
NAME_RULE = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_SECONDS = 3650 * 86400.0  # ten years: now + any duration stays inside datetime's range
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_RE = re.compile(r"\s*".join(rf"(?:({_NUMBER}){unit})?" for unit in "dhms"))
_UNITS = (86400, 3600, 60, 1)
_CLOCK_RE = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def parse_duration(value: str | float) -> float:
    """Seconds in "90s", "5m", "1h30m", "1d", "1.5s", "45" or 45; never negative."""
    seconds = math.nan
    if isinstance(value, str):
        seconds = _duration_text(value.strip())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) if abs(value) < 1e300 else math.inf  # no OverflowError
    if math.isfinite(seconds) and seconds >= 0:
        return abs(seconds)  # -0.0 → 0.0
    raise ValueError(DURATION_RULE)


def _duration_text(text: str) -> float:
    if re.fullmatch(_NUMBER, text):
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        return math.nan
    return sum(
        float(part) * unit for part, unit in zip(match.groups(), _UNITS, strict=True) if part
    )


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, for display: 5400 → "1h30m", 125 → "2m5s", 0 → "0s"."""
    if not 0 <= seconds < math.inf:
        raise ValueError(f"must be a number of seconds, not negative (got {seconds!r})")
    seconds = round(seconds, 3)
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    rest = secs + seconds - int(seconds)
    if rest or not parts:
        parts.append(f"{rest:.3f}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)


def parse_clock(value: str) -> tuple[int, int]:
    """(hour, minute) of a 24-hour "HH:MM" such as "16:00" or "7:05"."""
    match = _CLOCK_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(CLOCK_RULE)
    return int(match[1]), int(match[2])


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
    agents: Mapping[str, AgentSpec] = field(default_factory=lambda: MappingProxyType({}))
    templates: Mapping[str, Template] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None  # the file it came from; None for the embedded defaults


# --- validators: a raw value in, a typed value out, or ValueError(rule) -------

Parser = Callable[[Any], Any]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _duration(*, zero: bool = False, optional: bool = False) -> Parser:
    rule = f"{DURATION_RULE}, {'0s or more' if zero else 'more than 0s'}, at most 3650d"
    rule += ', or "" for none' if optional else ""

    def parse(value: Any) -> float | None:
        if optional and _blank(value):
            return None
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(rule) from None
        if (seconds > 0 or zero) and seconds <= MAX_SECONDS:
            return seconds
        raise ValueError(rule)

    return parse


def _integer(low: int, high: int | None = None) -> Parser:
    rule = f"must be an integer from {low} to {high}" if high else f"must be an integer >= {low}"

    def parse(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
            value = int(value)
        if type(value) is int and low <= value and (high is None or value <= high):
            return value
        raise ValueError(rule)

    return parse


def _choice(kind: type[enum.StrEnum]) -> Parser:
    values = [member.value for member in kind]
    rule = "must be one of " + ", ".join(f'"{value}"' for value in values)

    def parse(value: Any) -> enum.StrEnum:
        if isinstance(value, str) and value.strip() in values:
            return kind(value.strip())
        raise ValueError(rule)

    return parse


def _text(pattern: str, rule: str, *, optional: bool = False) -> Parser:
    """A string matching `pattern`; with `optional`, "" means None (the default)."""
    rule += ', or "" for the default' if optional else ""

    def parse(value: Any) -> str | None:
        if optional and _blank(value):
            return None
        if isinstance(value, str) and re.fullmatch(pattern, value):
            return value
        raise ValueError(rule)

    return parse


def _names(rule: str) -> Parser:
    def parse(value: Any) -> tuple[str, ...]:
        names = tuple(value) if isinstance(value, (list, tuple)) else (None,)
        valid = all(isinstance(name, str) and NAME_RE.fullmatch(name) for name in names)
        if valid and len(set(names)) == len(names):
            return names
        raise ValueError(rule)

    return parse


def _clock(value: Any) -> str | None:
    if _blank(value):
        return None
    try:
        hour, minute = parse_clock(value)
    except ValueError:
        raise ValueError(CLOCK_RULE + ', or "" for none') from None
    return f"{hour:02d}:{minute:02d}"


COMMAND_RULE = 'must be a non-empty list of strings like ["/usr/bin/python3", "-m", "scanner"]'
ENV_RULE = 'must be a table of NAME = "value" strings; no NAME has "=" or starts with SESSIOND_'
_ENV_NAME = re.compile(r"(?!SESSIOND_)[^=\0]+")  # the daemon sets SESSIOND_* itself


def _command(value: Any) -> tuple[str, ...]:
    args = tuple(value) if isinstance(value, (list, tuple)) else ()
    if args and args[0] and all(isinstance(a, str) and "\0" not in a for a in args):
        return args
    shell = ": a list of strings, never a shell string" if isinstance(value, str) else ""
    raise ValueError(COMMAND_RULE + shell)


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    pairs = tuple(value.items()) if isinstance(value, Mapping) else (("=", ""),)
    if all(_ENV_NAME.fullmatch(k) and isinstance(v, str) and "\0" not in v for k, v in pairs):
        return pairs
    raise ValueError(ENV_RULE)


def _boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise ValueError("must be true or false")


# --- the settings tables ------------------------------------------------------

_DURATION = _duration()
_DURATION_OR_ZERO = _duration(zero=True)
_DURATION_OR_NONE = _duration(optional=True)
_DURATIONS = (_DURATION, _DURATION_OR_ZERO, _DURATION_OR_NONE)
_ACCOUNT = r"[^\s:/,]{1,256}"
_ACCOUNT_RULE = "must be a user or group name (no spaces, ':', ',' or '/')"
_LABELS = _names("must be a list of distinct labels, each " + NAME_RULE.removeprefix("must be "))


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
    ("socket_group", _text(_ACCOUNT, _ACCOUNT_RULE), "group allowed on the socket (system mode)"),
    ("admin_group", _text(_ACCOUNT, _ACCOUNT_RULE), "its members are admins of every session"),
    ("on_shutdown", _choice(OnShutdown), 'on SIGTERM, "stop" the agents or "keep" them running'),
    ("max_clients", _integer(1, 65536), "connections at once"),
    ("max_clients_per_user", _integer(1, 65536),
     "connections of one uid at once (root and admins: no limit of their own)"),
    ("idle_client_timeout", _DURATION,
     "a connection with no request and no subscription is closed after this"),
    ("max_request_bytes", _integer(1024, 64 << 20), "longest request line"),
    ("client_timeout", _DURATION, "a half-sent request is cut off after this"),
    ("network_grace", _DURATION_OR_ZERO, "the network must be back this long to resume"),
    ("history_days", _integer(1, 36500), "closed sessions are kept this many days"),
    ("log_max_bytes", _integer(4096), "per agent log file, then rotated"),
    ("log_files", _integer(1, 1000), "agent log files kept, counting the current one"),
])  # fmt: skip
SESSION_KEYS = _table(SessionSettings, True, [
    ("timeout", _DURATION, "no activity for this long: the session expires"),
    ("idle_after", _DURATION, "no activity for this long: the session is idle"),
    ("error_threshold", _integer(1, 1_000_000), "this many errors: disconnected"),
    ("error_window", _DURATION, "errors older than this no longer count"),
    ("max_agents", _integer(1, 10000), "agents in one session at most"),
    ("max_duration", _DURATION_OR_NONE, 'the session is closed after this; "" for none'),
    ("stop_at", _clock, 'the session is closed at this local time "HH:MM"; "" for none'),
])  # fmt: skip
AGENT_KEYS = _table(AgentSpec, False, [
    ("command", _command, "argv, required; never a shell string", '["/usr/bin/prog", "arg"]'),
    ("cwd", _text(r"/[^\0]*", "must be an absolute path", optional=True), "working directory"),
    ("env", _env, "extra environment variables", "{}"),
    ("user", _text(_ACCOUNT, _ACCOUNT_RULE, optional=True), 'run as; "" for the session owner'),
    ("restart", _choice(RestartPolicy), '"on-failure", "always" or "never"'),
    ("backoff_initial", _DURATION, "first delay in a crash loop; doubles each time"),
    ("backoff_max", _DURATION, "longest delay in a crash loop"),
    ("min_uptime", _DURATION, "an exit sooner than this is a quick exit (crash loop)"),
    ("max_restarts", _integer(0, 10000), "restarts after quick exits in a row, then failed"),
    ("stop_timeout", _DURATION, "SIGTERM, then SIGKILL after this"),
    ("needs_network", _boolean, "paused while there is no default route"),
    ("labels", _LABELS, "labels to count agents by"),
])  # fmt: skip
TEMPLATE_KEYS = {
    "agents": Setting(
        "agents", _names("must be a list of agent names, each once"), (), "agents started with it"
    ),
    **SESSION_KEYS,
}
SECTIONS = {"daemon": DAEMON_KEYS, "session": SESSION_KEYS}  # [daemon], [session]
NAMED_SECTIONS = {"agents": AGENT_KEYS, "templates": TEMPLATE_KEYS}  # [agents.NAME], …
ENV_KEYS = {s.env: s for s in SESSION_KEYS.values() if s.env}


def _toml_literal(setting: Setting) -> str:
    value = setting.default
    if setting.shown or value is MISSING:
        return setting.shown
    if value is None or isinstance(value, bool):
        return '""' if value is None else str(value).lower()
    if setting.duration:
        return f'"{format_duration(value)}"'
    return f'"{value}"' if isinstance(value, str) else str(list(value) if value == () else value)


def reference() -> str:
    """Every key with its default and help, as annotated TOML (for the docs)."""
    lines = []
    for section, table in {**SECTIONS, **NAMED_SECTIONS}.items():
        lines.append(f"[{section}]" if section in SECTIONS else f"[{section}.NAME]")
        for s in table.values():
            if section != "templates" or s.key not in SESSION_KEYS:
                env = f" (environment: {s.env})" if s.env else ""
                lines.append(f"{s.key} = {_toml_literal(s)}  # {s.help}{env}")
        lines.append("# and any [session] key\n" if section == "templates" else "")
    return "\n".join(lines)


# --- parsing ------------------------------------------------------------------


class _Problems(list[Problem]):
    """The problems found in one source: a file, "environment", "session.start"."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def add(self, key: str, value: Any, rule: str) -> None:
        # TOML allows an empty key ("" = 1): show it quoted rather than as nothing.
        self.append(Problem(self.file, key or '""', value, rule))


def _parse_table(
    raw: Mapping[str, Any], table: Mapping[str, Setting], where: str, problems: _Problems
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


def _section(doc: Mapping[str, Any], key: str, problems: _Problems) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if isinstance(value, Mapping):
        return value
    problems.add(key, value, "must be a table")
    return {}


def _named(doc: Mapping[str, Any], section: str, problems: _Problems) -> dict[str, Any]:
    """The [section.NAME] tables with a good NAME."""
    tables = {}
    for name, table in _section(doc, section, problems).items():
        if not NAME_RE.fullmatch(name):
            problems.add(f"{section}.{name}", None, f"the name {NAME_RULE}")
        elif not isinstance(table, Mapping):
            problems.add(f"{section}.{name}", table, "must be a table")
        else:
            tables[name] = table
    return tables


def _agent(name: str, raw: Mapping[str, Any], problems: _Problems) -> AgentSpec:
    """The agent; with a problem added, a stand-in that templates may still name."""
    where = f"agents.{name}."
    values = _parse_table(raw, AGENT_KEYS, where, problems)
    if "command" not in raw:
        problems.add(where + "command", None, f"is required; it {COMMAND_RULE}")
    spec = AgentSpec(name=name, **{"command": (), **values})
    if spec.backoff_max < spec.backoff_initial:
        rule = f"must not be less than backoff_initial ({format_duration(spec.backoff_initial)})"
        problems.add(where + "backoff_max", raw.get("backoff_max"), rule)
    return spec


def _template(
    name: str, raw: Mapping[str, Any], agents: Mapping[str, Any], problems: _Problems
) -> Template:
    where = f"templates.{name}."
    values = _parse_table(raw, TEMPLATE_KEYS, where, problems)
    names = values.pop("agents", ())
    for missing in (agent for agent in names if agent not in agents):
        defined = ", ".join(agents) or "none"
        rule = f"names no [agents.{missing}] table; defined agents: {defined}"
        problems.add(where + "agents", missing, rule)
    return Template(name, names, tuple(values.items()))


def _build(doc: Mapping[str, Any], problems: _Problems) -> Config:
    known = [*SECTIONS, *NAMED_SECTIONS]
    for section in (key for key in doc if key not in known):
        problems.add(section, None, f"unknown section; known sections: {', '.join(known)}")
    settings = {
        section: _parse_table(_section(doc, section, problems), table, f"{section}.", problems)
        for section, table in SECTIONS.items()
    }
    agents = {
        name: _agent(name, raw, problems) for name, raw in _named(doc, "agents", problems).items()
    }
    templates = {
        name: _template(name, raw, agents, problems)
        for name, raw in _named(doc, "templates", problems).items()
    }
    daemon, session = DaemonSettings(**settings["daemon"]), SessionSettings(**settings["session"])
    return Config(daemon, session, MappingProxyType(agents), MappingProxyType(templates))


def _read_toml(path: str, problems: _Problems) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        problems.add("(file)", None, f"unable to read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        problems.add("(file)", None, f"must be UTF-8 (byte {exc.start}: {exc.reason})")
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r" \(at (line \d+, column \d+|end of document)\)$", message)
        rule = message[: where.start()] if where else message
        problems.add(where[1] if where else "(syntax)", None, f"invalid TOML: {rule}")
    return {}


def _environment(
    base: SessionSettings, environ: Mapping[str, str], problems: _Problems
) -> SessionSettings:
    given = {name: environ[name] for name in ENV_KEYS if name in environ}
    values = _parse_table(given, ENV_KEYS, "", problems)
    return replace(base, **{ENV_KEYS[name].key: value for name, value in values.items()})


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Config:
    """The file at `path` (None: the embedded defaults) with SESSIOND_<KEY> applied.

    Raises one ConfigError listing every problem found; never exits.
    """
    source = None if path is None else os.fspath(path)
    problems, env_problems = _Problems(source or "defaults"), _Problems("environment")
    config = _build({} if source is None else _read_toml(source, problems), problems)
    session = _environment(config.session, environ, env_problems)
    if problems or env_problems:
        raise ConfigError([*problems, *env_problems])
    return replace(config, session=session, source=source)


def session_overrides(
    base: SessionSettings, overrides: Mapping[str, object], origin: str
) -> SessionSettings:
    """`base` with one session's [session] keys ("45m", 2700, "" for none) applied.

    `origin` ("session.start", "--set", "templates.NAME") is the file in the problems.
    """
    problems = _Problems(origin)
    values = _parse_table(overrides, SESSION_KEYS, "", problems)
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


def default_config_path(system: bool, environ: Mapping[str, str]) -> Path:
    """$CONFIGURATION_DIRECTORY or /etc/sessiond in system mode; the user config dir else."""
    if system:
        directory = environ.get("CONFIGURATION_DIRECTORY", "").split(":")[0]
        return Path(directory or "/etc/sessiond") / "sessiond.toml"
    if xdg := environ.get("XDG_CONFIG_HOME", "").strip():  # as platformdirs does on Linux
        return Path(xdg) / "sessiond" / "sessiond.toml"
    import platformdirs  # noqa: PLC0415 - only user mode needs it; system mode stays stdlib

    return Path(platformdirs.user_config_dir("sessiond")) / "sessiond.toml"


def resolve_config(explicit: str | None, system: bool, environ: Mapping[str, str]) -> Config:
    """`--config PATH` (which must exist), else the default path if it exists, else defaults."""
    if explicit is not None:
        return load_config(explicit, environ)
    path = default_config_path(system, environ)
    return load_config(path if path.exists() else None, environ)
