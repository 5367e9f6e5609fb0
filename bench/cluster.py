"""sessiond on a real etcd cluster: start, takeover, quorum loss, idle cost of the lease.

`.venv/bin/python bench/cluster.py [--quick] [--json]`, from anywhere, with etcd installed
(`./dev test` installs it as root). Starts a 3-member etcd on 127.0.0.1 (tests/etcdcluster.py)
and daemons in a short temp dir, each with `lease_ttl = "3s"`; all are stopped by pid.

  * uncontended `session.start` p50, etcd vs local (each start is followed by a stop);
  * takeover: the holder's daemon SIGKILLed, a `start --wait` on another host returns
    (median of 5; expected about lease_ttl + 0.5 s, the lease's expiry and one watch);
  * quorum loss: two members SIGSTOPped, until the holder's last agent is gone: from the
    SIGSTOP, and from the last renewal (dated by the session's failed event, written half a
    lease_ttl after it), which must stay under 0.8 x lease_ttl;
  * idle: CPU and wake-ups (context switches, all threads, gRPC's included) of a daemon that
    holds a session and renews its lease every lease_ttl/3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from etcdcluster import EtcdCluster  # noqa: E402

import bench  # noqa: E402

TTL = 3.0
SLEEP = '["/bin/sleep", "infinity"]'


def daemon(base: Path, tag: str, endpoints: list[str] | None) -> bench.Daemon:
    d = bench.Daemon(base, tag)
    d.config = base / f"{tag}.toml"
    lines = ["[agents.a]", f"command = {SLEEP}", "[templates.t]", 'agents = ["a"]']
    if endpoints is not None:
        lines += ["[cluster]", 'backend = "etcd"', f"endpoints = {json.dumps(endpoints)}",
                  'name = "bench"', f'host = "{tag}"', f'lease_ttl = "{TTL:g}s"']  # fmt: skip
    d.config.write_text("\n".join(lines) + "\n")
    d.start()
    return d


def call(d: bench.Daemon, method: str, params: dict | None = None) -> dict:
    rpc = bench.Rpc(d.socket, timeout=30)
    try:
        rpc.sock.sendall(rpc.line(method, params))
        while True:
            reply = json.loads(rpc.reader.readline())
            if "id" in reply:
                return reply
    finally:
        rpc.close()


def wait_reachable(d: bench.Daemon) -> None:
    deadline = time.monotonic() + 10
    while not call(d, "session.status")["result"]["daemon"]["cluster"]["reachable"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{d.socket}: etcd never reachable")
        time.sleep(0.05)


def starts(d: bench.Daemon, runs: int) -> float:
    took = []
    for i in range(runs):
        t0 = time.perf_counter()
        reply = call(d, "session.start", {"name": f"s{i}"})
        took.append(time.perf_counter() - t0)
        if "error" in reply:
            raise RuntimeError(f"start: {reply['error']}")
        call(d, "session.stop", {"name": f"s{i}"})
    return statistics.median(took) * 1000


def wait_for_turn(d: bench.Daemon, params: dict, got: dict) -> None:
    got.update(call(d, "session.start", params))


def takeover(base: Path, endpoints: list[str], runs: int) -> list[float]:
    waiter, took = daemon(base, "waiter", endpoints), []
    try:
        wait_reachable(waiter)
        for i in range(runs):
            holder = daemon(base, f"holder{i}", endpoints)
            try:
                wait_reachable(holder)
                if "error" in (held := call(holder, "session.start", {"name": f"held{i}"})):
                    raise RuntimeError(f"holder's start: {held['error']}")
                got: dict = {}
                params = {"name": f"next{i}", "wait": True}
                queued = threading.Thread(target=wait_for_turn, args=(waiter, params, got))
                queued.start()
                time.sleep(0.5)  # in line, behind the holder
                assert holder.proc is not None
                t0 = time.perf_counter()
                holder.proc.send_signal(signal.SIGKILL)
                queued.join(30)
                took.append(time.perf_counter() - t0)
                if "result" not in got:
                    raise RuntimeError(f"takeover: {got}")
                call(waiter, "session.stop", {"name": f"next{i}"})
            finally:
                holder.stop()
    finally:
        waiter.stop()
    return took


def quorum_loss(base: Path, cluster: EtcdCluster) -> dict[str, float]:
    d = daemon(base, "q", cluster.endpoints)
    try:
        wait_reachable(d)
        pids = [a["pid"] for a in call(d, "session.start", {"name": "q", "template": "t"})
                ["result"]["agents"]]  # fmt: skip
        time.sleep(TTL)  # a few renewals
        t0 = time.perf_counter()
        cluster.stop(1)
        cluster.stop(2)
        while any(os.path.exists(f"/proc/{p}") for p in pids):
            if time.perf_counter() - t0 > 3 * TTL:
                raise RuntimeError("agents still there after 3 x lease_ttl")
            time.sleep(0.005)
        gone, gone_wall = time.perf_counter() - t0, time.time()
        # The lease gives up half a lease_ttl after its last renewal, and the session's
        # failed event is written then: that dates the last renewal to the millisecond.
        events = call(d, "events.tail", {"lines": 20})["result"]
        failed = next(e for e in reversed(events) if e["kind"] == "session.failed")
        at = dt.datetime.fromisoformat(failed["time"].replace("Z", "+00:00")).timestamp()
        since_renewal = gone_wall - at + TTL / 2
    finally:
        cluster.cont(1)
        cluster.cont(2)
        d.stop()
    cluster.wait_healthy()
    return {"from_stop": gone, "since_renewal": since_renewal}


def idle(base: Path, endpoints: list[str], seconds: float) -> dict:
    d = daemon(base, "idle", endpoints)
    try:
        wait_reachable(d)
        call(d, "session.start", {"name": "idle", "template": "t"})
        assert d.proc is not None
        return bench.bench_idle(d.proc.pid, seconds)
    finally:
        d.stop()


def run(quick: bool) -> dict:
    base = Path(tempfile.mkdtemp(prefix="sdc", dir="/tmp"))
    res: dict = {"machine": bench.machine(), "lease_ttl": TTL}
    with EtcdCluster(base / "etcd") as cluster:
        local, etcd = daemon(base, "local", None), daemon(base, "etcd", cluster.endpoints)
        try:
            wait_reachable(etcd)
            res["start_local_ms"] = starts(local, 10 if quick else 30)
            res["start_etcd_ms"] = starts(etcd, 10 if quick else 30)
        finally:
            local.stop()
            etcd.stop()
        res["takeover_s"] = takeover(base, cluster.endpoints, 2 if quick else 5)
        res["quorum_loss_s"] = quorum_loss(base, cluster)
        res["idle"] = idle(base, cluster.endpoints, 5 if quick else 20)
    return res


def report(r: dict) -> None:
    ttl = r["lease_ttl"]
    take, loss = r["takeover_s"], r["quorum_loss_s"]
    rows = [
        ("session.start p50, local lock", f"{r['start_local_ms']:.1f} ms", ""),
        ("session.start p50, etcd lock", f"{r['start_etcd_ms']:.1f} ms", ""),
        (
            f"takeover after SIGKILL, median of {len(take)}",
            f"{statistics.median(take):.2f} s",
            f"≈ {ttl + 0.5:g} s",
        ),
        ("  each", " ".join(f"{t:.2f}" for t in take), ""),
        ("quorum loss -> last agent gone, from SIGSTOP", f"{loss['from_stop']:.2f} s", ""),
        ("  since the last renewal", f"{loss['since_renewal']:.2f} s", f"< {0.8 * ttl:.1f} s"),
        ("idle CPU % of one core, lease renewing", f"{r['idle']['cpu']:.3f}", ""),
        (
            "idle wake-ups/s (all threads)",
            f"{r['idle']['wakeups']:.1f}",
            f"renewals: {3 / ttl:.1f}/s",
        ),
        ("threads", str(r["idle"]["threads"]), ""),
    ]
    print(f"sessiond on etcd, lease_ttl {ttl:g}s; {r['machine']['nproc']} cores, "
          f"{r['machine']['cpu']}")  # fmt: skip
    for label, value, goal in rows:
        print(f"  {label:46} {value:>14}  {goal}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = run(args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
