"""The daemon as systemd and an operator see it: notify, logs, lock, signals, config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from harness import DaemonProcess, raw_connection, read_line, wait_for

PING = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}\n'


def test_ready_status_and_stopping_notifications(daemon):
    assert "READY=1" in daemon.notices
    assert "STATUS=no active session" in daemon.notices
    daemon.call("session.start", name="nightly")
    wait_for(lambda: daemon.read_notices(0.2) or
             "STATUS=session nightly active, 0 agents, 0 participants" in daemon.notices,
             what="a STATUS line naming the session")  # fmt: skip
    daemon.call("agent.run", command=["sleep", "60"], cwd="/")
    wait_for(lambda: daemon.read_notices(0.2) or
             "STATUS=session nightly active, 1 agent, 0 participants" in daemon.notices,
             what="a STATUS line counting the new agent")  # fmt: skip
    daemon.signal(signal.SIGTERM)
    daemon.wait_notice("STOPPING=1")
    assert daemon.proc.wait(10) == 0
    assert not daemon.socket.exists()


def test_watchdog_pings_when_asked(make_daemon):
    daemon = make_daemon(env={"WATCHDOG_USEC": "400000"})
    daemon.wait_notice("WATCHDOG=1", timeout=5)
    daemon.notices.remove("WATCHDOG=1")
    daemon.wait_notice("WATCHDOG=1", timeout=5)


def test_hang_switch_blocks_the_loop_only_when_set(make_daemon):
    daemon = make_daemon(env={"WATCHDOG_USEC": "400000", "SESSIOND_TEST_HANG": "1"})
    daemon.wait_notice("WATCHDOG=1", timeout=5)
    daemon.signal(signal.SIGUSR2)
    wait_for(lambda: "blocking the event loop" in daemon.log(), what="the hang warning")
    daemon.notices.clear()
    daemon.read_notices(2.0)
    assert "WATCHDOG=1" not in daemon.notices, "a hung loop must stop the watchdog pings"
    daemon.kill9()


def test_log_lines_carry_syslog_priorities(daemon):
    daemon.call("session.start", name="logged")
    daemon.stop()
    lines = daemon.log().splitlines()
    assert lines and all(line[:3] in {"<2>", "<3>", "<4>", "<5>", "<6>", "<7>"} for line in lines)
    assert "<5>session logged started by " in "\n".join(lines)


def test_second_daemon_on_same_state_dir_refuses_and_leaves_the_socket(daemon):
    inode = os.stat(daemon.socket).st_ino
    second = DaemonProcess(daemon.root, daemon.config_path.read_text())
    second.log_path = daemon.root / "second.log"
    second.start(wait=False)
    assert second.proc.wait(10) == 1
    assert f"another sessiond (pid {daemon.proc.pid})" in second.log()
    assert "hint:" in second.log()
    assert os.stat(daemon.socket).st_ino == inode
    assert daemon.call("daemon.ping")["pid"] == daemon.proc.pid


def test_second_daemon_on_same_socket_refuses(daemon, make_daemon):
    other = make_daemon(start=False, name="other")
    other.socket = daemon.socket
    other.start(wait=False)
    assert other.proc.wait(10) == 1
    assert "another sessiond is answering" in other.log()
    assert daemon.call("daemon.ping")["pid"] == daemon.proc.pid


def test_stale_socket_of_a_dead_daemon_is_replaced(daemon):
    daemon.kill9()
    assert daemon.socket.exists()
    daemon.restart()
    assert daemon.call("daemon.ping")["pid"] == daemon.proc.pid


def test_check_config_lists_every_problem(short_tmp):
    bad = short_tmp / "bad.toml"
    bad.write_text('[daemon]\nmax_clients = 0\nsocket_grup = "x"\n'
                   '[session]\ntimeout = "soon"\n')  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "sessiond", "--check-config", "--config",
                           str(bad)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0
    assert "3 problems" in done.stderr
    for key in ("daemon.max_clients", "daemon.socket_grup", "session.timeout"):
        assert f"{bad}: {key}" in done.stderr
    good = short_tmp / "good.toml"
    good.write_text('[session]\ntimeout = "45m"\n')
    done = subprocess.run([sys.executable, "-m", "sessiond", "--check-config", "--config",
                           str(good)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_bad_config_at_start_is_refused_with_the_problem(make_daemon):
    daemon = make_daemon("[session]\nerror_threshold = -1\n", start=False)
    daemon.start(wait=False)
    assert daemon.proc.wait(10) == 1
    assert "session.error_threshold" in daemon.log()


def test_environment_overrides_session_defaults(make_daemon):
    daemon = make_daemon(env={"SESSIOND_TIMEOUT": "45m", "SESSIOND_ERROR_THRESHOLD": "3"})
    settings = daemon.call("session.start", name="env")["settings"]
    assert settings["timeout"] == 2700.0
    assert settings["error_threshold"] == 3


def test_sighup_reloads_and_ignores_a_broken_config(daemon):
    held, buf = raw_connection(daemon.socket), bytearray()
    daemon.config_path.write_text('[session]\ntimeout = "never"\n')
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in daemon.log(), what="the refused reload in the log")
    assert "session.timeout" in daemon.log()
    assert daemon.call("session.start", name="a")["settings"]["timeout"] == 1800.0
    daemon.call("session.stop")
    daemon.config_path.write_text('[session]\ntimeout = "2h"\n')
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in daemon.log(), what="the reload in the log")
    assert daemon.call("session.start", name="b")["settings"]["timeout"] == 7200.0
    daemon.wait_notice("RELOADING=1")
    assert held.sendall(PING) is None and read_line(held, buf)["id"] == 1
    # The daemon's own limits follow a reload too: idle connections go after 1s from now on.
    daemon.config_path.write_text('[daemon]\nidle_client_timeout = "1s"\n')
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.log().count("configuration reloaded") == 2, what="the second reload")
    idle = raw_connection(daemon.socket)
    assert idle.recv(100) == b""  # closed by the daemon
    assert held.sendall(PING) is None and read_line(held, buf)["id"] == 1


def test_socket_passed_by_systemd(short_tmp):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = short_tmp / "activated.sock"
    listener.bind(str(path))
    listener.listen(16)
    os.set_inheritable(listener.fileno(), True)
    # systemd hands the socket over as fd 3 and names the pid it is meant for; exec keeps the pid.
    handover = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid());"
        " os.environ['LISTEN_FDS'] = '1'; os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", handover, str(listener.fileno()), "-m", "sessiond", "--user",
         "--state-dir", str(short_tmp / "state"), "--socket", str(short_tmp / "unused.sock")],
        pass_fds=[listener.fileno()],
    )  # fmt: skip
    listener.close()
    try:
        sock = raw_connection(path)
        sock.sendall(PING)
        assert read_line(sock, bytearray())["result"]["pid"] == proc.pid
        assert not (short_tmp / "unused.sock").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert path.exists(), "a socket systemd owns must not be removed by the daemon"
