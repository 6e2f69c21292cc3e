"""The Swarm side's shared state: which host manages a Swarm, the nodes' engines.

When the engine of this machine is a Swarm manager (`SwarmDeployments.active`), the deployment
service starts models on the Swarm runtime (`services/swarm_runtime.py`, one replicated service
per deployment) instead of as plain containers. The runtime is made per call; what must outlive
a call lives here: the cached manager answers, the nodes' engines (`NodeEngines`, also used by
`Cluster`) and when each service was first seen unschedulable. Helpers: `swarm_records` (pure),
`swarm_nodes` (image and model on the nodes, fit; handed this object), `swarm_tasks` (replica
views, routes). The engine calls are `anvyl.runtime`'s (`swarm`, `swarm_services`).
"""

from __future__ import annotations

import time

from anvyl.errors import AnvylError
from anvyl.runtime import DockerDriver, swarm
from anvyl.services.node_engines import NodeEngines
from anvyl.services.swarm_owner import Owner
from anvyl.store import HostRecord

ACTIVE_CACHE_S = 5.0


class SwarmDeployments:
    """What the Swarm runtime keeps between calls, for the deployment service that owns it."""

    def __init__(self, models: Owner) -> None:
        self.models = models
        self._active: dict[str, tuple[float, bool]] = {}
        self.engines = NodeEngines(models.store, models.home)  # the nodes' own engines
        # Service id -> when its tasks were first seen pending with the scheduler's complaint.
        self.unschedulable_since: dict[str, float] = {}

    def active(self, host_id: str) -> bool:
        """True when the host's engine is a Swarm manager (cached for a few seconds)."""
        now = time.monotonic()
        cached = self._active.get(host_id)
        if cached is not None and now - cached[0] < ACTIVE_CACHE_S:
            return cached[1]
        try:
            value = swarm.is_manager(self.models.hosts.driver(host_id))
        except AnvylError:
            value = False
        self._active[host_id] = (now, value)
        return value

    def forget_managers(self) -> None:
        """Drop the cached answers of `active` (after `swarm init`)."""
        self._active.clear()

    def manager(self) -> tuple[HostRecord, DockerDriver] | None:
        """The registered host whose engine manages a Swarm, if any."""
        for host in self.models.hosts.records():
            if self.active(host.id):
                return host, self.models.hosts.driver(host.id)
        return None

    def manager_hosts(self) -> list[str]:
        """Ids of the registered hosts whose engines manage a Swarm (where services run)."""
        return [h.id for h in self.models.hosts.records() if self.active(h.id)]

    def node_driver(self, manager: DockerDriver, node_id: str) -> DockerDriver | None:
        """The engine of a node: the manager's own for its node, else the recorded one."""
        if swarm.local_node_id(manager) == node_id:
            return manager
        return self.engines.driver(node_id)
