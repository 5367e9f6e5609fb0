"""Process facts and process control, from the kernel: /proc, pidfd, prctl.

Adapters only: nothing here decides. `members()` is how a stop finds every
process an agent left behind, including those that called setsid() or
double-forked out of its process group: they keep the environment marker the
daemon gave the agent (SESSIOND_INSTANCE and the agent's token), and, since
the daemon is a child subreaper, orphans of an agent's tree are re-parented to
the daemon rather than to init.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Iterator

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot: with the pid, a unique identity."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def process_group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _environ_has(pid: int, needles: tuple[bytes, ...]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = set(f.read().split(b"\0"))
    except OSError:
        return False
    return all(n in env for n in needles)


def marked(instance: str, token: str | None = None) -> list[int]:
    """Processes that carry this daemon's marker (and, given, this agent's token)."""
    needles = [f"SESSIOND_INSTANCE={instance}".encode()]
    if token is not None:
        needles.append(f"SESSIOND_AGENT_TOKEN={token}".encode())
    me = os.getpid()
    return [pid for pid in _pids() if pid != me and _environ_has(pid, tuple(needles))]


def members(pgid: int, instance: str, token: str) -> set[int]:
    """Every live process of an agent: its process group, and whoever carries its marker."""
    found = {pid for pid in _pids() if process_group(pid) == pgid}
    return found | set(marked(instance, token))


def signal_all(pgid: int | None, pids: set[int], sig: int) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait (on pidfds, no polling) for `pids` to end; return those still alive."""
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[None]] = []
    fds: list[int] = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        fds.append(fd)
        done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle, done)
        waits.append(done)
    try:
        if waits:
            await asyncio.wait(waits, timeout=timeout)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
    return {pid for pid in pids if alive(pid)}


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def signal_number(value: str | int) -> int:
    """'TERM', 'SIGTERM', '15' or 15 → 15; ValueError for anything else."""
    if isinstance(value, int) or value.isdigit():
        number = int(value)
        signal.Signals(number)  # ValueError when not a signal
        return number
    name = value.upper()
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise ValueError(f"no signal named {value!r}") from None
