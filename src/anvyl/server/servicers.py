"""gRPC servicers: thin adapters that turn requests into service calls and results into proto."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from anvyl import config
from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc
from anvyl.catalog import ModelInfo
from anvyl.errors import InvalidArgument
from anvyl.runtime import ContainerInfo
from anvyl.runtime.base import LogStream
from anvyl.server.cluster_messages import node_metrics_to_pb
from anvyl.server.loading import load_events
from anvyl.services import HostMetrics, HostView, Services, images
from anvyl.services.cluster import Cluster
from anvyl.services.models import DEFAULT_WAIT_TIMEOUT_S, DeploymentView, StartOptions
from anvyl.services.ondemand import OnDemand, parse_keep_alive

LOG_CHUNK_MAX = 64 * 1024
T = TypeVar("T")


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
        runtime=host.runtime,
    )


def metrics_to_pb(m: HostMetrics) -> pb.HostMetrics:
    """HostMetrics → pb.HostMetrics (with the node's figures for a Swarm node)."""
    node = node_metrics_to_pb(m.node) if m.node is not None else None
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
                deployment=c.deployment,
                task_id=c.task_id,
                state=c.state,
            )
            for c in m.containers
        ],
        node=node,
        machine_measured=m.machine_measured,
        container_stats=m.container_stats,
        container_stats_reason=m.container_stats_reason,
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
        self.models = services.models
        self.cluster = Cluster(services.models)

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
        """Machine and container usage; a Swarm node's figures when the id names a node."""
        return metrics_to_pb(self.cluster.metrics(request.host_id))

    def BuildImage(
        self, request: pb.BuildImageRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BuildImageEvent]:
        """Build the model-server image on a host's engine, streaming its progress lines."""

        def run(progress: Callable[[str, str], None]) -> pb.BuildImageEvent:
            built = images.build_image(
                self.hosts,
                host_ref=request.host_id,
                base_image=request.base_image,
                ca_bundle=request.ca_bundle,
                tag=request.tag,
                progress=lambda line: progress(line, ""),
                cache_dir=self.models.home / "cache",
                container_labels=self.models.container_labels,
            )
            image = pb.BuiltImage(ref=built.ref, size_bytes=built.size_bytes)
            return pb.BuildImageEvent(line=f"built {built.ref}", image=image)

        def event(line: str, _unused: str) -> pb.BuildImageEvent:
            return pb.BuildImageEvent(line=line)

        yield from _with_progress(run, event, context)


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
        yield from _stream_chunks(stream, context)

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
    """anvyl.v1.ModelService."""

    def __init__(self, services: Services) -> None:
        self.models = services.models
        self.ondemand = services.ondemand

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        """Models available to start."""
        return pb.ListModelsResponse(
            models=[model_to_pb(m.info, running=m.running) for m in self.models.available()]
        )

    def ImportModel(
        self, request: pb.ImportModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ImportModelEvent]:
        """Import a model, streaming progress."""

        def run(progress: Callable[[str, str], None]) -> pb.ImportModelEvent:
            if request.bundled:
                if request.path:
                    raise InvalidArgument("give either a path or a bundled model, not both")
                info = self.models.import_bundled(request.bundled, progress=progress)
            else:
                info = self.models.import_path(
                    request.path, name=request.name, link=request.link, progress=progress
                )
            return pb.ImportModelEvent(step="imported", fraction=1.0, model=model_to_pb(info))

        def event(fraction: str, step: str) -> pb.ImportModelEvent:
            return pb.ImportModelEvent(step=step, fraction=float(fraction))

        yield from _with_progress(run, event, context)

    def PullModel(
        self, request: pb.PullModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ImportModelEvent]:
        """Pull a model from the Hugging Face Hub, streaming progress; cancelled with the call."""
        cancel = threading.Event()
        context.add_callback(cancel.set)  # the call ends (Ctrl-C too): stop, keep the partial

        def run(progress: Callable[[str, str], None]) -> pb.ImportModelEvent:
            info = self.models.pull(
                request.repo,
                file=request.file,
                name=request.name,
                progress=progress,
                cancel=cancel,
            )
            return pb.ImportModelEvent(step="pulled", fraction=1.0, model=model_to_pb(info))

        def event(fraction: str, step: str) -> pb.ImportModelEvent:
            return pb.ImportModelEvent(step=step, fraction=float(fraction))

        yield from _with_progress(run, event, context)

    def RemoveModel(
        self, request: pb.RemoveModelRequest, context: grpc.ServicerContext
    ) -> pb.Model:
        """Delete an imported model."""
        return model_to_pb(self.models.remove(request.model_id))

    def StartModel(
        self, request: pb.StartModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StartModelEvent]:
        """Start a model, streaming its phases; the last event carries the deployment."""
        options = StartOptions(
            model_id=request.model_id,
            name=request.name,
            port=request.port or config.DEFAULT_MODEL_PORT,
            host_id=request.host_id,
            memory=request.memory,
            cpus=request.cpus,
            ctx=request.ctx,
            max_queue=request.max_queue,
            api_key=request.api_key,
            bind=request.bind or "127.0.0.1",
            force=request.force,
            detach=request.detach,
            startup_script=request.startup_script,
            dtype=request.dtype,
            wait_timeout=request.wait_timeout_seconds or DEFAULT_WAIT_TIMEOUT_S,
            restart=request.restart,
            replicas=request.replicas,
            runtime=request.runtime,
            keep_alive=_explicit_keep_alive(request.keep_alive),
            allow_origins=tuple(request.allow_origins),
        )

        def run(progress: Callable[[str, str], None]) -> pb.StartModelEvent:
            view = self.models.start(options, progress)
            return pb.StartModelEvent(
                phase="ready" if view.state == "ready" else view.state,
                message=view.url,
                deployment=deployment_to_pb(view, self.ondemand),
            )

        def event(phase: str, message: str) -> pb.StartModelEvent:
            return pb.StartModelEvent(phase=phase, message=message)

        yield from _with_progress(run, event, context)

    def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: grpc.ServicerContext
    ) -> pb.ListDeploymentsResponse:
        """Every deployment, live."""
        views = self.models.list()
        if request.host_id:
            host = self.models.hosts.resolve(request.host_id)
            views = [v for v in views if v.record.host_id == host.id]
        return pb.ListDeploymentsResponse(
            deployments=[deployment_to_pb(v, self.ondemand) for v in views]
        )

    def StopModel(
        self, request: pb.StopModelRequest, context: grpc.ServicerContext
    ) -> pb.Deployment:
        """Stop and remove a deployment."""
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        return deployment_to_pb(
            self.models.stop(request.ref, timeout=timeout, host_id=request.host_id)
        )

    def DeploymentLogs(
        self, request: pb.DeploymentLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.LogChunk]:
        """A deployment's output, whatever runs it."""
        stream = self.models.logs(
            request.ref,
            host_id=request.host_id,
            follow=request.follow,
            tail=request.tail if request.HasField("tail") else None,
        )
        yield from _stream_chunks(stream, context)

    def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StartModelEvent]:
        """Get or load a model (one start for every caller); phases, then the deployment."""
        yield from load_events(self.ondemand, request, context, deployment_to_pb)


def _explicit_keep_alive(value: str) -> float | None:
    """An explicit start's `--keep-alive`: None (never unload) when empty or negative."""
    if not value.strip():
        return None
    seconds = parse_keep_alive(value)
    return None if seconds < 0 else seconds


def model_to_pb(info: ModelInfo, *, running: int = 0) -> pb.Model:
    """ModelInfo → pb.Model."""
    return pb.Model(
        id=info.id,
        path=str(info.path),
        source=info.source,
        architecture=info.architecture,
        parameters=info.parameters,
        quantization=info.quantization,
        size_bytes=info.size_bytes,
        context_length=info.context_length or 0,
        memory_bytes=info.memory_bytes,
        running=running,
        origin=info.origin,
        tool_format=info.tool_format or "",
    )


def deployment_to_pb(view: DeploymentView, demand: OnDemand | None = None) -> pb.Deployment:
    """DeploymentView → pb.Deployment (`demand`: adds when an idle one unloads)."""
    r = view.record
    keep = r.options.get("keep_alive")
    return pb.Deployment(
        on_demand=bool(r.options.get("on_demand")),
        keep_alive_seconds=-1.0 if keep is None else float(keep),
        unload_at=demand.unload_at(r) if demand is not None else 0.0,
        id=r.id,
        name=r.name,
        model_id=r.model_id,
        host_id=r.host_id,
        container_id=r.container_id,
        url=view.url,
        state=view.state,
        state_reason=view.state_reason,
        port=r.port,
        bind=r.bind,
        image=r.image,
        created_at=r.created_at,
        uptime_seconds=view.uptime_s,
        memory_used_bytes=view.memory_used_bytes,
        memory_limit_bytes=view.memory_limit_bytes,
        tokens_per_second=view.tokens_per_second,
        requests_total=view.requests_total,
        generated_tokens_total=view.generated_tokens_total,
        runtime=view.runtime,
        replicas=[
            pb.Replica(
                slot=x.slot,
                task_id=x.task_id,
                node_id=x.node_id,
                node=x.node,
                address=x.address,
                state=x.state,
                since=x.since,
                restarts=x.restarts,
                ready=x.ready,
                task_error=x.error,
            )
            for x in view.replicas
        ],
    )


_DONE = object()


def _stream_chunks(stream: LogStream, context: grpc.ServicerContext) -> Iterator[pb.LogChunk]:
    """Log chunks of at most LOG_CHUNK_MAX bytes until the stream ends or the client leaves."""
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


def _with_progress(
    run: Callable[[Callable[[str, str], None]], T],
    event: Callable[[str, str], T],
    context: grpc.ServicerContext,
) -> Iterator[T]:
    """Run `run(progress)` in a thread, yielding `event(...)` per progress call, then its result.

    The operation goes on if the client goes away (like `docker run` after Ctrl-C on attach):
    stopping half-way is what would leave things half made.
    """
    events: queue.Queue[Any] = queue.Queue()

    def work() -> None:
        try:
            events.put(("result", run(lambda a, b: events.put(("event", event(a, b))))))
        except BaseException as exc:  # re-raised in the RPC thread, where the interceptor maps it
            events.put(("error", exc))
        events.put((_DONE, None))

    threading.Thread(target=work, name="anvyl-op", daemon=True).start()
    while True:
        kind, value = events.get()
        if kind is _DONE:
            return
        if kind == "error":
            raise value
        if context.is_active():
            yield value
