"""Where container and process deployments answer, read from the store (no engine call)."""

from __future__ import annotations

from pathlib import Path

from anvyl.catalog.tool_formats import tool_format_of
from anvyl.gateway.routing import Target
from anvyl.runtime.base import KIND_SWARM, reach_host
from anvyl.store import Store
from anvyl.store import deployments as table
from anvyl.store import hosts as host_table
from anvyl.store.secrets import ApiKeys


def deployment_targets(store: Store, home: Path) -> list[Target]:
    """One target per container or process deployment (its API port)."""
    hosts = {h.id: h for h in host_table.list_hosts(store)}
    keys = ApiKeys(home)
    targets = []
    for record in table.list_deployments(store):
        if record.options.get("runtime") == KIND_SWARM:
            continue  # Swarm gives one target per task
        host = hosts.get(record.host_id)
        local = host.local if host else True
        address = reach_host(record.bind, host.address if host else "", local)
        key = keys.read(record.id)
        targets.append(
            Target(
                key=record.id,
                model_id=record.model_id,
                base_url=f"http://{address}:{record.port}",
                upstream_key=key,
                client_key="" if record.options.get("api_key_generated") else key,
                created_at=record.ready_at or record.created_at,
                deployment=record.name,
                tool_format=tool_format_of(home, record.model_id) or "",
            )
        )
    return targets
