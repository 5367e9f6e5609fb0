"""Hostile clients and careless agents (issue 9): every bound holds, the daemon goes on.

Each test is a finding from trying sessiond as an attacker, and fails on the
code before the fix. Floods and full disks happen on size-limited tmpfs
mounts (conftest.size_limited), never on the machine's disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_agents import SLEEPER, agent, agents_of, alive, marked_processes
from test_reliability import run_counter

from harness import connect_as, fill, raw_connection, read_line, wait_for
from sessiond.cli.client import RemoteError
from sessiond.daemon import store as store_module

PING = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}\n'


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) / 1024


def ping_seconds(sock: socket.socket, buf: bytearray) -> float:
    began = time.monotonic()
    sock.sendall(PING)
    assert read_line(sock, buf)["id"] == 1
    return time.monotonic() - began


def strict_json(text: str) -> object:
    """json.loads that refuses NaN and Infinity, as every JSON parser but Python's does."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# -- agent output ------------------------------------------------------------------


def test_a_yes_flood_stays_within_its_log_bound_and_the_daemon_answers(make_daemon, flood_dir):
    daemon = make_daemon("[daemon]\nlog_max_bytes = 1048576\nlog_files = 3\n", start=False)
    daemon.state_dir = flood_dir / "state"
    daemon.start()
    session = daemon.call("session.start", name="flood")
    daemon.call("agent.run", command=["yes", "y" * 40], name="yes", cwd="/")
    logs = daemon.state_dir / "logs" / session["id"]
    sock, buf = raw_connection(daemon.socket), bytearray()
    worst, deadline = 0.0, time.monotonic() + 5
    while time.monotonic() < deadline:
        worst = max(worst, ping_seconds(sock, buf))
        time.sleep(0.01)
    assert worst < 2.0, f"a ping took {worst:.3f}s during the flood"
    began = time.monotonic()
    assert daemon.call("agent.stop", name="yes")["state"] == "stopped"
    assert time.monotonic() - began < 5
    # Counted once the flood is over: during it, a rotation renames the files under a
    # glob (yes.log.1 is briefly missing between two renames).
    files = sorted(logs.glob("yes.log*"))
    assert [f.name for f in files] == ["yes.log", "yes.log.1", "yes.log.2"]
    on_disk = sum(f.stat().st_size for f in files)
    assert on_disk <= 3 * 1048576 + 65536, f"{on_disk} bytes of logs for a 3 MiB bound"
    assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
    assert "y" * 40 in daemon.call("logs.tail", agent="yes", lines=3)["lines"]


def test_three_thousand_unread_tails_cost_bounded_memory(make_daemon):
    daemon = make_daemon()
    daemon.call("session.start", name="big")
    daemon.call("session.stop")
    daemon.stop()
    db = sqlite3.connect(daemon.state_dir / "sessiond.db")
    message = "x" * 200
    db.executemany("INSERT INTO events (time, kind, message) VALUES (?, 'filler', ?)",
                   [(time.time(), message)] * 10_000)  # fmt: skip
    db.commit()
    db.close()
    daemon.restart()
    pid = daemon.proc.pid
    request = b'{"jsonrpc":"2.0","id":1,"method":"events.tail","params":{"lines":10000}}\n'
    hog = raw_connection(daemon.socket)
    hog.setblocking(False)
    sent, burst = 0, request * 3000
    deadline = time.monotonic() + 20
    while sent < len(burst) and time.monotonic() < deadline:
        try:
            sent += hog.send(burst[sent:])
        except BlockingIOError:
            time.sleep(0.05)  # the daemon stopped reading us: that is the point
    other, buf = raw_connection(daemon.socket), bytearray()
    assert ping_seconds(other, buf) < 5
    assert rss_mib(pid) < 300, f"VmRSS {rss_mib(pid):.0f} MiB"
    assert ping_seconds(other, buf) < 5
    began = time.monotonic()
    assert daemon.stop() == 0  # the reader that never reads does not hold the shutdown
    assert time.monotonic() - began < 10
    hog.close()


def test_a_batch_of_five_thousand_is_refused_whole(daemon):
    sock, buf = raw_connection(daemon.socket), bytearray()
    batch = [{"jsonrpc": "2.0", "id": n, "method": "rpc.discover"} for n in range(5000)]
    sock.sendall(json.dumps(batch).encode() + b"\n")
    reply = read_line(sock, buf)
    assert isinstance(reply, dict) and reply["error"]["code"] == -32600
    assert "at most 1000" in reply["error"]["data"]["message"]
    sock.sendall(json.dumps(batch[:1000]).encode() + b"\n")
    assert len(read_line(sock, buf)) == 1000


def test_tails_are_capped_at_ten_thousand_lines(daemon):
    with pytest.raises(RemoteError) as too_many:
        daemon.call("events.tail", lines=10_001)
    assert too_many.value.code == -32602 and "1 to 10000" in too_many.value.message
    assert isinstance(daemon.call("events.tail", lines=10_000), list)


# -- what cannot be stored ------------------------------------------------------------


def test_a_lone_surrogate_is_refused_and_persistence_goes_on(daemon, short_tmp):
    daemon.call("session.start", name="s")
    for method, params in (("agent.run", {"command": ["/bin/\ud800x"]}),
                           ("session.get", {"name": "\ud800"}),
                           ("session.pause", {"reason": "a\udfffb"})):  # fmt: skip
        with pytest.raises(RemoteError) as refused:
            daemon.call(method, **params)
        assert refused.value.code == -32602, method
        assert "not valid Unicode" in refused.value.message
    daemon.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="after",
                cwd=str(short_tmp))  # fmt: skip
    pid = agents_of(daemon)["after"]["pid"]
    daemon.kill9()
    daemon.restart()
    assert agents_of(daemon)["after"]["pid"] == pid
    assert daemon.call("session.status")["orphans"] == []


def test_metrics_must_be_finite_and_not_negative(daemon, short_tmp):
    daemon.call("session.start", name="m")
    daemon.call("agent.run", command=[sys.executable, "-c", SLEEPER], name="a",
                cwd=str(short_tmp))  # fmt: skip
    pid = agents_of(daemon)["a"]["pid"]
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    token = env[b"SESSIOND_AGENT_TOKEN"].decode()
    sock, buf = raw_connection(daemon.socket), bytearray()

    def report(metrics: str) -> dict:
        params = f'{{"token":"{token}","metrics":{metrics}}}'
        sock.sendall(f'{{"jsonrpc":"2.0","id":1,"method":"agent.report","params":{params}}}\n'
                     .encode())  # fmt: skip
        return read_line(sock, buf)

    assert report('{"big": 1e308}')["result"] == {}
    for bad in ('{"big": 1e308}', '{"neg": -1}', '{"inf": -1e400}', '{"nan": NaN}',
                '{"inf": Infinity}'):  # fmt: skip
        assert report(bad)["error"]["code"] == -32602, bad
    sock.sendall(b'{"jsonrpc":"2.0","id":2,"method":"session.status"}\n')
    line = b""
    while not line.endswith(b"\n"):
        line += sock.recv(65536)
    status = strict_json(line.decode())
    assert status["result"]["session"]["metrics"] == {"big": 1e308}


# -- connections --------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as uid 65534")
def test_one_uid_gets_max_clients_per_user_and_root_is_still_served(make_shared_daemon):
    daemon = make_shared_daemon("max_clients_per_user = 8\n")
    theirs = [connect_as(daemon.socket, 65534, 65534) for _ in range(30)]
    answers = []
    for sock in theirs:
        with contextlib.suppress(BrokenPipeError):  # a refused one was closed after its line
            sock.sendall(PING)
        answers.append(read_line(sock, bytearray()))
    assert sum("result" in a for a in answers) == 8
    refused = [a for a in answers if "error" in a]
    assert len(refused) == 22 and refused[0]["error"]["code"] == -32007
    assert "max_clients_per_user" in refused[0]["error"]["data"]["hint"]
    mine = [raw_connection(daemon.socket) for _ in range(40)]  # root: no limit of its own
    assert all(ping_seconds(sock, bytearray()) < 5 for sock in mine)


def test_idle_connections_are_closed_and_subscribers_kept(make_daemon):
    daemon = make_daemon('[daemon]\nidle_client_timeout = "1s"\n')
    idle = raw_connection(daemon.socket)
    subscriber, sbuf = raw_connection(daemon.socket), bytearray()
    subscriber.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe",'
                       b'"params":{"topics":["events"]}}\n')  # fmt: skip
    assert read_line(subscriber, sbuf)["result"] == {"topics": ["events"]}
    busy, bbuf = raw_connection(daemon.socket), bytearray()
    began = time.monotonic()
    while time.monotonic() - began < 3:
        ping_seconds(busy, bbuf)
        time.sleep(0.3)
    assert idle.recv(100) == b""  # closed by the daemon: EOF
    assert "idle for 1" in daemon.log()
    daemon.call("session.start", name="seen")
    assert read_line(subscriber, sbuf)["params"]["kind"] == "session.starting"


# -- processes ----------------------------------------------------------------------


def _pids_with_cmdline(needle: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"sleep", needle]:
                        found.append(int(entry))
            except OSError:
                continue
    return [pid for pid in found if alive(pid)]


def test_a_process_that_cleared_its_environment_does_not_survive_stop(daemon):
    needle = f"3002.{random.randrange(10**6)}"
    daemon.call("session.start", name="escape")
    script = f"setsid bash -c 'env -i bash -c \"exec sleep {needle}\" &'; sleep 100"
    daemon.call("agent.run", command=["bash", "-c", script], name="escaper", cwd="/")
    escaped = wait_for(lambda: _pids_with_cmdline(needle.encode()), what="the escapee")
    with open(f"/proc/{escaped[0]}/environ", "rb") as f:
        assert b"SESSIOND" not in f.read()  # no marker: only the subreaper finds it
    daemon.call("session.stop")
    wait_for(lambda: not _pids_with_cmdline(needle.encode()), timeout=15, what="it gone")


def test_kill9_in_the_middle_of_a_start_leaves_no_orphan(make_daemon):
    config = "".join(agent(f"a{n}", SLEEPER) for n in range(40))
    config += "[templates.t]\nagents = [" + ", ".join(f'"a{n}"' for n in range(40)) + "]\n"
    daemon = make_daemon(config)
    sock = raw_connection(daemon.socket)
    sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"session.start",'
                 b'"params":{"name":"half","template":"t"}}\n')  # fmt: skip
    wait_for(lambda: marked_processes(daemon), timeout=10, what="the first agent")
    daemon.kill9()
    daemon.restart()
    status = daemon.call("session.status")
    assert status["orphans"] == []
    if status["session"] is None:  # it was still starting: failed, and its agents stopped
        wait_for(lambda: not marked_processes(daemon), timeout=15, what="its agents stopped")
    else:
        listed = {a["pid"] for a in daemon.call("agent.list")}
        assert set(marked_processes(daemon)) <= listed


# -- a full disk ----------------------------------------------------------------------


def test_on_a_full_disk_run_starts_nothing_and_stop_works(make_daemon, tiny_state_dir):
    daemon = make_daemon(start=False)
    daemon.state_dir = tiny_state_dir / "state"
    daemon.start()
    daemon.call("session.start", name="full")
    filler = fill(tiny_state_dir)
    with pytest.raises(RemoteError) as full:
        for n in range(100):  # the WAL may hold a few pages' slack
            daemon.call("agent.run", command=["sleep", "300"], name=f"a{n}", cwd="/")
    assert full.value.code == -32010
    started = {a["name"] for a in daemon.call("agent.list")}
    assert len(marked_processes(daemon)) == len(started)  # the refused one never ran
    stopped = daemon.call("session.stop")
    assert stopped["state"] == "closed"
    wait_for(lambda: not marked_processes(daemon), what="the agents stopped")
    assert daemon.call("session.status")["session"] is None
    filler.unlink()
    wait_for(lambda: "the disk took the records" in daemon.log(), what="the records written")
    daemon.stop()
    db = sqlite3.connect(daemon.state_dir / "sessiond.db")
    assert db.execute("SELECT state FROM sessions WHERE name = 'full'").fetchone()[0] == "closed"


def test_store_keeps_a_bounded_number_of_events_per_session(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(store_module, "EVENTS_KEPT", 50)
    monkeypatch.setattr(store_module, "EVENTS_TRIM_EVERY", 10)
    store = store_module.Store.open(tmp_path)
    with store.transaction():
        for n in range(1000):
            store.add_event(float(n), "s1", "one", kind="session.joined", message="j", data={})
    kept = store.events(10_000, "s1")
    assert 50 <= len(kept) <= 60
    assert kept[-1]["time"] == 999.0


def _keepers_of(daemon) -> list[int]:
    """The log keeper the daemon started: its child running sessiond.logkeeper."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if b"sessiond.daemon.logkeeper" in argv and ppid == daemon.proc.pid:
                found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_log_keeper_starts_with_the_daemon_and_an_idle_one_ends_with_it(daemon):
    # Started before READY, so a first launch does not wait for its interpreter to load.
    (keeper,) = _keepers_of(daemon)
    assert _running(keeper)
    daemon.stop()
    wait_for(lambda: not _running(keeper), what="the keeper with no daemon and no pipe to end")


def test_a_killed_log_keeper_is_replaced_and_the_agent_writes_on(daemon, short_tmp):
    last = run_counter(daemon, short_tmp)
    wait_for(lambda: last() >= 5, what="the counter to print")
    (keeper,) = wait_for(lambda: _keepers_of(daemon), what="the log keeper")
    pid = agents_of(daemon)["counter"]["pid"]
    os.kill(keeper, 9)
    wait_for(lambda: (k := _keepers_of(daemon)) and k != [keeper], what="a new keeper")
    reached = last()
    wait_for(lambda: last() > reached + 20, what="the counter to print through the new keeper")
    assert agents_of(daemon)["counter"]["pid"] == pid  # it never got EPIPE
    assert "the log keeper (pid" in daemon.log()


# A keeper of PROTOCOL 1 that outlived an upgrade: it knows a pipe a `keep` (`stream`),
# fails aloud at a run's pipes in one packet (`streams`), and its `end` has no version.
OLD_KEEPER = """
import json, os, socket, sys
from sessiond.daemon import logkeeper
new = logkeeper.Keeper._keep_run
def keep_run(self, message, fds):
    if "streams" in message or len(fds) > 1:
        raise SystemExit("a packet of PROTOCOL 2")
    new(self, message, fds)
def give(self, conn):
    for fd, pipe in self.pipes.items():
        kept = {"op": "kept", "key": pipe.key, "path": pipe.log.path, "stream": pipe.stream}
        socket.send_fds(conn, [json.dumps(kept).encode()], [fd])
    conn.send(json.dumps({"op": "end", "pid": os.getpid()}).encode())
logkeeper.Keeper._keep_run, logkeeper.Keeper._give = keep_run, give
sys.exit(logkeeper.main())
"""


def test_a_keeper_of_the_older_protocol_is_handed_a_pipe_a_packet(make_daemon, short_tmp):
    daemon = make_daemon(start=False)
    daemon.state_dir.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(daemon.state_dir / "logkeeper.sock"))
    listener.listen(4)
    keeper = subprocess.Popen(
        [sys.executable, "-c", OLD_KEEPER, str(listener.fileno())],
        pass_fds=(listener.fileno(),), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    listener.close()
    try:
        daemon.start()
        last = run_counter(daemon, short_tmp)
        wait_for(lambda: last() >= 5, what="the counter to print through the old keeper")
        assert _keepers_of(daemon) == []  # it was the old keeper, not one of its own
        assert keeper.poll() is None
    finally:
        daemon.stop()
        keeper.wait(timeout=30)  # it ends with the last pipe once the daemon is gone
    assert keeper.returncode == 0, keeper.stderr.read() if keeper.stderr else ""


def test_a_batch_may_not_multiply_the_tail_limit(daemon):
    sock, buf = raw_connection(daemon.socket), bytearray()
    tails = [{"jsonrpc": "2.0", "id": n, "method": "events.tail", "params": {"lines": 10_000}}
             for n in range(100)]  # fmt: skip
    sock.sendall(json.dumps(tails).encode() + b"\n")
    reply = read_line(sock, buf)
    assert isinstance(reply, dict) and reply["error"]["code"] == -32600
    assert "1000000 lines" in reply["error"]["data"]["message"]
    assert ping_seconds(sock, buf) < 5
    sock.sendall(json.dumps(tails[:1]).encode() + b"\n")
    assert len(read_line(sock, buf)) == 1


def test_integers_beyond_64_bits_are_refused(daemon):
    with pytest.raises(RemoteError) as refused:
        daemon.call("session.history", limit=2**70)
    assert refused.value.code == -32602 and "at most 64" in refused.value.message


def _open_files_limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        row = next(line for line in f if line.startswith("Max open files"))
    soft, hard = row.split()[3:5]
    return int(soft), int(hard)


def test_the_daemon_and_its_keeper_raise_their_open_files_limit(make_daemon, short_tmp):
    daemon = make_daemon(prefix=("prlimit", "--nofile=256:4096", "--"))
    assert _open_files_limits(daemon.proc.pid) == (4096, 4096)
    daemon.call("session.start", name="fds")
    run = [sys.executable, "-c", SLEEPER]
    daemon.call("agent.run", command=run, name="a", cwd=str(short_tmp))
    (keeper,) = wait_for(lambda: _keepers_of(daemon), what="the log keeper")
    assert _open_files_limits(keeper) == (4096, 4096)
