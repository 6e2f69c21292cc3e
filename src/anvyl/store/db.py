"""The SQLite connection: WAL mode, foreign keys on, schema migrated on open."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from anvyl import config
from anvyl.errors import FailedPrecondition
from anvyl.store.migrations import MIGRATIONS, Migration

SCHEMA_VERSION = MIGRATIONS[-1].version


def default_db_path() -> Path:
    """`$ANVYL_HOME/anvyl.db`."""
    return config.anvyl_home() / "anvyl.db"


class Store:
    """One connection shared by the server's threads; every statement runs under a lock."""

    def __init__(
        self, path: Path | str | None = None, *, migrations: Sequence[Migration] = MIGRATIONS
    ) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._migrate(migrations)

    @property
    def schema_version(self) -> int:
        """The version recorded in the database (`PRAGMA user_version`)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode (always `wal` for a file database)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE … COMMIT, ROLLBACK on error)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Run a read-only statement and return every row."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        current = self.schema_version
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise FailedPrecondition(
                f"the database {self.path} has schema version {current}, newer than this Anvyl "
                f"understands ({latest}); upgrade Anvyl"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            with self.transaction() as conn:
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                # PRAGMA takes no parameters; the version is an int from our own table.
                conn.execute(f"PRAGMA user_version = {int(migration.version)}")


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit our transaction)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
