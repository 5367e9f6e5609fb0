"""Several sessiond "hosts" of one etcd cluster on this machine (SPEC §10).

Each host is a real user-mode daemon (tests/harness.py) with its own socket,
state dir and config, whose `[cluster]` names the same etcd endpoints and
lock `name` and its own `host`, with `lease_ttl = 3s`: the shortest allowed,
so that what the lease bounds is seen within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import SESSIONC, DaemonProcess, raw_connection, read_line, wait_for
from sessiond.cli.client import RemoteError

LEASE_TTL = 3.0
LOCK_NAME = "lab"
SESSION_ACTIVE, REMOTE_SESSION, CLUSTER_UNAVAILABLE = -32001, -32011, -32012
# An agent that ignores SIGTERM: only a SIGKILL ends it, whatever its stop_timeout.
STUBBORN = "trap '' TERM; while :; do sleep 1; done"
# An agent that writes its SESSIOND_FENCE to DIR/SESSION.fence (by a rename: never half).
FENCE = 'echo "$SESSIOND_FENCE" > "$0/$SESSIOND_SESSION.new" && mv "$0/$SESSIOND_SESSION.new" "$0/$SESSIOND_SESSION.fence"; exec sleep infinity'  # noqa: E501


def config(endpoints: list[str], host: str, out: Path) -> str:
    """A host's config: the cluster, and templates of sleepers, a stubborn agent, a
    fence writer (into `out`)."""
    return f"""
[cluster]
backend = "etcd"
endpoints = {json.dumps(endpoints)}
name = "{LOCK_NAME}"
host = "{host}"
lease_ttl = "{LEASE_TTL:g}s"

[agents.sleeper]
command = ["/bin/sleep", "infinity"]
[agents.sleeper2]
command = ["/bin/sleep", "infinity"]
[agents.stubborn]
command = ["/bin/sh", "-c", {json.dumps(STUBBORN)}]
stop_timeout = "60s"
[agents.fence]
command = ["/bin/sh", "-c", {json.dumps(FENCE)}, "{out}"]

[templates.sleepers]
agents = ["sleeper", "sleeper2"]
[templates.stubborn]
agents = ["sleeper", "stubborn"]
[templates.fence]
agents = ["fence"]
"""


class Hosts:
    """Daemons named by host ("hostA"...), made on demand; `make_daemon` stops them."""

    def __init__(self, make_daemon: Callable[..., DaemonProcess], endpoints: list[str],
                 out: Path) -> None:  # fmt: skip
        self._make = make_daemon
        self.endpoints = endpoints
        self.out = out  # where fence writers write
        self.daemons: dict[str, DaemonProcess] = {}

    def __getitem__(self, host: str) -> DaemonProcess:
        if host not in self.daemons:
            self.daemons[host] = self.add(host, self.endpoints)
        return self.daemons[host]

    def add(self, host: str, endpoints: list[str], start: bool = True,
            settle: bool = True) -> DaemonProcess:  # fmt: skip
        """A host's daemon, started (READY) and, with `settle`, once it reached etcd."""
        daemon = self._make(config(endpoints, host, self.out), name=host, start=start)
        self.daemons[host] = daemon
        if start and settle:
            wait_for(lambda: reachable(daemon), what=f"{host} reaching etcd")
        return daemon

    def fence_of(self, session: str) -> int:
        path = self.out / f"{session}.fence"
        return int(wait_for(lambda: path.exists() and path.read_text().strip(),
                            what=f"the fence of {session}'s agent"))  # fmt: skip


def refused(daemon: DaemonProcess, method: str, **params: Any) -> RemoteError:
    """The error a call gets (it must fail)."""
    with pytest.raises(RemoteError) as caught:
        daemon.call(method, **params)
    return caught.value


def raw(daemon: DaemonProcess, method: str, params: dict[str, Any] | None = None,
        timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
    """One request over a fresh socket: the whole reply (`result` or `error`)."""
    with raw_connection(daemon.socket, timeout) as sock:
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = read_line(sock, bytearray())
    assert isinstance(reply, dict), reply
    return reply


def race(daemons: list[DaemonProcess], method: str, params: dict[str, Any]) -> list[dict]:
    """The same request to every daemon at the same instant (connected first, then sent
    together), from threads: the replies in the daemons' order."""
    replies: list[dict[str, Any]] = [{} for _ in daemons]
    gate = threading.Barrier(len(daemons))

    def one(i: int) -> None:
        with raw_connection(daemons[i].socket, 30.0) as sock:
            line = json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
            gate.wait(10)
            sock.sendall(line.encode() + b"\n")
            replies[i] = read_line(sock, bytearray()) or {}  # type: ignore[assignment]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(daemons))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return replies


def background_start(daemon: DaemonProcess, *args: str) -> subprocess.Popen[str]:
    """`sessionc --json start ARGS…` left running (a waiter); the caller reaps it."""
    assert SESSIONC is not None
    return subprocess.Popen([SESSIONC, "--socket", str(daemon.socket), "--json", "start", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def end(proc: subprocess.Popen[str]) -> None:
    """Teardown of a background sessionc: by its pid, if it is still there."""
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=10)


def gone(pid: int) -> bool:
    """No such process, or only its zombie (nobody may have reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def agent_pids(daemon: DaemonProcess) -> list[int]:
    return sorted(a["pid"] for a in daemon.call("agent.list") if a["pid"])


def sigkill(daemon: DaemonProcess) -> float:
    """SIGKILL the daemon only (its agents stay, as under systemd); the instant, monotonic."""
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    daemon.proc.wait(10)
    if daemon.notify_sock is not None:
        daemon.notify_sock.close()
    return killed


def journal_says(daemon: DaemonProcess, words: tuple[str, ...], timeout: float) -> str:
    """Wait for a line of the daemon's log at a level a default daemon logs (emerg to info:
    not debug) that has every one of `words`; fail with the whole log."""
    deadline = time.monotonic() + timeout
    while True:
        for line in daemon.log().splitlines():
            if line[:3] in {f"<{n}>" for n in range(7)} and all(w in line for w in words):
                return line
        if time.monotonic() > deadline:
            logged = [line for line in daemon.log().splitlines() if not line.startswith("<7>")]
            raise AssertionError(f"no log line with {words} in {timeout}s; the log but its "
                                 "debug lines:\n" + "\n".join(logged))  # fmt: skip
        time.sleep(0.05)


def reachable(daemon: DaemonProcess) -> bool:
    return bool(daemon.call("session.status")["daemon"]["cluster"]["reachable"])


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
