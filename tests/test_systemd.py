"""sessiond under a real systemd 252: the units in contrib/systemd, end to end.

One container for the whole module (tests/sysd.py): booted once, sessiond
installed into it with the README's install steps (`sysd.INSTALL_STEPS`), and
torn down at the end whatever happens. The tests share it and run in file
order, the first ones on a daemon that has not started yet; each one that
needs a live session makes sure there is one (the template "nightly": ticker
and probe as root, worker and probe-alice as alice), so any of them can also
run alone. Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sysd import (
    INSTALL_STEPS,
    ROOT,
    SRC,
    TIMER_STEPS,
    USER_UNIT_STEPS,
    WHEELS,
    Container,
    Unavailable,
    build_wheels,
    check_host,
    unique_name,
)

from harness import wait_for

# A first run builds the cached Debian rootfs (a minute or two) inside the first test's setup.
pytestmark = pytest.mark.timeout(900)

UNITS = ROOT / "contrib" / "systemd"
SYSTEM_UNITS = ["sessiond.socket", "sessiond.service", "sessiond-nightly.timer",
                "sessiond-nightly.service"]  # fmt: skip
USER_UNITS = ["sessiond.socket", "sessiond.service"]
# The capabilities sessiond.service takes out of the bounding set.
DROPPED_CAPS = {"CAP_SYS_MODULE": 16, "CAP_SYS_PACCT": 20, "CAP_SYS_BOOT": 22,
                "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MAC_ADMIN": 33,
                "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36}  # fmt: skip
HANG_DROP_IN = "/etc/systemd/system/sessiond.service.d/test-hang.conf"
NIGHTLY_DROP_IN = "/etc/systemd/system/sessiond-nightly.service.d/test-probe.conf"

# The probes' way to try a call: "ok", or the errno's name.
ATTEMPT = """
def attempt(fn):
    try:
        fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"
"""

# Run by sessiond-nightly.service before its sessionc (ExecStartPre=, a test drop-in):
# what that unit's sandbox leaves a process of it.
NIGHTLY_PROBE = (
    """\
import errno, json, os, socket
"""
    + ATTEMPT
    + """
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
found = {key: status[key] for key in ("CapBnd", "CapEff", "NoNewPrivs", "Seccomp")}
found["uid"] = os.getuid()
found["netns"] = os.readlink("/proc/self/ns/net")
found["write /etc"] = attempt(lambda: open("/etc/nightly-probe", "w").close())
found["AF_INET"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
print("NIGHTLY " + json.dumps(found, sort_keys=True), flush=True)
"""
)

# Run by agents (and, as a control, by a plain transient unit): what the unit's
# sandbox lets them do. It prints one line, then becomes a sleep of the same pid.
PROBE = (
    """\
import ctypes, errno, json, os, socket, sys
"""
    + ATTEMPT
    + """
def sock(family, kind):
    return lambda: socket.socket(family, kind).close()

def swapoff():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.swapoff(b"/nonexistent-swap") != 0:
        raise OSError(ctypes.get_errno(), "swapoff")

def write(path):
    def go():
        with open(path, "w") as f:
            f.write("written by an agent\\n")
    return go

uid = os.getuid()
found = {
    "AF_UNIX": attempt(sock(socket.AF_UNIX, socket.SOCK_STREAM)),
    "AF_INET": attempt(sock(socket.AF_INET, socket.SOCK_STREAM)),
    "AF_INET6": attempt(sock(socket.AF_INET6, socket.SOCK_STREAM)),
    "AF_NETLINK": attempt(sock(socket.AF_NETLINK, socket.SOCK_RAW)),
    "AF_PACKET": attempt(sock(socket.AF_PACKET, socket.SOCK_RAW)),
    "AF_VSOCK": attempt(sock(socket.AF_VSOCK, socket.SOCK_STREAM)),
    "realtime": attempt(lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))),
    "swapoff": attempt(swapoff),
    "home": attempt(write(os.path.expanduser(f"~/probe-{uid}"))),
    "tmp": attempt(write(f"/tmp/probe-{uid}")),
}
print("PROBE " + json.dumps(found, sort_keys=True), flush=True)
if sys.argv[1:] != ["--once"]:
    os.execv("/bin/sleep", ["sleep", "infinity"])
"""
)

CONFIG = """\
[daemon]
on_shutdown = "{on_shutdown}"

[agents.ticker]
command = ["/bin/sh", "-c", "while :; do date +%s > /tmp/ticker.out; sleep 1; done"]
min_uptime = "1s"
needs_network = true
stop_timeout = "3s"

[agents.worker]
command = ["/bin/sh", "-c", "while :; do date +%s > \\"$HOME/worker.out\\"; sleep 1; done"]
user = "alice"
cwd = "/home/alice"
min_uptime = "1s"
stop_timeout = "3s"

[agents.probe]
command = ["/usr/bin/python3", "/etc/sessiond/probe.py"]
restart = "never"
stop_timeout = "3s"

[agents.probe-alice]
command = ["/usr/bin/python3", "/etc/sessiond/probe.py"]
user = "alice"
cwd = "/home/alice"
restart = "never"
stop_timeout = "3s"

[templates.nightly]
agents = ["ticker", "worker", "probe", "probe-alice"]
"""


def config(on_shutdown: str = "stop") -> str:
    return CONFIG.replace("{on_shutdown}", on_shutdown)


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    try:
        check_host()
    except Unavailable as exc:
        pytest.skip(str(exc))
    work = Path(tempfile.mkdtemp(prefix="sdt-"))
    timings: dict[str, float] = {}
    container = None
    try:
        t0 = time.monotonic()
        build_wheels(work / "wheels")
        timings["wheels"] = time.monotonic() - t0
        container = Container(unique_name(), {str(work / "wheels"): WHEELS, str(ROOT): SRC})
        t0 = time.monotonic()
        container.boot()
        timings["boot"] = time.monotonic() - t0
        t0 = time.monotonic()
        container.write("/etc/sessiond/probe.py", PROBE)
        container.write("/etc/sessiond/sessiond.toml", config())
        container.steps(INSTALL_STEPS + TIMER_STEPS + USER_UNIT_STEPS)
        container.sh("useradd -m -s /bin/sh -G sessiond alice && useradd -m -s /bin/sh bob")
        container.run("sessiond", "--check-config")
        timings["install"] = time.monotonic() - t0
        yield container
    finally:
        if container is not None:
            container.teardown()
        shutil.rmtree(work, ignore_errors=True)
        print("\nsystemd container:", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


# -- helpers ---------------------------------------------------------------------


def agents(box: Container) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in box.sessionc_json("agents")}


def running_pids(box: Container) -> dict[str, int]:
    """Every agent's pid, once all of them are running."""

    def all_running() -> dict[str, int] | None:
        found = agents(box)
        if found and all(a["state"] == "running" for a in found.values()):
            return {name: a["pid"] for name, a in found.items()}
        return None

    return wait_for(all_running, 15, "every agent running")


def ensure_session(box: Container) -> dict[str, Any]:
    """The live session; the template's "nightly" started first if there is none."""
    session = box.sessionc_json("status")["session"]
    if session is None:
        session = box.sessionc_json("start", "nightly", "--template", "nightly")
    return session


def live(box: Container) -> dict[str, Any]:
    session = box.sessionc_json("status")["session"]
    assert session is not None, "no live session"
    return session


def daemon_lines(box: Container, *args: str) -> list[dict[str, Any]]:
    """The daemon's own journal lines (not systemd's about the unit)."""
    return [e for e in box.journal("sessiond", *args) if e.get("SYSLOG_IDENTIFIER") == "sessiond"]


def uid_of(box: Container, pid: int) -> int:
    return int(box.proc_status(pid)["Uid"].split()[0])


def probe_result(box: Container, agent: str) -> dict[str, str]:
    def printed() -> dict[str, str] | None:
        lines = box.sessionc("logs", agent).stdout.splitlines()  # one agent: as written
        found = [line for line in lines if line.startswith("PROBE ")]
        return json.loads(found[-1][len("PROBE ") :]) if found else None

    return wait_for(printed, 15, f"the output of agent {agent}")


def control_probe(box: Container, *props: str) -> dict[str, str]:
    """The probe in a plain transient service: the container's limits without the unit's."""
    args = [arg for prop in props for arg in ("-p", prop)]
    out = box.run("systemd-run", "--quiet", "--wait", "--pipe", "--collect", *args,
                  "/usr/bin/python3", "/etc/sessiond/probe.py", "--once").stdout  # fmt: skip
    return json.loads(out.split("PROBE ", 1)[1])


def reload(box: Container) -> None:
    """systemctl reload, and wait for the daemon to have done it.

    systemd 252 ends the reload job when `kill -HUP` returns, which may be before
    the daemon has read the file: its one journal line per SIGHUP tells.
    """

    def done() -> int:
        said = ("configuration reloaded from ", "reload refused, ")
        return sum(e["MESSAGE"].startswith(said) for e in daemon_lines(box))

    before = done()
    box.systemctl("reload", "sessiond")
    wait_for(lambda: done() > before, 10, "the daemon's word on the reload")
    box.wait_state("sessiond", "active", "running")


# -- unit files --------------------------------------------------------------------


def test_units_pass_systemd_analyze_verify_on_the_host():
    """Syntax, directives and man pages, checked by the host's systemd-analyze."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this host")
    with tempfile.TemporaryDirectory(prefix="sdt-verify-") as tmp:
        mandirs = Path(tmp) / "man"
        for page in (ROOT / "man").glob("*.[1-8]"):
            section = mandirs / f"man{page.suffix[1:]}"
            section.mkdir(parents=True, exist_ok=True)
            (section / page.name).symlink_to(page)
        manpath = shutil.which("manpath")
        system_man = (
            subprocess.run([manpath], capture_output=True, text=True).stdout if manpath else ""
        )
        env = {**os.environ, "MANPATH": f"{mandirs}:{system_man.strip()}",
               "XDG_RUNTIME_DIR": tmp, "SYSTEMD_LOG_LEVEL": "notice"}  # fmt: skip
        man = ["--man=yes"] if shutil.which("man") else ["--man=no"]
        system = subprocess.run(
            [analyze, "verify", *man, *SYSTEM_UNITS],
            cwd=UNITS, env=env, capture_output=True, text=True,
        )  # fmt: skip
        user = subprocess.run(
            [analyze, "--user", "verify", *man, *USER_UNITS],
            cwd=UNITS / "user", env=env, capture_output=True, text=True,
        )  # fmt: skip
    # The one thing the host may lack: sessiond installed where the units run it from.
    missing = [
        (unit, program)
        for unit, program in [
            ("sessiond.service", "sessiond"),
            ("sessiond-nightly.service", "sessionc"),
        ]
        if not Path(f"/usr/local/bin/{program}").exists()
    ]
    expected = {
        f"{unit}: Command /usr/local/bin/{program} is not executable: No such file or directory"
        for unit, program in missing
    }
    complaints = set((system.stdout + system.stderr + user.stdout + user.stderr).splitlines())
    assert complaints <= expected, "\n".join(sorted(complaints - expected))


def test_units_pass_systemd_analyze_verify_in_the_container(box):
    system = [f"/etc/systemd/system/{unit}" for unit in SYSTEM_UNITS]
    # --man=no: the container has no man-db; the host's check above reads the pages.
    done = box.run("systemd-analyze", "verify", "--man=no", *system, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    user = " ".join(f"/etc/systemd/user/{unit}" for unit in USER_UNITS)
    done = box.sh(f'XDG_RUNTIME_DIR=$(mktemp -d) systemd-analyze --user verify --man=no {user}',
                  check=False)  # fmt: skip
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_install_made_the_groups_the_directories_and_the_socket(box):
    groups = box.run("getent", "group", "sessiond", "sessiond-admin").stdout.splitlines()
    assert [line.split(":")[0] for line in groups] == ["sessiond", "sessiond-admin"]
    paths = ["/run/sessiond", "/var/lib/sessiond", "/etc/sessiond", "/run/sessiond/sessiond.sock"]
    modes = box.run("stat", "-c", "%n %a %U %G", *paths).stdout.splitlines()
    assert modes == [
        "/run/sessiond 755 root root",
        "/var/lib/sessiond 711 root root",
        "/etc/sessiond 755 root root",
        "/run/sessiond/sessiond.sock 660 root sessiond",
    ]
    assert box.systemctl("is-enabled", "sessiond.socket") == "enabled"
    pages = ["man1/sessionc.1", "man5/sessiond.toml.5", "man8/sessiond.8"]
    for page in pages:  # where man(1) looks by default
        assert box.run("test", "-s", f"/usr/local/share/man/{page}", check=False).returncode == 0


# -- socket activation, access, a session --------------------------------------------


def test_the_first_client_activates_the_daemon(box):
    assert box.is_active("sessiond.socket") == "active"
    assert box.is_active("sessiond.service") == "inactive"
    done = box.sessionc("status")
    assert "no active session" in done.stdout
    box.wait_state("sessiond", "active", "running")
    assert box.show("sessiond", "StatusText") == "no active session"
    assert any(e["MESSAGE"] == "using the socket passed by systemd" for e in daemon_lines(box))
    # The state directory keeps the unit's mode once the daemon runs in it.
    assert box.run("stat", "-c", "%a", "/var/lib/sessiond").stdout.strip() == "711"


def test_the_socket_group_may_connect_and_nobody_else(box):
    assert box.sessionc("status", user="alice").returncode == 0
    denied = box.sessionc("status", user="bob", check=False)
    assert denied.returncode == 3, denied.stderr
    assert denied.stderr.splitlines() == [
        "sessionc: unable to reach sessiond at /run/sessiond/sessiond.sock: permission denied",
        "hint: ask an admin to add you to the daemon's socket group (default 'sessiond'), "
        "then log in again",
    ]


def test_a_template_session_runs_its_agents_as_root_and_as_their_user(box):
    session = box.sessionc_json("start", "nightly", "--template", "nightly")
    assert (session["name"], session["state"]) == ("nightly", "active")
    assert box.show("sessiond", "StatusText") == "session nightly active, 4 agents, 0 participants"
    pids = running_pids(box)
    assert set(pids) == {"ticker", "worker", "probe", "probe-alice"}
    alice = int(box.run("id", "-u", "alice").stdout)
    assert {name: uid_of(box, pid) for name, pid in pids.items()} == {
        "ticker": 0, "worker": alice, "probe": 0, "probe-alice": alice,
    }  # fmt: skip
    # Their files are where their users look: the same /tmp, the user's own home.
    wait_for(lambda: box.run("test", "-s", "/tmp/ticker.out", check=False).returncode == 0,
             10, "ticker's file in /tmp")  # fmt: skip

    def owner() -> str:
        return box.run("stat", "-c", "%U", "/home/alice/worker.out", check=False).stdout.strip()

    wait_for(lambda: owner() == "alice", 10, "worker's file in alice's home")


def test_the_sandbox_binds_agents_only_where_intended(box):
    ensure_session(box)
    pids = running_pids(box)
    main = int(box.show("sessiond", "MainPID"))
    init = box.proc_status(1)
    dropped = sum(1 << bit for bit in DROPPED_CAPS.values())
    for pid in (main, *pids.values()):
        status = box.proc_status(pid)
        assert int(status["CapBnd"], 16) == int(init["CapBnd"], 16) & ~dropped
        assert status["NoNewPrivs"] == "0"  # sudo, su, ping still work in agents
        assert status["Seccomp"] == "2"
        # No namespace of the unit's own: agents see (and mount into) the users' world.
        for ns in ("mnt", "uts", "ipc", "net", "user"):
            mine = box.run("readlink", f"/proc/{pid}/ns/{ns}").stdout
            assert mine == box.run("readlink", f"/proc/1/ns/{ns}").stdout, (pid, ns)
    as_root, as_alice = probe_result(box, "probe"), probe_result(box, "probe-alice")
    # What they wrote is where their users look: the same /tmp, their own homes.
    alice = box.run("id", "-u", "alice").stdout.strip()
    files = [f"/home/alice/probe-{alice}", f"/tmp/probe-{alice}", "/root/probe-0", "/tmp/probe-0"]
    assert box.run("stat", "-c", "%U", *files).stdout.split() == ["alice", "alice", "root", "root"]
    # The same probe in a plain transient service (the container's own limits, without
    # the unit's): only RestrictAddressFamilies= and RestrictRealtime= make a difference.
    open_root = control_probe(box)
    open_alice = control_probe(box, "User=alice")
    assert open_root["AF_VSOCK"] == open_root["realtime"] == "ok"
    assert as_root == {**open_root, "AF_VSOCK": "EAFNOSUPPORT", "realtime": "EPERM"}
    assert as_alice == {**open_alice, "AF_VSOCK": "EAFNOSUPPORT"}
    for family in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
        assert as_root[family] == "ok"
    assert as_alice["AF_PACKET"] == "EPERM"  # an allowed family; alice lacks CAP_NET_RAW
    assert as_root["home"] == as_root["tmp"] == as_alice["home"] == as_alice["tmp"] == "ok"


# -- journal, reload, watchdog -------------------------------------------------------


def test_the_journal_files_each_line_at_its_level(box):
    ensure_session(box)
    lines = daemon_lines(box, "-o", "json")
    level = {e["MESSAGE"]: e["PRIORITY"] for e in lines}
    listening = next(m for m in level if m.startswith("sessiond ") and " listening on " in m)
    assert level[listening] == "6"  # info
    assert level["session nightly started by root"] == "5"  # notice
    assert box.run("journalctl", "-u", "sessiond", "-p", "err", "--no-pager", "-q").stdout == ""
    # Nothing worse than notice from the daemon so far: its rtnetlink watch (ticker needs
    # the network) runs under RestrictAddressFamilies=, or it would have said so.
    assert [e["MESSAGE"] for e in lines if int(e["PRIORITY"]) <= 4] == []
    assert live(box)["state"] == "active"
    # A broken config on reload: one error line, and the daemon keeps going.
    session = live(box)
    box.write("/etc/sessiond/sessiond.toml", "this is not toml\n")
    try:
        reload(box)
    finally:
        box.write("/etc/sessiond/sessiond.toml", config())
    errors = box.journal("sessiond", "-p", "err")
    assert {e["PRIORITY"] for e in errors} == {"3"}
    assert [e["MESSAGE"] for e in errors] == [
        "reload refused, keeping the running configuration: invalid configuration (1 problem):",
        "  /etc/sessiond/sessiond.toml: line 1, column 6: invalid TOML: Expected '=' after a key"
        " in a key/value pair",
    ]
    assert live(box)["id"] == session["id"]
    reload(box)


def test_reload_keeps_the_session_and_its_agents(box):
    ensure_session(box)
    session, pids = live(box), running_pids(box)
    main, restarts = box.show("sessiond", "MainPID"), box.show("sessiond", "NRestarts")
    reload(box)
    last = daemon_lines(box)[-1]["MESSAGE"]
    assert last == "configuration reloaded from /etc/sessiond/sessiond.toml"
    assert live(box)["id"] == session["id"]
    assert running_pids(box) == pids
    assert (box.show("sessiond", "MainPID"), box.show("sessiond", "NRestarts")) == (main, restarts)
    assert box.show("sessiond", "StatusText").startswith("session nightly active, ")


def test_the_watchdog_restarts_a_hung_daemon_and_it_adopts_the_agents(box):
    box.write(HANG_DROP_IN, "[Service]\nEnvironment=SESSIOND_TEST_HANG=1\nWatchdogSec=3s\n")
    try:
        box.systemctl("daemon-reload")
        box.systemctl("restart", "sessiond")
        box.wait_state("sessiond", "active", "running")
        assert box.show("sessiond", "WatchdogUSec") == "3s"
        ensure_session(box)
        session, pids = live(box), running_pids(box)
        main, restarts = box.show("sessiond", "MainPID"), int(box.show("sessiond", "NRestarts"))
        box.systemctl("kill", "-s", "SIGUSR2", "--kill-whom=main", "sessiond")
        box.wait_journal("sessiond", "sessiond.service: Failed with result 'watchdog'.", 15)
        wait_for(lambda: int(box.show("sessiond", "NRestarts")) == restarts + 1, 10,
                 "the restart")  # fmt: skip
        box.wait_state("sessiond", "active", "running")
        assert box.show("sessiond", "MainPID") != main
        assert live(box)["id"] == session["id"]
        assert running_pids(box) == pids
        adopted = {e["MESSAGE"] for e in daemon_lines(box)}
        assert {f"agent {name} adopted (pid {pid})" for name, pid in pids.items()} <= adopted
    finally:
        box.run("rm", "-f", HANG_DROP_IN)
        box.systemctl("daemon-reload")


# -- stopping -----------------------------------------------------------------------


def test_stop_with_on_shutdown_stop_ends_every_agent(box):
    ensure_session(box)
    session, pids = live(box), running_pids(box)
    assert box.marked_pids()
    box.systemctl("stop", "sessiond")
    assert box.is_active("sessiond") == "inactive"
    assert box.marked_pids() == []
    # The session stays live in the store: the next daemon starts its agents afresh.
    box.systemctl("start", "sessiond")
    assert live(box)["id"] == session["id"]
    assert not set(running_pids(box).values()) & set(pids.values())


def test_stop_with_on_shutdown_keep_leaves_agents_to_the_next_daemon(box):
    box.write("/etc/sessiond/sessiond.toml", config("keep"))
    try:
        reload(box)
        session, pids = ensure_session(box), running_pids(box)
        box.systemctl("stop", "sessiond")
        assert box.is_active("sessiond") == "inactive"
        assert all(box.alive(pid) for pid in pids.values())
        box.systemctl("start", "sessiond")
        assert live(box)["id"] == session["id"]
        assert running_pids(box) == pids
    finally:
        box.write("/etc/sessiond/sessiond.toml", config())
        reload(box)


# -- the example timer, the user units -------------------------------------------------


def nightly_probe(box: Container) -> dict[str, Any]:
    found = [e["MESSAGE"] for e in box.journal("sessiond-nightly")
             if str(e.get("MESSAGE", "")).startswith("NIGHTLY ")]  # fmt: skip
    assert found, "no output of the nightly unit's probe"
    return json.loads(found[-1][len("NIGHTLY ") :])


def test_the_nightly_timer_service_starts_the_session_from_the_template(box):
    box.sessionc("stop", check=False)  # exit 5 if none is live
    assert box.sessionc_json("status")["session"] is None
    assert box.marked_pids() == []
    box.systemctl("start", "sessiond-nightly.timer")
    assert box.show("sessiond-nightly.timer", "NextElapseUSecRealtime").endswith(" 22:00:00 UTC")
    box.write("/etc/sessiond/nightly-probe.py", NIGHTLY_PROBE)
    box.write(
        NIGHTLY_DROP_IN, "[Service]\nExecStartPre=/usr/bin/python3 /etc/sessiond/nightly-probe.py\n"
    )
    try:
        box.systemctl("daemon-reload")
        box.systemctl("start", "sessiond-nightly.service")  # what the timer does at 22:00
    finally:
        box.run("rm", "-f", NIGHTLY_DROP_IN)
        box.systemctl("daemon-reload")
    # Sandboxed hard, and yet its sessionc reached the socket: still root, with nothing else.
    probe = nightly_probe(box)
    assert probe.pop("netns") != box.run("readlink", "/proc/1/ns/net").stdout.strip()
    assert probe == {"CapBnd": "0000000000000000", "CapEff": "0000000000000000",
                     "NoNewPrivs": "1", "Seccomp": "2", "uid": 0,
                     "write /etc": "EROFS", "AF_INET": "EAFNOSUPPORT"}  # fmt: skip
    session = live(box)
    assert (session["name"], session["template"], session["owner"]["user"]) == (
        "nightly", "nightly", "root",
    )  # fmt: skip
    assert session["settings"]["stop_at"] == "06:00"
    assert session["settings"]["timeout"] == 9 * 3600
    assert set(running_pids(box)) == {"ticker", "worker", "probe", "probe-alice"}
    # The lock is taken: a second start fails the unit (sessionc exits 4), as documented.
    assert box.run("systemctl", "start", "sessiond-nightly.service", check=False).returncode != 0
    assert box.show("sessiond-nightly.service", "ExecMainStatus") == "4"
    box.systemctl("stop", "sessiond-nightly.timer")


def test_the_user_units_run_a_user_daemon_by_socket_activation(box):
    uid = box.run("id", "-u", "alice").stdout.strip()
    runtime = f"/run/user/{uid}"
    sock = f"{runtime}/sessiond/sessiond.sock"
    # Test setup, not an install step: this minimal rootfs has no libpam-systemd, which
    # sets XDG_RUNTIME_DIR for user managers on a real system.
    box.write("/etc/systemd/system/user@.service.d/runtime-dir.conf",
              "[Service]\nEnvironment=XDG_RUNTIME_DIR=/run/user/%i\n")  # fmt: skip
    box.systemctl("daemon-reload")
    box.systemctl("start", f"user@{uid}.service")
    try:

        def alice(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            return box.as_user("alice", "env", f"XDG_RUNTIME_DIR={runtime}", *cmd, check=check)

        def user_state() -> str:
            done = alice("systemctl", "--user", "is-active", "sessiond.service", check=False)
            return done.stdout.strip()

        alice("systemctl", "--user", "enable", "--now", "sessiond.socket")
        assert user_state() == "inactive"
        modes = box.run("stat", "-c", "%n %a %U", f"{runtime}/sessiond", sock).stdout
        assert modes.splitlines() == [f"{runtime}/sessiond 700 alice", f"{sock} 600 alice"]
        status = json.loads(alice("sessionc", "--socket", sock, "--json", "status").stdout)
        assert status["daemon"]["mode"] == "user"
        assert status["daemon"]["socket"] == sock
        assert status["daemon"]["state_dir"] == "/home/alice/.local/state/sessiond"
        wait_for(lambda: user_state() == "active", 10, "the user daemon active")
        assert alice("systemctl", "--user", "show", "-p", "StatusText", "--value",
                     "sessiond").stdout.strip() == "no active session"  # fmt: skip
        alice("sessionc", "--socket", sock, "start", "mine")
        loop = ["/bin/sh", "-c", "while :; do sleep 1; done"]
        ran = alice("sessionc", "--socket", sock, "--json", "run", "--name", "loop", "--", *loop)
        agent = json.loads(ran.stdout)
        assert uid_of(box, agent["pid"]) == int(uid)
        alice("sessionc", "--socket", sock, "stop", "mine")
        assert not box.alive(agent["pid"])
    finally:
        box.systemctl("stop", f"user@{uid}.service", check=False)
