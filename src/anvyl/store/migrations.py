"""Schema migrations: an ordered list; `PRAGMA user_version` records how many were applied.

To change the schema, append a new `Migration` (never edit an applied one). Each runs in its own
transaction together with the version bump, so a failed migration leaves the database unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema step: `version` is the schema version after it runs."""

    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="hosts",
        sql="""
        CREATE TABLE hosts (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL UNIQUE,
            address     TEXT NOT NULL,
            local       INTEGER NOT NULL DEFAULT 0 CHECK (local IN (0, 1)),
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL
        );
        CREATE UNIQUE INDEX hosts_one_local ON hosts (local) WHERE local = 1;
        """,
    ),
    Migration(
        version=2,
        description="deployments",
        sql="""
        CREATE TABLE deployments (
            id            TEXT PRIMARY KEY,
            name          TEXT NOT NULL UNIQUE,
            model_id      TEXT NOT NULL,
            host_id       TEXT NOT NULL REFERENCES hosts (id),
            port          INTEGER NOT NULL,
            bind          TEXT NOT NULL,
            image         TEXT NOT NULL,
            container_id  TEXT NOT NULL DEFAULT '',
            state         TEXT NOT NULL,
            state_reason  TEXT NOT NULL DEFAULT '',
            options       TEXT NOT NULL DEFAULT '{}',
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            ready_at      REAL NOT NULL DEFAULT 0
        );
        CREATE UNIQUE INDEX deployments_host_port ON deployments (host_id, port);
        """,
    ),
    Migration(
        version=3,
        description="node engines",
        sql="""
        CREATE TABLE node_engines (
            node_id     TEXT PRIMARY KEY,
            hostname    TEXT NOT NULL,
            url         TEXT NOT NULL,
            tls_ca      TEXT NOT NULL DEFAULT '',
            tls_cert    TEXT NOT NULL DEFAULT '',
            tls_key     TEXT NOT NULL DEFAULT '',
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL
        );
        """,
    ),
    Migration(
        version=4,
        description="model profiles",
        sql="""
        CREATE TABLE model_profiles (
            model_id       TEXT PRIMARY KEY,
            start_options  TEXT NOT NULL DEFAULT '{}',
            peak_memory    INTEGER NOT NULL DEFAULT 0,
            updated_at     REAL NOT NULL
        );
        """,
    ),
)
