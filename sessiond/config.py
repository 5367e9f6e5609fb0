"""Configuration: TOML and environment in, one frozen `Config` out.

The keys, their types and defaults are the tables of core/settings.py; this
module reads the file, applies `SESSIOND_<KEY>` and says where the file is.
Nothing here exits or logs: every problem is collected with file, key, value
and rule, and all are raised at once as one `ConfigError`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sessiond.core.settings import (
    AGENT_KEYS,
    ENV_KEYS,
    NAMED_SECTIONS,
    SECTIONS,
    SESSION_KEYS,
    TEMPLATE_KEYS,
    AgentSpec,
    ClusterSettings,
    Config,
    DaemonSettings,
    Problems,
    SessionSettings,
    Setting,
    Template,
    parse_table,
)
from sessiond.core.units import NAME_RE, NAME_RULE, format_duration
from sessiond.core.validators import COMMAND_RULE
from sessiond.errors import ConfigError


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


def _section(doc: Mapping[str, Any], key: str, problems: Problems) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if isinstance(value, Mapping):
        return value
    problems.add(key, value, "must be a table")
    return {}


def _named(doc: Mapping[str, Any], section: str, problems: Problems) -> dict[str, Any]:
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


def _agent(name: str, raw: Mapping[str, Any], problems: Problems) -> AgentSpec:
    """The agent; with a problem added, a stand-in that templates may still name."""
    where = f"agents.{name}."
    values = parse_table(raw, AGENT_KEYS, where, problems)
    if "command" not in raw:
        problems.add(where + "command", None, f"is required; it {COMMAND_RULE}")
    spec = AgentSpec(name=name, **{"command": (), **values})
    if spec.backoff_max < spec.backoff_initial:
        rule = f"must not be less than backoff_initial ({format_duration(spec.backoff_initial)})"
        problems.add(where + "backoff_max", raw.get("backoff_max"), rule)
    return spec


def _template(
    name: str, raw: Mapping[str, Any], agents: Mapping[str, Any], problems: Problems
) -> Template:
    where = f"templates.{name}."
    values = parse_table(raw, TEMPLATE_KEYS, where, problems)
    names = values.pop("agents", ())
    for missing in (agent for agent in names if agent not in agents):
        defined = ", ".join(agents) or "none"
        rule = f"names no [agents.{missing}] table; defined agents: {defined}"
        problems.add(where + "agents", missing, rule)
    return Template(name, names, tuple(values.items()))


def _build(doc: Mapping[str, Any], problems: Problems) -> Config:
    known = [*SECTIONS, *NAMED_SECTIONS]
    for section in (key for key in doc if key not in known):
        problems.add(section, None, f"unknown section; known sections: {', '.join(known)}")
    settings = {
        section: parse_table(_section(doc, section, problems), table, f"{section}.", problems)
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
    raw_cluster = doc.get("cluster")
    cluster = _cluster(settings["cluster"], raw_cluster if isinstance(raw_cluster, Mapping) else {},
                       problems)  # fmt: skip
    return Config(daemon, session, cluster, agents=MappingProxyType(agents),
                  templates=MappingProxyType(templates))  # fmt: skip


def _cluster(values: dict[str, Any], raw: Mapping[str, Any], problems: Problems) -> ClusterSettings:
    """[cluster], and the rules between its keys (a key with a problem of its own is left out)."""
    cluster = ClusterSettings(**values)
    bad = {key for key in raw if key not in values}
    if cluster.backend == "etcd" and not cluster.endpoints and "endpoints" not in bad:
        rule = 'must list at least one etcd member when backend = "etcd", e.g. ["http://10.0.0.1:2379"]'
        problems.add("cluster.endpoints", raw.get("endpoints"), rule)
    if len({e.startswith("https://") for e in cluster.endpoints if "://" in e}) > 1:
        rule = "must be all http:// or all https://: TLS is one choice for the whole cluster"
        problems.add("cluster.endpoints", raw.get("endpoints"), rule)
    for key, other in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if getattr(cluster, key) and not getattr(cluster, other) and other not in bad:
            rule = f"must be set with {key}: a client certificate goes with its private key"
            problems.add(f"cluster.{other}", raw.get(other), rule)
    for key in ("ca_file", "cert_file", "key_file"):
        if (path := getattr(cluster, key)) and (reason := _unreadable(Path(path))):
            problems.add(f"cluster.{key}", path, f"must be a readable file: {reason}")
    return cluster


def _unreadable(path: Path) -> str | None:
    """Why the daemon could not read `path` now; None if it can. A typo is a config error, not
    an outage at the first connection to etcd."""
    if not path.is_file():  # and never open() a FIFO: --check-config would hang
        return "not a regular file" if path.exists() else "no such file"
    try:
        path.open("rb").close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _read_toml(path: str, problems: Problems) -> dict[str, Any]:
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
    base: SessionSettings, environ: Mapping[str, str], problems: Problems
) -> SessionSettings:
    given = {name: environ[name] for name in ENV_KEYS if name in environ}
    values = parse_table(given, ENV_KEYS, "", problems)
    return replace(base, **{ENV_KEYS[name].key: value for name, value in values.items()})


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Config:
    """The file at `path` (None: the embedded defaults) with SESSIOND_<KEY> applied.

    Raises one ConfigError listing every problem found; never exits.
    """
    source = None if path is None else os.fspath(path)
    problems, env_problems = Problems(source or "defaults"), Problems("environment")
    config = _build({} if source is None else _read_toml(source, problems), problems)
    session = _environment(config.session, environ, env_problems)
    if problems or env_problems:
        raise ConfigError([*problems, *env_problems])
    return replace(config, session=session, source=source)


def summary(config: Config) -> str:
    """What `sessiond --check-config` says of a valid configuration: where from, which lock."""
    c, where = config.cluster, config.source or "embedded defaults"
    lock = "local"
    if c.backend == "etcd":
        count = f"{len(c.endpoints)} endpoint{'s' if len(c.endpoints) != 1 else ''}"
        lock = f"etcd (name {c.name}, {count}{', TLS' if c.tls else ''})"
    return f"{where}: configuration is valid; cluster backend: {lock}"


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
