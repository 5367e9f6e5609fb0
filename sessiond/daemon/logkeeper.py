"""The log keeper: a small process that writes every agent's output to its files.

Why a process of its own (issue 9): an agent that writes flat out (`yes`)
must cost the daemon nothing. An agent's stdout and its stderr are the write
ends of two pipes; the keeper holds the read ends, writes what comes to
STATE/logs/SESSION/AGENT.log, each line stamped with when it came and from
which stream (`LINE_FORMAT`), and rotates by renaming, never by copying: the
file is rotated before a write would take it past `max_bytes`, so an agent's
logs never take more than max_bytes * files on disk, and a rotation costs
three renames whatever the size. An agent that writes faster than the disk
takes fills its pipe and is slowed by the kernel, as under s6-log or
journald. New output is dropped (counted, and said once) only while the
filesystem is nearly full, so that logs never take the store's last space.

The keeper and the daemon each hold the read end of every pipe, so that an
agent never gets EPIPE when one of them dies: the keeper goes on writing
while the daemon is down (nothing written is lost across a daemon `kill -9`,
in user mode as under systemd), and a keeper that died is started again by
the daemon and handed the pipes again. A new daemon asks the running keeper
for its pipes (`give`).

Talk is JSON over a SOCK_SEQPACKET Unix socket in the state directory, one
message a packet, pipes passed with SCM_RIGHTS; only the daemon's uid is
answered. Since PROTOCOL 2 one `keep` hands every stream of a run (`streams`,
a pipe each); a daemon learns the version of a keeper it did not start from
the `end` of `give`, and hands an older one a pipe a packet (`stream`), as it
does a keeper it starts from a package that changed on disk since it started.
The keeper is stdlib-only and imports little: it starts in ~20 ms.
It ends once no daemon is connected and every pipe has reached its end.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

SOCKET_NAME = "logkeeper.sock"
PROTOCOL = 2  # 1: a pipe a `keep`; 2: also a run's pipes in one (half the packets)
PACKET_MAX = 65536
READ_CHUNK = 65536  # per pipe and turn: a flood cannot starve the other agents
RESERVE_MAX = 64 << 20  # logs leave this much free (or a tenth of a small filesystem)
CHECK_EVERY = 1 << 20  # bytes written between two looks at the free space
LINE_MAX = 65536  # a longer line is written in pieces of this size: a pipe holds no more
LINE_FORMAT = "TIME STREAM TEXT"  # TIME: RFC 3339 UTC, milliseconds, when the keeper read it
STAMP_SIZE = len("2026-12-02T22:19:13.123Z")
STREAMS = ("out", "err")  # stdout, stderr


def stamp(now: float) -> str:
    """The time of a line as its log shows it: RFC 3339 UTC to the millisecond."""
    seconds = int(now)
    millis = int((now - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


@dataclass
class LogFile:
    """One agent's log: the live file, rotated by rename before it passes max_bytes."""

    path: str
    max_bytes: int
    files: int
    fd: int = -1
    size: int = 0
    pipes: int = 0
    unchecked: int = 0
    dropped: int = 0
    full: bool = False

    def open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.fd = os.open(self.path, flags, 0o600)
        self.size = os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def write(self, data: bytes) -> None:
        try:
            if self.fd < 0:
                self.open()  # it could not be opened (or reopened) before
            if self._no_room(len(data)):
                return
            while data:
                room = self.max_bytes - self.size
                if room <= 0:
                    self.rotate()
                    continue
                piece = data[:room]
                if len(data) > room and (cut := piece.rfind(b"\n")) >= 0:
                    piece = piece[: cut + 1]  # a line is not split across two files
                written = os.write(self.fd, piece)
                self.size += written
                data = data[written:]
        except OSError as exc:
            self._lost(len(data), exc.strerror or str(exc))

    def rotate(self) -> None:
        """AGENT.log → AGENT.log.1 → … → AGENT.log.(files-1); the oldest is gone."""
        if self.files > 1:
            for n in range(self.files - 1, 1, -1):
                older = f"{self.path}.{n - 1}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{n}")
            os.replace(self.path, f"{self.path}.1")
            self.close()
            self.open()
        else:
            os.ftruncate(self.fd, 0)
            self.size = 0

    def _no_room(self, coming: int) -> bool:
        self.unchecked += coming
        if self.unchecked < CHECK_EVERY and not self.full:
            return False
        self.unchecked = 0
        vfs = os.fstatvfs(self.fd)
        total, free = vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize
        self.full = free < min(RESERVE_MAX, total // 10)
        if self.full:
            self._lost(coming, "the filesystem is nearly full")
        elif self.dropped:
            say(5, f"{self.path}: writing again, after dropping {self.dropped} bytes")
            self.dropped = 0
        return self.full

    def _lost(self, count: int, why: str) -> None:
        if not self.dropped:
            say(4, f"{self.path}: dropping agent output: {why}")
        self.dropped += count


@dataclass
class Pipe:
    """One stream of one agent run: its lines, stamped, to the agent's log."""

    key: str
    log: LogFile
    stream: str
    partial: bytes = b""  # the start of a line whose end has not come yet

    def take(self, data: bytes) -> None:
        """Write the complete lines of what came; keep the start of the next."""
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) >= LINE_MAX:  # too long to wait for its end
            lines.append(self.partial)
            self.partial = b""
        self._write(lines)

    def end(self) -> None:
        """The pipe reached its end: a last line without its newline is a line too."""
        if self.partial:
            self._write([self.partial])
            self.partial = b""

    def _write(self, lines: list[bytes]) -> None:
        if lines:
            prefix = f"{stamp(time.time())} {self.stream} ".encode()
            self.log.write(prefix + (b"\n" + prefix).join(lines) + b"\n")


@dataclass
class Keeper:
    listener: socket.socket
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    daemon: socket.socket | None = None
    logs: dict[str, LogFile] = field(default_factory=dict)  # by key SESSION/AGENT
    pipes: dict[int, Pipe] = field(default_factory=dict)  # by read fd

    def run(self) -> None:
        self._accept(self.listener)  # the daemon that started us connected before it did
        self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        while self.daemon is not None or self.pipes:
            for key, _ in self.selector.select():
                key.data(key.fileobj)
        for log in self.logs.values():
            log.close()

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.geteuid():
            conn.close()  # the socket is 0600 in a private directory; this is belt and braces
            return
        if self.daemon is not None:  # a new daemon: the old one is gone or going
            self._drop_daemon()
        self.daemon = conn
        self.selector.register(conn, selectors.EVENT_READ, self._message)

    def _drop_daemon(self) -> None:
        assert self.daemon is not None
        self.selector.unregister(self.daemon)
        self.daemon.close()
        self.daemon = None

    def _message(self, conn: socket.socket) -> None:
        if conn is not self.daemon:  # the old daemon's, in the round a new one came in
            return
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, PACKET_MAX, len(STREAMS))
        except OSError:
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            self._drop_daemon()
            return
        message = json.loads(data)
        op = message.get("op")
        if op == "keep":
            self._keep_run(message, fds)
        elif op == "limits":
            for log in self.logs.values():
                log.max_bytes, log.files = message["max_bytes"], message["files"]
        elif op == "give":
            self._give(conn)
        else:
            for fd in fds:
                os.close(fd)

    def _keep_run(self, message: dict[str, object], fds: list[int]) -> None:
        """A run's pipes (`streams`, PROTOCOL 2), or one of them (`stream`), one fd each."""
        given = message.get("streams")
        streams = given if isinstance(given, list) else [message.get("stream")]
        for stream, fd in zip(streams, fds, strict=False):
            self._keep(message, str(stream), fd)
        for fd in fds[len(streams) :]:
            os.close(fd)
        if len(fds) < len(streams):  # no fd left here (RLIMIT_NOFILE)
            say(3, f"unable to keep the log of {message.get('key')}: its pipe was not received")

    def _keep(self, message: dict[str, object], stream: str, fd: int) -> None:
        key, path = str(message["key"]), str(message["path"])
        if stream not in STREAMS:
            say(3, f"unable to keep the log of {key}: unknown stream {stream!r}")
            os.close(fd)
            return
        log = self.logs.get(key)
        if log is None or log.path != path:
            # Opened (made) at the agent's first output, not here: an agent that never writes
            # costs no file, and a launch does not wait for a disk that is slow to make them
            # (0.6 ms a file on the test VM: 200 agents started 60-120 ms sooner without).
            log = LogFile(path, int(str(message["max_bytes"])), int(str(message["files"])))
            self.logs[key] = log
        log.pipes += 1
        os.set_blocking(fd, False)
        self.pipes[fd] = Pipe(key, log, stream)
        self.selector.register(fd, selectors.EVENT_READ, self._drain)

    def _give(self, conn: socket.socket) -> None:
        """Hand a (new) daemon every pipe kept, so that it holds their read ends too."""
        for fd, pipe in self.pipes.items():
            kept = {"op": "kept", "key": pipe.key, "path": pipe.log.path, "stream": pipe.stream}
            socket.send_fds(conn, [json.dumps(kept).encode()], [fd])
        conn.send(json.dumps({"op": "end", "pid": os.getpid(), "version": PROTOCOL}).encode())

    def _drain(self, fd: int) -> None:
        pipe = self.pipes[fd]
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        if data:
            pipe.take(data)
            return
        pipe.end()
        self.selector.unregister(fd)
        os.close(fd)
        del self.pipes[fd]
        pipe.log.pipes -= 1
        if pipe.log.pipes == 0:
            pipe.log.close()
            del self.logs[pipe.key]


def say(priority: int, text: str) -> None:
    """A line for the journal, at its syslog priority (the daemon's own format)."""
    sys.stderr.write(f"<{priority}>sessiond log keeper: {text}\n")
    sys.stderr.flush()


def main() -> int:
    """python -m sessiond.daemon.logkeeper FD: serve the listening socket inherited as FD."""
    listener = socket.socket(fileno=int(sys.argv[1]))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # three fds an agent, here
    os.nice(10)  # a flood of output must lose to the daemon's answers, not the other way
    try:
        Keeper(listener).run()
    except Exception as exc:  # noqa: BLE001 -- said to the journal; the daemon starts another
        say(3, f"unable to go on: {exc!r}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
