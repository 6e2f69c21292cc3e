"""The SQLite connection: WAL mode, foreign keys on, schema migrated on open.

The database (and its WAL files) is private to its owner (0600); `ANVYL_HOME`, which also holds
API keys, is 0700. Models inside it are bind-mounted into containers by the engine, so the
containers' user never needs to traverse it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from anvyl import config
from anvyl.errors import FailedPrecondition
from anvyl.store.migrations import MIGRATIONS, Migration

SCHEMA_VERSION = MIGRATIONS[-1].version
# SQLite result codes that mean the file system, not the statement, is at fault.
STORAGE_ERRORS = (
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_BUSY",
    "SQLITE_PERM",
)


def default_db_path() -> Path:
    """`$ANVYL_HOME/anvyl.db`."""
    return config.anvyl_home() / "anvyl.db"


class Store:
    """One connection shared by the server's threads; every statement runs under a lock."""

    def __init__(
        self, path: Path | str | None = None, *, migrations: Sequence[Migration] = MIGRATIONS
    ) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if path is None:  # ANVYL_HOME: the database, API keys, the controller id
                os.chmod(self.path.parent, 0o700)
            _make_private(self.path)
        except OSError as exc:  # a read-only or full file system, a missing permission
            raise FailedPrecondition(
                f"cannot open the database {self.path}: {exc.strerror or exc}"
            ) from exc
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._migrate(migrations)
        for suffix in ("-wal", "-shm"):  # SQLite copies the database's mode; older files may not
            _make_private(self.path.with_name(self.path.name + suffix), create=False)

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
        with self._lock, self._storage_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Run a read-only statement and return every row."""
        with self._lock, self._storage_errors():
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """A full disk, a read-only or broken file: FailedPrecondition naming the database."""
        try:
            yield
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", "") or ""
            if not name.startswith(STORAGE_ERRORS):
                raise  # constraint violations and SQL mistakes are the caller's
            raise FailedPrecondition(
                f"the state database {self.path} cannot be used: {exc} (is the disk full or "
                "ANVYL_HOME read-only?); nothing was changed"
            ) from exc

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


def _make_private(path: Path, *, create: bool = True) -> None:
    """Create `path` as 0600 (or tighten it to 0600 when it exists)."""
    if str(path) == ":memory:":
        return
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    elif create:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


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
