"""A real sessiond on a temp socket and state dir, driven by the real client and CLI.

`DaemonProcess.start()` runs `python -m sessiond` as a subprocess with its own
NOTIFY_SOCKET and waits for the daemon's READY=1 on it, so readiness is the
daemon's own word, not a sleep. Every wait here polls a condition against a
deadline of seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sessiond.cli.client import Client

READY_TIMEOUT = 10.0
SESSIONC = shutil.which("sessionc", path=str(Path(sys.executable).parent))


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class DaemonProcess:
    def __init__(self, root: Path, config: str = "", user_mode: bool = True,
                 env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.root = root
        self.socket = root / "run" / "sessiond.sock"
        self.state_dir = root / "state"
        self.config_path = root / "sessiond.toml"
        self.config_path.write_text(config)
        self.user_mode = user_mode
        self.env = env or {}
        self.prefix = prefix  # e.g. ip netns exec NAME: it execs, so proc.pid is the daemon's
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify_path = root / "notify.sock"
        self.notify_sock: socket.socket | None = None
        self.notices: list[str] = []
        self.log_path = root / "sessiond.log"

    # -- lifecycle -----------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [*self.prefix, sys.executable, "-m", "sessiond", "--socket", str(self.socket),
               "--state-dir", str(self.state_dir), "--config", str(self.config_path),
               "--log-level", "debug"]  # fmt: skip
        return [*cmd, "--user"] if self.user_mode else cmd

    def start(self, wait: bool = True) -> DaemonProcess:
        self.notify_path.unlink(missing_ok=True)
        self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_sock.bind(str(self.notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path), **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, env=env)
        if wait:
            self.wait_notice("READY=1", READY_TIMEOUT)
        return self

    def read_notices(self, timeout: float) -> None:
        assert self.notify_sock is not None
        self.notify_sock.settimeout(timeout)
        try:
            data = self.notify_sock.recv(65536)
        except TimeoutError:
            return
        self.notices.extend(data.decode().split("\n"))

    def wait_notice(self, line: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.notices:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"sessiond exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {line} from sessiond in {timeout}s:\n{self.log()}")
            self.read_notices(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.notify_sock is not None:
            self.notify_sock.close()
        return self.proc.returncode

    def restart(self) -> DaemonProcess:
        self.notices.clear()
        return self.start()

    # -- talking to it -------------------------------------------------------

    def client(self, timeout: float | None = 30.0) -> Client:
        client = Client(self.socket, timeout=timeout)
        client.connect()
        return client

    def call(self, method: str, **params: Any) -> Any:
        with self.client() as client:
            return client.call(method, params or None)

    def sessionc(self, *args: str, user: int | None = None, group: int | None = None,
                 env: dict[str, str] | None = None, timeout: float = 30.0,
                 ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run the installed sessionc; as another uid, the same code from a readable copy."""
        assert SESSIONC is not None, "sessionc is not installed next to the test interpreter"
        command = [SESSIONC]
        environ = {**os.environ, **(env or {})}
        if user is not None:
            python = interpreter_for_others()
            assert python is not None, "no Python >= 3.11 that another uid may run"
            environ["PYTHONPATH"] = str(client_copy(self.root.parent))
            command = [python, "-m", "sessiond.cli"]
        return subprocess.run(
            [*command, "--socket", str(self.socket), *args],
            capture_output=True, text=True, timeout=timeout, user=user, group=group,
            extra_groups=[] if user is not None else None, env=environ, cwd="/",
        )  # fmt: skip

    def sessionc_json(self, *args: str, **kw: Any) -> Any:
        done = self.sessionc("--json", *args, **kw)
        assert done.returncode == 0, f"sessionc {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout)


def _world_executable(path: Path) -> bool:
    resolved = path.resolve()
    return resolved.exists() and all(
        os.stat(p).st_mode & 0o001 for p in [resolved, *resolved.parents]
    )


def interpreter_for_others() -> str | None:
    """A Python >= 3.11 that another uid may run (pyenv's lives under root's 0700 home)."""
    for candidate in (Path(sys.executable), Path("/usr/bin/python3")):
        if _world_executable(candidate):
            check = "import sys; print(sys.version_info >= (3, 11))"
            probe = subprocess.run([str(candidate), "-c", check], capture_output=True, text=True)
            if probe.stdout.strip() == "True":
                return str(candidate)
    return None


def client_copy(root: Path) -> Path:
    """The stdlib-only client package, copied where another uid can read it."""
    target = root / "client-pkg"
    if not target.exists():
        package = Path(__file__).resolve().parent.parent / "sessiond"
        shutil.copytree(package, target / "sessiond", ignore=shutil.ignore_patterns("__pycache__"))
        for path in [target, *target.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return target


def marked_pids(state_dir: Path) -> list[int]:
    """Live processes that carry the agent marker of the daemon on `state_dir`."""
    needle = f"SESSIOND_INSTANCE={state_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                marked = needle in f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if marked and not zombie:
            found.append(int(entry))
    return found


def raw_connection(path: Path, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def connect_as(path: Path, uid: int, gid: int, timeout: float = 10.0) -> socket.socket:
    """A connection whose peer (SO_PEERCRED) is `uid`: made by a child that took that uid,
    handed back over a socketpair."""
    here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid = os.fork()
    if pid == 0:  # the child: become uid, connect, send the fd, and go
        code = 1
        try:
            os.setgroups([gid])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            socket.send_fds(there, [b"fd"], [sock.fileno()])
            code = 0
        finally:
            os._exit(code)
    there.close()
    try:
        _, fds, _, _ = socket.recv_fds(here, 16, 1)
    finally:
        here.close()
        os.waitpid(pid, 0)
    assert fds, f"uid {uid} could not connect to {path}"
    sock = socket.socket(fileno=fds[0])
    sock.settimeout(timeout)
    return sock


def read_line(sock: socket.socket, buffer: bytearray) -> dict[str, Any] | list[Any] | None:
    """The next JSON line from `sock` (None at EOF); `buffer` keeps what is left over."""
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    end = buffer.index(b"\n")
    line = bytes(buffer[:end])
    del buffer[: end + 1]
    return json.loads(line)


def fill(path: Path) -> Path:
    """Write until the filesystem is full; return the filler's path."""
    filler = path / "filler"
    # Unbuffered: a buffered file would fail again on close, flushing what did not fit.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler
