"""A Swarm deployment's tasks: a replica view per slot, a route per running task."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from anvyl.runtime import DockerDriver, swarm
from anvyl.runtime.base import Route
from anvyl.services.deployments.probe import healthy as probe_healthy


def replicas(driver: DockerDriver, service_id: str, port: int) -> list[swarm.ReplicaView]:
    """The current task of every slot (with its restarts), probed when running."""
    nodes = {n.id: n for n in swarm.list_nodes(driver)}
    tasks = swarm.list_tasks(driver, service_id)
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
                        lambda v: probe_healthy(f"http://{v.address}:{port}"),
                        running,
                    ),
                    strict=True,
                )
            )
        views = [replace(v, ready=healthy.get(v.task_id, False)) for v in views]
    return views


def routes(driver: DockerDriver, service_ids: list[str]) -> list[list[Route]]:
    """The running tasks of each service, where they answer (one node listing for all)."""
    if not any(service_ids):
        return [[] for _ in service_ids]
    nodes = {n.id: n for n in swarm.list_nodes(driver)}
    found = []
    for service_id in service_ids:
        running = []
        for task in swarm.list_tasks(driver, service_id) if service_id else []:
            node = nodes.get(task.node_id)
            if task.state != "running" or task.desired_state != "running" or node is None:
                continue
            running.append(Route(key=task.id, host=node.address, where=node.hostname))
        found.append(running)
    return found
