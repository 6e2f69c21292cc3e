"""Deployments as Swarm services: the second runtime behind `Models` (start, observe, stop, scale).

`Models` hands a deployment here when its host's engine is a Swarm manager (`SwarmDeployments.
active`). The store row is the same as for a container (`options["runtime"] == "swarm"`,
`container_id` holds the service id); the CLI, the protocol and the store do not see the
difference. Every replica publishes the API port in host mode on its node and requires an API
key (the user's, or one generated and delivered as a Swarm secret); the gateway holds the key.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anvyl import config
from anvyl.catalog import resolve_model
from anvyl.errors import AlreadyExists, AnvylError, FailedPrecondition, InvalidArgument, NotFound
from anvyl.gateway.routing import Target
from anvyl.runtime import DockerDriver, swarm
from anvyl.runtime import model_spec as spec
from anvyl.runtime.base import KIND_CONTAINER, KIND_SWARM, LogStream
from anvyl.runtime.container import LABEL_CONTROLLER
from anvyl.services import node_content
from anvyl.services.deployments.options import StartOptions, stored_options, validated
from anvyl.services.deployments.probe import healthy as probe_healthy
from anvyl.services.deployments.views import DeploymentView
from anvyl.services.node_engines import NodeEngines
from anvyl.store import HostRecord
from anvyl.store import deployments as table
from anvyl.store.deployments import DeploymentRecord

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from anvyl.catalog import ModelInfo
    from anvyl.services.deployments.service import Deployments

RUNTIME = KIND_SWARM
# Whether the user gave the API key ("given": gateway clients present it too) or Anvyl made it.
LABEL_API_KEY = "anvyl.api-key"
ACTIVE_CACHE_S = 5.0
MAX_REPLICAS = 64
# A task still pending after this long with the scheduler's complaint is not going to run.
UNSCHEDULABLE_AFTER_S = 5.0

Say = Callable[[str, str], None]


def is_swarm(record: DeploymentRecord) -> bool:
    """True for a deployment run as a Swarm service."""
    return record.options.get("runtime") == RUNTIME


class SwarmDeployments:
    """Model deployments as replicated Swarm services on the manager `Models` talks to."""

    def __init__(self, models: Deployments) -> None:
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
        self._check_fits(nodes, node, opts, replicas)
        name = opts.name or spec.default_deployment_name(model.id)
        self._check_free(driver, name, opts.port)

        say("image", "checking the model-server image")
        image = models.image_provider(driver, lambda line: say("image", line))
        candidates = [node] if node is not None else _usable(nodes)
        volume, content_hash = self.prepare_nodes(driver, candidates, image, model, say)
        stored = _stored(opts, replicas, node)
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
        """Put the image and the model files on every node that may run a replica.

        Returns the model volume's name and the model's content hash, or two empty strings
        when some node's engine is unknown: the service then bind-mounts the model's path on
        the server's machine (which those nodes must also have), as before `host add`.
        """
        drivers = {n.id: self.node_driver(manager, n.id) for n in nodes}
        unknown = [n.hostname for n in nodes if drivers[n.id] is None]
        known = [n for n in nodes if drivers[n.id] is not None]
        registry = node_content.uses_registry(image)
        if unknown:
            say(
                "copying",
                f"no known engine for {', '.join(unknown)}: the model is bind-mounted from "
                f"{model.path} and the image {image} must already be there "
                "(`anvyl host add NODE --engine URL` lets Anvyl copy both)",
            )
        content_hash = ""
        if not unknown:
            say("copying", f"hashing the files of {model.id}")
            content_hash = node_content.model_hash(model.path, self.models.home / "cache")
        labels = dict(self.models.container_labels)

        def prepare(n: swarm.NodeInfo) -> None:
            node_driver = drivers[n.id]
            assert node_driver is not None
            try:
                if not registry:
                    node_content.ensure_image(
                        manager, node_driver, image, n.hostname, lambda m: say("image", m)
                    )
                if content_hash:
                    node_content.ensure_model_volume(
                        node_driver,
                        image=image,
                        model_id=model.id,
                        model_path=Path(model.path),
                        content_hash=content_hash,
                        hostname=n.hostname,
                        labels=labels,
                        say=lambda m: say("copying", m),
                    )
            except AnvylError as exc:
                raise type(exc)(f"cannot prepare node {n.hostname}: {exc.message}") from exc

        if registry and known:
            say("image", f"{image} names a registry: every node pulls it")
        if known:
            with ThreadPoolExecutor(max_workers=min(8, len(known))) as pool:
                for future in [pool.submit(prepare, n) for n in known]:
                    future.result()
        if content_hash:
            say(
                "copying",
                f"the model is on {len(known)} node(s) ({node_content.volume_name(content_hash)})",
            )
        return (node_content.volume_name(content_hash), content_hash) if content_hash else ("", "")

    def _check_fits(
        self,
        nodes: list[swarm.NodeInfo],
        node: swarm.NodeInfo | None,
        opts: StartOptions,
        replicas: int,
    ) -> None:
        """Refuse what the scheduler could never place, saying why."""
        usable = [n for n in nodes if n.state == "ready" and n.availability == "active"]
        if node is not None:
            if node not in usable:
                raise FailedPrecondition(
                    f"node {node.hostname} is {node.state}/{node.availability}: it takes no models"
                )
            usable = [node]
        if replicas > len(usable):
            where = f"node {node.hostname}" if node else f"{len(usable)} usable node(s)"
            raise FailedPrecondition(
                f"{replicas} replicas need {replicas} distinct nodes, but there are only {where}"
            )
        if opts.memory:
            need = spec.parse_memory(opts.memory)
            fitting = [n for n in usable if n.memory_bytes >= need]
            if len(fitting) < replicas:
                sizes = ", ".join(
                    f"{n.hostname} {spec.format_bytes(n.memory_bytes)}" for n in usable
                )
                raise FailedPrecondition(
                    f"--memory {opts.memory} fits on {len(fitting)} node(s), {replicas} needed: "
                    f"no node has that much memory ({sizes})"
                )

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
            deployment_id=record.id,
            extra_labels=labels,
        )
        # What adopting the service after a lost database needs and the spec does not say.
        service_labels = {LABEL_API_KEY: "given" if opts.api_key else "generated"}
        if volume:
            service_labels[node_content.LABEL_MODEL_HASH] = volume_hash
        with driver.engine_errors():
            secret_id, secret_name = self._create_secret(driver, record, key, labels)
            service_spec = swarm.ModelServiceSpec(
                container=container,
                replicas=replicas,
                node_id=node.id if node else "",
                api_key_secret=(secret_id, secret_name),
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
        nodes = {n.id: n for n in swarm.list_nodes(driver)}
        tasks = swarm.list_tasks(driver, record.container_id)
        by_slot: dict[int, list[swarm.TaskInfo]] = {}
        for task in tasks:  # newest first
            by_slot.setdefault(task.slot, []).append(task)
        current: list[tuple[swarm.TaskInfo, int]] = []
        for _slot, history in sorted(by_slot.items()):
            live = [t for t in history if t.desired_state == "running"]
            if live:  # slots without one were scaled away
                current.append((live[0], len(history) - 1))
        views = []
        for task, restarts in current:
            node = nodes.get(task.node_id)
            address = node.address if node else ""
            if node is not None and node.state != "ready":
                state = f"{task.state} (node {node.state})"
            else:
                state = task.state
            views.append(
                swarm.ReplicaView(
                    slot=task.slot,
                    task_id=task.id,
                    node_id=task.node_id,
                    node=node.hostname if node else "",
                    address=address,
                    state=state,
                    since=task.since,
                    restarts=restarts,
                    error=task.error,
                )
            )
        running = [v for v in views if v.state == "running" and v.address]
        if running:
            with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
                healthy = dict(
                    zip(
                        [v.task_id for v in running],
                        pool.map(
                            lambda v: probe_healthy(f"http://{v.address}:{record.port}"),
                            running,
                        ),
                        strict=True,
                    )
                )
            views = [replace(v, ready=healthy.get(v.task_id, False)) for v in views]
        return views

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
                found = driver.client.api.secrets(filters={"name": _secret_name(record)})
                found += driver.client.api.secrets(filters=by_label)
                for secret_id in {f["ID"] for f in found}:
                    driver.client.api.remove_secret(secret_id)
        except NotFound:
            pass

    def _create_secret(
        self, driver: DockerDriver, record: DeploymentRecord, key: str, labels: dict[str, str]
    ) -> tuple[str, str]:
        """The API key as a Swarm secret (a fresh name each time: secrets are immutable)."""
        name = _secret_name(record)
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
            secret_id, secret_name = self._create_secret(driver, record, key, labels)
            template = dict(attrs["Spec"]["TaskTemplate"])
            container = dict(template["ContainerSpec"])
            refs = [dict(r) for r in container.get("Secrets") or []]
            for ref in refs:
                if ref.get("SecretName", "").startswith(_secret_name(record)):
                    ref["SecretID"], ref["SecretName"] = secret_id, secret_name
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
        found = self.manager()
        if found is None:
            return []
        _, driver = found
        records = [r for r in table.list_deployments(self.models.store) if is_swarm(r)]
        if not records:
            return []
        nodes = {n.id: n for n in swarm.list_nodes(driver)}
        targets = []
        for record in records:
            if not record.container_id:
                continue
            key = self.models.keys.read(record.id)
            client_key = "" if record.options.get("api_key_generated") else key
            for task in swarm.list_tasks(driver, record.container_id):
                node = nodes.get(task.node_id)
                if task.state != "running" or task.desired_state != "running" or node is None:
                    continue
                targets.append(
                    Target(
                        key=f"{record.id}/{task.id}",
                        model_id=record.model_id,
                        base_url=f"http://{node.address}:{record.port}",
                        upstream_key=key,
                        client_key=client_key,
                        created_at=record.ready_at or record.created_at,
                        deployment=f"{record.name}@{node.hostname}",
                    )
                )
        return targets


def adopted_record(attrs: dict[str, Any], host_id: str) -> DeploymentRecord:
    """The store row of a service Anvyl made, rebuilt from its labels and spec (pure)."""
    spec_ = attrs.get("Spec") or {}
    labels = spec_.get("Labels") or {}
    template = spec_.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    ports = (spec_.get("EndpointSpec") or {}).get("Ports") or []
    port = next((int(p["PublishedPort"]) for p in ports if p.get("PublishedPort")), 0)
    if not port or not labels.get(config.LABEL_DEPLOYMENT):
        raise InvalidArgument("no published port or no deployment label")
    replicas = int(((spec_.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1))
    options: dict[str, Any] = {
        "runtime": RUNTIME,
        "replicas": replicas,
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
        name=str(spec_.get("Name") or ""),
        model_id=labels.get(config.LABEL_MODEL_ID, "unknown"),
        host_id=host_id,
        port=port,
        bind="0.0.0.0",
        image=str(container.get("Image") or "").split("@", 1)[0],
        container_id=str(attrs["ID"]),
        state=table.STATE_STARTING,
        options=options,
    )


def _usable(nodes: list[swarm.NodeInfo]) -> list[swarm.NodeInfo]:
    """Nodes the scheduler may place a replica on."""
    return [n for n in nodes if n.state == "ready" and n.availability == "active"]


def _stored(opts: StartOptions, replicas: int, node: swarm.NodeInfo | None) -> dict[str, Any]:
    stored = {**stored_options(opts, RUNTIME), "replicas": replicas}
    stored["api_key"] = True
    if not opts.api_key:
        stored["api_key_generated"] = True
    if node is not None:
        stored["node_id"] = node.id
        stored["node"] = node.hostname
    return stored


def _desired_replicas(driver: DockerDriver, service_id: str) -> int:
    """The replica count the service asks for now (the engine is the truth; `scale` changes it)."""
    if not service_id:
        raise NotFound("the service is not created yet")
    with driver.engine_errors():
        attrs = driver.client.api.inspect_service(service_id)
    return int(
        ((attrs.get("Spec") or {}).get("Mode") or {}).get("Replicated", {}).get("Replicas", 1)
    )


def _secret_name(record: DeploymentRecord) -> str:
    return f"anvyl-api-key-{record.id}"
