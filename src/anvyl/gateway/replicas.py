"""Where plain-container deployments answer, read from the store (no engine call)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from anvyl.gateway.routing import Target
from anvyl.store import Store
from anvyl.store import deployments as table
from anvyl.store import hosts as host_table
from anvyl.store.deployments import DeploymentRecord

WILDCARDS = ("0.0.0.0", "::", "")


def api_key_path(home: Path, deployment_id: str) -> Path:
    """The file holding a deployment's API key (written by `model start`)."""
    return home / "secrets" / deployment_id / "api-key"


def read_api_key(home: Path, deployment_id: str) -> str:
    """A deployment's API key, or "" when it has none."""
    try:
        return api_key_path(home, deployment_id).read_text().strip()
    except OSError:
        return ""


def deployment_targets(store: Store, home: Path) -> list[Target]:
    """One target per deployment of a plain container (its published API port)."""
    hosts = {h.id: h for h in host_table.list_hosts(store)}
    targets = []
    for record in table.list_deployments(store):
        if record.options.get("runtime", "container") != "container":
            continue  # other runtimes give their own targets
        host = hosts.get(record.host_id)
        address = _address(record, host.address if host else "", host.local if host else True)
        key = read_api_key(home, record.id)
        targets.append(
            Target(
                key=record.id,
                model_id=record.model_id,
                base_url=f"http://{address}:{record.port}",
                upstream_key=key,
                client_key="" if record.options.get("api_key_generated") else key,
                created_at=record.ready_at or record.created_at,
                deployment=record.name,
            )
        )
    return targets


def _address(record: DeploymentRecord, engine_address: str, local: bool) -> str:
    """The address the published port answers on, seen from this machine."""
    if record.bind not in WILDCARDS:
        host = record.bind
    elif local:
        host = "127.0.0.1"
    else:
        host = urlparse(engine_address).hostname or "127.0.0.1"
    return f"[{host}]" if ":" in host else host
