"""A real etcd cluster on 127.0.0.1 for tests: started, broken and ended on purpose.

`EtcdCluster(base_dir, members=3).start()` runs that many `etcd` processes
with free client and peer ports, data dirs and logs under `base_dir`, and
returns once `etcdctl endpoint health` finds every member healthy. A test
then kills (SIGKILL), freezes (SIGSTOP) and thaws (SIGCONT) or restarts
members by index; `close()` ends every process it started, by pid, never by
name: other tests (and other etcds) may run on the same machine.

Heartbeats are fast (100 ms, elections after 1 s) so that a test sees a new
leader in about a second, and pre-vote is on (etcd 3.5's default) so that a
member thawed after SIGSTOP does not depose a healthy leader.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
START_ATTEMPTS = 3  # a port picked free may be taken before etcd binds it: pick again
TUNING = ("--heartbeat-interval", "100", "--election-timeout", "1000", "--pre-vote")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """The caller's environment without ETCD_*/ETCDCTL_*: etcd reads its flags from them."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    return {**kept, "ETCDCTL_API": "3"}  # etcdctl 3.4 speaks v2 without it


class EtcdCluster:
    def __init__(self, base_dir: Path, members: int = 3) -> None:
        missing = [tool for tool in ("etcd", "etcdctl") if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"needs {' and '.join(missing)} on PATH "
                        "(apt-get install etcd-server etcd-client)")  # fmt: skip
        self.base_dir = base_dir
        self.size = members
        self.token = f"sessiond-test-{uuid.uuid4().hex}"  # no member of another cluster joins
        self.client_ports: list[int] = []
        self.peer_ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members

    # -- what a test reads ---------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [f"http://{HOST}:{port}" for port in self.client_ports]

    @property
    def pids(self) -> list[int]:
        """The pid of each member's latest process, by index, running or not."""
        return [proc.pid for proc in self.procs if proc is not None]

    def log(self, i: int) -> str:
        return self._log_path(i).read_text(errors="replace")

    def etcdctl(self, *args: str, endpoints: list[str] | None = None,
                timeout: float = 10.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """etcdctl against `endpoints` (default: every member), its output as text."""
        urls = ",".join(endpoints or self.endpoints)
        return subprocess.run(
            ["etcdctl", f"--endpoints={urls}", "--dial-timeout=1s", "--command-timeout=3s", *args],
            capture_output=True, text=True, timeout=timeout, env=clean_environment(),
        )  # fmt: skip

    def health(self, endpoints: list[str] | None = None) -> dict[str, bool]:
        """endpoint -> healthy, as `etcdctl endpoint health` answers now."""
        done = self.etcdctl("endpoint", "health", "-w", "json", endpoints=endpoints)
        try:
            return {row["endpoint"]: bool(row["health"]) for row in json.loads(done.stdout)}
        except (ValueError, KeyError, TypeError):
            return {}

    def wait_healthy(self, members: list[int] | None = None,
                     timeout: float = START_TIMEOUT) -> None:  # fmt: skip
        """Wait until each of `members` (default: all) is healthy, or fail with their logs."""
        wanted = [self.endpoints[i] for i in (range(self.size) if members is None else members)]
        deadline = time.monotonic() + timeout
        while True:
            self._check_running(members)
            health = self.health(wanted)
            if all(health.get(endpoint) for endpoint in wanted):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"etcd not healthy after {timeout}s: {health}\n"
                                     + self._log_tails())  # fmt: skip
            time.sleep(0.1)

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> EtcdCluster:
        attempt = 1
        while True:
            self._pick_ports()
            for i in range(self.size):
                self._spawn(i, "new")
            try:
                self.wait_healthy(timeout=timeout)
                return self
            except AssertionError:
                raced = any("address already in use" in self.log(i) for i in range(self.size))
                self.close()
                if not raced or attempt == START_ATTEMPTS:
                    raise
            attempt += 1
            for i in range(self.size):  # a cluster of new ports starts from nothing
                shutil.rmtree(self._data_dir(i), ignore_errors=True)
                self._log_path(i).unlink(missing_ok=True)

    def kill(self, i: int) -> None:
        """SIGKILL member i (stopped or not) and reap it."""
        proc = self._proc(i)
        proc.kill()  # Popen signals no pid it has already reaped: never somebody else's
        proc.wait(10)

    def stop(self, i: int) -> None:
        """Freeze member i (SIGSTOP): it holds its ports and answers nothing."""
        self._proc(i).send_signal(signal.SIGSTOP)

    def cont(self, i: int) -> None:
        self._proc(i).send_signal(signal.SIGCONT)

    def restart(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """Member i again, on its ports and data dir, rejoining the cluster it left."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            self.kill(i)
        self._spawn(i, "existing")
        self.wait_healthy([i], timeout)

    def close(self) -> None:
        """End every member started here, by pid (thawed first, then SIGKILL), and reap it."""
        for proc in self.procs:
            if proc is not None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        for proc in self.procs:
            if proc is not None:
                proc.wait(10)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    # -- inside --------------------------------------------------------------

    def _pick_ports(self) -> None:
        ports: set[int] = set()
        while len(ports) < 2 * self.size:
            ports.add(free_port())
        chosen = sorted(ports)
        self.client_ports, self.peer_ports = chosen[: self.size], chosen[self.size :]

    def _name(self, i: int) -> str:
        return f"m{i}"

    def _data_dir(self, i: int) -> Path:
        return self.base_dir / f"{self._name(i)}.etcd"

    def _log_path(self, i: int) -> Path:
        return self.base_dir / f"{self._name(i)}.log"

    def _spawn(self, i: int, state: str) -> None:
        peers = ",".join(f"{self._name(j)}=http://{HOST}:{port}"
                         for j, port in enumerate(self.peer_ports))  # fmt: skip
        client = f"http://{HOST}:{self.client_ports[i]}"
        peer = f"http://{HOST}:{self.peer_ports[i]}"
        command = [
            "etcd", "--name", self._name(i), "--data-dir", str(self._data_dir(i)),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", peers, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token, "--logger", "zap", "--log-outputs", "stderr",
            *TUNING,
        ]  # fmt: skip
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with self._log_path(i).open("ab") as log:
            self.procs[i] = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=log, env=clean_environment(),
                                             start_new_session=True)  # fmt: skip

    def _proc(self, i: int) -> subprocess.Popen[bytes]:
        proc = self.procs[i]
        assert proc is not None, f"etcd member {i} was never started"
        return proc

    def _check_running(self, members: list[int] | None) -> None:
        for i in range(self.size) if members is None else members:
            code = self._proc(i).poll()
            if code is not None:
                raise AssertionError(f"etcd member {i} exited with {code}\n" + self._log_tails())

    def _log_tails(self, lines: int = 15) -> str:
        tails = []
        for i in range(self.size):
            text = self.log(i).splitlines()[-lines:] if self._log_path(i).exists() else []
            tails.append(f"--- {self._log_path(i)}\n" + "\n".join(text))
        return "\n".join(tails)
