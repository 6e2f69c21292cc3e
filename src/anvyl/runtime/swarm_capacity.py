"""What a Swarm has room on: each usable node's memory and the nodes each service's tasks hold.

On-demand placement (`services/ondemand/nodes.py`) reads it to send a start to the node with
the most free budget. A node's memory is what the Swarm reports for it
(`Description.Resources.MemoryBytes`); the Swarm says nothing of what else runs there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from anvyl.runtime.driver import DockerDriver
from anvyl.runtime.swarm import node_from_attrs, task_from_attrs


@dataclass(frozen=True)
class NodeMemory:
    """One node that may take a task now (ready and active), with its memory."""

    id: str
    hostname: str
    memory_bytes: int
    local: bool = False  # the node of the engine asked (the manager Anvyl talks to)


@dataclass(frozen=True)
class SwarmCapacity:
    """The usable nodes, and for each service the nodes of the tasks the Swarm wants running."""

    nodes: tuple[NodeMemory, ...]
    tasks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    local_node_id: str = ""  # the node of the engine asked, usable or not


def swarm_capacity(driver: DockerDriver) -> SwarmCapacity:
    """The Swarm's usable nodes and where every service's tasks are (the engine must manage it)."""
    with driver.engine_errors():
        api = driver.client.api
        local = str((api.info().get("Swarm") or {}).get("NodeID") or "")
        nodes = api.nodes()
        tasks = api.tasks(filters={"desired-state": "running"})
    return capacity_from(local, nodes, tasks)


def capacity_from(
    local_node_id: str, nodes: Iterable[Mapping[str, Any]], tasks: Iterable[Mapping[str, Any]]
) -> SwarmCapacity:
    """SwarmCapacity from `GET /info`'s node id, `GET /nodes` and `GET /tasks` (pure)."""
    usable = []
    for attrs in nodes:
        node = node_from_attrs(attrs)
        if node.state == "ready" and node.availability == "active":
            usable.append(
                NodeMemory(node.id, node.hostname, node.memory_bytes, node.id == local_node_id)
            )
    placed: dict[str, list[str]] = {}
    for attrs in tasks:
        task = task_from_attrs(attrs)
        if task.node_id and task.desired_state == "running":
            placed.setdefault(task.service_id, []).append(task.node_id)
    return SwarmCapacity(
        nodes=tuple(sorted(usable, key=lambda n: n.hostname)),
        tasks={service: tuple(sorted(set(ids))) for service, ids in placed.items()},
        local_node_id=local_node_id,
    )
