"""What the deployment service answers: frozen dataclasses, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anvyl.runtime.base import KIND_CONTAINER, Handle
from anvyl.store.deployments import DeploymentRecord


@dataclass(frozen=True)
class Endpoint:
    """How the control plane itself reaches a model server (not the URL users are shown)."""

    base_url: str
    api_key: str = ""


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as `model ps` shows it: the record, observed through its runtime, probed."""

    record: DeploymentRecord
    state: str
    state_reason: str
    url: str
    container_name: str = ""
    uptime_s: float = 0.0
    memory_used_bytes: int = 0
    memory_limit_bytes: int = 0
    tokens_per_second: float = 0.0
    requests_total: int = 0
    generated_tokens_total: int = 0
    replicas: tuple[Any, ...] = ()  # Swarm deployments: a `runtime.swarm.ReplicaView` each

    @property
    def runtime(self) -> str:
        """container, process or swarm."""
        return runtime_of(self.record)


def runtime_of(record: DeploymentRecord) -> str:
    """The runtime a deployment runs on (rows from before runtimes were named: container)."""
    return str(record.options.get("runtime") or KIND_CONTAINER)


def handle_of(record: DeploymentRecord) -> Handle:
    """The runtime handle stored with a deployment (plain data)."""
    data = dict(record.options.get("handle") or {})
    data["deployment"] = record.id
    if record.options.get("restart"):
        data["restart"] = record.options["restart"]
    return Handle(ref=record.container_id, data=data)
