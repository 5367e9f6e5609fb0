"""sessiond benchmarks: start-up, sessionc wall time, RPC latency, idle wakeups.

`.venv/bin/python bench/bench.py [--quick] [--json]`, from anywhere. Stdlib only. Daemons
live in a short temp dir and are stopped by pid, also on error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import DEVNULL

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PY = str(VENV_BIN / "python")  # the venv's python, never the pyenv shim
SESSIOND = str(VENV_BIN / "sessiond")
SESSIONC = str(VENV_BIN / "sessionc")
FORBIDDEN = ("psutil", "pyroute2", "jsonrpcserver")
CWD = "/"  # neutral: `-m sessiond.cli` must find the same package as the scripts do


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def package() -> str:
    """Which sessiond the venv runs (from a neutral cwd), and how it differs from the tree."""
    argv = [PY, "-c", "import sessiond; print(sessiond.__file__)"]
    pkg = Path(subprocess.run(argv, cwd=CWD, capture_output=True, text=True).stdout.strip())
    if pkg.parent == REPO / "sessiond":
        return f"{pkg.parent} (the working tree)"
    diff = [f.name for f in (REPO / "sessiond").glob("*.py")
            if not (pkg.parent / f.name).is_file()
            or (pkg.parent / f.name).read_bytes() != f.read_bytes()]  # fmt: skip
    return f"{pkg.parent} (installed copy; differs from the tree in: {', '.join(diff) or '-'})"


def machine() -> dict[str, str]:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "?")
    kernel, python = platform.release(), f"{platform.python_version()} ({PY})"
    return {"nproc": str(os.cpu_count()), "cpu": model, "kernel": kernel, "python": python}


class Daemon:
    """One sessiond in its own state dir, with a notify socket we own."""

    def __init__(
        self, base: Path, tag: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
    ) -> None:
        self.prefix = prefix  # e.g. ip netns exec NAME, which execs: proc.pid stays the daemon's
        self.socket = base / f"{tag}.sock"
        self.state = base / f"{tag}.state"
        self.notify_path = base / f"{tag}.ntf"
        self.config = base / "empty.toml"
        self.config.touch()
        self.env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path), **(env or {})}
        self.log = open(base / f"{tag}.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Exec the daemon; return seconds from just before Popen to READY=1."""
        argv = [*self.prefix, SESSIOND, "--user", "--socket", str(self.socket)]
        argv += ["--state-dir", str(self.state), "--config", str(self.config)]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, env=self.env, cwd=CWD, stdout=self.log, stderr=self.log)
        while not self._ready():
            if self.proc.poll() is not None or time.perf_counter() - t0 > 10:
                raise RuntimeError(f"sessiond gave no READY=1; see {self.log.name}")
        return time.perf_counter() - t0

    def _ready(self) -> bool:
        try:
            return b"READY=1" in self.notify.recv(4096).split(b"\n")
        except TimeoutError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        self.log.close()


class Rpc:
    """A raw blocking client: one request line, then one reply line."""

    def __init__(self, path: Path, timeout: float | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)  # on every operation, connect included
        self.sock.connect(str(path))
        # Reads of 64 KiB, as sessionc's client makes: with makefile's 8 KiB default, a
        # status of 1,000 agents (284 KB) took 35 reads, and its p50 measured this client.
        self.reader = self.sock.makefile("rb", buffering=1 << 16)
        self.next_id = 0

    def line(self, method: str, params: dict | None = None) -> bytes:
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
        return json.dumps(msg).encode() + b"\n"

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def bench_startup(base: Path, runs: int) -> dict[str, float]:
    times = []
    for i in range(runs):
        d = Daemon(base, f"u{i}")
        try:
            times.append(d.start())
        finally:
            d.stop()
    ms = [t * 1000 for t in times]
    return {"min": min(ms), "p50": pct(ms, 50), "p90": pct(ms, 90)}


def wall(argv: list[str], env: dict[str, str] | None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=CWD, check=True, stdout=DEVNULL, stderr=DEVNULL)
    return time.perf_counter() - t0


def bench_sessionc(sock: Path, runs: int, env: dict[str, str] | None) -> dict[str, float]:
    client = [PY, SESSIONC, "--socket", str(sock), "status"]
    base = [PY, "-c", "import json, socket"]
    wall(client, env), wall(base, env)  # warm the page cache (and the pyc cache, if any)
    tc, tb = [], []
    for _ in range(runs):
        tc.append(wall(client, env))
        tb.append(wall(base, env))
    c, b = pct(tc, 50) * 1000, pct(tb, 50) * 1000
    return {"sessionc_p50": c, "baseline_p50": b, "ratio": c / b}


def import_costs(sock: Path, top: int = 10) -> tuple[list[dict], list[str]]:
    """The top imports of `sessionc status` by cumulative time, and every module imported."""
    argv = [PY, "-X", "importtime", "-m", "sessiond.cli", "--socket", str(sock), "status"]
    err = subprocess.run(argv, cwd=CWD, capture_output=True, text=True, check=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            self_us, cum_us, name = line[len("import time:") :].split("|")
            rows.append({"module": name.rstrip(), "cum_us": int(cum_us), "self_us": int(self_us)})
    ranked = sorted(rows, key=lambda r: r["cum_us"], reverse=True)[:top]
    return ranked, [r["module"].strip() for r in rows]


def bench_rpc(rpc: Rpc, method: str, warm: int, count: int) -> dict[str, float]:
    lines = [rpc.line(method) for _ in range(warm + count)]
    send, readline = rpc.sock.sendall, rpc.reader.readline
    for line in lines[:warm]:
        send(line)
        readline()
    clock, lat, replies = time.perf_counter_ns, [0] * count, [b""] * count
    t0 = clock()
    for i, line in enumerate(lines[warm:]):
        s = clock()
        send(line)
        replies[i] = readline()
        lat[i] = clock() - s
    total = (clock() - t0) / 1e9
    bad = [r for r in replies if b'"result"' not in r]
    if bad:
        raise RuntimeError(f"{method}: {len(bad)} error replies, e.g. {bad[0][:200]!r}")
    us = [n / 1000 for n in lat]
    return {"p50": pct(us, 50), "p90": pct(us, 90), "p99": pct(us, 99), "rate": count / total}


def proc_sample(pid: int) -> tuple[int, int, int]:
    """(context switches over all threads, utime+stime ticks, threads)."""
    switches, tasks = 0, list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return switches, int(stat[11]) + int(stat[12]), len(tasks)


def sample(pid: int) -> tuple[float, int]:
    """(VmRSS MiB, open fds) of a process; ProcessLookupError once it is gone (or a zombie)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    kib = next((int(ln.split()[1]) for ln in status if ln.startswith("VmRSS:")), None)
    if kib is None:
        raise ProcessLookupError(f"pid {pid} has exited")
    return kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def holders(path: Path) -> list[int]:
    """Processes other than this one with their cwd or an open file under `path`."""
    found, inside = [], (str(path), f"{path}/")
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            links = [os.readlink(p / "cwd")] + [os.readlink(f) for f in (p / "fd").iterdir()]
        except OSError:  # gone, or not ours to look at
            continue
        if any(link == inside[0] or link.startswith(inside[1]) for link in links):
            found.append(int(p.name))
    return found


@contextlib.contextmanager
def tmpfs(path: Path, mib: int) -> Iterator[Path]:
    """A size-limited tmpfs on `path` (root only), for what could fill a disk; unmounted after:
    processes still holding it then (the daemon's children) get 5 s, then SIGKILL, by pid."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        deadline = time.monotonic() + 5
        while (left := holders(path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            print(f"tmpfs {path}: SIGKILL to pid {pid}, still holding it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5  # closed sockets may keep it busy a moment longer
        while subprocess.run(["umount", str(path)], stderr=DEVNULL).returncode != 0:
            if time.monotonic() > deadline:
                print(f"tmpfs {path}: busy; detached (umount -l)", file=sys.stderr)
                subprocess.run(["umount", "-l", str(path)], check=True)
                break
            time.sleep(0.2)


def bench_idle(pid: int, seconds: float) -> dict[str, float]:
    time.sleep(0.5)  # let the last reply's wake-ups settle
    s0, c0, _ = proc_sample(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    s1, c1, threads = proc_sample(pid)
    dt = time.monotonic() - t0
    cpu = (c1 - c0) / os.sysconf("SC_CLK_TCK") / dt * 100
    return {"wakeups": (s1 - s0) / dt, "cpu": cpu, "threads": threads}


def live_session(d: Daemon) -> None:
    """Start a session with default timeouts, then leave the daemon without clients."""
    rpc = Rpc(d.socket)
    try:
        rpc.sock.sendall(rpc.line("session.start", {"name": "bench"}))
        if b'"result"' not in (reply := rpc.reader.readline()):
            raise RuntimeError(f"session.start: {reply!r}")
    finally:
        rpc.close()


def bench_main(d: Daemon, base: Path, q: bool) -> dict:
    """Idle first (no client has connected since the session started), then load."""
    live_session(d)
    assert d.proc is not None
    res: dict = {"idle": bench_idle(d.proc.pid, 3 if q else 10)}
    rpc = Rpc(d.socket)
    try:
        for method in ("daemon.ping", "session.status"):
            res[method] = bench_rpc(rpc, method, 2000, 5000 if q else 20000)
    finally:
        rpc.close()
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(base / "pyc")  # bytecode cache outside the repo
    res["sessionc"] = bench_sessionc(d.socket, 10 if q else 30, None)
    res["sessionc_cached"] = bench_sessionc(d.socket, 10 if q else 30, cached)
    res["imports_top"], names = import_costs(d.socket)
    res["forbidden_imports"] = [m for m in names if m.split(".")[0] in FORBIDDEN]
    return res


def run(args: argparse.Namespace, base: Path) -> dict:
    q = args.quick
    res: dict = {"machine": {**machine(), "sessiond": package()}, "quick": q}
    res["startup_ms"] = bench_startup(base, 5 if q else 20)
    main = Daemon(base, "m")
    wd = Daemon(base, "w", {"WATCHDOG_USEC": "10000000"})
    try:
        main.start()
        res.update(bench_main(main, base, q))
        wd.start()
        live_session(wd)
        assert wd.proc is not None
        res["idle_watchdog"] = bench_idle(wd.proc.pid, 3 if q else 10)
    finally:
        wd.stop()
        main.stop()
    return res


def row(label: str, value: str, target: str = "", ok: bool | None = None) -> tuple:
    return (label, value, target, "" if ok is None else "PASS" if ok else "MISS")


# fmt: off
def table(res: dict) -> list[tuple]:
    su, fo = res["startup_ms"], res["forbidden_imports"]
    rows = [row("exec -> READY=1 min / p50 / p90",
                f"{su['min']:.1f} / {su['p50']:.1f} / {su['p90']:.1f} ms",
                "p90 < 300 ms", su["p90"] < 300)]
    for key, label in (("sessionc", "sessionc"), ("sessionc_cached", "  pyc cached")):
        sc = res[key]
        rows.append(row(f"{label}: status p50 (baseline p50)",
                        f"{sc['sessionc_p50']:.1f} ms ({sc['baseline_p50']:.1f} ms)"))
        rows.append(row(f"{label}: ratio", f"{sc['ratio']:.2f}", "<= 1.3", sc["ratio"] <= 1.3))
    rows.append(row("sessionc imports psutil/pyroute2/jsonrpcserver", ",".join(fo) or "none",
                    "none", not fo))
    for name, target in (("daemon.ping", 100), ("session.status", 200)):
        r = res[name]
        rows.append(row(f"{name} p50 / p90 / p99",
                        f"{r['p50']:.1f} / {r['p90']:.1f} / {r['p99']:.1f} us",
                        f"p50 < {target} us", r["p50"] < target))
        rows.append(row(f"{name} throughput", f"{r['rate']:,.0f} calls/s", "> 10,000",
                        r["rate"] > 10_000))
    for key, label, target in (("idle", "idle", 0.05), ("idle_watchdog", "idle, watchdog", 0.3)):
        r = res[key]
        rows.append(row(f"{label}: wakeups/s ({r['threads']} threads)", f"{r['wakeups']:.2f}",
                        f"<= {target}", r["wakeups"] <= target))
        rows.append(row(f"{label}: CPU % of one core", f"{r['cpu']:.3f}", "~0", r["cpu"] < 0.1))
    return rows
# fmt: on


def print_table(rows: list[tuple], head: tuple = ("measure", "value", "target", "")) -> None:
    rows = [head, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def print_head(res: dict, *more: str) -> None:
    """The machine, the mode (and how many agents, if the run says), `more` lines, a blank."""
    for key, value in res["machine"].items():
        print(f"{key:<9} {value}")
    agents = f", {res['n']} agents" if "n" in res else ""
    print(f"mode      {'quick' if res['quick'] else 'full'}{agents}")
    for line in more:
        print(line)
    print()


def report(res: dict) -> None:
    print_head(res)
    print_table(table(res))
    print("\nsessionc imports (-X importtime -m sessiond.cli), top 10 by cumulative time")
    print("(sessiond.cli.__main__ runs as __main__; sessiond.cli.main is listed):")
    print(f"{'cumulative us':>14} {'self us':>9}  module")
    for imp in res["imports_top"]:
        print(f"{imp['cum_us']:>14} {imp['self_us']:>9}  {imp['module']}")


def main_for(
    run_fn: Callable[[argparse.Namespace, Path], dict], report_fn: Callable[[dict], None],
    quick_help: str, prefix: str, doc: str | None,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:  # fmt: skip
    """The command line every bench script shares: --quick, --json (and `options`), a temp dir."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    if options is not None:
        options(parser)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        res = run_fn(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        report_fn(res)
    return 0


def main() -> int:
    return main_for(run, report, "fewer runs, shorter samples", "sdb.", __doc__)


if __name__ == "__main__":
    sys.exit(main())
