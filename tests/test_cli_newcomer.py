"""The rough edges a newcomer meets, end to end: the installed sessionc against a real daemon.

Mistyped commands, negative durations and unknown `--set` keys are usage errors
that say what was meant; `show` and `export` find a session without a name, or by
the id prefix that `history` prints; `events` are in columns; and the hints of a
user-mode daemon name `systemctl --user`, `journalctl --user` or its stderr, not
the system's commands.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from test_agents import SLEEPER, agent

from harness import SESSIONC, DaemonProcess, wait_for

SYSTEM_HINTS = ("'systemctl status sessiond'", "'journalctl -u sessiond'")
USER_HINTS = ("'systemctl --user status sessiond'", "'journalctl --user -u sessiond'",
              "the daemon's stderr")  # fmt: skip


# ---------------------------------------------------------------- usage errors


def test_a_mistyped_command_gets_a_guess_and_never_the_hidden_helper(
    daemon: DaemonProcess,
) -> None:
    done = daemon.sessionc("stauts")
    assert done.returncode == 2
    assert "invalid choice: 'stauts'; did you mean 'status'?" in done.stderr
    assert "__complete" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("value", [["--timeout", "-1m"], ["--timeout=-1m"]])
def test_a_negative_duration_is_named(daemon: DaemonProcess, value: list[str]) -> None:
    done = daemon.sessionc("start", "n", *value)
    assert done.returncode == 2
    assert ("argument --timeout: -1m is not a duration like 90s, 5m, 1h30m: "
            "a duration is never negative") in done.stderr  # fmt: skip
    assert "expected one argument" not in done.stderr
    assert daemon.call("session.status")["session"] is None


def test_an_unknown_set_key_is_a_usage_error_that_lists_the_keys(daemon: DaemonProcess) -> None:
    done = daemon.sessionc("start", "n", "--set", "error_treshold=3")
    assert done.returncode == 2
    assert "error_treshold is not a [session] key; did you mean error_threshold?" in done.stderr
    keys = "timeout, idle_after, error_threshold, error_window, max_agents, max_duration, stop_at"
    assert f"(the keys: {keys})" in done.stderr
    assert daemon.call("session.status")["session"] is None  # nothing was sent
    assert daemon.sessionc("start", "n", "--set", "error-threshold=3").returncode == 0
    assert daemon.call("session.get", name="n")["errors"]["threshold"] == 3


# ---------------------------------------------------------------- show and export


def test_show_and_export_default_to_the_live_session_then_the_latest(
    daemon: DaemonProcess, short_tmp: Path
) -> None:
    assert daemon.sessionc("show").returncode == 5  # none yet
    assert "no session to show" in daemon.sessionc("show").stderr
    for name in ("first", "second"):
        assert daemon.sessionc("start", name).returncode == 0
        shown = daemon.sessionc("show")
        assert (shown.returncode, shown.stdout.splitlines()[0]) == (0, f"session:      {name}")
        assert daemon.sessionc_json("export")["session"]["name"] == name
        assert daemon.sessionc("stop").returncode == 0
    shown = daemon.sessionc("show")  # none is live: the latest
    assert shown.returncode == 0 and "session:      second" in shown.stdout
    assert "state:        closed" in shown.stdout
    out = short_tmp / "latest.json"
    done = daemon.sessionc("export", "-o", str(out))
    assert (done.returncode, done.stdout) == (0, f"exported session second to {out}\n")
    assert json.loads(out.read_text())["session"]["name"] == "second"


def test_show_and_export_take_the_id_that_history_prints(daemon: DaemonProcess) -> None:
    for name in ("alpha", "beta"):
        assert daemon.sessionc("start", name).returncode == 0
        assert daemon.sessionc("stop").returncode == 0
    rows = daemon.sessionc("history").stdout.splitlines()[1:]
    prefixes = {row.split()[0]: row.split()[1] for row in rows}
    assert all(re.fullmatch(r"[0-9a-f]{8}", prefix) for prefix in prefixes.values())
    for name, prefix in prefixes.items():
        shown = daemon.sessionc("show", prefix)
        assert shown.returncode == 0, shown.stderr
        assert f"session:      {name}" in shown.stdout and f"id:           {prefix}" in shown.stdout
        assert daemon.sessionc_json("export", prefix)["session"]["name"] == name
    missing = daemon.sessionc("show", "0123abcd")
    assert missing.returncode == 5
    assert "no session named '0123abcd', nor one whose id starts with it" in missing.stderr


# ---------------------------------------------------------------- events


def test_events_are_in_columns(make_daemon: Callable[..., DaemonProcess]) -> None:
    """A crash past the threshold writes session.disconnected, the longest kind there is."""
    crash = agent("crash", "import sys, time; time.sleep(0.2); sys.exit(3)", max_restarts=0)
    daemon = make_daemon(crash + agent("steady", SLEEPER)
                         + '[templates.t]\nagents = ["crash", "steady"]\n')  # fmt: skip
    assert (
        daemon.sessionc("start", "n", "--template", "t", "--error-threshold", "1").returncode == 0
    )
    wait_for(lambda: daemon.call("session.status")["session"]["state"] == "disconnected",
             what="the session disconnected")  # fmt: skip
    lines = daemon.sessionc("events", "-n", "50").stdout.splitlines()
    columns = [re.match(r"(\S+)  (\S+ +)\S", line) for line in lines]
    assert all(columns), lines
    kinds = [column[2].strip() for column in columns if column]
    assert "session.disconnected" in kinds and "agent.started" in kinds
    starts = {column.end() - 1 for column in columns if column}
    assert starts == {10 + len("session.disconnected") + 2}, lines


# ---------------------------------------------------------------- hints of a user daemon


@pytest.fixture
def user_daemon(make_daemon: Callable[..., DaemonProcess], short_tmp: Path) -> DaemonProcess:
    """A user-mode daemon on the user socket: $XDG_RUNTIME_DIR/sessiond/sessiond.sock."""
    runtime = short_tmp / "xdg"
    runtime.mkdir(mode=0o700)
    daemon = make_daemon(start=False)
    daemon.socket = runtime / "sessiond" / "sessiond.sock"
    daemon.env = {"XDG_RUNTIME_DIR": str(runtime)}
    return daemon.start()


def sessionc_env(daemon: DaemonProcess) -> dict[str, str]:
    """sessionc's environment in the daemon's login: no $SESSIOND_SOCKET, its XDG_RUNTIME_DIR."""
    environ = {k: v for k, v in os.environ.items() if k != "SESSIOND_SOCKET"}
    return {**environ, **daemon.env}


def bare_sessionc(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed sessionc without --socket: it finds the user socket by itself."""
    assert SESSIONC is not None
    return subprocess.run([SESSIONC, *args], capture_output=True, text=True, timeout=30,
                          env=sessionc_env(daemon), cwd="/")  # fmt: skip


def assert_user_hint(stderr: str) -> None:
    hint = stderr.partition("\nhint: ")[2]
    assert hint and all(words in hint for words in USER_HINTS), stderr
    assert not any(words in hint for words in SYSTEM_HINTS), stderr


@pytest.fixture
def no_system_daemon() -> None:
    if os.path.exists("/run/sessiond/sessiond.sock"):
        pytest.skip("a system daemon runs here: sessionc would try its socket first")


def test_a_stuck_user_daemon_gets_user_mode_hints(
    user_daemon: DaemonProcess, no_system_daemon: None
) -> None:
    assert bare_sessionc(user_daemon, "status").returncode == 0
    user_daemon.signal(signal.SIGSTOP)
    try:
        done = bare_sessionc(user_daemon, "--rpc-timeout", "0.5", "status")
    finally:
        user_daemon.signal(signal.SIGCONT)
    assert done.returncode == 3
    assert f"gave up on sessiond at {user_daemon.socket}: no reply within 0.5s" in done.stderr
    assert_user_hint(done.stderr)


def test_a_user_daemon_that_goes_away_gets_user_mode_hints(
    user_daemon: DaemonProcess, no_system_daemon: None
) -> None:
    assert SESSIONC is not None
    assert bare_sessionc(user_daemon, "start", "n").returncode == 0
    environ = sessionc_env(user_daemon)
    follower = subprocess.Popen([SESSIONC, "events", "-f"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=environ)  # fmt: skip
    try:
        assert follower.stdout is not None
        assert "session.starting" in follower.stdout.readline()  # the tail: it is subscribed
        user_daemon.stop()
        _, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
        follower.wait()
    assert follower.returncode == 3
    assert f"lost the connection to sessiond at {user_daemon.socket}" in err
    assert_user_hint(err)


def test_no_daemon_on_the_user_socket_says_how_to_start_yours(
    user_daemon: DaemonProcess, no_system_daemon: None
) -> None:
    user_daemon.stop()
    done = bare_sessionc(user_daemon, "status")
    assert done.returncode == 3
    assert f"unable to reach sessiond at {user_daemon.socket}: " in done.stderr
    assert "hint: start yours with 'systemctl --user start sessiond' or 'sessiond --user'" in (
        done.stderr
    )


def test_a_socket_that_does_not_tell_gets_both_hints(daemon: DaemonProcess) -> None:
    if daemon.socket.stat().st_uid != 0:
        pytest.skip("the test daemon's socket is not root's: it tells a user daemon")
    daemon.signal(signal.SIGSTOP)
    try:
        done = daemon.sessionc("--rpc-timeout", "0.5", "status")  # root's, not a default socket
    finally:
        daemon.signal(signal.SIGCONT)
    assert done.returncode == 3
    assert "'journalctl -u sessiond' (with --user for a user daemon)" in done.stderr
