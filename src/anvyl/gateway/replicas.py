"""A gateway target from a deployment's row: where it answers, with its key (no engine call)."""

from __future__ import annotations

from pathlib import Path

from anvyl.catalog.tool_formats import tool_format_of
from anvyl.gateway.routing import Target
from anvyl.runtime.base import Route, reach_host
from anvyl.store import HostRecord
from anvyl.store.deployments import DeploymentRecord
from anvyl.store.secrets import ApiKeys


def deployment_target(
    record: DeploymentRecord,
    host: HostRecord | None,
    *,
    home: Path,
    keys: ApiKeys,
    route: Route | None = None,
) -> Target:
    """The deployment at its row's address, or one of its servers (`route`: a Swarm task)."""
    if route is None:
        local = host.local if host else True
        address = reach_host(record.bind, host.address if host else "", local)
        key, where = record.id, record.name
    else:
        address, key, where = route.host, f"{record.id}/{route.key}", f"{record.name}@{route.where}"
    secret = keys.read(record.id)
    return Target(
        key=key,
        model_id=record.model_id,
        base_url=f"http://{address}:{record.port}",
        upstream_key=secret,
        client_key="" if record.options.get("api_key_generated") else secret,
        created_at=record.ready_at or record.created_at,
        deployment=where,
        tool_format=tool_format_of(home, record.model_id) or "",
    )
