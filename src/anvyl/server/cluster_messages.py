"""Swarm nodes and their metrics as anvyl.v1 messages (used by the host and cluster servicers)."""

from __future__ import annotations

from anvyl.api import anvyl_pb2 as pb
from anvyl.runtime.swarm import NodeInfo
from anvyl.services.cluster import NodeEngine, NodeMetrics


def node_to_pb(
    node: NodeInfo, models: tuple[str, ...] = (), engine: NodeEngine | None = None
) -> pb.Node:
    """NodeInfo (and how Anvyl reaches its engine) → pb.Node."""
    engine = engine or NodeEngine()
    return pb.Node(
        id=node.id,
        hostname=node.hostname,
        address=node.address,
        role=node.role,
        availability=node.availability,
        state=node.state,
        cpus=node.cpus,
        memory_bytes=node.memory_bytes,
        engine_version=node.engine_version,
        labels=node.labels,
        leader=node.leader,
        models=list(models),
        engine_url=engine.url,
        engine_state=engine.state,
        engine_reason=engine.reason,
    )


def node_metrics_to_pb(m: NodeMetrics) -> pb.NodeMetrics:
    """NodeMetrics → pb.NodeMetrics."""
    facts = None
    if m.engine is not None:
        e = m.engine
        facts = pb.EngineFacts(
            name=e.name,
            version=e.version,
            api_version=e.api_version,
            os=e.os,
            kernel_version=e.kernel_version,
            architecture=e.architecture,
            cpus=e.cpus,
            memory_bytes=e.memory_bytes,
            containers=e.containers,
            containers_running=e.containers_running,
            images=e.images,
            storage_driver=e.storage_driver,
            cgroup_version=e.cgroup_version,
        )
    return pb.NodeMetrics(
        node=node_to_pb(
            m.node, m.models, NodeEngine(m.engine_url, m.engine_state, m.engine_reason)
        ),
        nano_cpus=m.node.nano_cpus,
        engine_url=m.engine_url,
        engine_state=m.engine_state,
        engine_reason=m.engine_reason,
        engine=facts,
    )
