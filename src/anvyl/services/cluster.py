"""The Swarm as a whole: init, join token, nodes with their models, availability, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from anvyl import config
from anvyl.errors import (
    AnvylError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RuntimeUnavailable,
)
from anvyl.runtime import DockerDriver, swarm
from anvyl.services.hosts import ContainerUsage, HostMetrics, container_usage
from anvyl.services.models import Models
from anvyl.services.swarm_records import is_swarm
from anvyl.store import deployments as table

ENGINE_REACHABLE = "reachable"
ENGINE_UNREACHABLE = "unreachable"
ENGINE_UNKNOWN = "unknown"
NO_ENGINE = (
    "Anvyl does not know how to reach this node's engine "
    "(`anvyl host add NODE --engine tcp://HOST:PORT|ssh://USER@HOST`)"
)


@dataclass(frozen=True)
class NodeEngine:
    """How Anvyl reaches a node's own engine, and whether it answers."""

    url: str = ""
    state: str = ENGINE_UNKNOWN
    reason: str = ""
    driver: DockerDriver | None = None


@dataclass(frozen=True)
class NodeView:
    """A Swarm node, the deployments with a running replica on it, and its engine's access."""

    node: swarm.NodeInfo
    models: tuple[str, ...] = ()
    engine: NodeEngine = NodeEngine()


@dataclass(frozen=True)
class NodeMetrics:
    """A node's figures in `host metrics`: the manager's view, plus its engine's own facts."""

    node: swarm.NodeInfo
    models: tuple[str, ...] = ()
    engine_url: str = ""
    engine_state: str = ENGINE_UNKNOWN
    engine_reason: str = ""
    engine: swarm.EngineFacts | None = None


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
        local = self.models.hosts.local()
        if local is None:
            raise FailedPrecondition("no local engine is registered")
        return self.models.hosts.driver(local.id)

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
        self.models.swarm.forget_managers()
        return node_id

    def join_info(self, role: str = "") -> JoinInfo:
        """The token and manager address to join as `role` (worker by default)."""
        token, address = swarm.join_token(self._manager(), role or swarm.ROLE_WORKER)
        return JoinInfo(token=token, manager_address=address)

    def nodes(self) -> list[NodeView]:
        """Every node, its deployments with a running replica, and whether its engine answers."""
        driver = self._manager()
        placed: dict[str, list[str]] = {}
        for record in table.list_deployments(self.models.store):
            if not is_swarm(record) or not record.container_id:
                continue
            for task in swarm.list_tasks(driver, record.container_id):
                if task.state == "running" and task.desired_state == "running":
                    placed.setdefault(task.node_id, []).append(record.name)
        nodes = swarm.list_nodes(driver)
        local_id = swarm.local_node_id(driver)
        engines = self.models.swarm.engines

        def access(node: swarm.NodeInfo) -> NodeEngine:
            if node.id == local_id:
                return NodeEngine(driver.base_url, ENGINE_REACHABLE, "", driver)
            record = engines.get(node.id)
            if record is None:
                return NodeEngine(reason=NO_ENGINE)
            ok, reason = engines.probe(record)
            return NodeEngine(record.url, ENGINE_REACHABLE if ok else ENGINE_UNREACHABLE, reason)

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(nodes)))) as pool:
            access_by_node = list(pool.map(access, nodes))
        return [
            NodeView(node=n, models=tuple(sorted(placed.get(n.id, []))), engine=e)
            for n, e in zip(nodes, access_by_node, strict=True)
        ]

    def set_engine(
        self,
        ref: str,
        url: str,
        *,
        tls_ca: bytes = b"",
        tls_cert: bytes = b"",
        tls_key: bytes = b"",
    ) -> NodeView:
        """Record how to reach a node's engine once it proves to be that node's (`host add`)."""
        driver = self._manager()
        node = swarm.resolve_node(swarm.list_nodes(driver), ref.strip())
        record = self.models.swarm.engines.add(
            node, url, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key
        )
        return NodeView(node=node, engine=NodeEngine(record.url, ENGINE_REACHABLE))

    def remove_engine(self, ref: str) -> NodeView:
        """Forget a node's engine (`host remove`); the node stays in the Swarm."""
        engines = self.models.swarm.engines
        ref = ref.strip()
        if not ref:
            raise InvalidArgument("a node id or hostname is required")
        driver = self._manager()
        nodes = swarm.list_nodes(driver)
        try:
            node: swarm.NodeInfo | None = swarm.resolve_node(nodes, ref)
        except InvalidArgument:
            node = None  # it may have left the Swarm: its record is still forgettable
        record = engines.get(node.id) if node is not None else engines.find(ref)
        if record is None:
            known = ", ".join(r.hostname for r in engines.records()) or "none"
            raise NotFound(f"Anvyl records no engine for {ref!r} (recorded: {known})")
        engines.remove(record.node_id)
        if node is None:
            node = swarm.NodeInfo(record.node_id, record.hostname, "", "", "", "gone", 0, 0, "")
        return NodeView(node=node, engine=NodeEngine(reason=NO_ENGINE))

    def set_availability(self, ref: str, availability: str) -> swarm.NodeInfo:
        """Drain, pause or activate a node (by id, hostname or unique id prefix)."""
        driver = self._manager()
        node = swarm.resolve_node(swarm.list_nodes(driver), ref.strip())
        return swarm.set_availability(driver, node.id, availability)

    # -- metrics ---------------------------------------------------------------------------

    def active(self) -> bool:
        """True when the local engine is a Swarm manager (node refs mean something)."""
        local = self.models.hosts.local()
        return local is not None and self.models.swarm.active(local.id)

    def node_engine(self, node: swarm.NodeInfo) -> NodeEngine:
        """How Anvyl reaches `node`'s engine: the local engine for its own node."""
        local = self.models.hosts.local()
        if local is not None:
            driver = self.models.hosts.driver(local.id)
            try:
                if swarm.local_node_id(driver) == node.id:
                    return NodeEngine(driver.base_url, ENGINE_REACHABLE, "", driver)
            except RuntimeUnavailable as exc:
                return NodeEngine(driver.base_url, ENGINE_UNREACHABLE, exc.message)
        record = self.models.swarm.engines.get(node.id)
        if record is None:
            return NodeEngine(reason=NO_ENGINE)
        driver = self.models.swarm.engines.driver(node.id)
        return NodeEngine(record.url, ENGINE_REACHABLE, "", driver)

    def metrics(self, ref: str, *, sleep: Callable[[float], None] = time.sleep) -> HostMetrics:
        """`host metrics`: of a Swarm node when `ref` names one, else of a registered host."""
        ref = ref.strip()
        if ref and self.active():
            nodes = swarm.list_nodes(self._manager())
            if any(ref in (n.id, n.hostname) or n.id.startswith(ref) for n in nodes):
                return self.node_metrics(ref, sleep=sleep)
        return self.models.hosts.metrics(ref, sleep=sleep)

    def node_metrics(self, ref: str, *, sleep: Callable[[float], None] = time.sleep) -> HostMetrics:
        """What the manager knows of a node, its engine's facts and Anvyl's tasks' usage there.

        The task list comes from the manager, the figures from the node's own engine: a node
        whose engine Anvyl cannot reach lists its tasks with `container_stats` false and why.
        """
        driver = self._manager()
        nodes = swarm.list_nodes(driver)
        node = swarm.resolve_node(nodes, ref.strip())
        tasks = [
            t
            for t in swarm.node_tasks(driver, node.id)
            if t.labels.get(config.LABEL_MANAGED) == "true"
        ]
        names = {
            r.container_id: r.name
            for r in table.list_deployments(self.models.store)
            if is_swarm(r) and r.container_id
        }
        engine = self.node_engine(node)
        facts = None
        base: HostMetrics | None = None
        usages: tuple[ContainerUsage, ...] = ()
        stats_reason = ""
        if engine.driver is not None:
            try:
                facts = swarm.engine_facts(engine.driver)
                local = self.models.hosts.local()
                if (
                    local is not None
                    and engine.driver is self.models.hosts.driver(local.id)
                    and (engine.url.startswith("unix://"))
                ):  # the server's own machine: psutil figures too
                    base = self.models.hosts.metrics(local.id, sleep=sleep)
                    usages = base.containers
                else:
                    usages = container_usage(engine.driver, self.models.hosts.metrics_window, sleep)
            except AnvylError as exc:
                engine = replace(engine, state=ENGINE_UNREACHABLE, reason=exc.message)
                facts, base, usages = None, None, ()
        if engine.state == ENGINE_REACHABLE:
            by_container = {t.container_id: t for t in tasks if t.container_id}
            containers = tuple(_annotated(u, by_container.get(u.id), names) for u in usages)
        else:
            stats_reason = f"no figures from {node.hostname}'s engine: {engine.reason}"
            containers = tuple(
                ContainerUsage(
                    id=t.container_id,
                    name=f"{names.get(t.service_id, t.service_id[:12])}.{t.slot}",
                    cpu_percent=0.0,
                    memory_used_bytes=0,
                    memory_limit_bytes=0,
                    deployment=names.get(t.service_id, ""),
                    task_id=t.id,
                    state=t.state,
                )
                for t in tasks
            )
        models = tuple(sorted({names[t.service_id] for t in tasks if t.service_id in names}))
        view = NodeMetrics(
            node=node,
            models=models,
            engine_url=engine.url,
            engine_state=engine.state,
            engine_reason=engine.reason,
            engine=facts,
        )
        if base is not None:
            return replace(base, host_id=node.id, containers=containers, node=view)
        return HostMetrics(
            host_id=node.id,
            cpu_count=node.cpus,
            cpu_percent=0.0,
            memory_used_bytes=0,
            memory_total_bytes=node.memory_bytes,
            disk_path="",
            disk_used_bytes=0,
            disk_total_bytes=0,
            load1=0.0,
            load5=0.0,
            load15=0.0,
            containers=containers,
            node=view,
            machine_measured=False,
            container_stats=engine.state == ENGINE_REACHABLE,
            container_stats_reason=stats_reason,
        )


def _annotated(
    usage: ContainerUsage, task: swarm.TaskInfo | None, names: dict[str, str]
) -> ContainerUsage:
    """A container's usage with its task and deployment, when it is a Swarm task."""
    if task is None:
        return usage
    return replace(
        usage, deployment=names.get(task.service_id, ""), task_id=task.id, state=task.state
    )
