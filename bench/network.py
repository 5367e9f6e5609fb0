"""sessiond network benchmarks: how fast a lost default route stops the agents that need it.

`.venv/bin/python bench/network.py [--quick] [--json]`, as root (it makes a network
namespace with a veth pair and runs the daemon inside it). Measures, from the `ip route`
command to the effect seen from outside: route deleted -> agent in state T and session
`suspended`; route added (network_grace 0) -> agent running and session `active`; and
the daemon's CPU for a burst of 1000 route events; the daemon's RSS before and after the
first agent that needs the network (pyroute2 is loaded only then), and its idle wakeups
while it watches the network.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agents import call, vm_rss

import bench

NAME = "network"


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def session_state(rpc: bench.Rpc) -> str:
    return call(rpc, "session.status")["session"]["state"]


def timed(action: Callable[[], None], done: Callable[[], bool]) -> float:
    """Milliseconds from just before `action` until `done()` (checked every 0.5 ms)."""
    t0 = time.perf_counter()
    action()
    while not done():
        if time.perf_counter() - t0 > 10:
            raise RuntimeError("no effect within 10 s")
        time.sleep(0.0005)
    return (time.perf_counter() - t0) * 1000


def figures(values: list[float]) -> dict[str, float]:
    return {"p50": bench.pct(values, 50), "p90": bench.pct(values, 90), "max": max(values)}


def cpu_ms(pid: int) -> float:
    return bench.proc_sample(pid)[1] * 1000 / os.sysconf("SC_CLK_TCK")


def bench_burst(ns: str, pid: int, count: int) -> dict[str, float]:
    """The daemon's CPU for `count` routes added in one go, a burst of as many events."""
    batch = "".join(f"route add 10.{100 + i // 250}.{i % 250}.0/24 via 10.77.0.2\n"
                    for i in range(count))  # fmt: skip
    before = cpu_ms(pid)
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch.encode(), check=True)
    time.sleep(2)  # the events are taken in as they come; this is the time to let them
    return {"routes": count, "cpu_ms": cpu_ms(pid) - before}


def run(args: argparse.Namespace, base: Path) -> dict:
    if os.geteuid() != 0:
        raise SystemExit("bench/network.py needs root: it creates a network namespace")
    ns = f"sdb-{uuid.uuid4().hex[:8]}"

    def ip(*argv: str) -> None:
        subprocess.run(["ip", "-n", ns, *argv], check=True)

    subprocess.run(["ip", "netns", "add", ns], check=True)
    d = bench.Daemon(base, "n", prefix=("ip", "netns", "exec", ns))
    d.config.write_text('[daemon]\nnetwork_grace = "0s"\n')
    try:
        ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        for link in ("lo", "v0", "v1"):
            ip("link", "set", link, "up")
        ip("addr", "add", "10.77.0.1/24", "dev", "v0")
        route = ("default", "via", "10.77.0.2", "dev", "v0")
        ip("route", "add", *route)
        d.start()
        assert d.proc is not None
        rpc = bench.Rpc(d.socket)
        call(rpc, "session.start", {"name": "net"})
        res: dict = {"machine": {**bench.machine(), "sessiond": bench.package()}}
        rss_before = vm_rss(d.proc.pid)
        pid = call(rpc, "agent.run", {"command": ["/bin/sleep", "infinity"],
                                      "needs_network": True, "cwd": "/"})["pid"]  # fmt: skip

        def stopped() -> bool:
            return proc_state(pid) == "T" and session_state(rpc) == "suspended"

        def running() -> bool:
            return proc_state(pid) != "T" and session_state(rpc) == "active"

        down, up = [], []
        for _ in range(5 if args.quick else 20):
            down.append(timed(lambda: ip("route", "del", "default"), stopped))
            up.append(timed(lambda: ip("route", "add", *route), running))
        res["down_ms"], res["up_ms"] = figures(down), figures(up)
        watching = vm_rss(d.proc.pid)
        res["burst"] = bench_burst(ns, d.proc.pid, 1000)
        res["rss_mib"] = {"before": rss_before, "watching": watching,
                          "after_burst": vm_rss(d.proc.pid)}  # fmt: skip
        rpc.close()
        res["idle"] = bench.bench_idle(d.proc.pid, 3 if args.quick else 10)
    finally:
        d.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return res


def report(res: dict) -> None:
    for key, value in res["machine"].items():
        print(f"{key:<9} {value}")
    print()
    for key, label in (
        ("down_ms", "route deleted -> agent T, session suspended"),
        ("up_ms", "route added -> agent running, session active (grace 0)"),
    ):
        r = res[key]
        print(f"{label}: p50 {r['p50']:.1f} / p90 {r['p90']:.1f} / max {r['max']:.1f} ms")
    burst = res["burst"]
    print(f"{burst['routes']} routes added at once: {burst['cpu_ms']:.0f} ms of daemon CPU")
    rss, idle = res["rss_mib"], res["idle"]
    print(
        f"daemon RSS: {rss['before']:.1f} MiB before the first needs_network agent, "
        f"{rss['watching']:.1f} MiB watching the network (pyroute2 loaded), "
        f"{rss['after_burst']:.1f} MiB after the burst"
    )
    print(f"idle while watching: {idle['wakeups']:.2f} wakeups/s, CPU {idle['cpu']:.3f}%")


def main() -> int:
    return bench.main_for(run, report, "5 rounds, a 3 s idle sample", "sdn.", __doc__)


if __name__ == "__main__":
    sys.exit(main())
