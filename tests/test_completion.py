"""Shell completion end to end: the installed sessionc's scripts, run by real shells.

bash: the script that `sessionc completion bash` prints is sourced, and its
function called with COMP_WORDS, COMP_CWORD, COMP_LINE and COMP_POINT set as
readline sets them (words split at blanks and at '='). zsh: an interactive zsh
in a zpty (zsh's own pseudo-terminal module) runs compinit, loads the script,
and is typed the line and a TAB; a compadd wrapper prints each match between
markers. Template, agent and session names come from a real daemon, through
`sessionc __complete`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_agents import SLEEPER, agent

from harness import SESSIONC, DaemonProcess
from sessiond.cli import completion
from sessiond.cli import main as cli

BASH = shutil.which("bash")
ZSH = shutil.which("zsh")
SHELLCHECK = shutil.which("shellcheck")
needs_zsh = pytest.mark.skipif(
    ZSH is None, reason="zsh is not installed (./dev test installs it when run as root)"
)
CONFIG = (
    agent("scanner", SLEEPER, labels=["scan"])
    + agent("backtester", SLEEPER, labels=["slow", "scan"])
    + '[templates.backtest]\nagents = ["scanner", "backtester"]\n'
    + '[templates.unused]\nagents = ["scanner"]\n'
)
TOP_OPTIONS = {"--socket", "--json", "--rpc-timeout", "--no-color", "--version", "-h", "--help"}


def table_options(name: str) -> set[str]:
    """The options of COMMAND by sessionc's own table, with the global ones and help."""
    specs = [*cli.COMMANDS[name].args, *cli.GLOBAL_OPTIONS]
    return {flag for flags, _ in specs for flag in flags if flag.startswith("-")} | {"-h", "--help"}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the installed `sessionc completion SHELL` prints, saved; zsh's as `_sessionc`."""
    assert SESSIONC is not None, "sessionc is not installed next to the test interpreter"
    found = {}
    for shell, name in (("bash", "sessionc"), ("zsh", "_sessionc")):
        folder = tmp_path_factory.mktemp(shell)
        done = subprocess.run([SESSIONC, "completion", shell], capture_output=True, text=True,
                              timeout=30, check=True)  # fmt: skip
        assert done.stderr == ""
        (folder / name).write_text(done.stdout)
        found[shell] = folder / name
    return found


@pytest.fixture
def env(short_tmp: Path) -> dict[str, str]:
    """sessionc on PATH; $SESSIOND_SOCKET leads nowhere, so only --socket finds a daemon."""
    bindir = str(Path(SESSIONC or "sessionc").parent)
    path = f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {**os.environ, "PATH": path, "SESSIOND_SOCKET": str(short_tmp / "none.sock")}


@pytest.fixture
def live(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A daemon whose live session `nightly` runs template `backtest`'s two agents."""
    daemon = make_daemon(CONFIG)
    session = daemon.call("session.start", name="nightly", template="backtest")
    assert session["state"] == "active"
    return daemon


@pytest.fixture
def closed_and_live(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A daemon that knows the closed session `old` and the live `nightly`."""
    daemon = make_daemon(CONFIG)
    daemon.call("session.start", name="old")
    daemon.call("session.stop", name="old")
    assert daemon.call("session.start", name="nightly")["state"] == "active"
    return daemon


# Which session names a command's NAME offers: the live one where only it will do.
LIVE_ONLY = ["stop", "join", "pause", "resume"]
ANY_SESSION = ["show", "export", "health", "start --from"]


# ---------------------------------------------------------------- bash


BASH_DRIVER = r"""
source "$1" || exit 9
COMP_LINE=$2 COMP_POINT=${#2}
shift 2
COMP_WORDS=("$@") COMP_CWORD=$(($# - 1))
_sessionc "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def comp_words(line: str, break_at_equals: bool = True) -> list[str]:
    """COMP_WORDS as readline splits LINE: at blanks, and '=' is a word of its own."""
    words = re.findall(r"=|[^\s=]+" if break_at_equals else r"\S+", line)
    return [*words, ""] if line.endswith(" ") or not words else words


def bash_complete(script: Path, line: str, env: dict[str, str], **split: bool) -> list[str]:
    """COMPREPLY for a TAB at the end of LINE, from the real bash; it must print no error."""
    assert BASH is not None
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", BASH_DRIVER, "bash", str(script), line,
         *comp_words(line, **split)],
        capture_output=True, text=True, timeout=30, env=env, cwd="/",
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), f"{line!r}: {done.stderr}"
    return [word for word in done.stdout.split("\n") if word]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sessionc ", [name for name in cli.COMMANDS if name != "__complete"]),
        ("sessionc st", ["status", "start", "stop"]),
        ("sessionc --json st", ["status", "start", "stop"]),
        ("sessionc --rpc-timeout 5 comp", ["completion"]),
        ("sessionc -", sorted(TOP_OPTIONS)),
        ("sessionc start --t", ["--template", "--timeout"]),
        ("sessionc status --j", ["--json"]),
        ("sessionc status --w", ["--watch"]),
        ("sessionc status --watch ", []),  # SECONDS: nothing to offer
        ("sessionc --no", ["--no-color"]),
        ("sessionc agent ", ["start", "stop", "restart", "kill"]),
        ("sessionc agent re", ["restart"]),
        ("sessionc run --restart ", ["on-failure", "always", "never"]),
        ("sessionc run --restart=", ["on-failure", "always", "never"]),
        ("sessionc run --restart=al", ["always"]),
        ("sessionc completion ", ["bash", "zsh"]),
        ("sessionc __", []),  # the helper is hidden
        ("sessionc start --timeout ", []),  # a duration: nothing to offer, and not a NAME
        ("sessionc run -- pytho", ["python3"]),
        ("sessionc run --name w -- ls --", []),  # the agent's own words: files
    ],
)
def test_bash_completes_from_the_table(
    scripts: dict[str, Path], env: dict[str, str], line: str, expected: list[str]
) -> None:
    found = bash_complete(scripts["bash"], line, env)
    if line.endswith("pytho"):
        assert set(expected) <= set(found)
    else:
        assert sorted(found) == sorted(expected)


def test_bash_without_equals_in_wordbreaks(scripts: dict[str, Path], env: dict[str, str]) -> None:
    """With '=' taken out of COMP_WORDBREAKS the word is `--restart=al`: it is kept whole."""
    found = bash_complete(scripts["bash"], "sessionc run --restart=al", env, break_at_equals=False)
    assert found == ["--restart=always"]


@pytest.mark.parametrize("name", [n for n in cli.COMMANDS if n != "__complete"])
def test_bash_offers_every_option_of_the_table(
    scripts: dict[str, Path], env: dict[str, str], name: str
) -> None:
    assert set(bash_complete(scripts["bash"], f"sessionc {name} -", env)) == table_options(name)


def test_bash_files_where_a_file_goes(
    scripts: dict[str, Path], env: dict[str, str], short_tmp: Path
) -> None:
    (short_tmp / "checkpoint.json").write_text("{}")
    prefix = str(short_tmp / "check")
    for line in (f"sessionc report --checkpoint {prefix}", f"sessionc export x -o {prefix}",
                 f"sessionc --socket {prefix}", f"sessionc run -- ls {prefix}"):  # fmt: skip
        assert bash_complete(scripts["bash"], line, env) == [f"{prefix}point.json"], line


def test_bash_names_from_the_daemon(
    scripts: dict[str, Path], env: dict[str, str], live: DaemonProcess
) -> None:
    sock, bash = live.socket, scripts["bash"]
    agents = ["scanner", "backtester"]
    groups = [*agents, "all"]  # where a group will do
    assert bash_complete(bash, f"sessionc --socket {sock} start --template ", env) == [
        "backtest",
        "unused",
    ]
    assert bash_complete(bash, f"sessionc --socket={sock} start --template b", env) == ["backtest"]
    assert sorted(bash_complete(bash, f"sessionc --socket {sock} agent restart ", env)) == sorted(
        groups
    )
    assert bash_complete(bash, f"sessionc --socket {sock} agent kill sc", env) == ["scanner"]
    assert bash_complete(bash, f"sessionc --socket {sock} agent kill a", env) == ["all"]
    assert sorted(bash_complete(bash, f"sessionc --socket {sock} logs ", env)) == sorted(agents)
    # --socket after the command, and an option with a value before the agent
    line = f"sessionc agent --socket {sock} --signal 9 stop "
    assert sorted(bash_complete(bash, line, env)) == sorted(groups)
    line = f"sessionc --socket {sock} agent restart --label "
    assert bash_complete(bash, line, env) == ["scan", "slow"]
    for line in ("show ", "stop ", "join n", "start --from ", "start --wait "):
        assert bash_complete(bash, f"sessionc --socket {sock} {line}", env) == ["nightly"], line
    # without --socket, $SESSIOND_SOCKET is asked (here: nowhere)
    assert bash_complete(bash, "sessionc agent restart ", env) == []
    found = bash_complete(bash, "sessionc agent restart ", {**env, "SESSIOND_SOCKET": str(sock)})
    assert sorted(found) == sorted(groups)


def test_bash_offers_only_the_live_session_where_only_it_will_do(
    scripts: dict[str, Path], env: dict[str, str], closed_and_live: DaemonProcess
) -> None:
    sock, bash = closed_and_live.socket, scripts["bash"]
    for command in LIVE_ONLY:
        assert bash_complete(bash, f"sessionc --socket {sock} {command} ", env) == ["nightly"]
    for command in ANY_SESSION:
        found = bash_complete(bash, f"sessionc --socket {sock} {command} ", env)
        assert sorted(found) == ["nightly", "old"], command
    closed_and_live.call("session.stop")
    assert bash_complete(bash, f"sessionc --socket {sock} stop ", env) == []  # none is live
    assert sorted(bash_complete(bash, f"sessionc --socket {sock} show ", env)) == ["nightly", "old"]


@pytest.mark.skipif(
    SHELLCHECK is None,
    reason="shellcheck is not installed (./dev test installs it when run as root: "
    "apt-get install shellcheck)",
)
def test_bash_script_passes_shellcheck(scripts: dict[str, Path]) -> None:
    """Every check, style included, on the script as `sessionc completion bash` prints it."""
    assert SHELLCHECK is not None
    done = subprocess.run([SHELLCHECK, "-s", "bash", "--severity=style", str(scripts["bash"])],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_bash_asks_the_sessionc_being_completed(
    scripts: dict[str, Path], env: dict[str, str], live: DaemonProcess, short_tmp: Path
) -> None:
    """`/some/path/sc agent restart <TAB>` with no sessionc on PATH: that sc is asked."""
    assert SESSIONC is not None
    other = short_tmp / "bin" / "sc"
    other.parent.mkdir()
    other.symlink_to(SESSIONC)
    bare = {**env, "PATH": "/usr/bin:/bin"}
    line = f"{other} --socket {live.socket} agent restart "
    assert sorted(bash_complete(scripts["bash"], line, bare)) == ["all", "backtester", "scanner"]
    made = subprocess.run([str(other), "completion", "bash"], capture_output=True, text=True,
                          timeout=30, env=bare, check=True)  # fmt: skip
    assert made.stdout == scripts["bash"].read_text()  # the name it was run by is not in it


def test_bash_source_registers_sessionc(env: dict[str, str]) -> None:
    assert BASH is not None
    code = "source <(sessionc completion bash) && complete -p sessionc"
    done = subprocess.run([BASH, "--norc", "--noprofile", "-c", code], capture_output=True,
                          text=True, timeout=30, env=env)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip() == "complete -F _sessionc sessionc"


def unanswering_socket(path: Path) -> socket.socket:
    """A socket that takes connections into its backlog and never answers: a stuck daemon."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(8)
    return sock


@pytest.mark.parametrize("down", ["missing", "stuck"])
def test_bash_without_a_daemon_is_quick_and_quiet(
    scripts: dict[str, Path], env: dict[str, str], short_tmp: Path, down: str
) -> None:
    path = short_tmp / "down.sock"
    stuck = unanswering_socket(path) if down == "stuck" else None
    lines = [("sessionc st", ["status", "start", "stop"]),
             (f"sessionc --socket {path} agent restart ", []),
             (f"sessionc --socket {path} start --template ", []),
             (f"sessionc --socket {path} show ", [])]  # fmt: skip
    try:
        for line, expected in lines[:2] if stuck else lines:  # a stuck daemon costs 1 s a TAB
            began = time.monotonic()
            assert bash_complete(scripts["bash"], line, env) == expected
            assert time.monotonic() - began < 1 + completion.HELPER_TIMEOUT + 2, line
    finally:
        if stuck is not None:
            stuck.close()


# ---------------------------------------------------------------- the helper


def test_helper_passes_on_only_well_formed_names(short_tmp: Path) -> None:
    """A socket that is not sessiond's must not get `$(…)` into the shell through compgen."""
    path = short_tmp / "impostor.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                request = json.loads(conn.makefile().readline())
                agents = [{"name": "good-1"}, {"name": "$(touch pwned)"}, {"name": "a b"}]
                reply = {"jsonrpc": "2.0", "id": request["id"], "result": agents}
                conn.sendall(json.dumps(reply).encode() + b"\n")

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            served = pool.submit(answer)
            assert SESSIONC is not None
            done = subprocess.run([SESSIONC, "--socket", str(path), "__complete", "agents"],
                                  capture_output=True, text=True, timeout=30)  # fmt: skip
            served.result(timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (0, "good-1\n", "")


def test_helper_prints_names_and_nothing_without_a_daemon(
    live: DaemonProcess, short_tmp: Path
) -> None:
    assert sorted(live.sessionc("__complete", "agents").stdout.split()) == ["backtester", "scanner"]
    # Every configured template, also one no session was ever started from.
    assert live.sessionc("__complete", "templates").stdout.split() == ["backtest", "unused"]
    assert live.sessionc("__complete", "agents-or-all").stdout.split()[0] == "all"
    assert sorted(live.sessionc("__complete", "labels").stdout.split()) == ["scan", "slow"]
    assert live.sessionc("__complete", "sessions").stdout.split() == ["nightly"]
    assert live.sessionc("__complete", "live").stdout.split() == ["nightly"]
    live.call("session.stop")
    assert live.sessionc("__complete", "live").stdout == ""
    assert SESSIONC is not None
    nowhere = ["--socket", str(short_tmp / "none.sock")]
    for kind in ("agents", "agents-or-all", "labels", "templates", "sessions", "live"):
        command = [SESSIONC, *nowhere, "__complete", kind]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_helper_kinds_are_the_ones_it_answers() -> None:
    (_, options), *_ = cli.COMMANDS["__complete"].args
    assert set(options["choices"]) == set(completion.ASK)
    assert {s.value for s in completion.ASKED} == set(completion.ASK)


def test_helper_is_not_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "completion" in out
    assert "__complete" not in out


def test_status_does_not_load_completion(short_tmp: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sessiond.cli",
         "--socket", str(short_tmp / "none.sock"), "status"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "sessiond.cli.main" in proc.stderr  # the import times were printed
    assert "sessiond.cli.completion" not in proc.stderr


# ---------------------------------------------------------------- zsh

# An interactive zsh in a zpty is typed `source SETUP`, then LINE and a TAB. SETUP
# loads the completion system and the script, and wraps compadd to print what
# each completion function adds; the completion widget ends the shell when done.
ZSH_DRIVER = r"""
zmodload zsh/zpty || exit 3
zpty z $ZSH_BIN -f -i
zpty -w z "source ${(q)1}; echo ready-\$((6*7))"
zpty -r z out '*ready-42*' || exit 4
zpty -w -n z "$2"$'\t'
zpty -r z out '*<<<end>>>*' || exit 5
print -r -- "$out"
zpty -d z
"""
ZSH_SETUP = r"""
PROMPT= RPROMPT=
{load}
bindkey '^I' complete-word
compprefuncs=(_capture_begin)
comppostfuncs=(_capture_end)
_capture_begin() {{ print -r -- '<<<begin>>>' }}
_capture_end() {{ print -r -- '<<<end>>>'; exit }}
compadd() {{
  if [[ ${{@[1,(i)(-|--)]}} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
  local -a __hits
  builtin compadd -O __hits "$@"
  (( $#__hits )) && print -rl -- '<<<match>>>'${{^__hits}}
  builtin compadd "$@"
}}
"""
ZSH_LOADS = {
    "source": "autoload -U compinit && compinit -u -D\nsource <(sessionc completion zsh)",
    "fpath": "fpath=({folder} $fpath)\nautoload -U compinit && compinit -u -D",
}


def write_zsh_setup(folder: Path, how: str, scripts: dict[str, Path]) -> Path:
    """`source <(sessionc completion zsh)`, or `_sessionc` in a directory of $fpath."""
    setup = folder / f"setup-{how}.zsh"
    setup.write_text(ZSH_SETUP.format(load=ZSH_LOADS[how].format(folder=scripts["zsh"].parent)))
    return setup


@pytest.fixture
def zsh_setup(scripts: dict[str, Path], short_tmp: Path) -> Path:
    return write_zsh_setup(short_tmp, "source", scripts)


def zsh_complete(setup: Path, line: str, env: dict[str, str]) -> set[str]:
    """The matches a TAB at the end of LINE adds, in a real zsh; it must print no error."""
    assert ZSH is not None
    done = subprocess.run([ZSH, "-f", "-c", ZSH_DRIVER, "zsh", str(setup), line],
                          capture_output=True, text=True, timeout=30,
                          env={**env, "ZSH_BIN": ZSH}, cwd="/")  # fmt: skip
    assert done.returncode == 0, f"{line!r}: exit {done.returncode}: {done.stdout}{done.stderr}"
    shown = done.stdout.replace("\r", "").partition("<<<begin>>>")[2].partition("<<<end>>>")[0]
    lines = [text for text in shown.split("\n") if text.strip()]
    errors = [text for text in lines if not text.startswith("<<<match>>>")]
    assert not errors, f"{line!r}: {errors}"
    return {text.removeprefix("<<<match>>>") for text in lines}


@needs_zsh
def test_zsh_script_is_valid_zsh(scripts: dict[str, Path]) -> None:
    assert ZSH is not None
    done = subprocess.run([ZSH, "-n", str(scripts["zsh"])], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")


@needs_zsh
def test_zsh_sourced_before_compinit_says_so(scripts: dict[str, Path]) -> None:
    assert ZSH is not None
    done = subprocess.run([ZSH, "-f", "-c", f"source {scripts['zsh']}"], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert "compinit has not run" in done.stderr


@needs_zsh
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sessionc st", {"status", "start", "stop"}),
        ("sessionc --json st", {"status", "start", "stop"}),
        ("sessionc __", set()),
        ("sessionc -", TOP_OPTIONS),
        ("sessionc start --t", {"--template", "--timeout"}),
        ("sessionc status --w", {"--watch"}),
        ("sessionc --no", {"--no-color"}),
        ("sessionc agent ", {"start", "stop", "restart", "kill"}),
        ("sessionc run --restart=", {"on-failure", "always", "never"}),
        ("sessionc run --restart ", {"on-failure", "always", "never"}),
        ("sessionc completion ", {"bash", "zsh"}),
        ("sessionc run -- pytho", {"python3"}),
    ],
)
def test_zsh_completes_from_the_table(
    zsh_setup: Path, env: dict[str, str], line: str, expected: set[str]
) -> None:
    found = zsh_complete(zsh_setup, line, env)
    assert expected <= found if line.endswith("pytho") else found == expected


@needs_zsh
def test_zsh_offers_every_option_of_the_table(zsh_setup: Path, env: dict[str, str]) -> None:
    names = [name for name in cli.COMMANDS if name != "__complete"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        found = pool.map(lambda name: zsh_complete(zsh_setup, f"sessionc {name} -", env), names)
        for name, options in zip(names, found, strict=True):
            assert options == table_options(name), name


@needs_zsh
def test_zsh_names_from_the_daemon(
    zsh_setup: Path, env: dict[str, str], live: DaemonProcess
) -> None:
    sock, agents = live.socket, {"scanner", "backtester"}
    assert zsh_complete(zsh_setup, f"sessionc --socket {sock} start --template ", env) == {
        "backtest",
        "unused",
    }
    groups = {*agents, "all"}
    assert zsh_complete(zsh_setup, f"sessionc --socket={sock} agent restart ", env) == groups
    assert zsh_complete(zsh_setup, f"sessionc agent --socket {sock} kill ", env) == groups
    line = f"sessionc --socket {sock} agent stop --label="
    assert zsh_complete(zsh_setup, line, env) == {"scan", "slow"}
    assert zsh_complete(zsh_setup, f"sessionc --socket {sock} logs ", env) == agents
    assert zsh_complete(zsh_setup, f"sessionc --socket {sock} show ", env) == {"nightly"}
    assert zsh_complete(zsh_setup, f"sessionc --socket {sock} start --from ", env) == {"nightly"}
    assert zsh_complete(zsh_setup, "sessionc agent restart ", env) == set()  # $SESSIOND_SOCKET
    found = zsh_complete(zsh_setup, "sessionc logs ", {**env, "SESSIOND_SOCKET": str(sock)})
    assert found == agents


@needs_zsh
def test_zsh_offers_only_the_live_session_where_only_it_will_do(
    zsh_setup: Path, env: dict[str, str], closed_and_live: DaemonProcess
) -> None:
    sock = closed_and_live.socket
    for command in LIVE_ONLY:
        assert zsh_complete(zsh_setup, f"sessionc --socket {sock} {command} ", env) == {"nightly"}
    for command in ANY_SESSION:
        found = zsh_complete(zsh_setup, f"sessionc --socket {sock} {command} ", env)
        assert found == {"nightly", "old"}, command


@needs_zsh
def test_zsh_from_fpath(
    scripts: dict[str, Path], env: dict[str, str], live: DaemonProcess, short_tmp: Path
) -> None:
    """Saved as _sessionc in $fpath, the script is autoloaded at the first TAB."""
    setup = write_zsh_setup(short_tmp, "fpath", scripts)
    assert zsh_complete(setup, "sessionc st", env) == {"status", "start", "stop"}
    assert zsh_complete(setup, "sessionc run --restart ", env) == {"on-failure", "always", "never"}
    found = zsh_complete(setup, f"sessionc --socket {live.socket} agent restart ", env)
    assert found == {"scanner", "backtester", "all"}


@needs_zsh
def test_zsh_without_a_daemon_is_quick_and_quiet(
    zsh_setup: Path, env: dict[str, str], short_tmp: Path
) -> None:
    stuck = unanswering_socket(short_tmp / "stuck.sock")
    try:
        for path in (short_tmp / "none.sock", short_tmp / "stuck.sock"):
            began = time.monotonic()
            assert zsh_complete(zsh_setup, f"sessionc --socket {path} agent restart ", env) == set()
            assert time.monotonic() - began < 2 + completion.HELPER_TIMEOUT + 2, path
    finally:
        stuck.close()
