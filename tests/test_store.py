"""The SQLite store, real files in a temp dir."""

from __future__ import annotations

import json
import sqlite3

import pytest

from sessiond.daemon.schema import MIGRATIONS
from sessiond.daemon.store import DB_NAME, SCHEMA_VERSION, Store
from sessiond.errors import StorageError


def row(id_: str, state: str = "active", name: str = "n", created: float = 1.0) -> dict:
    return {
        "id": id_, "name": name, "state": state, "owner_uid": 1000, "owner_user": "alice",
        "owner_pid": 42, "owner_tty": None, "template": None, "parent": None,
        "settings": {"timeout": 60.0}, "metrics": {}, "created_at": created,
        "started_at": created, "last_activity": created, "closed_at": None,
        "close_reason": None, "pause_reason": None, "errors_reset_at": None,
        "last_error_agent": None, "last_error_text": None, "last_error_at": None,
        "host": "h", "fence": 1,
    }  # fmt: skip


def test_new_store_is_migrated_wal_and_private(tmp_path):
    store = Store.open(tmp_path / "state")
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert (tmp_path / "state" / DB_NAME).stat().st_mode & 0o077 == 0


def test_committed_rows_survive_reopening(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction():
        store.save_session(row("a"))
        store.add_event(1.0, "a", "n", kind="session.started", message="started", data={"k": 1})
    store.close()
    again = Store.open(tmp_path)
    assert again.live_session()["id"] == "a"
    assert again.events(10)[0]["data"] == {"k": 1}


def test_at_most_one_live_session_in_the_table(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction():
        store.save_session(row("a"))
        store.save_session(row("old", state="closed"))
    with pytest.raises(StorageError), store.transaction():
        store.save_session(row("b", state="idle"))
    assert store.live_session()["id"] == "a"


def test_failed_transaction_changes_nothing(tmp_path):
    store = Store.open(tmp_path)
    with pytest.raises(RuntimeError), store.transaction():
        store.save_session(row("a"))
        raise RuntimeError("boom")
    assert store.live_session() is None
    assert not store.db.in_transaction


def test_find_prefers_id_then_newest_name(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction():
        store.save_session(row("x1", state="closed", name="same", created=1))
        store.save_session(row("x2", state="expired", name="same", created=2))
    assert store.find_session("same")["id"] == "x2"
    assert store.find_session("x1")["id"] == "x1"
    assert [s["id"] for s in store.history(10, None)] == ["x2", "x1"]
    assert [s["id"] for s in store.history(10, before=2)] == ["x1"]


def test_a_store_from_the_future_is_refused(tmp_path):
    store = Store.open(tmp_path)
    store.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(StorageError) as newer:
        Store.open(tmp_path)
    assert "newer" in newer.value.message


def test_read_only_database_is_a_storage_error(tmp_path):
    store = Store.open(tmp_path)
    store.close()
    ro = Store.__new__(Store)
    ro.path = tmp_path / DB_NAME
    ro.db = sqlite3.connect(f"file:{ro.path}?mode=ro", uri=True, isolation_level=None)
    with pytest.raises(StorageError) as failed, ro.transaction():
        ro.save_session(row("a"))
    assert "unable to write the store" in failed.value.message
    assert failed.value.hint


def test_fences_grow_across_reopening_and_pruning(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction():
        first, second = store.next_fence(), store.next_fence()
        store.save_session({**row("a", state="closed"), "fence": second, "closed_at": 1.0})
    assert 0 < first < second
    store.close()
    again = Store.open(tmp_path)
    with again.transaction():
        assert again.prune(closed_before=2.0) == ["a"]
    assert again.next_fence() > second  # none is handed out twice, even once its row is gone


def test_a_store_from_before_fences_is_migrated(tmp_path):
    """Version 4 (no host, no fence): its sessions keep fence 0, below every new one."""
    db = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    for script in MIGRATIONS[:4]:
        db.executescript(script)
    old = {k: v for k, v in row("old", state="closed").items() if k not in ("host", "fence")}
    db.execute(f"INSERT INTO sessions ({', '.join(old)}) VALUES ({', '.join('?' * len(old))})",
               [json.dumps(v) if isinstance(v, dict) else v for v in old.values()])  # fmt: skip
    db.execute("PRAGMA user_version = 4")
    db.close()
    store = Store.open(tmp_path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    found = store.find_session("old")
    assert (found["host"], found["fence"]) == ("", 0)
    assert store.next_fence() == 1


def test_a_migration_that_fails_leaves_the_store_as_it_found_it(tmp_path):
    """Steps 3 to 5 run as one transaction: the last one failing undoes the first two."""
    db = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    for script in MIGRATIONS[:2]:
        db.executescript(script)
    db.execute("CREATE TABLE counters (name TEXT)")  # what step 5 creates: it fails there
    db.execute("PRAGMA user_version = 2")
    before = db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    db.close()
    with pytest.raises(StorageError, match="counters already exists"):
        Store.open(tmp_path)
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == before
    db.close()
