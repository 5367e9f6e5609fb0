"""Colour on a terminal, and `sessionc status --watch`: the installed sessionc, a real daemon.

A terminal is a pseudo-terminal (pty.openpty) that is sessionc's stdin, stdout
and stderr, read as bytes while sessionc runs; a pipe is a file. What colour.py
decides, and how show.py lays painted text out, is checked with fakes first.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import SESSIONC, DaemonProcess, wait_for
from sessiond.cli import colour, frame, show, watch

SGR = re.compile(rb"\x1b\[[0-9;]*m")
HOME_AND_CLEAR = watch.HOME_AND_CLEAR.encode()
TTY = "pts/1\x1b[2J\x1b]0;x\x07"  # a clear screen and a new window title
NOW = 1_795_000_000.0


def environ(**extra: str) -> dict[str, str]:
    """sessionc's environment: a terminal that shows colour, unless `extra` says otherwise."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return {**env, "TERM": "xterm-256color", **extra}


def popen(daemon: DaemonProcess, args: tuple[str, ...], env: dict[str, str] | None,
          **streams: object) -> subprocess.Popen[bytes]:  # fmt: skip
    assert SESSIONC is not None, "sessionc is not installed next to the test interpreter"
    # Ctrl-C must work as at a terminal even when the tests run as a background job, which a
    # non-interactive shell starts with SIGINT ignored: ignored, it would stay so across exec.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([SESSIONC, "--socket", str(daemon.socket), *args],
                                env=env or environ(), cwd="/", **streams)  # type: ignore[call-overload]  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, before)


class Terminal:
    """`sessionc ARGS` on a pseudo-terminal, what it writes gathered as it comes."""

    def __init__(self, daemon: DaemonProcess, *args: str, env: dict[str, str] | None = None):
        self.master, slave = pty.openpty()
        try:
            self.proc = popen(daemon, args, env, stdin=slave, stdout=slave, stderr=slave)
        finally:
            os.close(slave)
        self.output = b""

    def read(self, timeout: float) -> bool:
        """Take what has come within `timeout` s; False once sessionc's side is closed."""
        if not select.select([self.master], [], [], timeout)[0]:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every copy of the other side is closed
            return False
        self.output += data
        return bool(data)

    def wait_for(self, condition: Callable[[bytes], object], what: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while not condition(self.output):
            assert time.monotonic() < deadline, f"no {what} within {timeout}s: {self.output!r}"
            assert self.read(0.1), f"sessionc ended before {what}: {self.output!r}"

    def finish(self, timeout: float = 10.0) -> int:
        """Read to the end of sessionc's output; its exit status."""
        deadline = time.monotonic() + timeout
        while self.read(0.1):
            assert time.monotonic() < deadline, f"sessionc still writes: {self.output!r}"
        os.close(self.master)
        return self.proc.wait(timeout)


def on_terminal(daemon: DaemonProcess, *args: str, env: dict[str, str] | None = None) -> bytes:
    term = Terminal(daemon, *args, env=env)
    status = term.finish()
    assert status in (0, 5), term.output
    return term.output


def no_escapes_but_colours(output: bytes) -> bool:
    """Whether each ESC in `output` starts one of sessionc's colour codes."""
    return b"\x1b" not in SGR.sub(b"", output)


@pytest.fixture
def live(daemon: DaemonProcess, short_tmp: Path) -> DaemonProcess:
    """A session with a running agent."""
    daemon.call("session.start", name="nightly", tty=TTY)
    daemon.call("agent.run", command=[sys.executable, "-c", "import time; time.sleep(600)"],
                name="sleeper", cwd=str(short_tmp), restart="never")  # fmt: skip
    agents = lambda: daemon.call("agent.list")  # noqa: E731
    wait_for(lambda: agents()[0]["state"] == "running", what="the agent running")
    return daemon


# ---------------------------------------------------------------- the rules, with fakes


class Stream:
    def __init__(self, tty: bool | None) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        if self.tty is None:
            raise ValueError("I/O operation on closed file")
        return self.tty


@pytest.mark.parametrize(
    ("tty", "no_color", "env", "on"),
    [
        (True, False, {}, True),
        (False, False, {}, False),  # a pipe or a file
        (None, False, {}, False),  # closed
        (True, True, {}, False),  # --no-color
        (True, False, {"NO_COLOR": "1"}, False),
        (True, False, {"NO_COLOR": "0"}, False),  # any value at all (no-color.org)
        (True, False, {"NO_COLOR": ""}, True),  # but an empty one
        (True, False, {"TERM": "dumb"}, False),
    ],
)
def test_when_colour_is_on(
    monkeypatch: pytest.MonkeyPatch, tty: bool | None, no_color: bool, env: dict[str, str],
    on: bool,
) -> None:  # fmt: skip
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert colour.enabled(Stream(tty), SimpleNamespace(no_color=no_color)) is on  # type: ignore[arg-type]


def test_painted_text_is_escaped_first_and_left_alone_after() -> None:
    painted = show.coloured("a\x1b[2J", colour.RED, True)
    assert painted == "\x1b[31ma\\x1b[2J\x1b[0m"
    assert show.escape(painted) == painted
    assert show.coloured("a\x1b[2J", colour.RED, False) == "a\x1b[2J"  # say() escapes it
    line = show.joined("agent \x07: ", painted)
    assert line == "agent \\a: " + painted and show.width(line) == len("agent \\a: a\\x1b[2J")
    assert not isinstance(show.joined("plain", "text"), colour.Painted)


def test_a_painted_status_reads_as_the_plain_one_and_colours_each_state() -> None:
    agents = [{"name": n, "state": s, "pid": 7} for n, s in
              [("a", "running"), ("bb", "backoff"), ("c\x1b", "failed")]]  # fmt: skip
    errors = {"count": 2, "threshold": 5, "window": 60}
    result = {"session": {"name": "n", "id": "1", "state": "active", "agents": agents,
                          "errors": errors}, "orphans": [{"pid": 1}]}  # fmt: skip
    plain = [show.escape(line) for line in show.status_lines(result, NOW)]
    painted = [show.escape(line) for line in show.status_lines(result, NOW, colour=True)]
    assert [re.sub(SGR.pattern.decode(), "", line) for line in painted] == plain  # aligned alike
    text = "\n".join(painted)
    for word, style in [("active", "32"), ("running", "32"), ("backoff", "33"),
                        ("failed", "31"), ("2 of 5 in 1m", "33"), ("AGENT", "2")]:  # fmt: skip
        assert f"\x1b[{style}m{word}" in text, word
    errors["count"] = 5  # the threshold: the session disconnects
    assert "\x1b[31m5 of 5 in 1m" in "\n".join(show.status_lines(result, NOW, colour=True))


def test_a_watched_status_fits_the_screen() -> None:
    lines = ["x" * 10] * 30
    assert watch.fit(lines, os.terminal_size((80, 40)), False) == lines
    fitted = watch.fit(lines, os.terminal_size((80, 24)), False)
    assert len(fitted) == 23 and fitted[-1].startswith("… 8 more lines")  # the cursor's row
    wrapped = watch.fit(["y" * 100] * 30, os.terminal_size((80, 24)), False)
    assert len(wrapped) == 12  # two rows each: 11 lines and the one that says how many more


# ---------------------------------------------------------------- against the daemon


def test_status_on_a_terminal_is_in_colour_and_only_sessionc_chooses_it(
    live: DaemonProcess,
) -> None:
    output = on_terminal(live, "status")
    assert b"\x1b[32mactive\x1b[0m" in output and b"\x1b[32mrunning\x1b[0m" in output
    assert no_escapes_but_colours(output)  # the session's tty is shown escaped
    assert rb"pts/1\x1b[2J" in output
    assert b"\x1b[32mrunning\x1b[0m" in on_terminal(live, "agents")


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("status",), environ(NO_COLOR="1")),
        (("--no-color", "status"), None),
        (("status", "--no-color"), None),
        (("status",), environ(TERM="dumb")),
    ],
)
def test_no_color_on_a_terminal_is_plain(
    live: DaemonProcess, args: tuple[str, ...], env: dict[str, str] | None
) -> None:
    output = on_terminal(live, *args, env=env)
    assert b"active" in output and b"\x1b" not in SGR.sub(b"", output) and not SGR.search(output)


def test_a_pipe_gets_no_colour(live: DaemonProcess) -> None:
    for args in (["status"], ["agents"], ["history"], ["health"]):
        done = live.sessionc(*args, env=environ())
        assert done.returncode == 0 and b"\x1b" not in done.stdout.encode(), args
    assert "\x1b" not in live.sessionc("start", "other", env=environ()).stderr


def test_events_and_logs_on_a_terminal_are_in_colour_and_plain_into_a_pipe(
    live: DaemonProcess,
) -> None:
    events = on_terminal(live, "events")
    assert b"\x1b[33msession.starting\x1b[0m" in events and no_escapes_but_colours(events)
    assert b"\x1b[32msession.started\x1b[0m" in events and b"\x1b[32magent.started" in events
    talker = [sys.executable, "-c", "print('hello', flush=True); import time; time.sleep(600)"]
    live.call("agent.run", command=talker, name="talker", cwd="/", restart="never")
    wait_for(lambda: live.call("logs.tail")["entries"], what="the talker's line")
    logs = on_terminal(live, "logs")
    assert SGR.search(logs) and no_escapes_but_colours(logs)  # time, agent names
    for args in (["events"], ["logs"]):
        assert "\x1b" not in live.sessionc(*args, env=environ()).stdout, args
        assert b"\x1b" not in on_terminal(live, *args, env=environ(NO_COLOR="1")), args


def test_an_error_on_a_terminal_is_red_and_its_hint_dim(daemon: DaemonProcess) -> None:
    output = on_terminal(daemon, "stop")
    assert b"\x1b[31msessionc: no session is active\x1b[0m" in output
    assert b"\x1b[2mhint: start one with" in output
    assert b"\x1b" not in on_terminal(daemon, "--no-color", "stop")


def test_watch_on_a_terminal_redraws_in_place_until_ctrl_c(live: DaemonProcess) -> None:
    term = Terminal(live, "status", "--watch", "1")
    term.wait_for(lambda out: out.count(HOME_AND_CLEAR) >= 2, "a second frame", timeout=5)
    frames = term.output.split(HOME_AND_CLEAR)[1:]
    assert all(b"Every 1s: sessionc status" in frame for frame in frames)
    assert b"\x1b[32mactive\x1b[0m" in frames[0]
    term.proc.send_signal(signal.SIGINT)
    assert term.finish() == 0


def test_watch_into_a_pipe_prints_status_after_status_until_ctrl_c(
    live: DaemonProcess, short_tmp: Path
) -> None:
    out = short_tmp / "watch.out"
    with out.open("wb") as file:
        proc = popen(live, ("status", "--watch", "1"), None, stdout=file, stderr=file)
    wait_for(lambda: out.read_bytes().count(b"Every 1s: ") >= 2, 5, "a second status")
    text = out.read_text()
    assert "\x1b" not in text
    assert "\n\nEvery 1s: sessionc status" in text and text.count("session:      nightly") >= 2
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


def test_watch_says_the_daemon_is_unreachable_and_keeps_trying(
    make_daemon: Callable[..., DaemonProcess], short_tmp: Path
) -> None:
    daemon = make_daemon(start=False)
    out = short_tmp / "watch.out"
    with out.open("wb") as file:
        proc = popen(daemon, ("status", "--watch", "0.2"), None, stdout=file, stderr=file)
    try:
        wait_for(lambda: b"daemon unreachable at " in out.read_bytes(), what="unreachable")
        daemon.start()
        wait_for(lambda: b"no active session" in out.read_bytes(), what="the status")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert f"daemon unreachable at {daemon.socket}: " in out.read_text()


def test_watch_is_not_json(daemon: DaemonProcess) -> None:
    done = daemon.sessionc("--json", "status", "--watch")
    assert done.returncode == 2 and "not as JSON" in done.stderr


def test_a_painted_frame_line_is_cut_by_what_shows_and_ends_its_colour() -> None:
    line = show.joined("ab ", colour.paint("running", colour.GREEN), " cd")
    assert frame.cut(line, 6) == "ab \x1b[32mrun\x1b[0m"
    assert show.width(frame.cut(line, 100)) == len("ab running cd")
    assert frame.cut("plain text", 5) == "plain"
