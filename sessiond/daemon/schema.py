"""The store's schema: one migration per version, applied in order and never edited.

A database at version N (PRAGMA user_version) gets migrations N+1… at open;
a migration once released is history, so a change is a new one at the end.
"""

from __future__ import annotations

from sessiond.core.session import TERMINAL

# The states that hold no lock, as SQL; the core's TERMINAL (a migration's index uses it,
# so the set may grow only with a migration of its own).
TERMINAL_STATES = "(" + ", ".join(sorted(f"'{state.value}'" for state in TERMINAL)) + ")"

MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE sessions (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        state         TEXT NOT NULL,
        owner_uid     INTEGER NOT NULL,
        owner_user    TEXT NOT NULL,
        owner_pid     INTEGER,
        owner_tty     TEXT,
        template      TEXT,
        parent        TEXT REFERENCES sessions(id),
        settings      TEXT NOT NULL,
        metrics       TEXT NOT NULL DEFAULT '{{}}',
        created_at    REAL NOT NULL,
        started_at    REAL,
        last_activity REAL NOT NULL,
        closed_at     REAL,
        close_reason  TEXT,
        pause_reason  TEXT
    );
    CREATE UNIQUE INDEX sessions_one_live ON sessions((1))
        WHERE state NOT IN {TERMINAL_STATES};
    CREATE INDEX sessions_by_name ON sessions(name, created_at);
    CREATE INDEX sessions_by_created ON sessions(created_at);
    CREATE TABLE participants (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        uid        INTEGER NOT NULL,
        user       TEXT NOT NULL,
        pid        INTEGER,
        tty        TEXT,
        joined_at  REAL NOT NULL,
        PRIMARY KEY (session_id, uid)
    );
    CREATE TABLE events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        time       REAL NOT NULL,
        session_id TEXT,
        session    TEXT,
        kind       TEXT NOT NULL,
        message    TEXT NOT NULL,
        data       TEXT NOT NULL DEFAULT '{{}}'
    );
    CREATE INDEX events_by_session ON events(session_id, seq);
    """,
    """
    ALTER TABLE sessions ADD COLUMN errors_reset_at REAL;
    CREATE TABLE agents (
        session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        spec        TEXT NOT NULL,
        uid         INTEGER NOT NULL,
        gid         INTEGER NOT NULL,
        groups      TEXT NOT NULL,
        token       TEXT NOT NULL,
        cwd         TEXT NOT NULL,
        env         TEXT NOT NULL,
        state       TEXT NOT NULL,
        desired     TEXT NOT NULL DEFAULT 'running',
        pid         INTEGER,
        start_ticks INTEGER,
        started_at  REAL,
        restarts    INTEGER NOT NULL DEFAULT 0,
        exit_code   INTEGER,
        PRIMARY KEY (session_id, name)
    );
    CREATE TABLE errors (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        time       REAL NOT NULL,
        agent      TEXT,
        message    TEXT NOT NULL
    );
    CREATE INDEX errors_by_session ON errors(session_id, time);
    CREATE TABLE checkpoints (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        agent      TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        time       REAL NOT NULL,
        data       TEXT NOT NULL,
        PRIMARY KEY (session_id, agent, seq)
    );
    """,
    # A checkpoint is handed on only to an agent of the uid that stored it (SPEC §2.5);
    # those stored before this column are its agent row's.
    """
    ALTER TABLE checkpoints ADD COLUMN uid INTEGER;
    UPDATE checkpoints SET uid = (SELECT a.uid FROM agents a
        WHERE a.session_id = checkpoints.session_id AND a.name = checkpoints.agent);
    """,
    # A session's last error, with its text (SPEC §2.3 errors.last).
    """
    ALTER TABLE sessions ADD COLUMN last_error_agent TEXT;
    ALTER TABLE sessions ADD COLUMN last_error_text TEXT;
    ALTER TABLE sessions ADD COLUMN last_error_at REAL;
    """,
    # Where a session runs and its fence (SPEC §10). The fence counter is a row of its
    # own, not MAX(fence): pruning the newest closed sessions must not hand theirs out again.
    # Sessions from before fences keep 0, below every fence handed out.
    """
    ALTER TABLE sessions ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('fence', 0);
    """,
]
