"""sessiond abuse benchmark: a `yes` flood, a client that never reads, a crowd; what they cost.

`sudo .venv/bin/python bench/abuse.py [--quick] [--json] [--flood-seconds S]`, from anywhere.
Root only (exits 2 otherwise): the daemon's state dir is on a size-limited tmpfs that the script
mounts (and unmounts), so that a flood can never fill the machine's disk. Stdlib only; reuses
bench.py's daemon, client and table, agents.py's call and marker scan. Prints figures, asserts
nothing. One daemon (user mode, agent logs 1 MiB x 3), abused in turn:

1. an agent runs `yes` flat out: daemon.ping latency from a client pinging every 10 ms, the
   agent's log files on disk at the end, next to their bound (log_max_bytes x log_files);
2. one connection pipelines 3,000 `events.tail` (lines 10000) and never reads: the daemon's
   VmRSS before and after, and daemon.ping latency from another client meanwhile;
3. 30 idle connections and a 5,000-member batch; then, all abusers gone, the daemon's fds and
   VmRSS against those before the round.

Every socket operation has a timeout: a daemon that dies or stalls is reported, never waited for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agents import call, drain_notify, marked

import bench

MIB = 1 << 20
LOG_MAX_BYTES, LOG_FILES = MIB, 3  # small, so that a flood rotates many times
SLACK = 64 << 10  # what a log may pass its bound by (one write in flight)
YES = ["yes", "a" * 24]
TIMEOUT = 10.0  # seconds, for any one request of the script's own
TAIL = b'{"jsonrpc": "2.0", "id": 1, "method": "events.tail", "params": {"lines": 10000}}\n'
PHASES = ("flood", "non_reader", "crowd")


class Gone(RuntimeError):
    """The daemon died, stalled, or was stopped by the RSS guard."""


def daemon_config(log_max_bytes: int = LOG_MAX_BYTES, log_files: int = LOG_FILES) -> str:
    return f"log_max_bytes = {log_max_bytes}\nlog_files = {log_files}\n"


def log_usage(folder: Path, agent: str) -> tuple[int, int]:
    """(bytes on disk: st_blocks * 512, bytes: st_size) of folder/AGENT.log*, summed."""
    disk = size = 0
    for f in folder.glob(f"{agent}.log*"):
        with contextlib.suppress(FileNotFoundError):  # rotated away meanwhile
            st = f.stat()
            disk, size = disk + st.st_blocks * 512, size + st.st_size
    return disk, size


def latency(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": bench.pct(ms, 50), "p99": bench.pct(ms, 99), "max": max(ms)}


class Pinger(threading.Thread):
    """daemon.ping every `every` s, a fresh request each time, one at a time over one connection
    (a new one after a failure): the latencies, and the pings that timed out or failed."""

    def __init__(
        self,
        path: Path,
        every: float = 0.01,
        timeout: float = 5.0,
        halt: threading.Event | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.path, self.every, self.timeout = path, every, timeout
        self.halt = halt or threading.Event()
        self.ms: list[float] = []
        self.timeouts = self.failures = 0
        self.since: float | None = None  # when the ping in flight was sent
        self.rpc: bench.Rpc | None = None

    def run(self) -> None:
        while not self.halt.wait(self.every):
            try:
                self.rpc = rpc = self.rpc or bench.Rpc(self.path, self.timeout)
                self.since = time.perf_counter()
                rpc.sock.sendall(rpc.line("daemon.ping"))
                if b'"result"' in rpc.reader.readline():
                    self.ms.append((time.perf_counter() - self.since) * 1000)
                    self.since = None
                    continue
                failed = "failures"  # EOF or an error reply
            except TimeoutError:
                failed = "timeouts"
            except OSError:  # refused (daemon down), reset
                failed = "failures"
            if self.halt.is_set():
                break  # stop() cut the ping in flight short
            setattr(self, failed, getattr(self, failed) + 1)
            self.since = None
            self._close()
        self._close()

    def _close(self) -> None:
        if self.rpc is not None:
            self.rpc.close()
            self.rpc = None

    def stop(self) -> dict:
        """Halt; the figures, with how long the ping in flight had waited (if one was)."""
        now = time.perf_counter()
        self.halt.set()
        with contextlib.suppress(AttributeError, OSError):  # no connection, or a closed one
            self.rpc.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]  # wakes run()
        self.join(self.timeout + 1)
        since = self.since  # still set: the ping in flight was cut short
        return {"answered": len(self.ms), "timeouts": self.timeouts, "failures": self.failures,
                "timeout_s": self.timeout, "in_flight_ms": since and max(0.0, now - since) * 1000,
                **latency(self.ms)}  # fmt: skip


class NonReader(threading.Thread):
    """Sends `line` `count` times (None: until halted) on one connection and never reads a reply;
    keeps the connection open until halted; reconnects if the daemon closes it or restarts."""

    def __init__(
        self, path: Path, line: bytes, count: int | None = None, halt: threading.Event | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.path, self.line, self.count = path, line, count
        self.halt = halt or threading.Event()
        self.sent = self.connections = 0  # requests wholly taken by the socket

    def _more(self) -> bool:
        return self.count is None or self.sent < self.count

    def run(self) -> None:
        sock: socket.socket | None = None
        pending = b""
        while not self.halt.is_set() and self._more():
            try:
                if sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(0.5)
                    sock.connect(str(self.path))
                    self.connections += 1
                pending = pending or self.line
                pending = pending[sock.send(pending) :]
                self.sent += not pending
            except TimeoutError:
                continue  # the daemon reads no more of it: keep pushing
            except OSError:
                if sock is not None:
                    sock.close()
                sock, pending = None, b""
                self.halt.wait(0.2)
        self.halt.wait()
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


def alive(d: bench.Daemon) -> None:
    assert d.proc is not None
    if (code := d.proc.poll()) is not None:
        raise Gone(f"daemon died (exit status {code})")


def ping_ms(d: bench.Daemon, within: float = TIMEOUT) -> float:
    """One daemon.ping on a fresh connection, in ms; Gone if not answered `within` s."""
    alive(d)
    t0 = time.perf_counter()
    rpc = None
    try:
        rpc = bench.Rpc(d.socket, within)
        call(rpc, "daemon.ping")
    except (OSError, ValueError, RuntimeError) as exc:
        alive(d)
        raise Gone(f"daemon.ping not answered within {within:.0f} s ({exc!r})") from exc
    finally:
        if rpc is not None:
            rpc.close()
    return (time.perf_counter() - t0) * 1000


def watch(
    d: bench.Daemon, seconds: float, cap_mib: float, peak: dict,
    probe: Callable[[], int] | None = None,
) -> None:  # fmt: skip
    """Sample the daemon every 0.1 s for `seconds`: peak VmRSS, fds (and `probe()`) into `peak`
    as they come; a daemon whose VmRSS passes `cap_mib` is SIGKILLed (the machine's memory is
    not the bench's)."""
    assert d.proc is not None
    peak.update(rss_mib=0.0, fds=0, probe=0)
    end = time.monotonic() + seconds
    while True:
        alive(d)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # died meanwhile
            rss, fds = bench.sample(d.proc.pid)
            peak["rss_mib"], peak["fds"] = max(peak["rss_mib"], rss), max(peak["fds"], fds)
            if rss > cap_mib:
                d.proc.kill()
                raise Gone(f"the bench SIGKILLed the daemon: VmRSS {rss:.0f} MiB > {cap_mib:.0f}")
        if probe is not None:
            peak["probe"] = max(peak["probe"], probe())
        if time.monotonic() >= end:
            return
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def make_events(rpc: bench.Rpc, count: int) -> int:
    """session.start + session.stop, pipelined 100 pairs at a time, until `count` events exist."""
    n, want = 0, min(count, 10000)  # events.tail gives at most 10,000

    def events() -> int:
        found = call(rpc, "events.tail", {"lines": want})
        assert isinstance(found, list)
        return len(found)

    while events() < want:
        lines = []
        for _ in range(100):
            n += 1
            lines += [rpc.line("session.start", {"name": f"ev{n}"}), rpc.line("session.stop")]
        rpc.sock.sendall(b"".join(lines))
        for _ in lines:
            if not rpc.reader.readline():
                raise Gone("daemon closed the connection")
    return events()


def cpu_percent(pid: int, since: tuple[int, float]) -> float:
    ticks, t0 = since
    return (bench.proc_sample(pid)[1] - ticks) / os.sysconf("SC_CLK_TCK") / (
        time.monotonic() - t0) * 100  # fmt: skip


def written_mib(pid: int | None) -> float | None:
    """What a process wrote (wchar of /proc/PID/io), MiB; None if it is gone."""
    try:
        io = Path(f"/proc/{pid}/io").read_text().split()
    except (OSError, TypeError):
        return None
    return int(io[io.index("wchar:") + 1]) / MIB


def flood(d: bench.Daemon, rpc: bench.Rpc, sid: str, args: argparse.Namespace, res: dict) -> None:
    """Phase 1, its figures into `res` (also those measured before the daemon went)."""
    assert d.proc is not None
    folder = d.state / "logs" / sid
    pinger = Pinger(d.socket)
    pinger.start()
    res["seconds"] = args.flood_seconds
    try:
        cpu0 = bench.proc_sample(d.proc.pid)[1], time.monotonic()
        agent = call(rpc, "agent.run", {"command": YES, "name": "flood"})
        assert isinstance(agent, dict)
        t0 = time.monotonic()
        watch(d, args.flood_seconds, args.rss_cap, res.setdefault("peak", {}),
              lambda: log_usage(folder, "flood")[0])  # fmt: skip
        res["cpu_percent"] = cpu_percent(d.proc.pid, cpu0)
        wrote = written_mib(agent.get("pid"))
        res["agent_mib_per_s"] = None if wrote is None else wrote / (time.monotonic() - t0)
        listed = call(rpc, "agent.list")
        assert isinstance(listed, list)
        res["agent"] = next(({k: a[k] for k in ("state", "restarts", "exit_code")}
                             for a in listed if a["name"] == "flood"), None)  # fmt: skip
    finally:
        res["ping"] = pinger.stop()
        res["log_disk"], res["log_size"] = log_usage(folder, "flood")
        res["log_files"] = sorted(f.name for f in folder.glob("flood.log*"))
        fs = os.statvfs(d.state)
        res["tmpfs_used"] = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    call(rpc, "agent.stop", {"name": "flood"})


def non_reader(d: bench.Daemon, events: int, args: argparse.Namespace, res: dict) -> None:
    """Phase 2, its figures into `res`."""
    assert d.proc is not None
    res.update(events=events, requests=args.requests, rss_before=bench.sample(d.proc.pid)[0])
    pinger = Pinger(d.socket)
    greedy = NonReader(d.socket, TAIL, args.requests)
    pinger.start()
    greedy.start()
    try:
        watch(d, args.hold, args.rss_cap, res.setdefault("peak", {}))
        res["rss_after"] = bench.sample(d.proc.pid)[0]  # the client still there, not reading
    finally:
        res["sent"] = greedy.sent
        res["ping"] = pinger.stop()
        greedy.stop()


def crowd(d: bench.Daemon, args: argparse.Namespace, res: dict) -> None:
    """Phase 3, its figures into `res`."""
    assert d.proc is not None
    res.update(idle=args.idle, batch=args.batch)
    idle = []
    try:
        for _ in range(args.idle):
            idle.append(bench.Rpc(d.socket, TIMEOUT))
        batch = [{"jsonrpc": "2.0", "id": i, "method": "daemon.ping"} for i in range(args.batch)]
        rpc = bench.Rpc(d.socket, 30)
        try:
            t0 = time.perf_counter()
            rpc.sock.sendall(json.dumps(batch).encode() + b"\n")
            reply = rpc.reader.readline()
            res["batch_ms"], res["batch_bytes"] = (time.perf_counter() - t0) * 1000, len(reply)
        except TimeoutError:
            reply = b""
        finally:
            rpc.close()
        answer = json.loads(reply or "null")
        res["batch_reply"] = (
            "no reply within 30 s" if answer is None
            else f"{len(answer)} replies" if isinstance(answer, list)
            else f"error {answer.get('error', {}).get('code')}"
        )  # fmt: skip
        watch(d, 1, args.rss_cap, res.setdefault("peak", {}))
    finally:
        for conn in idle:
            conn.close()


def rounds(d: bench.Daemon, args: argparse.Namespace, res: dict) -> None:
    """The abuse, in turn; what was measured stays in `res` when the daemon goes."""
    assert d.proc is not None
    pid = d.proc.pid
    rpc = bench.Rpc(d.socket, TIMEOUT * 3)
    try:
        events = make_events(rpc, args.events)
        sess = call(rpc, "session.start", {"name": "abuse"})
        assert isinstance(sess, dict)
        time.sleep(1)
        ping_ms(d)
        res["start"] = bench.sample(pid)
        flood(d, rpc, sess["id"], args, res.setdefault("flood", {}))
    finally:
        rpc.close()
    non_reader(d, events, args, res.setdefault("non_reader", {}))
    crowd(d, args, res.setdefault("crowd", {}))
    time.sleep(2)  # let the daemon take in the closed connections
    res["end_ping_ms"] = ping_ms(d, 60)
    res["end"] = bench.sample(pid)


def run(args: argparse.Namespace, base: Path) -> dict:
    if os.geteuid() != 0:
        print("bench/abuse.py needs root: it mounts a tmpfs for the daemon's state "
              "(sudo .venv/bin/python bench/abuse.py)", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    if args.quick:
        args.flood_seconds, args.hold, args.events = min(args.flood_seconds, 5), 3, 2000
    res: dict = {"machine": {**bench.machine(), "sessiond": bench.package()}, "quick": args.quick,
                 "log_bound": LOG_MAX_BYTES * LOG_FILES, "tmpfs_mib": args.tmpfs_mib}  # fmt: skip
    with bench.tmpfs(base / "fs", args.tmpfs_mib) as fs:
        d = bench.Daemon(fs, "x")
        d.config.write_text(f"[daemon]\n{daemon_config()}")
        try:
            d.start()
            drain_notify(d)
            rounds(d, args, res)
        except (Gone, OSError, ValueError, RuntimeError) as exc:
            gone = None if d.proc is None else d.proc.poll()
            what = str(exc) if isinstance(exc, Gone) else f"daemon stalled or failed: {exc!r}"
            if gone is not None and "died" not in what:
                what = f"daemon died (exit status {gone}): {what}"
            phase = next((k for k in reversed(PHASES) if k in res), "setup")
            res["aborted"] = f"in {phase}: {what}"
            res["daemon_log_tail"] = (fs / "x.log").read_text(errors="replace").splitlines()[-5:]
        finally:
            d.stop()
            for pid in marked(base):  # only agents of this run's daemon carry this marker
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    return res


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MIB:.2f} MiB"


def pings(p: dict) -> str:
    if not p["answered"]:
        text = "none answered"
    else:
        text = f"{p['p50']:.2f} / {p['p99']:.2f} / {p['max']:.1f} ms ({p['answered']} pings)"
    if p["timeouts"]:
        text += f", {p['timeouts']} timed out (> {p['timeout_s']:.0f} s)"
    if p["in_flight_ms"]:
        text += f", one unanswered after {p['in_flight_ms']:.0f} ms"
    return text + (f", {p['failures']} failed" if p["failures"] else "")


# fmt: off
def table(res: dict) -> list[tuple]:
    row, bound = bench.row, res["log_bound"]
    rows = []
    if fl := res.get("flood"):
        agent, peak = fl.get("agent") or {}, fl.get("peak") or {}
        rows += [
            row(f"`yes` flood {fl['seconds']:g} s: daemon.ping p50 / p99 / max",
                pings(fl["ping"])),
            row("  agent log files on disk at the end (st_blocks)", mib(fl.get("log_disk")),
                f"<= {mib(bound)} (1 MiB x {LOG_FILES}) + 64 KiB"),
            row("  agent log files' st_size at the end", mib(fl.get("log_size")),
                f"<= {mib(bound)} + 64 KiB"),
            row("  agent log files on disk, peak (0.1 s samples)", mib(peak.get("probe"))),
            row("  log files", " ".join(fl.get("log_files", [])) or "-"),
            row("  tmpfs used at the end",
                f"{mib(fl.get('tmpfs_used'))} of {res['tmpfs_mib']} MiB"),
            row("  agent wrote (wchar)", "-" if fl.get("agent_mib_per_s") is None
                else f"{fl['agent_mib_per_s']:.1f} MiB/s"),
            row("  agent at the end: state, restarts, exit code",
                ", ".join(str(agent.get(k, "-")) for k in ("state", "restarts", "exit_code"))),
            row("  daemon CPU during the flood", f"{fl['cpu_percent']:.1f} % of one core"
                if "cpu_percent" in fl else "-"),
            row("  daemon VmRSS peak", f"{peak['rss_mib']:.1f} MiB" if peak else "-"),
        ]
    if nr := res.get("non_reader"):
        rows += [
            row(f"non-reading client ({nr['requests']} x events.tail lines 10000, "
                f"{nr['events']} events): daemon VmRSS before / after / peak",
                f"{nr['rss_before']:.1f} / {nr.get('rss_after', 0):.1f} / "
                f"{(nr.get('peak') or {}).get('rss_mib', 0):.1f} MiB",
                "after - before: 4 MiB unsent + a reply"),
            row("  requests the socket took", f"{nr['sent']} of {nr['requests']}"),
            row("  daemon.ping from another client p50 / p99 / max", pings(nr["ping"])),
        ]
    if cr := res.get("crowd"):
        rows += [
            row(f"{cr['batch']}-member batch of daemon.ping: reply", cr.get("batch_reply", "-")
                + (f", {cr['batch_bytes']:,} bytes in {cr['batch_ms']:.0f} ms"
                   if "batch_ms" in cr else ""), "error -32600 (> 1,000)"),
            row(f"  daemon fds / VmRSS peak with {cr['idle']} idle connections",
                f"{(cr.get('peak') or {}).get('fds', 0)} / "
                f"{(cr.get('peak') or {}).get('rss_mib', 0):.1f} MiB"),
        ]
    if "start" in res:
        (rss0, fd0), (rss1, fd1) = res["start"], res.get("end", (None, None))
        after = "-" if fd1 is None else f"{fd1}"
        rows += [
            row("whole round, abusers gone: daemon fds start -> end", f"{fd0} -> {after}",
                "close to the start"),
            row("  daemon VmRSS start -> end", f"{rss0:.1f} -> "
                + ("-" if rss1 is None else f"{rss1:.1f} MiB"), "close to the start"),
        ]
        if "end_ping_ms" in res:
            rows.append(row("  daemon.ping on a fresh connection after",
                            f"{res['end_ping_ms']:.1f} ms"))
    if "aborted" in res:
        rows.append(row("ABORTED", res["aborted"]))
    return rows
# fmt: on


def report(res: dict) -> None:
    for key, value in res["machine"].items():
        print(f"{key:<9} {value}")
    print(f"mode      {'quick' if res['quick'] else 'full'}; state dir on a {res['tmpfs_mib']} "
          f"MiB tmpfs; agent logs {LOG_MAX_BYTES // MIB} MiB x {LOG_FILES}\n")  # fmt: skip
    bench.print_table(table(res), ("measure", "value", "bound", ""))
    for line in res.get("daemon_log_tail", []):
        print(f"daemon log: {line}")


def options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--flood-seconds", type=float, default=30, help="how long `yes` runs (default 30)")
    add("--hold", type=float, default=10, help="seconds the non-reading client stays (default 10)")
    add("--requests", type=int, default=3000, help="events.tail it sends (default 3000)")
    add("--events", type=int, default=5000, help="events made first (default 5000)")
    add("--idle", type=int, default=30, help="idle connections (default 30)")
    add("--batch", type=int, default=5000, help="members of the batch (default 5000)")
    add("--tmpfs-mib", type=int, default=512, help="size of the state dir's tmpfs (default 512)")
    add("--rss-cap", type=float, default=4096,
        help="MiB of daemon VmRSS at which the bench SIGKILLs it (default 4096)")  # fmt: skip


def main() -> int:
    quick = "a 5 s flood, 2000 events, a 3 s hold"
    return bench.main_for(run, report, quick, "sdx.", __doc__, options)


if __name__ == "__main__":
    sys.exit(main())
