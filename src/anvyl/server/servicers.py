"""gRPC servicers: thin adapters that turn requests into service calls and results into proto."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc
from anvyl.runtime import ContainerInfo
from anvyl.services import HostMetrics, HostView, Services

LOG_CHUNK_MAX = 64 * 1024


def host_to_pb(host: HostView) -> pb.Host:
    """HostView → pb.Host."""
    return pb.Host(
        id=host.id,
        name=host.name,
        address=host.address,
        status=pb.HOST_STATUS_REACHABLE if host.reachable else pb.HOST_STATUS_UNREACHABLE,
        status_reason=host.status_reason,
        cpus=host.cpus,
        memory_bytes=host.memory_bytes,
        engine_version=host.engine_version,
        running_containers=host.running_containers,
        local=host.local,
        created_at=host.created_at,
    )


def metrics_to_pb(m: HostMetrics) -> pb.HostMetrics:
    """HostMetrics → pb.HostMetrics."""
    return pb.HostMetrics(
        host_id=m.host_id,
        cpu_count=m.cpu_count,
        cpu_percent=m.cpu_percent,
        memory_used_bytes=m.memory_used_bytes,
        memory_total_bytes=m.memory_total_bytes,
        disk_path=m.disk_path,
        disk_used_bytes=m.disk_used_bytes,
        disk_total_bytes=m.disk_total_bytes,
        load1=m.load1,
        load5=m.load5,
        load15=m.load15,
        containers=[
            pb.ContainerMetrics(
                id=c.id,
                name=c.name,
                cpu_percent=c.cpu_percent,
                memory_used_bytes=c.memory_used_bytes,
                memory_limit_bytes=c.memory_limit_bytes,
            )
            for c in m.containers
        ],
    )


def container_to_pb(c: ContainerInfo) -> pb.Container:
    """ContainerInfo → pb.Container."""
    return pb.Container(
        id=c.id,
        name=c.name,
        image=c.image,
        state=c.state,
        status=c.status,
        host_id=c.host_id,
        labels=c.labels,
        created_at=c.created_at,
        ports=[
            pb.PortBinding(
                container_port=p.container_port,
                protocol=p.protocol,
                host_ip=p.host_ip,
                host_port=p.host_port,
            )
            for p in c.ports
        ],
    )


class HostServicer(rpc.HostServiceServicer):
    """anvyl.v1.HostService."""

    def __init__(self, services: Services) -> None:
        self.hosts = services.hosts

    def ListHosts(
        self, request: pb.ListHostsRequest, context: grpc.ServicerContext
    ) -> pb.ListHostsResponse:
        """Every host with live status."""
        return pb.ListHostsResponse(hosts=[host_to_pb(h) for h in self.hosts.list_hosts()])

    def GetHost(self, request: pb.GetHostRequest, context: grpc.ServicerContext) -> pb.Host:
        """One host."""
        return host_to_pb(self.hosts.get_host(request.host_id))

    def GetHostMetrics(
        self, request: pb.GetHostMetricsRequest, context: grpc.ServicerContext
    ) -> pb.HostMetrics:
        """Machine and container usage."""
        return metrics_to_pb(self.hosts.metrics(request.host_id))


class ContainerServicer(rpc.ContainerServiceServicer):
    """anvyl.v1.ContainerService."""

    def __init__(self, services: Services) -> None:
        self.containers = services.containers

    def ListContainers(
        self, request: pb.ListContainersRequest, context: grpc.ServicerContext
    ) -> pb.ListContainersResponse:
        """Anvyl-managed containers."""
        found = self.containers.list(
            all=request.all, host_id=request.host_id, labels=list(request.labels)
        )
        return pb.ListContainersResponse(containers=[container_to_pb(c) for c in found])

    def GetContainer(
        self, request: pb.GetContainerRequest, context: grpc.ServicerContext
    ) -> pb.Container:
        """One container."""
        return container_to_pb(self.containers.get(request.container, host_id=request.host_id))

    def StreamLogs(
        self, request: pb.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.LogChunk]:
        """Log output, followed until the container stops or the client goes away."""
        stream = self.containers.logs(
            request.container,
            host_id=request.host_id,
            follow=request.follow,
            tail=request.tail if request.HasField("tail") else None,
        )
        # A cancelled call must unblock the read that waits for the next log line.
        context.add_callback(stream.close)
        try:
            for chunk in stream:
                for start in range(0, len(chunk), LOG_CHUNK_MAX):
                    yield pb.LogChunk(data=chunk[start : start + LOG_CHUNK_MAX])
                if not context.is_active():
                    break
        finally:
            stream.close()

    def ExecContainer(
        self, request: pb.ExecContainerRequest, context: grpc.ServicerContext
    ) -> pb.ExecContainerResponse:
        """Run a command inside a container."""
        result = self.containers.exec(
            request.container, list(request.command), host_id=request.host_id
        )
        return pb.ExecContainerResponse(
            exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr
        )

    def StopContainer(
        self, request: pb.StopContainerRequest, context: grpc.ServicerContext
    ) -> pb.Container:
        """Stop a container."""
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        info = self.containers.stop(request.container, host_id=request.host_id, timeout=timeout)
        return container_to_pb(info)


class ModelServicer(rpc.ModelServiceServicer):
    """anvyl.v1.ModelService (its RPCs arrive with the model issues)."""

    def __init__(self, services: Services) -> None:
        self.services = services
