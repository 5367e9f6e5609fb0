"""sessiond: the wiring of lock, store, socket, signals and sd_notify.

Start-up order matters (STYLE 11, 12): take the state directory's instance
lock, open the store and load the live session, and only then touch the
socket path (or take the socket systemd passed); `READY=1` goes out once the
socket listens with nothing left to load (SPEC §8): the JSON-RPC dispatcher
came with `server`, so the first request costs what any later one does. What
start-up imports is kept to what serving needs; `bench/startup.py` measures it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

from sessiond import __version__, log
from sessiond.config import ConfigError, resolve_config, summary
from sessiond.core.settings import ClusterSettings, Config
from sessiond.daemon import procs
from sessiond.daemon.access import group_id
from sessiond.daemon.app import App
from sessiond.daemon.clock import SystemClock
from sessiond.daemon.cluster import status_line
from sessiond.daemon.crew import Crew
from sessiond.daemon.fleet import Fleet
from sessiond.daemon.instance import DaemonPaths, InstanceLock, daemon_paths
from sessiond.daemon.journal import Journal
from sessiond.daemon.locks.pick import describe, lock_for
from sessiond.daemon.netwatch import NetWatch
from sessiond.daemon.processes import Processes
from sessiond.daemon.sessions import Sessions
from sessiond.daemon.store import Store
from sessiond.errors import SessiondError, StartupError
from sessiond.terminal import help_formatter
from sessiond.wire.server import Limits, Server

logger = logging.getLogger("sessiond")
SD_LISTEN_FDS_START = 3


class Notifier:
    """sd_notify, when systemd asked for it; silent otherwise."""

    def __init__(self) -> None:
        self._notifier: Any = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify  # noqa: PLC0415 -- only under systemd

            self._notifier = sdnotify.SystemdNotifier()
            if self._notifier.socket is not None:
                # sdnotify sends blocking; a notify socket nobody reads would then freeze
                # the event loop. Drop a message rather than stop serving.
                self._notifier.socket.setblocking(False)

    def __call__(self, *lines: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(lines))


# Test-only: with this set to 1, SIGUSR2 blocks the event loop for good, so a test
# can watch systemd's watchdog restart a hung daemon. Nothing else can hang it.
HANG_SWITCH = "SESSIOND_TEST_HANG"


def hang() -> None:
    logger.warning("SIGUSR2 with %s=1: blocking the event loop until killed", HANG_SWITCH)
    while True:
        time.sleep(3600)


def daemon_host(cluster: ClusterSettings) -> str:
    """This daemon's name on its sessions and in the cluster (SPEC §10)."""
    return cluster.host or socket.gethostname()


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


class Daemon:
    def __init__(
        self, config: Config, paths: DaemonPaths, user_mode: bool, config_path: str | None
    ) -> None:
        self.config = config
        self.paths = paths
        self.user_mode = user_mode
        self.config_path = config_path
        self.clock = SystemClock()
        self.started = self.clock.monotonic()
        self.notify = Notifier()
        self.host = daemon_host(config.cluster)  # [cluster] applies at start only
        self.admin_gid = group_id(config.daemon.admin_group)
        self.stopping = asyncio.Event()
        self.store: Store | None = None
        self.manager: Sessions  # set in run(), before the socket exists
        self.server: Server | None = None
        self.bound_socket = False
        self.netwatch: asyncio.Task[None] | None = None
        self.listening: socket.socket | None = None
        self._about: tuple[DaemonPaths, dict[str, Any]] | None = None

    def about(self) -> dict[str, Any]:
        """The daemon in a ping or a status: but its uptime, made once for its paths."""
        if self._about is None or self._about[0] is not self.paths:
            self._about = (
                self.paths,
                {
                    "version": __version__,
                    "pid": os.getpid(),
                    "mode": "user" if self.user_mode else "system",
                    "socket": str(self.paths.socket),
                    "state_dir": str(self.paths.state_dir),
                },
            )
        return {**self._about[1], "uptime": round(self.clock.monotonic() - self.started, 3)}

    def cluster(self) -> dict[str, Any]:
        """Whose lock this daemon shares (SPEC §10), and whether it answers."""
        return describe(self.manager.lock)

    async def run(self) -> None:
        self.paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        InstanceLock(self.paths.state_dir, self.user_mode).acquire()
        self.store = Store.open(self.paths.state_dir)
        sock = self._listening_socket()
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            ticking = tg.create_task(self.clock.run())
            self.manager = self._sessions(tg)
            if not procs.become_subreaper():
                logger.warning("unable to become a child subreaper: escaped agent children "
                               "will be re-parented to init")  # fmt: skip
            loop.add_signal_handler(signal.SIGCHLD, self.manager.fleet.supervisor.reap)
            self.manager.load()
            self.manager.prune()
            server = self.server = self._server(tg)
            listener = await loop.create_unix_server(
                server.connection, sock=sock, backlog=self._backlog()
            )
            self.listening = sock
            self._install_signals()
            self.notify("READY=1", self._status_line())
            logger.info("sessiond %s listening on %s (state in %s)", __version__,
                        self.paths.socket, self.paths.state_dir)  # fmt: skip
            watchdog = tg.create_task(self._watchdog())
            await self.stopping.wait()
            self.notify("STOPPING=1", "STATUS=stopping")
            listener.close()
            server.close_all()
            watchdog.cancel()
            if self.netwatch is not None:
                self.netwatch.cancel()
            await self.manager.shutdown(self.config.daemon.on_shutdown)
            await self.manager.lock.close()
            self.manager.fleet.keeper.close()
            ticking.cancel()  # after the shutdown, whose timers may still be due
        self._remove_socket()
        self.store.close()
        procs.unhook(loop)  # before asyncio.run closes the loop

    def _sessions(self, tg: asyncio.TaskGroup) -> Sessions:
        """The sessions, their fleet and the lock, on the store, clock and journal."""
        assert self.store is not None  # opened in run()
        d = self.config.daemon
        crew = Crew(self.paths.state_dir, str(self.paths.socket))
        journal = Journal(self.store, self, self.clock)
        fleet = Fleet(journal, crew, Processes(crew.instance), self.clock,
                      (d.log_max_bytes, d.log_files))  # fmt: skip
        lock = lock_for(self.config.cluster, self.host, self.clock, tg.create_task,
                        journal.next_fence)  # fmt: skip
        sessions = Sessions(self.config, journal, fleet, lock, tg.create_task,
                            clock=self.clock, host=self.host)  # fmt: skip
        sessions.on_change = lock.on_change = self._status
        sessions.net.watch_network = lambda: self._watch_network(tg)
        return sessions

    # -- the manager's outlet: events and log lines to subscribers and the journal

    def publish(self, event: dict[str, Any]) -> None:
        logger.log(log.priority(event), "%s", event["message"])
        if self.server is not None:
            self.server.broadcast(("events",), "event", event)

    def publish_lines(self, session: str, entries: list[dict[str, Any]],
                      topics: tuple[str, ...]) -> None:  # fmt: skip
        if self.server is not None:
            for entry in entries:
                self.server.broadcast(topics, "log", {**entry, "session": session})

    def wants(self, *topics: str) -> bool:
        return self.server is not None and self.server.wants(*topics)

    # -- socket --------------------------------------------------------------

    def _server(self, tg: asyncio.TaskGroup) -> Server:
        """The socket's server, and the app its handlers call: each handed what it acts on."""
        assert self.store is not None  # opened in run(), before the socket exists
        app = App(
            sessions=self.manager, fleet=self.manager.fleet, store=self.store,
            facts=self.manager.fleet.gauges.facts, clock=self.clock, about=self.about,
            cluster=self.cluster, config=lambda: self.config, admin_gid=lambda: self.admin_gid,
        )  # fmt: skip
        return Server(app, self._limits(), tg.create_task, self.clock)

    def _backlog(self) -> int:
        # A burst of clients must queue, not fail: a non-blocking connect() gets EAGAIN
        # once the backlog is full (the kernel caps it at net.core.somaxconn).
        return max(128, self.config.daemon.max_clients)

    def _limits(self) -> Limits:
        d = self.config.daemon
        return Limits(d.max_clients, d.max_clients_per_user, d.idle_client_timeout,
                      d.max_request_bytes, d.client_timeout)  # fmt: skip

    def _apply_limits(self) -> None:
        """A reload's client limits and log rotation, for what comes next."""
        d = self.config.daemon
        if self.server is not None:
            self.server.limits = self._limits()
        if self.listening is not None:
            self.listening.listen(self._backlog())  # Linux takes a new backlog as it listens
        self.manager.fleet.keeper.limits(d.log_max_bytes, d.log_files)

    def _listening_socket(self) -> socket.socket:
        if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
            logger.info("using the socket passed by systemd")
            sock = socket.socket(fileno=SD_LISTEN_FDS_START)
            sock.setblocking(False)
            self.paths = dataclasses.replace(self.paths, socket=Path(sock.getsockname()))
            return sock
        path = self.paths.socket
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if self.user_mode else 0o755)
        self._clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        except OSError as exc:
            raise StartupError(
                f"unable to bind {path}: {exc.strerror}",
                "check that its directory exists and is writable",
            ) from None
        finally:
            os.umask(old)
        self.bound_socket = True
        self._set_socket_mode()
        sock.listen(self._backlog())
        sock.setblocking(False)
        return sock

    def _clear_stale(self, path: Path) -> None:
        """Remove a dead daemon's socket file; refuse to touch a live one's."""
        try:
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise StartupError(
                    f"unable to bind {path}: a file that is not a socket is there",
                    "remove it, or pass another --socket",
                )
        except FileNotFoundError:
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise StartupError(
            f"unable to bind {path}: another sessiond is answering on it",
            "stop that daemon first, or pass another --socket",
        )

    def _set_socket_mode(self) -> None:
        if self.user_mode or not self.bound_socket:
            return
        group = self.config.daemon.socket_group
        gid = group_id(group)
        if gid is None:
            logger.warning("socket group '%s' does not exist: serving root only (0600); create "
                           "it with 'groupadd --system %s' and reload", group, group)  # fmt: skip
            os.chmod(self.paths.socket, 0o600)
            return
        os.chown(self.paths.socket, -1, gid)
        os.chmod(self.paths.socket, 0o660)

    def _remove_socket(self) -> None:
        if self.bound_socket:
            self.paths.socket.unlink(missing_ok=True)

    # -- signals, status, watchdog -------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if os.environ.get(HANG_SWITCH) == "1":
            loop.add_signal_handler(signal.SIGUSR2, hang)
        procs.wake_only()  # after the last add_signal_handler, which sets the fd anew

    def _on_stop_signal(self, name: str) -> None:
        logger.info("%s received: shutting down", name)
        self.stopping.set()

    def reload(self) -> None:
        self.notify("RELOADING=1", "STATUS=reloading the configuration")
        try:
            config = resolve_config(self.config_path, not self.user_mode, os.environ)
        except ConfigError as exc:
            logger.error("reload refused, keeping the running configuration: %s", exc.message)
        else:
            if config.cluster != self.config.cluster:  # the lock service is built once, at start
                logger.warning("[cluster] changed: it applies at the next start, not on reload")
                config = dataclasses.replace(config, cluster=self.config.cluster)
            self.config = self.manager.config = config
            self.admin_gid = group_id(config.daemon.admin_group)
            self._set_socket_mode()
            self._apply_limits()
            logger.info("configuration reloaded from %s", config.source or "embedded defaults")
        self.notify("READY=1", self._status_line())

    def _watch_network(self, tg: asyncio.TaskGroup) -> None:
        if self.netwatch is None:
            manager = self.manager
            watch = NetWatch(manager.net.network, manager.net.blind, self._network_grace,
                             self.clock, tg.create_task)  # fmt: skip
            self.netwatch = tg.create_task(watch.run())

    def _network_grace(self) -> float:
        return self.config.daemon.network_grace  # read each time: a reload may change it

    def _status_line(self) -> str:
        live, manager = self.manager.live, self.manager
        agents = len(manager.fleet.crew.agents(live.id)) if live else 0
        return status_line(live, agents, manager.lock)

    def _status(self) -> None:
        self.notify(self._status_line())

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sessiond",
        description="Session lock and agent supervisor daemon.",
        formatter_class=help_formatter(argparse.HelpFormatter),
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file")
    parser.add_argument("--socket", metavar="PATH", help="listen on this socket path")
    parser.add_argument("--state-dir", metavar="PATH", help="store and agent logs here")
    parser.add_argument("--user", action="store_true", help="run in user mode")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument("--log-level", choices=log.LEVELS, default="info")
    parser.add_argument("--version", action="version", version=f"sessiond {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log.setup(args.log_level)
    procs.raise_fd_limit()
    try:
        config = resolve_config(args.config, not args.user, os.environ)
        if args.check_config:
            print(summary(config))
            return 0
        paths = daemon_paths(args.user, args.socket, args.state_dir)
        asyncio.run(Daemon(config, paths, args.user, args.config).run())
    except ConfigError as exc:
        print(f"sessiond: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    except SessiondError as exc:
        logger.error("%s", exc.message)
        logger.error("hint: %s", exc.hint)
        return 1
    return 0
