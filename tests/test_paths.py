"""Path rules: the stdlib mirror of platformdirs, and the systemd directories."""

from __future__ import annotations

import os
import warnings

import platformdirs
import pytest

from sessiond import paths


@pytest.mark.parametrize("setup", ["private", "missing", "unset", "shared"])
def test_user_runtime_dir_matches_platformdirs(setup, tmp_path, monkeypatch):
    runtime = tmp_path / "xdg"
    if setup == "private":
        runtime.mkdir(mode=0o700)
        os.chmod(runtime, 0o700)
    elif setup == "shared":
        runtime.mkdir()
        os.chmod(runtime, 0o755)  # not private: both fall back
    if setup == "unset":
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about each fallback
        expected = platformdirs.user_runtime_dir("sessiond")
    assert paths.user_runtime_dir(os.environ) == expected


def test_client_socket_order(monkeypatch):
    env = {"SESSIOND_SOCKET": "/env.sock"}
    assert paths.client_socket("/flag.sock", env) == "/flag.sock"
    assert paths.client_socket(None, env) == "/env.sock"
    if not os.path.exists(paths.SYSTEM_SOCKET):
        assert paths.client_socket(None, {}) == paths.user_socket({})


def test_system_dirs_come_from_systemd():
    env = {"RUNTIME_DIRECTORY": "/run/a:/run/b", "STATE_DIRECTORY": "/var/lib/x"}
    assert paths.system_socket(env) == "/run/a/sessiond.sock"
    assert paths.system_state_dir(env) == "/var/lib/x"
    assert paths.system_socket({}) == "/run/sessiond/sessiond.sock"
    assert paths.system_state_dir({}) == "/var/lib/sessiond"
