"""The deployments table: one row per `model start`, what the user asked for and what we saw.

The engine's labels are the ground truth for what runs; these rows hold the request (options,
desired state) and the last state the control plane observed, so a restarted server can list
and stop models it started before, and report containers that vanished.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from anvyl.errors import AlreadyExists
from anvyl.store.db import Store

Query = Callable[[str, Sequence[object]], list[sqlite3.Row]]

# Observed states. `starting` → `ready`; `unhealthy`, `exited`, `failed`, `vanished` are reported.
STATE_CREATING = "creating"
STATE_STARTING = "starting"
STATE_READY = "ready"
STATE_UNHEALTHY = "unhealthy"
STATE_EXITED = "exited"
STATE_FAILED = "failed"
STATE_VANISHED = "vanished"
STATE_STOPPED = "stopped"
# A deployment that is being created, loading or serving: it holds its model (and memory).
LIVE_STATES = (STATE_CREATING, STATE_STARTING, STATE_READY)


@dataclass(frozen=True)
class DeploymentRecord:
    """A model deployment: one container serving one model on one host."""

    id: str
    name: str
    model_id: str
    host_id: str
    port: int
    bind: str
    image: str
    container_id: str = ""
    state: str = STATE_CREATING
    state_reason: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    ready_at: float = 0.0


_COLUMNS = (
    "id, name, model_id, host_id, port, bind, image, container_id, state, state_reason, "
    "options, created_at, updated_at, ready_at"
)


def _record(row: sqlite3.Row) -> DeploymentRecord:
    return DeploymentRecord(
        id=row["id"],
        name=row["name"],
        model_id=row["model_id"],
        host_id=row["host_id"],
        port=row["port"],
        bind=row["bind"],
        image=row["image"],
        container_id=row["container_id"],
        state=row["state"],
        state_reason=row["state_reason"],
        options=json.loads(row["options"] or "{}"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        ready_at=row["ready_at"],
    )


def new_deployment_id() -> str:
    """A fresh deployment id: `d-` and 10 hex digits."""
    return "d-" + secrets.token_hex(5)


def list_deployments(store: Store) -> list[DeploymentRecord]:
    """Every deployment, oldest first."""
    return [_record(r) for r in store.query(f"SELECT {_COLUMNS} FROM deployments ORDER BY rowid")]


def get_deployment(store: Store, deployment_id: str) -> DeploymentRecord | None:
    """The deployment with exactly this id, if any."""
    rows = store.query(f"SELECT {_COLUMNS} FROM deployments WHERE id = ?", (deployment_id,))
    return _record(rows[0]) if rows else None


def check_free(store: Store, name: str, host_id: str, port: int) -> None:
    """ALREADY_EXISTS naming the deployment that holds this name, or this port on the host."""
    _check_free(store.query, name, host_id, port)


def _check_free(query: Query, name: str, host_id: str, port: int) -> None:
    taken = query("SELECT id FROM deployments WHERE name = ?", (name,))
    if taken:
        raise AlreadyExists(
            f"the name {name!r} is already used by deployment {taken[0]['id']}; "
            "choose another with --name or stop that one first"
        )
    port_user = query(
        "SELECT name FROM deployments WHERE host_id = ? AND port = ?", (host_id, port)
    )
    if port_user:
        raise AlreadyExists(
            f"port {port} is already used by model deployment "
            f"{port_user[0]['name']!r}; choose another with --port"
        )


def insert_deployment(store: Store, deployment: DeploymentRecord) -> DeploymentRecord:
    """Record a new deployment; a taken name or host port is ALREADY_EXISTS."""
    now = time.time()
    deployment = replace(deployment, created_at=now, updated_at=now)
    with store.transaction() as conn:

        def query(sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
            return conn.execute(sql, params).fetchall()

        _check_free(query, deployment.name, deployment.host_id, deployment.port)
        conn.execute(
            f"INSERT INTO deployments ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                deployment.id,
                deployment.name,
                deployment.model_id,
                deployment.host_id,
                deployment.port,
                deployment.bind,
                deployment.image,
                deployment.container_id,
                deployment.state,
                deployment.state_reason,
                json.dumps(deployment.options, sort_keys=True),
                deployment.created_at,
                deployment.updated_at,
                deployment.ready_at,
            ),
        )
    return deployment


def update_deployment(store: Store, deployment_id: str, **changes: Any) -> None:
    """Change some columns of one deployment (unknown columns are a programming error)."""
    allowed = {"container_id", "state", "state_reason", "ready_at", "image", "options"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot update deployment columns {sorted(unknown)}")
    if not changes:
        return
    if "options" in changes:
        changes["options"] = json.dumps(changes["options"], sort_keys=True)
    sets = ", ".join(f"{column} = ?" for column in changes)
    with store.transaction() as conn:
        conn.execute(
            f"UPDATE deployments SET {sets}, updated_at = ? WHERE id = ?",
            (*changes.values(), time.time(), deployment_id),
        )


def delete_deployment(store: Store, deployment_id: str) -> None:
    """Forget one deployment."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))
