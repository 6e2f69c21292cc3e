"""anvyl.v1.ClusterService: the Swarm behind the control plane (thin, like the other servicers)."""

from __future__ import annotations

import grpc

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc
from anvyl.server.cluster_messages import node_to_pb
from anvyl.server.servicers import deployment_to_pb
from anvyl.services import Services
from anvyl.services.cluster import Cluster, NodeView


class ClusterServicer(rpc.ClusterServiceServicer):
    """anvyl.v1.ClusterService."""

    def __init__(self, services: Services) -> None:
        self.models = services.models
        self.cluster = Cluster(services.models)

    def InitCluster(
        self, request: pb.InitClusterRequest, context: grpc.ServicerContext
    ) -> pb.ClusterInfo:
        """`docker swarm init` on the server's engine."""
        return pb.ClusterInfo(
            node_id=self.cluster.init(request.advertise_addr, request.listen_addr)
        )

    def GetJoinToken(
        self, request: pb.GetJoinTokenRequest, context: grpc.ServicerContext
    ) -> pb.JoinToken:
        """The join token and command."""
        info = self.cluster.join_info(request.role)
        return pb.JoinToken(
            token=info.token, manager_address=info.manager_address, command=info.command
        )

    def ListNodes(
        self, request: pb.ListNodesRequest, context: grpc.ServicerContext
    ) -> pb.ListNodesResponse:
        """Every node with its models."""
        views: list[NodeView] = self.cluster.nodes()
        return pb.ListNodesResponse(nodes=[node_to_pb(v.node, v.models, v.engine) for v in views])

    def SetNodeAvailability(
        self, request: pb.SetNodeAvailabilityRequest, context: grpc.ServicerContext
    ) -> pb.Node:
        """Drain, pause or activate a node."""
        return node_to_pb(self.cluster.set_availability(request.node, request.availability))

    def ScaleModel(
        self, request: pb.ScaleModelRequest, context: grpc.ServicerContext
    ) -> pb.Deployment:
        """Change the replica count of a Swarm deployment."""
        return deployment_to_pb(self.models.scale(request.ref, request.replicas))

    def SetNodeEngine(
        self, request: pb.SetNodeEngineRequest, context: grpc.ServicerContext
    ) -> pb.Node:
        """Record how to reach a node's engine, once checked."""
        view = self.cluster.set_engine(
            request.node,
            request.url,
            tls_ca=request.tls_ca,
            tls_cert=request.tls_cert,
            tls_key=request.tls_key,
        )
        return node_to_pb(view.node, view.models, view.engine)

    def RemoveNodeEngine(
        self, request: pb.RemoveNodeEngineRequest, context: grpc.ServicerContext
    ) -> pb.Node:
        """Forget a node's engine."""
        view = self.cluster.remove_engine(request.node)
        return node_to_pb(view.node, view.models, view.engine)
