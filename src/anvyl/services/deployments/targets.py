"""Where the gateway routes and the keep-alive clock probes: each deployment at its address,
or each of its servers.

Runtimes whose servers answer at the row's address (containers, processes) cost no engine
call; a runtime with replicas (Swarm) lists them in one look per host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from anvyl.errors import AnvylError
from anvyl.gateway.replicas import deployment_target
from anvyl.gateway.routing import Target
from anvyl.runtime.base import DeploymentRuntime, Route
from anvyl.services.deployments.views import handle_of, runtime_of
from anvyl.store.deployments import DeploymentRecord

if TYPE_CHECKING:
    from pathlib import Path

    from anvyl.services.hosts import Hosts
    from anvyl.store.secrets import ApiKeys


class Deployments(Protocol):
    """What the targets need of the deployment service (`services.deployments.service`)."""

    hosts: Hosts
    home: Path
    keys: ApiKeys

    def runtime(self, kind: str, host_id: str) -> DeploymentRuntime: ...

    def probe_base(self, record: DeploymentRecord) -> str: ...


def gateway_targets(service: Deployments, records: list[DeploymentRecord]) -> list[Target]:
    """One target per deployment, or per server of a deployment with several."""
    hosts = {h.id: h for h in service.hosts.records()}
    groups: dict[tuple[str, str], list[DeploymentRecord]] = {}
    for record in records:
        groups.setdefault((runtime_of(record), record.host_id), []).append(record)
    targets = []
    for (kind, host_id), group in groups.items():
        routes: list[list[Route]] | None
        try:
            routes = service.runtime(kind, host_id).routes([handle_of(r) for r in group])
        except AnvylError:  # no runtime there now: the rows' own addresses
            routes = None
        for i, record in enumerate(group):
            host = hosts.get(record.host_id)
            if routes is None:
                targets.append(
                    deployment_target(record, host, home=service.home, keys=service.keys)
                )
                continue
            targets.extend(
                deployment_target(record, host, home=service.home, keys=service.keys, route=r)
                for r in routes[i]
            )
    return targets


def server_bases(service: Deployments, record: DeploymentRecord) -> dict[str, str]:
    """Each server of a deployment: {a key stable while it runs: `http://host:port`}.

    One entry, keyed by the deployment's id, at the row's address for runtimes whose server
    answers there; one per running replica (keyed by its task) for a runtime that lists them.
    """
    try:
        routes = service.runtime(runtime_of(record), record.host_id).routes([handle_of(record)])
    except AnvylError:  # no runtime there now: the row's own address
        routes = None
    if routes is None:
        return {record.id: service.probe_base(record)}
    return {route.key: f"http://{route.host}:{record.port}" for route in routes[0]}
