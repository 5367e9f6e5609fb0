from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import DaemonProcess


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


@pytest.fixture
def daemon(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    return make_daemon()
