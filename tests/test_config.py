"""Unit tests of sessiond.config: durations, every validator, files, environment, overrides."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any

import platformdirs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessiond.config import default_config_path, load_config, reference, resolve_config
from sessiond.core.settings import (
    AGENT_KEYS,
    DAEMON_KEYS,
    ENV_KEYS,
    SESSION_KEYS,
    TEMPLATE_KEYS,
    AgentSpec,
    Config,
    DaemonSettings,
    OnShutdown,
    RestartPolicy,
    SessionSettings,
    Template,
    session_overrides,
    session_settings_to_wire,
)
from sessiond.core.units import DURATION_RULE, format_duration, parse_clock, parse_duration
from sessiond.errors import ConfigError, Problem

SPEC_EXAMPLE = """
[daemon]                      # every key, with its default
socket_group = "sessiond"     # group allowed on the socket (system mode)
admin_group  = "sessiond-admin"
on_shutdown  = "stop"         # or "keep"
max_clients = 256             # connections at once
max_request_bytes = 1048576
client_timeout = "30s"        # a half-sent request is cut after this
network_grace = "2s"
history_days = 30
log_max_bytes = 10485760      # per agent log file, then rotated
log_files = 3

[session]                     # every key, with its default
timeout = "30m"
idle_after = "5m"
error_threshold = 5
error_window = "15m"
max_agents = 64
max_duration = ""             # none
stop_at = ""                  # none

[agents.scanner]              # every key; only command is required
command = ["/usr/bin/python3", "-m", "scanner"]
cwd = "/srv/scanner"
env = { SCAN_DEPTH = "3" }
user = ""                     # default: the session owner
restart = "on-failure"        # always | never
backoff_initial = "1s"
backoff_max = "30s"
min_uptime = "10s"
max_restarts = 3
stop_timeout = "10s"
needs_network = true
labels = ["scan"]

[agents.backtester]
command = ["/usr/bin/python3", "-m", "backtester"]
labels = ["backtest"]

[templates.backtest]
agents = ["scanner", "backtester"]
timeout = "2h"                # any [session] key
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sessiond.toml"
    path.write_text(text)
    return path


def problems_of(path: Path | str | None, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return caught.value.problems


# --- durations and clock times ------------------------------------------------

GOOD_DURATIONS = [
    ("90s", 90.0),
    ("5m", 300.0),
    ("1h30m", 5400.0),
    ("2h", 7200.0),
    ("1d", 86400.0),
    ("1h30m15s", 5415.0),
    ("1d2h3m4s", 93784.0),
    ("1.5s", 1.5),
    ("0.5m", 30.0),
    ("45", 45.0),
    ("2.25", 2.25),
    ("0", 0.0),
    ("0s", 0.0),
    (" 5m ", 300.0),
    ("1h 30m", 5400.0),
    (45, 45.0),
    (1.5, 1.5),
    (0, 0.0),
]
BAD_DURATIONS = [
    "",
    "   ",
    "-5",
    "-5s",
    "5x",
    "m",
    "s",
    "1h30",
    "30m1h",
    "1s1s",
    "5 m",
    "1.5.5s",
    ".5s",
    "1e3",
    "inf",
    "nan",
    "+5",
    "1_000",
    "0x10",
    "\u0663s",  # ARABIC-INDIC DIGIT THREE
    "5ms",
    -5,
    -0.1,
    math.nan,
    math.inf,
    10**400,
    True,
    False,
    None,
    [],
    {"s": 5},
]


@pytest.mark.parametrize(("text", "seconds"), GOOD_DURATIONS)
def test_parse_duration_accepts(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_parse_duration_rejects_with_the_rule(text: Any) -> None:
    with pytest.raises(ValueError, match="a duration like 90s, 5m, 1h30m or plain seconds"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (125, "2m5s"),
        (5400, "1h30m"),
        (3600, "1h"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
        (1.5, "1.5s"),
        (3600.25, "1h0.25s"),
        (0.0004, "0s"),
        (59.9996, "1m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1, -0.5, math.nan, math.inf])
def test_format_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="not negative"):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=10**12))
def test_whole_seconds_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_fractional_seconds_round_trip_to_the_millisecond(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.0011)


@given(st.text())
def test_garbage_strings_raise_only_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert DURATION_RULE in str(exc)
    else:
        assert seconds >= 0 and math.isfinite(seconds)


GARBAGE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.binary(), st.lists(st.integers())
)


@given(GARBAGE)
def test_garbage_values_raise_only_value_error(value: Any) -> None:
    with contextlib.suppress(ValueError):
        assert parse_duration(value) >= 0


@given(st.text())
def test_garbage_clock_raises_only_value_error(text: str) -> None:
    try:
        hour, minute = parse_clock(text)
    except ValueError:
        return
    assert 0 <= hour <= 23 and 0 <= minute <= 59


@given(st.dictionaries(st.sampled_from(sorted(SESSION_KEYS)), st.text(max_size=12)))
def test_garbage_overrides_raise_only_config_error(overrides: dict[str, str]) -> None:
    try:
        session_overrides(SessionSettings(), overrides, "--set")
    except ConfigError as exc:
        assert all(problem.file == "--set" for problem in exc.problems)


@pytest.mark.parametrize(
    ("text", "clock"),
    [
        ("16:00", (16, 0)),
        ("00:00", (0, 0)),
        ("23:59", (23, 59)),
        ("7:05", (7, 5)),
        (" 09:30 ", (9, 30)),
    ],
)
def test_parse_clock(text: str, clock: tuple[int, int]) -> None:
    assert parse_clock(text) == clock


@pytest.mark.parametrize(
    "text", ["", "24:00", "12:60", "1200", "12:5", "noon", "12:00:00", "-1:00"]
)
def test_parse_clock_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_clock(text)


# --- every key's validator ----------------------------------------------------

# key: (good raw values with the typed value each gives, bad raw values)
VALIDATOR_CASES: dict[str, tuple[list[tuple[Any, Any]], list[Any]]] = {
    "socket_group": ([("sessiond", "sessiond"), ("wheel", "wheel")], ["", "a b", "a:b", 5, None]),
    "admin_group": ([("sessiond-admin", "sessiond-admin")], ["", "x/y", ["a"]]),
    "on_shutdown": (
        [("stop", OnShutdown.STOP), ("keep", OnShutdown.KEEP)],
        ["halt", "STOP", "", True, 1],
    ),
    "max_clients": ([(1, 1), (65536, 65536), ("256", 256)], [0, 65537, -1, "lots", 2.0, True]),
    "max_request_bytes": ([(1024, 1024), (64 << 20, 64 << 20)], [1023, (64 << 20) + 1, "1MiB"]),
    "client_timeout": ([("30s", 30.0), (5, 5.0)], ["0s", 0, "", "-1s", "3651d"]),
    "max_clients_per_user": ([(1, 1), (65536, 65536), ("32", 32)], [0, 65537, "many", 1.5]),
    "idle_client_timeout": ([("10m", 600.0), (90, 90.0)], ["0s", 0, "", "-1m", "3651d"]),
    "network_grace": ([("2s", 2.0), ("0s", 0.0), (0, 0.0)], ["", "-1", "soon"]),
    "history_days": ([(30, 30), ("1", 1)], [0, -3, "30d", 36501]),
    "log_max_bytes": ([(4096, 4096), (10485760, 10485760)], [4095, 0, "10M"]),
    "log_files": ([(1, 1), ("3", 3)], [0, -1, 1.5]),
    "timeout": ([("30m", 1800.0), ("45", 45.0), (2700, 2700.0)], ["0", "", None, "5x", True]),
    "idle_after": ([("5m", 300.0)], ["0s", "five minutes"]),
    "error_threshold": ([(1, 1), ("3", 3), (" 5 ", 5)], [0, -1, "3.0", 3.5, True, None, ""]),
    "error_window": ([("15m", 900.0)], ["0m", ""]),
    "max_agents": ([(1, 1), (10000, 10000)], [0, 10001, "many"]),
    "max_duration": ([("", None), (None, None), ("8h", 28800.0), (60, 60.0)], ["0s", "-1h", "8x"]),
    "stop_at": ([("", None), (None, None), ("16:00", "16:00"), ("7:05", "07:05")], ["25:00", 1600]),
    "command": (
        [(["/bin/true"], ("/bin/true",)), (["prog", "", "-x"], ("prog", "", "-x"))],
        ["python -m x", [], [""], ["a", 5], [None], ["a\0b"], {"a": "b"}],
    ),
    "cwd": ([("/srv/x", "/srv/x"), ("", None)], ["srv/x", "~/x", 5, "/a\0b"]),
    "env": (
        [({"A": "1", "B_2": ""}, (("A", "1"), ("B_2", ""))), ({}, ())],
        [{"A": 1}, {"A=B": "x"}, {"SESSIOND_AGENT": "x"}, ["A=1"], "A=1", {"A": "\0"}],
    ),
    "user": ([("", None), ("alice", "alice"), ("1000", "1000")], ["a b", "a:b", 1000]),
    "restart": (
        [("on-failure", RestartPolicy.ON_FAILURE), ("always", RestartPolicy.ALWAYS)],
        ["on_failure", "sometimes", None],
    ),
    "backoff_initial": ([("1s", 1.0), ("0.5s", 0.5)], ["0s", ""]),
    "backoff_max": ([("30s", 30.0)], ["0", "forever"]),
    "min_uptime": ([("10s", 10.0)], ["0s", "-10s"]),
    "max_restarts": ([(0, 0), (3, 3), ("10", 10)], [-1, 10001, "three"]),
    "stop_timeout": ([("10s", 10.0), ("1m", 60.0)], ["0", ""]),
    "needs_network": ([(True, True), (False, False)], ["true", 1, 0, None]),
    "labels": ([(["scan"], ("scan",)), ([], ())], ["scan", ["a b"], ["x", "x"], [5], ["-x"]]),
    "agents": ([(["scanner", "b.2"], ("scanner", "b.2")), ([], ())], ["scanner", ["a", "a"]]),
}
ALL_SETTINGS = {**DAEMON_KEYS, **SESSION_KEYS, **AGENT_KEYS, **TEMPLATE_KEYS}


def test_every_key_has_validator_cases() -> None:
    assert set(VALIDATOR_CASES) == set(ALL_SETTINGS)


@pytest.mark.parametrize(
    ("key", "raw", "typed"),
    [(key, raw, typed) for key, (good, _) in VALIDATOR_CASES.items() for raw, typed in good],
)
def test_validator_accepts(key: str, raw: Any, typed: Any) -> None:
    parsed = ALL_SETTINGS[key].parse(raw)
    assert parsed == typed
    assert type(parsed) is type(typed)


@pytest.mark.parametrize(
    ("key", "raw"), [(key, raw) for key, (_, bad) in VALIDATOR_CASES.items() for raw in bad]
)
def test_validator_rejects_with_a_rule(key: str, raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^must "):
        ALL_SETTINGS[key].parse(raw)


@pytest.mark.parametrize("key", sorted(SESSION_KEYS))
def test_session_validators_accept_their_own_output(key: str) -> None:
    """Templates hand already typed values to session_overrides."""
    setting = SESSION_KEYS[key]
    for raw, _ in VALIDATOR_CASES[key][0]:
        once = setting.parse(raw)
        assert setting.parse(once) == once


def test_a_string_command_says_never_a_shell_string() -> None:
    with pytest.raises(ValueError, match="never a shell string"):
        AGENT_KEYS["command"].parse("/usr/bin/python3 -m scanner")


# --- the tables match the dataclasses -------------------------------------------


def test_tables_cover_the_dataclasses_and_take_their_defaults() -> None:
    pairs = [
        (DAEMON_KEYS, DaemonSettings),
        (SESSION_KEYS, SessionSettings),
        (AGENT_KEYS, AgentSpec),
    ]
    for table, cls in pairs:
        names = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        assert list(table) == names
        for f in dataclasses.fields(cls):
            if f.name in table:
                assert table[f.name].default == f.default


def test_defaults_survive_their_own_validators() -> None:
    for table in (DAEMON_KEYS, SESSION_KEYS, AGENT_KEYS):
        for setting in table.values():
            if setting.default is not dataclasses.MISSING and setting.default != ():
                assert setting.parse(setting.default) == setting.default, setting.key


def test_session_keys_have_env_names_and_others_do_not() -> None:
    assert SESSION_KEYS["timeout"].env == "SESSIOND_TIMEOUT"
    assert SESSION_KEYS["error_threshold"].env == "SESSIOND_ERROR_THRESHOLD"
    assert set(ENV_KEYS) == {f"SESSIOND_{key.upper()}" for key in SESSION_KEYS}
    assert all(s.env is None for s in (*DAEMON_KEYS.values(), *AGENT_KEYS.values()))


def test_template_keys_are_agents_and_every_session_key() -> None:
    assert set(TEMPLATE_KEYS) == {"agents", *SESSION_KEYS}


def test_reference_documents_every_key() -> None:
    text = reference()
    for key in (*DAEMON_KEYS, *SESSION_KEYS, *AGENT_KEYS, "agents"):
        assert f"\n{key} = " in text
    assert 'timeout = "30m"' in text
    assert "SESSIOND_ERROR_THRESHOLD" in text
    assert "[agents.NAME]" in text and "[templates.NAME]" in text


# --- files ----------------------------------------------------------------------


def test_the_spec_example_parses(tmp_path: Path) -> None:
    path = write(tmp_path, SPEC_EXAMPLE)
    config = load_config(path, {})
    assert config.source == str(path)
    assert config.daemon == DaemonSettings()
    assert config.session == SessionSettings()
    assert config.agents["scanner"] == AgentSpec(
        name="scanner",
        command=("/usr/bin/python3", "-m", "scanner"),
        cwd="/srv/scanner",
        env=(("SCAN_DEPTH", "3"),),
        user=None,
        restart=RestartPolicy.ON_FAILURE,
        needs_network=True,
        labels=("scan",),
    )
    assert config.agents["backtester"] == AgentSpec(
        name="backtester",
        command=("/usr/bin/python3", "-m", "backtester"),
        labels=("backtest",),
    )
    assert list(config.agents) == ["scanner", "backtester"]
    template = config.templates["backtest"]
    assert template == Template("backtest", ("scanner", "backtester"), (("timeout", 7200.0),))
    assert template.apply(config.session) == SessionSettings(timeout=7200.0)


def test_no_path_means_the_embedded_defaults() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert config.source is None
    assert dict(config.agents) == {} and dict(config.templates) == {}


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), {})
    assert (config.daemon, config.session) == (DaemonSettings(), SessionSettings())


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE), {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.session.timeout = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.agents["x"] = config.agents["scanner"]  # type: ignore[index]
    assert isinstance(config.templates, MappingProxyType)


def test_a_file_with_several_problems_reports_all_of_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        bogus = 1
        [daemon]
        max_clients = 0
        on_shutdown = "halt"
        colour = "blue"
        [session]
        timeout = "5x"
        stop_at = "25:00"
        [agents.a]
        command = "python -m a"
        backoff_initial = "10s"
        backoff_max = "5s"
        [agents.b]
        cwd = "/tmp"
        [templates.t]
        agents = ["a", "ghost"]
        timeout = "0s"
        """,
    )
    file = str(path)
    found = {(p.key, p.value): p for p in problems_of(path)}
    assert all(p.file == file for p in found.values())
    expected = {
        ("bogus", None): (
            "unknown section; known sections: daemon, session, cluster, agents, templates"
        ),
        ("daemon.max_clients", 0): "must be an integer from 1 to 65536",
        ("daemon.on_shutdown", "halt"): 'must be one of "stop", "keep"',
        ("daemon.colour", "blue"): "unknown key; known keys: socket_group, admin_group",
        ("session.timeout", "5x"): DURATION_RULE,
        ("session.stop_at", "25:00"): "HH:MM",
        ("agents.a.command", "python -m a"): "never a shell string",
        ("agents.a.backoff_max", "5s"): "must not be less than backoff_initial (10s)",
        ("agents.b.command", None): "is required",
        ("templates.t.timeout", "0s"): "more than 0s",
        ("templates.t.agents", "ghost"): "names no [agents.ghost] table; defined agents: a, b",
    }
    assert set(found) == set(expected)
    for where, rule in expected.items():
        assert rule in found[where].rule, where


def test_the_error_message_lists_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, '[session]\ntimeout = "5x"\nmax_agents = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = caught.value.message
    assert message.startswith("invalid configuration (2 problems)")
    assert f"{path}: session.timeout = '5x': {DURATION_RULE}" in message
    assert f"{path}: session.max_agents = 0: must be an integer from 1 to 10000" in message
    assert "--check-config" in caught.value.hint


@pytest.mark.parametrize(
    ("text", "key", "rule"),
    [
        ("daemon = 5", "daemon", "must be a table"),
        ("agents = []", "agents", "must be a table"),
        ("[agents]\nscanner = 5", "agents.scanner", "must be a table"),
        ('[agents."bad name"]\ncommand = ["x"]', "agents.bad name", "the name must be 1 to 64"),
        ('[templates."-t"]\nagents = []', "templates.-t", "starting with a letter or digit"),
        ("[templates.t]\ncolor = 1", "templates.t.color", "known keys: agents, timeout"),
        ('[templates.t]\nagents = ["a", "a"]', "templates.t.agents", "each once"),
        ('[agents.a]\ncommand = ["x"]\nenv = { SESSIOND_X = "x" }', "agents.a.env", "SESSIOND_"),
        ('[agents.a]\ncommand = []', "agents.a.command", "non-empty list of strings"),
    ],
)  # fmt: skip
def test_one_problem(tmp_path: Path, text: str, key: str, rule: str) -> None:
    [problem] = problems_of(write(tmp_path, text))
    assert problem.key == key
    assert rule in problem.rule


def test_a_template_with_only_session_keys_and_no_agents(tmp_path: Path) -> None:
    text = "[templates.quick]\n" + "".join(
        f"{key} = {value}\n"
        for key, value in [
            ("timeout", '"10m"'),
            ("idle_after", "60"),
            ("error_threshold", "2"),
            ("error_window", '"1h"'),
            ("max_agents", "4"),
            ("max_duration", '"8h"'),
            ("stop_at", '"16:30"'),
        ]
    )
    template = load_config(write(tmp_path, text), {}).templates["quick"]
    assert template.agents == ()
    assert template.apply(SessionSettings()) == SessionSettings(
        timeout=600.0,
        idle_after=60.0,
        error_threshold=2,
        error_window=3600.0,
        max_agents=4,
        max_duration=28800.0,
        stop_at="16:30",
    )


def test_templates_referencing_unknown_agents(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[agents.real]\ncommand = ["x"]\n[templates.t]\nagents = ["real", "fake"]'
    )
    [problem] = problems_of(path)
    assert problem == Problem(
        str(path),
        "templates.t.agents",
        "fake",
        "names no [agents.fake] table; defined agents: real",
    )


def test_a_template_may_name_an_agent_whose_table_has_problems(tmp_path: Path) -> None:
    path = write(tmp_path, '[agents.a]\ncommand = "a"\n[templates.t]\nagents = ["a"]')
    assert [p.key for p in problems_of(path)] == ["agents.a.command"]


def test_toml_syntax_error_is_one_problem_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[session]\ntimeout = "30m\nmax_agents = 0\n')
    [problem] = problems_of(path)
    assert problem.file == str(path)
    assert problem.key == "line 2, column 15"
    assert problem.value is None
    assert problem.rule.startswith("invalid TOML: ")
    assert "(at line" not in problem.rule


def test_toml_syntax_error_at_end_of_document(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "a = "))
    assert problem.key == "end of document"


def test_missing_explicit_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    [problem] = problems_of(path)
    assert problem.file == str(path)
    assert "unable to read" in problem.rule and "No such file" in problem.rule


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path)
    assert "unable to read" in problem.rule


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[daemon]\nsocket_group = "caf\xe9"\n')
    [problem] = problems_of(path)
    assert "UTF-8" in problem.rule


# --- environment ------------------------------------------------------------------


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[session]\ntimeout = "1h"\nmax_duration = "8h"\nerror_threshold = 9\n')
    environ = {
        "SESSIOND_TIMEOUT": "45m",
        "SESSIOND_ERROR_THRESHOLD": "3",
        "SESSIOND_MAX_DURATION": "",
        "SESSIOND_STOP_AT": "16:00",
        "SESSIOND_SOCKET": "/tmp/x.sock",  # not a [session] key: left alone
        "PATH": "/usr/bin",
    }
    session = load_config(path, environ).session
    assert session == SessionSettings(
        timeout=2700.0, error_threshold=3, max_duration=None, stop_at="16:00"
    )


def test_env_overrides_the_embedded_defaults() -> None:
    assert load_config(None, {"SESSIOND_IDLE_AFTER": "90"}).session.idle_after == 90.0


def test_a_bad_env_value_is_a_problem_from_the_environment() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"SESSIOND_TIMEOUT": "soon", "SESSIOND_MAX_AGENTS": "0"})
    assert [(p.file, p.key, p.value) for p in caught.value.problems] == [
        ("environment", "SESSIOND_TIMEOUT", "soon"),
        ("environment", "SESSIOND_MAX_AGENTS", "0"),
    ]
    assert DURATION_RULE in caught.value.problems[0].rule


def test_file_and_env_problems_come_together(tmp_path: Path) -> None:
    path = write(tmp_path, "[session]\nmax_agents = 0\n")
    problems = problems_of(path, {"SESSIOND_ERROR_WINDOW": "-1"})
    assert [(p.file, p.key) for p in problems] == [
        (str(path), "session.max_agents"),
        ("environment", "SESSIOND_ERROR_WINDOW"),
    ]


# --- per-session overrides ----------------------------------------------------------


def test_session_overrides_accept_strings_numbers_and_none() -> None:
    base = SessionSettings(max_duration=3600.0, stop_at="18:00")
    overrides = {
        "timeout": "45m",
        "error_threshold": "3",
        "max_agents": 8,
        "idle_after": 60.5,
        "max_duration": "",
        "stop_at": None,
    }
    result = session_overrides(base, overrides, "session.start")
    assert result == SessionSettings(
        timeout=2700.0, idle_after=60.5, error_threshold=3, max_agents=8
    )
    assert base.max_duration == 3600.0  # untouched


def test_session_overrides_with_nothing_return_the_base() -> None:
    base = SessionSettings(timeout=60.0)
    assert session_overrides(base, {}, "session.start") == base


def test_session_overrides_report_every_problem_with_the_origin() -> None:
    with pytest.raises(ConfigError) as caught:
        session_overrides(
            SessionSettings(),
            {"timeout": "5x", "error_threshold": True, "colour": "red"},
            "session.start",
        )
    problems = caught.value.problems
    assert [(p.file, p.key, p.value) for p in problems] == [
        ("session.start", "timeout", "5x"),
        ("session.start", "error_threshold", True),
        ("session.start", "colour", "red"),
    ]
    assert problems[2].rule == (
        "unknown key; known keys: timeout, idle_after, error_threshold, error_window, "
        "max_agents, max_duration, stop_at"
    )


def test_template_values_go_through_session_overrides() -> None:
    template = Template(
        "t", (), (("timeout", 7200.0), ("stop_at", "16:00"), ("max_duration", None))
    )
    settings = session_overrides(SessionSettings(), dict(template.session), "templates.t")
    assert settings == template.apply(SessionSettings())


# --- wire -------------------------------------------------------------------------------


def test_session_settings_to_wire() -> None:
    assert session_settings_to_wire(SessionSettings()) == {
        "timeout": 1800.0,
        "idle_after": 300.0,
        "error_threshold": 5,
        "error_window": 900.0,
        "max_agents": 64,
        "max_duration": None,
        "stop_at": None,
    }


def test_session_settings_to_wire_gives_float_seconds() -> None:
    wire = session_settings_to_wire(SessionSettings(timeout=60, max_duration=90, stop_at="07:00"))
    assert (wire["timeout"], wire["max_duration"], wire["stop_at"]) == (60.0, 90.0, "07:00")
    assert isinstance(wire["timeout"], float) and isinstance(wire["max_duration"], float)
    assert isinstance(wire["error_threshold"], int)


# --- paths ------------------------------------------------------------------------------


def test_default_config_path_system() -> None:
    assert default_config_path(True, {}) == Path("/etc/sessiond/sessiond.toml")
    assert default_config_path(True, {"CONFIGURATION_DIRECTORY": ""}) == Path(
        "/etc/sessiond/sessiond.toml"
    )
    environ = {"CONFIGURATION_DIRECTORY": "/etc/a:/etc/b"}
    assert default_config_path(True, environ) == Path("/etc/a/sessiond.toml")


def test_default_config_path_user() -> None:
    xdg = {"XDG_CONFIG_HOME": "/home/u/.cfg"}
    assert default_config_path(False, xdg) == Path("/home/u/.cfg/sessiond/sessiond.toml")
    expected = Path(platformdirs.user_config_dir("sessiond")) / "sessiond.toml"
    assert default_config_path(False, {}) == expected


def test_resolve_config_uses_the_default_file_only_if_it_exists(tmp_path: Path) -> None:
    environ = {"CONFIGURATION_DIRECTORY": str(tmp_path), "SESSIOND_MAX_AGENTS": "7"}
    config = resolve_config(None, True, environ)
    assert config.source is None and config.session.max_agents == 7
    path = write(tmp_path, "[daemon]\nmax_clients = 9\n")
    config = resolve_config(None, True, environ)
    assert config.source == str(path) and config.daemon.max_clients == 9


def test_resolve_config_explicit_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unable to read"):
        resolve_config(str(tmp_path / "missing.toml"), True, {})
    path = write(tmp_path, "[daemon]\nlog_files = 5\n")
    assert resolve_config(str(path), False, {}).daemon.log_files == 5


def test_resolve_config_reports_a_bad_default_file(tmp_path: Path) -> None:
    write(tmp_path, "[daemon]\nlog_files = 0\n")
    with pytest.raises(ConfigError, match=r"daemon\.log_files"):
        resolve_config(None, True, {"CONFIGURATION_DIRECTORY": str(tmp_path)})
