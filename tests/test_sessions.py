"""Sessions end to end: the real daemon, the real sessionc, real sockets."""

from __future__ import annotations

import threading

import pytest

from harness import raw_connection, read_line, wait_for
from sessiond.cli.client import RemoteError


def state(daemon):
    session = daemon.call("session.status")["session"]
    return session["state"] if session else None


def test_first_session_with_sessionc(daemon):
    started = daemon.sessionc_json("start", "nightly")
    assert started["name"] == "nightly"
    assert started["state"] == "active"
    assert started["owner"]["uid"] == 0 or started["owner"]["uid"] > 0

    shown = daemon.sessionc("status")
    assert shown.returncode == 0
    assert "nightly" in shown.stdout

    again = daemon.sessionc("start", "other")
    assert again.returncode == 4
    assert "already active" in again.stderr
    assert "hint: join it with 'sessionc join nightly'" in again.stderr

    assert daemon.sessionc("join", "nightly").returncode == 0
    stopped = daemon.sessionc_json("stop", "nightly")
    assert stopped["state"] == "closed"
    assert stopped["close_reason"].startswith("stopped by ")

    history = daemon.sessionc_json("history")
    assert [s["name"] for s in history] == ["nightly"]
    assert daemon.sessionc("status").returncode == 0
    assert daemon.call("session.status")["session"] is None


def test_generated_name_and_invalid_name(daemon):
    started = daemon.call("session.start")
    assert started["name"].startswith("s-") and len(started["name"]) == 10
    daemon.call("session.stop")
    with pytest.raises(RemoteError) as bad:
        daemon.call("session.start", name="no spaces allowed")
    assert bad.value.code == -32602
    assert "invalid session name" in bad.value.message
    done = daemon.sessionc("start", "bad/name")
    assert done.returncode != 0
    assert "hint:" in done.stderr


def test_twenty_clients_race_start(daemon):
    sockets = [raw_connection(daemon.socket) for _ in range(20)]
    barrier = threading.Barrier(20)
    replies: list[dict] = [{}] * 20

    def race(i: int) -> None:
        request = (
            f'{{"jsonrpc":"2.0","id":{i},"method":"session.start",'
            f'"params":{{"name":"racer-{i}"}}}}\n'
        )
        barrier.wait()
        sockets[i].sendall(request.encode())
        replies[i] = read_line(sockets[i], bytearray())

    threads = [threading.Thread(target=race, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [r for r in replies if "result" in r]
    losers = [r for r in replies if "error" in r]
    assert len(winners) == 1
    assert len(losers) == 19
    assert {r["error"]["code"] for r in losers} == {-32001}
    assert all(r["error"]["data"]["name"] == "SESSION_ACTIVE" for r in losers)
    winner = winners[0]["result"]["name"]
    assert all(f"'{winner}'" in r["error"]["message"] for r in losers)
    assert daemon.call("session.status")["session"]["name"] == winner
    for s in sockets:
        s.close()


def test_wait_queue_hands_over_in_arrival_order(daemon):
    daemon.call("session.start", name="first")
    waiters = []
    for i in range(3):
        sock = raw_connection(daemon.socket, timeout=30)
        request = (
            f'{{"jsonrpc":"2.0","id":1,"method":"session.start",'
            f'"params":{{"name":"waiter-{i}","wait":true}}}}\n'
        )
        sock.sendall(request.encode())
        wait_for(lambda n=i + 1: len(daemon.call("session.status")["queue"]) == n,
                 what=f"{i + 1} waiters queued")  # fmt: skip
        waiters.append(sock)
    queue = daemon.call("session.status")["queue"]
    assert [w["name"] for w in queue] == ["waiter-0", "waiter-1", "waiter-2"]

    for i, sock in enumerate(waiters):
        daemon.call("session.stop")
        reply = read_line(sock, bytearray())
        assert reply["result"]["name"] == f"waiter-{i}"
        assert reply["result"]["state"] == "active"
        assert daemon.call("session.status")["session"]["name"] == f"waiter-{i}"
        sock.close()


def test_wait_timeout(daemon):
    daemon.call("session.start", name="busy")
    done = daemon.sessionc("start", "late", "--wait=1s")
    assert done.returncode == 7
    assert "hint:" in done.stderr
    assert daemon.call("session.status")["queue"] == []
    assert daemon.call("session.status")["session"]["name"] == "busy"


def test_waiter_that_hangs_up_loses_its_place(daemon):
    daemon.call("session.start", name="busy")
    gone = raw_connection(daemon.socket)
    gone.sendall(b'{"jsonrpc":"2.0","id":1,"method":"session.start",'
                 b'"params":{"name":"gone","wait":true}}\n')  # fmt: skip
    wait_for(lambda: daemon.call("session.status")["queue"], what="a queued waiter")
    gone.close()
    wait_for(lambda: daemon.call("session.status")["queue"] == [], what="the waiter to leave")
    daemon.call("session.stop")
    assert daemon.call("session.status")["session"] is None


def test_idle_then_active_then_expired(daemon):
    daemon.call("session.start", name="short", idle_after="1s", timeout="3s")
    wait_for(lambda: state(daemon) == "idle", timeout=5, what="idle")
    health = daemon.call("session.health")
    assert health["status"] == "idle" and health["healthy"] is True
    # Read-only calls are not activity; touch is.
    assert state(daemon) == "idle"
    assert daemon.call("session.touch")["state"] == "active"
    wait_for(lambda: state(daemon) is None, timeout=8, what="expiry")
    expired = daemon.call("session.get", name="short")
    assert expired["state"] == "expired"
    assert "no activity for 3s" in expired["close_reason"]
    health = daemon.call("session.health", name="short")
    assert health["status"] == "expired"
    assert health["recovery"] == ["sessionc start short --from short"]
    assert daemon.sessionc("health", "short").returncode == 1
    kinds = [e["kind"] for e in daemon.call("events.tail", lines=50)]
    # idle, touched back to active, idle again after idle_after, then expired.
    assert kinds[-4:] == ["session.idle", "session.active", "session.idle", "session.expired"]
    # The lock is free again.
    assert daemon.call("session.start", name="next")["state"] == "active"


def test_max_duration_closes_with_reason(daemon):
    daemon.call("session.start", name="bounded", max_duration="1s")
    wait_for(lambda: state(daemon) is None, timeout=6, what="max_duration")
    closed = daemon.call("session.get", name="bounded")
    assert closed["state"] == "closed"
    assert "max_duration" in closed["close_reason"]


def test_pause_resume_and_invalid_state(daemon):
    daemon.call("session.start", name="p")
    paused = daemon.call("session.pause", reason="lunch")
    assert paused["state"] == "paused" and paused["pause_reason"] == "lunch"
    with pytest.raises(RemoteError) as again:
        daemon.call("session.pause")
    assert again.value.code == -32005
    assert "resume it with 'sessionc resume p'" in again.value.hint
    assert daemon.call("session.health")["status"] == "paused"
    assert daemon.sessionc_json("resume")["state"] == "active"
    with pytest.raises(RemoteError) as reconnect:
        daemon.call("session.reconnect")
    assert reconnect.value.code == -32005


def test_name_mismatch_and_no_session(daemon):
    done = daemon.sessionc("stop")
    assert done.returncode == 5
    assert "no session is active" in done.stderr
    daemon.call("session.start", name="real")
    done = daemon.sessionc("join", "other")
    assert done.returncode == 4
    assert "'real' is" in done.stderr
    health = daemon.sessionc("health", "nothing-here")
    assert health.returncode == 5


def test_kill9_then_restart_keeps_the_live_session(daemon):
    started = daemon.call("session.start", name="durable", tty="pts/9")
    daemon.call("session.pause", reason="before the crash")
    daemon.kill9()
    daemon.restart()
    after = daemon.call("session.status")["session"]
    assert after["id"] == started["id"]
    assert after["owner"] == started["owner"]
    assert after["state"] == "paused"
    assert after["pause_reason"] == "before the crash"
    with pytest.raises(RemoteError) as busy:
        daemon.call("session.start", name="intruder")
    assert busy.value.code == -32001


def test_from_records_the_parent(daemon):
    first = daemon.call("session.start", name="chain")
    daemon.call("session.stop")
    second = daemon.sessionc_json("start", "chain2", "--from", "chain")
    assert second["parent"] == first["id"]
    with pytest.raises(RemoteError) as missing:
        daemon.call("session.start", name="x", **{"from": "never-was"})
    assert missing.value.code == -32002


def test_events_subscription_pushes_notifications(daemon):
    sock = raw_connection(daemon.socket)
    buffer = bytearray()
    sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"topics":["events"]}}\n')
    assert read_line(sock, buffer)["result"] == {"topics": ["events"]}
    daemon.call("session.start", name="watched")
    kinds = []
    while "session.started" not in kinds:
        note = read_line(sock, buffer)
        assert note["method"] == "event"
        kinds.append(note["params"]["kind"])
    assert kinds == ["session.starting", "session.started"]
    sock.close()


def test_history_and_export(daemon):
    for name in ("h1", "h2", "h3"):
        daemon.call("session.start", name=name)
        daemon.call("session.stop")
    names = [s["name"] for s in daemon.call("session.history", limit=2)]
    assert names == ["h3", "h2"]
    exported = daemon.call("session.export", name="h2")
    assert exported["session"]["name"] == "h2"
    assert [e["kind"] for e in exported["events"]] == [
        "session.starting", "session.started", "session.stopping", "session.closed",
    ]  # fmt: skip
    out = daemon.root / "h2.json"
    assert daemon.sessionc("export", "h2", "-o", str(out)).returncode == 0
    assert '"h2"' in out.read_text()


def test_session_overrides_are_validated(daemon):
    with pytest.raises(RemoteError) as bad:
        daemon.call("session.start", name="x", timeout="soon")
    assert bad.value.code == -32602
    assert "timeout" in bad.value.message
    started = daemon.sessionc_json("start", "x", "--set", "error_threshold=3", "--timeout", "45m")
    assert started["settings"]["error_threshold"] == 3
    assert started["settings"]["timeout"] == 2700.0
