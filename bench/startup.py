"""Cold start of sessiond: exec → READY=1, exec → first answer, the first request vs the next.

`.venv/bin/python bench/startup.py [--runs 20] [--python PATH] [--imports] [--json]`, from
anywhere. Stdlib only. Each run execs `PYTHON -m sessiond --user` as the user unit does (no
--socket, --state-dir or --config: the XDG directories point into a short temp dir) from a
neutral cwd, so the installed, compiled package runs, not the working tree; NOTIFY_SOCKET is a
datagram socket this bench binds. One warm-up run first makes the store: the runs open an
existing one, as a restart does. Two kinds of run, `--runs` of each:

  * asap: connect as soon as the socket takes connections and send daemon.ping at once:
    exec → READY=1 and exec → first answer (what a client waiting on the socket sees);
  * after READY: wait for READY=1, then daemon.ping on a fresh connection (the first
    request's latency) and NEXT more, each on its own connection as sessionc makes them.

For comparison: supervisord answers its first request 86 ms after exec (issue 10).
`--imports` adds one run under `-X importtime` and lists what start-up imports the most.
Daemons are stopped by pid, also on error.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv" / "bin" / "python")  # the venv's python, never the pyenv shim
CWD = "/"  # neutral: `-m sessiond` must find the installed package, not the tree
NEXT = 20
PING = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}\n'
SUPERVISORD_FIRST_ANSWER_MS = 86.0
T = TypeVar("T")
POLL = 0.0005  # seconds between connect attempts while the socket is not there yet


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class Run:
    """One daemon exec'd on `base`, its notify socket bound here; stopped by pid."""

    def __init__(self, python: str, base: Path, flags: tuple[str, ...] = ()) -> None:
        self.socket = base / "run" / "sessiond" / "sessiond.sock"
        (base / "run").mkdir(mode=0o700, exist_ok=True)  # a runtime dir as pam_systemd makes it
        notify_path = base / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "WATCHDOG_"))},
            "NOTIFY_SOCKET": str(notify_path), "XDG_RUNTIME_DIR": str(base / "run"),
            "XDG_STATE_HOME": str(base / "state"), "XDG_CONFIG_HOME": str(base / "config"),
        }  # fmt: skip
        self.env.pop("SESSIOND_SOCKET", None)
        self.argv = [python, *flags, "-m", "sessiond", "--user"]
        self.log = base / "sessiond.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.t0 = time.perf_counter()
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=CWD, stdout=log, stderr=log)

    def ms(self, t: float) -> float:
        return (t - self.t0) * 1000

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or time.perf_counter() - self.t0 > 30:
            raise RuntimeError(f"sessiond exited or hung before answering; see {self.log}")

    def ready_notice(self, data: bytes) -> bool:
        return b"READY=1" in data.split(b"\n")

    def wait_ready(self) -> float:
        self.notify.settimeout(0.2)
        while True:
            try:
                if self.ready_notice(self.notify.recv(4096)):
                    return time.perf_counter()
            except TimeoutError:
                self.check_alive()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()


def try_connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def ping(path: Path) -> float:
    """Seconds from connect to the reply of one daemon.ping on a fresh connection."""
    t = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(PING)
        reply = sock.makefile("rb").readline()
    if b'"result"' not in reply:
        raise RuntimeError(f"daemon.ping failed: {reply[:200]!r}")
    return time.perf_counter() - t


def asap(run: Run) -> tuple[float, float]:
    """exec → READY=1 and exec → first answer, in ms, asking as early as the socket allows."""
    sel = selectors.DefaultSelector()
    sel.register(run.notify, selectors.EVENT_READ, "notify")
    ready = answered = None
    client, reply = None, b""
    while ready is None or answered is None:
        if client is None and (client := try_connect(run.socket)) is not None:
            client.sendall(PING)
            sel.register(client, selectors.EVENT_READ, "client")
        for key, _ in sel.select(POLL if client is None else 0.2):
            now = time.perf_counter()
            if key.data == "notify" and run.ready_notice(run.notify.recv(4096)):
                ready = now
            elif key.data == "client":
                reply += key.fileobj.recv(65536)  # type: ignore[union-attr]
                if reply.endswith(b"\n"):
                    answered = now
                    sel.unregister(key.fileobj)
        run.check_alive()
    assert client is not None and b'"result"' in reply, reply[:200]
    client.close()
    sel.close()
    return run.ms(ready), run.ms(answered)


def after_ready(run: Run) -> tuple[float, list[float]]:
    """The first request's latency after READY=1, and the NEXT after it, in ms."""
    run.wait_ready()
    first = ping(run.socket) * 1000
    return first, [ping(run.socket) * 1000 for _ in range(NEXT)]


def one(python: str, base: Path, measure: Callable[[Run], T], flags: tuple[str, ...] = ()) -> T:
    run = Run(python, base, flags)
    try:
        run.start()
        return measure(run)
    finally:
        run.stop()


WATCHED = ("sessiond.main", "sessiond.wire.server", "sessiond.wire.methods", "asyncio",
           "sqlite3", "_ssl", "jsonrpcserver", "jsonschema", "oslash.either", "http.server",
           "platformdirs", "sdnotify", "psutil", "pyroute2")  # fmt: skip


def imports(python: str, base: Path) -> tuple[float, dict[str, float | None]]:
    """What a start imports before READY=1: total ms, and the cumulative ms of WATCHED ones
    (None: not imported)."""
    one(python, base, lambda run: run.wait_ready(), ("-X", "importtime"))
    total, found = 0.0, {}
    for line in (base / "sessiond.log").read_text().splitlines():
        if " listening on " in line:
            break  # logged right after READY=1: what follows was imported after it
        if line.startswith("import time:") and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            found[name.strip()] = int(cumulative) / 1000
            total += int(cumulative) / 1000 if not name.startswith("  ", 1) else 0.0
    return total, {name: found.get(name) for name in WATCHED}


def package(python: str) -> str:
    argv = [python, "-c", "import sessiond; print(sessiond.__file__)"]
    return subprocess.run(argv, cwd=CWD, capture_output=True, text=True).stdout.strip()


def measure(python: str, runs: int, with_imports: bool) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="sdst-"))
    try:
        one(python, base, lambda run: run.wait_ready())  # warm-up: the store, the page cache
        fast = [one(python, base, asap) for _ in range(runs)]
        late = [one(python, base, after_ready) for _ in range(runs)]
        found = imports(python, base) if with_imports else None
    except Exception:
        log = base / "sessiond.log"
        print(log.read_text(errors="replace")[-3000:] if log.exists() else "", file=sys.stderr)
        raise
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ready, answer = [r for r, _ in fast], [a for _, a in fast]
    first, later = [f for f, _ in late], [n for _, ns in late for n in ns]
    result = {
        "python": python, "package": package(python), "runs": runs, "next": NEXT,
        "exec_to_ready_ms": {"p50": pct(ready, 50), "p90": pct(ready, 90)},
        "exec_to_first_answer_ms": {"p50": pct(answer, 50), "p90": pct(answer, 90)},
        "first_request_ms": {"p50": pct(first, 50), "p90": pct(first, 90)},
        "next_requests_ms": {"p50": pct(later, 50), "p90": pct(later, 90)},
        "supervisord_first_answer_ms": SUPERVISORD_FIRST_ANSWER_MS,
    }  # fmt: skip
    if found is not None:
        result["imports_before_ready_ms"] = {"total": found[0], "modules": found[1]}
    return result


def report(r: dict[str, Any]) -> None:
    print(f"sessiond start-up: {r['runs']} runs of each kind, {r['python']}")
    print(f"  package: {r['package']}")
    rows = [
        ("exec -> READY=1", r["exec_to_ready_ms"]),
        ("exec -> first answer (asking at once)", r["exec_to_first_answer_ms"]),
        ("first request after READY=1", r["first_request_ms"]),
        (f"the {r['next']} requests after it", r["next_requests_ms"]),
    ]
    for label, v in rows:
        print(f"  {label:<40} p50 {v['p50']:7.1f} ms   p90 {v['p90']:7.1f} ms")
    ratio = r["first_request_ms"]["p50"] / r["next_requests_ms"]["p50"]
    print(f"  first request / next ones (p50): {ratio:.1f}x")
    gap = r["exec_to_first_answer_ms"]["p50"] - r["supervisord_first_answer_ms"]
    print(f"  supervisord, exec -> first answer: {r['supervisord_first_answer_ms']:.0f} ms "
          f"(sessiond p50 {gap:+.0f} ms)")  # fmt: skip
    if "imports_before_ready_ms" in r:
        imp = r["imports_before_ready_ms"]
        print(f"  imports before READY=1 (-X importtime, one run): {imp['total']:.0f} ms")
        for name, ms in imp["modules"].items():
            print(f"    {name:<16} " + ("not imported" if ms is None else f"{ms:7.1f} ms"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--python", default=PY, help=f"the interpreter to run (default {PY})")
    parser.add_argument("--imports", action="store_true", help="list start-up's biggest imports")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.python, args.runs, args.imports)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
