"""The SQLite store: schema, migrations, durable transactions. No rules.

WAL mode with synchronous=FULL: a transaction that returned has reached the
disk, so a reply sent after it survives `kill -9` and a power cut. Every
write goes through `transaction()`, which turns SQLite's disk-full and
read-only failures into `StorageError` and rolls back, so a failed write
changes nothing. The schema is versioned with `PRAGMA user_version`;
`MIGRATIONS[n]` takes a store from version n to n+1.

A partial unique index keeps at most one live session in the table itself:
the lock survives a daemon restart because it *is* this row.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sessiond.daemon.schema import MIGRATIONS, TERMINAL_STATES
from sessiond.errors import StorageError

DB_NAME = "sessiond.db"
CHECKPOINTS_KEPT = 10
# A session keeps its newest EVENTS_KEPT events (the machine's own, too): a client
# joining and leaving in a loop cannot grow the store without bound.
EVENTS_KEPT = 100_000
EVENTS_TRIM_EVERY = 1000
SCHEMA_VERSION = len(MIGRATIONS)

SESSION_COLUMNS = [
    "id",
    "name",
    "state",
    "owner_uid",
    "owner_user",
    "owner_pid",
    "owner_tty",
    "template",
    "parent",
    "settings",
    "metrics",
    "created_at",
    "started_at",
    "last_activity",
    "closed_at",
    "close_reason",
    "pause_reason",
    "errors_reset_at",
    "last_error_agent",
    "last_error_text",
    "last_error_at",
    "host",
    "fence",
]


def _storage_error(exc: sqlite3.Error, path: Path) -> StorageError:
    reason = str(exc)
    error = StorageError(
        f"unable to write the store {path}: {reason}",
        "free space on that filesystem or make it writable; sessiond recovers by itself",
    )
    # A full, read-only or failing disk passes; a broken constraint would fail again.
    error.transient = isinstance(exc, sqlite3.OperationalError)
    return error


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = state_dir / DB_NAME
        # The store holds owners, commands and tokens: readable by the daemon only.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        return cls(path)

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the store {self.path} has schema version {version}, newer than {SCHEMA_VERSION}",
                "run the sessiond release that wrote it, or move the file aside",
            )
        if version == SCHEMA_VERSION:
            return
        # One transaction for all the steps: a new store costs one sync, not one per step.
        with self.transaction():
            for number in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[number]):
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _storage_error(exc, self.path) from exc
        try:
            yield self.db
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _storage_error(exc, self.path) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()

    # -- writes (inside transaction()) ---------------------------------------

    def save_session(self, row: Mapping[str, Any]) -> None:
        # An upsert, not INSERT OR REPLACE: REPLACE would delete whichever row holds
        # the one-live-session index instead of refusing the second live session.
        values = [_encode(row[c]) for c in SESSION_COLUMNS]
        marks = ", ".join("?" for _ in SESSION_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in SESSION_COLUMNS[1:])
        self.db.execute(
            f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) VALUES ({marks})"
            f" ON CONFLICT(id) DO UPDATE SET {updates}",
            values,
        )

    def next_fence(self) -> int:
        """The next fence of this machine's lock: larger than every one handed out before."""
        (value,) = self.db.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'fence' RETURNING value"
        ).fetchall()
        return int(value[0])

    def save_participant(self, session_id: str, p: Mapping[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO participants VALUES (?, ?, ?, ?, ?, ?)",
            (session_id, p["uid"], p["user"], p["pid"], p["tty"], p["joined_at"]),
        )

    def delete_participant(self, session_id: str, uid: int) -> None:
        self.db.execute(
            "DELETE FROM participants WHERE session_id = ? AND uid = ?", (session_id, uid)
        )

    def add_event(
        self, time: float, session_id: str | None, session: str | None, *, kind: str,
        message: str, data: Mapping[str, Any],
    ) -> int:  # fmt: skip
        cur = self.db.execute(
            "INSERT INTO events (time, session_id, session, kind, message, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (time, session_id, session, kind, message, json.dumps(data)),
        )
        seq = int(cur.lastrowid or 0)
        if seq % EVENTS_TRIM_EVERY == 0:
            self.db.execute(
                "DELETE FROM events WHERE session_id IS ? AND seq < (SELECT seq FROM events"
                " WHERE session_id IS ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (session_id, session_id, EVENTS_KEPT),
            )
        return seq

    def save_agent(self, row: Mapping[str, Any]) -> None:
        columns = list(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[2:])
        self.db.execute(
            f"INSERT INTO agents ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT(session_id, name) DO UPDATE SET {updates}",
            [_encode(row[c]) for c in columns],
        )

    def add_error(self, session_id: str, time: float, agent: str | None, message: str) -> None:
        self.db.execute(
            "INSERT INTO errors (session_id, time, agent, message) VALUES (?, ?, ?, ?)",
            (session_id, time, agent, message),
        )

    def add_checkpoint(self, session_id: str, agent: str, uid: int, time: float, data: str) -> int:
        """Store one checkpoint, keep the last CHECKPOINTS_KEPT; its sequence number."""
        seq = (
            1
            + self.db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM checkpoints WHERE session_id = ? AND agent = ?",
                (session_id, agent),
            ).fetchone()[0]
        )
        self.db.execute(
            "INSERT INTO checkpoints (session_id, agent, seq, time, data, uid)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (session_id, agent, seq, time, data, uid),
        )
        self.db.execute(
            "DELETE FROM checkpoints WHERE session_id = ? AND agent = ? AND seq <= ?",
            (session_id, agent, seq - CHECKPOINTS_KEPT),
        )
        return int(seq)

    def prune(self, closed_before: float) -> list[str]:
        """Delete closed sessions (and what hangs off them) closed before that time, and
        events of no session older than that."""
        ids = [r[0] for r in self.db.execute(
            f"SELECT id FROM sessions WHERE state IN {TERMINAL_STATES} AND closed_at < ?"
            " AND id NOT IN (SELECT parent FROM sessions WHERE parent IS NOT NULL"
            f" AND state NOT IN {TERMINAL_STATES})",
            (closed_before,),
        ).fetchall()]  # fmt: skip
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            marks = ", ".join("?" * len(part))
            self.db.execute(f"DELETE FROM events WHERE session_id IN ({marks})", part)
            self.db.execute(f"UPDATE sessions SET parent = NULL WHERE parent IN ({marks})", part)
            self.db.execute(f"DELETE FROM sessions WHERE id IN ({marks})", part)
        # The machine's own events (the network's, with no session live) age out alike.
        self.db.execute(
            "DELETE FROM events WHERE session_id IS NULL AND time < ?", (closed_before,)
        )
        return ids

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- reads ---------------------------------------------------------------

    def count_by_state(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM sessions GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}

    def agents(self, session_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM agents WHERE session_id = ? ORDER BY rowid", (session_id,)
        ).fetchall()
        decoded = ("spec", "groups", "env")
        return [{**dict(r), **{k: json.loads(r[k]) for k in decoded}} for r in rows]

    def error_times(self, session_id: str, since: float) -> list[float]:
        rows = self.db.execute(
            "SELECT time FROM errors WHERE session_id = ? AND time > ? ORDER BY time",
            (session_id, since),
        ).fetchall()
        return [r[0] for r in rows]

    def checkpoints(self, session_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT agent, seq, time, data, uid FROM checkpoints WHERE session_id = ?"
            " ORDER BY agent, seq",
            (session_id,),
        ).fetchall()
        return [{**dict(r), "data": json.loads(r["data"])} for r in rows]

    def latest_checkpoints(self, session_id: str) -> dict[str, tuple[int | None, Any]]:
        """Each agent's newest checkpoint: (the uid that stored it, its value)."""
        return {c["agent"]: (c["uid"], c["data"]) for c in self.checkpoints(session_id)}

    def live_session(self) -> dict[str, Any] | None:
        row = self.db.execute(
            f"SELECT * FROM sessions WHERE state NOT IN {TERMINAL_STATES}"
        ).fetchone()
        return _session(row)

    def find_session(self, name_or_id: str) -> dict[str, Any] | None:
        """By id, else the most recent session of that name."""
        row = self.db.execute(
            "SELECT * FROM sessions WHERE id = ? OR name = ?"
            " ORDER BY id = ? DESC, created_at DESC LIMIT 1",
            (name_or_id, name_or_id, name_or_id),
        ).fetchone()
        return _session(row)

    def history(self, limit: int, before: float | None) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM sessions WHERE created_at < ? ORDER BY created_at DESC LIMIT ?",
            (float("inf") if before is None else before, limit),
        ).fetchall()
        return [s for s in map(_session, rows) if s is not None]

    def participants(self, session_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT uid, user, pid, tty, joined_at FROM participants"
            " WHERE session_id = ? ORDER BY joined_at",
            (session_id,),
        ).fetchall()
        return [dict(r) for r in rows]

    def events(self, limit: int, session_id: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE session_id = ?", [session_id]) if session_id else ("", [])
        rows = self.db.execute(
            f"SELECT * FROM (SELECT * FROM events {where} ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            [*args, limit],
        ).fetchall()
        return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split instead (no ';' in our DDL strings).
    return [s.strip() for s in script.split(";") if s.strip()]


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def _session(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    found = dict(row)
    found["settings"] = json.loads(found["settings"])
    found["metrics"] = json.loads(found["metrics"])
    return found
