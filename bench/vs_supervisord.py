"""sessiond against supervisord 4.3, side by side, on the same machine and interpreter.

`.venv/bin/python bench/vs_supervisord.py [--quick] [--json] [--agents N]`, from anywhere.
It builds supervisor 4.3.0 in a venv of its own, made by the interpreter the project's venv
was made from (pip from the package index), then alternates the two daemons, round after
round, on the same work: N `/bin/sleep infinity` programs (default 200) and one victim.
Each figure is measured the same way for both:

- exec → first answered request: a fresh daemon, asked `daemon.ping` / `supervisor.getState`
  until one is answered;
- ping and status p50 on one kept connection: `daemon.ping` / `supervisor.getState`, and
  `session.status` / `supervisor.getAllProcessInfo` (XML-RPC over supervisord's Unix socket);
- N agents from the call (`session.start` / `supervisor.startAllProcesses`) to N children of
  the daemon in /proc (`/proc/PID/task/*/children`, read in a tight loop), once the daemon
  has been idle for SETTLE seconds after its first answer, as a daemon a user starts a
  session on has: what goes on loading after that answer (sessiond's log keeper, started
  before READY, is a Python of its own) is start-up, not part of a launch;
- kill -9 of the victim → a new child of the daemon in /proc;
- the daemon's VmRSS with N agents running;
- `sessionc status` / `supervisorctl status`, the whole process.

supervisord runs with `startsecs=0` (its default waits 1 s before it calls a program
running) and `autorestart=true`. Each round also measures the floor of what the machine
allows, the same way: a minimal asyncio NDJSON server's ping and its VmRSS (the bare
asyncio a daemon starts from), encoding the status reply received once, one process
spawned from Python (Popen of /bin/sleep until it is the server's child in /proc: what a
restart or each of N starts costs at least), and `python -c 'import json, socket'`.
Prints figures, the ratios and the floors; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agents import marked, vm_rss, write_config

import bench

SUPERVISOR = "supervisor==4.3.0"
DEADLINE = 10.0  # seconds any wait may take before the run fails
START_PAUSE = 0.001  # between two looks while N agents start: the daemon needs the core
SETTLE = 0.5  # seconds between a daemon's first answer and the start of its N agents


def children(pid: int) -> set[int]:
    """The daemon's children, as the kernel lists them."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(int(x) for x in f.read().split())
    return found


def until(condition: Callable[[], object], what: str, pause: float = 0.0) -> float:
    """Seconds until `condition()` holds, checked every `pause` (0: in a tight loop, which
    takes a core of the two); fails after DEADLINE."""
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > DEADLINE:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(pause)
    return time.perf_counter() - t0


def supervisor_bin(base: Path) -> Path:
    venv = base / "supervisor-venv"
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check", SUPERVISOR]  # fmt: skip
    subprocess.run(pip, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return venv / "bin"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's Unix socket, the connection kept between calls."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        if self._connection[1] is None:
            self._connection = host, UnixConnection(self.path)
        return self._connection[1]


class Supervisord:
    def __init__(self, base: Path, bin_dir: Path, n: int) -> None:
        self.bin, self.socket = bin_dir, base / "sv.sock"
        self.conf = base / "supervisord.conf"
        names = ["victim"] + [f"s{i:03d}" for i in range(1, n)]
        programs = "".join(f"[program:{name}]\ncommand=/bin/sleep infinity\nautostart=false\n"
                           "autorestart=true\nstartsecs=0\n" for name in names)  # fmt: skip
        self.conf.write_text(
            f"[unix_http_server]\nfile={self.socket}\n[supervisord]\nnodaemon=true\n"
            f"logfile={base}/sv.log\npidfile={base}/sv.pid\nchildlogdir={base}\n"
            "minfds=4096\n[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
            "supervisor.rpcinterface:make_main_rpcinterface\n"
            f"[supervisorctl]\nserverurl=unix://{self.socket}\n{programs}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Exec supervisord; seconds to its first answered request."""
        self.socket.unlink(missing_ok=True)
        t0 = time.perf_counter()
        argv = [str(self.bin / "supervisord"), "-c", str(self.conf)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(self._answers, "supervisord to answer")
        return time.perf_counter() - t0

    def _answers(self) -> bool:
        try:
            return bool(self.proxy().supervisor.getState())
        except OSError:
            return False

    def proxy(self) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy("http://localhost", UnixTransport(str(self.socket)))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def p50_us(call: Callable[[], object], count: int) -> float:
    for _ in range(count // 10):
        call()
    times = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return bench.pct(times, 50) / 1000


def kill_to_child(pid: int, victim: Callable[[], int], kills: int) -> float:
    """kill -9 of the victim → a new child of `pid`; p50 in ms."""
    times = []
    for _ in range(kills):
        target = victim()
        before = children(pid)
        os.kill(target, signal.SIGKILL)
        new = until(lambda before=before: children(pid) - before, "the victim's new process")
        times.append(new * 1000)
        time.sleep(0.6)  # past min_uptime: the next kill is not a crash loop
    return bench.pct(times, 50)


def whole(argv: list[str], runs: int) -> float:
    bench.wall(argv, None)
    return bench.pct([bench.wall(argv, None) for _ in range(runs)], 50) * 1000


def round_sessiond(base: Path, n: int, count: int, kills: int, tag: str) -> dict[str, float]:
    d = bench.Daemon(base, tag)
    d.config = base / "agents.toml"
    write_config(d.config, n)
    t0 = time.perf_counter()
    d.start()
    rpc = bench.Rpc(d.socket)
    try:
        assert d.proc is not None
        pid, res = d.proc.pid, {"ready_ms": (time.perf_counter() - t0) * 1000}
        time.sleep(SETTLE)
        t0 = time.perf_counter()
        rpc.sock.sendall(rpc.line("session.start", {"name": "bulk", "template": "bulk"}))
        until(lambda: len(children(pid)) >= n + 1, "every agent", START_PAUSE)  # and the keeper
        res["start_ms"] = (time.perf_counter() - t0) * 1000
        rpc.reader.readline()
        res["ping_us"] = bench.bench_rpc(rpc, "daemon.ping", count // 10, count)["p50"]
        res["status_us"] = bench.bench_rpc(rpc, "session.status", count // 10, count)["p50"]
        rpc.sock.sendall(rpc.line("session.status"))
        status = json.loads(rpc.reader.readline())
        res["status_kib"] = len(json.dumps(status, separators=(",", ":"))) / 1024
        res["floor"] = round_floor(base, status, count, kills)
        res["rss_mib"] = vm_rss(pid)

        def victim() -> int:
            rpc.sock.sendall(rpc.line("agent.list"))
            agents = json.loads(rpc.reader.readline())["result"]
            return next(a["pid"] for a in agents if a["name"] == "victim" and a["pid"])

        res["kill_ms"] = kill_to_child(pid, victim, kills)
        res["cli_ms"] = whole([bench.PY, bench.SESSIONC, "--socket", str(d.socket), "status"], 5)
        return res
    finally:
        rpc.close()
        d.stop()
        for pid in marked(base):
            os.kill(pid, signal.SIGKILL)


# The least a JSON-RPC server on asyncio does: one line in, one line out.
FLOOR_SERVER = """
import asyncio, json, sys
class Line(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\\n" in self.buf:
            line, self.buf = self.buf.split(b"\\n", 1)
            ident = json.loads(line)["id"]
            reply = {"jsonrpc": "2.0", "result": {"pong": True}, "id": ident}
            self.transport.write(json.dumps(reply).encode() + b"\\n")
async def main():
    await asyncio.get_running_loop().create_unix_server(Line, sys.argv[1])
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def round_floor(base: Path, status: object, count: int, kills: int) -> dict[str, float]:
    path = base / "floor.sock"
    path.unlink(missing_ok=True)
    server = subprocess.Popen([bench.PY, "-c", FLOOR_SERVER, str(path)], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        rpc = bench.Rpc(path)
        res = {"ping_us": bench.bench_rpc(rpc, "daemon.ping", count // 10, count)["p50"]}
        rpc.close()
        res["rss_mib"] = vm_rss(server.pid)
        res["status_us"] = p50_us(lambda: json.dumps(status, separators=(",", ":")), count)
        res["kill_ms"] = bench.pct([spawn_ms() for _ in range(kills)], 50)
        res["cli_ms"] = whole([bench.PY, "-c", "import json, socket"], 5)
        return res
    finally:
        server.kill()
        server.wait()


def spawn_ms() -> float:
    t0 = time.perf_counter()
    child = subprocess.Popen(["/bin/sleep", "infinity"])
    until(lambda: child.pid in children(os.getpid()), "the spawned process")
    took = (time.perf_counter() - t0) * 1000
    child.kill()
    child.wait()
    return took


def round_supervisord(sv: Supervisord, n: int, count: int, kills: int) -> dict[str, float]:
    res = {"ready_ms": sv.start() * 1000}
    try:
        assert sv.proc is not None
        pid, proxy = sv.proc.pid, sv.proxy()
        time.sleep(SETTLE)
        t0 = time.perf_counter()
        proxy.supervisor.startAllProcesses(False)
        until(lambda: len(children(pid)) >= n, "every program", START_PAUSE)
        res["start_ms"] = (time.perf_counter() - t0) * 1000
        res["ping_us"] = p50_us(proxy.supervisor.getState, count)
        res["status_us"] = p50_us(proxy.supervisor.getAllProcessInfo, count)
        res["rss_mib"] = vm_rss(pid)

        def victim() -> int:
            until(lambda: proxy.supervisor.getProcessInfo("victim")["pid"], "the victim")
            return int(proxy.supervisor.getProcessInfo("victim")["pid"])

        res["kill_ms"] = kill_to_child(pid, victim, kills)
        res["cli_ms"] = whole([str(sv.bin / "supervisorctl"), "-c", str(sv.conf), "status"], 5)
        return res
    finally:
        sv.stop()


def run(args: argparse.Namespace, base: Path) -> dict:
    n, rounds = args.agents, 1 if args.quick else 3
    count, kills = (300, 5) if args.quick else (1000, 20)
    sv = Supervisord(base, supervisor_bin(base), n)
    res: dict = {"machine": {**bench.machine(), "sessiond": bench.package()}, "quick": args.quick,
                 "n": n, "supervisor": SUPERVISOR, "sessiond": [], "supervisord": []}  # fmt: skip
    for i in range(rounds):  # alternating, so that the machine's moods fall on both
        res["sessiond"].append(round_sessiond(base, n, count, kills, f"r{i}"))
        res["supervisord"].append(round_supervisord(sv, n, count, kills))
    return res


ROWS = (  # label, key, format
    ("session.status / getAllProcessInfo p50", "status_us", "{:.0f} µs"),
    ("daemon.ping / getState p50", "ping_us", "{:.0f} µs"),
    ("kill -9 → new process exists p50", "kill_ms", "{:.1f} ms"),
    ("start → all agents running", "start_ms", "{:.0f} ms"),
    ("daemon VmRSS", "rss_mib", "{:.1f} MiB"),
    ("exec → first answered request", "ready_ms", "{:.0f} ms"),
    ("sessionc status / supervisorctl status", "cli_ms", "{:.1f} ms"),
)


def floor(res: dict, key: str, fmt: str) -> str:
    """The machine's floor for a row, from the floor rounds: start is N spawns."""
    rounds = [r["floor"] for r in res["sessiond"]]
    if key == "start_ms":
        return fmt.format(bench.pct([r["kill_ms"] for r in rounds], 50) * res["n"]) + " (N spawns)"
    return fmt.format(bench.pct([r[key] for r in rounds], 50)) if key in rounds[0] else "—"


def report(res: dict) -> None:
    bench.print_head(res, f"against   {res['supervisor']}, {len(res['sessiond'])} rounds")
    rows = []
    for label, key, fmt in ROWS:
        ours = bench.pct([r[key] for r in res["sessiond"]], 50)
        theirs = bench.pct([r[key] for r in res["supervisord"]], 50)
        rows.append((f"{label} ({res['n']} agents)" if key in ("status_us", "start_ms", "rss_mib")
                     else label, fmt.format(ours), fmt.format(theirs),
                     f"{theirs / ours:.2f} x", floor(res, key, fmt)))  # fmt: skip
    bench.print_table(rows, ("figure (median of the rounds)", "sessiond", "supervisord",
                             "supervisord / sessiond", "floor"))  # fmt: skip
    kib = bench.pct([r["status_kib"] for r in res["sessiond"]], 50)
    print(
        f"\nfloor: a minimal asyncio NDJSON server (ping, VmRSS), encoding the {kib:.0f} KiB"
        " status reply once, one Popen of /bin/sleep until it is a child in /proc (kill -9"
        " → new process; start: N of them), python -c 'import json, socket'"
    )


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=int, default=200, help="agents (programs) in each")


def main() -> int:
    return bench.main_for(run, report, "one round, fewer calls", "sdv.", __doc__, options)


if __name__ == "__main__":
    sys.exit(main())
