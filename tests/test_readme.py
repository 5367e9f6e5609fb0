"""The README's examples of scripting the socket, run as printed against a real daemon."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysd import HOST_STEPS, INSTALL_STEPS

from harness import DaemonProcess
from sessiond.paths import SYSTEM_SOCKET

README = Path(__file__).resolve().parent.parent / "README.md"


def scripting_blocks() -> dict[str, str]:
    """The ```sh and ```python blocks of the section 'Scripting the socket'."""
    section = README.read_text().split("## Scripting the socket", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"```(sh|python)\n(.*?)```", section, re.S))


class DefaultSocketDaemon(DaemonProcess):
    """A user-mode daemon on the socket its environment gives it: no --socket."""

    def command(self) -> list[str]:
        cmd = super().command()
        at = cmd.index("--socket")
        return cmd[:at] + cmd[at + 2 :]


@pytest.fixture(params=["SESSIOND_SOCKET", "XDG_RUNTIME_DIR", "neither"])
def user_env(request, short_tmp, make_daemon, monkeypatch) -> Iterator[tuple[DaemonProcess, dict]]:
    """A user-mode daemon and the environment a user of it would have, three ways: the
    socket named by $SESSIOND_SOCKET; the daemon's default under $XDG_RUNTIME_DIR; with that
    unset (and no /run/user/UID), the fallback runtime-UID in the temporary directory."""
    if os.path.exists(SYSTEM_SOCKET):
        pytest.skip(f"{SYSTEM_SOCKET} exists: the examples would rightly pick the system daemon")
    for name in ("SESSIOND_SOCKET", "XDG_RUNTIME_DIR", "TMPDIR"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "SESSIOND_SOCKET":
        daemon = make_daemon()
        yield daemon, {**os.environ, "SESSIOND_SOCKET": str(daemon.socket)}
        return
    if request.param == "XDG_RUNTIME_DIR":
        runtime = short_tmp / "xdg"
        runtime.mkdir(mode=0o700)
        env, found = {"XDG_RUNTIME_DIR": str(runtime)}, runtime
    else:
        if os.path.isdir(f"/run/user/{os.getuid()}"):
            pytest.skip(f"/run/user/{os.getuid()} exists: the fallback would not be taken")
        env, found = {"TMPDIR": str(short_tmp)}, short_tmp / f"runtime-{os.getuid()}"
    (short_tmp / "d").mkdir()
    daemon = DefaultSocketDaemon(short_tmp / "d", env=env)
    daemon.socket = found / "sessiond" / "sessiond.sock"  # where the daemon must listen
    try:
        yield daemon.start(), {**os.environ, **env}
    finally:
        daemon.stop()


def run_block(kind: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = ["bash", "-c"] if kind == "sh" else [sys.executable, "-c"]
    return subprocess.run([*argv, scripting_blocks()[kind]], env=env, capture_output=True,
                          text=True, timeout=30, cwd="/")  # fmt: skip


def test_the_shell_examples_answer_every_call(user_env):
    missing = [tool for tool in ("socat", "nc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (apt-get install socat netcat-openbsd)")
    daemon, env = user_env
    done = run_block("sh", env)
    assert (done.returncode, done.stderr) == (0, "")
    ping, started, stopped = (json.loads(line) for line in done.stdout.splitlines())
    assert ping["id"] == 1 and ping["result"]["pid"] == daemon.proc.pid
    assert ping["result"]["socket"] == str(daemon.socket)
    # session.start and session.stop wait: answered although nc shut its side at once.
    assert started["id"] == 2 and started["result"]["state"] == "active"
    assert stopped["id"] == 3 and stopped["result"]["state"] == "closed"
    assert daemon.call("session.status")["session"] is None


def test_the_python_client_starts_a_session(user_env):
    daemon, env = user_env
    code = scripting_blocks()["python"]
    assert len(code.strip().splitlines()) <= 22, "the README promises a short client"
    done = run_block("python", env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "active\n", "")
    assert daemon.call("session.status")["session"]["name"] == "nightly"


def test_the_install_commands_are_those_the_systemd_test_runs():
    section = README.read_text().split("### As a system service", 1)[1].split("\n### ", 1)[0]
    shown = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S)
             for line in block.splitlines()]  # fmt: skip
    assert shown == HOST_STEPS + INSTALL_STEPS
