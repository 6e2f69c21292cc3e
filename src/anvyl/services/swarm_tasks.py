"""A Swarm deployment's tasks: a replica view per slot, a gateway target per running task."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol

from anvyl.catalog.tool_formats import tool_format_of
from anvyl.gateway.routing import Target
from anvyl.runtime import DockerDriver, swarm
from anvyl.services.deployments.probe import healthy as probe_healthy
from anvyl.services.swarm_owner import Owner
from anvyl.services.swarm_records import is_swarm
from anvyl.store import HostRecord
from anvyl.store import deployments as table
from anvyl.store.deployments import DeploymentRecord


class SwarmDeployments(Protocol):
    """What the replica views and targets need of `services.swarm_deployments`."""

    @property
    def models(self) -> Owner: ...

    def manager(self) -> tuple[HostRecord, DockerDriver] | None: ...


def replicas(
    sw: SwarmDeployments, record: DeploymentRecord, driver: DockerDriver
) -> list[swarm.ReplicaView]:
    """The current task of every slot (with its restarts), probed when running."""
    nodes = {n.id: n for n in swarm.list_nodes(driver)}
    tasks = swarm.list_tasks(driver, record.container_id)
    by_slot: dict[int, list[swarm.TaskInfo]] = {}
    for task in tasks:  # newest first
        by_slot.setdefault(task.slot, []).append(task)
    current: list[tuple[swarm.TaskInfo, int]] = []
    for _slot, history in sorted(by_slot.items()):
        live = [t for t in history if t.desired_state == "running"]
        if live:  # slots without one were scaled away
            current.append((live[0], len(history) - 1))
    views = []
    for task, restarts in current:
        node = nodes.get(task.node_id)
        address = node.address if node else ""
        if node is not None and node.state != "ready":
            state = f"{task.state} (node {node.state})"
        else:
            state = task.state
        views.append(
            swarm.ReplicaView(
                slot=task.slot,
                task_id=task.id,
                node_id=task.node_id,
                node=node.hostname if node else "",
                address=address,
                state=state,
                since=task.since,
                restarts=restarts,
                error=task.error,
            )
        )
    running = [v for v in views if v.state == "running" and v.address]
    if running:
        with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
            healthy = dict(
                zip(
                    [v.task_id for v in running],
                    pool.map(
                        lambda v: probe_healthy(f"http://{v.address}:{record.port}"),
                        running,
                    ),
                    strict=True,
                )
            )
        views = [replace(v, ready=healthy.get(v.task_id, False)) for v in views]
    return views


def targets(sw: SwarmDeployments) -> list[Target]:
    """One gateway target per running task of every Swarm deployment."""
    found = sw.manager()
    if found is None:
        return []
    _, driver = found
    records = [r for r in table.list_deployments(sw.models.store) if is_swarm(r)]
    if not records:
        return []
    nodes = {n.id: n for n in swarm.list_nodes(driver)}
    targets = []
    for record in records:
        if not record.container_id:
            continue
        key = sw.models.keys.read(record.id)
        client_key = "" if record.options.get("api_key_generated") else key
        tool_format = tool_format_of(sw.models.home, record.model_id) or ""
        for task in swarm.list_tasks(driver, record.container_id):
            node = nodes.get(task.node_id)
            if task.state != "running" or task.desired_state != "running" or node is None:
                continue
            targets.append(
                Target(
                    key=f"{record.id}/{task.id}",
                    model_id=record.model_id,
                    base_url=f"http://{node.address}:{record.port}",
                    upstream_key=key,
                    client_key=client_key,
                    created_at=record.ready_at or record.created_at,
                    deployment=f"{record.name}@{node.hostname}",
                    tool_format=tool_format,
                )
            )
    return targets
