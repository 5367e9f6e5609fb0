"""sessiond agent benchmarks: start/stop 200 agents, restart latency, status, RSS, idle CPU.

`.venv/bin/python bench/agents.py [--quick] [--json]`, from anywhere. Stdlib only; reuses
bench.py's daemon, client and machine helpers. Agents are `/bin/sleep infinity`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench

SLEEP = '["/bin/sleep", "infinity"]'
HZ = os.sysconf("SC_CLK_TCK")
NAME = "agents"
RES = f"±{500 // HZ} ms"  # /proc start times count 1/HZ s ticks


def write_config(path: Path, n: int) -> None:
    """`victim` (min_uptime 0.5s) and n-1 plain sleepers, all in template `bulk`."""
    names = ["victim"] + [f"s{i:03d}" for i in range(1, n)]
    lines = ["[agents.victim]", f"command = {SLEEP}", 'min_uptime = "0.5s"']
    for name in names[1:]:
        lines += [f"[agents.{name}]", f"command = {SLEEP}"]
    lines += ["[templates.bulk]", f"agents = {json.dumps(names)}", f"max_agents = {n}"]
    lines.append("error_threshold = 1000000")  # SIGKILLed victims count as errors
    path.write_text("\n".join(lines) + "\n")


def call(rpc: bench.Rpc, method: str, params: dict | None = None) -> object:
    """One request; notifications that arrive before the reply are skipped."""
    rpc.sock.sendall(rpc.line(method, params))
    while "id" not in (reply := json.loads(rpc.reader.readline())):
        pass
    if "result" not in reply:
        raise RuntimeError(f"{method}: {reply}")
    return reply["result"]


def proc_start(pid: int) -> float:
    """The process's start time (seconds since boot, 1/HZ resolution) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / HZ  # field 22 overall


def marked(base: Path) -> list[int]:
    """Processes carrying the agent marker of a daemon of this run (state dir under base)."""
    needle = f"SESSIOND_INSTANCE={base}/".encode()
    found = []
    for p in Path("/proc").iterdir():
        try:
            env = (p / "environ").read_bytes() if p.name.isdigit() else b""
        except OSError:
            continue
        if any(e.startswith(needle) for e in env.split(b"\0")):
            found.append(int(p.name))
    return found


def start_session(rpc: bench.Rpc, n: int) -> tuple[float, float, float]:
    """(s to reply, s to all pids in /proc, s from send to last /proc start time)."""
    boot0, t0 = time.clock_gettime(time.CLOCK_BOOTTIME), time.perf_counter()
    sess = call(rpc, "session.start", {"name": NAME, "template": "bulk"})
    t1 = time.perf_counter()
    assert isinstance(sess, dict)
    pids = [a["pid"] for a in sess["agents"]]
    while not all(p and os.path.exists(f"/proc/{p}") for p in pids):
        if time.perf_counter() - t1 > 10:
            raise RuntimeError("agents' pids did not appear")
    t2 = time.perf_counter()
    if len(pids) != n or any(a["state"] != "running" for a in sess["agents"]):
        raise RuntimeError(f"session.start: {len(pids)} agents, not all running")
    last = bounded(max(proc_start(p) for p in pids) - boot0, t1 - t0)
    return t1 - t0, t2 - t0, last


def stop_session(rpc: bench.Rpc) -> float:
    t0 = time.perf_counter()
    call(rpc, "session.stop", {"name": NAME})
    return time.perf_counter() - t0


def bench_start(d: bench.Daemon, n: int, runs: int) -> dict:
    """`runs` starts; every session but the last is stopped again (it stays for the rest)."""
    reply, procs, last, stops = [], [], [], []
    rpc = bench.Rpc(d.socket)
    try:
        for i in range(runs):
            r, p, s = start_session(rpc, n)
            reply.append(r * 1000), procs.append(p * 1000), last.append(s * 1000)
            if i < runs - 1:
                stops.append(stop_session(rpc) * 1000)
    finally:
        rpc.close()
    return {"reply": reply, "procs": procs, "last_start": last, "stops": stops}


def wait_started(sub: bench.Rpc, agent: str) -> dict:
    while True:
        msg = json.loads(sub.reader.readline())
        ev = msg.get("params") or {}
        what = (msg.get("method"), ev.get("kind"), (ev.get("data") or {}).get("agent"))
        if what == ("event", "agent.started", agent):
            return ev


def victim_pid(rpc: bench.Rpc) -> int:
    agents = call(rpc, "agent.list")
    assert isinstance(agents, list)
    return next(a["pid"] for a in agents if a["name"] == "victim")


def bench_restart(d: bench.Daemon, kills: int) -> dict:
    """SIGKILL the victim; time until the agent.started event, by three clocks."""
    notified, event_ts, proc_ts = [], [], []
    sub = bench.Rpc(d.socket)
    try:
        pid = victim_pid(sub)
        call(sub, "subscribe", {"topics": ["events"]})
        for _ in range(kills):
            time.sleep(0.6)  # past min_uptime: restarted at once
            wall0, boot0 = time.time(), time.clock_gettime(time.CLOCK_BOOTTIME)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            ev = wait_started(sub, "victim")
            notified.append(late := time.perf_counter() - t0)
            pid = ev["data"]["pid"]
            event_ts.append(dt.datetime.fromisoformat(ev["time"]).timestamp() - wall0)
            proc_ts.append(bounded(proc_start(pid) - boot0, late))
    finally:
        sub.close()
    ms = {"notified": notified, "event_time": event_ts, "proc_start": proc_ts}
    return {k: [x * 1000 for x in v] for k, v in ms.items()}


def bounded(tick: float, late: float) -> float:
    """Midpoint of what we know of the start: in [tick, tick + 1/HZ), and in [0, late]."""
    lo, hi = max(0.0, tick), min(late, tick + 1 / HZ)
    return (lo + hi) / 2


def bench_calls(d: bench.Daemon, count: int) -> dict:
    rpc = bench.Rpc(d.socket)
    try:
        return {m: bench.bench_rpc(rpc, m, 200, count) for m in ("session.status", "agent.list")}
    finally:
        rpc.close()


def vm_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def bench_stop(d: bench.Daemon, base: Path) -> dict:
    rpc = bench.Rpc(d.socket)
    try:
        ms = stop_session(rpc) * 1000
    finally:
        rpc.close()
    return {"ms": ms, "left": len(marked(base))}


def drain_notify(d: bench.Daemon) -> None:
    """Keep reading NOTIFY_SOCKET: the daemon blocks in sendto() once 10 datagrams
    (net.unix.max_dgram_qlen) are queued, i.e. after a few session starts and stops."""

    def loop() -> None:
        while True:
            try:
                d.notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:  # closed by d.stop()
                return

    threading.Thread(target=loop, daemon=True).start()


def run(args: argparse.Namespace, base: Path) -> dict:
    q = args.quick
    n = 50 if q else 200
    res: dict = {"machine": {**bench.machine(), "sessiond": bench.package()}, "quick": q, "n": n}
    d = bench.Daemon(base, "a")
    d.config = base / "agents.toml"
    write_config(d.config, n)
    try:
        d.start()
        drain_notify(d)
        assert d.proc is not None
        res["start"] = bench_start(d, n, 2 if q else 5)
        res["restart"] = bench_restart(d, 20 if q else 50)
        res["calls"] = bench_calls(d, 300 if q else 1000)
        res["rss_mib"] = vm_rss(d.proc.pid)
        res["idle"] = bench.bench_idle(d.proc.pid, 3 if q else 10)
        res["stop"] = bench_stop(d, base)
    finally:
        d.stop()
        for pid in marked(base):  # only agents of this run's daemon carry this marker
            os.kill(pid, signal.SIGKILL)
    return res


def p50_90(values: list[float], unit: str = "ms") -> str:
    return f"{bench.pct(values, 50):.1f} / {bench.pct(values, 90):.1f} {unit}"


# fmt: off
def table(res: dict) -> list[tuple]:
    row, pct, n = bench.row, bench.pct, res["n"]
    st, rs, idle, stop = res["start"], res["restart"], res["idle"], res["stop"]
    rows = [
        row(f"session.start {n} agents: reply p50 (runs)",
            f"{pct(st['reply'], 50):.1f} ms ({len(st['reply'])})", "< 1000 ms",
            pct(st["reply"], 50) < 1000),
        row("  all pids in /proc p50", f"{pct(st['procs'], 50):.1f} ms", "< 1000 ms",
            pct(st["procs"], 50) < 1000),
        row(f"  last agent's /proc start p50 ({RES})", f"{pct(st['last_start'], 50):.0f} ms"),
        row(f"restart after SIGKILL p50 / p90 ({len(rs['notified'])})",
            p50_90(rs["notified"]), "p50 < 10 ms", pct(rs["notified"], 50) < 10),
        row("  event's own time (1 ms res) p50 / p90", p50_90(rs["event_time"])),
        row(f"  new pid's /proc start ({RES}) p50 / p90", p50_90(rs["proc_start"]),
            "p50 < 10 ms", pct(rs["proc_start"], 50) < 10),
    ]
    for m, r in res["calls"].items():
        rows.append(row(f"{m} ({n} agents) p50 / p90",
                        f"{r['p50'] / 1000:.2f} / {r['p90'] / 1000:.2f} ms", "p50 < 2 ms",
                        r["p50"] < 2000))
    rows += [
        row(f"daemon VmRSS, {n} agents", f"{res['rss_mib']:.1f} MiB", "< 40 MiB",
            res["rss_mib"] < 40),
        row(f"idle CPU % of one core ({idle['threads']} threads)", f"{idle['cpu']:.3f}",
            "< 0.1", idle["cpu"] < 0.1),
        row("idle context switches/s", f"{idle['wakeups']:.2f}"),
        row(f"session.stop {n} agents (earlier runs p50)",
            f"{stop['ms']:.1f} ms ({pct(st['stops'], 50):.1f} ms)" if st["stops"]
            else f"{stop['ms']:.1f} ms"),
        row("agent processes left after stop", str(stop["left"]), "0", stop["left"] == 0),
    ]
    return rows
# fmt: on


def report(res: dict) -> None:
    bench.print_head(res)
    bench.print_table(table(res))


def main() -> int:
    return bench.main_for(run, report, "50 agents, fewer runs", "sda.", __doc__)


if __name__ == "__main__":
    sys.exit(main())
