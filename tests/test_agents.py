"""Agents end to end: real processes, real signals, the real daemon and sessionc."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from harness import SESSIONC, marked_pids, raw_connection, read_line, wait_for
from sessiond.cli.client import RemoteError

PY = json.dumps(sys.executable)


def agent(name: str, code: str, **keys: object) -> str:
    """An [agents.NAME] table running `code` under this interpreter."""
    lines = [f"[agents.{name}]", f'command = [{PY}, "-c", {json.dumps(code)}]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


SLEEPER = "import time\nwhile True: time.sleep(1)"
CHATTY = "import time\nfor i in range(10**6):\n    print('line', i, flush=True); time.sleep(0.05)"


def agents_of(daemon) -> dict[str, dict]:
    return {a["name"]: a for a in daemon.call("agent.list")}


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z")


def ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return bool(int(fields["SigIgn"], 16) & (1 << (signal.SIGTERM - 1)))


def marked_processes(daemon) -> list[int]:
    """Every process that carries this daemon's agent marker."""
    return marked_pids(daemon.state_dir)


def test_template_agents_run_and_a_killed_one_comes_back(make_daemon):
    config = agent("a", SLEEPER, min_uptime="1s", labels=["work"]) + agent("b", SLEEPER)
    daemon = make_daemon(config + '[templates.t]\nagents = ["a", "b"]\n')
    assert daemon.call("session.status")["daemon"]["templates"] == ["t"]
    session = daemon.call("session.start", name="s", template="t")
    assert session["state"] == "active"
    assert {a["name"]: a["state"] for a in session["agents"]} == {"a": "running", "b": "running"}
    wait_for(lambda: agents_of(daemon)["a"]["uptime"] >= 1.2, what="a past min_uptime")
    old = agents_of(daemon)["a"]["pid"]
    os.kill(old, 9)
    back = wait_for(lambda: (a := agents_of(daemon)["a"])["pid"] not in (None, old) and a,
                    timeout=2, what="a restarted under a new pid")  # fmt: skip
    assert back["state"] == "running"
    assert back["restarts"] == 1
    assert back["exit_code"] == -9
    status = daemon.sessionc("status")
    assert "killed by SIGKILL" in status.stdout
    assert "work=1" in status.stdout
    assert daemon.call("session.status")["session"]["errors"]["count"] == 1
    health = daemon.call("session.health")
    assert health["status"] == "error" and health["healthy"] is False
    assert "1 error in the last 15m" in health["message"]
    assert daemon.sessionc("health").returncode == 1


def test_an_agent_that_exits_at_once_fails_after_max_restarts(make_daemon):
    code = "import sys; print('trying', flush=True); sys.exit(3)"
    config = agent("bad", code, backoff_initial="0.1s", max_restarts=3, min_uptime="5s")
    daemon = make_daemon(config + '[templates.t]\nagents = ["bad"]\nerror_threshold = 10\n')
    daemon.call("session.start", name="s", template="t")
    failed = wait_for(lambda: (a := agents_of(daemon)["bad"])["state"] == "failed" and a,
                      timeout=10, what="the crash loop to give up")  # fmt: skip
    assert failed["restarts"] == 3
    assert failed["exit_code"] == 3
    assert daemon.call("logs.tail", agent="bad", lines=10)["lines"] == ["trying"] * 4
    assert daemon.call("session.status")["session"]["errors"]["count"] == 4


def test_exit_125_fails_at_once_with_one_error(make_daemon):
    config = agent("done", "import sys; sys.exit(125)", min_uptime="5s")
    daemon = make_daemon(config + '[templates.t]\nagents = ["done"]\n')
    daemon.call("session.start", name="s", template="t")
    failed = wait_for(lambda: (a := agents_of(daemon)["done"])["state"] == "failed" and a,
                      what="exit 125 to fail")  # fmt: skip
    assert failed["restarts"] == 0
    assert daemon.call("session.status")["session"]["errors"]["count"] == 1


def test_error_threshold_disconnects_and_reconnect_restarts(make_daemon):
    crash_later = "import time, sys; time.sleep(0.3); sys.exit(1)"
    config = agent("c", crash_later, min_uptime="0.1s") + agent("steady", SLEEPER)
    daemon = make_daemon(config + '[templates.t]\nagents = ["c", "steady"]\nerror_threshold = 2\n')
    daemon.call("session.start", name="s", template="t")
    steady = agents_of(daemon)["steady"]["pid"]
    wait_for(lambda: daemon.call("session.status")["session"]["state"] == "disconnected",
             timeout=10, what="disconnected after two crashes")  # fmt: skip
    wait_for(lambda: all(a["pid"] is None for a in agents_of(daemon).values()),
             what="every agent terminated")  # fmt: skip
    assert not alive(steady)
    assert marked_processes(daemon) == []
    health = daemon.call("session.health")
    assert health["status"] == "disconnected" and "sessionc reconnect" in health["recovery"]
    assert daemon.sessionc("reconnect").returncode == 0
    session = daemon.call("session.status")["session"]
    assert session["state"] == "active"
    assert session["errors"]["count"] == 0
    assert all(a["state"] == "running" for a in session["agents"])


GRANDCHILD = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(sys.argv[1], "w").write(str(os.getpid()))
        while True: time.sleep(1)
    os._exit(0)
while True: time.sleep(1)
"""


def test_stop_leaves_no_process_even_an_escaped_grandchild(daemon, short_tmp):
    daemon.call("session.start", name="s")
    pidfile = short_tmp / "grandchild.pid"
    daemon.call("agent.run", command=[sys.executable, "-c", GRANDCHILD, str(pidfile)],
                name="escaper", cwd=str(short_tmp))  # fmt: skip
    grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(),
                              what="the grandchild's pid"))  # fmt: skip
    assert alive(grandchild)
    leader = agents_of(daemon)["escaper"]["pid"]
    assert os.getsid(grandchild) != os.getsid(leader)  # it really left the session
    stopped = daemon.sessionc_json("stop")
    assert stopped["state"] == "closed"
    wait_for(lambda: not alive(grandchild), timeout=5, what="the grandchild to be gone")
    assert not alive(leader)
    assert marked_processes(daemon) == []


def test_an_agent_ignoring_sigterm_is_killed_after_stop_timeout(make_daemon):
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEPER
    daemon = make_daemon(agent("stubborn", stubborn, stop_timeout="1s")
                         + '[templates.t]\nagents = ["stubborn"]\n')  # fmt: skip
    daemon.call("session.start", name="s", template="t")
    pid = agents_of(daemon)["stubborn"]["pid"]
    wait_for(lambda: ignores_sigterm(pid), what="the agent to ignore SIGTERM")
    began = time.monotonic()
    daemon.call("session.stop")
    assert time.monotonic() - began < 1 + 1.5
    assert not alive(pid)
    assert "did not stop within 1s of SIGTERM" in daemon.log()


def test_pause_stops_every_agent_and_resume_continues_them(make_daemon):
    daemon = make_daemon(agent("a", SLEEPER) + agent("b", SLEEPER)
                         + '[templates.t]\nagents = ["a", "b"]\n')  # fmt: skip
    daemon.call("session.start", name="s", template="t")
    pids = [a["pid"] for a in agents_of(daemon).values()]
    daemon.sessionc("pause")
    wait_for(lambda: all(proc_state(p) == "T" for p in pids), what="every agent in state T")
    assert {a["state"] for a in agents_of(daemon).values()} == {"paused"}
    daemon.sessionc("resume")
    wait_for(lambda: all(proc_state(p) in ("S", "R") for p in pids), what="agents running")
    assert {a["state"] for a in agents_of(daemon).values()} == {"running"}


def test_logs_show_what_an_agent_printed_and_follow_new_lines(daemon, short_tmp):
    daemon.call("session.start", name="s")
    daemon.sessionc("run", "--name", "talker", "--", sys.executable, "-c", CHATTY)
    wait_for(lambda: len(daemon.call("logs.tail", agent="talker", lines=5)["lines"]) == 5,
             what="five lines")  # fmt: skip
    shown = daemon.sessionc("logs", "talker", "-n", "3")
    assert shown.returncode == 0
    numbers = [int(line.split()[-1]) for line in shown.stdout.splitlines()]
    assert len(numbers) == 3 and numbers == sorted(numbers)

    sock, buf = raw_connection(daemon.socket), bytearray()
    sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe",'
                 b'"params":{"topics":["logs:talker"]}}\n')  # fmt: skip
    assert read_line(sock, buf)["result"] == {"topics": ["logs:talker"]}
    note = read_line(sock, buf)
    assert note["method"] == "log"
    assert note["params"]["agent"] == "talker"
    assert note["params"]["line"].startswith("line ")


WAITER = """
import signal, sys
open(sys.argv[1]).readline()  # silent until it is told
print("late", flush=True)
signal.pause()  # and alive until its session stops it
"""


def writer_of(fifo: Path) -> int | None:
    """The FIFO's write end once its reader has it open, else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads it yet
        return None


def test_a_silent_agent_has_no_log_file_and_its_followers_get_its_first_line(daemon, short_tmp):
    session = daemon.call("session.start", name="s")
    fifo = short_tmp / "go"
    os.mkfifo(fifo)
    daemon.call("agent.run", command=[sys.executable, "-c", WAITER, str(fifo)], name="quiet")
    told = wait_for(lambda: writer_of(fifo), what="the agent to open its FIFO")
    log = daemon.state_dir / "logs" / session["id"] / "quiet.log"
    assert not log.exists()  # the keeper makes it at the first output
    assert daemon.call("logs.tail", agent="quiet", lines=5)["lines"] == []

    sock, buf = raw_connection(daemon.socket), bytearray()
    sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe",'
                 b'"params":{"topics":["logs:quiet"]}}\n')  # fmt: skip
    assert read_line(sock, buf)["result"] == {"topics": ["logs:quiet"]}
    assert not log.exists()  # a follower makes nothing: it watches the directory
    os.write(told, b"go\n")
    os.close(told)
    note = read_line(sock, buf)
    assert (note["method"], note["params"]["agent"]) == ("log", "quiet")
    assert note["params"]["line"].endswith("late")


def test_report_from_inside_an_agent_adds_metrics(daemon):
    daemon.call("session.start", name="s")
    daemon.call("agent.run", command=[SESSIONC, "report", "--metric", "tokens=10"],
                name="reporter", restart="never")  # fmt: skip
    wait_for(lambda: daemon.call("session.status")["session"]["metrics"].get("tokens") == 10,
             what="tokens=10 counted")  # fmt: skip
    reporter = wait_for(lambda: (a := agents_of(daemon)["reporter"])["state"] == "exited" and a,
                        what="the reporter to exit")  # fmt: skip
    assert reporter["exit_code"] == 0
    prometheus = daemon.sessionc("metrics", "--prometheus").stdout
    reported = [line for line in prometheus.splitlines()
                if line.startswith("sessiond_reported_total{")]  # fmt: skip
    assert len(reported) == 1 and reported[0].endswith(',name="tokens"} 10'), reported
    assert 'session="s",' in reported[0]


def test_a_wrong_token_is_refused(daemon):
    daemon.call("session.start", name="s")
    done = daemon.sessionc("report", "--metric", "x=1",
                           env={"SESSIOND_AGENT_TOKEN": "forged"})  # fmt: skip
    assert done.returncode == 6
    assert "token" in done.stderr
    with pytest.raises(RemoteError) as refused:
        daemon.call("agent.checkpoint", token="forged", data={})
    assert refused.value.code == -32009


CHECKPOINTER = """
import json, os, subprocess, sys, time
given = os.environ.get("SESSIOND_CHECKPOINT")
if given:
    open(sys.argv[1], "w").write(open(given).read())
state = sys.argv[2]
open(state, "w").write(json.dumps({"cursor": 42, "note": "ünïcode"}))
subprocess.run([sys.argv[3], "report", "--checkpoint", state], check=True)
while True: time.sleep(1)
"""


def test_checkpoint_chain_hands_the_latest_checkpoint_to_the_next_session(daemon, short_tmp):
    got = short_tmp / "got.json"
    command = [sys.executable, "-c", CHECKPOINTER, str(got), str(short_tmp / "state.json"),
               SESSIONC]  # fmt: skip
    first = daemon.call("session.start", name="one")
    daemon.call("agent.run", command=command, name="worker", cwd=str(short_tmp))
    wait_for(lambda: daemon.call("session.export", name="one")["checkpoints"],
             what="a stored checkpoint")  # fmt: skip
    daemon.call("session.stop")
    second = daemon.sessionc_json("start", "two", "--from", "one")
    assert second["parent"] == first["id"]
    daemon.call("agent.run", command=command, name="worker", cwd=str(short_tmp))
    wait_for(got.exists, what="the second worker to read its checkpoint")
    assert json.loads(got.read_text()) == {"cursor": 42, "note": "ünïcode"}


def test_a_command_that_cannot_start_is_an_error_the_caller_sees(make_daemon):
    config = agent("ok", SLEEPER)
    config += '[agents.missing]\ncommand = ["/nonexistent/program"]\n'
    daemon = make_daemon(config + '[templates.t]\nagents = ["ok", "missing"]\n')
    failed = daemon.call("session.start", name="s", template="t")
    assert failed["state"] == "failed"
    assert "missing" in failed["close_reason"] and "/nonexistent/program" in failed["close_reason"]
    wait_for(lambda: marked_processes(daemon) == [], what="the other agent stopped")
    assert daemon.call("session.status")["session"] is None  # lock released
    shown = daemon.sessionc("start", "again", "--template", "t")
    assert shown.returncode == 1
    assert "failed to start" in shown.stderr and "/nonexistent/program" in shown.stderr
    wait_for(lambda: marked_processes(daemon) == [], what="the other agent stopped again")
    daemon.call("session.start", name="next")
    with pytest.raises(RemoteError) as bad:
        daemon.call("agent.run", command=["/no/such/thing"])
    assert "/no/such/thing" in bad.value.message


def test_agent_stop_start_restart_and_limits(make_daemon):
    daemon = make_daemon("[session]\nmax_agents = 2\n")
    daemon.call("session.start", name="s")
    daemon.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="one")
    daemon.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="two")
    with pytest.raises(RemoteError) as full:
        daemon.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="three")
    assert full.value.code == -32007
    pid = agents_of(daemon)["one"]["pid"]
    assert daemon.sessionc_json("agent", "stop", "one")["state"] == "stopped"
    assert not alive(pid)
    assert agents_of(daemon)["one"]["state"] == "stopped"
    started = daemon.sessionc_json("agent", "start", "one")
    assert started["state"] == "running" and started["pid"] != pid
    restarted = daemon.sessionc_json("agent", "restart", "one")
    assert restarted["pid"] not in (pid, started["pid"])
    assert daemon.sessionc("agent", "stop", "nope").returncode == 5
    assert daemon.call("session.status")["session"]["errors"]["count"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as uid 65534")
def test_run_from_another_uid_runs_as_that_uid(make_shared_daemon, short_tmp):
    daemon = make_shared_daemon()
    nobody = {"user": 65534, "group": 65534}
    assert daemon.sessionc("start", "theirs", **nobody).returncode == 0
    done = daemon.sessionc("run", "--name", "mine", "--", "sleep", "100", **nobody)
    assert done.returncode == 0, done.stderr
    pid = agents_of(daemon)["mine"]["pid"]
    status = os.stat(f"/proc/{pid}")
    assert (status.st_uid, status.st_gid) == (65534, 65534)
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    assert fields["Groups"].split() in ([], ["65534"])
    # A directory nobody may not enter is refused, though the daemon (root) could.
    secret = short_tmp / "secret"
    secret.mkdir(mode=0o700)
    refused = daemon.sessionc("--json", "status", **nobody)
    assert refused.returncode == 0
    with pytest.raises(RemoteError):
        daemon.call("agent.run", command=["sleep", "1"], cwd=str(secret / "x"))
    assert daemon.sessionc("stop", **nobody).returncode == 0
    assert not alive(pid)
