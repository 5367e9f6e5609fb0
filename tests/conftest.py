from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from etcdcluster import EtcdCluster

from harness import DaemonProcess, marked_pids


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes: pytest's tmp_path can be longer.
    root = Path(tempfile.mkdtemp(prefix="sd-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_daemon(short_tmp: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def make(config: str = "", start: bool = True, name: str = "d", **kw: object) -> DaemonProcess:
        root = short_tmp / name
        root.mkdir()
        daemon = DaemonProcess(root, config, **kw)  # type: ignore[arg-type]
        started.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in started:
        daemon.stop()
        # A test that fails half-way may leave agents behind: end them, by their marker.
        for pid in marked_pids(daemon.state_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def daemon(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    return make_daemon()


@pytest.fixture
def make_shared_daemon(make_daemon: Callable[..., DaemonProcess]) -> Callable[..., DaemonProcess]:
    """A system-mode daemon that uid 65534 may use: its group nogroup is the socket group.
    `daemon_keys` go on in its [daemon] table."""

    def make(daemon_keys: str = "", **kw: object) -> DaemonProcess:
        daemon = make_daemon('[daemon]\nsocket_group = "nogroup"\n' + daemon_keys,
                             user_mode=False, **kw)  # fmt: skip
        for path in (daemon.root.parent, daemon.root, daemon.socket.parent):
            os.chmod(path, 0o755)
        return daemon

    return make


@contextlib.contextmanager
def size_limited(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount`: a test that fills a disk or floods a log fills this."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to mount a {size} tmpfs")
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def tiny_state_dir(short_tmp: Path) -> Iterator[Path]:
    with size_limited(short_tmp / "full", "2m") as mount:
        yield mount


@pytest.fixture
def flood_dir(short_tmp: Path) -> Iterator[Path]:
    with size_limited(short_tmp / "flood", "256m") as mount:
        yield mount


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A real 3-member etcd cluster on 127.0.0.1, healthy; skipped without etcd."""
    with EtcdCluster(tmp_path / "etcd") as cluster:
        yield cluster
