"""The SQLite store: WAL mode, schema version, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from anvyl.errors import FailedPrecondition
from anvyl.store import SCHEMA_VERSION, Store
from anvyl.store.migrations import MIGRATIONS, Migration


def test_new_database_is_wal_and_at_the_latest_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    assert store.journal_mode == "wal"
    assert store.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version
    tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "hosts" in tables
    store.close()


def test_default_path_is_under_anvyl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANVYL_HOME", str(tmp_path / "home"))
    store = Store()
    assert store.path == tmp_path / "home" / "anvyl.db"
    assert store.path.exists()
    store.close()


def test_a_new_migration_is_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    Store(path).close()
    extra = Migration(
        version=SCHEMA_VERSION + 1,
        description="example",
        sql="CREATE TABLE example (id TEXT PRIMARY KEY);\nINSERT INTO example VALUES ('x');",
    )
    store = Store(path, migrations=(*MIGRATIONS, extra))
    assert store.schema_version == SCHEMA_VERSION + 1
    store.close()
    store = Store(path, migrations=(*MIGRATIONS, extra))  # re-opening applies nothing again
    assert [r["id"] for r in store.query("SELECT id FROM example")] == ["x"]
    store.close()


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    Store(path).close()
    bad = Migration(
        version=SCHEMA_VERSION + 1,
        description="broken",
        sql="CREATE TABLE half (id TEXT);\nTHIS IS NOT SQL;",
    )
    with pytest.raises(sqlite3.OperationalError):
        Store(path, migrations=(*MIGRATIONS, bad))
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    assert not store.query("SELECT name FROM sqlite_master WHERE name = 'half'")
    store.close()


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(FailedPrecondition, match="newer"):
        Store(path)


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute(
            "INSERT INTO hosts (id, name, address, local, created_at, updated_at) "
            "VALUES ('h', 'n', 'a', 0, 0, 0)"
        )
        raise RuntimeError("boom")
    assert not store.query("SELECT * FROM hosts")
    store.close()
