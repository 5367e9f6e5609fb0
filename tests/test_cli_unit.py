"""sessionc and its client without a daemon: argparse, parsing, formatting, exit codes.

The wire is exercised against `FakeDaemon`, a thread that answers scripted
lines on a real Unix socket (partial lines, notifications, EOF). End-to-end
tests against the real daemon live elsewhere.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import inspect
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessiond.cli import main as cli
from sessiond.cli import show
from sessiond.cli.calls import start_timeout
from sessiond.cli.client import Client, Disconnected, NoReply, RemoteError, Unreachable
from sessiond.cli.commands import parse_duration
from sessiond.cli.main import main
from sessiond.cli.show import fmt_bytes, fmt_duration, fmt_exit, fmt_relative, status_lines
from sessiond.core import settings, units
from sessiond.errors import EXIT_CODES, EXIT_FAILURE, EXIT_UNREACHABLE, exit_code_for
from sessiond.terminal import terminal_columns

REPO = Path(__file__).resolve().parents[1]
NOW = 1_795_000_000.0  # a fixed "now" for relative times


def stamp(offset: float) -> str:
    """An RFC 3339 UTC time `offset` seconds from NOW, as the daemon writes them."""
    when = datetime.datetime.fromtimestamp(NOW + offset, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---------------------------------------------------------------- argparse


def parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(cli.rewrite_argv(list(argv)))


VALID_ARGV = [
    ["status"],
    ["--json", "status"],
    ["status", "--json", "--socket", "/tmp/x.sock"],
    ["start"],
    ["start", "nightly", "--template", "backtest", "--timeout", "45m", "--idle-after", "2m"],
    ["start", "--error-threshold", "3", "--max-duration", "1h30m", "--stop-at", "16:00"],
    ["start", "--set", "error_window=10m", "--set", "max-agents=4", "--from", "old"],
    ["start", "--wait"],
    ["start", "--wait=90s", "nightly"],
    ["join"],
    ["join", "nightly"],
    ["leave"],
    ["stop", "nightly"],
    ["pause", "--reason", "lunch"],
    ["resume"],
    ["reconnect"],
    ["touch"],
    ["health", "nightly"],
    ["run", "--name", "w", "--restart", "never", "--label", "a", "--label", "b", "--", "ls"],
    ["agents"],
    ["agent", "restart", "scanner"],
    ["agent", "kill", "scanner", "--signal", "KILL"],
    ["logs", "scanner", "-n", "50", "-f"],
    ["logs"],
    ["events", "-n", "5", "-f"],
    ["history", "-n", "3"],
    ["show", "nightly"],
    ["show"],
    ["show", "1f0c2a1b"],
    ["export", "nightly", "-o", "out.json"],
    ["export"],
    ["export", "-o", "out.json"],
    ["metrics", "--prometheus"],
    ["cleanup", "--orphans-only"],
    ["report", "--metric", "tokens=1500", "--metric", "cost=0.5", "--error", "boom"],
    ["report", "--checkpoint", "-"],
    ["--rpc-timeout", "0", "status"],
    ["status", "--watch"],
    ["status", "--watch", "5"],
    ["status", "--watch=0.5", "--no-color"],
    ["--no-color", "agents"],
]


@pytest.mark.parametrize("argv", VALID_ARGV)
def test_every_command_parses(argv: list[str]) -> None:
    assert parse(*argv).command == next(word for word in argv if word in cli.COMMANDS)


USAGE_ERRORS = [
    [],
    ["frobnicate"],
    ["start", "--timeout", "soon"],
    ["start", "--timeout", "-5"],
    ["start", "--error-threshold", "0"],
    ["start", "--stop-at", "25:00"],
    ["start", "--set", "novalue"],
    ["start", "--set", "name=x"],
    ["start", "--wait=later"],
    ["start", "--wai"],  # no abbreviations: scripts must not break when options are added
    ["agent", "pause", "x"],
    ["agent", "kill"],
    ["run"],
    ["run", "--restart", "sometimes", "--", "ls"],
    ["logs", "-n", "0"],
    ["history", "-n", "many"],
    ["stauts"],
    ["start", "--timeout", "-1m"],
    ["start", "--timeout=-1m"],
    ["start", "--wait", "-5m"],
    ["start", "--set", "error_treshold=3"],
    ["start", "--set", "template=backtest"],
    ["report", "--metric", "tokens=lots"],
    ["status", "--rpc-timeout", "soon"],
    ["status", "--watch", "0"],  # less than watch(1)'s 0.1s
    ["status", "--watch", "-1"],
    ["status", "--watch", "soon"],
    ["leave", "nightly"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sessionc {cli.__version__}"


def test_bare_wait_means_no_limit_and_keeps_the_name() -> None:
    assert parse("start", "--wait", "nightly").wait is True
    assert parse("start", "--wait", "nightly").name == "nightly"
    assert parse("start", "nightly", "--wait=90s").wait == 90
    assert (parse("start", "--wait", "5m").wait, parse("start", "--wait", "5m").name) == (300, None)
    assert parse("start", "nightly", "--wait").wait is True
    assert parse("start", "--wait=0").wait == 0
    assert parse("start").wait is None


def test_run_keeps_the_command_line_after_dashes() -> None:
    args = parse("run", "--name", "w", "--", "python3", "-c", "print(1)", "--wait", "--", "x")
    assert args.cmdline == ["python3", "-c", "print(1)", "--wait", "--", "x"]
    assert args.name == "w"


def test_global_options_after_the_command_override_defaults() -> None:
    args = parse("--socket", "/a", "status", "--json")
    assert (args.socket, args.json, args.rpc_timeout) == ("/a", True, 30.0)
    assert parse("status", "--socket", "/b").socket == "/b"
    assert parse("status").json is False


def test_set_and_metric_values() -> None:
    args = parse("start", "--set", "idle-after=2m", "--set", "error_threshold=3")
    assert args.settings == [("idle_after", "2m"), ("error_threshold", "3")]
    args = parse("report", "--metric", "tokens=1500", "--metric", "cost=0.025")
    assert args.metrics == [("tokens", 1500), ("cost", 0.025)]


# ---------------------------------------------------------------- what a newcomer mistypes


@pytest.mark.parametrize(
    ("argv", "word", "guess"),
    [(["stauts"], "stauts", "status"), (["--json", "agnets"], "agnets", "agents"),
     (["histroy", "-n", "3"], "histroy", "history"), (["frobnicate"], "frobnicate", None),
     (["__complet", "agents"], "__complet", "completion")],  # never the hidden __complete
)  # fmt: skip
def test_an_unknown_command_gets_a_guess_and_no_hidden_choice(
    argv: list[str], word: str, guess: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: argument COMMAND: invalid choice: {word!r}" in err
    assert "__complete" not in err  # hidden: never offered
    assert ("did you mean" in err) == (guess is not None)
    if guess:
        assert f"did you mean {guess!r}?" in err
    listed = err.partition("(choose from ")[2]
    assert all(repr(name) in listed for name, c in cli.COMMANDS.items() if c.help)


def test_choice_error_keeps_argparse_form() -> None:
    assert cli.choice_error("sotp", ["status", "stop", "__complete"]) == (
        "invalid choice: 'sotp'; did you mean 'stop'? (choose from 'status', 'stop')"
    )
    assert (
        cli.choice_error("x", ["bash", "zsh"]) == "invalid choice: 'x' (choose from 'bash', 'zsh')"
    )


NEGATIVE = "-1m is not a duration like 90s, 5m, 1h30m: a duration is never negative"


@pytest.mark.parametrize(
    "argv",
    [["start", "--timeout", "-1m"], ["start", "--timeout=-1m"], ["start", "--idle-after", "-1m"],
     ["start", "--max-duration", "-1m", "n"], ["start", "n", "--wait", "-1m"],
     ["start", "--wait=-1m"], ["--rpc-timeout", "-1m", "status"], ["status", "--rpc-timeout=-1m"]],
)  # fmt: skip
def test_a_negative_duration_is_named_as_such(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    flag = next(word for word in argv if word.startswith("--")).partition("=")[0]
    assert f"error: argument {flag}: {NEGATIVE}\n" in err
    assert "expected one argument" not in err


def test_rewrite_argv_joins_dash_values_to_duration_options_only() -> None:
    rewrite = cli.rewrite_argv
    assert rewrite(["start", "--timeout", "-1m", "n"]) == ["start", "--timeout=-1m", "n"]
    assert rewrite(["start", "--wait", "-.5"]) == ["start", "--wait=-.5"]
    assert rewrite(["start", "--wait", "-x"]) == ["start", "--wait=", "-x"]  # an option: bare
    assert rewrite(["logs", "-n", "-3"]) == ["logs", "-n", "-3"]  # not a duration
    assert rewrite(["start", "--timeout", "--json"]) == ["start", "--timeout", "--json"]
    agent = ["run", "--", "sleep", "--timeout", "-1", "--wait"]
    assert rewrite(agent) == agent  # an agent's command line is its own
    assert cli.duration_flags() == {"--timeout", "--idle-after", "--max-duration", "--wait",
                                    "--rpc-timeout", "--watch", "--since"}  # fmt: skip
    assert rewrite(["status", "--watch", "-1"]) == ["status", "--watch=-1"]


def test_set_keys_are_the_session_keys_of_config() -> None:
    """sessionc cannot import config.py (too heavy): its copy of the key list must keep up."""
    assert tuple(settings.SESSION_KEYS) == cli.SESSION_SET_KEYS
    assert not set(cli.RESERVED_SET_KEYS) & set(settings.SESSION_KEYS)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("error_treshold=3", "error_treshold is not a [session] key; did you mean error_threshold?"),
     ("idle-afer=2m", "idle_afer is not a [session] key; did you mean idle_after?"),
     ("colour=red", "colour is not a [session] key ("),
     ("template=backtest", "template is not a [session] key: give --template T"),
     ("from=old", "from is not a [session] key: give --from OLD")],
)  # fmt: skip
def test_an_unknown_set_key_is_a_usage_error_listing_the_keys(
    setting: str, expected: str, capsys: pytest.CaptureFixture[str], short_tmp: Path
) -> None:
    assert main(["--socket", str(short_tmp / "none.sock"), "start", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert f"error: argument --set: {expected}" in err
    if "give" not in expected:
        assert f"(the keys: {', '.join(settings.SESSION_KEYS)})" in err


# ---------------------------------------------------------------- one subparser, or none


def outcome(parse: Callable[[], Any], capsys: pytest.CaptureFixture[str]) -> tuple[Any, str, str]:
    """What a parse gives (its namespace or its exit status) and prints."""
    try:
        result = vars(parse())
    except SystemExit as exc:
        result = exc.code
    out, err = capsys.readouterr()
    return result, out, err


EVERY_COMMAND_ARGV = [
    argv
    for name in cli.COMMANDS
    for argv in (
        [name],
        [name, "--help"],
        ["--json", name, "-h"],
        [name, "--bogus"],
        ["--socket", "/s", name, "--rpc-timeout", "5", "--json"],
        ["--socket=/s", "--rpc-timeout=1m", name, "some", "words"],
        ["--version", name],
    )
]
OTHER_ARGV = [
    ["--help"],
    ["-h", "status"],
    ["--json"],
    ["--socket", "status"],
    ["--socket"],
    ["--json=yes", "status"],
    ["--", "status"],
    ["--sock", "/s", "status"],
    ["--rpc-timeout", "-5", "status"],
    ["status", "--socket"],
    ["status", "--socket", "-x"],
    ["status", "--json=1"],
    ["status", "status"],
    ["status", "--"],
    ["--socket=", "status"],
    ["--socket", "/a", "agents", "--socket=/b", "--rpc-timeout=0"],
]


@pytest.mark.parametrize("argv", VALID_ARGV + USAGE_ERRORS + EVERY_COMMAND_ARGV + OTHER_ARGV)
def test_main_parses_like_the_whole_tree(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """One subparser (or parse_plain) gives what the whole tree gives, errors and help too."""
    argv = cli.rewrite_argv(argv)
    whole = outcome(lambda: cli.build_parser().parse_args(argv), capsys)
    command = cli.command_word(argv)
    assert outcome(lambda: cli.build_parser(command).parse_args(argv), capsys) == whole
    plain = cli.parse_plain(argv)
    assert plain is None or vars(plain) == whole[0]
    if not isinstance(whole[0], dict):  # help, version or a usage error: main says the same
        assert (main(argv), *capsys.readouterr()) == whole


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["status"], "status"),
        (["--socket", "/s", "--json", "--rpc-timeout", "5", "agent", "kill", "x"], "agent"),
        (["--socket=/s", "--rpc-timeout=5", "--version", "start", "--wait"], "start"),
        (["--socket", "start", "status"], "status"),  # start is the socket
        ([], None),
        (["frobnicate", "status"], None),
        (["-h", "status"], None),
        (["--help", "status"], None),
        (["--socket", "status"], None),
        (["--json=1", "status"], None),
        (["--", "status"], None),
    ],
)
def test_command_word(argv: list[str], command: str | None) -> None:
    assert cli.command_word(argv) == command


@pytest.mark.parametrize(
    "argv",
    [
        *([name] for name, command in cli.COMMANDS.items() if not command.args),
        ["status", "--json", "--socket", "/tmp/x.sock"],
        ["--json", "--socket=/a", "--rpc-timeout", "1m", "agents", "--socket", "/b"],
        ["leave", "--rpc-timeout=0", "--json", "--json"],
        ["--socket=-odd-", "touch"],
        ["--no-color", "status", "--no-color"],
        ["history"],  # options of its own, none given
        ["events", "--json"],
    ],
)
def test_plain_command_lines_skip_argparse(argv: list[str]) -> None:
    plain = cli.parse_plain(argv)
    assert plain is not None
    assert vars(plain) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--json"],
        ["start"],
        ["logs"],  # a positional of its own, if optional: argparse's
        ["history", "-n", "3"],
        ["status", "--watch"],
        ["leave", "nightly"],
        ["status", "status"],
        ["status", "-h"],
        ["--version", "status"],
        ["status", "--rpc-timeout", "soon"],
        ["status", "--rpc-timeout=-5"],
        ["status", "--socket"],
        ["status", "--socket", "--json"],
        ["status", "--json=1"],
        ["status", "--"],
    ],
)
def test_other_command_lines_go_to_argparse(argv: list[str]) -> None:
    assert cli.parse_plain(argv) is None


@pytest.mark.parametrize("columns", [None, "40", "200", "0", "-3", "wide"])
def test_help_is_as_wide_as_argparse_makes_it(
    columns: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil  # noqa: PLC0415 -- what argparse itself asks, and sessionc does not import

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns


@pytest.mark.parametrize("columns", ["40", "100"])
def test_help_is_formatted_as_by_argparse(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    parser = cli.build_parser()
    helps = [parser.format_help()]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    assert parser.format_help() == helps[0]
    (subparsers,) = (action for action in parser._actions if action.dest == "command")
    assert isinstance(subparsers.choices, dict)
    assert list(subparsers.choices) == list(cli.COMMANDS)
    for sub in subparsers.choices.values():
        helps.append(sub.format_help())
        sub.formatter_class = argparse.HelpFormatter
        assert sub.format_help() == helps[-1]


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("1.5", 1.5),
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1h0m5s", 3605),
        (" 45s ", 45),
        ("1h 30m", 5400),
        ("0", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "s", "5x", "1m1h", "-5", "nan", "inf", "5 m", "1e400", "1_0", ".5", "9" * 400]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like 90s, 5m, 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1m", "-1m is not a duration like 90s, 5m, 1h30m: a duration is never negative"),
        ("-5", "-5 is not a duration like 90s, 5m, 1h30m: a duration is never negative"),
        ("soon", "soon is not a duration like 90s, 5m, 1h30m or plain seconds"),
        ("-soon", "-soon is not a duration like 90s, 5m, 1h30m or plain seconds"),
        ("", "'' is not a duration like 90s, 5m, 1h30m or plain seconds"),
        ("9" * 400, "is not a duration like 90s, 5m, 1h30m: too long"),
    ],
)
def test_parse_duration_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value).endswith(message)


@pytest.mark.parametrize(
    "text",
    ["90", "1.5", "1h 30m", "1d2h3m4s", "5 m", "1m1h", "", "-5", "1e3", "1_000", ".5", " 7 "],
)
def test_cli_and_config_read_durations_alike(text: str) -> None:
    """sessionc keeps its own parser (config.py is too heavy to import): the two must agree."""
    try:
        expected: float | None = units.parse_duration(text)
    except ValueError:
        expected = None
    try:
        got: float | None = parse_duration(text)
    except ValueError:
        got = None
    assert got == expected


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (45, "45s"),
        (45.9, "45s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (3605, "1h"),
        (5400, "1h30m"),
        (93600, "1d2h"),
        (-3, "0s"),
        (None, "-"),
    ],
)
def test_fmt_duration(seconds: float | None, shown: str) -> None:
    assert fmt_duration(seconds) == shown


def test_start_timeout_never_cuts_a_wait() -> None:
    assert start_timeout(True, 30.0) is None
    assert start_timeout(90.0, 30.0) == 120.0
    assert start_timeout(None, 30.0) == 30.0
    assert start_timeout(90.0, None) is None


# ---------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (-32001, 4),
        (-32003, 4),
        (-32002, 5),
        (-32006, 5),
        (-32004, 6),
        (-32009, 6),
        (-32008, 7),
        (-32011, 4),
        (-32012, 8),
        (-32005, 1),
        (-32007, 1),
        (-32010, 1),
        (-32602, 1),
        (-32601, 1),
    ],
)
def test_exit_code_mapping(code: int, status: int) -> None:
    assert exit_code_for(code) == status
    assert RemoteError(code, "x").exit_code == status


def test_exit_code_table_is_the_spec() -> None:
    assert sorted(set(EXIT_CODES.values())) == [4, 5, 6, 7, 8]
    assert Unreachable("/x", "gone").exit_code == 3
    assert Disconnected("/x").exit_code == 3


@pytest.mark.parametrize(
    ("health", "status"),
    [
        ({"status": "healthy", "healthy": True}, 0),
        ({"status": "idle", "healthy": True}, 0),
        ({"status": "not_found", "healthy": False}, 5),
        ({"status": "error", "healthy": False}, 1),
        ({"status": "expired", "healthy": False}, 1),
    ],
)
def test_health_exit(health: dict[str, Any], status: int) -> None:
    assert cli.health_exit(health) == status


# ---------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0, "exited with 0"),
        (3, "exited with 3"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
        (None, "-"),
    ],
)
def test_fmt_exit(code: int | None, words: str) -> None:
    assert fmt_exit(code) == words


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (None, "-"),
        (0, "0B"),
        (512, "512B"),
        (2048, "2.0K"),
        (12_900_000, "12.3M"),
        (300 * 1024**2, "300M"),
        (3 * 1024**3, "3.0G"),
        (5 * 1024**5, "5120T"),
    ],
)
def test_fmt_bytes(size: int | None, shown: str) -> None:
    assert fmt_bytes(size) == shown


def test_fmt_relative() -> None:
    assert fmt_relative(stamp(24 * 60), NOW) == "in 24m"
    assert fmt_relative(stamp(-190), NOW) == "3m10s ago"
    assert fmt_relative(stamp(0), NOW) == "now"
    assert fmt_relative(stamp(45 * 60 - 0.2), NOW) == "in 45m"
    assert fmt_relative(None, NOW) == "-"
    assert fmt_relative("garbage", NOW) == "-"


def agent(name: str, **fields: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "session": "nightly",
        "state": "running",
        "pid": 4301,
        "started_at": stamp(-3720),
        "uptime": 3720.0,
        "restarts": 0,
        "exit_code": None,
        "cpu_percent": 3.25,
        "rss": 12_900_000,
        "labels": ["scan"],
        "command": ["scan"],
    }
    return {**base, **fields}


SESSION = {
    "name": "nightly",
    "id": "1f0c2a1b-5b7e-4a5e-9f00-3b1c7b0a2d11",
    "state": "active",
    "owner": {"uid": 1000, "user": "alice", "pid": 4242, "tty": "pts/3"},
    "template": "backtest",
    "parent": None,
    "created_at": stamp(-3725),
    "started_at": stamp(-3724),
    "last_activity": stamp(-60),
    "expires_at": stamp(24 * 60),
    "idle_at": stamp(4 * 60),
    "closed_at": None,
    "close_reason": None,
    "participants": [
        {"uid": 1001, "user": "bob", "pid": 77, "tty": "pts/4", "joined_at": stamp(-600)}
    ],
    "agents": [
        agent("scanner"),
        agent(
            "backtester-long-name",
            state="backoff",
            pid=None,
            uptime=None,
            rss=None,
            cpu_percent=None,
            restarts=2,
            exit_code=-9,
            labels=["backtest", "scan"],
        ),
    ],
    "errors": {"count": 1, "threshold": 5, "window": 900.0},
    "metrics": {"tokens": 1500, "cost": 0.025},
    "settings": {},
    "pause_reason": None,
}


def test_status_with_a_session_and_two_agents() -> None:
    lines = status_lines({"daemon": {}, "session": SESSION, "orphans": [{"pid": 1}] * 2}, NOW)
    text = "\n".join(lines)
    assert "session:      nightly" in text
    assert "state:        active" in text
    assert "alice on pts/3, since" in text and "(1h2m ago)" in text
    assert "participants: bob on pts/4" in text
    assert "expires:      in 24m (idle in 4m)" in text
    assert "errors:       1 of 5 in 15m" in text
    assert "metrics:      tokens=1500 cost=0.025" in text
    assert "labels: scan=2 backtest=1" in text
    assert "2 orphaned agent processes — run 'sessionc cleanup'" in text
    header = next(line for line in lines if line.startswith("AGENT"))
    rows = [line for line in lines if line.startswith(("scanner", "backtester"))]
    assert header.split() == [
        "AGENT",
        "PID",
        "STATE",
        "UPTIME",
        "MEM",
        "CPU%",
        "RESTARTS",
        "LAST-EXIT",
    ]
    assert rows[0].split() == ["scanner", "4301", "running", "1h2m", "12.3M", "3.2", "0", "-"]
    assert rows[1].split()[1:] == ["-", "backoff", "-", "-", "-", "2", "killed", "by", "SIGKILL"]
    for column in ("PID", "STATE", "MEM", "LAST-EXIT"):  # aligned like ps
        start = header.index(column)
        assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows[:1])
    assert rows[1].index("killed") == header.index("LAST-EXIT")


def test_status_without_a_session() -> None:
    result = {
        "daemon": {"version": "0.1.0", "pid": 123, "uptime": 75.0, "mode": "user"},
        "session": None,
        "orphans": [{"pid": 9}],
    }
    assert status_lines(result, NOW) == [
        "no active session",
        "daemon: sessiond pid 123, up 1m15s, user mode",
        "",
        "1 orphaned agent process — run 'sessionc cleanup'",
    ]


def test_closed_session_shows_when_and_why() -> None:
    closed = {
        **SESSION,
        "state": "expired",
        "expires_at": None,
        "idle_at": None,
        "agents": [],
        "closed_at": stamp(-120),
        "close_reason": "inactivity timeout",
    }
    text = "\n".join(show.session_lines(closed, NOW))
    assert "(2m ago): inactivity timeout" in text
    assert "AGENT" not in text


def test_a_session_shows_its_host_and_fence_when_the_daemon_sends_them() -> None:
    lines = show.session_lines({**SESSION, "host": "build1", "fence": 7}, NOW)
    at = next(n for n, line in enumerate(lines) if line.startswith("participants:"))
    assert lines[at + 1] == "host:         build1, fence 7"
    assert not any(line.startswith("host:") for line in show.session_lines(SESSION, NOW))


def test_history_health_events_and_tree() -> None:
    history = show.history_lines(
        [
            SESSION,
            {
                **SESSION,
                "name": "n2",
                "closed_at": stamp(-5),
                "state": "closed",
                "close_reason": "stopped",
            },
        ],
        NOW,
    )
    assert history[0].split() == ["NAME", "ID", "STATE", "OWNER", "STARTED", "CLOSED", "REASON"]
    assert history[1].split()[:4] == ["nightly", "1f0c2a1b", "active", "alice"]
    assert history[2].split()[-1] == "stopped"
    assert show.history_lines([]) == ["no sessions yet"]
    health = {
        "status": "error",
        "healthy": False,
        "message": "One error.",
        "recovery": ["sessionc logs scanner", "sessionc reconnect"],
    }
    assert show.health_lines(health) == [
        "error: One error.",
        "to recover:",
        "  - sessionc logs scanner",
        "  - sessionc reconnect",
    ]
    line = show.event_line({"time": stamp(0), "kind": "session.started", "message": "hi"})
    assert line.endswith("  session.started       hi") and line[2] == ":" and line[5] == ":"
    assert show.tree_lines({"sessions": {"active": 1}, "agents": [], "up": 2.5}) == [
        "sessions:",
        "  active: 1",
        "agents: none",
        "up: 2.5",
    ]


EVENTS = [
    {"time": stamp(0), "kind": "session.started", "message": "session n started by alice"},
    {"time": stamp(1), "kind": "session.disconnected", "message": "session n disconnected"},
    {"time": stamp(2), "kind": "agent.backoff", "message": "agent w exited with 3"},
    {"time": None, "kind": "network.unwatched", "message": "no rtnetlink"},
    {"time": stamp(3), "kind": "evil\x1b[2J", "message": "m"},
]


def test_events_are_in_columns() -> None:
    """The messages start in one column, whatever the length of the kind (escaped) or time."""
    for lines in (show.event_lines(EVENTS), [show.event_line(e) for e in EVENTS]):
        starts = {line.index(e["message"]) for line, e in zip(lines, EVENTS, strict=True)}
        kinds = {line.index(show.escape(e["kind"])) for line, e in zip(lines, EVENTS, strict=True)}
        assert len(starts) == 1 and kinds == {10}, lines
    widest = max(len(show.escape(e["kind"])) for e in EVENTS)
    assert show.event_lines(EVENTS)[0].index("session n") == 10 + widest + 2
    assert show.event_lines([]) == []


def test_every_event_kind_fits_the_followed_column() -> None:
    """`events -f` pads kinds to EVENT_KIND_WIDTH: no kind the daemon writes is longer."""
    sources = "".join(path.read_text() for path in (REPO / "sessiond").rglob("*.py"))
    kinds = set(re.findall(r"[\"'](session|agent|network|daemon)(\.[a-z_]+)[\"']", sources))
    assert ("session", ".disconnected") in kinds
    assert max(len(area + rest) for area, rest in kinds) == show.EVENT_KIND_WIDTH


# ---------------------------------------------------------------- escaping (SPEC §7)


def unprintable(text: str) -> set[str]:
    """The C0 and C1 controls, DEL and lone surrogates in `text`."""
    return {c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) < 0xE000}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("pts/1\x1b[2J\x1b]0;x\x07", r"pts/1\x1b[2J\x1b]0;x\a"),
        ("a\tb\nc\rd", r"a\tb\nc\rd"),
        ("\x00\x08\x0b\x0c\x1f", r"\x00\b\v\f\x1f"),
        ("del\x7f", r"del\x7f"),
        ("csi\x9b2J nel\x85", r"csi\x9b2J nel\x85"),
        ("lone \ud800 and \udfff", r"lone \ud800 and \udfff"),
        ("", ""),
        ("plain text", "plain text"),
        ("é 日本 🎉 \u00a0 soft\u00adhyphen", "é 日本 🎉 \u00a0 soft\u00adhyphen"),  # no Cc: kept
        (r"C:\temp {\"a\": \"b\\n\"} \x1b", r"C:\temp {\"a\": \"b\\n\"} \x1b"),  # backslashes kept
    ],
)
def test_escape(text: str, shown: str) -> None:
    assert show.escape(text) == shown


def test_escape_changes_the_controls_only_and_is_idempotent() -> None:
    short = {"\a": "a", "\b": "b", "\t": "t", "\n": "n", "\v": "v", "\f": "f", "\r": "r"}

    def expected(char: str) -> str:
        if not unprintable(char):
            return char
        return "\\" + short.get(
            char, f"x{ord(char):02x}" if ord(char) < 0x100 else f"u{ord(char):04x}"
        )

    every = "".join(map(chr, range(0x180))) + "\ud800\udbff\udc00\udfff \u2028\u202e\U0001f389"
    once = show.escape(every)
    assert once == "".join(map(expected, every))
    assert not unprintable(once)
    assert show.escape(once) == once  # so table() may escape what say() escapes again


def test_a_table_aligns_cells_as_printed() -> None:
    rows = [["evil\x1b[2J", "1"], ["long-agent-name", "2"]]
    header, first, second = show.table(["AGENT", "PID"], rows)
    assert first.startswith(r"evil\x1b[2J")
    assert header.index("PID") == first.rindex("1") == second.rindex("2")


# ---------------------------------------------------------------- the wire


Script = Callable[[dict[str, Any]], list[bytes] | None]


class FakeDaemon:
    """Answers each request with the chunks `script` returns.

    A chunk b"" shuts the sending side (the client sees EOF); None closes the connection.
    """

    def __init__(self, path: Path, script: Script) -> None:
        self.path, self.script = path, script
        self.requests: list[dict[str, Any]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        for line in conn.makefile("rb"):
            request = json.loads(line)
            self.requests.append(request)
            chunks = self.script(request)
            if chunks is None:
                return
            for chunk in chunks:
                if chunk:
                    conn.sendall(chunk)
                else:
                    conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()


def reply(request: dict[str, Any], result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode() + b"\n"


def note(method: str, params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode() + b"\n"


@pytest.fixture
def fake(short_tmp: Path) -> Iterator[Callable[[Script], FakeDaemon]]:
    made: list[FakeDaemon] = []

    def make(script: Script) -> FakeDaemon:
        made.append(FakeDaemon(short_tmp / f"f{len(made)}.sock", script))
        return made[-1]

    yield make
    for daemon in made:
        daemon.close()


def test_call_skips_notifications_and_other_ids_and_joins_partial_lines(fake: Any) -> None:
    def script(req: dict[str, Any]) -> list[bytes]:
        whole = note("event", {"seq": 1}) + b'{"jsonrpc":"2.0","id":999,"result":0}\n\n'
        return [whole, *(bytes([b]) for b in reply(req, {"ok": True, "text": "é"}))]

    daemon = fake(script)
    with Client(daemon.path, timeout=5) as client:
        assert client.call("daemon.ping") == {"ok": True, "text": "é"}
        assert client.call("daemon.ping", {"a": 1}) == {"ok": True, "text": "é"}
        pending = client.notifications()
        assert next(pending) == ("event", {"seq": 1})  # kept for a follower
    first, second = daemon.requests
    assert first == {"jsonrpc": "2.0", "id": 1, "method": "daemon.ping", "params": {}}
    assert (second["id"], second["params"]) == (2, {"a": 1})


def test_remote_error_carries_code_name_hint(fake: Any) -> None:
    data = {"name": "SESSION_ACTIVE", "message": "session 'n' is already active", "hint": "join"}
    error = {"code": -32001, "message": "m", "data": data}
    daemon = fake(
        lambda req: [
            json.dumps({"jsonrpc": "2.0", "id": req["id"], "error": error}).encode() + b"\n"
        ]
    )
    with Client(daemon.path) as client, pytest.raises(RemoteError) as caught:
        client.call("session.start")
    assert (caught.value.code, caught.value.name, caught.value.hint) == (
        -32001,
        "SESSION_ACTIVE",
        "join",
    )
    assert caught.value.message == "session 'n' is already active"
    assert caught.value.exit_code == 4 and caught.value.data == data


def test_eof_is_a_clear_error(fake: Any) -> None:
    daemon = fake(lambda req: None)
    with Client(daemon.path) as client, pytest.raises(Disconnected, match="the daemon closed it"):
        client.call("session.status")
    half = fake(lambda req: [b'{"jsonrpc": "2.0", "id": 1, "res', b""])
    with Client(half.path) as client, pytest.raises(Disconnected, match="middle of a reply"):
        client.call("session.status")


def test_a_last_line_without_newline_is_taken(fake: Any) -> None:
    daemon = fake(lambda req: [reply(req, 7).rstrip(b"\n"), b""])
    with Client(daemon.path) as client:
        assert client.call("x") == 7


def test_no_reply_times_out(fake: Any) -> None:
    daemon = fake(lambda req: [])
    with Client(daemon.path, timeout=0.2) as client, pytest.raises(NoReply, match=r"0\.2s"):
        client.call("session.status")


def test_unreachable_exit_3_names_path_and_how_to_start(
    short_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = short_tmp / "nothing.sock"
    assert main(["--socket", str(missing), "status"]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"sessionc: unable to reach sessiond at {missing}: ")
    assert "\nhint: " in err and "systemctl start sessiond" in err
    stale = short_tmp / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))  # bound, never listening: ECONNREFUSED
        assert main(["--socket", str(stale), "--json", "health"]) == 3
    out, err = capsys.readouterr()
    assert "connection refused" in err and json.loads(out)["error"]["exit_status"] == 3


@pytest.fixture
def xdg(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$XDG_RUNTIME_DIR, private, so that the user socket is XDG/sessiond/sessiond.sock."""
    runtime = short_tmp / "xdg"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("SESSIOND_SOCKET", raising=False)
    return runtime


def test_daemon_mode_from_the_socket(xdg: Path, short_tmp: Path) -> None:
    from sessiond import paths  # noqa: PLC0415
    from sessiond.cli import client  # noqa: PLC0415

    user = str(xdg / "sessiond" / "sessiond.sock")
    assert paths.user_socket() == user
    assert client.daemon_mode(user) == "user"
    assert client.daemon_mode(paths.SYSTEM_SOCKET) == "system"
    assert client.daemon_mode(str(short_tmp / "elsewhere.sock")) is None  # missing: cannot tell
    theirs = short_tmp / "theirs.sock"  # a socket root does not own: a user daemon's
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(theirs))
        if os.geteuid() == 0:
            os.chown(theirs, 65534, -1)
        assert client.daemon_mode(str(theirs)) == "user"


@pytest.mark.parametrize(
    ("make", "system", "user"),
    [(Disconnected, "see 'systemctl status sessiond' and 'journalctl -u "
      "sessiond'", "see 'systemctl --user status sessiond' and 'journalctl --user -u sessiond', "
      "or the daemon's stderr if you started it yourself ('sessiond --user', './dev run')"),
     (lambda path: NoReply(path, 1), "if the daemon is stuck, see 'systemctl status sessiond' and "
      "'journalctl -u sessiond'; else raise --rpc-timeout", "if the daemon is stuck, see "
      "'systemctl --user status sessiond' and 'journalctl --user -u sessiond', or the daemon's "
      "stderr")],
)  # fmt: skip
def test_hints_name_the_commands_of_the_daemon_mode(
    xdg: Path, make: Callable[[str], Unreachable], system: str, user: str
) -> None:
    from sessiond import paths  # noqa: PLC0415

    assert make(paths.SYSTEM_SOCKET).hint.startswith(system)
    hint = make(paths.user_socket()).hint
    assert hint.startswith(user)
    assert "'systemctl status" not in hint and "'journalctl -u" not in hint
    other = make("/somewhere/else.sock").hint  # a socket that does not say: both
    assert "journalctl -u sessiond" in other and "--user" in other and "stderr" in other


def test_no_daemon_on_the_user_socket_says_how_to_start_one_of_your_own(
    xdg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiond import paths  # noqa: PLC0415

    if os.path.exists(paths.SYSTEM_SOCKET):
        pytest.skip("a system daemon runs here: sessionc would try its socket first")
    assert main(["status"]) == 3
    err = capsys.readouterr().err
    assert f"sessiond at {xdg}/sessiond/sessiond.sock: no socket there" in err
    assert "hint: start yours with 'systemctl --user start sessiond' or 'sessiond --user'" in err
    assert "'systemctl start sessiond'" in err and "XDG_RUNTIME_DIR" not in err
    monkeypatch.delenv("XDG_RUNTIME_DIR")  # and no /run/user/UID: the fallback in $TMPDIR
    monkeypatch.setattr(paths, "_usable_runtime_dir", lambda *args, **kw: False)
    monkeypatch.setattr(tempfile, "tempdir", str(xdg.parent))  # not /tmp: others' daemons run
    assert main(["status"]) == 3
    err = capsys.readouterr().err
    assert f"sessiond at {paths.fallback_runtime_dir(os.getuid())}/sessiond.sock" in err
    assert "XDG_RUNTIME_DIR is unset or unusable here, hence this fallback" in err


# ---------------------------------------------------------------- commands on the fake


def run_cli(daemon: FakeDaemon, *argv: str) -> int:
    return main(["--socket", str(daemon.path), *argv])


def test_status_json_is_one_document(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = {"daemon": {"pid": 1}, "session": SESSION, "orphans": []}
    daemon = fake(lambda req: [reply(req, result)])
    assert run_cli(daemon, "status", "--json") == 0
    assert json.loads(capsys.readouterr().out) == result


def test_health_exit_status_and_output(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    health = {
        "status": "not_found",
        "healthy": False,
        "message": "No session x.",
        "recovery": ["sessionc start x"],
    }
    daemon = fake(lambda req: [reply(req, health)])
    assert run_cli(daemon, "health", "x") == 5
    assert capsys.readouterr().out.splitlines()[0] == "not_found: No session x."
    assert daemon.requests[0]["params"] == {"name": "x"}


def test_start_params(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "controlling_tty", lambda: "pts/9")
    daemon = fake(lambda req: [reply(req, SESSION)])
    argv = [
        "start",
        "--wait",
        "n",
        "--timeout",
        "45m",
        "--set",
        "error-window=10m",
        "--from",
        "old",
        "--error-threshold",
        "3",
        "--stop-at",
        "16:00",
    ]
    assert run_cli(daemon, *argv) == 0
    assert daemon.requests[0]["params"] == {
        "name": "n",
        "wait": True,
        "timeout": 2700.0,
        "error_window": "10m",
        "from": "old",
        "error_threshold": 3,
        "stop_at": "16:00",
        "tty": "pts/9",
    }
    monkeypatch.setattr(cli, "controlling_tty", lambda: None)
    assert run_cli(daemon, "join") == 0
    assert daemon.requests[1]["params"] == {}


def error(request: dict[str, Any], code: int, name: str, message: str) -> bytes:
    data = {"name": name, "message": message, "hint": "h"}
    answer = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": code, "message": message,
              "data": data}}  # fmt: skip
    return json.dumps(answer).encode() + b"\n"


CLOSED = {**SESSION, "name": "old", "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
          "state": "closed", "agents": []}  # fmt: skip


def sessions_daemon(fake: Any, live: dict[str, Any] | None, past: list[dict[str, Any]]) -> Any:
    """A fake daemon that knows the sessions `live` and `past` (newest first), by name or id."""
    known = ([live] if live else []) + past

    def script(req: dict[str, Any]) -> list[bytes]:
        method, params = req["method"], req["params"]
        if method == "session.status":
            return [reply(req, {"daemon": {}, "session": live, "orphans": []})]
        if method == "session.history":
            return [reply(req, known[: params.get("limit", 20)])]
        found = [s for s in known if params["name"] in (s["name"], s["id"])]
        if not found:
            return [error(req, -32002, "NO_SESSION", f"no session named '{params['name']}'")]
        return [reply(req, found[0] if method == "session.get" else {"session": found[0]})]

    return fake(script)


def asked(daemon: Any) -> list[tuple[str, Any]]:
    return [(r["method"], r["params"]) for r in daemon.requests]


def test_show_without_name_is_the_live_session(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = sessions_daemon(fake, SESSION, [CLOSED])
    assert run_cli(daemon, "show") == 0
    assert capsys.readouterr().out.startswith("session:      nightly\n")
    assert asked(daemon) == [("session.status", {}), ("session.get", {"name": SESSION["id"]})]


def test_show_and_export_without_name_are_the_latest_session(
    fake: Any, capsys: pytest.CaptureFixture[str], short_tmp: Path
) -> None:
    daemon = sessions_daemon(fake, None, [CLOSED, {**CLOSED, "name": "older", "id": "1" * 36}])
    assert run_cli(daemon, "show") == 0
    assert capsys.readouterr().out.startswith("session:      old\n")
    assert asked(daemon)[1:] == [("session.history", {"limit": 1}),
                                 ("session.get", {"name": CLOSED["id"]})]  # fmt: skip
    out = short_tmp / "out.json"
    assert run_cli(daemon, "export", "-o", str(out)) == 0
    assert capsys.readouterr().out == f"exported session old to {out}\n"
    assert json.loads(out.read_text())["session"]["id"] == CLOSED["id"]
    assert asked(daemon)[-1] == ("session.export", {"name": CLOSED["id"]})


def test_show_without_name_and_without_sessions_exits_5(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = sessions_daemon(fake, None, [])
    assert run_cli(daemon, "export") == 5
    assert capsys.readouterr().err.startswith("sessionc: no session to export: none is live")


@pytest.mark.parametrize("prefix", ["7c9e6679", "7c9e6679-7425", "7c9e6679-7425-40de-944b-e07fc1f"])
def test_show_and_export_take_the_id_prefix_that_history_prints(
    fake: Any, capsys: pytest.CaptureFixture[str], prefix: str
) -> None:
    daemon = sessions_daemon(fake, SESSION, [CLOSED])
    assert show.history_lines([CLOSED])[1].split()[1] == "7c9e6679"
    assert run_cli(daemon, "show", prefix) == 0
    assert capsys.readouterr().out.startswith("session:      old\n")
    assert asked(daemon) == [("session.get", {"name": prefix}),
                             ("session.history", {"limit": cli.PREFIX_SEARCH}),
                             ("session.get", {"name": CLOSED["id"]})]  # fmt: skip
    assert run_cli(daemon, "--json", "export", prefix) == 0
    assert json.loads(capsys.readouterr().out)["session"]["name"] == "old"


def test_a_name_is_not_taken_for_a_prefix(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    daemon = sessions_daemon(fake, None, [CLOSED, {**CLOSED, "name": "7c9e6679", "id": "2" * 36}])
    assert run_cli(daemon, "show", "7c9e6679") == 0  # the session of that name comes first
    assert capsys.readouterr().out.startswith("session:      7c9e6679\n")
    assert run_cli(daemon, "show", "nosuch") == 5  # not an id prefix: the daemon's own answer
    assert capsys.readouterr().err == "sessionc: no session named 'nosuch'\nhint: h\n"
    assert run_cli(daemon, "show", "7c9e667") == 5  # 7 digits: shorter than history shows
    assert asked(daemon)[-1] == ("session.get", {"name": "7c9e667"})
    assert run_cli(daemon, "show", "abcdef12") == 5
    assert "nor one whose id starts with it" in capsys.readouterr().err


def test_an_ambiguous_prefix_names_the_candidates(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    twin = {**CLOSED, "name": "twin", "id": CLOSED["id"][:9] + "0" * 27}
    daemon = sessions_daemon(fake, None, [CLOSED, twin])
    assert run_cli(daemon, "show", "7c9e6679") == 2
    err = capsys.readouterr().err
    assert f"{CLOSED['id']} (old), {twin['id']} (twin)" in err and "give more of the id" in err


def test_run_sends_command_and_cwd_not_env(fake: Any) -> None:
    daemon = fake(lambda req: [reply(req, {"name": "w", "state": "running", "pid": 5})])
    assert run_cli(daemon, "run", "--label", "x", "--", "sleep", "9") == 0
    params = daemon.requests[0]["params"]
    assert params == {"command": ["sleep", "9"], "cwd": os.getcwd(), "labels": ["x"]}


def test_remote_error_printed_with_hint(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    error = {
        "code": -32008,
        "message": "waited 5s",
        "data": {"name": "WAIT_TIMEOUT", "message": "waited 5s for the lock", "hint": "try later"},
    }
    daemon = fake(
        lambda req: [
            json.dumps({"jsonrpc": "2.0", "id": req["id"], "error": error}).encode() + b"\n"
        ]
    )
    assert run_cli(daemon, "start", "--wait=5") == 7
    assert capsys.readouterr().err == "sessionc: waited 5s for the lock\nhint: try later\n"


def test_events_follow_prints_tail_then_news_and_exits_3_when_closed(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [
        {"seq": n, "time": stamp(n), "kind": "session.idle", "message": f"m{n}"} for n in (1, 2, 3)
    ]

    def script(req: dict[str, Any]) -> list[bytes] | None:
        if req["method"] == "subscribe":
            return [note("event", events[1]), reply(req, {"topics": ["events"]})]
        if req["method"] == "events.tail":
            return [reply(req, events[:2]), note("event", events[2]), b""]
        return None

    daemon = fake(script)
    assert run_cli(daemon, "events", "-f", "--json") == 3
    out, err = capsys.readouterr()
    *shown, last = (json.loads(line) for line in out.splitlines())
    assert [event["seq"] for event in shown] == [1, 2, 3]  # 2 not twice
    assert last["error"]["exit_status"] == 3
    assert "lost the connection to sessiond" in err
    assert daemon.requests[1]["params"] == {}


def log_entry(agent: str, line: str, stream: str = "out") -> dict[str, Any]:
    """A line of an agent's log as logs.tail and `log` notifications carry it."""
    return {"time": "2026-12-02T10:00:00.000Z", "agent": agent, "stream": stream, "line": line}


def test_follow_ends_quietly_on_ctrl_c(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: Client, idle: float | None = None) -> Iterator[tuple[str, Any]]:
        raise KeyboardInterrupt
        yield  # a generator

    monkeypatch.setattr(Client, "notifications", interrupted)
    tail = {"lines": ["a"], "entries": [log_entry("scanner", "a")]}
    daemon = fake(lambda req: [reply(req, tail if req["method"] == "logs.tail" else {})])
    assert run_cli(daemon, "logs", "scanner", "-f") == 0
    assert [r["method"] for r in daemon.requests] == ["session.status", "subscribe", "logs.tail"]
    assert daemon.requests[1]["params"] == {"topics": ["events", "logs:scanner"]}


def test_report_needs_the_agent_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SESSIOND_AGENT_TOKEN", raising=False)
    assert main(["--socket", "/nonexistent.sock", "report", "--metric", "n=1"]) == 1
    err = capsys.readouterr().err
    assert "SESSIOND_AGENT_TOKEN is not set" in err and "inside an agent" in err


def test_report_and_checkpoint(fake: Any, monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> None:
    monkeypatch.setenv("SESSIOND_AGENT_TOKEN", "secret")
    (short_tmp / "cp.json").write_text('{"offset": 12}')
    daemon = fake(lambda req: [reply(req, {"seq": 4} if "data" in req["params"] else {})])
    assert run_cli(daemon, "report") == 0
    assert run_cli(daemon, "report", "--checkpoint", str(short_tmp / "cp.json")) == 0
    assert run_cli(daemon, "report", "--metric", "tokens=5", "--error", "bad") == 0
    assert [(r["method"], r["params"]) for r in daemon.requests] == [
        ("agent.report", {"token": "secret", "activity": True}),
        ("agent.checkpoint", {"token": "secret", "data": {"offset": 12}}),
        ("agent.report", {"token": "secret", "error": "bad", "metrics": {"tokens": 5}}),
    ]
    (short_tmp / "bad.json").write_text("{nope")
    assert run_cli(daemon, "report", "--checkpoint", str(short_tmp / "bad.json")) == 1


HOSTILE = "pts/1\x1b[2J\x1b]0;x\x07"


def test_text_output_from_the_daemon_is_escaped(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = {"uid": 1000, "user": "alice", "tty": HOSTILE}
    session = {**SESSION, "owner": owner, "pause_reason": "a\rb"}
    results = {
        "session.status": {"daemon": {}, "session": session, "orphans": []},
        "events.tail": [{"time": stamp(0), "kind": "session.paused", "message": "x\x9by"}],
        "logs.tail": {"lines": ["\x1b[31mred\x07"], "entries": [log_entry("a", "\x1b[31mred\x07")]},
        "session.health": {"status": "paused", "message": "m\x1b", "recovery": ["r\n"]},
        "metrics.get": {"prometheus": "a 1\n# \x1b[2J\n"},
        "session.pause": {**session, "name": "n\x1b"},
    }
    daemon = fake(lambda req: [reply(req, results[req["method"]])])
    for argv in (["status"], ["events"], ["logs", "a"], ["health"], ["metrics", "--prometheus"],
                 ["pause"]):  # fmt: skip
        run_cli(daemon, *argv)
    out = capsys.readouterr().out
    assert not unprintable(out.replace("\n", ""))
    for escaped in (r"on pts/1\x1b[2J\x1b]0;x\a, since", r"pause reason: a\rb", r"x\x9by",
                    r"\x1b[31mred\a", r"paused: m\x1b", r"  - r\n", r"# \x1b[2J",
                    r"paused session n\x1b"):  # fmt: skip
        assert escaped in out, escaped
    assert out.count("\n") == len(out.splitlines())  # no line but those sessionc ends


def test_json_output_keeps_the_daemon_text_exact(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    every = "".join(map(chr, range(0xA0))) + "\ud800 é"
    result = {"daemon": {}, "session": {**SESSION, "pause_reason": every}, "orphans": []}
    daemon = fake(lambda req: [reply(req, result)])
    assert run_cli(daemon, "status", "--json") == 0
    out = capsys.readouterr().out
    assert all(" " <= c <= "~" or c == "\n" for c in out)
    assert json.loads(out)["session"]["pause_reason"] == every


def test_errors_from_the_daemon_are_escaped(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    data = {
        "name": "SESSION_ACTIVE",
        "message": f"active (owner bob, {HOSTILE})",
        "hint": "h\n\x1b",
    }
    error = {"code": -32001, "message": "active", "data": data}
    answer = json.dumps({"jsonrpc": "2.0", "id": 1, "error": error}).encode() + b"\n"
    daemon = fake(lambda req: [answer])
    run_cli(daemon, "start", "x")
    err = capsys.readouterr().err
    assert err == "sessionc: active (owner bob, pts/1\\x1b[2J\\x1b]0;x\\a)\nhint: h\\n\\x1b\n"
    run_cli(daemon, "--json", "start", "x")
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["hint"] == "h\n\x1b" and not unprintable(err.replace("\n", ""))


def test_followers_escape_each_line(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    def script(req: dict[str, Any]) -> list[bytes] | None:
        if req["method"] != "logs.tail":
            return [reply(req, {})]
        tail = reply(req, {"lines": ["tail\x1b[2J"], "entries": [log_entry("a", "tail\x1b[2J")]})
        return [tail, note("log", log_entry("a", "new\x07")), b""]

    assert run_cli(fake(script), "logs", "a", "-f") == 3
    out = capsys.readouterr().out
    assert out == "tail\\x1b[2J\nnew\\a\n"


def test_logs_f_prints_lines_in_time_order_whatever_order_they_come_in(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def at(agent: str, second: int, line: str) -> dict[str, Any]:
        return {**log_entry(agent, line), "time": f"2026-12-02T10:00:0{second}.000Z"}

    def script(req: dict[str, Any]) -> list[bytes] | None:
        if req["method"] == "session.status":
            return [reply(req, {"session": {"name": "s", "agents": []}})]
        if req["method"] != "logs.tail":
            return [reply(req, {})]
        closed = {"kind": "session.closed", "session": "s", "message": "session s closed: x"}
        return [reply(req, {"lines": [], "entries": []}), note("log", at("b", 2, "second")),
                note("log", at("a", 1, "first")), note("event", closed)]  # fmt: skip

    assert run_cli(fake(script), "logs", "--no-prefix", "-f") == 0
    assert capsys.readouterr().out == "first\nsecond\n-- session s closed: x\n"


def test_cli_prints_only_escaped_text_or_json() -> None:
    """Every print in cli.py goes through say(), is JSON, or is sessionc's own script."""
    tree = ast.parse(inspect.getsource(cli))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    printed = [ast.unparse(n.args[0]) for n in calls if ast.unparse(n.func) == "print"]
    assert printed and all(p.startswith(("escape(", "json.dumps(")) or p == "r" for p in printed)
    assert printed.count("r") == 1  # `completion`: a script made here, not the daemon's text
    writes = [ast.unparse(n.func) for n in calls if ast.unparse(n.func).endswith(".write")]
    assert writes == ["file.write"]  # export -o FILE: JSON


# ---------------------------------------------------------------- start-up cost

HEAVY = {"psutil", "pyroute2", "jsonrpcserver", "sqlite3", "_sqlite3", "asyncio", "platformdirs"}


def imported_by(argv: list[str]) -> set[str]:
    """The top-level packages that `sessionc ARGV` imports; ARGV must fail to connect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIOND_")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sessiond.cli", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "sessiond" in imported  # the output was parsed
    return imported


def test_sessionc_imports_nothing_heavy(short_tmp: Path) -> None:
    imported = imported_by(["--socket", str(short_tmp / "none.sock"), "status"])
    assert not imported & HEAVY, sorted(imported & HEAVY)


def test_sessionc_status_imports_only_what_it_needs(short_tmp: Path) -> None:
    socket_path = str(short_tmp / "none.sock")
    unneeded = {"argparse", "shutil", "datetime", "signal", "locale", "gettext"}
    imported = imported_by(["--socket", socket_path, "status", "--json"])
    assert not imported & unneeded, sorted(imported & unneeded)
    imported = imported_by(["--socket", socket_path, "history", "-n", "3"])  # argparse's turn
    assert "argparse" in imported
    assert not imported & {"shutil", "bz2", "lzma"}, sorted(imported)


def test_showing_a_time_leaves_the_pure_python_datetime_unloaded() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", "import sys; from sessiond.cli import show; "
         "print(show.fmt_clock('2026-12-03T11:54:29.123Z', seconds=True)); "
         "print(show.parse_time('2026-12-03T11:54:29.123Z').timestamp()); "
         "print('datetime' in sys.modules)"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    when = datetime.datetime(2026, 12, 3, 11, 54, 29, 123000, datetime.UTC)
    assert shown == [when.astimezone().strftime("%H:%M:%S"), str(when.timestamp()), "False"]


# ---------------------------------------------------------------- sessionc's exit


def sessionc_into(stdout: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`python -m sessiond.cli ARGV` with its stdout on `stdout`, buffered as by default."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-m", "sessiond.cli", *argv], cwd=REPO, env=env, stdout=stdout,
        stderr=subprocess.PIPE, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_output_to_a_reader_gone_ends_quietly_with_the_command_s_status(short_tmp: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader of `sessionc … | head` has left
    try:
        proc = sessionc_into(write, ["--socket", str(short_tmp / "none.sock"), "--json", "status"])
    finally:
        os.close(write)
    assert proc.returncode == EXIT_UNREACHABLE  # the command's own failure comes first
    said = proc.stderr.splitlines()  # what sessionc has to say of the socket, and no traceback
    assert [said[0].split(" at ")[0], said[-1].split(" ")[0]] == [
        "sessionc: unable to reach sessiond",
        "hint:",
    ]
    assert len(said) == 2, said


def test_output_to_a_full_disk_says_so_and_fails(daemon: Any) -> None:
    with open("/dev/full", "wb") as full:
        proc = sessionc_into(full.fileno(), ["--socket", str(daemon.socket), "status"])
    assert proc.returncode == EXIT_FAILURE  # `status` itself did not fail: its output did
    assert proc.stderr == "sessionc: cannot write the output: No space left on device\n"
