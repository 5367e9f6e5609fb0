"""An honest READY=1 (SPEC §8): sent with no start-up work left, so the first request costs
what the next ones do; and start-up loads only what serving needs."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import warnings

import platformdirs
import pytest

from harness import DaemonProcess, raw_connection, read_line
from sessiond.daemon import instance

PING = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}\n'


def ping_ms(daemon: DaemonProcess) -> float:
    """connect → reply of one daemon.ping on a fresh connection, as sessionc makes them."""
    t = time.perf_counter()
    sock = raw_connection(daemon.socket)
    sock.sendall(PING)
    reply = read_line(sock, bytearray())
    sock.close()
    assert reply is not None and reply["result"]["pid"] == daemon.proc.pid
    return (time.perf_counter() - t) * 1000


def test_the_first_request_after_ready_costs_what_the_next_do(daemon):
    first = ping_ms(daemon)  # the harness returns as READY=1 arrives
    median = statistics.median(ping_ms(daemon) for _ in range(20))
    assert first < 10 * median + 50, f"first {first:.1f} ms, then a median of {median:.2f} ms"


class ImportTraced(DaemonProcess):
    """A daemon under `python -X importtime`: stderr (its log) names each module it imports
    as the import ends, so the log read when READY=1 arrives lists what start-up loaded."""

    def command(self) -> list[str]:
        cmd = super().command()
        at = cmd.index(sys.executable) + 1
        return [*cmd[:at], "-X", "importtime", *cmd[at:]]


def imported(log: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines()
            if line.startswith("import time:") and "|" in line}  # fmt: skip


def test_at_ready_the_dispatcher_is_loaded_and_nothing_unused(short_tmp):
    (short_tmp / "d").mkdir()
    daemon = ImportTraced(short_tmp / "d")
    try:
        daemon.start()
        loaded = imported(daemon.log())
    finally:
        daemon.stop()
    assert {"sessiond.wire.methods", "jsonrpcserver", "jsonrpcserver.async_dispatcher"} <= loaded
    # jsonrpcserver's jsonschema validator and HTTP server go unused, its schema file is
    # read plainly, and of oslash all but Either; psutil is not used (gauges.py reads
    # /proc/PID/stat), pyroute2 waits for a session that needs the network; platformdirs
    # has a stdlib mirror for the daemon's paths; session ids need no uuid (nor platform),
    # random tokens no secrets (nor hmac, random); only pruning needs shutil (nor bz2);
    # asyncio is loaded without ssl (sessiond.launch): its attempts to import ssl are
    # logged, but _ssl (OpenSSL) never loads.
    unused = {"jsonschema", "http.server", "psutil", "pyroute2", "platformdirs",
              "importlib.resources", "zipfile", "uuid", "platform", "secrets", "hmac",
              "random", "shutil", "bz2", "lzma", "_ssl", "oslash.state",
              "oslash.list", "oslash.ioaction", "oslash._version"}  # fmt: skip
    assert "oslash.either" in loaded
    assert loaded & unused == set()


def test_oslash_is_whole_to_whoever_imports_it_after_the_dispatcher():
    code = (
        "import sessiond.wire.dispatch, sys\n"
        "from jsonrpcserver.result import Right\n"
        "assert 'oslash.state' not in sys.modules\n"
        "import oslash\n"
        "from oslash import Just, State\n"
        "assert oslash.Right is Right and oslash.either.Right is Right\n"
        "print(Just(3), oslash.__version__)\n"
    )
    assert fresh_python(code).startswith("Just 3 ")


def fresh_python(code: str) -> str:
    """What `python -c CODE` prints, run in / (the installed package), which must succeed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importlib_resources_is_the_real_one_to_whoever_imports_it_after_the_dispatcher():
    code = (
        "import sessiond.wire.dispatch, sys, json\n"
        "import jsonrpcserver.main\n"
        "assert 'importlib.resources' not in sys.modules\n"
        "import importlib.resources\n"
        "real = importlib.resources.files('jsonrpcserver') / 'request-schema.json'\n"
        "assert json.loads(real.read_text()) == jsonrpcserver.main.schema\n"
        "print(importlib.resources.__file__)\n"
    )
    assert fresh_python(code).rstrip().endswith("importlib/resources/__init__.py")


def test_the_daemon_loads_with_the_collector_off_and_its_code_frozen_after():
    code = (
        "import gc, json, sys\n"
        "passes = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and passes.append(info))\n"
        "from sessiond import launch\n"
        "before = len(passes)\n"
        "main = launch.load()\n"
        "import sessiond.main, sessiond.daemon.app\n"
        "print(json.dumps({'passes': len(passes) - before, 'enabled': gc.isenabled(),\n"
        "    'main': main is sessiond.main.main, 'frozen': gc.get_freeze_count(),\n"
        "    'app': any(o is sessiond.daemon.app.App for o in gc.get_objects()),\n"
        "    'ssl': 'ssl' in sys.modules}))\n"
    )
    facts = json.loads(fresh_python(code))
    assert facts["passes"] == 0, "the collector ran while the daemon loaded"
    assert facts["enabled"] and facts["main"]
    # Frozen objects are in no generation: the collector never walks the daemon's classes.
    assert facts["frozen"] > 10_000 and not facts["app"]
    assert not facts["ssl"]


def test_only_asyncio_loads_without_ssl_and_ssl_is_real_to_whoever_imports_it_after():
    code = (
        "import sys\n"
        "from sessiond import launch\n"
        "launch.load()\n"
        "print(sorted(name for name, module in list(sys.modules.items())\n"
        "             if getattr(module, 'ssl', 0) is None))\n"
        "import ssl\n"
        "print(ssl.create_default_context().protocol.name)\n"
    )
    without, protocol = fresh_python(code).splitlines()
    assert without == str(["asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto"])
    assert protocol.startswith("PROTOCOL_TLS")


def test_a_load_that_fails_leaves_the_collector_on_and_ssl_importable():
    code = (
        "import gc, sys\n"
        "from sessiond import launch\n"
        "sys.modules['sessiond.main'] = None  # its import raises ImportError\n"
        "try:\n"
        "    launch.load()\n"
        "except ImportError:\n"
        "    print(gc.isenabled(), 'ssl' in sys.modules and sys.modules['ssl'] is None)\n"
    )
    assert fresh_python(code).split() == ["True", "False"]


@pytest.mark.parametrize("xdg", [None, "/somewhere/state", "relative/state", ""])
def test_user_state_dir_matches_platformdirs(xdg, monkeypatch):
    if xdg is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", xdg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = platformdirs.user_state_dir("sessiond")
    assert instance.user_state_dir() == expected
