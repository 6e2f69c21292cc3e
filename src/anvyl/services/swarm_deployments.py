"""Deployments as Swarm services: start, observe, stop, scale, adopt (not yet behind runtime/base).

The deployment service hands a start here when the container runtime's engine is a Swarm manager
(`SwarmDeployments.active`). The store row is the same as for a container (`options["runtime"]
== "swarm"`, `container_id` holds the service id); the CLI, the protocol and the store do not see
the difference. Every replica publishes the API port in host mode on its node and requires an
API key (the user's, or one generated and delivered as a Swarm secret); the gateway holds the
key. Helpers: `swarm_records` (pure), `swarm_nodes` (image and model on the nodes, fit),
`swarm_tasks` (replica views, gateway targets).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anvyl import config
from anvyl.catalog import resolve_model
from anvyl.errors import AlreadyExists, AnvylError, FailedPrecondition, InvalidArgument, NotFound
from anvyl.gateway.routing import Target
from anvyl.runtime import DockerDriver, swarm
from anvyl.runtime import model_spec as spec
from anvyl.runtime.base import KIND_CONTAINER, LogStream
from anvyl.runtime.container import LABEL_CONTROLLER
from anvyl.services import node_content, swarm_nodes, swarm_tasks
from anvyl.services.deployments.options import StartOptions, validated
from anvyl.services.deployments.views import DeploymentView
from anvyl.services.node_engines import NodeEngines
from anvyl.services.swarm_owner import Owner, Say
from anvyl.services.swarm_records import (
    LABEL_API_KEY,
    adopted_record,
    secret_name,
    stored_for,
    usable_nodes,
)
from anvyl.store import HostRecord
from anvyl.store import deployments as table
from anvyl.store.deployments import DeploymentRecord

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from anvyl.catalog import ModelInfo

ACTIVE_CACHE_S = 5.0
MAX_REPLICAS = 64
# A task still pending after this long with the scheduler's complaint is not going to run.
UNSCHEDULABLE_AFTER_S = 5.0


class SwarmDeployments:
    """Model deployments as replicated Swarm services on the manager `Models` talks to."""

    def __init__(self, models: Owner) -> None:
        self.models = models
        self._active: dict[str, tuple[float, bool]] = {}
        self.engines = NodeEngines(models.store, models.home)  # the nodes' own engines

    # -- which runtime ---------------------------------------------------------------------

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

    # -- the hooks `Models` calls ---------------------------------------------------------

    def start_if_active(
        self, options: StartOptions, say: Say, runtime: str
    ) -> DeploymentView | None:
        """Start as a service when the container runtime's engine manages a Swarm; else None."""
        local = [h for h in self.models.hosts.records() if h.local]
        if runtime == KIND_CONTAINER and local and self.active(local[0].id):
            return self.start(local[0], options, options.replicas or 1, say)
        if options.replicas > 1:
            raise InvalidArgument(
                "--replicas needs a Swarm: run `anvyl cluster init` (or point Anvyl at a Swarm "
                "manager) first"
            )
        return None

    def stop_record(self, record: DeploymentRecord) -> DeploymentView:
        """Remove the service and forget the deployment; its last view, marked stopped."""
        driver = self.models.hosts.driver(record.host_id)
        view = self.observe(record, driver)
        self.stop(record, driver)
        self.models.forget(record)
        return replace(view, state=table.STATE_STOPPED, state_reason="stopped by request")

    # -- start -----------------------------------------------------------------------------

    def start(
        self, host: HostRecord, options: StartOptions, replicas: int, say: Say
    ) -> DeploymentView:
        """Create the service, wait (unless detached) until every replica answers /health."""
        models = self.models
        driver = models.hosts.driver(host.id)
        say("resolving", f"resolving {options.model_id}")
        model = resolve_model(models.home, options.model_id)
        node_ref, options = options.host_id, replace(options, host_id="")
        opts = validated(options, model)
        if not 1 <= replicas <= MAX_REPLICAS:
            raise InvalidArgument(f"invalid --replicas {replicas}: 1 to {MAX_REPLICAS}")
        nodes = swarm.list_nodes(driver)
        node = swarm.resolve_node(nodes, node_ref) if node_ref.strip() else None
        swarm_nodes.check_fits(nodes, node, opts, replicas)
        name = opts.name or spec.default_deployment_name(model.id)
        self._check_free(driver, name, opts.port)

        say("image", "checking the model-server image")
        image = models.image_provider(driver, lambda line: say("image", line))
        candidates = [node] if node is not None else usable_nodes(nodes)
        volume, content_hash = self.prepare_nodes(driver, candidates, image, model, say)
        stored = stored_for(opts, replicas, node)
        if volume:
            stored["model_volume"], stored["model_hash"] = volume, content_hash
        record = table.insert_deployment(
            models.store,
            DeploymentRecord(
                id=table.new_deployment_id(),
                name=name,
                model_id=model.id,
                host_id=host.id,
                port=opts.port,
                bind="0.0.0.0",
                image=image,
                state=table.STATE_CREATING,
                options=stored,
            ),
        )
        try:
            say("creating", f"creating service {name} ({replicas} replica(s))")
            service_id = self._create_service(
                driver, record, model.path, opts, replicas, node, volume, content_hash
            )
            table.update_deployment(
                models.store, record.id, container_id=service_id, state=table.STATE_STARTING
            )
            record = replace(record, container_id=service_id, state=table.STATE_STARTING)
            if opts.detach:
                return self.observe(record, driver)
            say("loading", f"loading weights of {model.id} on {replicas} node(s)")
            self._wait_ready(driver, record, replicas, opts.wait_timeout)
        except BaseException:
            self._remove(driver, record)
            models.forget(record)
            raise
        now = time.time()
        table.update_deployment(models.store, record.id, state=table.STATE_READY, ready_at=now)
        record = replace(record, state=table.STATE_READY, ready_at=now)
        say("ready", f"{name} is ready ({replicas} replica(s))")
        return self.observe(record, driver)

    def node_driver(self, manager: DockerDriver, node_id: str) -> DockerDriver | None:
        """The engine of a node: the manager's own for its node, else the recorded one."""
        if swarm.local_node_id(manager) == node_id:
            return manager
        return self.engines.driver(node_id)

    def prepare_nodes(
        self,
        manager: DockerDriver,
        nodes: list[swarm.NodeInfo],
        image: str,
        model: ModelInfo,
        say: Say,
    ) -> tuple[str, str]:
        """Put the image and the model on every node that may run a replica (swarm_nodes)."""
        return swarm_nodes.prepare_nodes(self, manager, nodes, image, model, say)

    def _check_free(self, driver: DockerDriver, name: str, port: int) -> None:
        with driver.engine_errors():
            services = driver.client.api.services()
        for service in services:
            if service["Spec"]["Name"] == name:
                raise AlreadyExists(
                    f"a service named {name!r} already exists; choose another --name"
                )
            for p in (service.get("Endpoint") or {}).get("Ports") or []:
                if p.get("PublishedPort") == port:
                    raise AlreadyExists(
                        f"port {port} is already published by service {service['Spec']['Name']}; "
                        "choose another with --port"
                    )

    def _create_service(
        self,
        driver: DockerDriver,
        record: DeploymentRecord,
        model_path: Path | str,
        opts: StartOptions,
        replicas: int,
        node: swarm.NodeInfo | None,
        volume: str = "",
        volume_hash: str = "",
    ) -> str:
        models = self.models
        key = opts.api_key or secrets.token_urlsafe(24)
        models.keys.write(record.id, key)  # the gateway and `model ps` read it from here
        labels = {**models.container_labels, "anvyl.controller": models.controller_id}
        container = spec.ModelContainerSpec(
            image=record.image,
            name=record.name,
            model_id=record.model_id,
            model_path=str(Path(model_path).resolve()),
            port=opts.port,
            memory=opts.memory or None,
            cpus=opts.cpus or None,
            ctx=opts.ctx or None,
            max_queue=opts.max_queue or None,
            startup_script=opts.startup_script or None,
            dtype=opts.dtype or None,
            allow_origins=opts.allow_origins,
            deployment_id=record.id,
            extra_labels=labels,
        )
        # What adopting the service after a lost database needs and the spec does not say.
        service_labels = {LABEL_API_KEY: "given" if opts.api_key else "generated"}
        if volume:
            service_labels[node_content.LABEL_MODEL_HASH] = volume_hash
        with driver.engine_errors():
            secret_id, new_secret = self._create_secret(driver, record, key, labels)
            service_spec = swarm.ModelServiceSpec(
                container=container,
                replicas=replicas,
                node_id=node.id if node else "",
                api_key_secret=(secret_id, new_secret),
                service_labels=service_labels,
                model_volume=volume,
            )
            created = driver.client.api.create_service(**service_spec.create_kwargs())
        return str(created["ID"])

    def _wait_ready(
        self, driver: DockerDriver, record: DeploymentRecord, replicas: int, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while True:
            view = self.observe(record, driver)
            ready = [r for r in view.replicas if r.ready]
            if len(ready) >= replicas:
                return
            pending = [r for r in view.replicas if r.state == "pending" and r.error]
            if pending and time.monotonic() - started > UNSCHEDULABLE_AFTER_S:
                raise FailedPrecondition(
                    f"the Swarm cannot place {record.name}: {pending[0].error}"
                )
            failed = [r for r in view.replicas if r.state in ("failed", "rejected")]
            if failed and all(r.restarts >= 2 for r in failed):
                raise FailedPrecondition(f"{record.name} keeps failing: {failed[0].error}")
            if time.monotonic() > deadline:
                raise FailedPrecondition(
                    f"{record.name} did not become ready within {timeout:.0f} s "
                    f"({len(ready)}/{replicas} replicas ready)"
                )
            time.sleep(0.25)

    # -- observe ---------------------------------------------------------------------------

    def observe(self, record: DeploymentRecord, driver: DockerDriver | None) -> DeploymentView:
        """The deployment's state from its tasks, each running replica probed on its node."""
        view = self.models.view(record)
        if driver is None:
            return replace(view, state="unknown", state_reason="manager unreachable")
        if not record.container_id:
            return view  # being created
        try:
            want = _desired_replicas(driver, record.container_id)
            replicas = self.replicas(record, driver)
        except NotFound:
            return replace(
                view,
                state=table.STATE_VANISHED,
                state_reason="the service was removed outside Anvyl",
            )
        ready = [r for r in replicas if r.ready]
        url = f"http://{ready[0].address}:{record.port}" if ready else view.url
        if len(ready) >= want:
            state, reason = table.STATE_READY, ""
        elif ready:
            state, reason = table.STATE_READY, f"{len(ready)}/{want} replicas ready"
        elif record.state == table.STATE_CREATING:
            state, reason = record.state, ""
        else:
            state = table.STATE_STARTING if record.state != table.STATE_READY else "unhealthy"
            problems = [r.error for r in replicas if r.error]
            reason = problems[0] if problems else f"0/{want} replicas ready"
        since = record.ready_at or record.created_at
        return replace(
            view,
            state=state,
            state_reason=reason,
            url=url,
            container_name=record.name,
            uptime_s=max(0.0, time.time() - since) if since and ready else 0.0,
            replicas=tuple(replicas),
        )

    def replicas(self, record: DeploymentRecord, driver: DockerDriver) -> list[swarm.ReplicaView]:
        """The current task of every slot (with its restarts), probed when running."""
        return swarm_tasks.replicas(self, record, driver)

    def logs(self, record: DeploymentRecord, *, follow: bool, tail: int | None) -> LogStream:
        """The service's output, every replica's (as `docker service logs`)."""
        driver = self.models.hosts.driver(record.host_id)
        return swarm.service_logs(driver, record.container_id, follow=follow, tail=tail)

    def base_url(self, record: DeploymentRecord) -> str:
        """`http://node:port` of a ready replica (of any running one when none is ready)."""
        driver = self.models.hosts.driver(record.host_id)
        replicas = [r for r in self.replicas(record, driver) if r.address]
        if not replicas:
            raise FailedPrecondition(f"{record.name} has no running replica")
        best = next((r for r in replicas if r.ready), replicas[0])
        return f"http://{best.address}:{record.port}"

    # -- stop and scale --------------------------------------------------------------------

    def stop(self, record: DeploymentRecord, driver: DockerDriver) -> None:
        """Remove the service (Swarm stops its tasks gracefully) and its secret."""
        self._remove(driver, record)

    def scale(self, record: DeploymentRecord, replicas: int) -> DeploymentView:
        """Change the number of replicas (each on its own node)."""
        if not 0 <= replicas <= MAX_REPLICAS:
            raise InvalidArgument(f"invalid replica count {replicas}: 0 to {MAX_REPLICAS}")
        driver = self.models.hosts.driver(record.host_id)
        nodes = swarm.list_nodes(driver)
        usable = [n for n in nodes if n.state == "ready" and n.availability == "active"]
        if record.options.get("node_id"):
            usable = [n for n in usable if n.id == record.options["node_id"]]
        if replicas > len(usable):
            raise FailedPrecondition(
                f"{replicas} replicas need {replicas} distinct nodes; {len(usable)} can take one"
            )
        volume = record.options.get("model_volume")
        growing = replicas > _desired_replicas(driver, record.container_id)
        if volume and growing:  # nodes may have joined since the start: give them the model
            unknown = [n.hostname for n in usable if self.node_driver(driver, n.id) is None]
            if unknown:  # Swarm would give a replica there an empty volume
                raise FailedPrecondition(
                    f"{record.name} reads its model from a volume Anvyl copies to each node, "
                    f"but it cannot reach the engine of {', '.join(unknown)}: "
                    "`anvyl host add NODE --engine URL` first (or drain those nodes)"
                )
            model = resolve_model(self.models.home, record.model_id)
            _, found = self.prepare_nodes(driver, usable, record.image, model, lambda *_: None)
            if found and found != record.options.get("model_hash"):
                raise FailedPrecondition(
                    f"the files of {record.model_id} changed since {record.name} started: "
                    "stop and start it again"
                )
        with driver.engine_errors():
            service = driver.client.services.get(record.container_id)
            service.scale(replicas)
        return self.observe(record, driver)

    def _remove(self, driver: DockerDriver, record: DeploymentRecord) -> None:
        try:
            with driver.engine_errors():
                if record.container_id:
                    try:
                        driver.client.api.remove_service(record.container_id)
                    except Exception as exc:  # already gone
                        if getattr(exc, "status_code", 0) != 404:
                            raise
                by_label = {"label": f"{config.LABEL_DEPLOYMENT}={record.id}"}
                found = driver.client.api.secrets(filters={"name": secret_name(record)})
                found += driver.client.api.secrets(filters=by_label)
                for secret_id in {f["ID"] for f in found}:
                    driver.client.api.remove_secret(secret_id)
        except NotFound:
            pass

    def _create_secret(
        self, driver: DockerDriver, record: DeploymentRecord, key: str, labels: dict[str, str]
    ) -> tuple[str, str]:
        """The API key as a Swarm secret (a fresh name each time: secrets are immutable)."""
        name = secret_name(record)
        if driver.client.api.secrets(filters={"name": name}):
            name = f"{name}-{secrets.token_hex(3)}"
        created = driver.client.api.create_secret(
            name,
            key.encode(),
            labels={**labels, config.LABEL_MANAGED: "true", config.LABEL_DEPLOYMENT: record.id},
        )
        return str(created["ID"]), name

    # -- adoption --------------------------------------------------------------------------

    def adopt(self) -> list[DeploymentRecord]:
        """Record again the services this installation made that the store forgot.

        After a lost database the services still run; their labels (deployment id, model,
        controller) and spec (port, replicas, memory, placement, model volume) rebuild the row.
        The API key comes back from `ANVYL_HOME/secrets` when it survived; otherwise a new one
        is generated and swapped into the service (its replicas restart with it).
        """
        found = self.manager()
        if found is None:
            return []
        host, driver = found
        selector = [
            f"{config.LABEL_MANAGED}=true",
            f"{LABEL_CONTROLLER}={self.models.controller_id}",
        ]
        with driver.engine_errors():
            services = driver.client.api.services(filters={"label": selector})
        records = table.list_deployments(self.models.store)
        known = {r.id for r in records} | {r.container_id for r in records}
        adopted = []
        for attrs in services:
            labels = (attrs.get("Spec") or {}).get("Labels") or {}
            if attrs["ID"] in known or labels.get(config.LABEL_DEPLOYMENT, "") in known:
                continue
            try:
                record = adopted_record(attrs, host.id)
                table.insert_deployment(self.models.store, record)
            except (AlreadyExists, InvalidArgument) as exc:
                log.warning("cannot adopt service %s: %s", attrs["ID"][:12], exc)
                continue
            if not self.models.keys.read(record.id):
                self._rotate_key(driver, record, attrs)
            log.info("adopted Swarm service %s as deployment %s", record.name, record.id)
            adopted.append(record)
        return adopted

    def _rotate_key(
        self, driver: DockerDriver, record: DeploymentRecord, attrs: dict[str, Any]
    ) -> None:
        """A new API key for an adopted service whose key file was lost with the database."""
        key = secrets.token_urlsafe(24)
        labels = {**self.models.container_labels, LABEL_CONTROLLER: self.models.controller_id}
        with driver.engine_errors():
            new_id, new_name = self._create_secret(driver, record, key, labels)
            template = dict(attrs["Spec"]["TaskTemplate"])
            container = dict(template["ContainerSpec"])
            refs = [dict(r) for r in container.get("Secrets") or []]
            for ref in refs:
                if ref.get("SecretName", "").startswith(secret_name(record)):
                    ref["SecretID"], ref["SecretName"] = new_id, new_name
            container["Secrets"] = refs
            template["ContainerSpec"] = container
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
            driver.client.api.update_service(  # the rest of the spec (ports, mode) kept
                attrs["ID"],
                attrs["Version"]["Index"],
                task_template=template,
                fetch_current_spec=True,
            )
        self.models.keys.write(record.id, key)
        log.warning("deployment %s: its API key was lost; replaced it", record.name)

    # -- the gateway -----------------------------------------------------------------------

    def targets(self) -> list[Target]:
        """One gateway target per running task of every Swarm deployment."""
        return swarm_tasks.targets(self)


def _desired_replicas(driver: DockerDriver, service_id: str) -> int:
    """The replica count the service asks for now (the engine is the truth; `scale` changes it)."""
    if not service_id:
        raise NotFound("the service is not created yet")
    with driver.engine_errors():
        attrs = driver.client.api.inspect_service(service_id)
    return int(
        ((attrs.get("Spec") or {}).get("Mode") or {}).get("Replicated", {}).get("Replicas", 1)
    )
