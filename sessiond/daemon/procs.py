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
import resource
import select
import signal
import time
from collections.abc import Callable, Iterator

PR_SET_CHILD_SUBREAPER = 36
_TICK, _PAGE = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
KILL_WAIT = 2.0  # seconds for a SIGKILLed process to be gone, before going on


def raise_fd_limit() -> None:
    """The soft RLIMIT_NOFILE up to the hard one: a pipe and pidfds an agent (systemd's
    soft default of 1024 would end a session of 500 agents)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def become_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def wake_only() -> None:
    """Let the loop's signal wakeup fd be full without a word. The loop reads it only to
    wake, and the SIGCHLD handler reaps every dead child: when 1,000 agents die in one
    stop, the bytes past the first few hundred are lost and nothing else. Python would
    write 'Exception ignored when trying to write to the signal wakeup fd' and a
    traceback to the journal for each of them, from inside a signal handler, and could
    spin there if the signal came during another write to stderr (seen under cProfile)."""
    signal.set_wakeup_fd(signal.set_wakeup_fd(-1), warn_on_full_buffer=False)


def unhook(loop: asyncio.AbstractEventLoop) -> None:
    """Take the loop's signal handlers off. asyncio's close() closes the wakeup socket
    first and removes them after: a SIGCHLD between (the log keeper ending as the daemon
    does) wrote 'Exception ignored when trying to write to the signal wakeup fd' and
    EBADF to the journal, which warn_on_full_buffer=False does not cover."""
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        loop.remove_signal_handler(sig)


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name, from its state on; None if gone.

    One os.read of a file that is never near 4 KiB: 9-10 µs, against 15 µs through
    open() and a decode, for each agent that the gauges sample every second."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:  # ESRCH: it ended between the two
        return None
    finally:
        os.close(fd)
    # The command name is in parentheses and may itself hold spaces or ')'.
    return raw[raw.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot: with the pid, a unique identity."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def usage(pid: int, start_ticks: int | None) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a process, from one read of /proc/PID/stat: its
    user and system time and that of the children it waited for (psutil's cpu_times
    summed), and its RSS; None if it is gone or its pid now names another process."""
    fields = _stat_fields(pid)
    if fields is None or int(fields[19]) != start_ticks:
        return None
    return sum(map(int, fields[11:15])) / _TICK, int(fields[21]) * _PAGE


def age(pid: int) -> float:
    """Seconds since the process started (0 if it is gone)."""
    ticks = start_time(pid)
    if ticks is None:
        return 0.0
    since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    return max(0.0, since_boot - ticks / _TICK)


def process_group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _marker(pid: int) -> dict[str, str] | None:
    """The SESSIOND_* variables of a process that carries the agent marker."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return None
    if b"SESSIOND_INSTANCE=" not in env:
        return None
    pairs = (item.split(b"=", 1) for item in env.split(b"\0") if item.startswith(b"SESSIOND_"))
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


class Census:
    """One pass over /proc: process groups, and who carries which agent's marker."""

    def __init__(self, instance: str) -> None:
        self.groups: dict[int, set[int]] = {}
        self.tokens: dict[str, set[int]] = {}
        self.markers: dict[int, dict[str, str]] = {}
        me = os.getpid()
        for pid in _pids():
            fields = _stat_fields(pid)
            if pid == me or fields is None or fields[0] == b"Z":
                continue
            self.groups.setdefault(int(fields[2]), set()).add(pid)
            marker = _marker(pid)
            if marker is not None and marker.get("SESSIOND_INSTANCE") == instance:
                self.markers[pid] = marker
                self.tokens.setdefault(marker.get("SESSIOND_AGENT_TOKEN", ""), set()).add(pid)

    def members(self, pgid: int, token: str) -> set[int]:
        """Every live process of an agent: its process group, and whoever carries its token."""
        return self.groups.get(pgid, set()) | self.tokens.get(token, set())

    def leader(self, token: str) -> int | None:
        """The process that carries an agent's token and leads its own group: the agent."""
        return next((pid for pid in self.tokens.get(token, ()) if pid in self.groups.get(pid, ())),
                    None)  # fmt: skip

    def marked(self) -> dict[str, set[int]]:
        return self.tokens

    def about(self, pid: int) -> dict[str, str | None]:
        """The agent and session a marked process says it belongs to."""
        marker = self.markers.get(pid, {})
        return {
            "agent": marker.get("SESSIOND_AGENT"),
            "session_id": marker.get("SESSIOND_SESSION_ID"),
        }


def strays(keep: set[int]) -> set[int]:
    """Every process the daemon answers for, but the trees of those in `keep` (SPEC §3 Stop).

    Its descendants (it is a child subreaper, so whatever escaped an agent's
    process group and session is re-parented to it, whatever environment it
    cleared), and under systemd every process in its service's control group,
    which also holds what escaped an agent the daemon adopted.
    """
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(pid)
    kept = _trees(children, keep)
    found = _trees(children, {me}) | {pid for pid in service_cgroup_members() if alive(pid)}
    return found - kept - {me}


def _trees(children: dict[int, list[int]], roots: set[int]) -> set[int]:
    """The roots and all their descendants."""
    found, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def service_cgroup_members() -> set[int]:
    """The pids in the daemon's own systemd service cgroup (cgroup v2), if it runs in one."""
    if os.environ.get("SYSTEMD_EXEC_PID") != str(os.getpid()):
        # Not a service's main process: a daemon started from another service (cron, a CI
        # runner) inherits its variables and cgroup, which are not ours to sweep.
        return set()
    try:
        with open("/proc/self/cgroup") as f:
            path = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
    except (OSError, StopIteration):
        return set()
    if not path.endswith(".service"):
        return set()
    members: set[int] = set()
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        for folder, _dirs, files in os.walk(root + path):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError), open(f"{folder}/cgroup.procs") as f:
                    members |= {int(line) for line in f if line.strip()}
    return members


class Pidfds:
    """pidfds of a set of processes, opened at once: a signal sent through one reaches
    that process or nothing, never another that got its pid meanwhile."""

    def __init__(self, pids: set[int]) -> None:
        self.fds: dict[int, int] = {}
        for pid in pids:
            with contextlib.suppress(OSError):  # gone already, or no fd left: not ours to wait
                self.fds[pid] = os.pidfd_open(pid)

    def signal(self, sig: int, only: set[int] | None = None) -> None:
        for pid, fd in self.fds.items():
            if only is None or pid in only:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(fd, sig)

    async def wait(self, timeout: float) -> set[int]:
        """Wait (no polling: a pidfd is readable once its process ended); those still alive."""
        loop = asyncio.get_running_loop()
        waits = []
        for fd in self.fds.values():
            done: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _settle, done)
            waits.append(done)
        try:
            if waits:
                await asyncio.wait(waits, timeout=timeout)
        finally:
            for fd in self.fds.values():
                loop.remove_reader(fd)
        return {pid for pid, fd in self.fds.items() if not _readable(fd)}

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


async def terminate(
    pids: set[int], grace: float, pgid: int | None = None,
    again: Callable[[], set[int]] | None = None,
) -> set[int]:  # fmt: skip
    """SIGTERM (and SIGCONT: a stopped process cannot act on it) to `pids` and to the
    process group `pgid`; after `grace`, SIGKILL to those left and to whatever `again`
    finds then. The pids that needed SIGKILL."""
    handles = Pidfds(pids)
    try:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            _killpg(pgid, sig)
            handles.signal(sig)
        left = await handles.wait(grace)
        if not left:
            return set()
        late = Pidfds((again() if again else set()) - set(handles.fds))
        try:
            _killpg(pgid, signal.SIGKILL)
            handles.signal(signal.SIGKILL, only=left)
            late.signal(signal.SIGKILL)
            await asyncio.gather(handles.wait(KILL_WAIT), late.wait(KILL_WAIT))
            return left | set(late.fds)
        finally:
            late.close()
    finally:
        handles.close()


def _readable(fd: int) -> bool:
    # poll, not select: with the raised RLIMIT_NOFILE a pidfd may be above 1023.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _killpg(pgid: int | None, sig: int) -> None:
    # A group's id is never reused while the group has a member: this reaches only it.
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


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
