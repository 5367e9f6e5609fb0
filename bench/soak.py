"""sessiond soak test: mixed load, agent kills, daemon crashes, abusers, then invariants.

`.venv/bin/python bench/soak.py [--minutes N] [--seed S] [--keep]`, from anywhere. Stdlib only;
reuses bench.py's daemon and client, agents.py's marker scan and abuse.py's abusers: a client
that pipelines events.tail and never reads, a pinger, and (as root only: the state dir is then
on a size-limited tmpfs that the script mounts) a `yes` agent in every session. Prints figures
and PASS/FAIL per invariant; exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abuse
import agents

import bench

# The reporter agent: appends to REPORTS/<session id> "s" before each agent.report, then "a" once
# a reply with `result` is read ("e<code>" for an error); so acked <= ticks <= sent must hold.
REPORTER = """\
import json, os, socket, sys, time
env = os.environ
fd = os.open(os.path.join(sys.argv[1], env["SESSIOND_SESSION_ID"]),
             os.O_WRONLY | os.O_CREAT | os.O_APPEND)
req = {"jsonrpc": "2.0", "id": 1, "method": "agent.report",
       "params": {"token": env["SESSIOND_AGENT_TOKEN"], "metrics": {"ticks": 1}}}
while True:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(env["SESSIOND_SOCKET"])
            f = s.makefile("rb")
            while True:
                os.write(fd, b"s\\n")
                s.sendall(json.dumps(req).encode() + b"\\n")
                if (rep := json.loads(f.readline() or "null")) is None:
                    break
                os.write(fd, b"a\\n" if "result" in rep else b"e%d\\n" % rep["error"]["code"])
                time.sleep(0.05)
    except (OSError, ValueError):
        pass
    time.sleep(0.2)
"""
CRASHER = "import random, sys, time; time.sleep(random.uniform(0.2, 2)); sys.exit(1)"
ACTIONS = {"session.status": 30, "session.get": 10, "session.touch": 20, "session.join": 15,
           "session.start": 15, "session.stop": 1.2}  # fmt: skip
RSS_BOUND_MIB, FDS_BOUND = 100, 128  # the daemon idles at ~35 MiB and ~20 fds


def write_config(path: Path, reports: Path, flood: bool) -> None:
    crew: dict[str, dict] = {
        f"sleep{i}": {"command": ["/bin/sleep", "infinity"]} for i in (1, 2, 3)
    }
    crew["reporter"] = {"command": [bench.PY, "-c", REPORTER, str(reports)]}
    crew["crasher"] = {"command": [bench.PY, "-c", CRASHER], "backoff_initial": "0.5s",
                       "backoff_max": "4s", "max_restarts": 10000}  # fmt: skip
    if flood:
        crew["flood"] = {"command": abuse.YES}
    lines = ["[daemon]", 'on_shutdown = "stop"', abuse.daemon_config()]
    for name, keys in crew.items():  # JSON strings, numbers and lists are TOML too
        lines.append(f"[agents.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in {**keys, "stop_timeout": "2s"}.items()]
    lines += ["[templates.soak]", f"agents = {json.dumps(list(crew))}"]
    lines.append("error_threshold = 1000000")  # kills and crashes count as errors
    path.write_text("\n".join(lines) + "\n")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.kills = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.started: list[str] = []  # names of sessions started
        self.restarts: dict[tuple[str, str], int] = {}

    def seen(self, agent_list: list) -> None:
        with self.lock:
            for a in agent_list:
                key = (a["session"], a["name"])
                self.restarts[key] = max(self.restarts.get(key, 0), a.get("restarts") or 0)


class Conn:
    """A client that reconnects with backoff while the daemon is down (up to `patience` s)."""

    def __init__(self, path: Path, st: Stats, stop: threading.Event, patience: float = 60) -> None:
        self.path, self.st, self.stop, self.patience = path, st, stop, patience
        self.rpc: bench.Rpc | None = None

    def close(self) -> None:
        if self.rpc is not None:
            self.rpc.close()
            self.rpc = None

    def call(self, method: str, params: dict | None = None) -> tuple[object, str | None]:
        delay, give_up = 0.05, time.monotonic() + self.patience
        while self.rpc is None:
            if self.stop.is_set() or time.monotonic() > give_up:
                return None, "GAVE_UP"
            try:
                self.rpc = bench.Rpc(self.path)
                self.rpc.sock.settimeout(30)
            except OSError:
                time.sleep(delay)
                delay = min(2.0, delay * 2)
        try:
            self.rpc.sock.sendall(self.rpc.line(method, params))
            while "id" not in (msg := json.loads(self.rpc.reader.readline() or b"null") or {}):
                if not msg:
                    raise ConnectionError("EOF")
        except (OSError, ValueError):
            self.close()
            msg = {"error": {"data": {"name": "DISCONNECTED"}}}
        err = msg.get("error")
        code = None if err is None else (err.get("data") or {}).get("name") or str(err["code"])
        with self.st.lock:
            self.st.requests += 1
            if code:
                self.st.errors[code] += 1
        return msg.get("result"), code


def client(i: int, d: bench.Daemon, st: Stats, stop: threading.Event, seed: int) -> None:
    rng, conn, n = random.Random(seed * 100 + i), Conn(d.socket, st, stop), 0
    methods, weights = list(ACTIONS), list(ACTIONS.values())
    while not stop.is_set():
        method, params = rng.choices(methods, weights)[0], {}
        if method == "session.start":
            n += 1
            params = {"name": f"soak{i}-{n}", "template": "soak"}
        elif method == "session.get":
            params = {"name": rng.choice(st.started or ["none-yet"])}
        res, _ = conn.call(method, params)
        if method == "session.start" and isinstance(res, dict):
            with st.lock:
                st.started.append(res["name"])
        stop.wait(rng.uniform(0.05, 0.25))
    conn.close()


def killer(d: bench.Daemon, st: Stats, stop: threading.Event, seed: int, base: Path) -> None:
    rng, conn = random.Random(seed * 100 + 99), Conn(d.socket, st, stop)
    while not stop.wait(rng.uniform(1, 3)):
        found, _ = conn.call("agent.list")
        if not isinstance(found, list):
            continue
        st.seen(found)
        ours = set(agents.marked(base))
        pids = [a["pid"] for a in found if a.get("state") == "running" and a.get("pid") in ours]
        with contextlib.suppress(ProcessLookupError), st.lock:
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                st.kills += 1
    conn.close()


class Peaks:
    """Every 0.5 s: the daemon's VmRSS and fds (peak per pid), and the flood agent's log files
    (peak over every session's: bytes on disk, st_size)."""

    def __init__(self, d: bench.Daemon) -> None:
        self.d = d
        self.daemon: dict[int, tuple[float, int]] = collections.defaultdict(lambda: (0.0, 0))
        self.logs = (0, 0)

    def loop(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(OSError):  # between two daemons
                pid = self.d.proc.pid  # type: ignore[union-attr]
                rss, fds = bench.sample(pid)
                self.daemon[pid] = max(self.daemon[pid][0], rss), max(self.daemon[pid][1], fds)
            self.scan_logs()

    def scan_logs(self) -> None:
        for folder in (self.d.state / "logs").glob("*"):
            disk, size = abuse.log_usage(folder, "flood")
            self.logs = max(self.logs[0], disk), max(self.logs[1], size)


def fresh_ping(d: bench.Daemon) -> float | None:
    """ms for a daemon.ping on a new connection; None if not answered within 1 s."""
    try:
        return abuse.ping_ms(d, 1)
    except abuse.Gone:
        return None


def drain(d: bench.Daemon, ready: threading.Event, done: threading.Event) -> None:
    """Read NOTIFY_SOCKET all the time: sessiond blocks in sendto() once its queue is full."""
    while not done.is_set():
        try:
            if b"READY=1" in d.notify.recv(4096).split(b"\n"):
                ready.set()
        except TimeoutError:
            pass
        except OSError:
            return


def start(d: bench.Daemon, ready: threading.Event, kill: signal.Signals | None = None) -> bool:
    """(Stop the running daemon with `kill`, then) start it and wait for READY=1.
    False if the old one was still there 30 s after `kill` (it is then SIGKILLed)."""
    exited = True
    if kill is not None and d.proc is not None:
        d.proc.send_signal(kill)
        try:
            d.proc.wait(30)
        except subprocess.TimeoutExpired:
            exited = False
            d.proc.kill()
            d.proc.wait()
    ready.clear()
    d._ready = lambda: ready.wait(0.2)  # type: ignore[method-assign] -- drain() reads the socket
    d.start()
    return exited


def ts(value: str | None) -> float | None:
    return None if value is None else dt.datetime.fromisoformat(value).timestamp()


def check_history(hist: list[dict]) -> tuple[bool, str]:
    spans = sorted((ts(s["created_at"]), ts(s["closed_at"]), s["name"]) for s in hist)
    bad = [f"{a[2]} [{a[0]:.3f}, {a[1]}] overlaps {b[2]} from {b[0]:.3f}"
           for a, b in itertools.pairwise(spans) if a[1] is None or a[1] > b[0]]  # fmt: skip
    live = [s["name"] for s in hist if s["closed_at"] is None]
    if len(live) > 1:
        bad.append(f"{len(live)} sessions without closed_at: {live}")
    return not bad, "; ".join(bad[:5]) or f"{len(spans)} sessions, no overlap"


def check_reports(reports: Path, hist: list[dict]) -> tuple[bool, str, collections.Counter]:
    by_id, bad, tally = {s["id"]: s for s in hist}, [], collections.Counter()
    for f in sorted(reports.iterdir()):
        lines = collections.Counter(f.read_text().split())
        a, s = lines["a"], lines["s"]
        tally += lines
        sess = by_id.get(f.name)
        ticks = (sess.get("metrics") or {}).get("ticks", 0) if sess else None
        if ticks is None or not a <= ticks <= s:
            name = sess["name"] if sess else "not in history"
            bad.append(f"{f.name[:8]} ({name}): ticks={ticks} acked={a} sent={s}")
    n = len(list(reports.iterdir()))
    return not bad, "; ".join(bad[:5]) or f"{n} sessions: acked <= ticks <= sent", tally


def run(args: argparse.Namespace, base: Path, fs: Path | None) -> bool:
    """`fs`: a size-limited tmpfs for the state dir, and then a `yes` agent in every session."""
    (reports := base / "reports").mkdir()
    d = bench.Daemon(base, "s")
    d.config = base / "soak.toml"
    if fs is not None:
        d.state = fs / "s.state"
    write_config(d.config, reports, fs is not None)
    peaks = Peaks(d)
    st, stop, rng = Stats(), threading.Event(), random.Random(args.seed)
    lives: list[dict] = []
    stuck: list[int] = []  # daemons still there 30 s after their signal
    checks: list[tuple[str, bool, str]] = []
    plan = ["kill -9"] * 3 + ["SIGTERM"]
    rng.shuffle(plan)
    total, t0 = args.minutes * 60, time.monotonic()

    def life(until: float, ended: str, final: bool = False) -> None:
        assert d.proc is not None
        pid = d.proc.pid
        time.sleep(2)  # warm-up
        rss0, fd0 = bench.sample(pid)
        ping0 = fresh_ping(d)
        peek = Conn(d.socket, Stats(), threading.Event(), 5)
        listed, status = peek.call("agent.list")[0], peek.call("session.status")[0]
        peek.close()
        seen = (len(listed) if isinstance(listed, list) else "?",
                len(status["orphans"]) if isinstance(status, dict) else "?",
                len(agents.marked(base)))  # fmt: skip
        time.sleep(max(0.0, until - time.monotonic()))
        if final:
            stop.set()
            for t in threads:
                t.join(60)
            ctl = Conn(d.socket, st, threading.Event())
            _, code = ctl.call("session.stop")
            checks.append(("3a no agent process after final session.stop",
                           not (left := agents.marked(base)), f"stop: {code or 'ok'}, "
                           f"marked pids {left or 'none'}"))  # fmt: skip
            ctl.close()
            time.sleep(1)
        rss1, fd1 = bench.sample(pid)
        lives.append(dict(pid=pid, ended=ended, rss=(rss0, rss1), fds=(fd0, fd1), seen=seen,
                          pings=(ping0, fresh_ping(d)),
                          peak=(max(peaks.daemon[pid][0], rss0, rss1),
                                max(peaks.daemon[pid][1], fd0, fd1))))  # fmt: skip

    ready, drained = threading.Event(), threading.Event()
    drainer = threading.Thread(target=drain, args=(d, ready, drained))
    drainer.start()
    try:
        start(d, ready)
        threads = [threading.Thread(target=client, args=(i, d, st, stop, args.seed))
                   for i in range(3)]  # fmt: skip
        threads.append(threading.Thread(target=killer, args=(d, st, stop, args.seed, base)))
        threads.append(threading.Thread(target=peaks.loop, args=(stop,)))
        pinger = abuse.Pinger(d.socket, every=0.1, halt=stop)
        greedy = abuse.NonReader(d.socket, abuse.TAIL, halt=stop)  # never reads
        threads += [pinger, greedy]
        for t in threads:
            t.start()
        for k, kind in enumerate(plan, 1):
            life(t0 + total * k / (len(plan) + 1), kind)
            if not start(d, ready, signal.SIGKILL if kind == "kill -9" else signal.SIGTERM):
                stuck.append(lives[-1]["pid"])
        life(t0 + total, "final SIGTERM", final=True)
        duration = time.monotonic() - t0
        ctl = Conn(d.socket, st, threading.Event())
        hist, _ = ctl.call("session.history", {"limit": 1000})
        ctl.close()
        hist = hist if isinstance(hist, list) else []
        for s in hist:
            st.seen([{**a, "session": s["name"]} for a in s.get("agents") or []])
        d.stop()
        left = agents.marked(base)
        checks.append(("3b no marked process after daemon exit", not left, f"{left or 'none'}"))
        ok, why = check_history(hist)
        checks.append(("1a history: session intervals do not overlap", ok, why))
        uri = f"file:{d.state / 'sessiond.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            (live,) = db.execute(
                "SELECT COUNT(*) FROM sessions WHERE state NOT IN ('closed','expired','failed')"
            ).fetchone()
            integrity = db.execute("PRAGMA integrity_check").fetchall()
            states = dict(db.execute("SELECT state, COUNT(*) FROM sessions GROUP BY state"))
        checks.append(("1b store: live sessions <= 1", live <= 1, f"{live} live; {states}"))
        ok, why, tally = check_reports(reports, hist)
        checks.append(("2  acknowledged reports counted exactly once", ok, why))
        last = lives[-1]
        grow_rss, grow_fd = last["rss"][1] - last["rss"][0], last["fds"][1] - last["fds"][0]
        checks.append(("4  last lifetime: RSS +<=30 MiB, fds +<=20 (no client)",
                       grow_rss <= 30 and grow_fd <= 20,
                       f"RSS {grow_rss:+.1f} MiB, fds {grow_fd:+d}"))  # fmt: skip
        checks.append(("5  PRAGMA integrity_check", integrity == [("ok",)], str(integrity)))
        worst = max(lv["peak"][0] for lv in lives), max(lv["peak"][1] for lv in lives)
        checks.append((f"6  under abuse: daemon RSS <= {RSS_BOUND_MIB} MiB, fds <= {FDS_BOUND}",
                       worst[0] <= RSS_BOUND_MIB and worst[1] <= FDS_BOUND,
                       f"peaks (0.5 s samples) {worst[0]:.1f} MiB, {worst[1]} fds"))  # fmt: skip
        pinged = pinger.stop()
        late = [lv["pid"] for lv in lives if None in lv["pings"]]
        checks.append(("8  pings answered: none timed out, fresh ones in 1 s in every lifetime",
                       not late and not pinged["timeouts"],
                       f"{pinged['timeouts']} timed out (> 5 s); lifetimes with a fresh ping "
                       f"unanswered in 1 s: {late or 'none'}"))  # fmt: skip
        checks.append(("9  every daemon exited within 30 s of its signal", not stuck,
                       f"SIGKILLed after 30 s: {stuck or 'none'}"))  # fmt: skip
        if fs is not None:
            peaks.scan_logs()
            cap = abuse.LOG_MAX_BYTES * abuse.LOG_FILES + abuse.SLACK
            checks.append(("7  flood agent logs <= log_max_bytes x log_files + 64 KiB",
                           max(peaks.logs) <= cap,
                           f"peak over sessions {peaks.logs[0] / 2**20:.2f} MiB on disk, "
                           f"{peaks.logs[1] / 2**20:.2f} MiB st_size; "
                           f"bound {cap / 2**20:.2f} MiB"))  # fmt: skip
    finally:
        stop.set()
        drained.set()
        drainer.join()
        d.stop()
        if fs is not None and args.keep:  # the tmpfs goes: keep the store, not the logs
            shutil.copytree(d.state, base / "s.state", ignore=shutil.ignore_patterns("logs"))
        for pid in agents.marked(base):  # only agents of this run's daemon
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    print(f"sessiond            {bench.package()}")
    print(f"duration            {duration:.1f} s (seed {args.seed})")
    print(f"requests            {st.requests}")
    errs = ", ".join(f"{k} {v}" for k, v in st.errors.most_common()) or "none"
    print(f"errors by code      {errs}")
    print(f"sessions started    {len(st.started)} (in history: {len(hist)}; by state {states})")
    print(f"daemon restarts     {len(plan)} ({', '.join(plan)})")
    print(f"agent kills         {st.kills} (SIGKILL)")
    print(f"agent restarts seen {sum(st.restarts.values())}")
    rejected = ", ".join(f"{k[1:]} {v}" for k, v in tally.items() if k.startswith("e"))
    print(f"reports acked       {tally['a']} of {tally['s']} sent (rejected: {rejected or 'none'})")
    print(f"non-reading client  {greedy.sent} events.tail sent, {greedy.connections} connections")
    print(f"pinger (every 0.1s) {abuse.pings(pinged)}")
    flooding = f"`yes` in every session, state dir on a {args.tmpfs_mib} MiB tmpfs"
    print(f"flooding agent      {flooding if fs else 'none: not root (no tmpfs for its logs)'}")
    print("daemon lifetimes    pid     ended by       RSS MiB start->end  fds      peak RSS, fds"
          "  fresh ping ms  after warm-up: agents listed / orphans / marked pids")  # fmt: skip
    for lv in lives:
        r, f, seen = lv["rss"], lv["fds"], " / ".join(map(str, lv["seen"]))
        pk, pg = lv["peak"], " / ".join("-" if v is None else f"{v:.1f}" for v in lv["pings"])
        print(f"{'':20}{lv['pid']:<7} {lv['ended']:<14} {r[0]:6.1f} -> {r[1]:6.1f}    "
              f"{f[0]:3d} -> {f[1]:3d}  {pk[0]:6.1f}, {pk[1]:3d}    {pg:<13}  {seen}")  # fmt: skip
    print()
    for name, ok, why in sorted(checks):
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {why}")
    return all(ok for _, ok, _ in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2, help="load duration (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, store)")
    parser.add_argument("--tmpfs-mib", type=int, default=512,
                        help="size of the state dir's tmpfs, as root (default 512)")  # fmt: skip
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sds.", dir="/tmp"))
    flood = os.geteuid() == 0  # the flood's logs go to a tmpfs, which needs root to mount
    if not flood:
        print("soak: not root, so no flooding agent (its logs need a size-limited tmpfs)")
    try:
        with bench.tmpfs(base / "fs", args.tmpfs_mib) if flood else contextlib.nullcontext() as fs:
            ok = run(args, base, fs)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
