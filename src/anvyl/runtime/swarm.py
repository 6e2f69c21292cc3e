"""Docker Swarm through the same `docker` SDK: nodes, model services, their tasks, secrets.

When the engine Anvyl talks to is a Swarm manager, a deployment is one replicated service
(`ModelServiceSpec`) instead of one container; its replicas are tasks the Swarm places,
restarts and reschedules. Swarm's routing mesh (service VIPs, ingress) is never used: each
task publishes its API port in host mode on its node, and Anvyl's gateway routes to the nodes.

What differs from a plain container on API 1.41: no `no-new-privileges` and no PID limit (the
service API has neither field there), no swap limit (the memory limit is also the reservation),
and the API key is a Swarm secret instead of a bind-mounted file. The rest (read-only root,
every capability dropped, non-root user, tmpfs, init, health check, labels, env) is the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anvyl import config
from anvyl.errors import FailedPrecondition, InvalidArgument
from anvyl.runtime import model_spec as spec
from anvyl.runtime.driver import DockerDriver, LogStream, _count_response

ROLE_MANAGER = "manager"
ROLE_WORKER = "worker"
RESTART_DELAY_NS = 1_000_000_000
STOP_GRACE_NS = 30 * 1_000_000_000


@dataclass(frozen=True)
class NodeInfo:
    """One Swarm node as `host list` shows it."""

    id: str
    hostname: str
    address: str
    role: str
    availability: str
    state: str
    cpus: int
    memory_bytes: int
    engine_version: str
    labels: dict[str, str] = field(default_factory=dict)
    leader: bool = False
    nano_cpus: int = 0


@dataclass(frozen=True)
class EngineFacts:
    """A reachable engine's own facts (`docker info`)."""

    node_id: str
    name: str
    version: str
    api_version: str
    os: str
    kernel_version: str
    architecture: str
    cpus: int
    memory_bytes: int
    containers: int
    containers_running: int
    images: int
    storage_driver: str
    cgroup_version: str


@dataclass(frozen=True)
class TaskInfo:
    """One replica (task) of a service."""

    id: str
    slot: int
    node_id: str
    state: str
    desired_state: str
    since: float
    message: str
    error: str
    container_id: str
    exit_code: int | None = None
    service_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)


class NodeEngineDriver(DockerDriver):
    """A Swarm node's own engine over `tcp://` (optionally TLS) or `ssh://` (the `ssh` client)."""

    def __init__(
        self,
        base_url: str,
        *,
        tls_ca: str = "",
        tls_cert: str = "",
        tls_key: str = "",
        timeout: float = 60.0,
    ) -> None:
        super().__init__(base_url, timeout=timeout)
        self.tls_ca, self.tls_cert, self.tls_key = tls_ca, tls_cert, tls_key

    def _connect(self) -> Any:
        import docker
        import docker.tls

        try:
            tls: Any = False
            if self.tls_cert or self.tls_ca:
                tls = docker.tls.TLSConfig(
                    client_cert=(self.tls_cert, self.tls_key) if self.tls_cert else None,
                    ca_cert=self.tls_ca or None,
                    verify=self.tls_ca or True,
                )
            api = (_own_ca_client() if self.tls_ca else docker.APIClient)(
                base_url=self.base_url,
                timeout=int(self.timeout),
                tls=tls,
                use_ssh_client=self.base_url.startswith("ssh://"),
            )
            client = docker.DockerClient.__new__(docker.DockerClient)
            client.api = api
        except Exception as exc:  # refused, TLS handshake, ssh failures, version negotiation
            raise self._unavailable(exc) from exc
        client.api.hooks["response"].append(_count_response)
        return client


def _own_ca_client() -> type:
    import docker

    class OwnCAClient(docker.APIClient):  # type: ignore[misc]
        """An API client that verifies with the given CA even when REQUESTS_CA_BUNDLE is set.

        `requests` lets that variable override a session's own CA (it is read per request
        while the session trusts the environment); the engine's CA must win.
        """

        def _retrieve_server_version(self) -> str:
            self.trust_env = False  # before the first request: the version negotiation
            return str(super()._retrieve_server_version())

    return OwnCAClient


def swarm_state(driver: DockerDriver) -> tuple[str, bool]:
    """The engine's Swarm state (`inactive`, `active`, ...) and whether it is a manager."""
    with driver.engine_errors():
        info = driver.client.api.info()
    swarm = info.get("Swarm") or {}
    return str(swarm.get("LocalNodeState") or "inactive"), bool(swarm.get("ControlAvailable"))


def is_manager(driver: DockerDriver) -> bool:
    """True when the engine is an active Swarm manager (deployments become services)."""
    state, control = swarm_state(driver)
    return state == "active" and control


def local_node_id(driver: DockerDriver) -> str:
    """The Swarm node id of the engine `driver` talks to (empty outside a Swarm)."""
    with driver.engine_errors():
        info = driver.client.api.info()
    return str((info.get("Swarm") or {}).get("NodeID") or "")


def engine_facts(driver: DockerDriver) -> EngineFacts:
    """`docker info` of the engine `driver` talks to."""
    with driver.engine_errors():
        info = driver.client.api.info()
        api_version = str(driver.client.api.api_version)
    return facts_from_info(info, api_version)


def facts_from_info(info: Mapping[str, Any], api_version: str = "") -> EngineFacts:
    """EngineFacts from `GET /info` (pure)."""
    return EngineFacts(
        node_id=str((info.get("Swarm") or {}).get("NodeID") or ""),
        name=str(info.get("Name") or ""),
        version=str(info.get("ServerVersion") or ""),
        api_version=api_version,
        os=str(info.get("OperatingSystem") or ""),
        kernel_version=str(info.get("KernelVersion") or ""),
        architecture=str(info.get("Architecture") or ""),
        cpus=int(info.get("NCPU") or 0),
        memory_bytes=int(info.get("MemTotal") or 0),
        containers=int(info.get("Containers") or 0),
        containers_running=int(info.get("ContainersRunning") or 0),
        images=int(info.get("Images") or 0),
        storage_driver=str(info.get("Driver") or ""),
        cgroup_version=str(info.get("CgroupVersion") or ""),
    )


def node_from_attrs(attrs: Mapping[str, Any]) -> NodeInfo:
    """A NodeInfo from `GET /nodes` (pure)."""
    description = attrs.get("Description") or {}
    resources = description.get("Resources") or {}
    spec_ = attrs.get("Spec") or {}
    status = attrs.get("Status") or {}
    manager = attrs.get("ManagerStatus") or {}
    return NodeInfo(
        id=str(attrs.get("ID") or ""),
        hostname=str(description.get("Hostname") or ""),
        address=str(status.get("Addr") or ""),
        role=str(spec_.get("Role") or ""),
        availability=str(spec_.get("Availability") or ""),
        state=str(status.get("State") or ""),
        cpus=int((resources.get("NanoCPUs") or 0) // 1_000_000_000),
        memory_bytes=int(resources.get("MemoryBytes") or 0),
        engine_version=str((description.get("Engine") or {}).get("EngineVersion") or ""),
        labels=dict(spec_.get("Labels") or {}),
        leader=bool(manager.get("Leader")),
        nano_cpus=int(resources.get("NanoCPUs") or 0),
    )


def list_nodes(driver: DockerDriver) -> list[NodeInfo]:
    """Every node of the Swarm (the engine must be a manager)."""
    with driver.engine_errors():
        rows = driver.client.api.nodes()
    return sorted((node_from_attrs(r) for r in rows), key=lambda n: n.hostname)


def resolve_node(nodes: Sequence[NodeInfo], ref: str) -> NodeInfo:
    """A node by id, hostname or unique id prefix."""
    for node in nodes:
        if ref in (node.id, node.hostname):
            return node
    matches = [n for n in nodes if n.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{n.id[:12]} ({n.hostname})" for n in nodes) or "none"
    if matches:
        raise InvalidArgument(f"node prefix {ref!r} is ambiguous; nodes: {known}")
    raise InvalidArgument(f"no Swarm node {ref!r} (nodes: {known})")


def set_availability(driver: DockerDriver, node_id: str, availability: str) -> NodeInfo:
    """`active`, `pause` or `drain` a node; Swarm moves tasks off a drained node."""
    if availability not in ("active", "pause", "drain"):
        raise InvalidArgument(f"availability must be active, pause or drain, not {availability}")
    with driver.engine_errors():
        attrs = driver.client.api.inspect_node(node_id)
        node_spec = dict(attrs["Spec"])
        node_spec["Availability"] = availability
        driver.client.api.update_node(node_id, attrs["Version"]["Index"], node_spec)
        return node_from_attrs(driver.client.api.inspect_node(node_id))


def task_from_attrs(attrs: Mapping[str, Any]) -> TaskInfo:
    """A TaskInfo from `GET /tasks` (pure)."""
    status = attrs.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    code = container.get("ExitCode")
    return TaskInfo(
        id=str(attrs.get("ID") or ""),
        slot=int(attrs.get("Slot") or 0),
        node_id=str(attrs.get("NodeID") or ""),
        state=str(status.get("State") or ""),
        desired_state=str(attrs.get("DesiredState") or ""),
        since=_timestamp(str(status.get("Timestamp") or "")),
        message=str(status.get("Message") or ""),
        error=str(status.get("Err") or ""),
        container_id=str(container.get("ContainerID") or ""),
        exit_code=int(code) if code is not None else None,
        service_id=str(attrs.get("ServiceID") or ""),
        labels=dict(((attrs.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}),
    )


def list_tasks(driver: DockerDriver, service_id: str) -> list[TaskInfo]:
    """Every task of a service the Swarm still remembers, newest first."""
    with driver.engine_errors():
        rows = driver.client.api.tasks(filters={"service": service_id})
    return sorted((task_from_attrs(r) for r in rows), key=lambda t: t.since, reverse=True)


def service_logs(
    driver: DockerDriver, service_id: str, *, follow: bool, tail: int | None
) -> LogStream:
    """The output of every task of a service (as `docker service logs`)."""
    stream = driver._call(
        lambda api: api.service_logs(
            service_id,
            follow=follow,
            stdout=True,
            stderr=True,
            tail="all" if tail is None else tail,
        )
    )
    return LogStream(driver, stream)


def node_tasks(driver: DockerDriver, node_id: str) -> list[TaskInfo]:
    """The tasks the Swarm wants running on a node, whatever their service."""
    with driver.engine_errors():
        rows = driver.client.api.tasks(filters={"node": node_id, "desired-state": "running"})
    return sorted((task_from_attrs(r) for r in rows), key=lambda t: (t.service_id, t.slot))


def init_swarm(driver: DockerDriver, advertise_addr: str = "", listen_addr: str = "") -> str:
    """`docker swarm init` on this engine; returns the new Swarm's node id."""
    state, _ = swarm_state(driver)
    if state == "active":
        raise FailedPrecondition("this engine is already part of a Swarm")
    kwargs: dict[str, Any] = {}
    if advertise_addr:
        kwargs["advertise_addr"] = advertise_addr
    if listen_addr:
        kwargs["listen_addr"] = listen_addr
    with driver.engine_errors():
        return str(driver.client.api.init_swarm(**kwargs))


def join_token(driver: DockerDriver, role: str = ROLE_WORKER) -> tuple[str, str]:
    """The token for `role` and the manager address to join."""
    if role not in (ROLE_WORKER, ROLE_MANAGER):
        raise InvalidArgument(f"role must be worker or manager, not {role!r}")
    if not is_manager(driver):
        raise FailedPrecondition("this engine is not a Swarm manager: run `anvyl cluster init`")
    with driver.engine_errors():
        attrs = driver.client.api.inspect_swarm()
        info = driver.client.api.info()
    token = attrs["JoinTokens"]["Worker" if role == ROLE_WORKER else "Manager"]
    remotes = (info.get("Swarm") or {}).get("RemoteManagers") or []
    address = remotes[0]["Addr"] if remotes else ""
    return str(token), str(address)


@dataclass(frozen=True)
class ReplicaView:
    """One replica of a Swarm deployment as `model ps` shows it."""

    slot: int
    task_id: str
    node_id: str
    node: str
    address: str
    state: str
    since: float
    restarts: int
    ready: bool = False
    error: str = ""


@dataclass(frozen=True)
class ModelServiceSpec:
    """A model deployment as a Swarm service: the container spec plus placement and replicas."""

    container: spec.ModelContainerSpec
    replicas: int = 1
    node_id: str = ""
    api_key_secret: tuple[str, str] | None = None  # (secret id, secret name)
    service_labels: dict[str, str] = field(default_factory=dict)
    # A volume on every node holding the model (`services.node_content`); empty: bind-mount
    # the model's path on the server's machine, which every node must then have.
    model_volume: str = ""

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `docker.APIClient.create_service`."""
        import docker.types as t

        c = self.container
        env = c.environment()
        if self.model_volume:
            model_mount = t.Mount(
                spec.CONTAINER_MODEL_PATH,
                self.model_volume,
                type="volume",
                read_only=True,
                no_copy=True,
            )
        else:
            model_mount = t.Mount(
                spec.CONTAINER_MODEL_PATH, c.model_path, type="bind", read_only=True
            )
        mounts = [model_mount]
        if c.startup_script:
            mounts.append(
                t.Mount(
                    spec.CONTAINER_STARTUP_SCRIPT_PATH,
                    c.startup_script,
                    type="bind",
                    read_only=True,
                )
            )
        mounts.append(
            t.Mount("/tmp", None, type="tmpfs", tmpfs_size=spec.parse_memory(spec.TMPFS_SIZE))
        )
        secrets = []
        if self.api_key_secret is not None:
            secret_id, secret_name = self.api_key_secret
            uid, gid = spec.CONTAINER_USER.split(":")
            filename = spec.CONTAINER_API_KEY_PATH.rsplit("/", 1)[-1]
            secrets.append(
                t.SecretReference(
                    secret_id, secret_name, filename=filename, uid=uid, gid=gid, mode=0o400
                )
            )
            env["ANVYL_API_KEY_FILE"] = spec.CONTAINER_API_KEY_PATH
        health = c.healthcheck()
        container_spec = t.ContainerSpec(
            c.image,
            None,
            env=env,
            user=spec.CONTAINER_USER,
            labels=c.labels(),
            mounts=mounts,
            secrets=secrets or None,
            read_only=True,
            healthcheck=t.Healthcheck(
                test=health["test"],
                interval=health["interval"],
                timeout=health["timeout"],
                retries=health["retries"],
                start_period=health["start_period"],
            ),
            init=True,
            cap_drop=["ALL"],
            stop_grace_period=STOP_GRACE_NS,
        )
        memory = spec.parse_memory(c.memory) if c.memory else None
        resources = t.Resources(
            mem_limit=memory,
            mem_reservation=memory,
            cpu_limit=int(c.cpus * spec.SECOND_NS) if c.cpus else None,
        )
        constraints = [f"node.id=={self.node_id}"] if self.node_id else []
        template = t.TaskTemplate(
            container_spec,
            resources=resources,
            restart_policy=t.RestartPolicy("any", delay=RESTART_DELAY_NS),
            placement=t.Placement(constraints=constraints or None, maxreplicas=1),
            log_driver=t.DriverConfig(
                "json-file", {"max-size": spec.LOG_MAX_SIZE, "max-file": spec.LOG_MAX_FILE}
            ),
        )
        return {
            "task_template": template,
            "name": c.name,
            "labels": {**c.labels(), **self.service_labels},
            "mode": t.ServiceMode("replicated", replicas=self.replicas),
            "endpoint_spec": t.EndpointSpec(
                mode="dnsrr", ports={c.port: (config.MODEL_API_PORT, "tcp", "host")}
            ),
        }


def _timestamp(value: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds) to epoch seconds; 0 when unparsable."""
    if not value:
        return 0.0
    text = value.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return 0.0
