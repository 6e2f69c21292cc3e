"""Swarm deployments as plain data: which rows are services, and rows rebuilt from a service."""

from __future__ import annotations

from typing import Any

from anvyl import config
from anvyl.errors import InvalidArgument
from anvyl.runtime import model_spec as spec
from anvyl.runtime import swarm
from anvyl.runtime import swarm_services as services
from anvyl.runtime.base import KIND_SWARM
from anvyl.services import node_content
from anvyl.store import deployments as table
from anvyl.store.deployments import DeploymentRecord

RUNTIME = KIND_SWARM
# Whether the user gave the API key ("given": gateway clients present it too) or Anvyl made it.
LABEL_API_KEY = "anvyl.api-key"
# Every replica publishes its port in host mode on all of its node's addresses.
WILDCARD = "0.0.0.0"


def is_swarm(record: DeploymentRecord) -> bool:
    """True for a deployment run as a Swarm service."""
    return record.options.get("runtime") == RUNTIME


def adopted_record(attrs: dict[str, Any], host_id: str) -> DeploymentRecord:
    """The store row of a service Anvyl made, rebuilt from its labels and spec (pure)."""
    spec_ = attrs.get("Spec") or {}
    labels = spec_.get("Labels") or {}
    template = spec_.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    port = services.published_port(attrs)
    if not port or not labels.get(config.LABEL_DEPLOYMENT):
        raise InvalidArgument("no published port or no deployment label")
    options: dict[str, Any] = {
        "runtime": RUNTIME,
        "replicas": services.desired_replicas(attrs),
        "api_key": True,
        "adopted": True,
    }
    if labels.get(LABEL_API_KEY) == "generated":
        options["api_key_generated"] = True
    memory = int(((template.get("Resources") or {}).get("Limits") or {}).get("MemoryBytes") or 0)
    if memory:
        options["memory"] = f"{memory // (1 << 20)}m"
    for constraint in (template.get("Placement") or {}).get("Constraints") or []:
        key, sep, value = constraint.replace(" ", "").partition("==")
        if sep and key == "node.id":
            options["node_id"] = value
    for mount in container.get("Mounts") or []:
        if mount.get("Target") == spec.CONTAINER_MODEL_PATH and mount.get("Type") == "volume":
            options["model_volume"] = mount.get("Source", "")
            if labels.get(node_content.LABEL_MODEL_HASH):
                options["model_hash"] = labels[node_content.LABEL_MODEL_HASH]
    return DeploymentRecord(
        id=labels[config.LABEL_DEPLOYMENT],
        name=services.service_name(attrs),
        model_id=labels.get(config.LABEL_MODEL_ID, "unknown"),
        host_id=host_id,
        port=port,
        bind=WILDCARD,
        image=str(container.get("Image") or "").split("@", 1)[0],
        container_id=str(attrs["ID"]),
        state=table.STATE_STARTING,
        options=options,
    )


def usable_nodes(nodes: list[swarm.NodeInfo]) -> list[swarm.NodeInfo]:
    """Nodes the scheduler may place a replica on."""
    return [n for n in nodes if n.state == "ready" and n.availability == "active"]
