"""The README's examples of scripting the socket, run as printed against a real daemon."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sysd import HOST_STEPS, INSTALL_STEPS

README = Path(__file__).resolve().parent.parent / "README.md"


def scripting_blocks() -> dict[str, str]:
    """The ```sh and ```python blocks of the section 'Scripting the socket'."""
    section = README.read_text().split("## Scripting the socket", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"```(sh|python)\n(.*?)```", section, re.S))


def test_the_python_client_starts_a_session(daemon):
    code = scripting_blocks()["python"]
    assert len(code.strip().splitlines()) <= 14, "the README promises a short client"
    env = {**os.environ, "SESSIOND_SOCKET": str(daemon.socket)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "active\n", "")
    assert daemon.call("session.status")["session"]["name"] == "nightly"


def test_the_shell_one_liners_answer(daemon):
    missing = [tool for tool in ("socat", "nc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (apt-get install socat netcat-openbsd)")
    env = {**os.environ, "SESSIOND_SOCKET": str(daemon.socket)}
    done = subprocess.run(["bash", "-c", scripting_blocks()["sh"]], env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    ping, status = (json.loads(line) for line in done.stdout.splitlines())
    assert ping["id"] == 1 and ping["result"]["pid"] == daemon.proc.pid
    assert status["id"] == 2 and status["result"]["session"] is None


def test_the_install_commands_are_those_the_systemd_test_runs():
    section = README.read_text().split("### As a system service", 1)[1].split("\n### ", 1)[0]
    shown = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S)
             for line in block.splitlines()]  # fmt: skip
    assert shown == HOST_STEPS + INSTALL_STEPS
