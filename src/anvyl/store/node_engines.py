"""The node_engines table: how Anvyl reaches the own engine of a Swarm node (`host add`).

A Swarm manager knows every node but cannot run anything on one outside a service; putting
images and model files on a node goes through that node's engine, at the URL recorded here.
TLS material lives in files under `ANVYL_HOME/engines/<node id>/`; the row holds their paths.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from anvyl.store.db import Store


@dataclass(frozen=True)
class NodeEngineRecord:
    """How to reach one node's engine."""

    node_id: str
    hostname: str
    url: str
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def tls(self) -> bool:
        """True when the engine is reached over TLS with a client certificate."""
        return bool(self.tls_cert)


_COLUMNS = "node_id, hostname, url, tls_ca, tls_cert, tls_key, created_at, updated_at"


def _record(row: sqlite3.Row) -> NodeEngineRecord:
    return NodeEngineRecord(**{key: row[key] for key in row.keys()})  # noqa: SIM118


def list_node_engines(store: Store) -> list[NodeEngineRecord]:
    """Every recorded engine, by hostname."""
    rows = store.query(f"SELECT {_COLUMNS} FROM node_engines ORDER BY hostname, node_id")
    return [_record(row) for row in rows]


def get_node_engine(store: Store, node_id: str) -> NodeEngineRecord | None:
    """The engine recorded for exactly this node id, if any."""
    rows = store.query(f"SELECT {_COLUMNS} FROM node_engines WHERE node_id = ?", (node_id,))
    return _record(rows[0]) if rows else None


def put_node_engine(store: Store, record: NodeEngineRecord) -> NodeEngineRecord:
    """Record (or replace) how to reach a node's engine; keeps the first `created_at`."""
    now = time.time()
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT created_at FROM node_engines WHERE node_id = ?", (record.node_id,)
        ).fetchone()
        created = row["created_at"] if row is not None else now
        conn.execute("DELETE FROM node_engines WHERE node_id = ?", (record.node_id,))
        conn.execute(
            f"INSERT INTO node_engines ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.node_id,
                record.hostname,
                record.url,
                record.tls_ca,
                record.tls_cert,
                record.tls_key,
                created,
                now,
            ),
        )
    stored = get_node_engine(store, record.node_id)
    assert stored is not None
    return stored


def delete_node_engine(store: Store, node_id: str) -> bool:
    """Forget a node's engine; False when none was recorded."""
    with store.transaction() as conn:
        cursor = conn.execute("DELETE FROM node_engines WHERE node_id = ?", (node_id,))
        return cursor.rowcount > 0
