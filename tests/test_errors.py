"""Errors belong to their session, keep their text, and stop what they should (issue 10)."""

from __future__ import annotations

import os
import signal
import sys

import pytest
from test_agents import SLEEPER, agent, agents_of, alive

from harness import wait_for


def token_of(daemon, name: str) -> str:
    pid = agents_of(daemon)[name]["pid"]
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return env[b"SESSIOND_AGENT_TOKEN"].decode()


def report_error(daemon, name: str, text: str) -> None:
    daemon.call("agent.report", token=token_of(daemon, name), error=text)


def errors(daemon) -> dict:
    return daemon.call("session.status")["session"]["errors"]


def run_sleeper(daemon, cwd) -> None:
    daemon.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="w", cwd=str(cwd))


def test_a_new_session_starts_with_no_errors_and_keeps_its_own_across_restarts(daemon, short_tmp):
    daemon.call("session.start", name="first")
    run_sleeper(daemon, short_tmp)
    for n in range(3):
        report_error(daemon, "w", f"trouble {n}")
    assert errors(daemon)["count"] == 3
    daemon.call("session.stop")
    daemon.call("session.start", name="second")
    assert errors(daemon)["count"] == 0
    assert errors(daemon)["last"] is None
    run_sleeper(daemon, short_tmp)
    report_error(daemon, "w", "one")
    report_error(daemon, "w", "two")
    assert errors(daemon)["count"] == 2
    daemon.kill9()
    daemon.restart()
    after = errors(daemon)
    assert after["count"] == 2 and after["last"]["text"] == "two"
    assert daemon.call("session.status")["session"]["state"] == "active"


def test_an_error_keeps_its_text_in_status_events_health_and_the_journal(daemon, short_tmp):
    daemon.call("session.start", name="quota")
    run_sleeper(daemon, short_tmp)
    pid = agents_of(daemon)["w"]["pid"]
    env = {"SESSIOND_AGENT_TOKEN": token_of(daemon, "w")}
    done = daemon.sessionc("report", "--error", "disk quota exceeded", env=env)
    assert done.returncode == 0, done.stderr
    last = errors(daemon)["last"]
    assert (last["agent"], last["text"]) == ("w", "disk quota exceeded")
    assert last["at"].endswith("Z")
    event = [e for e in daemon.call("events.tail", lines=50) if e["kind"] == "session.error"][-1]
    assert event["data"]["text"] == "disk quota exceeded" and event["data"]["agent"] == "w"
    health = daemon.call("session.health")
    assert health["status"] == "error"
    assert "agent w: disk quota exceeded" in health["message"]
    assert "sessionc logs w -n 50" in health["recovery"]
    warning = [line for line in daemon.log().splitlines() if "disk quota exceeded" in line]
    assert warning and warning[0].startswith("<4>")
    assert alive(pid)  # a report is an error, not a stop
    shown = [line for line in daemon.sessionc("status").stdout.splitlines()
             if line.startswith("last error:")]  # fmt: skip
    assert len(shown) == 1 and shown[0].startswith("last error:   agent w, ")
    assert shown[0].endswith(": disk quota exceeded"), shown


def test_the_crash_that_crosses_the_threshold_is_not_restarted(make_daemon):
    daemon = make_daemon(
        '[session]\nerror_threshold = 1\n'
        + agent("w", SLEEPER, min_uptime="1s", restart="always")
        + '[templates.t]\nagents = ["w"]\n'
    )  # fmt: skip
    daemon.call("session.start", name="once", template="t")
    wait_for(lambda: agents_of(daemon)["w"]["uptime"] >= 1.2, what="w past min_uptime")
    pid = agents_of(daemon)["w"]["pid"]
    os.kill(pid, signal.SIGKILL)  # a long-running agent crashes: restarted at once, normally
    wait_for(lambda: daemon.call("session.status")["session"]["state"] == "disconnected",
             what="the session disconnected")  # fmt: skip
    wait_for(lambda: agents_of(daemon)["w"]["state"] == "stopped", what="w stopped")
    kinds = [e["kind"] for e in daemon.call("events.tail", lines=100)]
    after = kinds[len(kinds) - 1 - kinds[::-1].index("session.error") :]
    assert "agent.started" not in after, f"respawned after the crash: {after}"
    assert agents_of(daemon)["w"]["pid"] is None
    disconnected = [e for e in daemon.call("events.tail", lines=100)
                    if e["kind"] == "session.disconnected"][-1]  # fmt: skip
    assert "within 15m" in disconnected["message"] and "900s" not in disconnected["message"]


def test_an_immediate_restart_is_agent_restarting_and_messages_use_one_unit(make_daemon):
    daemon = make_daemon(agent("w", SLEEPER, min_uptime="1s") + '[templates.t]\nagents = ["w"]\n')
    daemon.call("session.start", name="bounce", template="t")
    wait_for(lambda: agents_of(daemon)["w"]["uptime"] >= 1.2, what="w past min_uptime")
    os.kill(agents_of(daemon)["w"]["pid"], signal.SIGKILL)
    wait_for(lambda: agents_of(daemon)["w"]["restarts"] == 1, what="w restarted")
    events = daemon.call("events.tail", lines=100)
    ran = [e for e in events if e["kind"].startswith("agent.") and e["data"].get("agent") == "w"]
    restart = ran[-2]  # then agent.started; the session.error is written after the restart
    assert restart["kind"] == "agent.restarting"
    assert restart["message"] == "agent w killed by SIGKILL; restarting"
    assert not any("backoff" in e["kind"] for e in events)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run an agent as nobody")
def test_a_template_agent_of_a_user_without_a_home_runs_in_root_dir(make_daemon):
    daemon = make_daemon('[agents.w]\ncommand = ["/bin/sleep", "300"]\nuser = "nobody"\n'
                         '[templates.t]\nagents = ["w"]\n')  # fmt: skip
    session = daemon.call("session.start", name="homeless", template="t")
    assert session["state"] == "active", session["close_reason"]
    pid = agents_of(daemon)["w"]["pid"]
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert os.stat(f"/proc/{pid}").st_uid == 65534


def test_a_start_error_names_its_real_cause(make_daemon):
    daemon = make_daemon(
        agent("nodir", SLEEPER, cwd="/nonexistent-dir") + '[templates.t]\nagents = ["nodir"]\n'
        + '[agents.nocmd]\ncommand = ["/nonexistent-cmd"]\n[templates.u]\nagents = ["nocmd"]\n'
    )  # fmt: skip
    failed = daemon.call("session.start", name="a", template="t")
    assert failed["state"] == "failed"
    assert "may not enter its directory /nonexistent-dir" in failed["close_reason"]
    assert sys.executable not in failed["close_reason"]
    failed = daemon.call("session.start", name="b", template="u")
    assert failed["state"] == "failed"
    assert "/nonexistent-cmd: No such file or directory" in failed["close_reason"]


STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)"
)


def test_reconnect_while_the_disconnect_still_stops_an_agent_waits_for_it(make_daemon, short_tmp):
    daemon = make_daemon(
        "[session]\nerror_threshold = 1\n" + agent("stubborn", STUBBORN, stop_timeout="3s")
        + agent("w", SLEEPER) + '[templates.t]\nagents = ["stubborn", "w"]\n'
    )  # fmt: skip
    daemon.call("session.start", name="slow", template="t")
    before = agents_of(daemon)["stubborn"]["pid"]
    report_error(daemon, "w", "enough")
    assert daemon.call("session.status")["session"]["state"] == "disconnected"
    back = daemon.call("session.reconnect")  # while stubborn still ignores its SIGTERM
    assert back["state"] == "active"
    now = agents_of(daemon)["stubborn"]
    assert now["state"] == "running" and now["pid"] != before and not alive(before)
