"""The Swarm as a whole: init, join token, nodes with their models, availability (drain)."""

from __future__ import annotations

from dataclasses import dataclass

from anvyl.errors import FailedPrecondition, RuntimeUnavailable
from anvyl.runtime import DockerDriver, swarm
from anvyl.services.models import Models
from anvyl.services.swarm_deployments import is_swarm
from anvyl.store import deployments as table


@dataclass(frozen=True)
class NodeView:
    """A Swarm node and the deployments with a running replica on it."""

    node: swarm.NodeInfo
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class JoinInfo:
    """What another engine needs to join the Swarm."""

    token: str
    manager_address: str

    @property
    def command(self) -> str:
        """The `docker swarm join` line to run on the joining machine."""
        return f"docker swarm join --token {self.token} {self.manager_address}"


class Cluster:
    """The Swarm behind the local engine (a manager), through the same driver as models."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def _local(self) -> DockerDriver:
        local = [h for h in self.models.hosts.records() if h.local]
        if not local:
            raise FailedPrecondition("no local engine is registered")
        return self.models.hosts.driver(local[0].id)

    def _manager(self) -> DockerDriver:
        driver = self._local()
        try:
            manager = swarm.is_manager(driver)
        except RuntimeUnavailable as exc:  # callers fall back to the registered engines
            raise FailedPrecondition(exc.message) from exc
        if not manager:
            raise FailedPrecondition(
                "the engine is not a Swarm manager: run `anvyl cluster init` first"
            )
        return driver

    def init(self, advertise_addr: str = "", listen_addr: str = "") -> str:
        """Make the local engine the first manager of a new Swarm; its node id."""
        node_id = swarm.init_swarm(self._local(), advertise_addr, listen_addr)
        self.models.swarm._active.clear()
        return node_id

    def join_info(self, role: str = "") -> JoinInfo:
        """The token and manager address to join as `role` (worker by default)."""
        token, address = swarm.join_token(self._manager(), role or swarm.ROLE_WORKER)
        return JoinInfo(token=token, manager_address=address)

    def nodes(self) -> list[NodeView]:
        """Every node, with the deployments that have a running replica on it."""
        driver = self._manager()
        placed: dict[str, list[str]] = {}
        for record in table.list_deployments(self.models.store):
            if not is_swarm(record) or not record.container_id:
                continue
            for task in swarm.list_tasks(driver, record.container_id):
                if task.state == "running" and task.desired_state == "running":
                    placed.setdefault(task.node_id, []).append(record.name)
        return [
            NodeView(node=n, models=tuple(sorted(placed.get(n.id, []))))
            for n in swarm.list_nodes(driver)
        ]

    def set_availability(self, ref: str, availability: str) -> swarm.NodeInfo:
        """Drain, pause or activate a node (by id, hostname or unique id prefix)."""
        driver = self._manager()
        node = swarm.resolve_node(swarm.list_nodes(driver), ref.strip())
        return swarm.set_availability(driver, node.id, availability)
