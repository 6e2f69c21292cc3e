"""The deployment service: rows, phases and the choice of runtime (start, ps, stop, logs).

A deployment is one model server run by one runtime (a container, a local process, or a Swarm
service of replicas) on one host. The store keeps what the user asked for and the runtime's
handle; the runtime says what really runs. Reads (`list`, `find`) look but never write or adopt:
`reconcile` (at start-up and on a timer, `services/deployments/reconcile.py`) does that.
A start that fails removes everything it made.

`step_hook(step)` is called at `before-create` (the row is stored, nothing runs yet),
`after-create` (the server runs, its handle is not stored) and `loading`; `anvyl serve` wires
a test hook there (see `server/app.py`).
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import httpx

from anvyl.catalog import resolve_model
from anvyl.errors import AnvylError, FailedPrecondition, InvalidArgument, NotFound
from anvyl.gateway.routing import Target
from anvyl.runtime import model_spec as spec
from anvyl.runtime.base import (
    KIND_CONTAINER,
    KIND_PROCESS,
    KIND_SWARM,
    STATUS_EXITED,
    STATUS_GONE,
    DeploymentRuntime,
    LaunchSpec,
    LogStream,
    reach_host,
    user_url,
)
from anvyl.runtime.container import (
    LABEL_CONTROLLER,
    ContainerRuntime,
    ImageProvider,
    default_image_provider,
)
from anvyl.runtime.container_stats import MemorySampler
from anvyl.runtime.process import ProcessRuntime
from anvyl.services.deployments import observe, targets
from anvyl.services.deployments.options import (
    DEFAULT_STOP_TIMEOUT_S,
    PHASE_CREATING,
    PHASE_IMAGE,
    PHASE_LOADING,
    PHASE_READY,
    PHASE_RESOLVING,
    StartOptions,
    profile_options,
    refuse_unsupported,
    stored_options,
    validated,
)
from anvyl.services.deployments.probe import ThroughputTracker, probe_client
from anvyl.services.deployments.views import DeploymentView, Endpoint, handle_of, runtime_of
from anvyl.services.hosts import Hosts
from anvyl.services.swarm_deployments import SwarmDeployments
from anvyl.services.swarm_runtime import SwarmRuntime
from anvyl.store import HostRecord, Store, profiles
from anvyl.store import deployments as table
from anvyl.store.deployments import DeploymentRecord
from anvyl.store.secrets import ApiKeys

Progress = Callable[[str, str], None]  # (phase, message)
StepHook = Callable[[str], None]
RuntimeFactory = Callable[[HostRecord], DeploymentRuntime]
READY_POLL_S = 0.1
PROBED_POLL_S = 0.25  # a runtime that probes its replicas makes several engine calls a look


class Deployments:
    """Model deployments on every host, through their runtimes."""

    def __init__(
        self,
        store: Store,
        hosts: Hosts,
        *,
        home: Path,
        image_provider: ImageProvider | None = None,
        container_labels: dict[str, str] | None = None,
        default_runtime: str = KIND_CONTAINER,
        step_hook: StepHook | None = None,
        runtimes: Mapping[str, RuntimeFactory] | None = None,
    ) -> None:
        self.store = store
        self.hosts = hosts
        self.home = home
        self.image_provider = image_provider or default_image_provider(home)
        self.container_labels = dict(container_labels or {})
        self.controller_id = controller_id(home)
        self.default_runtime = default_runtime
        self.step_hook = step_hook or (lambda _step: None)
        self.keys = ApiKeys(home)
        self.process = ProcessRuntime(home)
        self.throughput = ThroughputTracker()
        self._memory = MemorySampler()
        # Deployments this process is starting now: their `creating` rows are not orphans.
        self.starting: set[str] = set()
        self.swarm = SwarmDeployments(self)  # what the Swarm runtime keeps between calls
        # How each runtime is made for a host (tests pass their own).
        self.runtimes: dict[str, RuntimeFactory] = {
            KIND_CONTAINER: self._container,
            KIND_PROCESS: lambda _host: self.process,
            KIND_SWARM: lambda host: SwarmRuntime(self.swarm, host),
            **(runtimes or {}),
        }
        # Where each runtime may run servers of this installation (reconcile looks there).
        self.where: dict[str, Callable[[], list[str]]] = {
            KIND_CONTAINER: self.hosts.engines.host_ids,
            KIND_PROCESS: lambda: [h.id for h in self.hosts.records() if h.local],
            KIND_SWARM: self.swarm.manager_hosts,
        }

    # -- runtimes --------------------------------------------------------------------------

    def runtime(self, kind: str, host_id: str) -> DeploymentRuntime:
        """The runtime of `kind` on a host."""
        factory = self.runtimes.get(kind)
        if factory is None:
            raise InvalidArgument(f"unknown runtime {kind!r}: {' or '.join(self.runtimes)}")
        return factory(self.host(host_id))

    def _container(self, host: HostRecord) -> DeploymentRuntime:
        return ContainerRuntime(
            self.hosts.driver(host.id),
            local=host.local,
            image_provider=self.image_provider,
            memory=self._memory,
        )

    def host(self, host_id: str) -> HostRecord:
        """A registered host by id."""
        for host in self.hosts.records():
            if host.id == host_id:
                return host
        raise NotFound(f"no host {host_id!r}")

    def placement(self, options: StartOptions) -> tuple[HostRecord, DeploymentRuntime]:
        """Where a start goes: the asked runtime on the asked host (this machine by default).

        The container runtime of an engine that manages a Swarm starts services instead, and a
        runtime that places servers on its own nodes (`capabilities.nodes`) is run from here
        and reads `--host-id` as one of them.
        """
        kind, ref = options.runtime, options.host_id.strip()
        local = self.hosts.local()
        if local is not None:
            if kind == KIND_CONTAINER and self.swarm.active(local.id):
                kind = KIND_SWARM
            try:
                runtime = self.runtime(kind, local.id)
            except AnvylError:  # none here (no engine): the asked host may have one
                pass
            else:
                if not ref or runtime.capabilities().nodes:
                    return local, runtime
        host = self.hosts.resolve(ref) if ref else self.local_host()
        return host, self.runtime(kind, host.id)

    def local_host(self) -> HostRecord:
        """This machine's host record."""
        local = self.hosts.local()
        if local is None:
            raise FailedPrecondition("no local host is registered; pass --host-id")
        return local

    # -- start -----------------------------------------------------------------------------

    def start(
        self,
        options: StartOptions,
        progress: Progress | None = None,
        check: Callable[[], None] | None = None,
    ) -> DeploymentView:
        """Create, start and (unless detached) wait for a model server to be ready.

        `check()` is called while waiting; what it raises ends the start, cleaned up (an
        on-demand start no request waits for any more).
        """
        say = progress or (lambda _phase, _message: None)
        check = check or (lambda: None)
        say(PHASE_RESOLVING, f"resolving {options.model_id}")
        model = resolve_model(self.home, options.model_id)
        opts = validated(replace(options, runtime=options.runtime or self.default_runtime), model)
        host, runtime = self.placement(opts)
        kind = runtime.kind
        caps = runtime.capabilities()
        refuse_unsupported(opts, caps, remote_host=not host.local)
        opts = replace(opts, bind=caps.bind or opts.bind)
        name = opts.name or spec.default_deployment_name(model.id)
        table.check_free(self.store, name, host.id, opts.port)  # other deployments, by name
        runtime.check_free(name, opts.bind, opts.port)  # anything else running there
        image = runtime.prepare(lambda line: say(PHASE_IMAGE, line))
        check()
        api_key = opts.api_key or (secrets.token_urlsafe(24) if caps.api_key_required else "")
        launch = LaunchSpec(
            deployment_id=table.new_deployment_id(),
            name=name,
            model_id=model.id,
            model_path=str(model.path),
            port=opts.port,
            bind=opts.bind,
            image=image,
            memory=opts.memory,
            cpus=opts.cpus,
            ctx=opts.ctx,
            max_queue=opts.max_queue,
            dtype=opts.dtype,
            startup_script=opts.startup_script,
            allow_origins=opts.allow_origins,
            labels={**self.container_labels, LABEL_CONTROLLER: self.controller_id},
            replicas=opts.replicas or 1,
            node=opts.host_id if caps.nodes else "",
            api_key_generated=api_key != opts.api_key,
        )
        launch = replace(launch, placement=runtime.place(launch, say))
        stored = {**stored_options(opts, kind), **launch.placement}
        if launch.api_key_generated:
            stored["api_key"] = stored["api_key_generated"] = True
        if opts.memory and not caps.memory:
            stored["memory_note"] = caps.memory_note
            say(PHASE_CREATING, f"--memory {opts.memory} is {caps.memory_note}")
        record = table.insert_deployment(
            self.store,
            DeploymentRecord(
                id=launch.deployment_id,
                name=name,
                model_id=model.id,
                host_id=host.id,
                port=opts.port,
                bind=opts.bind,
                image=image,
                state=table.STATE_CREATING,
                options=stored,
            ),
        )
        self.starting.add(record.id)
        try:
            self.step_hook("before-create")
            say(PHASE_CREATING, f"creating {name} ({kind} runtime)")
            key_file = ""
            if api_key:
                key_file = str(self.keys.write(record.id, api_key, owner=caps.key_owner))
            handle = runtime.start(replace(launch, api_key_file=key_file))
            self.step_hook("after-create")
            stored = {**stored, "handle": handle.data} if handle.data else stored
            table.update_deployment(
                self.store,
                record.id,
                container_id=handle.ref,
                state=table.STATE_STARTING,
                options=stored,
            )
            record = replace(
                record, container_id=handle.ref, state=table.STATE_STARTING, options=stored
            )
            if opts.detach:
                return self._started_view(runtime, record)
            say(PHASE_LOADING, f"loading weights of {model.id}")
            self.step_hook("loading")
            self._wait_ready(runtime, record, opts.wait_timeout, check)
            runtime.apply_restart(handle_of(record), str(record.options.get("restart") or ""))
        except BaseException:
            runtime.discard(record.id)
            self.forget(record)
            raise
        finally:
            self.starting.discard(record.id)
        now = time.time()
        table.update_deployment(self.store, record.id, state=table.STATE_READY, ready_at=now)
        record = replace(record, state=table.STATE_READY, ready_at=now)
        if not opts.on_demand:  # what an on-demand start of this model will use
            profiles.save_start_options(self.store, model.id, profile_options(opts, kind))
        view = self._started_view(runtime, record)
        say(PHASE_READY, f"{name} is ready at {view.url}")
        return view

    def _started_view(self, runtime: DeploymentRuntime, record: DeploymentRecord) -> DeploymentView:
        """What a start answers: the row, looked at when the runtime knows where it answers."""
        if runtime.capabilities().probes:  # replicas on their nodes
            return observe.observe_all(self, [record])[0]
        return self.view(record)

    def _wait_ready(
        self,
        runtime: DeploymentRuntime,
        record: DeploymentRecord,
        timeout: float,
        check: Callable[[], None],
    ) -> None:
        """Probe `/health` until 200; fail early, with the reason, if the server dies."""
        deadline = time.monotonic() + timeout
        url = f"{self.probe_base(record)}/health"
        handle = handle_of(record)
        probes = runtime.capabilities().probes  # it probes its replicas itself
        http = probe_client()
        while True:
            try:
                if not probes and http.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            seen = runtime.observe([handle])[0]
            if seen.ready is not None and seen.ready >= seen.wanted:
                return
            if seen.status == STATUS_GONE:
                raise FailedPrecondition(
                    f"the {runtime.kind} of {record.name} disappeared while loading"
                )
            if seen.status == STATUS_EXITED:
                raise FailedPrecondition(
                    f"{record.name} failed while loading: {seen.reason}"
                    + _tail(runtime.log_tail(handle))
                )
            if seen.failure:
                raise FailedPrecondition(seen.failure)
            if time.monotonic() > deadline:
                count = f" ({seen.ready}/{seen.wanted} replicas ready)"
                count = count if seen.ready is not None else ""
                raise FailedPrecondition(
                    f"{record.name} did not become ready within {timeout:.0f} s{count}"
                    + _tail(runtime.log_tail(handle))
                )
            check()
            time.sleep(PROBED_POLL_S if probes else READY_POLL_S)

    # -- reads -----------------------------------------------------------------------------

    def list(self) -> list[DeploymentView]:
        """Every deployment as its runtime sees it, probed for health and load (no writes)."""
        return observe.observe_all(self, table.list_deployments(self.store))

    def find(self, ref: str, *, host_id: str = "") -> DeploymentRecord:
        """A deployment by id, name, model id, or container id / unique prefix."""
        ref = ref.strip()
        if not ref:
            raise InvalidArgument("a model id, deployment name or container id is required")
        records = [
            r for r in table.list_deployments(self.store) if not host_id or r.host_id == host_id
        ]
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

    def logs(
        self, ref: str, *, follow: bool = False, tail: int | None = None, host_id: str = ""
    ) -> LogStream:
        """The model server's output, whatever runs it."""
        if tail is not None and tail < 0:
            raise InvalidArgument(f"--tail must be 0 or more, not {tail}")
        record = self.find(ref, host_id=host_id)
        if not record.container_id:
            raise FailedPrecondition(f"{record.name} is still being created: no logs yet")
        runtime = self.runtime(runtime_of(record), record.host_id)
        return runtime.logs(handle_of(record), follow=follow, tail=tail)

    def endpoint(self, record: DeploymentRecord) -> Endpoint:
        """Where the control plane reaches a deployment's API, and the key it needs."""
        try:
            runtime = self.runtime(runtime_of(record), record.host_id)
        except AnvylError:  # its host or engine is gone: where the row says
            host = ""
        else:
            host = runtime.reach(handle_of(record))  # a ready replica on its node, for some
        base = f"http://{host}:{record.port}" if host else self.probe_base(record)
        return Endpoint(base_url=base, api_key=self.keys.read(record.id))

    def probe_base(self, record: DeploymentRecord) -> str:
        """`http://host:port` where the control plane reaches the server (one rule for all)."""
        host = self._host_or_local(record.host_id)
        return f"http://{reach_host(record.bind, host.address, host.local)}:{record.port}"

    def url(self, record: DeploymentRecord) -> str:
        """The URL users are shown."""
        host = self._host_or_local(record.host_id)
        return user_url(record.bind, record.port, host.address, host.local)

    def view(self, record: DeploymentRecord) -> DeploymentView:
        """The record as a view, before anything is observed."""
        memory = record.options.get("memory") or ""
        limit = spec.parse_memory(memory) if memory and not record.options.get("memory_note") else 0
        return DeploymentView(
            record=record,
            state=record.state,
            state_reason=record.state_reason,
            url=self.url(record),
            container_name=record.name,
            memory_limit_bytes=limit,
        )

    # -- stop ------------------------------------------------------------------------------

    def stop(self, ref: str, *, timeout: int | None = None, host_id: str = "") -> DeploymentView:
        """Stop gracefully (in-flight requests finish up to `timeout`), remove, forget."""
        if timeout is not None and not 0 <= timeout <= 3600:
            raise InvalidArgument(f"timeout must be between 0 and 3600 seconds, not {timeout}")
        record = self.find(ref, host_id=host_id)
        view = observe.observe_all(self, [record])[0]
        if record.container_id:
            runtime = self.runtime(runtime_of(record), record.host_id)
            runtime.stop(handle_of(record), DEFAULT_STOP_TIMEOUT_S if timeout is None else timeout)
        self.forget(record)
        return replace(view, state=table.STATE_STOPPED, state_reason="stopped by request")

    def scale(self, ref: str, replicas: int) -> DeploymentView:
        """Change the number of replicas of a deployment whose runtime has them."""
        record = self.find(ref)
        runtime = self.runtime(runtime_of(record), record.host_id)
        if not runtime.capabilities().replicas:
            raise FailedPrecondition(
                f"{record.name} runs on the {runtime.kind} runtime; only Swarm deployments scale"
            )
        runtime.scale(handle_of(record), replicas)
        return observe.observe_all(self, [record])[0]

    def targets(self) -> list[Target]:
        """Where the gateway routes: every deployment's servers (see targets.py)."""
        return targets.gateway_targets(self, table.list_deployments(self.store))

    def forget(self, record: DeploymentRecord) -> None:
        """Drop the row and the deployment's secrets."""
        table.delete_deployment(self.store, record.id)
        self.keys.forget(record.id)

    def reconcile(self) -> list[DeploymentRecord]:
        """Make the store agree with the runtimes; the deployments after it (see reconcile.py)."""
        from anvyl.services.deployments.reconcile import reconcile

        return reconcile(self)

    def _host_or_local(self, host_id: str) -> HostRecord:
        try:
            return self.host(host_id)
        except NotFound:
            return HostRecord(host_id, host_id, "", True, 0.0, 0.0)


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


def _tail(text: str) -> str:
    return f"\n--- last log lines ---\n{text}" if text else ""


def _ambiguous(ref: str, matches: Sequence[DeploymentRecord]) -> str:
    listed = ", ".join(f"{m.name} ({m.container_id[:12] or m.id})" for m in matches)
    return f"{ref!r} matches several deployments: {listed}; name one of them"
