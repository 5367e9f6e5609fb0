"""A real systemd 252, booted in a throw-away systemd-nspawn container, with sessiond installed.

`tests/systemd/container.sh` does the container: it boots Debian's systemd as
PID 1 of an nspawn container on an overlay of a cached Debian rootfs (built
once under /tmp/sysd; the script apt-installs systemd-container and
debootstrap on the host first if they are missing), runs commands inside with
nsenter, and tears it all down. Here: the skip rules, the wheels, the install
steps, and small helpers that run systemctl, journalctl and sessionc inside.

`INSTALL_STEPS` are the system install exactly as a user types it, as root in
the checkout (the README shows them): the tests run these very strings. The
wheels come from `HOST_STEPS`, which the tests run with their own interpreter
on a copy of the sources.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from harness import wait_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "systemd" / "container.sh"
SRC = "/src"  # the checkout, bound read-only inside the container
WHEELS = "/var/tmp/sessiond-wheels"  # the wheels built on the host, bound read-only

# In the checkout, on a machine with network: sessiond's wheel and its dependencies'.
HOST_STEPS = [f"python3 -m pip wheel -w {WHEELS} ."]
# On the target, as root, in the checkout, with those wheels in the same place.
INSTALL_STEPS = [
    "python3 -m venv /opt/sessiond",
    f"/opt/sessiond/bin/pip install --no-index --find-links {WHEELS} sessiond",
    "ln -sf /opt/sessiond/bin/sessiond /opt/sessiond/bin/sessionc /usr/local/bin/",
    "cp -r /opt/sessiond/share/man /usr/local/share/",
    "install -m 0644 contrib/systemd/sessiond.service contrib/systemd/sessiond.socket"
    " /etc/systemd/system/",
    "install -D -m 0644 contrib/systemd/sysusers.d/sessiond.conf /etc/sysusers.d/sessiond.conf",
    "install -D -m 0644 contrib/systemd/tmpfiles.d/sessiond.conf /etc/tmpfiles.d/sessiond.conf",
    "systemd-sysusers sessiond.conf",
    "systemd-tmpfiles --create sessiond.conf",
    "systemctl daemon-reload",
    "systemctl enable --now sessiond.socket",
]
# The example timer and the user units, each installed the same way.
TIMER_STEPS = [
    "install -m 0644 contrib/systemd/sessiond-nightly.timer"
    " contrib/systemd/sessiond-nightly.service /etc/systemd/system/",
    "systemctl daemon-reload",
]
USER_UNIT_STEPS = [
    "install -D -m 0644 -t /etc/systemd/user contrib/systemd/user/sessiond.service"
    " contrib/systemd/user/sessiond.socket",
]

BOOT_TIMEOUT = 600.0  # a first run debootstraps the rootfs (a minute or two)


class Unavailable(Exception):
    """The host cannot run the container (not root, tools missing): a reason to skip."""


def check_host() -> None:
    """Raise Unavailable unless this host can boot the container; install the tools if needed."""
    if os.geteuid() != 0:
        raise Unavailable("needs root: boots systemd in a systemd-nspawn container")
    if not shutil.which("nsenter"):
        raise Unavailable("needs nsenter (util-linux)")
    if shutil.which("systemd-nspawn") and shutil.which("debootstrap"):
        return
    if not shutil.which("apt-get"):
        raise Unavailable("needs systemd-nspawn and debootstrap, and there is no apt-get here")
    # The script's build step apt-installs them (and then builds the cached rootfs).
    done = script("build", timeout=BOOT_TIMEOUT)
    if not (shutil.which("systemd-nspawn") and shutil.which("debootstrap")):
        raise Unavailable(
            "unable to install systemd-container and debootstrap with apt-get: "
            + done.stderr.strip()[-500:]
        )


def script(*args: str, timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    """tests/systemd/container.sh ARGS… (run by bash: it need not be executable)."""
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, **kw
    )


def build_wheels(dest: Path) -> None:
    """HOST_STEPS, from a copy of the sources (an in-tree build would write build/ here)."""
    src = dest.parent / "src"
    junk = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*junk))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "-w", str(dest), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"pip wheel failed (no network and no pip cache?):\n{done.stderr}")


class Container:
    """One booted container; every command runs inside it as root with a clean environment."""

    def __init__(self, name: str, binds: dict[str, str]) -> None:
        self.name = name
        binds_ro = " ".join(f"{host}:{inside}" for host, inside in binds.items())
        self.env = {**os.environ, "NAME": name, "BIND_RO": binds_ro}

    # -- lifecycle -----------------------------------------------------------

    def boot(self) -> None:
        self._script("boot", timeout=BOOT_TIMEOUT)

    def teardown(self) -> None:
        self._script("teardown", timeout=120, check=False)

    def _script(self, *args: str, timeout: float, check: bool = True) -> None:
        done = script(*args, timeout=timeout, env=self.env)
        if check and done.returncode != 0:
            raise AssertionError(f"container.sh {' '.join(args)} failed:\n{done.stderr}")

    # -- commands ------------------------------------------------------------

    def run(self, *cmd: str, check: bool = True, timeout: float = 60.0,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        done = script("exec", *cmd, timeout=timeout, env=self.env, input=stdin)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{shlex.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def sh(self, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, **kw)

    def steps(self, steps: list[str], cwd: str = SRC) -> None:
        """Run install steps one by one (each must succeed), as a user would type them."""
        for step in steps:
            self.sh(f"cd {cwd} && {step}", timeout=120)

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("sh", "-c", f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode} {path}',
                 stdin=text)  # fmt: skip

    def as_user(self, user: str, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("runuser", "-u", user, "--", *cmd, **kw)

    # -- systemd -------------------------------------------------------------

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.run("systemctl", "--no-pager", *args, check=check).stdout.strip()

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit)

    def is_active(self, unit: str) -> str:
        return self.systemctl("is-active", unit, check=False)

    def wait_state(self, unit: str, active: str, sub: str, timeout: float = 15.0) -> None:
        def reached() -> bool:
            out = self.systemctl("show", "-p", "ActiveState", "-p", "SubState", unit)
            return out.split() == [f"ActiveState={active}", f"SubState={sub}"]

        wait_for(reached, timeout, f"{unit} {active} ({sub})")

    def journal(self, unit: str, *args: str) -> list[dict[str, Any]]:
        out = self.run("journalctl", "-u", unit, "--no-pager", "-o", "json", *args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_journal(self, unit: str, message: str, timeout: float = 15.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.journal(unit) if e.get("MESSAGE") == message), None)

        return wait_for(found, timeout, f"journal line {message!r} of {unit}")

    # -- sessiond ------------------------------------------------------------

    def sessionc(self, *args: str, user: str | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        cmd = ("sessionc", *args)
        if user is not None:
            return self.as_user(user, *cmd, check=check)
        return self.run(*cmd, check=check)

    def sessionc_json(self, *args: str, user: str | None = None) -> Any:
        return json.loads(self.sessionc("--json", *args, user=user).stdout)

    def proc_status(self, pid: int) -> dict[str, str]:
        out = self.run("cat", f"/proc/{pid}/status").stdout
        return {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}

    def alive(self, pid: int) -> bool:
        done = self.run("cat", f"/proc/{pid}/stat", check=False)
        return done.returncode == 0 and done.stdout.rsplit(")", 1)[1].split()[0] != "Z"

    def marked_pids(self, instance: str = "/var/lib/sessiond") -> list[int]:
        """Live processes in the container that carry the agent marker of `instance`."""
        code = (
            "import os, sys\n"
            "needle = b'SESSIOND_INSTANCE=' + sys.argv[1].encode()\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        env = open(f'/proc/{pid}/environ', 'rb').read().split(b'\\0')\n"
            "        state = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0]\n"
            "    except OSError:\n"
            "        continue\n"
            "    if needle in env and state != 'Z':\n"
            "        print(pid)\n"
        )
        return sorted(int(p) for p in self.run("python3", "-c", code, instance).stdout.split())


def unique_name() -> str:
    return "sdt-" + uuid.uuid4().hex[:8]
