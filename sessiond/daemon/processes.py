"""The process layer: the one place the supervisor and the fleet touch real processes.

Spawning (as the agent's user, entering its directory with that user's
rights), reaping, signals, pidfds and /proc facts all go through one
`Processes`, so that a test can drive the supervisor, the fleet and the
sessions in-process with a fake one and a fake clock (tests/fakes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Callable
from typing import Protocol

from sessiond.core.settings import AgentSpec
from sessiond.daemon import procs


class Agent(Protocol):
    """What starting and sampling a process needs to know of its agent (supervisor.Agent)."""

    spec: AgentSpec
    uid: int
    gid: int
    groups: tuple[int, ...]
    cwd: str
    env: dict[str, str]
    pid: int | None
    start_ticks: int | None


class CwdRefused(OSError):
    """The agent's user may not enter its working directory."""


class Processes:
    def __init__(self, instance: str) -> None:
        self.instance = instance  # the marker every agent of this daemon carries
        self._popens: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, agent: Agent, out: int, err: int) -> int:
        """Start the agent's command in a new session, its stdout to `out` and its stderr
        to `err`; its pid.
        Raises OSError (CwdRefused for its directory), SubprocessError or ValueError."""
        if os.geteuid() == 0 and (agent.uid, agent.gid) != (0, 0):
            popen = _popen_as(agent, out, err)
        else:
            popen = subprocess.Popen(
                agent.spec.command, cwd=agent.cwd, env=agent.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True, close_fds=True,
            )  # fmt: skip
        self._popens[popen.pid] = popen
        return popen.pid

    def reap(self) -> list[tuple[int, int]]:
        """Every dead child, with its exit code (-N: killed by signal N)."""
        dead: list[tuple[int, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return dead
            if pid == 0:
                return dead
            code = os.waitstatus_to_exitcode(status)
            if (popen := self._popens.pop(pid, None)) is not None:
                popen.returncode = code  # reaped here, not by Popen
            dead.append((pid, code))

    def watch(self, pid: int, gone: Callable[[], None]) -> bool:
        """Call `gone()` once a process that is not our child ends (a pidfd says when);
        False if it is gone already."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        loop = asyncio.get_running_loop()

        def ended() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            gone()

        loop.add_reader(fd, ended)
        return True

    def signal_group(self, pgid: int, sig: int) -> None:
        # A group's id is never reused while the group has a member: this reaches only it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def start_time(self, pid: int) -> int | None:
        return procs.start_time(pid)

    def age(self, pid: int) -> float:
        return procs.age(pid)

    def census(self) -> procs.Census:
        return procs.Census(self.instance)

    async def terminate(
        self, pids: set[int], grace: float, pgid: int | None = None,
        again: Callable[[], set[int]] | None = None,
    ) -> set[int]:  # fmt: skip
        return await procs.terminate(pids, grace, pgid, again)

    def strays(self, keep: set[int]) -> set[int]:
        return procs.strays(keep)

    def usage(self, agent: Agent) -> tuple[float, int] | None:
        """The CPU seconds of this run of the agent's process, and its RSS (procs.usage)."""
        return procs.usage(agent.pid, agent.start_ticks) if agent.pid is not None else None


def _popen_as(agent: Agent, out: int, err: int) -> subprocess.Popen[bytes]:
    """Start an agent as its own user, entering its directory with that user's rights.

    CPython's `cwd=` is entered before the switch of uid (as root), so the child
    enters it itself, after the switch, where symlinks, modes and ACLs are all
    checked against the agent's user. `user=` already rules out vfork, so the
    preexec_fn costs no more than the fork did; the daemon has no threads that
    it could deadlock. The errno of a refused chdir comes back on a pipe.
    """
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    cwd = agent.cwd

    def enter() -> None:
        try:
            os.chdir(cwd)
        except OSError as exc:
            os.write(report_w, str(exc.errno).encode())
            raise

    try:
        return subprocess.Popen(
            agent.spec.command, env=agent.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, close_fds=True, user=agent.uid, group=agent.gid,
            extra_groups=list(agent.groups),
            preexec_fn=enter,  # noqa: PLW1509 -- after the uid switch; the daemon has no threads
        )  # fmt: skip
    except subprocess.SubprocessError:
        os.close(report_w)
        report_w = -1
        errno = os.read(report_r, 16)
        if errno:
            number = int(errno)
            raise CwdRefused(number, os.strerror(number), cwd) from None
        raise
    finally:
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)
