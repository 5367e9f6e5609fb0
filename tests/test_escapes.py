"""sessionc shows the daemon's text escaped (SPEC §7), against the real daemon.

A user who starts a session with a tty name of escape sequences, pauses it
with a reason that has some, or runs an agent that prints them, must not be
able to drive the terminal of the next user who types `sessionc status`,
`events`, `logs`, `health` or reads an error. Each test puts such text in
through the daemon's own methods and reads it back through the installed
sessionc, as bytes: text mode would turn a raw CR into a newline and hide it.
`--json` must keep the text exact, in JSON's own escapes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import SESSIONC, DaemonProcess, wait_for

# A clear screen and a new window title, with BEL ending the OSC.
TTY = "pts/1\x1b[2J\x1b]0;x\x07"
TTY_SHOWN = r"pts/1\x1b[2J\x1b]0;x\a"
# A colour, a carriage return that would overwrite the line, a C1 CSI, a forged line.
REASON = "lunch\x1b[31m\r\x9b2J\x7f\nhint: run this"
REASON_SHOWN = r"lunch\x1b[31m\r\x9b2J\x7f\nhint: run this"
LOG_LINE = "\x1b[31mred\x07\tcol\x9b2J"
LOG_SHOWN = r"\x1b[31mred\a\tcol\x9b2J"


def sessionc(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert SESSIONC is not None, "sessionc is not installed next to the test interpreter"
    command = [SESSIONC, "--socket", str(daemon.socket), *args]
    return subprocess.run(command, capture_output=True, timeout=30, cwd="/")


def controls(data: bytes) -> set[str]:
    """The control characters in output, but the newlines that end its lines.

    Strict UTF-8: a raw lone surrogate could not even be written.
    """
    text = data.decode("utf-8")
    return {
        char for char in text
        if (ord(char) < 0x20 and char != "\n") or 0x7F <= ord(char) <= 0x9F
    }  # fmt: skip


def shown(daemon: DaemonProcess, *args: str, status: int = 0) -> str:
    """What `sessionc ARGS` prints on stdout, checked to carry no control character."""
    done = sessionc(daemon, *args)
    assert done.returncode == status, done.stderr.decode(errors="replace")
    assert not controls(done.stdout), (args, controls(done.stdout))
    assert not controls(done.stderr), (args, controls(done.stderr))
    return done.stdout.decode()


def exact(daemon: DaemonProcess, *args: str) -> Any:
    """`sessionc --json ARGS`: printable ASCII lines that decode to the daemon's very text."""
    done = sessionc(daemon, "--json", *args)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert all(0x20 <= byte < 0x7F or byte == 0x0A for byte in done.stdout)
    return json.loads(done.stdout)


def test_status_events_health_show_and_history_escape_tty_and_reason(
    daemon: DaemonProcess,
) -> None:
    daemon.call("session.start", name="s", tty=TTY)
    daemon.call("session.pause", reason=REASON)

    status = shown(daemon, "status")
    assert f" on {TTY_SHOWN}, since " in status
    assert f"pause reason: {REASON_SHOWN}" in status
    assert f"paused: {REASON_SHOWN}" in shown(daemon, "events")
    health = shown(daemon, "health", status=1)
    assert f"is paused ({REASON_SHOWN})" in health

    live = exact(daemon, "status")["session"]
    assert (live["owner"]["tty"], live["pause_reason"]) == (TTY, REASON)

    daemon.call("session.stop", reason=REASON)
    assert REASON_SHOWN in shown(daemon, "history")
    closed = shown(daemon, "show", "s")
    assert TTY_SHOWN in closed and REASON_SHOWN in closed
    assert exact(daemon, "show", "s")["close_reason"].endswith(REASON)


def test_errors_on_stderr_are_escaped(daemon: DaemonProcess) -> None:
    daemon.call("session.start", name="s", tty=TTY)
    done = sessionc(daemon, "start", "other")  # SESSION_ACTIVE names the owner's tty
    assert done.returncode == 4
    assert not controls(done.stderr) and TTY_SHOWN in done.stderr.decode()
    assert done.stderr.decode().count("hint: ") == 1

    done = sessionc(daemon, "--json", "start", "other")
    assert not controls(done.stderr) and TTY_SHOWN in done.stderr.decode()
    assert TTY in json.loads(done.stdout)["error"]["message"]

    done = sessionc(daemon, "stop", "bad\x1b]0;t\x07")  # the daemon's reply names NAME
    assert done.returncode != 0 and done.stderr and not controls(done.stderr)


def start_agent(daemon: DaemonProcess, name: str, code: str, cwd: Path) -> None:
    command = [sys.executable, "-c", code]
    daemon.call("agent.run", command=command, name=name, cwd=str(cwd), restart="never")


def test_agent_log_lines_are_escaped(daemon: DaemonProcess, short_tmp: Path) -> None:
    daemon.call("session.start", name="s")
    start_agent(daemon, "painter", f"print({LOG_LINE!r})", short_tmp)
    wait_for(lambda: daemon.call("logs.tail", agent="painter")["lines"], what="the log line")

    assert shown(daemon, "logs", "painter") == LOG_SHOWN + "\n"
    assert shown(daemon, "logs").endswith(f" painter {LOG_SHOWN}\n")  # after its time
    assert exact(daemon, "logs", "painter")["line"] == LOG_LINE


def follower(daemon: DaemonProcess, out: Path, *args: str) -> subprocess.Popen[bytes]:
    """`sessionc ARGS -f`, its output going to `out`, to be read while it runs."""
    assert SESSIONC is not None
    with out.open("wb") as file:
        command = [SESSIONC, "--socket", str(daemon.socket), *args, "-f"]
        # Ctrl-C must work as at a terminal, even when the tests run as a background job,
        # which a non-interactive shell starts with SIGINT ignored (POSIX): an ignored
        # signal stays ignored across exec, a handled one is reset to the default.
        before = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return subprocess.Popen(command, stdout=file, stderr=subprocess.STDOUT, cwd="/")
        finally:
            signal.signal(signal.SIGINT, before)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl-C, as a person ends a follower."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(10)


def test_followed_events_and_logs_are_escaped(daemon: DaemonProcess, short_tmp: Path) -> None:
    daemon.call("session.start", name="s")
    go = short_tmp / "go"
    code = (
        "import os, time\n"
        "print('ready', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.02)\n"
        f"print({LOG_LINE!r}, flush=True)\n"
    )
    start_agent(daemon, "painter", code, short_tmp)
    wait_for(lambda: daemon.call("logs.tail", agent="painter")["lines"], what="'ready'")

    events_out, logs_out = short_tmp / "events.out", short_tmp / "logs.out"
    events = follower(daemon, events_out, "events")
    logs = follower(daemon, logs_out, "logs", "painter")
    try:
        wait_for(lambda: b"session.started" in events_out.read_bytes(), what="the event tail")
        wait_for(lambda: b"ready" in logs_out.read_bytes(), what="the log tail")
        daemon.call("session.pause", reason=REASON)  # news, not tail
        go.touch()
        daemon.call("session.resume")
        wait_for(lambda: REASON_SHOWN.encode() in events_out.read_bytes(), what="the pause")
        wait_for(lambda: LOG_SHOWN.encode() in logs_out.read_bytes(), what="the log line")
    finally:
        statuses = [stop(events), stop(logs)]
    assert statuses == [0, 0]
    assert not controls(events_out.read_bytes()) and not controls(logs_out.read_bytes())
