"""sessiond at scale: 10, 200 and 1,000 agents, side by side.

`.venv/bin/python bench/scale.py [--quick] [--json] [--sizes 10,200,1000]`, from anywhere.
Stdlib only; reuses agents.py's config, start, restart and call measures. For each size, a
daemon of its own starts the template of that many `/bin/sleep infinity` agents and measures:
session.start to every pid in /proc, session.status and daemon.ping p50 on one connection,
SIGKILL of one agent to its agent.started event, and the daemon's VmRSS. Issue 14's goals:
status and RSS grow at most linearly with the agents, ping and crash → restart not at all;
1,000 agents running in ≤ 1 s, status ≤ 1.2 ms, RSS ≤ 60 MiB. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agents import bench_restart, bench_start, marked, vm_rss, write_config

import bench


def measure(base: Path, n: int, quick: bool) -> dict:
    d = bench.Daemon(base, f"n{n}")
    d.config = base / f"n{n}.toml"
    write_config(d.config, n)
    try:
        d.start()
        assert d.proc is not None
        start = bench_start(d, n, 1 if quick else 3)
        restart = bench_restart(d, 10 if quick else 30)
        rpc = bench.Rpc(d.socket)
        try:
            count = 200 if quick else 1000
            calls = {
                m: bench.bench_rpc(rpc, m, 100, count) for m in ("session.status", "daemon.ping")
            }
        finally:
            rpc.close()
        return {"start_ms": bench.pct(start["procs"], 50),
                "restart_ms": bench.pct(restart["notified"], 50),
                "status_us": calls["session.status"]["p50"], "ping_us": calls["daemon.ping"]["p50"],
                "rss_mib": vm_rss(d.proc.pid)}  # fmt: skip
    finally:
        d.stop()
        for pid in marked(base):  # only agents of this run's daemons carry this marker
            os.kill(pid, signal.SIGKILL)


def run(args: argparse.Namespace, base: Path) -> dict:
    sizes = [int(x) for x in args.sizes.split(",")]
    res: dict = {"machine": {**bench.machine(), "sessiond": bench.package()}, "quick": args.quick}
    res["sizes"] = {str(n): measure(base, n, args.quick) for n in sizes}
    return res


ROWS = (  # label, key, format, goal
    ("session.start → all pids in /proc, p50", "start_ms", "{:.0f} ms", "1,000 in ≤ 1 s"),
    ("session.status p50, one connection", "status_us", "{:.0f} µs", "≤ 1.2 ms at 1,000"),
    ("daemon.ping p50", "ping_us", "{:.0f} µs", "flat"),
    ("SIGKILL → agent.started event, p50", "restart_ms", "{:.1f} ms", "flat"),
    ("daemon VmRSS", "rss_mib", "{:.1f} MiB", "≤ 60 MiB at 1,000"),
)


def report(res: dict) -> None:
    bench.print_head(res)
    sizes = res["sizes"]
    head = ("agents", *sizes, "goal")
    rows = [(label, *(fmt.format(sizes[n][key]) for n in sizes), goal)
            for label, key, fmt, goal in ROWS]  # fmt: skip
    bench.print_table(rows, head)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="10,200,1000", help="agents per daemon, comma-separated")


def main() -> int:
    return bench.main_for(run, report, "fewer runs and calls", "sds.", __doc__, options)


if __name__ == "__main__":
    sys.exit(main())
