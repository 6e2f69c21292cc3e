"""The hosts table: Docker engines the control plane drives, each with a stable id."""

from __future__ import annotations

import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass

from anvyl.errors import AlreadyExists
from anvyl.store.db import Store


@dataclass(frozen=True)
class HostRecord:
    """A registered host."""

    id: str
    name: str
    address: str
    local: bool
    created_at: float
    updated_at: float


_COLUMNS = "id, name, address, local, created_at, updated_at"


def _record(row: sqlite3.Row) -> HostRecord:
    return HostRecord(
        id=row["id"],
        name=row["name"],
        address=row["address"],
        local=bool(row["local"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def new_host_id() -> str:
    """A fresh host id: `h-` and 10 hex digits."""
    return "h-" + secrets.token_hex(5)


def list_hosts(store: Store) -> list[HostRecord]:
    """Every host, the local one first, then by name."""
    rows = store.query(f"SELECT {_COLUMNS} FROM hosts ORDER BY local DESC, name")
    return [_record(row) for row in rows]


def get_host(store: Store, host_id: str) -> HostRecord | None:
    """The host with exactly this id, if any."""
    rows = store.query(f"SELECT {_COLUMNS} FROM hosts WHERE id = ?", (host_id,))
    return _record(rows[0]) if rows else None


def get_local_host(store: Store) -> HostRecord | None:
    """The host that stands for this machine's engine, if registered."""
    rows = store.query(f"SELECT {_COLUMNS} FROM hosts WHERE local = 1")
    return _record(rows[0]) if rows else None


def add_host(store: Store, *, name: str, address: str, local: bool = False) -> HostRecord:
    """Register a host; a taken name is ALREADY_EXISTS."""
    now = time.time()
    host = HostRecord(
        id=new_host_id(), name=name, address=address, local=local, created_at=now, updated_at=now
    )
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM hosts WHERE name = ?", (name,)).fetchone():
            raise AlreadyExists(f"a host named {name!r} already exists")
        conn.execute(
            f"INSERT INTO hosts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (host.id, host.name, host.address, int(host.local), now, now),
        )
    return host


def ensure_local_host(store: Store, *, address: str, name: str | None = None) -> HostRecord:
    """Register this machine's engine once; later starts keep its id (the address may move)."""
    with store.transaction() as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM hosts WHERE local = 1").fetchone()
        now = time.time()
        if row is not None:
            if row["address"] != address:
                conn.execute(
                    "UPDATE hosts SET address = ?, updated_at = ? WHERE id = ?",
                    (address, now, row["id"]),
                )
                row = conn.execute(f"SELECT {_COLUMNS} FROM hosts WHERE id = ?", (row["id"],))
                row = row.fetchone()
            return _record(row)
        wanted = name or socket.gethostname() or "local"
        taken = conn.execute("SELECT 1 FROM hosts WHERE name = ?", (wanted,)).fetchone()
        host = HostRecord(
            id=new_host_id(),
            name=f"{wanted}-local" if taken else wanted,
            address=address,
            local=True,
            created_at=now,
            updated_at=now,
        )
        conn.execute(
            f"INSERT INTO hosts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (host.id, host.name, host.address, 1, now, now),
        )
        return host
