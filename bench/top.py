"""sessionc top benchmarks: its idle CPU with 200 agents, the daemon's with and without it,
and the time from an agent's exit to the frame showing it.

`.venv/bin/python bench/top.py [--quick] [--json]`, from anywhere. Stdlib only; reuses
bench.py's daemon and agents.py's 200-agent config. top runs in a detached tmux window of
its own (a private tmux server, `tmux -L`, killed at the end), exec'd so the pane's pid is
sessionc's; CPU comes from /proc/PID/stat (utime+stime, 1/HZ ticks) over the window;
the frame is read with `tmux capture-pane -p`, polled in a tight loop.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agents

import bench

HZ = os.sysconf("SC_CLK_TCK")
WIDTH, HEIGHT = 160, 50


class Pane:
    """`sessionc top` in a detached tmux window on a private server."""

    def __init__(self, sock: Path) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            raise SystemExit("bench/top.py needs tmux")
        self.argv = [tmux, "-L", f"sd-bench-top-{uuid.uuid4().hex[:8]}"]
        command = f"exec {shlex.quote(bench.SESSIONC)} --socket {shlex.quote(str(sock))} top"
        self.tmux("new-session", "-d", "-s", "top", "-x", str(WIDTH), "-y", str(HEIGHT),
                  "-c", "/", command)  # fmt: skip
        self.pid = int(self.tmux("list-panes", "-t", "top", "-F", "#{pane_pid}").strip())
        self.socket = self.tmux("display-message", "-p", "#{socket_path}").strip()
        argv = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        if b"top" not in argv:  # exec'd: the pane's pid is sessionc's, not a shell's
            raise RuntimeError(f"pane pid {self.pid} is not sessionc top: {argv}")

    def tmux(self, *args: str) -> str:
        done = subprocess.run([*self.argv, *args], capture_output=True, text=True,
                              env=dict(os.environ), timeout=10)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "top").split("\n")

    def server_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "#{pid}").strip())

    def close(self) -> None:
        subprocess.run([*self.argv, "kill-server"], capture_output=True, timeout=10)
        Path(self.socket).unlink(missing_ok=True)  # kill-server leaves it


def row(lines: list[str], name: str) -> dict[str, str] | None:
    """Agent `name`'s cells on the screen, cut at the header's columns."""
    head = next((i for i, ln in enumerate(lines) if re.match(r"  AGENT +STATE ", ln)), None)
    if head is None:
        return None
    starts = [m.start() for m in re.finditer(r"\S+", lines[head])]
    for line in lines[head + 1 :]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        if cells[0] == name:
            return dict(zip(lines[head].split(), cells, strict=True))
    return None


def wait_screen(pane: Pane, check: Callable[[list[str]], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while not (found := check(pane.screen())):
        if time.monotonic() > deadline:
            raise RuntimeError("top's frame never showed it:\n" + "\n".join(pane.screen()))
    return found


def cpu_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[11]) + int(stat[12])


def cpu_over(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU % of one core of each process over the same `seconds`."""
    time.sleep(0.5)  # let the last call's wake-ups settle
    before, t0 = {k: cpu_ticks(p) for k, p in pids.items()}, time.monotonic()
    time.sleep(seconds)
    after, dt = {k: cpu_ticks(p) for k, p in pids.items()}, time.monotonic() - t0
    return {k: (after[k] - before[k]) / HZ / dt * 100 for k in pids}


def exit_to_frame(pane: Pane, rpc: bench.Rpc, kills: int) -> dict[str, list[float]]:
    """SIGKILL the victim (past its min_uptime); ms until the frame no longer shows its pid
    running; and, for scale, what one capture-pane costs."""
    shown, captures = [], []
    for _ in range(kills):
        pid = agents.victim_pid(rpc)
        wait_screen(pane, lambda s, p=pid: (r := row(s, "victim")) and r["PID"] == str(p)
                    and r["STATE"] == "running" and r)  # fmt: skip
        time.sleep(0.6)  # past min_uptime (0.5 s): restarted at once, not in backoff
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        wait_screen(pane, lambda s, p=pid: (r := row(s, "victim")) and (r["PID"] != str(p)
                    or r["STATE"] != "running") and r)  # fmt: skip
        shown.append((time.perf_counter() - t0) * 1000)
        t1 = time.perf_counter()
        pane.screen()
        captures.append((time.perf_counter() - t1) * 1000)
    return {"exit_to_frame": shown, "capture": captures}


def measure(d: bench.Daemon, rpc: bench.Rpc, q: bool) -> dict:
    assert d.proc is not None
    window = 5.0 if q else 20.0
    res: dict = {"window_s": window}
    res["unwatched_before"] = cpu_over({"daemon": d.proc.pid}, window)["daemon"]
    pane = Pane(d.socket)
    try:
        wait_screen(pane, lambda s: row(s, "victim"))
        res["top_rss_mib"] = agents.vm_rss(pane.pid)
        res["watched"] = cpu_over({"top": pane.pid, "daemon": d.proc.pid,
                                   "tmux": pane.server_pid()}, window)  # fmt: skip
        res.update(exit_to_frame(pane, rpc, 5 if q else 10))
    finally:
        pane.close()
    res["unwatched_after"] = cpu_over({"daemon": d.proc.pid}, window)["daemon"]
    return res


def run(args: argparse.Namespace, base: Path) -> dict:
    q = args.quick
    n = 50 if q else 200
    res: dict = {"machine": {**bench.machine(), "sessiond": bench.package()}, "quick": q, "n": n}
    load = [os.getloadavg()[0]]
    d = bench.Daemon(base, "t")
    d.config = base / "agents.toml"
    agents.write_config(d.config, n)
    try:
        d.start()
        agents.drain_notify(d)
        rpc = bench.Rpc(d.socket)
        try:
            agents.start_session(rpc, n)
            res.update(measure(d, rpc, q))
            load.append(os.getloadavg()[0])
            res["load"] = " / ".join(f"{x:.2f}" for x in load)
        finally:
            rpc.close()
    finally:
        d.stop()
        for pid in agents.marked(base):  # only agents of this run's daemon carry this marker
            os.kill(pid, signal.SIGKILL)
    return res


# fmt: off
def table(res: dict) -> list[tuple]:
    row_, pct, n, w = bench.row, bench.pct, res["n"], res["window_s"]
    watched, shown, cap = res["watched"], res["exit_to_frame"], res["capture"]
    before, after = res["unwatched_before"], res["unwatched_after"]
    return [
        row_(f"top, {n} agents, idle: CPU % of one core ({w:.0f} s)", f"{watched['top']:.2f}",
             "< 1", watched["top"] < 1),
        row_("  top's VmRSS", f"{res['top_rss_mib']:.1f} MiB"),
        row_("  the tmux server drawing it: CPU %", f"{watched['tmux']:.2f}"),
        row_("daemon CPU %: nobody watching, before top", f"{before:.3f}"),
        row_("  while top watches", f"{watched['daemon']:.3f}"),
        row_("  nobody watching, after top quit", f"{after:.3f}",
             f"~ before ({before:.3f})", after <= before + 0.1),
        row_(f"agent exit -> frame shows it, median ({len(shown)})",
             f"{pct(shown, 50):.1f} ms (max {max(shown):.1f})", "< 100 ms",
             pct(shown, 50) < 100),
        row_("  one capture-pane (the resolution), median", f"{pct(cap, 50):.1f} ms"),
    ]
# fmt: on


def report(res: dict) -> None:
    bench.print_head(res, f"load      {res['load']} (1-min load average, before and after: "
                     "others' work skews)")  # fmt: skip
    bench.print_table(table(res))


def main() -> int:
    return bench.main_for(run, report, "50 agents, 5 s windows, 5 kills", "sdt.", __doc__)


if __name__ == "__main__":
    sys.exit(main())
