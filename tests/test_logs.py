"""The logs of a whole session (issue 13, item 2), on the real daemon and log keeper.

Each line an agent writes is kept with when it came and from which stream;
`sessionc logs` merges every agent's lines in time order, prefixed with the
time, the agent and `err`; `logs -f` follows the agents started later too and
exits 0 when the session ends, with a last line that says how.

The agents here speak on cue: each line is written when the test creates its
cue file, and the test waits for it to reach the log before the next cue, so
that the order of the lines is known without racing any timer.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from test_escapes import follower, stop

from harness import DaemonProcess, raw_connection, read_line, wait_for

# An agent that prints a line each time its next cue file appears: `err:TEXT` on stderr.
SPEAKER = """
import os, sys, time
name, here = sys.argv[1], sys.argv[2]
n = 0
while True:
    n += 1
    cue = os.path.join(here, f"{name}.{n}")
    while not os.path.exists(cue):
        time.sleep(0.01)
    text = open(cue).read()
    stream = sys.stderr if text.startswith("err:") else sys.stdout
    print(text.removeprefix("err:"), file=stream, flush=True)
"""
PREFIXED = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?P<agent>\S+) +(?P<err>err )?(?P<line>.*)$")


class Speakers:
    """Agents of the live session that speak on cue, in `here`."""

    def __init__(self, daemon: DaemonProcess, here: Path) -> None:
        self.daemon, self.here = daemon, here
        self.said: dict[str, int] = {}

    def add(self, name: str, **params: Any) -> None:
        command = [sys.executable, "-c", SPEAKER, name, str(self.here)]
        self.daemon.call("agent.run", command=command, name=name, cwd=str(self.here), **params)
        self.said[name] = 0

    def say(self, name: str, text: str) -> None:
        """`name` writes `text`; back once its log has the line."""
        self.said[name] += 1
        cue = self.here / f"{name}.{self.said[name]}"
        cue.with_suffix(".tmp").write_text(text)
        cue.with_suffix(".tmp").rename(cue)
        line = text.removeprefix("err:")
        wait_for(lambda: line in self.daemon.call("logs.tail", agent=name)["lines"],
                 what=f"{name}'s line {line!r} in its log")  # fmt: skip


def lines_of(text: str) -> list[tuple[str, bool, str]]:
    """(agent, from stderr, line) of each prefixed line; every line must be prefixed."""
    found = []
    for line in text.splitlines():
        match = PREFIXED.match(line)
        assert match, f"not prefixed 'HH:MM:SS.mmm AGENT ': {line!r}"
        found.append((match["agent"], bool(match["err"]), match["line"]))
    return found


def started(daemon: DaemonProcess, short_tmp: Path, *names: str) -> Speakers:
    daemon.call("session.start", name="s")
    speakers = Speakers(daemon, short_tmp)
    for name in names:
        speakers.add(name, labels=["web"] if name != "db" else [])
    return speakers


def test_every_agents_lines_merged_in_time_order_with_time_agent_and_err(daemon, short_tmp):
    speakers = started(daemon, short_tmp, "fetcher", "db")
    speakers.say("fetcher", "one")
    speakers.say("db", "err:two")
    speakers.say("fetcher", "three")
    speakers.say("db", "four")

    done = daemon.sessionc("logs")
    assert done.returncode == 0, done.stderr
    assert lines_of(done.stdout) == [
        ("fetcher", False, "one"), ("db", True, "two"), ("fetcher", False, "three"),
        ("db", False, "four")]  # fmt: skip
    entries = [json.loads(line) for line in daemon.sessionc("--json", "logs").stdout.splitlines()]
    assert [(e["agent"], e["stream"], e["line"]) for e in entries] == [
        ("fetcher", "out", "one"), ("db", "err", "two"), ("fetcher", "out", "three"),
        ("db", "out", "four")]  # fmt: skip
    times = [e["time"] for e in entries]
    assert times == sorted(times) and all(t.endswith("Z") and len(t) == 24 for t in times)


def test_logs_picks_agents_by_name_or_label_and_drops_the_prefix_if_asked(daemon, short_tmp):
    speakers = started(daemon, short_tmp, "fetcher", "crawler", "db")
    for name in ("fetcher", "crawler", "db"):
        speakers.say(name, f"from {name}")

    assert daemon.sessionc("logs", "db").stdout == "from db\n"  # one agent: as written
    picked = daemon.sessionc("logs", "--agent", "db", "--agent", "crawler").stdout
    assert [agent for agent, _, _ in lines_of(picked)] == ["crawler", "db"]
    assert [a for a, _, _ in lines_of(daemon.sessionc("logs", "--label", "web").stdout)] == [
        "fetcher", "crawler"]  # fmt: skip
    plain = daemon.sessionc("logs", "--no-prefix", "-n", "2").stdout
    assert plain == "from crawler\nfrom db\n"
    assert len(lines_of(daemon.sessionc("logs", "--since", "1h").stdout)) == 3
    later = daemon.call("logs.tail", since="2999-01-01T00:00:00Z")
    assert later == {"lines": [], "entries": []}


def test_logs_f_follows_agents_added_later_and_exits_0_when_the_session_stops(daemon, short_tmp):
    speakers = started(daemon, short_tmp, "fetcher", "db")
    speakers.say("fetcher", "before")
    out = short_tmp / "follow.out"
    proc = follower(daemon, out, "logs")
    try:
        wait_for(lambda: b"before" in out.read_bytes(), what="the tail")
        speakers.say("fetcher", "a1")
        wait_for(lambda: b"a1" in out.read_bytes(), what="fetcher's new line")
        speakers.say("db", "err:b1")
        wait_for(lambda: b"b1" in out.read_bytes(), what="db's new line")
        speakers.add("late")  # after the follower subscribed
        speakers.say("late", "c1")
        wait_for(lambda: b"c1" in out.read_bytes(), what="the later agent's line")
        daemon.call("session.stop")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            stop(proc)
    *lines, last = out.read_text().splitlines()
    assert lines_of("\n".join(lines)) == [("fetcher", False, "before"), ("fetcher", False, "a1"),
                                          ("db", True, "b1"), ("late", False, "c1")]  # fmt: skip
    assert re.fullmatch(r"-- session s closed: .*", last), last


def test_logs_f_json_ends_with_the_event_that_ended_the_session(daemon, short_tmp):
    speakers = started(daemon, short_tmp, "db")
    out = short_tmp / "follow.json"
    proc = follower(daemon, out, "--json", "logs", "db")
    try:
        wait_for(lambda: out.exists() and proc.poll() is None, what="the follower")
        speakers.say("db", "err:oops")
        wait_for(lambda: b"oops" in out.read_bytes(), what="the line")
        daemon.call("session.stop")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            stop(proc)
    first, last = [json.loads(line) for line in out.read_text().splitlines()]
    assert {k: first[k] for k in ("agent", "stream", "line")} == {
        "agent": "db", "stream": "err", "line": "oops"}  # fmt: skip
    assert last["kind"] == "session.closed" and last["session"] == "s"


def test_a_last_line_without_its_newline_is_kept(daemon, short_tmp):
    daemon.call("session.start", name="s")
    code = "import sys; sys.stdout.write('no newline'); sys.stderr.write('nor here')"
    daemon.call("agent.run", command=[sys.executable, "-c", code], name="p", restart="never",
                cwd=str(short_tmp))  # fmt: skip
    tail = wait_for(lambda: len((t := daemon.call("logs.tail", agent="p"))["lines"]) == 2 and t,
                    what="both lines")  # fmt: skip
    assert sorted((e["stream"], e["line"]) for e in tail["entries"]) == [
        ("err", "nor here"), ("out", "no newline")]  # fmt: skip


def subscribed(daemon: DaemonProcess) -> tuple[Any, bytearray]:
    """A raw connection subscribed to every line of the live session."""
    sock, buffer = raw_connection(daemon.socket), bytearray()
    sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"topics":["logs"]}}\n')
    assert read_line(sock, buffer)["result"] == {"topics": ["logs"]}
    return sock, buffer


def test_a_whole_session_subscriber_gets_no_line_of_a_later_session(daemon, short_tmp):
    started(daemon, short_tmp, "db")
    old, old_buffer = subscribed(daemon)
    daemon.call("session.stop")
    wait_for(lambda: daemon.call("session.status")["session"] is None, what="the stop")
    (short_tmp / "next").mkdir()
    speakers = started(daemon, short_tmp / "next", "db")  # another session's db
    new, buffer = subscribed(daemon)
    speakers.say("db", "the second session's")
    note = read_line(new, buffer)
    assert note["method"] == "log" and note["params"]["line"] == "the second session's"
    old.sendall(b'{"jsonrpc":"2.0","id":2,"method":"daemon.ping"}\n')  # answered after news
    assert read_line(old, old_buffer)["id"] == 2
    old.close()
    new.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run sessionc as uid 65534")
def test_only_participants_follow_the_whole_session(make_shared_daemon, short_tmp):
    daemon = make_shared_daemon()
    started(daemon, short_tmp, "db")
    done = daemon.sessionc("logs", "-f", user=65534, group=65534)
    assert done.returncode == 6, done.stderr
    assert "may not follow the logs of session s" in done.stderr
    assert "hint: join the session first with 'sessionc join s'" in done.stderr


@pytest.mark.parametrize("changed", [False, True])
def test_a_keeper_started_from_a_package_changed_on_disk_gets_a_pipe_a_packet(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, changed: bool
) -> None:
    from sessiond.daemon import logkeeper, logs  # noqa: PLC0415 -- the daemon's side, in-process
    from sessiond.daemon.clock import FakeClock  # noqa: PLC0415

    link = logs.KeeperLink(short_tmp, 1 << 20, 2, set, FakeClock())  # type: ignore[arg-type]
    if changed:  # as a reinstall (an upgrade or a rollback) leaves logkeeper.py
        monkeypatch.setattr(logs, "_code_on_disk", lambda: (0, 0, 0))
    link.attach()  # no keeper there: it starts one, of the code on disk
    try:
        assert link.pid is not None
        assert link.protocol == (1 if changed else logkeeper.PROTOCOL)
    finally:
        link.close()  # with no pipes, the keeper ends once the daemon's end is gone
    assert wait_for(lambda: _reaped(link.pid), what="the keeper to end")


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True
