"""The Swarm runtime: a deployment is one replicated service on the Swarm manager's engine.

The deployment service picks it for a start when the container runtime's engine manages a
Swarm, and then treats it like any runtime. Its handle's `ref` is the service id; the replicas
are tasks the Swarm places, restarts and reschedules. Every replica publishes the API port in
host mode on its node and requires an API key (the user's, or one the service generated),
delivered as a Swarm secret; the gateway holds the key and routes to every running task.
It probes its replicas itself, each on its node (`capabilities.probes`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from anvyl import config
from anvyl.catalog import resolve_model
from anvyl.errors import AlreadyExists, AnvylError, FailedPrecondition, InvalidArgument, NotFound
from anvyl.runtime import swarm
from anvyl.runtime import swarm_services as services
from anvyl.runtime.base import (
    KIND_SWARM,
    LOG_TAIL_LINES,
    STATUS_GONE,
    STATUS_RUNNING,
    Capabilities,
    DeploymentRuntime,
    Handle,
    LaunchSpec,
    LogStream,
    Observation,
    Orphan,
    Route,
)
from anvyl.runtime.container import LABEL_CONTROLLER, model_container_spec
from anvyl.runtime.driver import DockerDriver
from anvyl.services import node_content, swarm_nodes, swarm_tasks
from anvyl.services.swarm_deployments import SwarmDeployments
from anvyl.services.swarm_records import (
    LABEL_API_KEY,
    WILDCARD,
    adopted_record,
    usable_nodes,
)
from anvyl.store import HostRecord

log = logging.getLogger(__name__)

MAX_REPLICAS = 64
# A task still pending after this long with the scheduler's complaint is not going to run.
UNSCHEDULABLE_AFTER_S = 5.0


class SwarmRuntime(DeploymentRuntime):
    """Model deployments as replicated services on the Swarm `host`'s engine manages."""

    kind = KIND_SWARM

    def __init__(self, sw: SwarmDeployments, host: HostRecord) -> None:
        self.sw = sw
        self.owner = sw.models
        self.host = host
        self.driver: DockerDriver = self.owner.hosts.driver(host.id)

    def capabilities(self) -> Capabilities:
        """Replicas on distinct nodes, placed by `--host-id NODE`; always keyed, every address."""
        return Capabilities(
            kind=self.kind, replicas=True, api_key_required=True, bind=WILDCARD, nodes=True,
            probes=True,
        )  # fmt: skip

    def prepare(self, say: Callable[[str], None]) -> str:
        """The model-server image on the manager (the nodes get it in `place`)."""
        say("checking the model-server image")
        return self.owner.image_provider(self.driver, say)

    def check_free(self, name: str, bind: str, port: int) -> None:
        """Refuse a service name or a published port that is taken, saying by what."""
        for service in services.list_services(self.driver):
            if services.service_name(service) == name:
                raise AlreadyExists(
                    f"a service named {name!r} already exists; choose another --name"
                )
            if port in services.ports_in_use(service):
                raise AlreadyExists(
                    f"port {port} is already published by service "
                    f"{services.service_name(service)}; choose another with --port"
                )

    def place(self, launch: LaunchSpec, say: Callable[[str, str], None]) -> dict[str, Any]:
        """Refuse what the scheduler could never place; the image and model on every node."""
        if not 1 <= launch.replicas <= MAX_REPLICAS:
            raise InvalidArgument(f"invalid --replicas {launch.replicas}: 1 to {MAX_REPLICAS}")
        nodes = swarm.list_nodes(self.driver)
        node = swarm.resolve_node(nodes, launch.node) if launch.node.strip() else None
        swarm_nodes.check_fits(nodes, node, launch.memory, launch.replicas)
        model = resolve_model(self.owner.home, launch.model_id)
        candidates = [node] if node is not None else usable_nodes(nodes)
        volume, content_hash = swarm_nodes.prepare_nodes(
            self.sw, self.driver, candidates, launch.image, model, say
        )
        facts: dict[str, Any] = {"replicas": launch.replicas}
        if node is not None:
            facts["node_id"], facts["node"] = node.id, node.hostname
        if volume:
            facts["model_volume"], facts["model_hash"] = volume, content_hash
        return facts

    def start(self, launch: LaunchSpec) -> Handle:
        """Create the API key's secret and the service (Swarm starts the replicas)."""
        key = self.owner.keys.read(launch.deployment_id)
        if not key:
            raise FailedPrecondition("a Swarm deployment needs an API key")
        placed = launch.placement
        # The key travels as a Swarm secret, not a bind-mounted file (`ModelServiceSpec`).
        container = model_container_spec(replace(launch, api_key_file=""))
        # What adopting the service after a lost database needs and the spec does not say.
        service_labels = {LABEL_API_KEY: "generated" if launch.api_key_generated else "given"}
        if placed.get("model_volume"):
            service_labels[node_content.LABEL_MODEL_HASH] = str(placed.get("model_hash", ""))
        secret = services.create_key_secret(self.driver, launch.deployment_id, key, launch.labels)
        service_spec = swarm.ModelServiceSpec(
            container=container,
            replicas=launch.replicas,
            node_id=str(placed.get("node_id") or ""),
            api_key_secret=secret,
            service_labels=service_labels,
            model_volume=str(placed.get("model_volume") or ""),
        )
        return Handle(ref=services.create_service(self.driver, service_spec))

    # -- observe ---------------------------------------------------------------------------

    def observe(self, handles: list[Handle]) -> list[Observation]:
        """Each service's replicas from its tasks, each running one probed on its node."""
        if len(handles) <= 1:
            return [self._observe(h) for h in handles]
        with ThreadPoolExecutor(max_workers=min(8, len(handles))) as pool:
            return list(pool.map(self._observe, handles))

    def _observe(self, handle: Handle) -> Observation:
        if not handle.ref:
            return Observation(STATUS_GONE, "the service is not created yet")
        try:
            attrs = services.inspect_service(self.driver, handle.ref)
        except NotFound:
            return Observation(STATUS_GONE, "the service was removed outside Anvyl")
        name = services.service_name(attrs)
        want, port = services.desired_replicas(attrs), services.published_port(attrs)
        replicas = swarm_tasks.replicas(self.driver, handle.ref, port)
        ready = [r for r in replicas if r.ready]
        if len(ready) >= want:
            reason = ""
        elif ready:
            reason = f"{len(ready)}/{want} replicas ready"
        else:
            problems = [r.error for r in replicas if r.error]
            reason = problems[0] if problems else f"0/{want} replicas ready"
        return Observation(
            STATUS_RUNNING,
            reason,
            name=name,
            ready=len(ready),
            wanted=want,
            host=ready[0].address if ready else "",
            replicas=tuple(replicas),
            failure=self._failure(handle.ref, name, replicas),
        )

    def _failure(self, service_id: str, name: str, replicas: list[swarm.ReplicaView]) -> str:
        """Why the service will never be ready: unschedulable for a while, or failing again."""
        pending = [r for r in replicas if r.state == "pending" and r.error]
        if not pending:
            self.sw.unschedulable_since.pop(service_id, None)
        else:
            since = self.sw.unschedulable_since.setdefault(service_id, time.monotonic())
            if time.monotonic() - since > UNSCHEDULABLE_AFTER_S:
                return f"the Swarm cannot place {name}: {pending[0].error}"
        failed = [r for r in replicas if r.state in ("failed", "rejected")]
        if failed and all(r.restarts >= 2 for r in failed):
            return f"{name} keeps failing: {failed[0].error}"
        return ""

    def log_tail(self, handle: Handle, lines: int = LOG_TAIL_LINES) -> str:
        """Nothing: the replicas' logs are on their nodes (`anvyl model logs` reads them)."""
        return ""

    def logs(self, handle: Handle, *, follow: bool, tail: int | None) -> LogStream:
        """The service's output, every replica's (as `docker service logs`)."""
        return swarm.service_logs(self.driver, handle.ref, follow=follow, tail=tail)

    def apply_restart(self, handle: Handle, restart: str) -> None:
        """Nothing: the Swarm restarts a failed replica always (the service's policy)."""

    def reach(self, handle: Handle) -> str:
        """The node of a ready replica (of any running one when none is ready)."""
        attrs = services.inspect_service(self.driver, handle.ref)
        found = swarm_tasks.replicas(self.driver, handle.ref, services.published_port(attrs))
        running = [r for r in found if r.address]
        if not running:
            raise FailedPrecondition(f"{services.service_name(attrs)} has no running replica")
        return next((r for r in running if r.ready), running[0]).address

    def routes(self, handles: list[Handle]) -> list[list[Route]] | None:
        """One route per running task of each service (none while the manager is unreachable)."""
        try:
            return swarm_tasks.routes(self.driver, [h.ref for h in handles])
        except AnvylError:
            return [[] for _ in handles]

    # -- stop, scale -----------------------------------------------------------------------

    def stop(self, handle: Handle, timeout: float) -> None:
        """Remove the service (Swarm stops its tasks gracefully) and its secret."""
        services.remove_service(self.driver, handle.ref, str(handle.data.get("deployment") or ""))

    def discard(self, deployment_id: str) -> None:
        """Remove the service and secret a failed start of this deployment made."""
        try:
            found = services.deployment_services(self.driver, deployment_id)
        except AnvylError:
            found = []
        for service in found or [{"ID": ""}]:
            services.remove_service(self.driver, str(service["ID"]), deployment_id)

    def scale(self, handle: Handle, replicas: int) -> None:
        """Change the number of replicas (each on its own node)."""
        if not 0 <= replicas <= MAX_REPLICAS:
            raise InvalidArgument(f"invalid replica count {replicas}: 0 to {MAX_REPLICAS}")
        attrs = services.inspect_service(self.driver, handle.ref)
        record = adopted_record(attrs, self.host.id)  # what the service itself says
        nodes = swarm.list_nodes(self.driver)
        usable = usable_nodes(nodes)
        if record.options.get("node_id"):
            usable = [n for n in usable if n.id == record.options["node_id"]]
        if replicas > len(usable):
            raise FailedPrecondition(
                f"{replicas} replicas need {replicas} distinct nodes; {len(usable)} can take one"
            )
        volume = record.options.get("model_volume")
        if volume and replicas > services.desired_replicas(attrs):  # nodes may have joined since
            unknown = [n.hostname for n in usable if self.sw.node_driver(self.driver, n.id) is None]
            if unknown:  # Swarm would give a replica there an empty volume
                raise FailedPrecondition(
                    f"{record.name} reads its model from a volume Anvyl copies to each node, "
                    f"but it cannot reach the engine of {', '.join(unknown)}: "
                    "`anvyl host add NODE --engine URL` first (or drain those nodes)"
                )
            model = resolve_model(self.owner.home, record.model_id)
            _, found = swarm_nodes.prepare_nodes(
                self.sw, self.driver, usable, record.image, model, lambda *_: None
            )
            if found and found != record.options.get("model_hash"):
                raise FailedPrecondition(
                    f"the files of {record.model_id} changed since {record.name} started: "
                    "stop and start it again"
                )
        services.scale_service(self.driver, handle.ref, replicas)

    # -- adoption --------------------------------------------------------------------------

    def orphans(self, controller_id: str) -> list[Orphan]:
        """This installation's services, each with the row its labels and spec rebuild."""
        selector = [f"{config.LABEL_MANAGED}=true", f"{LABEL_CONTROLLER}={controller_id}"]
        found = []
        for attrs in services.list_services(self.driver, selector):
            try:
                record = adopted_record(attrs, self.host.id)
            except InvalidArgument as exc:
                log.warning("cannot adopt service %s: %s", attrs["ID"][:12], exc)
                continue
            found.append(
                Orphan(
                    deployment_id=record.id,
                    handle=Handle(ref=record.container_id),
                    name=record.name,
                    model_id=record.model_id,
                    port=record.port,
                    bind=record.bind,
                    image=record.image,
                    options=record.options,
                )
            )
        return found

    def adopted(self, orphan: Orphan) -> None:
        """A new API key for an adopted service whose key file was lost with the database."""
        if self.owner.keys.read(orphan.deployment_id):
            return
        key = secrets.token_urlsafe(24)
        labels = {**self.owner.container_labels, LABEL_CONTROLLER: self.owner.controller_id}
        services.replace_key_secret(
            self.driver, orphan.handle.ref, orphan.deployment_id, key, labels
        )
        self.owner.keys.write(orphan.deployment_id, key)
        log.warning("deployment %s: its API key was lost; replaced it", orphan.name)
