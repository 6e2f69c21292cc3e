"""The container runtime: each model server in its own hardened container on one Docker engine.

Every docker SDK call of a deployment goes through here (and `DockerDriver.engine_errors`, the
only place Docker errors become Anvyl errors).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anvyl import config
from anvyl.errors import AlreadyExists, AnvylError, NotFound
from anvyl.runtime import model_spec as spec
from anvyl.runtime.base import (
    KIND_CONTAINER,
    LOG_TAIL_LINES,
    STATUS_EXITED,
    STATUS_GONE,
    STATUS_RESTARTING,
    STATUS_RUNNING,
    Capabilities,
    DeploymentRuntime,
    Handle,
    LaunchSpec,
    LogStream,
    Observation,
    Orphan,
)
from anvyl.runtime.container_stats import MemorySampler
from anvyl.runtime.driver import DockerDriver
from anvyl.runtime.ports import local_port_holder

log = logging.getLogger(__name__)

SERVICE_SELECTOR = f"{config.LABEL_SERVICE}={spec.SERVICE_NAME}"
# Which Anvyl installation (ANVYL_HOME) made a container: several may share one engine.
LABEL_CONTROLLER = "anvyl.controller"
LABEL_SWARM_SERVICE = "com.docker.swarm.service.id"

ImageProvider = Callable[[DockerDriver, Callable[[str], None]], str]


class ContainerRuntime(DeploymentRuntime):
    """Model containers on one engine (`local`: the engine of the server's own machine)."""

    kind = KIND_CONTAINER

    def __init__(
        self,
        driver: DockerDriver,
        *,
        local: bool,
        image_provider: ImageProvider,
        memory: MemorySampler | None = None,
    ) -> None:
        self.driver = driver
        self.local = local
        self.image_provider = image_provider
        self._memory = memory or MemorySampler()

    def capabilities(self) -> Capabilities:
        """Everything but replicas (those need a Swarm)."""
        uid, gid = (int(x) for x in spec.CONTAINER_USER.split(":"))
        return Capabilities(kind=self.kind, key_owner=(uid, gid))

    def prepare(self, say: Callable[[str], None]) -> str:
        """The model-server image (built or updated when needed)."""
        say("checking the model-server image")
        return self.image_provider(self.driver, say)

    def check_free(self, name: str, bind: str, port: int) -> None:
        """Refuse a container name or a published port that is taken, saying by what."""
        for info in self.driver.list_containers(all=True):
            if info.name == name:
                raise AlreadyExists(
                    f"a container named {name!r} already exists ({info.short_id}, "
                    f"{info.state}); choose another --name"
                )
            for p in info.ports:
                if p.host_port == port and info.state == "running":
                    raise AlreadyExists(
                        f"port {port} is already published by container {info.name} "
                        f"({info.short_id}); choose another with --port"
                    )
        if self.local:
            holder = local_port_holder(bind, port)
            if holder is not None:
                raise AlreadyExists(
                    f"port {port} is already in use on this machine{holder}; "
                    "choose another with --port"
                )

    def start(self, launch: LaunchSpec) -> Handle:
        """Create and start the hardened container."""
        container_spec = model_container_spec(launch)
        with self.driver.engine_errors():
            client = self.driver.client
            _ensure_network(client)
            container = client.containers.create(**container_spec.create_kwargs())
            try:
                container.start()
            except Exception:
                container.remove(force=True)
                raise
        return Handle(ref=str(container.id))

    def observe(self, handles: list[Handle]) -> list[Observation]:
        """One container listing for all handles; exited ones inspected for the reason."""
        found = {c.id: c for c in self.driver.list_containers(all=True, labels=[SERVICE_SELECTOR])}
        views = []
        for handle in handles:
            info = found.get(handle.ref)
            if info is None:
                views.append(Observation(STATUS_GONE, "the container was removed outside Anvyl"))
                continue
            # Inspected only when it says more than the listing: stopped, or may have restarted.
            wanted = info.state != "running" or bool(handle.data.get("restart"))
            details = self._inspect(info.id) if wanted else None
            restarts = _restart_note(details)
            if info.state != "running":
                state = (details or {}).get("State") or {}
                reason = (exit_reason(state) if state else info.status) + restarts
                status = STATUS_RESTARTING if info.state == "restarting" else STATUS_EXITED
                views.append(Observation(status, reason, name=info.name))
                continue
            views.append(Observation(STATUS_RUNNING, restarts.removeprefix("; "), name=info.name))
        return views

    def memory_used(self, handle: Handle) -> int:
        """From the engine's stats (sampled in the background, cached for a moment)."""
        return self._memory.used(self.driver, handle.ref)

    def log_tail(self, handle: Handle, lines: int = LOG_TAIL_LINES) -> str:
        """The container's last log lines."""
        try:
            with self.driver.engine_errors():
                raw = self.driver.client.api.logs(handle.ref, tail=lines)
        except AnvylError:
            return ""
        return raw.decode("utf-8", "replace").strip()

    def logs(self, handle: Handle, *, follow: bool, tail: int | None) -> LogStream:
        """The container's output (as `docker logs`)."""
        return self.driver.stream_logs(handle.ref, follow=follow, tail=tail)

    def apply_restart(self, handle: Handle, restart: str) -> None:
        """Hand the engine the restart policy (idempotent)."""
        policy = spec.parse_restart_policy(restart)
        if policy is not None:
            with self.driver.engine_errors():
                self.driver.client.api.update_container(handle.ref, restart_policy=policy)

    def stop(self, handle: Handle, timeout: float) -> None:
        """`docker stop` (SIGTERM, SIGKILL after the timeout), then remove it."""
        try:
            with self.driver.engine_errors():
                container = self.driver.client.containers.get(handle.ref)
                container.stop(timeout=int(timeout))
                container.remove(v=True, force=True)
        except NotFound:
            pass  # already gone

    def discard(self, deployment_id: str) -> None:
        """Remove every container labelled with the deployment."""
        try:
            with self.driver.engine_errors():
                for container in self.driver.client.containers.list(
                    all=True, filters={"label": f"{config.LABEL_DEPLOYMENT}={deployment_id}"}
                ):
                    container.remove(force=True, v=True)
        except AnvylError:
            log.warning("could not remove the container of failed deployment %s", deployment_id)

    def orphans(self, controller_id: str) -> list[Orphan]:
        """Model containers of this installation (Swarm tasks excepted)."""
        found = []
        for info in self.driver.list_containers(all=True, labels=[SERVICE_SELECTOR]):
            if LABEL_SWARM_SERVICE in info.labels:
                continue  # a Swarm task: its service is the deployment
            if info.labels.get(LABEL_CONTROLLER, controller_id) != controller_id:
                continue  # another Anvyl installation's model on a shared engine
            api = [p for p in info.ports if p.container_port == config.MODEL_API_PORT]
            found.append(
                Orphan(
                    deployment_id=info.labels.get(config.LABEL_DEPLOYMENT, ""),
                    handle=Handle(ref=info.id),
                    name=info.name,
                    model_id=info.labels.get(config.LABEL_MODEL_ID, "unknown"),
                    port=api[0].host_port if api else 0,
                    bind=(api[0].host_ip if api else "") or "127.0.0.1",
                    image=info.image,
                )
            )
        return found

    def _inspect(self, container_id: str) -> dict[str, Any] | None:
        try:
            with self.driver.engine_errors():
                return dict(self.driver.client.api.inspect_container(container_id))
        except AnvylError:
            return None


def exit_reason(state: dict[str, Any]) -> str:
    """Why a container stopped: out of memory, or its exit code and error."""
    if state.get("OOMKilled"):
        return "out of memory (killed by the kernel: OOMKilled); raise --memory"
    code = state.get("ExitCode")
    error = state.get("Error") or ""
    status = state.get("Status", "exited")
    if code == 137:
        return f"{status} with code 137 (killed: SIGKILL or out of memory)"
    return f"{status} with code {code}" + (f": {error}" if error else "")


def _restart_note(details: dict[str, Any] | None) -> str:
    """ "; restarted N times …" when the engine restarted the container under its policy."""
    if not details:
        return ""
    policy = (details.get("HostConfig") or {}).get("RestartPolicy") or {}
    if policy.get("Name") != "on-failure":
        return ""
    count = int(details.get("RestartCount") or 0)
    if not count:
        return ""
    limit = int(policy.get("MaximumRetryCount") or 0)
    running = (details.get("State") or {}).get("Running", False)
    note = f"; restarted {count} time{'s' if count > 1 else ''} after failures"
    if limit and count >= limit and not running:
        return f"{note}; crash loop: the engine gave up after {limit} restarts"
    return note + (" (crash loop?)" if count > 1 else "")


def _ensure_network(client: Any) -> None:
    import docker.errors

    try:
        client.networks.get(spec.NETWORK_NAME)
    except docker.errors.NotFound:
        try:
            client.networks.create(**spec.network_kwargs())
        except docker.errors.APIError as exc:  # created meanwhile by a concurrent start
            if exc.status_code != 409:
                raise


def default_image_provider(home: Path) -> ImageProvider:
    """The engine's `anvyl/modelserver:<version>` when it runs this Anvyl's code; else build it.

    The check is a hash of Anvyl's own sources against the image's label (milliseconds), so an
    upgraded Anvyl never starts models on an image of its older self. A rebuild keeps the base
    the image was built on; a first build takes `ANVYL_BASE_IMAGE`, else the builder's default.
    """

    def provide(driver: DockerDriver, say: Callable[[str], None]) -> str:
        from anvyl import imaging

        tag = imaging.default_tag()
        labels = driver.image_labels(tag)
        if labels is not None and labels.get(imaging.LABEL_SOURCE_HASH) == imaging.source_hash():
            return tag
        base = os.environ.get("ANVYL_BASE_IMAGE") or None
        if labels is None:
            say(f"the image {tag} is missing: building it (once; takes a few minutes)")
        else:
            say(f"the image {tag} was built from other Anvyl sources: updating it")
            base = labels.get(imaging.LABEL_BASE_IMAGE) or base
        return driver.ensure_image(cache_dir=home / "cache", base_image=base, progress=say)

    return provide


def model_container_spec(launch: LaunchSpec) -> spec.ModelContainerSpec:
    """The hardened container a launch asks for (a Swarm service's tasks run the same)."""
    return spec.ModelContainerSpec(
        image=launch.image,
        name=launch.name,
        model_id=launch.model_id,
        model_path=str(Path(launch.model_path).resolve()),
        port=launch.port,
        bind=launch.bind,
        memory=launch.memory or None,
        cpus=launch.cpus or None,
        ctx=launch.ctx or None,
        max_queue=launch.max_queue or None,
        api_key_file=launch.api_key_file or None,
        startup_script=launch.startup_script or None,
        dtype=launch.dtype or None,
        allow_origins=launch.allow_origins,
        deployment_id=launch.deployment_id,
        extra_labels=launch.labels,
    )
