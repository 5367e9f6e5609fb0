"""A session's agents: who runs them, in which directory, with which environment.

Agents run with the rights of whoever they are for, never more: an ad-hoc
agent as the caller (uid, gid and groups as the kernel reported them), a
template agent as the session owner or the user its config names. The
working directory is entered by the agent's process itself, after the switch
of uid (supervisor._popen_as), so the kernel checks it with the agent's rights.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pwd
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessiond.core.agent import describe_exit
from sessiond.core.records import Session, random_hex, rfc3339
from sessiond.core.settings import AgentSpec, RestartPolicy
from sessiond.core.units import NAME_RE
from sessiond.daemon import procs
from sessiond.daemon.access import Peer, groups_of
from sessiond.daemon.supervisor import DEFAULT_PATH, Agent
from sessiond.errors import InvalidParams, LimitReached, PermissionDenied


@dataclass(frozen=True)
class Runner:
    """Whose rights an agent runs with."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    user: str
    home: str
    shell: str

    def default_cwd(self) -> str:
        """Its home directory when it exists, else / (SPEC §3): nobody's is /nonexistent."""
        return self.home if os.path.isdir(self.home) else "/"

    @classmethod
    def for_peer(cls, peer: Peer) -> Runner:
        try:
            entry = pwd.getpwuid(peer.uid)
            name, home, shell = entry.pw_name, entry.pw_dir, entry.pw_shell
        except KeyError:
            name, home, shell = str(peer.uid), "/", "/bin/sh"
        groups = tuple(sorted(peer.groups)) or (peer.gid,)
        return cls(peer.uid, peer.gid, groups, name, home, shell)

    @classmethod
    def for_user(cls, name: str) -> Runner:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise PermissionDenied(
                f"unable to run an agent as user {name!r}: no such user",
                "fix 'user' in the agent's config",
            ) from None
        groups = tuple(sorted(groups_of(entry.pw_uid, entry.pw_gid)))
        return cls(entry.pw_uid, entry.pw_gid, groups, name, entry.pw_dir, entry.pw_shell)


def check_daemon_can_run_as(runner: Runner) -> None:
    if os.geteuid() != 0 and runner.uid != os.geteuid():
        raise PermissionDenied(
            f"unable to run an agent as {runner.user}: this sessiond runs as uid "
            f"{os.geteuid()} and cannot switch users",
            "run the system daemon (as root) to host agents of several users",
        )


class Crew:
    """The agents of every session that still has some, by session and by token."""

    def __init__(self, state_dir: Path, socket: str) -> None:
        self.state_dir = state_dir
        self.socket = socket
        self.instance = str(state_dir)
        self.sessions: dict[str, dict[str, Agent]] = {}
        self.by_token: dict[str, Agent] = {}

    def agents(self, session_id: str) -> list[Agent]:
        return list(self.sessions.get(session_id, {}).values())

    def get(self, session_id: str, name: str) -> Agent | None:
        return self.sessions.get(session_id, {}).get(name)

    def add(
        self,
        session: Any,
        spec: AgentSpec,
        *,
        runner: Runner,
        cwd: str,
        checkpoint: Any = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> Agent:
        """Register (not start) an agent of `session` (a records.Session)."""
        mine = self.sessions.setdefault(session.id, {})
        if len(mine) >= session.settings.max_agents:
            raise LimitReached(
                f"session {session.name} already has {len(mine)} agents (max_agents)",
                "stop one first, or start the session with a higher --set max_agents=N",
            )
        token = random_hex(24)
        agent = Agent(
            name=spec.name,
            session_id=session.id,
            session_name=session.name,
            spec=spec,
            uid=runner.uid,
            gid=runner.gid,
            groups=runner.groups,
            token=token,
            cwd=cwd,
            env={},
            log_path=self.state_dir / "logs" / session.id / f"{spec.name}.log",
        )
        if checkpoint is not None:
            agent.checkpoint = self._write_checkpoint(agent, checkpoint)
        extra = {**dict(spec.env), **(extra_env or {})}
        agent.env = self._environment(agent, runner, extra, session.fence)
        mine[agent.name] = agent
        self.by_token[token] = agent
        return agent

    def log_path(self, session_id: str, name: str) -> Path:
        return self.state_dir / "logs" / session_id / f"{name}.log"

    def restore(self, agent: Agent) -> None:
        """Register an agent rebuilt from the store after a daemon restart."""
        self.sessions.setdefault(agent.session_id, {})[agent.name] = agent
        self.by_token[agent.token] = agent

    def discard(self, agent: Agent) -> None:
        """An agent that was added but never started."""
        self.sessions.get(agent.session_id, {}).pop(agent.name, None)
        self.by_token.pop(agent.token, None)

    def forget(self, session_id: str) -> None:
        for agent in self.sessions.pop(session_id, {}).values():
            self.by_token.pop(agent.token, None)

    def unique_name(self, session_id: str, wanted: str) -> str:
        taken = self.sessions.get(session_id, {})
        if wanted not in taken:
            return wanted
        return next(f"{wanted}-{n}" for n in range(2, 10_000) if f"{wanted}-{n}" not in taken)

    def _environment(
        self, agent: Agent, runner: Runner, extra: Mapping[str, str], fence: int
    ) -> dict[str, str]:
        env = {
            "PATH": DEFAULT_PATH,
            "HOME": runner.home,
            "USER": runner.user,
            "LOGNAME": runner.user,
            "SHELL": runner.shell,
            **extra,
            "SESSIOND_SOCKET": self.socket,
            "SESSIOND_SESSION": agent.session_name,
            "SESSIOND_SESSION_ID": agent.session_id,
            "SESSIOND_AGENT": agent.name,
            "SESSIOND_AGENT_TOKEN": agent.token,
            # What the systems an agent writes to compare, to refuse a stale writer (SPEC §10).
            "SESSIOND_FENCE": str(fence),
            "SESSIOND_INSTANCE": self.instance,
        }
        if agent.checkpoint is not None:
            env["SESSIOND_CHECKPOINT"] = agent.checkpoint
        return env

    def _write_checkpoint(self, agent: Agent, data: Any) -> str:
        folder = self.state_dir / "checkpoints" / agent.session_id
        folder.mkdir(parents=True, exist_ok=True)
        # Agents of other users must reach their own file by path: search, not list.
        for path in (self.state_dir, self.state_dir / "checkpoints", folder):
            os.chmod(path, 0o711)
        path = folder / f"{agent.name}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        if os.geteuid() == 0:
            os.chown(path, agent.uid, agent.gid)
        return str(path)


def adhoc_spec(
    name: str, command: list[str], restart: str | None, labels: Iterable[str], needs_network: bool
) -> AgentSpec:
    """The AgentSpec of a `sessionc run`, with the [agents.*] defaults for the rest."""
    if not command or not all(isinstance(c, str) and c for c in command):
        raise InvalidParams(
            "param 'command' must be a non-empty list of non-empty strings",
            "pass the program and its arguments: sessionc run -- CMD ARG…",
        )
    try:
        policy = RestartPolicy(restart or "on-failure")
    except ValueError:
        raise InvalidParams(
            f"param 'restart' must be on-failure, always or never (got {restart!r})",
            "sessionc run --restart always -- CMD",
        ) from None
    bad = [label for label in labels if not isinstance(label, str) or not NAME_RE.fullmatch(label)]
    if bad or not NAME_RE.fullmatch(name):
        raise InvalidParams(
            f"invalid agent name or label: {', '.join(map(repr, bad or [name]))}",
            "names and labels are letters, digits, '.', '_' or '-'",
        )
    return AgentSpec(
        name=name,
        command=tuple(command),
        restart=policy,
        needs_network=needs_network,
        labels=tuple(labels),
    )


def signal_param(value: str | int | None) -> int:
    """agent.kill's `signal` (default TERM) as a number; INVALID_PARAMS if it names none."""
    try:
        return procs.signal_number(value if value is not None else "TERM")
    except ValueError as exc:
        raise InvalidParams(
            f"param 'signal': {exc}", "use a name like TERM, HUP or a number"
        ) from None


@functools.lru_cache(maxsize=4096)
def spec_json(spec: AgentSpec) -> str:
    """The spec as the store keeps it, encoded once: each agent row written again (three
    times in a start) wrote it anew, and asdict is 30 of a start's µs per agent."""
    return json.dumps({**dataclasses.asdict(spec), "restart": spec.restart.value})


def spec_from_dict(found: Mapping[str, Any]) -> AgentSpec:
    return AgentSpec(**{
        **found, "command": tuple(found["command"]), "labels": tuple(found["labels"]),
        "env": tuple(tuple(pair) for pair in found["env"]),
        "restart": RestartPolicy(found["restart"]),
    })  # fmt: skip


def agent_wire(agent: Agent, facts: Mapping[str, Any], now: float) -> dict[str, Any]:
    """An agent on the wire; `now` on the monotonic clock, for its uptime.

    What changes only with the agent's state, run or spec is made once for each of them
    and kept on the agent (`wired`): a status of 200 agents then copies 200 small dicts
    instead of formatting 200 times and describing 200 exits."""
    return _joined(_still_part(agent), _moving(agent, facts, now))


def agent_json(agent: Agent, facts: Mapping[str, Any], now: float) -> str:
    """agent_wire's, encoded: the part one run in one state keeps is encoded once and
    kept on the agent (`encoded`), the moving figures are written after it each time;
    so a status of 200 agents a tenth of a second after the last costs 200 formats of
    five numbers, not 200 encodings."""
    still = _still_part(agent)
    if agent.encoded is None or agent.encoded[0] is not still:
        agent.encoded = still, json.dumps(still, separators=(",", ":"))[:-1]  # no "}" yet
    up, back, cpu, spent, rss = _moving(agent, facts, now)  # as JSON writes them: repr
    return (
        f'{agent.encoded[1]},"uptime":{"null" if up is None else repr(up)},'
        f'"restart_in":{"null" if back is None else repr(back)},'
        f'"cpu_percent":{"null" if cpu is None else repr(cpu)},'
        f'"cpu_seconds":{"null" if spent is None else repr(spent)},'
        f'"rss":{"null" if rss is None else repr(rss)}}}'
    )  # one f-string: 0.7 of the 1.6 µs that a format of map(…) took


MOVING = ("uptime", "restart_in", "cpu_percent", "cpu_seconds", "rss")


def _joined(still: dict[str, Any], moving: tuple[Any, ...]) -> dict[str, Any]:
    return {**still, **dict(zip(MOVING, moving, strict=True))}


def _moving(agent: Agent, facts: Mapping[str, Any], now: float) -> tuple[Any, ...]:
    timer = agent.timer
    return (
        round(now - agent.started_mono, 1) if agent.pid is not None else None,
        # In backoff, seconds until the next start: what a countdown (sessionc top) needs.
        round(max(timer.at - now, 0.0), 1) if timer else None,
        facts.get("cpu_percent"), facts.get("cpu_seconds"), facts.get("rss"),
    )  # fmt: skip


def _still_part(agent: Agent) -> dict[str, Any]:
    key = (agent.state, agent.pid, agent.started_at, agent.restarts, agent.exit_code,
           agent.spec, agent.session_name)  # fmt: skip
    if agent.wired is None or agent.wired[0] != key:
        agent.wired = key, _still(agent)
    return agent.wired[1]


def _still(agent: Agent) -> dict[str, Any]:
    """The part of an agent's wire form that one run in one state keeps."""
    return {
        "name": agent.name,
        "session": agent.session_name,
        "state": agent.state.value,
        "pid": agent.pid,
        "started_at": rfc3339(agent.started_at),
        "restarts": agent.restarts,
        "exit_code": agent.exit_code,
        "exit": describe_exit(agent.exit_code) if agent.exit_code is not None else None,
        "labels": list(agent.labels),
        "command": list(agent.spec.command),
        "uid": agent.uid,
        "restart": agent.spec.restart.value,
    }


def owner_runner(session: Session) -> Runner:
    try:
        return Runner.for_user(session.owner.user)
    except PermissionDenied:  # an owner unknown to the user database: run as its bare uid
        return Runner(
            session.owner.uid,
            session.owner.uid,
            (session.owner.uid,),
            session.owner.user,
            "/",
            "/bin/sh",
        )


def handed(checkpoints: dict[str, tuple[int | None, Any]], name: str, uid: int) -> Any:
    """The parent's checkpoint for agent `name`, if the uid that stored it runs this one."""
    stored = checkpoints.get(name)
    return stored[1] if stored is not None and stored[0] == uid else None
