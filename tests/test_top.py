"""`sessionc top` end to end: the real sessionc in a real tmux, against a real daemon.

Each test runs top in a detached tmux session on a private tmux server (`tmux -L`,
its own socket: nobody else's tmux is touched), types with `send-keys` and reads
the screen with `capture-pane -p`. Every wait polls the screen against a deadline.
`--once` needs no tmux.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import SESSIONC, DaemonProcess, client_copy, interpreter_for_others, wait_for

TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed: top is driven in it")
SLEEP = '["/bin/sleep", "infinity"]'
CONFIG = f"""
[agents.a]
command = {SLEEP}
labels = ["work"]
min_uptime = "0.2s"
[agents.b]
command = {SLEEP}
min_uptime = "0.2s"
[templates.t]
agents = ["a", "b"]
"""
NOBODY = 65534


class Pane:
    """One tmux session on a private server, running `command` in a 120x40 window."""

    def __init__(self, command: str, width: int = 120, height: int = 40) -> None:
        assert TMUX is not None
        self.server = f"sd-top-{uuid.uuid4().hex[:10]}"
        self.name = "top"
        shell = f"{command}; echo EXIT=$?; sleep 60"
        self.tmux("new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                  "-c", "/", shell)  # fmt: skip
        self.socket = self.tmux("display-message", "-p", "#{socket_path}").strip()

    def tmux(self, *args: str) -> str:
        # os.environ, not the C environment: importing readline (pytest does) puts
        # LINES=24 COLUMNS=80 there, and the tmux server would hand them to the pane.
        done = subprocess.run([TMUX or "tmux", "-L", self.server, *args], env=dict(os.environ),
                              capture_output=True, text=True, timeout=10)  # fmt: skip
        assert done.returncode == 0, f"tmux {' '.join(args)}: {done.stderr}"
        return done.stdout

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", self.name).split("\n")[:-1]

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def wait(self, condition: Callable[[list[str]], object], timeout: float = 10.0,
             what: str = "the screen") -> object:  # fmt: skip
        """Poll the screen until `condition(lines)` is truthy: its value; else fail, showing it."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if value := condition(lines):
                return value
            if time.monotonic() > deadline:
                shown = "\n".join(lines)
                raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{shown}")
            time.sleep(0.02)

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.server, "kill-server"],
                       capture_output=True, timeout=10)  # fmt: skip
        Path(self.socket).unlink(missing_ok=True)  # kill-server leaves it


@pytest.fixture
def pane() -> Iterator[Callable[..., Pane]]:
    opened: list[Pane] = []

    def open_pane(command: str, **kw: int) -> Pane:
        opened.append(Pane(command, **kw))
        return opened[-1]

    yield open_pane
    for p in opened:
        p.close()


def top_command(daemon: DaemonProcess) -> str:
    assert SESSIONC is not None, "sessionc is not installed next to the test interpreter"
    return f"{shlex.quote(SESSIONC)} --socket {shlex.quote(str(daemon.socket))} top"


def agent_rows(lines: list[str]) -> dict[str, dict[str, str]]:
    """The agent table on the screen: {name: {HEADER: cell}}, cut at the header's columns."""
    head = next((i for i, line in enumerate(lines) if re.match(r"  AGENT +STATE ", line)), None)
    if head is None:
        return {}
    starts = [m.start() for m in re.finditer(r"\S+", lines[head])]
    names = lines[head].split()
    rows = {}
    for line in lines[head + 1 :]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        row = dict(zip(names, cells, strict=True))
        row["selected"] = line[:2].strip()
        rows[row["AGENT"]] = row
    return rows


def row_of(name: str, **want: str) -> Callable[[list[str]], dict[str, str] | None]:
    """A condition: agent `name`'s row when its cells say what `want` says."""

    def check(lines: list[str]) -> dict[str, str] | None:
        row = agent_rows(lines).get(name)
        return row if row and all(row.get(k) == v for k, v in want.items()) else None

    return check


def pid_of(daemon: DaemonProcess, name: str) -> int:
    return next(a["pid"] for a in daemon.call("agent.list") if a["name"] == name)


def last_line(text: str) -> Callable[[list[str]], list[str] | None]:
    """A condition: the screen, when its last line says `text`."""
    return lambda lines: lines if lines and text in lines[-1] else None


def watching(daemon: DaemonProcess, pane: Callable[..., Pane], before: str = "") -> Pane:
    """Session x with agents a and b, and top showing both running."""
    daemon.call("session.start", name="x", template="t")
    shown = pane(before + top_command(daemon))
    shown.wait(lambda s: row_of("a", STATE="running")(s) and row_of("b", STATE="running")(s),
               what="a and b running")  # fmt: skip
    return shown


# -- the tests ---------------------------------------------------------------------


@needs_tmux
def test_an_agent_started_while_top_runs_is_on_screen_within_a_second(make_daemon, pane):
    daemon = make_daemon(CONFIG)
    shown = watching(daemon, pane)
    assert shown.screen()[0].startswith("session x  ACTIVE  owner root")
    done = daemon.sessionc("run", "--name", "late", "--", "sleep", "infinity")
    returned = time.monotonic()
    assert done.returncode == 0, done.stderr
    row = shown.wait(row_of("late", STATE="running"), timeout=5, what="agent late")
    elapsed = time.monotonic() - returned
    assert elapsed < 1.0, f"agent late took {elapsed:.3f}s to show"
    assert row["PID"] == str(pid_of(daemon, "late"))
    started = [line for line in shown.screen() if "agent late started" in line]
    assert len(started) == 1, started  # the event, once


@needs_tmux
def test_a_kill_9_of_an_agent_shows_its_restart(make_daemon, pane):
    daemon = make_daemon(CONFIG)
    shown = watching(daemon, pane)
    old = pid_of(daemon, "a")
    shown.wait(row_of("a", PID=str(old), RESTARTS="0"), what="a's pid")
    # Past min_uptime (0.2s): restarted at once, not after a backoff.
    wait_for(lambda: next(a["uptime"] for a in daemon.call("agent.list") if a["name"] == "a")
             > 0.3, what="a past min_uptime")  # fmt: skip
    os.kill(old, 9)
    row = shown.wait(lambda s: (r := row_of("a", STATE="running", RESTARTS="1")(s))
                     and r["PID"] not in ("-", str(old)) and r, what="a restarted")  # fmt: skip
    assert row["PID"] == str(pid_of(daemon, "a"))
    assert row_of("b", RESTARTS="0")(shown.screen())
    shown.wait(lambda s: any("killed by SIGKILL" in line for line in s), what="the exit event")


@needs_tmux
def test_r_restarts_the_selected_agent(make_daemon, pane):
    daemon = make_daemon(CONFIG)
    shown = watching(daemon, pane)
    a, b = pid_of(daemon, "a"), pid_of(daemon, "b")
    shown.wait(row_of("a", selected=">"), what="a selected first")
    shown.keys("Down")
    shown.wait(row_of("b", selected=">"), what="b selected")
    shown.keys("r")
    shown.wait(last_line("restarted b"), what="'restarted b' on the last line")
    row = shown.wait(lambda s: (r := row_of("b", STATE="running")(s)) and r["PID"] != str(b)
                     and r, what="b under a new pid")  # fmt: skip
    assert row["PID"] == str(pid_of(daemon, "b")) != str(b)
    assert pid_of(daemon, "a") == a
    assert row_of("a", PID=str(a))(shown.screen())


@needs_tmux
def test_q_exits_0(make_daemon, pane):
    daemon = make_daemon(CONFIG)
    shown = watching(daemon, pane)
    shown.keys("q")
    shown.wait(lambda s: "EXIT=0" in s, what="EXIT=0")
    assert not agent_rows(shown.screen()), "curses left the frame on the screen"


@needs_tmux
def test_a_resize_redraws_at_the_new_size(make_daemon, pane):
    daemon = make_daemon(CONFIG)
    # LINES and COLUMNS exported by a shell must not pin the frame to their size.
    shown = watching(daemon, pane, "env LINES=24 COLUMNS=100 ")
    lines = shown.screen()
    rule = [line for line in lines if line.startswith("── events ")]
    assert rule and len(rule[0]) >= 115, rule
    assert lines[-1].startswith("↑↓ select"), "the keys are not on the pane's last row (40)"
    shown.tmux("resize-window", "-t", shown.name, "-x", "80", "-y", "20")

    def redrawn(lines: list[str]) -> bool:
        ruled = [line for line in lines if line.startswith("── events ")]
        return (len(lines) == 20 and bool(ruled) and 75 <= len(ruled[0]) <= 80
                and lines[-1].startswith("↑↓ select"))  # fmt: skip

    shown.wait(redrawn, what="an 80x20 frame")
    assert all(len(line) <= 80 for line in shown.screen())
    assert row_of("a", STATE="running")(shown.screen())


@needs_tmux
def test_a_daemon_restart_shows_reconnecting_then_the_session_again(make_daemon, pane):
    daemon = make_daemon(CONFIG)
    shown = watching(daemon, pane)
    daemon.stop()
    shown.wait(lambda s: s and s[0].startswith("reconnecting"), what="reconnecting…")
    daemon.restart()
    shown.wait(lambda s: s and s[0].startswith("session x  ACTIVE"), what="session x again")
    running = wait_for(lambda: next((x["pid"] for x in daemon.call("agent.list")
                                     if x["name"] == "a" and x["state"] == "running"), None),
                       what="a running under the new daemon")  # fmt: skip
    shown.wait(row_of("a", STATE="running", PID=str(running)), what="a as the new daemon has it")
    assert not any("reconnecting" in line for line in shown.screen())


@needs_tmux
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run top as uid 65534")
def test_an_observers_k_is_refused_with_the_daemons_message(make_shared_daemon, pane):
    daemon = make_shared_daemon(CONFIG)  # its tables follow the [daemon] keys
    daemon.call("session.start", name="x", template="t")
    python = interpreter_for_others()
    if python is None:
        pytest.skip("no Python >= 3.11 that uid 65534 may run")
    code = client_copy(daemon.root.parent)
    command = (f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- env "
               f"PYTHONPATH={shlex.quote(str(code))} {shlex.quote(python)} -m sessiond.cli "
               f"--socket {shlex.quote(str(daemon.socket))} top")  # fmt: skip
    shown = pane(command)
    shown.wait(row_of("a", STATE="running", selected=">"), what="top as uid 65534")
    pid = pid_of(daemon, "a")
    shown.keys("k")
    shown.wait(last_line("signal to send to a"), what="the signal prompt")
    shown.keys("TERM", "Enter")
    said = "nobody may not call agent.kill: it needs the owner role, and nobody is observer"
    refused = shown.wait(last_line(said), what="the daemon's refusal")
    assert "—" in refused[-1], "the refusal's hint is missing"
    cli = daemon.sessionc("agent", "kill", "a", user=NOBODY, group=NOBODY)
    assert cli.returncode != 0 and said in cli.stderr  # the same words sessionc gives
    hint = refused[-1].split("— ", 1)[1]
    assert hint and hint[:40] in cli.stderr
    assert pid_of(daemon, "a") == pid
    assert row_of("a", STATE="running", PID=str(pid))(shown.screen())


# -- --once: no tmux -------------------------------------------------------------


def test_once_prints_a_frame_with_the_session_and_its_agents(make_daemon):
    daemon = make_daemon(CONFIG)
    daemon.call("session.start", name="x", template="t")
    done = daemon.sessionc("top", "--once", env={"COLUMNS": "120", "LINES": "40"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("session x  ACTIVE  owner root")
    rows = agent_rows(lines)
    assert set(rows) == {"a", "b"}
    assert rows["a"]["PID"] == str(pid_of(daemon, "a"))
    assert rows["a"]["LABELS"] == "work" and rows["b"]["LABELS"] == "-"
    assert any("agent a started" in line for line in lines)
    assert "\x1b" not in done.stdout


def test_once_without_a_live_session_says_so(daemon):
    done = daemon.sessionc("top", "--once")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "no live session"
    assert "AGENT" not in done.stdout


@pytest.mark.parametrize("once", [["--once"], []], ids=["once", "live"])
def test_top_without_a_daemon_fails_like_sessionc_does(short_tmp: Path, once: list[str]):
    """Before any screen: sessionc's message and exit status, not a traceback."""
    assert SESSIONC is not None
    done = subprocess.run([SESSIONC, "--socket", str(short_tmp / "none.sock"), "top", *once],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 3, done.stderr  # sessionc's status for an unreachable daemon
    assert done.stdout == ""
    assert "unable to reach sessiond" in done.stderr
    assert "Traceback" not in done.stderr


@needs_tmux
def test_states_are_in_colour_unless_no_color_says_not(make_daemon, pane):
    daemon = make_daemon(CONFIG)
    painted = watching(daemon, pane)
    coloured = painted.tmux("capture-pane", "-e", "-p", "-t", painted.name)
    assert re.search(r"\x1b\[[0-9;]*32m\s*running", coloured), coloured  # green, as in status
    assert re.search(r"\x1b\[[0-9;]*32m\s*ACTIVE", coloured), coloured
    daemon.call("session.stop")
    wait_for(lambda: daemon.call("session.status")["session"] is None, what="the stop")
    plain = watching(daemon, pane, before="NO_COLOR=1 ")
    screen = plain.tmux("capture-pane", "-e", "-p", "-t", plain.name)
    assert "running" in screen and not re.search(r"\x1b\[[0-9;]*3[1-6]m", screen), screen
